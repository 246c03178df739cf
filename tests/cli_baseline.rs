//! `vlmrun baseline` end to end on the tiny model: outputs and report, resume after a crash (kill -9 and
//! a torn last line), Ctrl-C, and each bad-input path with its exit code.

use assert_cmd::Command;
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn root(path: &str) -> String {
    Path::new(ROOT).join(path).display().to_string()
}

/// A manifest of `count` items cycling through the sample images, plus its directory.
fn manifest(dir: &Path, count: usize, extra: &[&str]) -> PathBuf {
    let images: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("tests/fixtures/images"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let mut text = String::new();
    for i in 0..count {
        let image = &images[i % images.len()];
        text.push_str(&format!(
            "{{\"id\": \"img{i}\", \"image\": \"{image}\", \"references\": [\"a picture\", \"an image of things\"]}}\n"
        ));
    }
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    let path = dir.join("data.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn baseline(dir: &Path, sets: &[String]) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("vlmrun"));
    cmd.current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--device", "cpu"])
        .args([
            "--set",
            &format!("output.dir={}", dir.join("out").display()),
        ]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    cmd.arg("baseline");
    cmd
}

fn predictions(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("out/predictions.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is whole JSON"))
        .collect()
}

fn report(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("out/report.json")).unwrap()).unwrap()
}

#[test]
fn embedded_default_writes_predictions_metrics_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let output = baseline(dir.path(), &[]).arg("--fresh").output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("baseline summary"), "{stderr}");
    let lines = predictions(dir.path());
    assert_eq!(lines.len(), 12);
    for line in &lines {
        for key in ["id", "image", "caption", "token_ids", "batch", "latency_ms"] {
            assert!(line.get(key).is_some(), "{key} in {line}");
        }
        assert_eq!(line["token_ids"][0], 30522);
    }
    let written = report(dir.path());
    assert_eq!(written["schema"], "vlmrun.baseline/1");
    assert_eq!(written["status"], "complete");
    assert_eq!(written["counts"]["done"], 12);
    assert_eq!(written["metrics"]["n_images"], 12);
    assert!(written["timings"]["images_per_s"].as_f64().unwrap() > 0.0);
    assert!(
        written["timings"]["batch_latency_ms"]["p95"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(dir.path().join("out/resolved-config.yaml").is_file());
    // The default is the demo model (models/demo-blip), trained on these very images: real
    // captions, scores far above zero, and the run says that they are memorised.
    assert_eq!(written["model"]["source"], "models/demo-blip");
    assert_eq!(written["model"]["kind"], "demo");
    assert!(written["metrics"]["cider"].as_f64().unwrap() > 1.0);
    assert!(stderr.contains("model "), "{stderr}");
    assert!(
        stderr.contains("note: this is the built-in demo model"),
        "{stderr}"
    );

    // A second run resumes: nothing to do, same predictions, metrics still computed.
    let output = baseline(dir.path(), &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(predictions(dir.path()).len(), 12);
    assert_eq!(report(dir.path())["counts"]["skipped"], 12);
    assert_eq!(report(dir.path())["metrics"]["n_images"], 12);
    // No model was loaded this time; the configured directory still names and labels it.
    assert_eq!(report(dir.path())["model"]["directory"], Value::Null);
    assert_eq!(report(dir.path())["model"]["kind"], "demo");
}

#[test]
fn the_report_labels_a_random_model_and_leaves_an_unlabelled_one_unlabelled() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = root("models/tiny-blip");
    let sets = ["data.limit=2".to_string(), format!("model.source={tiny}")];
    let output = baseline(dir.path(), &sets).arg("--fresh").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let written = report(dir.path());
    assert_eq!(written["model"]["kind"], "random");
    assert_eq!(written["model"]["source"], tiny.as_str());
    assert_eq!(written["model"]["directory"], tiny.as_str());
    assert!(
        stderr.contains("note: this model has random weights"),
        "{stderr}"
    );
    let html = std::fs::read_to_string(dir.path().join("out/report.html")).unwrap();
    assert!(
        html.contains("random weights"),
        "report.html does not say so"
    );

    // The same weights without the label file are just a model.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(Path::new(&tiny).join(file), copy.join(file)).unwrap();
    }
    let sets = [
        "data.limit=2".to_string(),
        format!("model.source={}", copy.display()),
    ];
    let output = baseline(dir.path(), &sets).arg("--fresh").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(report(dir.path())["model"]["kind"], Value::Null);
    assert!(!stderr.contains("note:"), "{stderr}");
    let html = std::fs::read_to_string(dir.path().join("out/report.html")).unwrap();
    assert!(
        !html.contains("model-caveat"),
        "an unlabelled model has no caveat"
    );
}

#[test]
fn resume_after_kill_and_torn_line_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = manifest(dir.path(), 400, &[]);
    let sets = [
        format!("data.path={}", data.display()),
        "generation.batch_size=2".to_string(),
    ];
    let mut child = baseline(dir.path(), &sets)
        .arg("--fresh")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while predictions(dir.path()).len() < 6 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let before = predictions(dir.path()).len();
    assert!(
        (6..400).contains(&before),
        "killed mid-run with {before} done"
    );
    // Simulate a crash in the middle of a write as well.
    let path = dir.path().join("out/predictions.jsonl");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(br#"{"id":"img399","image":"x","capt"#);
    std::fs::write(&path, bytes).unwrap();

    let output = baseline(dir.path(), &sets).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("torn"));
    let lines = predictions(dir.path());
    let ids: HashSet<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(lines.len(), 400, "no duplicates");
    assert_eq!(ids.len(), 400, "nothing lost");
    assert_eq!(report(dir.path())["counts"]["skipped"], before as u64);
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_a_partial_report_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let data = manifest(dir.path(), 400, &[]);
    let sets = [
        format!("data.path={}", data.display()),
        "generation.batch_size=2".to_string(),
    ];
    let child = baseline(dir.path(), &sets)
        .arg("--fresh")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while predictions(dir.path()).len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written = report(dir.path());
    assert_eq!(written["status"], "interrupted");
    let done = predictions(dir.path()).len() as u64;
    assert_eq!(written["counts"]["done"], done);
    assert_eq!(written["counts"]["remaining"].as_u64().unwrap() + done, 400);
}

#[test]
fn unreadable_images_go_to_errors_jsonl_and_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.png"), b"not a png").unwrap();
    let data = manifest(
        dir.path(),
        3,
        &[
            r#"{"id": "broken", "image": "broken.png"}"#,
            r#"{"id": "gone", "image": "gone.png"}"#,
        ],
    );
    let output = baseline(dir.path(), &[format!("data.path={}", data.display())])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let errors = std::fs::read_to_string(dir.path().join("out/errors.jsonl")).unwrap();
    let ids: Vec<String> = errors
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["broken", "gone"]);
    assert_eq!(predictions(dir.path()).len(), 3);
    assert_eq!(report(dir.path())["status"], "complete_with_failures");
}

fn fails_before_loading(dir: &Path, sets: &[String], code: i32, needles: &[&str]) {
    let output = baseline(dir, sets).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    }
    assert!(!dir.join("out/predictions.jsonl").exists(), "nothing ran");
}

#[test]
fn bad_datasets_fail_before_the_model_loads() {
    let dir = tempfile::tempdir().unwrap();
    let data = manifest(dir.path(), 2, &["{not json"]);
    fails_before_loading(
        dir.path(),
        &[format!("data.path={}", data.display())],
        5,
        &["data.jsonl:3:", "not valid JSON"],
    );
    let data = manifest(dir.path(), 2, &[r#"{"id": "x"}"#]);
    fails_before_loading(
        dir.path(),
        &[format!("data.path={}", data.display())],
        5,
        &["data.jsonl:3:", "missing \"image\""],
    );
    let data = manifest(dir.path(), 2, &[]);
    fails_before_loading(
        dir.path(),
        &[
            format!("data.path={}", data.display()),
            "data.offset=5".into(),
        ],
        5,
        &["no images", "offset 5"],
    );
    fails_before_loading(
        dir.path(),
        &["data.path=/no/such/manifest.jsonl".into()],
        5,
        &["/no/such/manifest.jsonl not found"],
    );
    let coco = dir.path().join("captions.json");
    std::fs::write(
        &coco,
        r#"{"images": [{"id": 1, "file_name": "a.png"}], "annotations": []}"#,
    )
    .unwrap();
    fails_before_loading(
        dir.path(),
        &[
            "data.source=coco".into(),
            format!("data.path={}", coco.display()),
            "data.image_root=/no/such/root".into(),
        ],
        5,
        &["image root /no/such/root not found"],
    );
    let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("vlmrun"))
        .current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args([
            "--device",
            "cuda",
            "--set",
            &format!("output.dir={}/out", dir.path().display()),
            "baseline",
        ])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "cuda requested on a machine without it"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("device cuda") && stderr.contains("fix:"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("out").exists(),
        "aborted before touching the output"
    );
}

#[test]
fn unwritable_output_directory_fails_before_the_model_loads() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(ROOT)
        .args([
            "--device",
            "cpu",
            "--set",
            &format!("output.dir={}/out", blocker.display()),
            "baseline",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("output directory") && stderr.contains("fix:"),
        "{stderr}"
    );
}

#[test]
fn coco_with_karpathy_split_selects_the_split() {
    let dir = tempfile::tempdir().unwrap();
    let coco = dir.path().join("captions.json");
    std::fs::write(
        &coco,
        r#"{"images": [{"id": 1, "file_name": "astronaut.png"}, {"id": 2, "file_name": "coffee.png"}, {"id": 3, "file_name": "rocket.png"}],
            "annotations": [{"image_id": 1, "caption": "an astronaut"}, {"image_id": 2, "caption": "a cup"}, {"image_id": 3, "caption": "a rocket"}]}"#,
    )
    .unwrap();
    let split = dir.path().join("dataset_coco.json");
    std::fs::write(&split, r#"{"images": [{"cocoid": 1, "split": "test"}, {"cocoid": 2, "split": "train"}, {"cocoid": 3, "split": "test"}]}"#).unwrap();
    let sets = [
        "data.source=coco".to_string(),
        format!("data.path={}", coco.display()),
        format!("data.image_root={}", root("tests/fixtures/images")),
        format!("data.split_file={}", split.display()),
        "data.split=test".to_string(),
    ];
    let output = baseline(dir.path(), &sets).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ids: Vec<String> = predictions(dir.path())
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["1", "3"]);
    assert_eq!(report(dir.path())["metrics"]["n_images"], 2);

    // `score` rescored the same file from the outside gives the same CIDEr.
    let score = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(ROOT)
        .args(["score", "--json", "--predictions"])
        .arg(dir.path().join("out/predictions.jsonl"))
        .arg("--references")
        .arg(&coco)
        .output()
        .unwrap();
    assert_eq!(
        score.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&score.stderr)
    );
    let scores: Value = serde_json::from_slice(&score.stdout).unwrap();
    assert_eq!(scores["cider"], report(dir.path())["metrics"]["cider"]);
}
