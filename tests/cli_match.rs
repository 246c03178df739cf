//! `vlmrun match --json` on the tiny random ITM model against transformers
//! (tests/fixtures/itm/expected.json): ITM p(match) and logit, ITC similarity per image, with
//! `[CLS]` (transformers) and `--enc` (LAVIS); a VQA checkpoint is refused with exit 4.

use assert_cmd::Command;
use serde_json::Value;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--device", "cpu", "--precision", "f32", "match"])
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
fn scores_match_transformers_with_cls_and_enc() {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("tests/fixtures/itm/expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    let stems = ["astronaut", "chelsea", "coffee", "rocket"];
    let images: Vec<String> = stems
        .iter()
        .map(|s| format!("tests/fixtures/images/{s}.png"))
        .collect();
    let sentence = expected["texts"][1].as_str().unwrap();
    for (first, flag) in [("cls", None), ("enc", Some("--enc"))] {
        let mut args = vec![
            "--model",
            "models/tiny-blip-itm",
            "--json",
            "--text",
            sentence,
        ];
        args.extend(flag);
        args.extend(images.iter().map(String::as_str));
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, Some(0), "{stderr}");
        let lines: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), stems.len());
        for (line, stem) in lines.iter().zip(stems) {
            let find = |first: &str| {
                expected["cases"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| {
                        c["image"] == stem && c["text"] == sentence && c["first_token"] == first
                    })
                    .unwrap()
            };
            let want = find(first);
            // ITC always reads the text with [CLS] first (LAVIS's text-only pass), so --enc changes
            // the ITM numbers only.
            let want_itc = find("cls");
            let close = |key: &str, want: f64| {
                let got = line[key].as_f64().unwrap();
                assert!(
                    (got - want).abs() < 1e-4,
                    "{stem} {first} {key}: {got} vs {want}"
                );
            };
            close("itm_score", want["itm_score"].as_f64().unwrap());
            close("itm_logit", want["itm_logits"][1].as_f64().unwrap());
            close("itc_score", want_itc["itc_score"].as_f64().unwrap());
        }
    }
}

#[test]
fn a_vqa_checkpoint_is_refused_with_exit_4() {
    let (code, _, stderr) = run(&[
        "--model",
        "models/tiny-blip-vqa",
        "--text",
        "a dog",
        "tests/fixtures/images/coffee.png",
    ]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("BlipForImageTextRetrieval") && stderr.contains("vlmrun vqa"),
        "{stderr}"
    );
}

/// `quantization: q8_0` quantizes the matching model's encoders at load (the captioner's path):
/// every score moves (the weights really are quantized) but by little (measured and printed).
#[test]
fn q8_0_scores_stay_close_to_the_dense_ones() {
    let scores = |quantization: &str| -> Vec<(f64, f64)> {
        let output = Command::cargo_bin("vlmrun")
            .unwrap()
            .current_dir(ROOT)
            .env("VLMRUN_NO_CUDA_LAUNCH", "1")
            .args(["--device", "cpu", "--precision", "f32", "--set"])
            .arg(format!("quantization={quantization}"))
            .args(["match", "--model", "models/tiny-blip-itm", "--json"])
            .args(["--text", "a photo of a cat"])
            .args([
                "tests/fixtures/images/chelsea.png",
                "tests/fixtures/images/rocket.png",
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["itm_score"].as_f64().unwrap(),
                    v["itc_score"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let (dense, q8) = (scores("none"), scores("q8_0"));
    let diffs: Vec<(f64, f64)> = dense
        .iter()
        .zip(&q8)
        .map(|(d, q)| ((d.0 - q.0).abs(), (d.1 - q.1).abs()))
        .collect();
    eprintln!("q8_0 vs f32 (itm p(match), itc) differences: {diffs:?}");
    for (itm, itc) in &diffs {
        assert!(*itm > 0.0 || *itc > 0.0, "{diffs:?}: nothing moved");
        assert!(*itm < 0.02 && *itc < 0.02, "{diffs:?}");
    }
}
