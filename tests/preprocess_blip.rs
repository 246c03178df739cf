//! Full BLIP preprocessing (`ImageProcessor::process_file`) against transformers'
//! `BlipImageProcessorPil` (Pillow 12.3.0), from the fixtures helper's
//! tests/fixtures/blip/expected.safetensors (`pixel_values/<stem>`, shape (1, 3, S, S)).
//!
//! Tolerance: none. The inputs are PNG (decoded identically), and every step (resize, f64
//! rescale, f32 normalize with division) is reproduced exactly, so every f32 must be equal
//! bit for bit; a failure lists per image the count of differing values and the max error.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use vlmrun::preprocess::{batch_tensor, ImageProcessor};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `vision_config.image_size` of the tiny BLIP the fixtures were made for.
fn image_size() -> usize {
    let text = std::fs::read_to_string(repo().join("models/tiny-blip/config.json"))
        .expect("tiny-blip config.json");
    let config: serde_json::Value = serde_json::from_str(&text).expect("valid config.json");
    let size = config["vision_config"]["image_size"]
        .as_u64()
        .expect("vision_config.image_size");
    usize::try_from(size).expect("image size fits usize")
}

fn fixture_images() -> Vec<(String, PathBuf)> {
    let dir = repo().join("tests/fixtures/images");
    let mut images: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/images")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "png"))
        .map(|path| {
            (
                path.file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                path,
            )
        })
        .collect();
    images.sort();
    images
}

fn expected_pixels() -> std::collections::HashMap<String, Tensor> {
    let path = repo().join("tests/fixtures/blip/expected.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).expect("expected.safetensors")
}

fn expected_values(
    expected: &std::collections::HashMap<String, Tensor>,
    stem: &str,
    size: usize,
) -> Vec<f32> {
    let tensor = expected
        .get(&format!("pixel_values/{stem}"))
        .unwrap_or_else(|| panic!("no pixel_values/{stem} in expected.safetensors"));
    assert_eq!(tensor.dims(), &[1, 3, size, size], "{stem}");
    assert_eq!(tensor.dtype(), DType::F32);
    tensor
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("f32 values")
}

#[test]
fn process_file_matches_transformers_blip_processor_bit_for_bit() {
    let size = image_size();
    let processor = ImageProcessor::blip(size);
    let expected = expected_pixels();
    let images = fixture_images();
    assert!(images.len() >= 12, "only {} fixture images", images.len());

    let mut failures = Vec::new();
    for (stem, path) in &images {
        let actual = processor
            .process_file(path)
            .unwrap_or_else(|err| panic!("{err}"));
        let want = expected_values(&expected, stem, size);
        assert_eq!(actual.len(), 3 * size * size, "{stem}");
        let differing: Vec<f32> = actual
            .iter()
            .zip(&want)
            .filter(|(a, w)| a.to_bits() != w.to_bits())
            .map(|(a, w)| (a - w).abs())
            .collect();
        if !differing.is_empty() {
            let max = differing.iter().fold(0f32, |m, d| m.max(*d));
            failures.push(format!(
                "{stem}: {} of {} values differ, max |diff| {max:e}",
                differing.len(),
                want.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "preprocessing differs from transformers:\n{}",
        failures.join("\n")
    );
}

#[test]
fn batch_tensor_stacks_images_in_order_as_nchw() {
    let size = image_size();
    let processor = ImageProcessor::blip(size);
    let expected = expected_pixels();
    let images = fixture_images();
    let picked: Vec<&(String, PathBuf)> = images.iter().take(3).collect();
    let processed: Vec<Vec<f32>> = picked
        .iter()
        .map(|(_, path)| processor.process_file(path).expect("process"))
        .collect();
    let batch = batch_tensor(&processed, size, &Device::Cpu).expect("batch");
    assert_eq!(batch.dims(), &[3, 3, size, size]);
    for (index, (stem, _)) in picked.iter().enumerate() {
        let row = batch
            .get(index)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .expect("row");
        assert_eq!(
            row,
            expected_values(&expected, stem, size),
            "{stem} at batch index {index}"
        );
    }
    let same = ImageProcessor::batch_tensor(&processed, size, &Device::Cpu).expect("batch");
    assert_eq!(same.dims(), batch.dims());

    let mut wrong = processed.clone();
    wrong[1].pop();
    let err = batch_tensor(&wrong, size, &Device::Cpu).expect_err("length mismatch");
    assert!(err.to_string().contains("image 1"), "{err}");
}

#[test]
fn process_file_reports_missing_files_by_name() {
    let err = ImageProcessor::blip(image_size())
        .process_file(Path::new("tests/fixtures/images/no_such_image.png"))
        .expect_err("missing");
    assert!(err.to_string().contains("no_such_image.png"), "{err}");
}
