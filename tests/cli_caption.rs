//! `vlmrun caption --json` end to end (decode, Pillow-exact resize, model, generation, decode) against
//! transformers 5.17's token ids and captions (tests/fixtures/blip/expected.json): identical for greedy and
//! beam 3, with and without prompt, repetition and length penalties, at batch 1 and with all images in
//! one batch, on the random tiny model (`models/tiny-blip`). Then the bad-input paths: a bad image is reported and the others are still captioned.

use assert_cmd::Command;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn expected() -> Value {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("tests/fixtures/blip/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn image_paths(expected: &Value) -> Vec<String> {
    expected["batch_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stem| {
            expected["images"][stem.as_str().unwrap()]["file"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn caption(args: &[&str], images: &[String]) -> (Option<i32>, Vec<Value>, String) {
    caption_env(&[], args, images)
}

fn caption_env(
    env: &[(&str, &str)],
    args: &[&str],
    images: &[String],
) -> (Option<i32>, Vec<Value>, String) {
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .envs(env.iter().copied())
        .args(["--device", "cpu", "--precision", "f32", "caption", "--json"])
        .args(args)
        .args(images)
        .output()
        .unwrap();
    let lines = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (
        output.status.code(),
        lines,
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// Runs one generation setting at two batch sizes and compares every image with transformers.
fn check_setting(beams: u64, prompt: &str, repetition: f64, length_penalty: f64) {
    let expected = expected();
    let images = image_paths(&expected);
    let want: BTreeMap<String, (&Value, &Value)> = expected["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["num_beams"] == beams
                && c["prompt"] == prompt
                && c["batched"] == false
                && c["repetition_penalty"].as_f64() == Some(repetition)
                && c["length_penalty"].as_f64() == Some(length_penalty)
        })
        .map(|c| {
            (
                c["image"].as_str().unwrap().to_string(),
                (&c["token_ids"], &c["caption"]),
            )
        })
        .collect();
    assert!(!want.is_empty());
    let selected: Vec<String> = images
        .iter()
        .filter(|path| want.contains_key(Path::new(path).file_stem().unwrap().to_str().unwrap()))
        .cloned()
        .collect();
    for batch_size in ["1", "12"] {
        let beams_text = beams.to_string();
        let repetition_set = format!("generation.repetition_penalty={repetition}");
        let length_set = format!("generation.length_penalty={length_penalty}");
        let mut args = vec![
            // The random tiny model the transformers fixtures were made with (not the demo default).
            "--model",
            "models/tiny-blip",
            "--beams",
            &beams_text,
            "--max-length",
            "20",
            "--min-length",
            "5",
            "--batch-size",
            batch_size,
            "--set",
            &repetition_set,
            "--set",
            &length_set,
        ];
        if !prompt.is_empty() {
            args.extend(["--prompt", prompt]);
        }
        let (code, lines, stderr) = caption(&args, &selected);
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(lines.len(), selected.len());
        let mut mismatches = Vec::new();
        for (line, path) in lines.iter().zip(&selected) {
            assert_eq!(line["image"], path.as_str(), "outputs keep the input order");
            let stem = Path::new(path).file_stem().unwrap().to_str().unwrap();
            let (ids, text) = want[stem];
            if &line["token_ids"] != ids || &line["caption"] != text {
                mismatches.push(format!(
                    "{stem}: got {} / {}, want {ids} / {text}",
                    line["token_ids"], line["caption"]
                ));
            }
        }
        assert!(
            mismatches.is_empty(),
            "beams {beams} prompt {prompt:?} rep {repetition} lp {length_penalty} batch {batch_size}:\n{}",
            mismatches.join("\n")
        );
    }
}

#[test]
fn greedy_without_prompt_matches_transformers() {
    check_setting(1, "", 1.0, 1.0);
}

#[test]
fn greedy_with_prompt_matches_transformers() {
    check_setting(1, "a picture of", 1.0, 1.0);
}

#[test]
fn beam3_without_prompt_matches_transformers() {
    check_setting(3, "", 1.0, 1.0);
}

#[test]
fn beam3_with_prompt_matches_transformers() {
    check_setting(3, "a picture of", 1.0, 1.0);
}

#[test]
fn penalties_match_transformers() {
    check_setting(1, "", 1.3, 1.0);
    check_setting(3, "a picture of", 1.3, 1.0);
    check_setting(3, "", 1.0, 0.5);
    check_setting(3, "a picture of", 1.0, 2.0);
}

#[test]
fn text_mode_prints_one_caption_per_image() {
    let images = image_paths(&expected())[..3].to_vec();
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(ROOT)
        .args(["--device", "cpu", "caption"])
        .args(&images)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 3);
}

#[test]
fn bad_images_are_reported_and_the_others_captioned() {
    let dir = tempfile::tempdir().unwrap();
    let good = image_paths(&expected())[0].clone();
    let png = std::fs::read(Path::new(ROOT).join(&good)).unwrap();
    let bad = [
        ("empty.png", Vec::new()),
        ("truncated.png", png[..png.len() / 3].to_vec()),
        ("notes.png", b"this is not an image".to_vec()),
    ];
    let mut images = vec![Path::new(ROOT).join(&good).display().to_string()];
    for (name, bytes) in &bad {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        images.push(path.display().to_string());
    }
    images.push(dir.path().join("missing.png").display().to_string());
    let (code, lines, stderr) = caption(&[], &images);
    assert_eq!(code, Some(3), "completed with failures: {stderr}");
    assert_eq!(lines.len(), images.len(), "one line per input: {lines:?}");
    assert!(
        lines[0]["caption"].is_string(),
        "the good image is still captioned"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    for (line, image) in lines.iter().zip(&images).skip(1) {
        assert_eq!(line["image"], image.as_str(), "in order");
        assert!(line["caption"].is_null());
        assert!(line["error"].is_string(), "{line}");
    }
    for name in ["empty.png", "truncated.png", "notes.png", "missing.png"] {
        assert!(stderr.contains(name), "{name} named in: {stderr}");
    }

    let (code, lines, _) = caption(&[], &images[1..]);
    assert_eq!(code, Some(5), "nothing usable");
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().all(|line| line["error"].is_string()));
}

#[test]
fn text_mode_prints_one_line_per_input_in_order() {
    let good = Path::new(ROOT)
        .join(&image_paths(&expected())[0])
        .display()
        .to_string();
    let readme = Path::new(ROOT).join("README.md").display().to_string();
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--device", "cpu", "caption", &good, &readme, &good])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0], lines[2], "the same image, the same caption");
    assert!(!lines[0].starts_with("error:"));
    assert!(lines[1].starts_with("error: "), "{stdout}");
    assert!(lines[1].contains("README.md"), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("README.md"), "said on stderr too: {stderr}");

    // --limit keeps the first N inputs.
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--device", "cpu", "caption", "--limit", "1", &good, &readme])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 1);
}

#[test]
fn missing_model_files_are_a_model_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(ROOT).join("models/tiny-blip/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let model = dir.path().display().to_string();
    let (code, _, stderr) = caption(&["--model", &model], &image_paths(&expected())[..1]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("model.safetensors") && stderr.contains("tokenizer.json"),
        "{stderr}"
    );

    let (code, _, stderr) = caption_env(
        &[("HF_HUB_OFFLINE", "1")],
        &["--model", "nobody/no-such-model"],
        &image_paths(&expected())[..1],
    );
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("not in the Hugging Face cache") && stderr.contains("vlmrun fetch"),
        "{stderr}"
    );
}
