//! `vlmrun bench` on the tiny model on the CPU (1 warm-up, 2 iterations): the JSON document's schema and
//! the markdown table; the regression check end to end (a metric far worse -> exit 3 naming it, all better
//! -> 0, another device -> exit 2 with the reason); forced-length generation gives exactly N tokens.
//! No assertion is on a timing value: only on presence, sign and structure.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;
use vlmrun::bench::compare::{self, parse_document};
use vlmrun::bench::engine::BenchModel;
use vlmrun::config::{Config, DeviceSpec, PrecisionSpec};
use vlmrun::device::{self, CudaAvailability, SystemFacts};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn vlmrun(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--device", "cpu", "--precision", "f32"])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// One small bench run shared by the tests of this file (it writes to its own temp dir).
fn bench_run(dir: &Path) -> (Value, String) {
    let out = dir.join("bench.json");
    let plot = dir.join("plot.svg");
    let (code, stdout, stderr) = vlmrun(&[
        "bench",
        "--batch-sizes",
        "1,2",
        "--beams",
        "1,2",
        "--tokens",
        "4",
        "--warmup",
        "1",
        "--iterations",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("vlmrun greedy") && svg.contains("vlmrun beam 2")
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    (doc, stdout)
}

#[test]
fn bench_writes_the_schema_and_a_markdown_table() {
    let dir = tempfile::tempdir().unwrap();
    let (doc, stdout) = bench_run(dir.path());
    assert_eq!(doc["schema"], "vlmrun.bench/1");
    assert_eq!(doc["tool"], "vlmrun");
    let env = &doc["environment"];
    assert_eq!(env["device"], "cpu");
    assert!(env["device_name"].as_str().unwrap().starts_with("CPU "));
    assert_eq!(env["precision"], "f32");
    assert_eq!(env["quantization"], "none");
    for key in [
        "driver",
        "cuda_build",
        "compute_capability",
        "vlmrun_version",
        "git_rev",
    ] {
        assert!(env.get(key).is_some(), "environment.{key} missing");
    }
    assert_eq!(doc["model"]["image_size"], 64);
    let settings = &doc["settings"];
    assert_eq!(settings["generated_tokens"], 4);
    assert_eq!(settings["prompt_tokens"], 1);
    assert_eq!(settings["forced_length"], 5);
    assert!(
        settings.get("quantized_matmul").is_none(),
        "no --quantized-matmul given: {settings}"
    );
    assert_eq!(doc["config"]["generation"]["max_length"], 5);
    assert_eq!(doc["config"]["generation"]["min_length"], 5);
    assert!(doc["model_load_s"].as_f64().unwrap() > 0.0);
    assert!(doc["preprocess"]["ms"]["p50"].as_f64().unwrap() > 0.0);

    let records = doc["records"].as_array().unwrap();
    let keys: Vec<(u64, u64)> = records
        .iter()
        .map(|r| {
            (
                r["batch_size"].as_u64().unwrap(),
                r["num_beams"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys, [(1, 1), (1, 2), (2, 1), (2, 2)]);
    for r in records {
        for key in [
            "vision_ms",
            "vision_images_per_s",
            "prefill_ms",
            "decode_step_ms",
            "images_per_s",
        ] {
            assert!(r[key].as_f64().unwrap() > 0.0, "{key} in {r}");
        }
        assert_eq!(r["latency_ms"]["count"], 2);
        assert_eq!(r["generate_ms"]["count"], 2);
        assert!(
            r["latency_ms"]["p95"].as_f64().unwrap() >= r["latency_ms"]["p50"].as_f64().unwrap()
        );
        assert!(r["peak_gpu_bytes"].is_null(), "no GPU memory on the CPU");
        assert_eq!(r["generated_tokens"], 4);
    }
    // The document parses back through the typed reader.
    parse_document(&doc.to_string(), Path::new("bench.json")).unwrap();

    assert!(stdout.contains("| batch | beams | images/s |"), "{stdout}");
    let rows = stdout
        .lines()
        .filter(|l| l.starts_with("| 1 |") || l.starts_with("| 2 |"))
        .count();
    assert_eq!(rows, 4, "{stdout}");
}

#[test]
fn quantized_matmul_choice_is_recorded_and_an_unknown_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let common = [
        "bench",
        "--quantization",
        "q8_0",
        "--batch-sizes",
        "1",
        "--beams",
        "1",
        "--tokens",
        "2",
        "--warmup",
        "0",
        "--iterations",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    let (code, _, stderr) = vlmrun(&[&common[..], &["--quantized-matmul", "dequantize"]].concat());
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(doc["settings"]["quantized_matmul"], "dequantize");
    assert_eq!(doc["environment"]["quantization"], "q8_0");

    let (code, _, stderr) = vlmrun(&[&common[..], &["--quantized-matmul", "fast"]].concat());
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("--quantized-matmul fast")
            && stderr.contains("weight-only, dequantize, kernel"),
        "{stderr}"
    );
}

/// Rewrites every metric of `doc` so that a fresh run of the same setup looks better (times huge,
/// rates tiny), then makes `worse` (batch 1 beams 1 images/s) unreachably high.
fn flattering_baseline(doc: &Value, worse: bool) -> Value {
    let mut baseline = doc.clone();
    baseline["preprocess"]["ms"]["p50"] = 1e9.into();
    for r in baseline["records"].as_array_mut().unwrap() {
        r["images_per_s"] = 1e-9.into();
        r["vision_images_per_s"] = 1e-9.into();
        r["prefill_ms"] = 1e9.into();
        r["decode_step_ms"] = 1e9.into();
        r["latency_ms"]["p95"] = 1e9.into();
    }
    if worse {
        baseline["records"][0]["images_per_s"] = 1e12.into();
    }
    baseline
}

#[test]
fn compare_exits_3_naming_the_regressed_metric_and_refuses_other_devices() {
    let dir = tempfile::tempdir().unwrap();
    let (doc, _) = bench_run(dir.path());
    let small = [
        "bench",
        "--batch-sizes",
        "1,2",
        "--beams",
        "1,2",
        "--tokens",
        "4",
        "--warmup",
        "0",
        "--iterations",
        "1",
        "--threshold",
        "50%",
        "--out",
    ];
    let out = dir.path().join("again.json");

    let regressed = dir.path().join("regressed.json");
    std::fs::write(&regressed, flattering_baseline(&doc, true).to_string()).unwrap();
    let mut args = small.to_vec();
    args.extend([
        out.to_str().unwrap(),
        "--compare",
        regressed.to_str().unwrap(),
    ]);
    let (code, stdout, stderr) = vlmrun(&args);
    assert_eq!(code, Some(3), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains("regression: batch 1, beams 1: images_per_s"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("regression:").count(),
        1,
        "only that metric: {stderr}"
    );
    assert!(
        stdout.contains("REGRESSED") && stdout.contains("1 metric(s) regressed"),
        "{stdout}"
    );

    let fine = dir.path().join("fine.json");
    std::fs::write(&fine, flattering_baseline(&doc, false).to_string()).unwrap();
    let mut args = small.to_vec();
    args.extend([out.to_str().unwrap(), "--compare", fine.to_str().unwrap()]);
    let (code, stdout, stderr) = vlmrun(&args);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("no regression beyond 50.0%"), "{stdout}");

    let mut elsewhere = flattering_baseline(&doc, false);
    elsewhere["environment"]["device_name"] = "NVIDIA H100 80GB HBM3".into();
    let other = dir.path().join("other.json");
    std::fs::write(&other, elsewhere.to_string()).unwrap();
    let mut args = small.to_vec();
    args.extend([out.to_str().unwrap(), "--compare", other.to_str().unwrap()]);
    let (code, _, stderr) = vlmrun(&args);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot compare: the baseline was measured on \"NVIDIA H100 80GB HBM3\""),
        "{stderr}"
    );

    let not_a_doc = dir.path().join("not.json");
    std::fs::write(&not_a_doc, r#"{"schema": "vlmrun.baseline/1"}"#).unwrap();
    let mut args = small.to_vec();
    args.extend([
        out.to_str().unwrap(),
        "--compare",
        not_a_doc.to_str().unwrap(),
    ]);
    let (code, _, stderr) = vlmrun(&args);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("is not a bench document"), "{stderr}");
}

#[test]
fn reference_adds_the_ratio_table() {
    let dir = tempfile::tempdir().unwrap();
    let (doc, _) = bench_run(dir.path());
    let mut reference = doc.clone();
    reference["tool"] = "pytorch".into();
    for r in reference["records"].as_array_mut().unwrap() {
        let half = r["images_per_s"].as_f64().unwrap() / 2.0;
        r["images_per_s"] = half.into();
    }
    let path = dir.path().join("ref.json");
    std::fs::write(&path, reference.to_string()).unwrap();
    let out = dir.path().join("b.json");
    let (code, stdout, stderr) = vlmrun(&[
        "bench",
        "--batch-sizes",
        "1",
        "--tokens",
        "3",
        "--warmup",
        "0",
        "--iterations",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--reference",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("## vlmrun / pytorch"), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| 1 | 1 |") && l.contains('x'))
        .unwrap();
    assert_eq!(row.split('|').count(), 13, "{row}");
}

fn tiny_cpu(prompt: &str, tokens: usize) -> BenchModel {
    let mut config = Config::default();
    config.model.source = format!("{ROOT}/models/tiny-blip");
    config.generation.prompt = prompt.to_string();
    let active = device::activate_quietly(
        DeviceSpec::Cpu,
        PrecisionSpec::F32,
        &SystemFacts::no_driver("test"),
        &CudaAvailability::NotCompiled,
    )
    .unwrap();
    BenchModel::load(&config, &active, tokens).unwrap()
}

#[test]
fn forced_generation_gives_exactly_n_tokens() {
    use vlmrun::bench::synthetic;
    for (prompt, tokens) in [("", 9), ("a picture of", 6)] {
        let bench = tiny_cpu(prompt, tokens);
        let jpeg = synthetic::synthetic_jpeg().unwrap();
        let pixels = synthetic::preprocess_once(bench.processor(), &jpeg).unwrap();
        let batch = bench
            .upload(&[pixels.clone(), pixels.iter().map(|v| -v).collect()])
            .unwrap();
        assert_eq!(bench.forced_length(), bench.prompt().len() + tokens);
        for beams in [1, 3] {
            let cfg = bench.generation(beams);
            assert_eq!(
                (cfg.min_length, cfg.max_length),
                (bench.forced_length(), bench.forced_length())
            );
            let sequences =
                vlmrun::generate::generate(bench.model(), &batch, bench.prompt(), &cfg).unwrap();
            assert_eq!(sequences.len(), 2);
            for sequence in &sequences {
                assert_eq!(
                    sequence.len(),
                    bench.prompt().len() + tokens,
                    "{prompt:?} beams {beams}: {sequence:?}"
                );
                assert!(sequence.starts_with(bench.prompt()));
                assert!(
                    !sequence[bench.prompt().len()..].contains(&102),
                    "eos was blocked"
                );
            }
            assert_eq!(bench.generate_forced(&batch, beams).unwrap(), sequences);
        }
    }
}

#[test]
fn compare_matches_documents_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (doc, _) = bench_run(dir.path());
    let current = parse_document(&doc.to_string(), Path::new("c.json")).unwrap();
    let mut slower = current.clone();
    for r in &mut slower.records {
        r.images_per_s /= 1.25; // 20% below the baseline
    }
    let report = compare::compare(&current, &slower, 0.05).unwrap();
    let names: Vec<&str> = report.regressions().map(|m| m.metric.as_str()).collect();
    assert_eq!(
        names,
        [
            "batch 1, beams 1: images_per_s",
            "batch 1, beams 2: images_per_s",
            "batch 2, beams 1: images_per_s",
            "batch 2, beams 2: images_per_s"
        ]
    );
    assert!(compare::compare(&current, &current, 0.05)
        .unwrap()
        .regressions()
        .next()
        .is_none());
}

/// `bench --train`: a document with one training record from `vlmrun train`'s own steps (no
/// checkpoint written); `--compare` against a baseline that trained far faster exits 3 naming
/// `train: samples_per_s`, and one taken with another batch size is refused (exit 2).
#[test]
fn train_record_is_measured_and_compared() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("train.json");
    let out_dir = dir.path().join("out");
    let sets = [
        "--set",
        &format!("output.dir={}", out_dir.display()),
        "--set",
        "train.batch_size=4",
    ];
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = sets.to_vec();
        args.extend(["bench", "--train", "--train-steps", "3"]);
        args.extend(extra);
        vlmrun(&args)
    };
    let (code, stdout, stderr) = run(&["--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(
        stdout.contains("| batch | accumulation | steps | samples/s"),
        "{stdout}"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let train = &doc["train"];
    assert_eq!(train["steps"], 3);
    assert_eq!(train["batch_size"], 4);
    assert!(train["samples_per_s"].as_f64().unwrap() > 0.0);
    let step_ms = train["step_ms"].as_f64().unwrap();
    let from_rate = 1e3 * 4.0 / train["samples_per_s"].as_f64().unwrap();
    assert!((step_ms - from_rate).abs() < 1e-6 * from_rate);
    assert_eq!(doc["records"].as_array().unwrap().len(), 0);
    assert!(
        !out_dir.join("bench-train").join("checkpoints").exists(),
        "a measurement run writes no checkpoint"
    );

    let mut faster = doc.clone();
    faster["train"]["samples_per_s"] = 1e12.into();
    let baseline = dir.path().join("faster.json");
    std::fs::write(&baseline, serde_json::to_string(&faster).unwrap()).unwrap();
    let (code, _, stderr) = run(&[
        "--compare",
        baseline.to_str().unwrap(),
        "--threshold",
        "50%",
    ]);
    assert_eq!(code, Some(3), "stderr: {stderr}");
    assert!(stderr.contains("train: samples_per_s"), "{stderr}");

    let mut other_batch = doc.clone();
    other_batch["train"]["batch_size"] = 8.into();
    std::fs::write(&baseline, serde_json::to_string(&other_batch).unwrap()).unwrap();
    let (code, _, stderr) = run(&["--compare", baseline.to_str().unwrap()]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("training settings"), "{stderr}");
}
