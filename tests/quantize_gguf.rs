//! `vlmrun quantize` and GGUF model sources (tiny BLIP, CPU): a written file loads without
//! quantizing again and captions exactly like quantization at load in the same format; files
//! whose metadata or tensors do not match are refused with the difference named; unknown
//! formats and a `quantization` setting that contradicts the file are refused.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use vlmrun::generate::{generate, GenerationConfig};
use vlmrun::models::blip::gguf::{export, ExportRequest};
use vlmrun::models::blip::{load_model_with, BlipForConditionalGeneration, LoadError};
use vlmrun::preprocess::{batch_tensor, ImageProcessor};

#[path = "support/gguf_rewrite.rs"]
mod gguf_rewrite;
use gguf_rewrite::{rewrite, set};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn tiny_dir() -> PathBuf {
    Path::new(ROOT).join("models/tiny-blip")
}

fn sample_images() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("tests/fixtures/images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    paths.sort();
    paths
}

fn sample_pixels() -> Tensor {
    let processor = ImageProcessor::blip(64);
    let pixels: Vec<Vec<f32>> = sample_images()
        .iter()
        .map(|p| processor.process_file(p).unwrap())
        .collect();
    batch_tensor(&pixels, 64, &Device::Cpu).unwrap()
}

fn captions(model: &BlipForConditionalGeneration, beams: usize) -> Vec<Vec<u32>> {
    let cfg = GenerationConfig {
        num_beams: beams,
        ..GenerationConfig::default()
    };
    generate(model, &sample_pixels(), &[], &cfg).unwrap()
}

fn write(format: GgmlDType, out: &Path) {
    let request = ExportRequest {
        model_dir: tiny_dir(),
        target: format,
        dense_dtype: DType::F32,
        source: "models/tiny-blip".to_string(),
        revision: "local".to_string(),
        tokenizer: tiny_dir().join("tokenizer.json").display().to_string(),
    };
    export(&request, out).unwrap();
}

#[test]
fn gguf_round_trip_captions_like_quantization_at_load() {
    let dir = tempfile::tempdir().unwrap();
    for format in [GgmlDType::Q4_0, GgmlDType::Q8_0, GgmlDType::Q4K] {
        let file = dir.path().join("tiny.gguf");
        write(format, &file);
        let from_file = load_model_with(&file, DType::F32, &Device::Cpu, None).unwrap();
        assert_eq!(from_file.quantized(), Some(format));
        let at_load = load_model_with(&tiny_dir(), DType::F32, &Device::Cpu, Some(format)).unwrap();
        for beams in [1, 3] {
            assert_eq!(
                captions(&from_file, beams),
                captions(&at_load, beams),
                "{format:?}, beams {beams}"
            );
        }
        // The file's own format may be requested explicitly.
        load_model_with(&file, DType::F32, &Device::Cpu, Some(format)).unwrap();
    }
}

fn load_error(file: &Path) -> String {
    match load_model_with(file, DType::F32, &Device::Cpu, None) {
        Ok(_) => panic!("{} loaded", file.display()),
        Err(err) => {
            assert!(matches!(err, LoadError::Gguf { .. }), "{err:?}");
            err.to_string()
        }
    }
}

#[test]
fn mismatched_files_are_refused_naming_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.gguf");
    write(GgmlDType::Q8_0, &good);
    let bad = dir.path().join("bad.gguf");

    rewrite(
        &good,
        &bad,
        |m| set(m, "general.architecture", "llama"),
        |_| true,
    );
    let msg = load_error(&bad);
    assert!(msg.contains("general.architecture is `llama`"), "{msg}");

    // The embedded config says the text decoder is wider than its tensors.
    rewrite(
        &good,
        &bad,
        |m| {
            let entry = m.iter_mut().find(|(k, _)| k == "blip.config_json").unwrap();
            let Value::String(text) = &entry.1 else {
                panic!("config is a string")
            };
            let mut json: serde_json::Value = serde_json::from_str(text).unwrap();
            json["text_config"]["intermediate_size"] = 128.into();
            entry.1 = Value::String(json.to_string());
        },
        |_| true,
    );
    let msg = load_error(&bad);
    assert!(
        msg.contains("intermediate.dense.weight has shape [96, 32]")
            && msg.contains("embedded config")
            && msg.contains("[128, 32]"),
        "{msg}"
    );
    assert!(msg.contains("vlmrun quantize"), "{msg}");

    let dropped = "text_decoder.bert.encoder.layer.1.crossattention.self.key_value.weight";
    rewrite(&good, &bad, |_| {}, |name| name != dropped);
    let msg = load_error(&bad);
    assert!(
        msg.contains(&format!("tensor {dropped} is missing")),
        "{msg}"
    );

    rewrite(
        &good,
        &bad,
        |m| set(m, "vlmrun.quantization", "q5"),
        |_| true,
    );
    let msg = load_error(&bad);
    assert!(
        msg.contains("`q5`") && msg.contains("q8_0, q4_0, q4k, q6k"),
        "{msg}"
    );

    rewrite(
        &good,
        &bad,
        |m| m.retain(|(k, _)| k != "vlmrun.gguf_layout"),
        |_| true,
    );
    let msg = load_error(&bad);
    assert!(msg.contains("vlmrun.gguf_layout"), "{msg}");
}

fn vlmrun(args: &[&str], cwd: &Path) -> (Option<i32>, String, String) {
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(cwd)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--config", &format!("{ROOT}/configs/config.yaml")])
        .args(["--device", "cpu", "--precision", "f32"])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn cli_quantize_then_caption_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = tiny_dir().display().to_string();
    let images: Vec<String> = sample_images()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let (code, stdout, stderr) = vlmrun(
        &[
            "quantize", "--model", &tiny, "--to", "q4_0", "--out", "m.gguf",
        ],
        dir.path(),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("27 projections in q4_0"), "{stdout}");

    let caption = |extra: &[&str], model: &str| {
        let mut args = extra.to_vec();
        args.extend(["caption", "--json", "--model", model]);
        args.extend(images.iter().map(String::as_str));
        vlmrun(&args, dir.path())
    };
    let (code, from_file, stderr) = caption(&[], "m.gguf");
    assert_eq!(code, Some(0), "{stderr}");
    let (code, at_load, stderr) = caption(&["--set", "quantization=q4_0"], &tiny);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(from_file, at_load);
    assert_eq!(from_file.lines().count(), 12);

    // A setting that contradicts the file: exit 4 naming both formats and the fix.
    let (code, _, stderr) = caption(&["--set", "quantization=q8_0"], "m.gguf");
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("holds q4_0 weights but quantization is q8_0")
            && stderr.contains("set quantization to none or q4_0"),
        "{stderr}"
    );
}

#[test]
fn cli_quantize_refuses_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = tiny_dir().display().to_string();
    let (code, _, stderr) = vlmrun(
        &[
            "quantize", "--model", &tiny, "--to", "q5", "--out", "m.gguf",
        ],
        dir.path(),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown quantization `q5`: expected one of q8_0, q4_0, q4k, q6k"),
        "{stderr}"
    );
    let (code, _, stderr) = vlmrun(
        &[
            "quantize", "--model", &tiny, "--to", "q8_0", "--out", "m.bin",
        ],
        dir.path(),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("must end in .gguf"), "{stderr}");
    let (code, _, stderr) = vlmrun(
        &[
            "quantize",
            "--model",
            &tiny,
            "--to",
            "q8_0",
            "--out",
            "no/such/dir/m.gguf",
        ],
        dir.path(),
    );
    assert_eq!(code, Some(6), "{stderr}");
    let (code, _, stderr) = vlmrun(&["caption", "--model", "missing.gguf", "x.png"], dir.path());
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("missing.gguf: no such file"), "{stderr}");
}
