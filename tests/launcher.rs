//! The CPU build as launcher of the CUDA build (see src/device/launcher.rs), with stand-in companions:
//! one the dynamic loader rejects (as a CUDA build on a machine without a driver) and one it accepts.

#![cfg(unix)]

use assert_cmd::Command;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn unloadable_companion_keeps_the_cpu_build_running() {
    let dir = tempfile::tempdir().unwrap();
    let companion = dir.path().join("vlmrun-cuda");
    script(
        &companion,
        "echo 'vlmrun-cuda: error while loading shared libraries: libcuda.so.1: cannot open shared object file: No such file or directory' >&2\nexit 127",
    );
    std::fs::write(dir.path().join("c.yaml"), "device: auto\n").unwrap();
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(dir.path())
        .env("VLMRUN_CUDA_BINARY", &companion)
        .args(["--config", "c.yaml", "doctor", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["vlmrun"]["cuda"]["kind"], "companion_unloadable");
    let loader_error = report["vlmrun"]["cuda"]["loader_error"].as_str().unwrap();
    assert!(
        loader_error.starts_with("libcuda.so.1: cannot open"),
        "{loader_error}"
    );
    assert!(report["device"]["fallback_reason"]
        .as_str()
        .unwrap()
        .contains("libcuda.so.1"));

    // An explicit CUDA request says which library is missing and exits 2.
    std::fs::write(dir.path().join("c.yaml"), "device: cuda\n").unwrap();
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(dir.path())
        .env("VLMRUN_CUDA_BINARY", &companion)
        .args(["--config", "c.yaml", "doctor"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stdout).contains("libcuda.so.1"));
}

#[test]
fn loadable_companion_replaces_the_process_with_the_same_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let companion = dir.path().join("vlmrun-cuda");
    let log = dir.path().join("args.txt");
    script(
        &companion,
        &format!(
            "[ -n \"$VLMRUN_LOADER_PROBE\" ] && exit 0\necho \"launched=$VLMRUN_LAUNCHED $*\" > {}\nexit 7",
            log.display()
        ),
    );
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(dir.path())
        .env("VLMRUN_CUDA_BINARY", &companion)
        .args(["--device", "cuda", "doctor", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(7),
        "the companion's exit code comes through"
    );
    let seen = std::fs::read_to_string(&log).unwrap();
    assert_eq!(seen.trim(), "launched=1 --device cuda doctor --json");

    // VLMRUN_NO_CUDA_LAUNCH keeps the CPU build.
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(dir.path())
        .env("VLMRUN_CUDA_BINARY", &companion)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--config", "/nonexistent.yaml", "config"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}
