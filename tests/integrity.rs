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

/// A manifest of `count` items over copies of the sample images in `dir/img` (so a test may change
/// one), and the copies' paths.
fn copied_manifest(dir: &Path, count: usize) -> (PathBuf, Vec<PathBuf>) {
    let copies = dir.join("img");
    std::fs::create_dir_all(&copies).unwrap();
    let mut images: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("tests/fixtures/images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    images.sort();
    let mut text = String::new();
    let mut paths = Vec::new();
    for (i, image) in images.iter().take(count).enumerate() {
        let copy = copies.join(image.file_name().unwrap());
        std::fs::copy(image, &copy).unwrap();
        text.push_str(&format!(
            "{{\"id\": \"i{i}\", \"image\": \"{}\", \"references\": [\"a picture\"]}}\n",
            copy.display()
        ));
        paths.push(copy);
    }
    let path = dir.join("copies.jsonl");
    std::fs::write(&path, text).unwrap();
    (path, paths)
}

#[test]
fn resuming_with_other_settings_is_refused_naming_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (data, _) = copied_manifest(dir.path(), 3);
    let data_set = format!("data.path={}", data.display());
    let first = vlmrun(&out, std::slice::from_ref(&data_set))
        .arg("baseline")
        .output()
        .unwrap();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let predictions = out.join("predictions.jsonl");
    let before = std::fs::read(&predictions).unwrap();

    for (change, key) in [
        ("generation.num_beams=2", "generation.num_beams: 1 -> 2"),
        ("generation.prompt=a picture of ", "generation.prompt"),
        (
            "generation.max_length=12",
            "generation.max_length: 20 -> 12",
        ),
    ] {
        let rerun = vlmrun(&out, &[data_set.clone(), change.to_string()])
            .arg("baseline")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&rerun.stderr);
        assert_eq!(rerun.status.code(), Some(2), "{change}: {stderr}");
        assert!(stderr.contains(key), "{key} in {stderr}");
        assert!(stderr.contains("--fresh"), "{stderr}");
        assert_eq!(std::fs::read(&predictions).unwrap(), before, "untouched");
    }
    // Another model directory (same bytes, other files) is another model.
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(
            Path::new(ROOT).join("models/tiny-blip").join(file),
            model.join(file),
        )
        .unwrap();
    }
    let rerun = vlmrun(
        &out,
        &[
            data_set.clone(),
            format!("model.source={}", model.display()),
        ],
    )
    .arg("baseline")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    assert_eq!(rerun.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("model.source"), "{stderr}");

    // What does not change a caption resumes, and --fresh starts over with the new settings.
    let same = vlmrun(&out, &[data_set.clone(), "generation.batch_size=1".into()])
        .arg("baseline")
        .output()
        .unwrap();
    assert_eq!(same.status.code(), Some(0));
    assert_eq!(report(&out)["counts"]["skipped"], 3);
    let fresh = vlmrun(&out, &[data_set, "generation.num_beams=2".into()])
        .args(["baseline", "--fresh"])
        .output()
        .unwrap();
    assert_eq!(fresh.status.code(), Some(0));
    assert_eq!(report(&out)["counts"]["done"], 3);
}

#[test]
fn an_image_that_changed_since_it_was_captioned_is_captioned_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (data, images) = copied_manifest(dir.path(), 3);
    let sets = [format!("data.path={}", data.display())];
    let first = vlmrun(&out, &sets).arg("baseline").output().unwrap();
    assert_eq!(first.status.code(), Some(0));
    let predictions = out.join("predictions.jsonl");
    let stamp_before = lines(&predictions)[1]["image_stamp"].clone();
    assert!(stamp_before.is_string(), "each line has its image's stamp");

    // Same path, same id, other bytes.
    std::fs::copy(&images[0], &images[1]).unwrap();
    let rerun = vlmrun(&out, &sets).arg("baseline").output().unwrap();
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    assert_eq!(rerun.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("1 image(s) changed"), "{stderr}");
    assert_eq!(report(&out)["counts"]["skipped"], 2);
    assert_eq!(report(&out)["counts"]["done"], 1);
    let now = lines(&predictions);
    assert_eq!(now.len(), 3, "one line per id");
    let redone: Vec<&Value> = now.iter().filter(|l| l["id"] == "i1").collect();
    assert_eq!(redone.len(), 1);
    assert_ne!(redone[0]["image_stamp"], stamp_before);
}

/// Waits until `pid` catches SIGINT (its handler is installed: bit 2 of SigCgt in /proc/PID/status).
#[cfg(target_os = "linux")]
fn wait_for_sigint_handler(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|line| line.strip_prefix("SigCgt:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or(0);
        if caught & (1 << 1) != 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("no SIGINT handler after 60 s");
}

#[cfg(target_os = "linux")]
#[test]
fn an_interrupt_before_the_first_batch_is_interrupted_not_complete() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // The interrupt comes as soon as the handler is installed, while the 100000-line manifest is
    // being read: the run must stop before the model load, as "interrupted" with every item left.
    let data = manifest(dir.path(), 100_000);
    let mut child = vlmrun(&out, &[format!("data.path={}", data.display())])
        .args(["baseline", "--fresh"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_sigint_handler(child.id());
    signal(&child, "-INT");
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    let written = report(&out);
    assert_eq!(written["status"], "interrupted", "{stderr}");
    let counts = &written["counts"];
    assert_eq!(
        counts["done"].as_u64().unwrap() + counts["remaining"].as_u64().unwrap(),
        100_000,
        "{counts}"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_is_handled_like_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = manifest(dir.path(), 400);
    let child = vlmrun(
        &out,
        &[
            format!("data.path={}", data.display()),
            "generation.batch_size=2".to_string(),
        ],
    )
    .args(["baseline", "--fresh"])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let predictions = out.join("predictions.jsonl");
    wait_for_lines(&predictions, 2);
    signal(&child, "-TERM");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupt"), "{stderr}");
    let written = report(&out);
    assert_eq!(written["status"], "interrupted");
    let done = lines(&predictions).len() as u64;
    assert_eq!(written["counts"]["done"], done);
    assert_eq!(written["counts"]["remaining"].as_u64().unwrap() + done, 400);
}

#[test]
fn settings_past_their_bounds_are_configuration_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = manifest(dir.path(), 2);
    let data_set = format!("data.path={}", data.display());
    let cases: [(&[&str], &str); 5] = [
        (&["preprocess.workers=100000"], "preprocess.workers"),
        (&["generation.num_beams=100000"], "generation.num_beams"),
        (&["generation.max_length=100000"], "generation.max_length"),
        (&["generation.max_length=600"], "512 positions"),
        (
            &[
                "generation.max_length=6",
                "generation.prompt=a picture of a long and winding road",
            ],
            "generation.prompt",
        ),
    ];
    for (sets, needle) in cases {
        let mut all = vec![data_set.clone()];
        all.extend(sets.iter().map(|s| s.to_string()));
        let output = vlmrun(&out, &all)
            .args(["baseline", "--fresh"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{sets:?}: {stderr}");
        assert!(stderr.contains(needle), "{needle} in {stderr}");
        assert!(!stderr.contains("internal error"), "{stderr}");
        assert!(lines(&out.join("predictions.jsonl")).is_empty());
    }
}

/// A copy of the tiny model in `dir` whose model.safetensors `damage` rewrote (given the file's bytes,
/// the header length and the header); returns the directory and the first F32 tensor's name.
fn damaged_model(
    dir: &Path,
    name: &str,
    damage: fn(&mut Vec<u8>, usize, &mut serde_json::Map<String, Value>, &str),
) -> (PathBuf, String) {
    let model = dir.join(name);
    std::fs::create_dir_all(&model).unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(
            Path::new(ROOT).join("models/tiny-blip").join(file),
            model.join(file),
        )
        .unwrap();
    }
    let mut bytes =
        std::fs::read(Path::new(ROOT).join("models/tiny-blip/model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let mut names: Vec<String> = header
        .iter()
        .filter(|(k, v)| *k != "__metadata__" && v["dtype"] == "F32")
        .map(|(k, _)| k.clone())
        .collect();
    names.sort();
    let tensor = names[0].clone();
    damage(&mut bytes, header_len, &mut header, &tensor);
    std::fs::write(model.join("model.safetensors"), bytes).unwrap();
    (model, tensor)
}

#[test]
fn damaged_weights_are_model_errors_naming_the_tensor_and_doctor_fails_them() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(
        &str,
        fn(&mut Vec<u8>, usize, &mut serde_json::Map<String, Value>, &str),
        &str,
    ); 3] = [
        (
            "nan",
            |bytes, header_len, header, tensor| {
                let start =
                    8 + header_len + header[tensor]["data_offsets"][0].as_u64().unwrap() as usize;
                bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
            },
            "NaN",
        ),
        (
            "i32",
            |bytes, header_len, header, tensor| {
                header[tensor]["dtype"] = "I32".into();
                let mut text = serde_json::to_vec(header).unwrap();
                assert!(text.len() <= header_len);
                text.resize(header_len, b' ');
                bytes[8..8 + header_len].copy_from_slice(&text);
            },
            "I32",
        ),
        (
            "truncated",
            |bytes, _, _, _| bytes.truncate(bytes.len() - 100),
            "truncated",
        ),
    ];
    let image = Path::new(ROOT).join("tests/fixtures/images/chelsea.png");
    for (name, damage, needle) in cases {
        let (model, tensor) = damaged_model(dir.path(), name, damage);
        let model_set = format!("model.source={}", model.display());
        let output = vlmrun(&dir.path().join("out"), std::slice::from_ref(&model_set))
            .arg("caption")
            .arg(&image)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(4), "{name}: {stderr}");
        assert!(stderr.contains(needle), "{needle} in {stderr}");
        if name != "truncated" {
            assert!(stderr.contains(&tensor), "{tensor} in {stderr}");
        }
        let doctor = vlmrun(&dir.path().join("out"), &[model_set])
            .args(["doctor", "--json"])
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&doctor.stdout).unwrap();
        let check = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "model")
            .unwrap();
        assert_eq!(check["status"], "fail", "{name}: {check}");
        assert!(report["model"]["invalid"].is_string());
    }
}
