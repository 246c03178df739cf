//! The f16 overflow guard: generation reports non-finite logits instead of choosing tokens from
//! them, and the captioner recomputes such a batch in the fallback precision, producing exactly
//! the captions a run in that precision produces.
//!
//! The model is the tiny BLIP with one projection (`text_decoder` layer 0 `output.dense`)
//! scaled by 1e5, so that its outputs (~1e5) exceed f16's range (65504) but not f32's: the f16
//! residual becomes infinite and the LayerNorm after it NaN, while f32 normalises it away.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use vlmrun::config::{Config, DeviceSpec, PrecisionFallback, PrecisionSpec};
use vlmrun::device::{self, CudaAvailability, SystemFacts};
use vlmrun::engine::Captioner;
use vlmrun::generate::{generate, GenerateError, GenerationConfig};
use vlmrun::models::blip::load_model;
use vlmrun::preprocess::{batch_tensor, ImageProcessor};

const SCALED: &str = "text_decoder.bert.encoder.layer.0.output.dense";
const SCALE: f64 = 1e5;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of the tiny model in `dir` with [`SCALED`] multiplied by [`SCALE`].
fn overflowing_model(dir: &Path) {
    let tiny = repo().join("models/tiny-blip");
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(tiny.join(file), dir.join(file)).unwrap();
    }
    let mut tensors =
        candle_core::safetensors::load(tiny.join("model.safetensors"), &Device::Cpu).unwrap();
    for part in ["weight", "bias"] {
        let name = format!("{SCALED}.{part}");
        let scaled = (tensors.get(&name).unwrap() * SCALE).unwrap();
        tensors.insert(name, scaled);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
}

fn sample_pixels() -> Vec<Vec<f32>> {
    let processor = ImageProcessor::blip(64);
    ["chelsea.png", "coffee.png", "rocket.png", "tall_37x211.png"]
        .iter()
        .map(|name| {
            processor
                .process_file(&repo().join("tests/fixtures/images").join(name))
                .unwrap()
        })
        .collect()
}

fn captioner(dir: &Path, precision: PrecisionSpec) -> Captioner {
    let mut config = Config::default();
    config.model.source = dir.display().to_string();
    config.precision_fallback = PrecisionFallback::F32;
    let active = device::activate_quietly(
        DeviceSpec::Cpu,
        precision,
        &SystemFacts::no_driver("test"),
        &CudaAvailability::NotCompiled,
    )
    .unwrap();
    Captioner::load(&config, &active).unwrap()
}

#[test]
fn f16_overflow_is_reported_not_decoded() {
    let dir = tempfile::tempdir().unwrap();
    overflowing_model(dir.path());
    let pixels: Tensor = batch_tensor(&sample_pixels(), 64, &Device::Cpu).unwrap();
    let cfg = GenerationConfig::default();

    let f32_model = load_model(dir.path(), DType::F32, &Device::Cpu).unwrap();
    assert!(generate(&f32_model, &pixels, &[], &cfg).is_ok());

    let f16_model = load_model(dir.path(), DType::F16, &Device::Cpu).unwrap();
    let f16_pixels = pixels.to_dtype(DType::F16).unwrap();
    for num_beams in [1, 3] {
        let cfg = GenerationConfig {
            num_beams,
            ..cfg.clone()
        };
        match generate(&f16_model, &f16_pixels, &[], &cfg) {
            Err(GenerateError::NonFiniteLogits { step }) => assert_eq!(step, 0),
            other => panic!("beams {num_beams}: expected NonFiniteLogits, got {other:?}"),
        }
    }
    // The unmodified model is finite in f16.
    let tiny = load_model(&repo().join("models/tiny-blip"), DType::F16, &Device::Cpu).unwrap();
    assert!(generate(&tiny, &f16_pixels, &[], &cfg).is_ok());
}

#[test]
fn f16_overflow_falls_back_to_f32_captions() {
    let dir = tempfile::tempdir().unwrap();
    overflowing_model(dir.path());
    let pixels = sample_pixels();
    let expected = captioner(dir.path(), PrecisionSpec::F32)
        .caption_pixels(&pixels)
        .unwrap();
    let f16 = captioner(dir.path(), PrecisionSpec::F16);
    assert_eq!(f16.active().precision.dtype, DType::F16);
    // Twice: the second batch reuses the fallback model loaded by the first.
    for _ in 0..2 {
        let captions = f16.caption_batch(&pixels, "test").unwrap();
        assert_eq!(captions, expected);
    }
    assert!(expected.iter().all(|c| c.token_ids.len() >= 2));
}
