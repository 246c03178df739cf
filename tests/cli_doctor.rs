//! `vlmrun doctor` on this machine (no NVIDIA driver in CI): never panics, reports CUDA unavailable, exits
//! 2 for `device: cuda` and 0 for `auto`/`cpu`; `--json` follows the documented schema (docs/doctor.md).

use assert_cmd::Command;
use serde_json::Value;

fn doctor(device: &str) -> (Option<i32>, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), format!("device: {device}\n")).unwrap();
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(dir.path())
        .env("VLMRUN_CUDA_BINARY", dir.path().join("absent"))
        .args(["--config", "c.yaml", "doctor", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let json: Value = serde_json::from_slice(&output.stdout).expect("doctor --json prints JSON");
    (output.status.code(), json, stderr)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

#[test]
fn cpu_and_auto_are_usable_with_a_real_smoke_test() {
    for device in ["cpu", "auto"] {
        let (code, report, _) = doctor(device);
        assert_eq!(code, Some(0), "{report:#}");
        assert_eq!(report["usable"], true);
        assert_eq!(report["device"]["resolved"], "cpu");
        assert_eq!(report["precision"]["resolved"], "f32");
        let smoke = report["smoke"].as_array().unwrap();
        assert_eq!(smoke.len(), 2);
        for result in smoke {
            assert_eq!(result["passed"], true);
            assert!(
                result["matmul_rel_error"].as_f64().unwrap()
                    <= result["tolerance"].as_f64().unwrap()
            );
        }
        assert_eq!(check(&report, "smoke:f32")["status"], "ok");
    }
    let (_, report, stderr) = doctor("auto");
    assert_eq!(check(&report, "device")["status"], "warn");
    assert!(report["device"]["fallback_reason"]
        .as_str()
        .unwrap()
        .contains("without CUDA"));
    // doctor reports the fallback in its table; the one-line warning is for commands that do work.
    assert_eq!(
        stderr.matches("using the CPU because").count(),
        0,
        "{stderr}"
    );
}

#[test]
fn cuda_request_is_unusable_without_a_driver() {
    for device in ["cuda", "cuda:3"] {
        let (code, report, _) = doctor(device);
        assert_eq!(code, Some(2), "{report:#}");
        assert_eq!(report["usable"], false);
        assert_eq!(check(&report, "device")["status"], "fail");
        assert!(check(&report, "device")["remedy"]
            .as_str()
            .unwrap()
            .contains("--features cuda"));
        assert!(report["smoke"].as_array().unwrap().is_empty());
    }
}

#[test]
fn json_schema_is_stable() {
    let (_, report, _) = doctor("cpu");
    assert_eq!(report["schema"], "vlmrun.doctor/1");
    let keys: Vec<&str> = report
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "schema",
            "vlmrun",
            "driver",
            "driver_error",
            "gpus",
            "device",
            "precision",
            "smoke",
            "hf_cache",
            "model",
            "checks",
            "usable"
        ]
    );
    assert_eq!(report["vlmrun"]["cuda"]["kind"], "not_compiled");
    assert!(report["driver"].is_null());
    assert!(report["driver_error"].as_str().unwrap().contains("driver"));
    for check in report["checks"].as_array().unwrap() {
        assert!(check["name"].is_string() && check["message"].is_string());
        assert!(["ok", "warn", "fail"].contains(&check["status"].as_str().unwrap()));
        if check["status"] != "ok" {
            assert!(check["remedy"].is_string(), "{check}");
        }
    }
    for key in ["dir", "chosen_by", "offline"] {
        assert!(report["hf_cache"].get(key).is_some());
    }
    for key in ["source", "revision", "dir", "missing", "error", "gguf"] {
        assert!(report["model"].get(key).is_some());
    }
    // The default model source is a directory: no GGUF header to report.
    assert!(report["model"]["gguf"].is_null());
}

#[test]
fn text_report_has_one_line_per_check_and_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), "device: cuda\n").unwrap();
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(dir.path())
        .args(["--config", "c.yaml", "doctor"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("FAIL  device"), "{text}");
    assert!(
        text.contains("result: device cuda:0 is NOT usable"),
        "{text}"
    );
}
