//! Results integrity on the tiny model: one writer per output directory (real processes), resume only
//! what the same settings made, interrupts at any moment, bounded settings and model-file checks.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Exit code of a run refused because another live run holds the output directory (README).
const BUSY: i32 = 8;

/// A manifest of `count` items cycling through the sample images.
fn manifest(dir: &Path, count: usize) -> PathBuf {
    let mut images: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("tests/fixtures/images"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    images.sort();
    let mut text = String::new();
    for i in 0..count {
        let image = &images[i % images.len()];
        text.push_str(&format!(
            "{{\"id\": \"img{i}\", \"image\": \"{image}\", \"references\": [\"a picture\"]}}\n"
        ));
    }
    let path = dir.join("data.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn vlmrun(out: &Path, sets: &[String]) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("vlmrun"));
    cmd.current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--device", "cpu"])
        .args(["--set", &format!("output.dir={}", out.display())]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    cmd
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn report(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap()
}

/// Waits until `out/predictions.jsonl` has at least `count` lines (or two minutes passed).
fn wait_for_lines(path: &Path, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while lines(path).len() < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[cfg(unix)]
#[test]
fn a_second_run_on_a_live_output_directory_is_refused_and_fresh_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = manifest(dir.path(), 400);
    let sets = [
        format!("data.path={}", data.display()),
        "generation.batch_size=2".to_string(),
    ];
    let first = vlmrun(&out, &sets)
        .args(["baseline", "--fresh"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let predictions = out.join("predictions.jsonl");
    wait_for_lines(&predictions, 2);

    for extra in [&["--fresh"][..], &[][..]] {
        let second = vlmrun(&out, &sets)
            .arg("baseline")
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert_eq!(second.status.code(), Some(BUSY), "{stderr}");
        assert!(stderr.contains("in use by another vlmrun run"), "{stderr}");
        assert!(
            stderr.contains(&format!("pid {}", first.id())),
            "names the holder: {stderr}"
        );
        assert!(stderr.contains("output.dir"), "{stderr}");
    }
    let train = vlmrun(&out, &sets)
        .args(["train", "--fresh", "--steps", "1"])
        .output()
        .unwrap();
    assert_eq!(
        train.status.code(),
        Some(BUSY),
        "{}",
        String::from_utf8_lossy(&train.stderr)
    );

    signal(&first, "-INT");
    let status = first.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(130));
    let done = lines(&predictions).len() as u64;
    assert!(
        done >= 2,
        "the first run's results survived the second's --fresh"
    );
    assert_eq!(report(&out)["counts"]["done"], done);
}
