//! Model directories that ship only `pytorch_model.bin` (torch.save's zip format) load for the
//! three BLIP heads, and give exactly what the same weights give from `model.safetensors`:
//! captioning (tests/fixtures/pth/caption.bin, models/tiny-blip in f16, run in f16), question
//! answering (vqa.bin, models/tiny-blip-vqa) and matching (itm.bin, models/tiny-blip-itm), each
//! with the int64 `position_ids` buffers old checkpoints carry. A truncated or garbage .bin, and
//! one with an integer weight, are model errors (exit 4) naming the file, never a panic; `doctor`
//! checks the .bin as loading does.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn vlmrun(args: &[&str]) -> Run {
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .env_remove("VLMRUN_CONFIG")
        .args(["--device", "cpu"])
        .args(args)
        .output()
        .unwrap();
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
    };
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    run
}

/// A copy of `models/<model>` with `fixture` as its only weights, `pytorch_model.bin`.
fn pytorch_dir(model: &str, fixture: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let source = Path::new(ROOT).join("models").join(model);
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        if name != "model.safetensors" && name != "vlmrun-model.json" {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    let bin = dir.path().join("pytorch_model.bin");
    std::fs::copy(
        Path::new(ROOT).join("tests/fixtures/pth").join(fixture),
        &bin,
    )
    .unwrap();
    assert!(!dir.path().join("model.safetensors").exists());
    let path = dir.path().to_path_buf();
    (dir, path)
}

fn images() -> Vec<String> {
    ["astronaut", "chelsea", "coffee", "rocket"]
        .iter()
        .map(|stem| format!("tests/fixtures/images/{stem}.png"))
        .collect()
}

/// Runs `args` then the images against `--model` `model`; stdout (JSON lines) on success.
fn json_lines(model: &str, args: &[&str]) -> String {
    let images = images();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--json", "--model", model]);
    all.extend(images.iter().map(String::as_str));
    let run = vlmrun(&all);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), images.len(), "{}", run.stdout);
    run.stdout
}

#[test]
fn captions_from_a_pytorch_bin_are_the_safetensors_captions() {
    let (_keep, dir) = pytorch_dir("tiny-blip", "caption.bin");
    let dir = dir.display().to_string();
    for beams in ["1", "3"] {
        let args = ["--precision", "f16", "caption", "--beams", beams];
        let from_bin = json_lines(&dir, &args);
        let from_safetensors = json_lines("models/tiny-blip", &args);
        // The lines name the same images and carry token_ids: equal lines are equal ids.
        assert!(from_bin.contains("\"token_ids\":[30522,"), "{from_bin}");
        assert_eq!(from_bin, from_safetensors, "beams {beams}");
    }
}

#[test]
fn vqa_answers_from_a_pytorch_bin_are_the_safetensors_answers() {
    let (_keep, dir) = pytorch_dir("tiny-blip-vqa", "vqa.bin");
    let dir = dir.display().to_string();
    let args = [
        "--precision",
        "f32",
        "vqa",
        "--question",
        "what is in the picture?",
    ];
    let from_bin = json_lines(&dir, &args);
    assert!(from_bin.contains("\"token_ids\":[1022,"), "{from_bin}");
    assert_eq!(from_bin, json_lines("models/tiny-blip-vqa", &args));
}

#[test]
fn itm_scores_from_a_pytorch_bin_are_the_safetensors_scores() {
    let (_keep, dir) = pytorch_dir("tiny-blip-itm", "itm.bin");
    let dir = dir.display().to_string();
    let args = [
        "--precision",
        "f32",
        "match",
        "--text",
        "a man in a red hat",
    ];
    let from_bin = json_lines(&dir, &args);
    assert!(from_bin.contains("\"itm_score\":"), "{from_bin}");
    assert_eq!(from_bin, json_lines("models/tiny-blip-itm", &args));
}

/// Caption, doctor: exit 4 (caption) or a FAIL model line (doctor), both naming the file and
/// containing `expect`.
fn assert_refused(dir: &Path, expect: &str) {
    let model = dir.display().to_string();
    let bin = dir.join("pytorch_model.bin").display().to_string();
    let image = &images()[0];
    let caption = vlmrun(&["caption", "--model", &model, image]);
    assert_eq!(caption.code, Some(4), "{}", caption.stderr);
    assert!(caption.stderr.contains(&bin), "{}", caption.stderr);
    assert!(caption.stderr.contains(expect), "{}", caption.stderr);
    assert!(caption.stderr.contains("fix:"), "{}", caption.stderr);
    assert!(caption.stdout.is_empty(), "{}", caption.stdout);
    let doctor = vlmrun(&["--set", &format!("model.source={model}"), "doctor"]);
    let line = doctor
        .stdout
        .lines()
        .find(|line| line.contains(" model "))
        .unwrap_or_else(|| panic!("{}", doctor.stdout));
    assert!(line.contains("FAIL"), "{}", doctor.stdout);
    assert!(doctor.stdout.contains(expect), "{}", doctor.stdout);
}

#[test]
fn a_truncated_pytorch_bin_is_a_model_error() {
    let (_keep, dir) = pytorch_dir("tiny-blip", "caption.bin");
    let bin = dir.join("pytorch_model.bin");
    let bytes = std::fs::read(&bin).unwrap();
    std::fs::write(&bin, &bytes[..bytes.len() / 2]).unwrap();
    assert_refused(&dir, "not a usable PyTorch checkpoint");
}

#[test]
fn a_garbage_pytorch_bin_is_a_model_error() {
    let (_keep, dir) = pytorch_dir("tiny-blip", "caption.bin");
    // What a proxy's error page saved under the weights' name looks like.
    std::fs::write(
        dir.join("pytorch_model.bin"),
        b"<html><body>502 Bad Gateway</body></html>",
    )
    .unwrap();
    assert_refused(&dir, "not a zip archive");
}

#[test]
fn an_integer_weight_in_a_pytorch_bin_is_refused_naming_it() {
    let (_keep, dir) = pytorch_dir("tiny-blip", "int-tensor.bin");
    assert_refused(&dir, "tensor vision_model.embeddings.class_embedding in");
    let caption = vlmrun(&[
        "caption",
        "--model",
        &dir.display().to_string(),
        &images()[0],
    ]);
    assert!(
        caption.stderr.contains("stored as I64"),
        "{}",
        caption.stderr
    );
}

#[test]
fn doctor_passes_a_good_pytorch_bin() {
    let (_keep, dir) = pytorch_dir("tiny-blip-vqa", "vqa.bin");
    let doctor = vlmrun(&[
        "--set",
        &format!("model.source={}", dir.display()),
        "doctor",
    ]);
    let line = doctor
        .stdout
        .lines()
        .find(|line| line.contains(" model "))
        .unwrap_or_else(|| panic!("{}", doctor.stdout));
    assert!(line.trim_start().starts_with("ok"), "{}", doctor.stdout);
}
