//! `vlmrun fidelity` on the tiny BLIP (CPU): the f32 variant agrees 100% with the f32 reference
//! with zero logit error, a q4_0 variant measurably differs, the JSON document and the markdown
//! table carry the numbers, and bad requests are refused (exit 2).

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn vlmrun(args: &[&str], cwd: &Path) -> (Option<i32>, String, String) {
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(cwd)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--config", &format!("{ROOT}/configs/config.yaml")])
        .args(["--device", "cpu", "--quiet"])
        .args([
            "--set",
            &format!("data.path={ROOT}/tests/fixtures/samples.jsonl"),
            "--set",
            &format!("model.source={ROOT}/models/tiny-blip"),
        ])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

fn variant<'a>(doc: &'a Value, label: &str) -> &'a Value {
    doc["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["label"] == label)
        .unwrap_or_else(|| panic!("no variant {label}"))
}

#[test]
fn f32_agrees_fully_and_q4_0_differs() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = vlmrun(
        &[
            "fidelity",
            "--variants",
            "f32,q4_0",
            "--beams",
            "1,3",
            "--limit",
            "6",
            "--out",
            "f.json",
        ],
        dir.path(),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("f.json")).unwrap()).unwrap();
    assert_eq!(doc["schema"], "vlmrun.fidelity/1");
    assert_eq!(doc["image_ids"].as_array().unwrap().len(), 6);

    let same = variant(&doc, "f32");
    for decoding in same["decoding"].as_array().unwrap() {
        assert_eq!(decoding["exact_sequence_pct"], 100.0, "{decoding}");
        assert_eq!(decoding["token_agreement_pct"], 100.0, "{decoding}");
        assert_eq!(decoding["images"], 6);
    }
    assert_eq!(same["step1_logits"]["max_abs_error"], 0.0);
    assert_eq!(same["step1_logits"]["mean_abs_error"], 0.0);
    assert_eq!(same["weight_bytes"], doc["reference"]["weight_bytes"]);

    let q4 = variant(&doc, "q4_0");
    let greedy = &q4["decoding"][0];
    let differs = greedy["exact_sequence_pct"].as_f64().unwrap() < 100.0
        || q4["step1_logits"]["max_abs_error"].as_f64().unwrap() > 0.0;
    assert!(differs, "q4_0 indistinguishable from f32: {q4}");
    assert!(
        q4["weight_bytes"].as_u64().unwrap() < doc["reference"]["weight_bytes"].as_u64().unwrap()
    );
    assert_eq!(q4["quantization"], "q4_0");

    assert!(stdout.contains("| variant | greedy exact % |"), "{stdout}");
    assert!(stdout.contains("| q4_0 |"), "{stdout}");
}

#[test]
fn bad_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = vlmrun(&["fidelity", "--variants", "q5"], dir.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("unknown variant `q5`"), "{stderr}");
    let (code, _, stderr) = vlmrun(&["fidelity", "--beams", "0"], dir.path());
    assert_eq!(code, Some(2), "{stderr}");
    let (code, _, stderr) = vlmrun(&["fidelity", "--model", "m.gguf"], dir.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("GGUF"), "{stderr}");
}
