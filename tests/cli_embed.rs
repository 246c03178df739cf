//! `vlmrun embed` on the tiny random ITM model: the rows of the safetensors file reproduce `vlmrun
//! match`'s itc_score (dot product of an image row and a text row) for every pair, the metadata
//! names the rows in order; an unreadable image is left out (exit 3), a text longer than the
//! model's positions is refused before anything is written (exit 2).

use std::collections::HashMap;
use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MODEL: &str = "models/tiny-blip-itm";
const TEXTS: [&str; 2] = ["two dogs on the beach", "a cup of coffee on a table"];
const STEMS: [&str; 3] = ["astronaut", "coffee", "rocket"];

fn vlmrun(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
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

fn images() -> Vec<String> {
    STEMS
        .iter()
        .map(|s| format!("tests/fixtures/images/{s}.png"))
        .collect()
}

/// The file's matrices by name, and its metadata.
type Embeddings = (HashMap<String, Vec<Vec<f32>>>, HashMap<String, String>);

fn read(path: &Path) -> Embeddings {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = meta.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &candle_core::Device::Cpu).unwrap();
    let rows = tensors
        .into_iter()
        .map(|(name, t)| (name, t.to_vec2::<f32>().unwrap()))
        .collect();
    (rows, metadata)
}

#[test]
fn embeddings_reproduce_match_itc_scores() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.safetensors");
    let texts_file = dir.path().join("texts.txt");
    std::fs::write(&texts_file, format!("{}\n\n", TEXTS[1])).unwrap();
    let images = images();
    let mut args = vec![
        "embed",
        "--model",
        MODEL,
        "--batch-size",
        "2",
        "--text",
        TEXTS[0],
        "--texts",
        texts_file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(images.iter().map(String::as_str));
    let (code, stdout, stderr) = vlmrun(&args);
    assert_eq!(code, Some(0), "{stderr}");
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["images"], 3);
    assert_eq!(summary["texts"], 2);
    assert_eq!(summary["dim"], 16);

    let (rows, metadata) = read(&out);
    let names: Vec<String> = serde_json::from_str(&metadata["images"]).unwrap();
    assert_eq!(names, images);
    let texts: Vec<String> = serde_json::from_str(&metadata["texts"]).unwrap();
    assert_eq!(texts, TEXTS);
    assert_eq!(metadata["schema"], "vlmrun.embeddings/1");
    let image_rows = &rows["image_embeds"];
    let text_rows = &rows["text_embeds"];
    for row in image_rows.iter().chain(text_rows) {
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not normalised: {norm}");
    }
    for (t, text) in TEXTS.iter().enumerate() {
        let mut args = vec!["match", "--model", MODEL, "--json", "--text", text];
        args.extend(images.iter().map(String::as_str));
        let (code, stdout, stderr) = vlmrun(&args);
        assert_eq!(code, Some(0), "{stderr}");
        for (i, line) in stdout.lines().enumerate() {
            let line: Value = serde_json::from_str(line).unwrap();
            let want = line["itc_score"].as_f64().unwrap() as f32;
            let got: f32 = image_rows[i]
                .iter()
                .zip(&text_rows[t])
                .map(|(a, b)| a * b)
                .sum();
            assert!(
                (got - want).abs() < 1e-5,
                "{text} x {}: {got} vs {want}",
                images[i]
            );
        }
    }
}

#[test]
fn an_unreadable_image_is_left_out_and_a_long_text_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.safetensors");
    let missing = dir.path().join("missing.png");
    let images = images();
    let (code, stdout, stderr) = vlmrun(&[
        "embed",
        "--model",
        MODEL,
        "--out",
        out.to_str().unwrap(),
        &images[0],
        missing.to_str().unwrap(),
        &images[1],
    ]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("missing.png"), "{stderr}");
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["failed"], 1);
    let (rows, metadata) = read(&out);
    assert_eq!(rows["image_embeds"].len(), 2);
    let names: Vec<String> = serde_json::from_str(&metadata["images"]).unwrap();
    assert_eq!(names, vec![images[0].clone(), images[1].clone()]);

    let long = "the man ".repeat(40);
    let refused = dir.path().join("refused.safetensors");
    let (code, _, stderr) = vlmrun(&[
        "embed",
        "--model",
        MODEL,
        "--text",
        &long,
        "--out",
        refused.to_str().unwrap(),
        &images[0],
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("max_position_embeddings"), "{stderr}");
    assert!(!refused.exists());
}
