//! Stable fingerprints (64-bit FNV-1a, hex) that tell runs apart: the dataset (its items in order, which
//! the shards depend on) and the configuration that decides the captions. FNV because it is fixed by its
//! definition: std's hasher may change between Rust releases, and these values are stored on disk.

use serde::Serialize;

use crate::config::Config;
use crate::data::dataset::Item;

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// The dataset's identity: every item's id and image path, in order.
pub fn dataset(items: &[Item]) -> String {
    let mut text = Vec::new();
    for item in items {
        text.extend_from_slice(item.id.as_bytes());
        text.push(0);
        text.extend_from_slice(item.image_as_given.as_bytes());
        text.push(b'\n');
    }
    format!("fnv1a64:{:016x}", fnv1a64(&text))
}

/// The configuration's identity, without the keys that differ between ranks of one run and do not change
/// a caption: `device` (each rank its GPU), `preprocess.workers` (each rank its share of the cores) and
/// `output` (the same directory may be mounted elsewhere).
pub fn config(config: &Config) -> String {
    #[derive(Serialize)]
    struct Identity<'a> {
        precision: &'a crate::config::PrecisionSpec,
        quantization: &'a crate::config::Quantization,
        precision_fallback: &'a crate::config::PrecisionFallback,
        model: &'a crate::config::ModelConfig,
        data: &'a crate::config::DataConfig,
        preprocess: crate::config::PreprocessConfig,
        generation: &'a crate::config::GenerationSettings,
    }
    let identity = Identity {
        precision: &config.precision,
        quantization: &config.quantization,
        precision_fallback: &config.precision_fallback,
        model: &config.model,
        data: &config.data,
        preprocess: crate::config::PreprocessConfig {
            workers: 0,
            ..config.preprocess.clone()
        },
        generation: &config.generation,
    };
    let bytes = serde_json::to_vec(&identity).unwrap_or_default();
    format!("fnv1a64:{:016x}", fnv1a64(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_vectors() {
        // From the FNV reference test suite (http://www.isthe.com/chongo/src/fnv/test_fnv.c).
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    fn item(id: &str) -> Item {
        Item {
            id: id.into(),
            image: format!("{id}.png").into(),
            image_as_given: format!("{id}.png"),
            references: Vec::new(),
        }
    }

    #[test]
    fn dataset_fingerprint_follows_ids_and_order() {
        let ab = dataset(&[item("a"), item("b")]);
        assert_eq!(ab, dataset(&[item("a"), item("b")]));
        assert_ne!(ab, dataset(&[item("b"), item("a")]));
        assert_ne!(ab, dataset(&[item("a")]));
    }

    #[test]
    fn config_fingerprint_ignores_device_and_output_only() {
        let base = Config::default();
        let mut other = base.clone();
        other.device = crate::config::DeviceSpec::Cuda(3);
        other.output.dir = "elsewhere".into();
        other.preprocess.workers = 7;
        assert_eq!(config(&base), config(&other));
        other.generation.num_beams = 3;
        assert_ne!(config(&base), config(&other));
    }
}
