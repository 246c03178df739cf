//! `data.source: parquet` end to end (build with `--features parquet`): the fixtures of
//! tests/fixtures/make_parquet_fixtures.py (pyarrow 18.1.0, the Hugging Face datasets layout) as a
//! folder dataset of two files, captioned by the tiny model; without the feature, a clear error.

#[cfg(feature = "parquet")]
use serde_json::Value;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn baseline(data_dir: &Path, out: &Path, path: &str) -> std::process::Output {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("vlmrun"))
        .current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .env("VLMRUN_DATA_DIR", data_dir)
        .args(["--device", "cpu", "--set", "data.source=parquet", "--set"])
        .arg(format!("data.path={path}"))
        .arg("--set")
        .arg(format!("output.dir={}", out.display()))
        .args(["baseline", "--fresh"])
        .output()
        .unwrap()
}

#[cfg(feature = "parquet")]
#[test]
fn hugging_face_parquet_rows_are_captioned_with_their_references() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = baseline(&dir.path().join("data"), &out, "tests/fixtures/parquet");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(3),
        "the row without bytes fails: {stderr}"
    );

    let predictions: Vec<Value> = std::fs::read_to_string(out.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // Files in name order: captions_list (img_id column) then captions_text (row numbers).
    let ids: Vec<&str> = predictions
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["g1", "u2", "3", "4"]);
    assert_eq!(predictions[0]["image"], "gray_45x60.png");
    let errors = std::fs::read_to_string(out.join("errors.jsonl")).unwrap();
    assert!(
        errors.contains("\"m3\"") && errors.contains("missing.png"),
        "{errors}"
    );

    // The extracted bytes are the source PNGs, byte for byte, so captions equal the file's.
    let extracted: Vec<_> = walk(&dir.path().join("data"));
    let gray = std::fs::read(Path::new(ROOT).join("tests/fixtures/images/gray_45x60.png")).unwrap();
    assert!(extracted.contains(&gray), "gray_45x60.png extracted");

    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["metrics"]["n_images"], 4,
        "every row with captions is scored"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("a black and white picture") && html.contains("a tiny blurry image"));
}

#[cfg(feature = "parquet")]
fn walk(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(std::fs::read(&path).unwrap());
        }
    }
    out
}

#[cfg(feature = "parquet")]
#[test]
fn a_parquet_file_without_an_image_column_names_its_columns() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("x.parquet");
    std::fs::write(&bogus, b"PAR1 not really").unwrap();
    let output = baseline(
        &dir.path().join("data"),
        &dir.path().join("out"),
        bogus.to_str().unwrap(),
    );
    assert_eq!(output.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a readable parquet file"), "{stderr}");
}

#[cfg(not(feature = "parquet"))]
#[test]
fn without_the_feature_parquet_is_a_clear_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = baseline(
        &dir.path().join("data"),
        &dir.path().join("out"),
        "tests/fixtures/parquet",
    );
    assert_eq!(output.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--features parquet"), "{stderr}");
}
