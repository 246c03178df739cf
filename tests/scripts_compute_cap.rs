//! scripts/cuda-compute-cap.sh, which the CUDA build scripts take CUDA_COMPUTE_CAP from: the
//! environment's value, else nvidia-smi's (a stand-in script here), else 90 said aloud.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn compute_cap(smi: &Path, env_cap: Option<&str>) -> (String, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(Path::new(ROOT).join("scripts/cuda-compute-cap.sh"))
        .env("NVIDIA_SMI", smi)
        .env_remove("CUDA_COMPUTE_CAP");
    if let Some(cap) = env_cap {
        cmd.env("CUDA_COMPUTE_CAP", cap);
    }
    let output = cmd.output().unwrap();
    assert!(output.status.success(), "{output:?}");
    (
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

fn fake_smi(dir: &Path, printed: &str) -> std::path::PathBuf {
    let path = dir.join("nvidia-smi");
    std::fs::write(&path, format!("#!/bin/sh\nprintf '{printed}'\n")).unwrap();
    let mut permissions = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&path, permissions).unwrap();
    path
}

#[test]
fn takes_the_gpus_compute_capability_from_nvidia_smi() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, stderr) = compute_cap(&fake_smi(dir.path(), "8.6\\n8.6\\n"), None);
    assert_eq!(cap, "86");
    assert!(stderr.contains("from nvidia-smi"), "{stderr}");
    let (cap, stderr) = compute_cap(&fake_smi(dir.path(), "8.9\\n7.5\\n"), None);
    assert_eq!(cap, "89");
    assert!(
        stderr.contains("different compute capabilities"),
        "{stderr}"
    );
}

#[test]
fn falls_back_to_90_aloud_and_keeps_a_given_value() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, stderr) = compute_cap(&dir.path().join("absent-nvidia-smi"), None);
    assert_eq!(cap, "90");
    assert!(stderr.contains("no nvidia-smi"), "{stderr}");
    assert!(stderr.contains("CUDA_COMPUTE_CAP=90"), "{stderr}");
    // nvidia-smi present but without a GPU (it prints an error, no numbers).
    let (cap, stderr) = compute_cap(&fake_smi(dir.path(), "No devices were found\\n"), None);
    assert_eq!(cap, "90");
    assert!(stderr.contains("reports no GPU"), "{stderr}");
    let (cap, _) = compute_cap(&fake_smi(dir.path(), "8.6\\n"), Some("75"));
    assert_eq!(cap, "75");
}
