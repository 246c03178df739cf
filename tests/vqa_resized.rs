//! `vqa.image_size` (LAVIS's 480-px VQA evaluation of 384-px checkpoints) on the tiny VQA model at
//! 80 px instead of 64 (a 5 x 5 patch grid from 4 x 4), against transformers'
//! `interpolate_pos_encoding=True` (tests/fixtures/make_vqa_resized_fixtures.py, pinned): the
//! interpolated position table within 1e-5 (measured 1.2e-6), and `task: vqa`'s greedy answer ids identical for the
//! 12 (image, question) pairs (all 12 differ from the 64-px answers); a size that is not a
//! multiple of the patch size is a configuration error (exit 2).

use std::path::Path;

use assert_cmd::Command;
use serde_json::{json, Value};
use vlmrun::models::blip::interpolate::interpolate_positions;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn reference() -> Value {
    let path = Path::new(ROOT).join("tests/fixtures/vqa/resized.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn interpolated_positions_match_transformers() {
    let reference = reference();
    let weights = candle_core::safetensors::load(
        Path::new(ROOT).join("models/tiny-blip-vqa/model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let positions = &weights["vision_model.embeddings.position_embedding"];
    let grid = reference["grid"].as_u64().unwrap() as usize;
    let got = interpolate_positions(positions, grid)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let want = reference["positions"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    assert_eq!(got.len(), 1 + grid * grid);
    let mut worst = 0.0f32;
    for (r, (g, w)) in got.iter().zip(want).enumerate() {
        for (c, (a, b)) in g.iter().zip(w.as_array().unwrap()).enumerate() {
            let b = b.as_f64().unwrap() as f32;
            // f32 sums in another order than PyTorch's kernel: a few ulps of values up to ~4.
            assert!((a - b).abs() < 1e-5, "[{r}][{c}]: {a} vs {b}");
            worst = worst.max((a - b).abs());
        }
    }
    eprintln!("largest difference {worst:e}");
}

fn baseline(sets: &[String]) -> (Option<i32>, String) {
    let mut cmd = Command::cargo_bin("vlmrun").unwrap();
    cmd.current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--device", "cpu", "--precision", "f32"]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let output = cmd.arg("baseline").output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn answers_at_the_interpolated_size_match_transformers() {
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(n, c)| {
            json!({"question_id": n, "question": c["question"],
                   "image": format!("{}.png", c["image"].as_str().unwrap())})
        })
        .collect();
    let questions = dir.path().join("q.json");
    std::fs::write(&questions, Value::Array(entries).to_string()).unwrap();
    let out = dir.path().join("run");
    let mut sets = vec![
        "task=vqa".to_string(),
        "model.source=models/tiny-blip-vqa".into(),
        format!("data.path={}", questions.display()),
        format!(
            "data.image_root={}",
            Path::new(ROOT).join("tests/fixtures/images").display()
        ),
        format!("vqa.image_size={}", reference["image_size"]),
        "generation.batch_size=1".into(),
        format!("output.dir={}", out.display()),
    ];
    let (code, stderr) = baseline(&sets);
    assert_eq!(code, Some(0), "{stderr}");
    let lines = std::fs::read_to_string(out.join("answers.jsonl")).unwrap();
    let records: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), cases.len());
    for (record, case) in records.iter().zip(cases) {
        assert_eq!(record["token_ids"], case["token_ids"], "{case}");
    }

    sets.push("vqa.image_size=70".into());
    sets.push("output.dir=".to_string() + &dir.path().join("bad").display().to_string());
    let (code, stderr) = baseline(&sets);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("vqa.image_size"), "{stderr}");
}
