//! The caption formats users already have, end to end on the tiny model: a LAVIS annotation file as
//! the dataset, `results.json` (COCO results) written beside the predictions, and `score` reproducing
//! report.json's metrics from predictions.jsonl (recorded prompt stripped) and from results.json;
//! plus the clear errors for files of the wrong kind.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const PROMPT: &str = "a picture of ";

fn vlmrun() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("vlmrun"));
    cmd.current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .env("NO_COLOR", "1");
    cmd
}

fn ok(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    stderr
}

/// A LAVIS file over four sample images: two in training style (one entry per caption, shared
/// image_id), two in evaluation style (a caption list, no image_id).
fn lavis_file(dir: &Path) -> PathBuf {
    let path = dir.join("lavis_test.json");
    let text = r#"[
      {"image": "astronaut.png", "caption": "a smiling astronaut in a spacesuit", "image_id": "samples_1"},
      {"image": "astronaut.png", "caption": "portrait of an astronaut holding a helmet", "image_id": "samples_1"},
      {"image": "chelsea.png", "caption": "a tabby cat looking to the side", "image_id": 2},
      {"image": "coffee.png", "caption": ["a cup of coffee on a saucer", "coffee in a cup with a spoon"]},
      {"image": "rocket.png", "caption": ["a rocket on a launch pad"]}
    ]"#;
    std::fs::write(&path, text).unwrap();
    path
}

fn score(predictions: &Path, references: &Path) -> Output {
    vlmrun()
        .args(["score", "--json", "--predictions"])
        .arg(predictions)
        .arg("--references")
        .arg(references)
        .output()
        .unwrap()
}

fn scores(output: &Output) -> Value {
    ok(output);
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn lavis_run_writes_results_json_and_score_reproduces_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let lavis = lavis_file(dir.path());
    let out = dir.path().join("out");
    let images = Path::new(ROOT).join("tests/fixtures/images");
    let output = vlmrun()
        .args(["--device", "cpu"])
        .args(["--set", "data.source=lavis"])
        .arg("--set")
        .arg(format!("data.path={}", lavis.display()))
        .arg("--set")
        .arg(format!("data.image_root={}", images.display()))
        .arg("--set")
        .arg(format!("output.dir={}", out.display()))
        .arg("--set")
        .arg(format!("generation.prompt={PROMPT}"))
        .args(["baseline", "--fresh"])
        .output()
        .unwrap();
    ok(&output);
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let metrics = &report["metrics"];
    assert_eq!(metrics["n_images"], 4, "{report}");

    // Every prediction records the prompt its caption starts with.
    let lines: Vec<Value> = std::fs::read_to_string(out.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["samples_1", "2", "coffee.png", "rocket.png"]);
    for line in &lines {
        assert_eq!(line["prompt"], PROMPT);
        assert!(
            line["caption"].as_str().unwrap().starts_with(PROMPT.trim()),
            "{line}"
        );
    }

    // results.json: what pycocoevalcap's loadRes reads, the prompt stripped, numeric ids as numbers.
    let results: Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0]["image_id"], "samples_1");
    assert_eq!(results[1]["image_id"], 2);
    for (result, line) in results.iter().zip(&lines) {
        let caption = line["caption"].as_str().unwrap();
        let stripped = caption.strip_prefix(PROMPT.trim()).unwrap().trim();
        assert_eq!(result["caption"], stripped);
    }

    // score, without being told the prompt, equals report.json (all of it, per image too), from
    // the predictions and from the results file.
    let from_predictions = scores(&score(&out.join("predictions.jsonl"), &lavis));
    assert_eq!(&from_predictions, metrics);
    let from_results = scores(&score(&out.join("results.json"), &lavis));
    assert_eq!(&from_results, metrics);

    // The same predictions against a manifest of the same references: same numbers.
    let manifest = dir.path().join("refs.jsonl");
    std::fs::write(
        &manifest,
        concat!(
            "{\"id\": \"samples_1\", \"image\": \"a.png\", \"references\": [\"a smiling astronaut in a spacesuit\", \"portrait of an astronaut holding a helmet\"]}\n",
            "{\"id\": 2, \"image\": \"b.png\", \"caption\": \"a tabby cat looking to the side\"}\n",
            "{\"id\": \"coffee.png\", \"image\": \"c.png\", \"caption\": [\"a cup of coffee on a saucer\", \"coffee in a cup with a spoon\"]}\n",
            "{\"id\": \"rocket.png\", \"image\": \"d.png\", \"caption\": \"a rocket on a launch pad\"}\n",
        ),
    )
    .unwrap();
    assert_eq!(
        &scores(&score(&out.join("results.json"), &manifest)),
        metrics
    );

    // A results file given as references is named, not parsed as a dataset.
    let wrong = score(&out.join("predictions.jsonl"), &out.join("results.json"));
    assert_eq!(wrong.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("COCO results file") && stderr.contains("--predictions"),
        "{stderr}"
    );
}

#[test]
fn coco_results_score_against_coco_annotations_with_integer_ids() {
    let dir = tempfile::tempdir().unwrap();
    let annotations = dir.path().join("captions_val.json");
    std::fs::write(
        &annotations,
        r#"{"images": [{"id": 391895, "file_name": "a.jpg"}, {"id": 522418, "file_name": "b.jpg"}],
            "annotations": [{"image_id": 391895, "caption": "a man riding a bike"},
                            {"image_id": 391895, "caption": "a cyclist on a road"},
                            {"image_id": 522418, "caption": "a woman cutting a cake"}]}"#,
    )
    .unwrap();
    let results = dir.path().join("results.json");
    std::fs::write(
        &results,
        r#"[{"image_id": 391895, "caption": "a man riding a bike"}, {"image_id": 522418, "caption": "a cake"}]"#,
    )
    .unwrap();
    let scores = scores(&score(&results, &annotations));
    assert_eq!(scores["n_images"], 2);
    // An exact match: BLEU-1 is 1 up to pycocoevalcap's 1e-9 smoothing.
    let exact = scores["per_image"]["391895"]["bleu"][0].as_f64().unwrap();
    assert!((exact - 1.0).abs() < 1e-8, "{exact}");
    assert!(scores["per_image"]["522418"]["rouge_l"].as_f64().unwrap() < 0.9);

    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, r#"[{"image_id": 391895}]"#).unwrap();
    let output = score(&broken, &annotations);
    assert_eq!(output.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("entry 0: needs \"caption\""), "{stderr}");
}

#[test]
fn a_file_of_the_wrong_kind_names_the_kind_and_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let lavis = lavis_file(dir.path());
    let other = dir.path().join("questions.json");
    std::fs::write(&other, r#"{"questions": [{"question_id": 1}]}"#).unwrap();
    let run = |source: &str, path: &Path| {
        vlmrun()
            .args(["--device", "cpu", "--set"])
            .arg(format!("data.source={source}"))
            .arg("--set")
            .arg(format!("data.path={}", path.display()))
            .arg("--set")
            .arg(format!("output.dir={}", dir.path().join("out").display()))
            .arg("baseline")
            .output()
            .unwrap()
    };
    for (source, path, needles) in [
        (
            "coco",
            &lavis,
            &["LAVIS annotation file", "data.source: lavis"][..],
        ),
        (
            "manifest",
            &lavis,
            &["LAVIS annotation file", "not a JSONL manifest"][..],
        ),
        (
            "lavis",
            &other,
            &["not a caption dataset", "\"questions\""][..],
        ),
        (
            "coco",
            &other,
            &["not a caption dataset", "\"questions\""][..],
        ),
    ] {
        let output = run(source, path);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(5), "{source}: {stderr}");
        assert!(
            !stderr.contains("invalid type") && !stderr.contains("missing field"),
            "{stderr}"
        );
        for needle in needles {
            assert!(stderr.contains(needle), "{source}: {needle:?} in {stderr}");
        }
        assert!(!dir.path().join("out/predictions.jsonl").exists());
    }
}
