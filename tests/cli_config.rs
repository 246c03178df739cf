//! Configuration through the real binary: resolution order, provenance, and every bad-input path
//! (exit 2, one message naming file:line:column or the flag, a fix, no panic).

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

fn vlmrun(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("vlmrun").unwrap();
    cmd.current_dir(dir).env_remove("VLMRUN_LOG");
    cmd
}

fn with_config(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("configs")).unwrap();
    std::fs::write(dir.path().join("configs/config.yaml"), text).unwrap();
    dir
}

/// Runs `config` and checks the failure shape shared by every bad-input case.
fn fails_with(dir: &Path, args: &[&str], needles: &[&str]) {
    let output = vlmrun(dir).args(args).arg("config").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(
        stderr.matches("error:").count(),
        1,
        "printed once: {stderr}"
    );
    for needle in needles {
        assert!(stderr.contains(needle), "missing {needle:?} in: {stderr}");
    }
}

#[test]
fn later_sources_win_and_origins_are_shown() {
    let dir = with_config("device: cpu\ngeneration:\n  num_beams: 2\n");
    vlmrun(dir.path())
        .args([
            "--set",
            "generation.num_beams=4",
            "--set",
            "generation.num_beams=5",
        ])
        .args(["--set", "device=cuda:1", "--device", "auto", "config"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "num_beams: 5  # --set generation.num_beams=5",
        ))
        .stdout(predicate::str::contains("device: auto  # --device"))
        .stdout(predicate::str::contains("max_length: 20  # default"));
    vlmrun(dir.path())
        .arg("config")
        .assert()
        .success()
        .stdout(predicate::str::contains("device: cpu  # config file"))
        .stdout(predicate::str::contains("num_beams: 2  # config file"));
}

#[test]
fn printed_config_reads_back_as_the_same_config() {
    let dir = with_config("generation:\n  prompt: \"a picture of \"\n  max_length: 30\n");
    let printed = vlmrun(dir.path()).arg("config").output().unwrap().stdout;
    let reparsed = vlmrun::config::parse_str(&String::from_utf8(printed).unwrap(), Path::new("x"))
        .unwrap()
        .config;
    assert_eq!(reparsed.generation.prompt, "a picture of ");
    assert_eq!(reparsed.generation.max_length, 30);
}

#[test]
fn string_values_stay_strings() {
    let dir = with_config("");
    vlmrun(dir.path())
        .args([
            "--set",
            "model.revision=2024",
            "--set",
            "generation.prompt=true",
            "config",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("revision: \"2024\""))
        .stdout(predicate::str::contains("prompt: \"true\""));
    vlmrun(dir.path())
        .args([
            "--set",
            "generation.prompt=a picture of ",
            "--set",
            "data.limit=null",
            "config",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("prompt: \"a picture of \""))
        .stdout(predicate::str::contains("limit: null"));
}

#[test]
fn a_named_config_file_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    fails_with(
        dir.path(),
        &["--config", "nope.yaml"],
        &["nope.yaml (from --config) not found", "fix:"],
    );
    let output = vlmrun(dir.path())
        .env("VLMRUN_CONFIG", "gone.yaml")
        .arg("config")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("gone.yaml (from VLMRUN_CONFIG) not found"),
        "{stderr}"
    );
}

#[test]
fn malformed_yaml_names_line_and_column() {
    let dir = with_config("device: cpu\ngeneration:\n  num_beams: [1, 2\n");
    fails_with(dir.path(), &[], &["configs/config.yaml:"]);
    let dir = with_config("generation:\n  num_beams: 3\n max_length: 5\n");
    fails_with(dir.path(), &[], &["configs/config.yaml:3:", "fix:"]);
}

#[test]
fn unknown_key_suggests_the_closest() {
    let dir = with_config("device: cpu\ngeneration:\n  num_beam: 3\n");
    fails_with(
        dir.path(),
        &[],
        &[
            "configs/config.yaml:3:",
            "num_beam",
            "did you mean `num_beams`?",
        ],
    );
    let dir = with_config("devcie: cpu\n");
    fails_with(
        dir.path(),
        &[],
        &["configs/config.yaml:1:", "did you mean `device`?"],
    );
}

#[test]
fn wrong_types_and_values() {
    let dir = with_config("generation:\n  num_beams: three\n");
    fails_with(dir.path(), &[], &["configs/config.yaml:2:", "fix:"]);
    let dir = with_config("device: gpu0\n");
    fails_with(
        dir.path(),
        &[],
        &["configs/config.yaml:1:", "cuda, cuda:N, cpu, auto"],
    );
    let dir = with_config("precision: fp8\n");
    fails_with(
        dir.path(),
        &[],
        &["configs/config.yaml:1:", "fp8", "auto, f32, f16, bf16"],
    );
    let dir = with_config("quantization: q3\n");
    fails_with(
        dir.path(),
        &[],
        &[
            "configs/config.yaml:1:",
            "none",
            "q8_0",
            "q4_0",
            "q4k",
            "q6k",
        ],
    );
    let dir = with_config("precision_fallback: f16\n");
    fails_with(dir.path(), &[], &["configs/config.yaml:1:", "f32", "bf16"]);
    let dir = with_config("generation:\n  num_beams: 0\n");
    fails_with(dir.path(), &[], &["generation.num_beams", "at least 1"]);
}

#[test]
fn bad_set_arguments_name_the_flag() {
    let dir = with_config("");
    fails_with(
        dir.path(),
        &["--set", "generation.num_beams"],
        &["--set generation.num_beams", "key.path=value"],
    );
    fails_with(
        dir.path(),
        &["--set", "generation.num_beam=3"],
        &["--set generation.num_beam=3", "did you mean `num_beams`?"],
    );
    fails_with(
        dir.path(),
        &["--set", "generation=3"],
        &["is a section", "generation.num_beams"],
    );
    fails_with(
        dir.path(),
        &["--set", "generation.num_beams=lots"],
        &["--set generation.num_beams=lots", "invalid"],
    );
    fails_with(
        dir.path(),
        &["--set", "device.x=1"],
        &["--set device.x=1", "is a value"],
    );
    fails_with(dir.path(), &["--set", "..=1"], &["not a key path"]);
}

#[test]
fn invalid_device_and_precision_flags() {
    let dir = with_config("");
    fails_with(
        dir.path(),
        &["--device", "tpu"],
        &["--device tpu", "cuda, cuda:N, cpu, auto"],
    );
    fails_with(
        dir.path(),
        &["--device", "cuda:x"],
        &["--device cuda:x", "must be a number"],
    );
    fails_with(
        dir.path(),
        &["--precision", "f64"],
        &["--precision f64", "f32, f16, bf16, auto"],
    );
}

#[test]
fn every_shipped_config_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("configs")).unwrap() {
        let path = entry.unwrap().path();
        let resolved = vlmrun::config::resolve(&vlmrun::config::ConfigRequest {
            file: Some(path.clone()),
            ..Default::default()
        });
        assert!(resolved.is_ok(), "{}: {:?}", path.display(), resolved.err());
        seen += 1;
    }
    assert!(seen >= 3, "config.yaml plus the two LAVIS recipes");
    let lavis = vlmrun::config::resolve(&vlmrun::config::ConfigRequest {
        file: Some(root.join("configs/blip-base-coco.yaml")),
        ..Default::default()
    })
    .unwrap()
    .config;
    assert_eq!(lavis.generation.prompt, "a picture of ");
    assert_eq!(
        (
            lavis.generation.num_beams,
            lavis.generation.max_length,
            lavis.generation.min_length
        ),
        (3, 20, 5)
    );
    assert_eq!(lavis.generation.batch_size, 64);
}

#[test]
fn the_shipped_config_is_the_built_in_defaults() {
    // Outside the repository a run uses the built-in defaults; inside it, configs/config.yaml. Both
    // must give the same run.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("configs/config.yaml")).unwrap();
    let shipped = vlmrun::config::parse_str(&text, Path::new("configs/config.yaml"))
        .unwrap()
        .config;
    assert_eq!(shipped, vlmrun::config::Config::default());
}
