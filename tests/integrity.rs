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
    type Damage = fn(&mut Vec<u8>, usize, &mut serde_json::Map<String, Value>, &str);
    let cases: [(&str, Damage, &str); 3] = [
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

#[test]
fn logits_that_turn_non_finite_at_run_time_are_a_model_error_naming_where() {
    // Finite weights (they pass the load-time check) large enough that the LM head's LayerNorm
    // output overflows f32 on the first step.
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = damaged_model(dir.path(), "overflow", |bytes, header_len, header, _| {
        for name in [
            "text_decoder.cls.predictions.transform.LayerNorm.weight",
            "text_decoder.cls.predictions.transform.LayerNorm.bias",
        ] {
            let [start, end] = [0, 1].map(|i| {
                8 + header_len + header[name]["data_offsets"][i].as_u64().unwrap() as usize
            });
            for value in bytes[start..end].chunks_mut(4) {
                value.copy_from_slice(&3.0e38f32.to_le_bytes());
            }
        }
    });
    let image = Path::new(ROOT).join("tests/fixtures/images/chelsea.png");
    let output = vlmrun(
        &dir.path().join("out"),
        &[format!("model.source={}", model.display())],
    )
    .args(["--precision", "f32", "caption"])
    .arg(&image)
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    let error = error_text(&stderr);
    assert!(
        error.contains("logits became NaN or infinite at generation step 0"),
        "{error}"
    );
    assert!(error.contains("chelsea.png"), "{error}");
    assert!(error.contains(&model.display().to_string()), "{error}");
    assert!(error.contains("f32"), "{error}");
    assert!(!error.contains("internal error"), "{error}");
}

// ---- Every input item ends in one place; each error printed once, with one fix line. ----

/// Runs `vlmrun` with `args` (no output.dir override) and returns (exit code, stderr), killing it
/// after 60 s so that a read that blocks (a FIFO) fails the test instead of hanging it.
fn run_bounded(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vlmrun"))
        .current_dir(dir)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--device", "cpu"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("vlmrun {args:?} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The `error: ...` block of stderr (log lines dropped).
fn error_text(stderr: &str) -> String {
    stderr
        .lines()
        .skip_while(|line| !line.starts_with("error: "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(unix)]
#[test]
fn a_folder_file_name_that_is_not_utf8_gets_its_own_errors_line() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let sample = Path::new(ROOT).join("tests/fixtures/images/chelsea.png");
    std::fs::copy(&sample, images.join("ok.png")).unwrap();
    let bad = std::ffi::OsStr::from_bytes(b"caf\xe9.png");
    std::fs::copy(&sample, images.join(bad)).unwrap();
    let (code, stderr) = run_bounded(
        dir.path(),
        &[
            "--set",
            "data.source=folder",
            "--set",
            &format!("data.path={}", images.display()),
            "--set",
            "output.dir=out",
            "baseline",
        ],
    );
    // The other image is captioned; this one is a failure with its own line: exit 3.
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("1 file name(s) are not valid UTF-8"),
        "{stderr}"
    );
    let predictions = lines(&dir.path().join("out/predictions.jsonl"));
    let ids: Vec<&str> = predictions
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ok.png"]);
    let errors = lines(&dir.path().join("out/errors.jsonl"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["id"], "caf\\xE9.png");
    let reason = errors[0]["error"].as_str().unwrap();
    assert!(reason.contains("not valid UTF-8"), "{reason}");
    assert!(reason.contains("fix: rename"), "{reason}");
    let report = report(&dir.path().join("out"));
    assert_eq!(report["counts"]["failed"], 1, "{}", report["counts"]);
}

/// A folder of two copies of a sample image, one named `ok.png`, one with a name that is not UTF-8.
#[cfg(unix)]
fn folder_with_a_non_utf8_name(dir: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let images = dir.join("images");
    std::fs::create_dir(&images).unwrap();
    let sample = Path::new(ROOT).join("tests/fixtures/images/chelsea.png");
    std::fs::copy(&sample, images.join("ok.png")).unwrap();
    std::fs::copy(
        &sample,
        images.join(std::ffi::OsStr::from_bytes(b"caf\xe9.png")),
    )
    .unwrap();
    images
}

#[cfg(unix)]
#[test]
fn fidelity_lists_a_folder_file_whose_name_is_not_utf8_as_left_out_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let images = folder_with_a_non_utf8_name(dir.path());
    let (code, stderr) = run_bounded(
        dir.path(),
        &[
            "--set",
            "data.source=folder",
            "--set",
            &format!("data.path={}", images.display()),
            "--set",
            &format!("model.source={ROOT}/models/tiny-blip"),
            "fidelity",
            "--variants",
            "f32",
            "--beams",
            "1",
            "--out",
            "f.json",
        ],
    );
    // The other image is compared; this one is named, never dropped: exit 3.
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("fidelity leaves caf\\xE9.png out"),
        "{stderr}"
    );
    let doc: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("f.json")).unwrap()).unwrap();
    assert_eq!(doc["image_ids"], serde_json::json!(["ok.png"]));
    assert_eq!(
        doc["left_out"][0]["id"], "caf\\xE9.png",
        "{}",
        doc["left_out"]
    );
    let reason = doc["left_out"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("not valid UTF-8"), "{reason}");
}

#[cfg(unix)]
#[test]
fn train_on_a_folder_counts_a_file_whose_name_is_not_utf8_in_its_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let images = folder_with_a_non_utf8_name(dir.path());
    let (code, stderr) = run_bounded(
        dir.path(),
        &[
            "--set",
            "data.source=folder",
            "--set",
            &format!("data.path={}", images.display()),
            "--set",
            &format!("model.source={ROOT}/models/tiny-blip"),
            "--set",
            "output.dir=out",
            "train",
            "--steps",
            "1",
        ],
    );
    // A folder has no captions, so nothing can be trained on (exit 5, before a model is loaded);
    // the message counts the file it could not have used either way.
    assert_eq!(code, Some(5), "{stderr}");
    let error = error_text(&stderr);
    assert!(error.contains("1 training images, none with a non-empty reference caption (1 more left out: their file names are not valid UTF-8)"), "{error}");
}

#[test]
fn a_coco_image_id_given_twice_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["chelsea.png", "coffee.png", "rocket.png"] {
        std::fs::copy(
            Path::new(ROOT).join("tests/fixtures/images").join(name),
            dir.path().join(name),
        )
        .unwrap();
    }
    let annotations = serde_json::json!({
        "images": [
            {"id": 7, "file_name": "chelsea.png"},
            {"id": 9, "file_name": "coffee.png"},
            {"id": 7, "file_name": "rocket.png"}
        ],
        "annotations": [{"image_id": 7, "caption": "a cat"}, {"image_id": 9, "caption": "a cup"}]
    });
    std::fs::write(dir.path().join("ann.json"), annotations.to_string()).unwrap();
    let (code, stderr) = run_bounded(
        dir.path(),
        &[
            "--set",
            "data.source=coco",
            "--set",
            "data.path=ann.json",
            "--set",
            "output.dir=out",
            "baseline",
        ],
    );
    assert_eq!(code, Some(5), "{stderr}");
    let error = error_text(&stderr);
    assert!(
        error.contains("1 image id(s) appear more than once")
            && error.contains("7 (chelsea.png, rocket.png)"),
        "{error}"
    );
}

#[test]
fn a_run_in_which_every_image_fails_exits_5_with_each_failure_listed() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::fs::write(images.join("a.png"), b"not a png").unwrap();
    std::fs::write(images.join("b.jpg"), b"nor a jpeg").unwrap();
    let (code, stderr) = run_bounded(
        dir.path(),
        &[
            "--set",
            "data.source=folder",
            "--set",
            &format!("data.path={}", images.display()),
            "--set",
            "output.dir=out",
            "baseline",
        ],
    );
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("all 2 image(s) failed"), "{stderr}");
    let failures = lines(&dir.path().join("out/errors.jsonl"));
    let ids: Vec<&str> = failures.iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a.png", "b.jpg"]);
    assert_eq!(report(&dir.path().join("out"))["counts"]["failed"], 2);
}

#[test]
fn score_refuses_a_duplicated_prediction_id_and_empty_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let refs = dir.path().join("refs.jsonl");
    std::fs::write(
        &refs,
        "{\"id\": \"a\", \"image\": \"a.png\", \"references\": [\"a cat\"]}\n{\"id\": \"b\", \"image\": \"b.png\", \"references\": [\"a dog\"]}\n",
    )
    .unwrap();
    let predictions = dir.path().join("p.jsonl");
    std::fs::write(
        &predictions,
        "{\"id\": \"a\", \"caption\": \"a cat\"}\n{\"id\": \"b\", \"caption\": \"a dog\"}\n{\"id\": \"a\", \"caption\": \"a bird\"}\n",
    )
    .unwrap();
    let args = |p: &Path| {
        vec![
            "score".to_string(),
            "--predictions".to_string(),
            p.display().to_string(),
            "--references".to_string(),
            refs.display().to_string(),
        ]
    };
    let owned = args(&predictions);
    let argv: Vec<&str> = owned.iter().map(String::as_str).collect();
    let (code, stderr) = run_bounded(dir.path(), &argv);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(
        stderr.contains("1 id(s) have more than one caption: \"a\" (lines 1 and 3)"),
        "{stderr}"
    );

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let owned = args(&empty);
    let argv: Vec<&str> = owned.iter().map(String::as_str).collect();
    let (code, stderr) = run_bounded(dir.path(), &argv);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("holds no captions"), "{stderr}");
}

#[test]
fn fidelity_limit_0_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_bounded(
        dir.path(),
        &[
            "--set",
            "output.dir=out",
            "fidelity",
            "--limit",
            "0",
            "--variants",
            "f16",
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("fidelity --limit 0: must be at least 1"),
        "{stderr}"
    );
    assert!(!dir.path().join("out/fidelity.json").exists());
}

#[cfg(unix)]
#[test]
fn wrong_kind_paths_are_named_as_such_and_each_cause_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.yaml");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::write(dir.path().join("afile"), b"x").unwrap();
    let cases: [(&[&str], i32, &str); 5] = [
        (
            &["--config", "pipe.yaml", "config"],
            2,
            "config file pipe.yaml is a FIFO (named pipe), not a file",
        ),
        (
            &["--config", "conf.d", "config"],
            2,
            "config file conf.d is a directory, not a file",
        ),
        (
            &[
                "--set",
                "data.path=pipe.yaml",
                "--set",
                "output.dir=o",
                "baseline",
            ],
            5,
            "dataset manifest pipe.yaml is a FIFO (named pipe), not a file",
        ),
        (
            &["--set", "output.dir=afile/run", "baseline", "--limit", "1"],
            6,
            "afile is a file, not a directory",
        ),
        (
            &["--set", "output.dir=", "baseline"],
            2,
            "config key output.dir: must not be empty",
        ),
    ];
    for (args, exit, first_line) in cases {
        let (code, stderr) = run_bounded(dir.path(), args);
        let error = error_text(&stderr);
        assert_eq!(code, Some(exit), "{args:?}: {stderr}");
        assert!(
            error.lines().next().unwrap_or("").contains(first_line),
            "{args:?}: {error}"
        );
        assert!(error.matches("fix:").count() <= 1, "{args:?}: {error}");
        assert!(error.matches("os error").count() <= 1, "{args:?}: {error}");
    }
    // The empty output.dir wrote nothing into the working directory.
    assert!(!dir.path().join("predictions.jsonl").exists());
}
