//! Stable fingerprints (64-bit FNV-1a, hex) that tell runs apart: the dataset (its items in order, which
//! the shards depend on) and the configuration that decides the captions. FNV because it is fixed by its
//! definition: std's hasher may change between Rust releases, and these values are stored on disk.
//!
//! [`settings`] is the same identity as named values (so a mismatch can say which key changed), plus
//! what the configuration cannot say: the precision actually used and the model files' identity
//! ([`files_identity`]). Every predictions file (single run or rank) is stored beside it.

use std::collections::BTreeMap;
use std::path::Path;

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

/// The settings that decide a caption, by key (`precision` as used, `model.files`: the model files'
/// identity). Left out, because they do not change a caption: `device` (each rank its GPU; the
/// precision used is recorded instead), `preprocess.workers`, `generation.batch_size` (images per
/// forward pass: a smaller batch after running out of memory must still resume), `generation.cuda_graphs`
/// (recorded steps give the same ids), `model.offline`,
/// `data.*` (each line names its own item; an item's image is checked line by line), `output`,
/// `train` and `seed`.
pub fn settings(
    config: &Config,
    precision_used: &str,
    model_files: &str,
) -> BTreeMap<String, serde_json::Value> {
    use serde_json::Value;
    let mut out = BTreeMap::new();
    out.insert("precision".to_string(), Value::from(precision_used));
    let mut add = |prefix: &str, value: serde_json::Result<Value>, skip: &[&str]| match value {
        Ok(Value::Object(map)) => {
            for (key, value) in map {
                if !skip.contains(&key.as_str()) {
                    out.insert(format!("{prefix}.{key}"), value);
                }
            }
        }
        Ok(value) => {
            out.insert(prefix.to_string(), value);
        }
        Err(err) => {
            out.insert(
                prefix.to_string(),
                Value::from(format!("unserializable: {err}")),
            );
        }
    };
    add(
        "quantization",
        serde_json::to_value(config.quantization),
        &[],
    );
    add(
        "precision_fallback",
        serde_json::to_value(config.precision_fallback),
        &[],
    );
    add("model", serde_json::to_value(&config.model), &["offline"]);
    add(
        "preprocess",
        serde_json::to_value(&config.preprocess),
        &["workers"],
    );
    add(
        "generation",
        serde_json::to_value(&config.generation),
        &["batch_size", "cuda_graphs"],
    );
    out.insert("model.files".to_string(), Value::from(model_files));
    out
}

/// The identity of model files: a file's size and modification time, or those of every file directly
/// in a directory (names included), hashed. Cheap (no file is read) and it changes when a file is
/// replaced, rewritten or touched; a copy that keeps both size and time is taken as the same file.
pub fn files_identity(path: &Path) -> std::io::Result<String> {
    let mut text = Vec::new();
    let stamp = |text: &mut Vec<u8>, name: &str, meta: &std::fs::Metadata| {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        text.extend_from_slice(format!("{name}\0{}\0{mtime}\n", meta.len()).as_bytes());
    };
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        let mut entries: Vec<(String, std::fs::Metadata)> = std::fs::read_dir(path)?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let meta = std::fs::metadata(entry.path()).ok()?;
                meta.is_file()
                    .then(|| (entry.file_name().to_string_lossy().into_owned(), meta))
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, meta) in &entries {
            stamp(&mut text, name, meta);
        }
    } else {
        stamp(&mut text, "", &meta);
    }
    Ok(format!("fnv1a64:{:016x}", fnv1a64(&text)))
}

/// The keys whose values differ between `before` and `now`, as `key: BEFORE -> NOW` (a key only one
/// side has shows `(none)` on the other).
pub fn differences(
    before: &BTreeMap<String, serde_json::Value>,
    now: &BTreeMap<String, serde_json::Value>,
) -> Vec<String> {
    let show =
        |value: Option<&serde_json::Value>| value.map_or("(none)".to_string(), |v| v.to_string());
    let mut keys: Vec<&String> = before.keys().chain(now.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| before.get(*key) != now.get(*key))
        .map(|key| format!("{key}: {} -> {}", show(before.get(key)), show(now.get(key))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_what_changes_a_caption_and_nothing_else() {
        let base = Config::default();
        let before = settings(&base, "f32", "fnv1a64:1");
        let mut other = base.clone();
        other.device = crate::config::DeviceSpec::Cuda(1);
        other.preprocess.workers = 9;
        other.generation.batch_size = 1;
        other.data.limit = Some(3);
        other.output.dir = "elsewhere".into();
        assert!(differences(&before, &settings(&other, "f32", "fnv1a64:1")).is_empty());
        other.generation.num_beams = 3;
        other.generation.prompt = "a picture of ".into();
        let changed = differences(&before, &settings(&other, "bf16", "fnv1a64:2"));
        assert_eq!(
            changed,
            [
                "generation.num_beams: 1 -> 3",
                "generation.prompt: \"\" -> \"a picture of \"",
                "model.files: \"fnv1a64:1\" -> \"fnv1a64:2\"",
                "precision: \"f32\" -> \"bf16\"",
            ]
        );
    }

    #[test]
    fn files_identity_follows_size_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.safetensors");
        std::fs::write(&file, b"1234").unwrap();
        let first = files_identity(dir.path()).unwrap();
        assert_eq!(first, files_identity(dir.path()).unwrap());
        let one = files_identity(&file).unwrap();
        std::fs::write(&file, b"12345").unwrap();
        assert_ne!(first, files_identity(dir.path()).unwrap());
        assert_ne!(one, files_identity(&file).unwrap());
    }

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
