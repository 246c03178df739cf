//! `vlmrun doctor` on a `.gguf` model source (tiny BLIP written as q8_0, CPU): a good file is
//! reported with its format and the embedded config's shapes; an unreadable, truncated,
//! mismatched or wrong-architecture file, an unresolvable tokenizer and a `quantization` that
//! contradicts the file are each a failed check carrying the loader's own message and fix, and
//! the exit code stays doctor's (0: the device is usable).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
use serde_json::Value as Json;
use vlmrun::models::blip::gguf::{export, ExportRequest};
use vlmrun::models::blip::load::resolve_model_files;
use vlmrun::models::blip::load_model_with;

#[path = "support/gguf_rewrite.rs"]
mod gguf_rewrite;
use gguf_rewrite::{rewrite, set};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn tiny_dir() -> PathBuf {
    Path::new(ROOT).join("models/tiny-blip")
}

fn write_q8(out: &Path) {
    let request = ExportRequest {
        model_dir: tiny_dir(),
        target: GgmlDType::Q8_0,
        dense_dtype: DType::F32,
        source: "models/tiny-blip".to_string(),
        revision: "local".to_string(),
        tokenizer: tiny_dir().join("tokenizer.json").display().to_string(),
    };
    export(&request, out).unwrap();
}

/// `vlmrun doctor [--json]` in `dir` with model.source = `source` and `extra` config lines.
fn doctor(dir: &Path, source: &str, extra: &str, json: bool) -> (Option<i32>, String) {
    std::fs::write(
        dir.join("c.yaml"),
        format!("device: cpu\n{extra}model:\n  source: {source}\n"),
    )
    .unwrap();
    let mut args = vec!["--config", "c.yaml", "doctor"];
    if json {
        args.push("--json");
    }
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(dir)
        .env("VLMRUN_CUDA_BINARY", dir.join("absent"))
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).to_string(),
    )
}

fn doctor_json(dir: &Path, source: &str, extra: &str) -> Json {
    let (code, stdout) = doctor(dir, source, extra, true);
    // Model problems never change doctor's exit code: it is 0 exactly when the device is usable.
    assert_eq!(code, Some(0), "{stdout}");
    serde_json::from_str(&stdout).expect("doctor --json prints JSON")
}

fn check<'a>(report: &'a Json, name: &str) -> &'a Json {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

fn has_check(report: &Json, name: &str) -> bool {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == name)
}

/// Doctor on the absolute path of `file` (so that its messages name the file as loading does).
fn doctor_on(file: &Path) -> Json {
    doctor_json(file.parent().unwrap(), &file.display().to_string(), "")
}

/// What loading `file` as `caption` does says: the source resolved (file, header, tokenizer),
/// then the model loaded.
fn loading_error(file: &Path) -> String {
    if let Err(err) = resolve_model_files(&file.display().to_string(), "main") {
        return err.to_string();
    }
    match load_model_with(file, DType::F32, &Device::Cpu, None) {
        Ok(_) => panic!("{} loaded", file.display()),
        Err(err) => err.to_string(),
    }
}

/// The failed `model` check, asserted to say exactly what loading `file` says.
fn model_failure_matches_loading(report: &Json, file: &Path) -> String {
    let model = check(report, "model");
    assert_eq!(model["status"], "fail", "{model}");
    let loaded = loading_error(file);
    let message = model["message"].as_str().unwrap();
    let remedy = model["remedy"].as_str().unwrap();
    assert_eq!(loaded, format!("{message}\n  fix: {remedy}"));
    assert_eq!(report["model"]["error"], message);
    message.to_string()
}

#[test]
fn a_good_file_is_reported_with_its_format_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    write_q8(&dir.path().join("tiny.gguf"));
    let config: Json =
        serde_json::from_str(&std::fs::read_to_string(tiny_dir().join("config.json")).unwrap())
            .unwrap();
    let report = doctor_json(dir.path(), "tiny.gguf", "");

    for name in ["model", "tokenizer", "quantization"] {
        assert_eq!(check(&report, name)["status"], "ok", "{report:#}");
    }
    let gguf = &report["model"]["gguf"];
    assert_eq!(gguf["file"], "tiny.gguf");
    assert_eq!(
        gguf["size_bytes"],
        std::fs::metadata(dir.path().join("tiny.gguf"))
            .unwrap()
            .len()
    );
    assert_eq!(gguf["quantization"], "q8_0");
    assert_eq!(gguf["dense_dtype"], "f32");
    assert_eq!(gguf["layout"], 1);
    let vision = &config["vision_config"];
    assert_eq!(gguf["vision"]["layers"], vision["num_hidden_layers"]);
    assert_eq!(gguf["vision"]["hidden_size"], vision["hidden_size"]);
    assert_eq!(gguf["vision"]["image_size"], vision["image_size"]);
    let text = &config["text_config"];
    assert_eq!(gguf["text"]["layers"], text["num_hidden_layers"]);
    assert_eq!(gguf["text"]["hidden_size"], text["hidden_size"]);
    // 27 projections in q8_0 (vision qkv/projection/fc1/fc2, text qkv/attention output/cross
    // query/key_value/output/intermediate/output, LM transform), as `vlmrun quantize` reports.
    assert_eq!(gguf["quantized_tensors"], 27);
    let (quantized, total) = (
        gguf["quantized_bytes"].as_u64().unwrap(),
        gguf["tensor_bytes"].as_u64().unwrap(),
    );
    assert!(0 < quantized && quantized < total, "{gguf}");
    assert!(total < gguf["size_bytes"].as_u64().unwrap());
    assert_eq!(gguf["source_model"], "models/tiny-blip");
    assert_eq!(gguf["source_revision"], "local");
    assert_eq!(
        gguf["tokenizer"],
        tiny_dir().join("tokenizer.json").display().to_string()
    );
    assert!(report["model"]["error"].is_null());

    let (code, text) = doctor(dir.path(), "tiny.gguf", "", false);
    assert_eq!(code, Some(0), "{text}");
    let model_line = text.lines().find(|l| l.contains(" model ")).unwrap();
    assert!(
        model_line.starts_with("  ok")
            && model_line.contains("q8_0 projections, dense f32")
            && model_line.contains(&format!(
                "vision {} layers x {} wide",
                vision["num_hidden_layers"], vision["hidden_size"]
            )),
        "{text}"
    );
    assert!(text.contains("ok    quantization  none: the file's q8_0 weights are used as stored"));
}

#[test]
fn a_quantization_that_contradicts_the_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    write_q8(&dir.path().join("tiny.gguf"));
    let report = doctor_json(dir.path(), "tiny.gguf", "quantization: q4k\n");
    assert_eq!(check(&report, "model")["status"], "ok");
    let conflict = check(&report, "quantization");
    assert_eq!(conflict["status"], "fail");
    assert!(conflict["message"]
        .as_str()
        .unwrap()
        .contains("the file holds q8_0 weights but quantization is q4k"));
    assert!(conflict["remedy"]
        .as_str()
        .unwrap()
        .starts_with("set quantization to none or q8_0"));
    // The file's own format is accepted.
    let report = doctor_json(dir.path(), "tiny.gguf", "quantization: q8_0\n");
    assert_eq!(check(&report, "quantization")["status"], "ok");
}

#[test]
fn broken_files_fail_the_model_check_as_loading_would() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.gguf");
    write_q8(&good);
    let bytes = std::fs::read(&good).unwrap();

    // Cut in the tensor data: the header still parses, the table does not fit in the file.
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let report = doctor_on(&cut);
    let message = model_failure_matches_loading(&report, &cut);
    assert!(
        message.contains(&format!(
            "truncated: its tensor table needs {} bytes, the file has {}",
            bytes.len(),
            bytes.len() / 2
        )),
        "{message}"
    );
    // No header facts, and no tokenizer/quantization checks without them.
    assert!(report["model"]["gguf"].is_null());
    assert!(!has_check(&report, "tokenizer") && !has_check(&report, "quantization"));

    // Cut in the header, and not GGUF at all: candle cannot parse it (that message has no fix,
    // doctor gives one).
    for (name, content) in [
        ("head.gguf", &bytes[..100]),
        ("text.gguf", b"not a gguf file".as_slice()),
    ] {
        std::fs::write(dir.path().join(name), content).unwrap();
        let report = doctor_json(dir.path(), name, "");
        let model = check(&report, "model");
        assert_eq!(model["status"], "fail");
        assert!(
            model["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{name}: not a readable GGUF file:")),
            "{model}"
        );
        assert!(model["remedy"]
            .as_str()
            .unwrap()
            .contains("written by `vlmrun quantize"));
    }

    let report = doctor_on(&dir.path().join("absent.gguf"));
    let message = model_failure_matches_loading(&report, &dir.path().join("absent.gguf"));
    assert!(message.ends_with("absent.gguf: no such file"), "{message}");

    let bad = dir.path().join("bad.gguf");
    rewrite(
        &good,
        &bad,
        |m| set(m, "general.architecture", "llama"),
        |_| true,
    );
    let report = doctor_on(&bad);
    let message = model_failure_matches_loading(&report, &bad);
    assert!(
        message.contains("general.architecture is `llama`, vlmrun loads `blip` files"),
        "{message}"
    );

    rewrite(
        &good,
        &bad,
        |m| m.retain(|(k, _)| k != "vlmrun.gguf_layout"),
        |_| true,
    );
    let report = doctor_on(&bad);
    let message = model_failure_matches_loading(&report, &bad);
    assert!(message.contains("no u32 vlmrun.gguf_layout"), "{message}");

    // Tensor checks run on the tensor table only: a dropped tensor and an embedded config that
    // disagrees with the tensors' shapes; the header facts are still reported.
    let dropped = "text_decoder.bert.encoder.layer.1.crossattention.self.key_value.weight";
    rewrite(&good, &bad, |_| {}, |name| name != dropped);
    let report = doctor_on(&bad);
    let message = model_failure_matches_loading(&report, &bad);
    assert!(
        message.contains(&format!("tensor {dropped} is missing")),
        "{message}"
    );
    assert_eq!(report["model"]["gguf"]["quantization"], "q8_0");
    assert_eq!(check(&report, "tokenizer")["status"], "ok");

    rewrite(
        &good,
        &bad,
        |m| {
            let entry = m.iter_mut().find(|(k, _)| k == "blip.config_json").unwrap();
            let Value::String(text) = &entry.1 else {
                panic!("config is a string")
            };
            let mut json: Json = serde_json::from_str(text).unwrap();
            json["text_config"]["intermediate_size"] = 128.into();
            entry.1 = Value::String(json.to_string());
        },
        |_| true,
    );
    let report = doctor_on(&bad);
    let message = model_failure_matches_loading(&report, &bad);
    assert!(
        message.contains("intermediate.dense.weight has shape [96, 32]")
            && message.contains("implies [128, 32]"),
        "{message}"
    );
}

#[test]
fn an_unresolvable_tokenizer_fails_its_check() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.gguf");
    write_q8(&good);
    let moved = dir.path().join("moved.gguf");
    rewrite(
        &good,
        &moved,
        |m| set(m, "vlmrun.tokenizer", "/nonexistent/tokenizer.json"),
        |_| true,
    );
    let report = doctor_json(dir.path(), "moved.gguf", "");
    assert_eq!(check(&report, "model")["status"], "ok");
    let tokenizer = check(&report, "tokenizer");
    assert_eq!(tokenizer["status"], "fail");
    let message = tokenizer["message"].as_str().unwrap();
    assert!(
        message.contains("no tokenizer found (tried ")
            && message.contains("/nonexistent/tokenizer.json"),
        "{message}"
    );
    assert_eq!(
        tokenizer["remedy"],
        "copy the model's tokenizer.json next to the .gguf file"
    );
    assert!(report["model"]["gguf"]["tokenizer"].is_null());

    // The fix works: tokenizer.json next to the file.
    std::fs::copy(
        tiny_dir().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let report = doctor_json(dir.path(), "moved.gguf", "");
    assert_eq!(check(&report, "tokenizer")["status"], "ok");
    let found = check(&report, "tokenizer")["message"].as_str().unwrap();
    assert!(
        found.ends_with("tokenizer.json") && !found.contains("nonexistent"),
        "{found}"
    );
}
