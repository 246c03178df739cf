//! Regression check: this run against a baseline document. Only like is compared with like: the same
//! device name, precision, model shapes and generated tokens (otherwise an error says what differs);
//! records are matched by (batch size, beams). A metric regresses when it is worse than the baseline
//! by more than the threshold (throughput lower, times or memory higher).
//!
//! Checked: per record `images_per_s`, `vision_images_per_s`, `prefill_ms`, `decode_step_ms`,
//! `latency_p95_ms`, `peak_gpu_bytes`; per run `preprocess_ms`; of a training record (same
//! batch, accumulation, backward, kernels and checkpointing only) `samples_per_s`, `startup_s`
//! and `peak_gpu_bytes`. Not checked: the model load time
//! (mostly the page cache's), and any metric null on either side.

use std::path::Path;

use serde::Serialize;

use super::document::{BenchDocument, Record, TrainRecord, SCHEMA};
use super::BenchError;

/// Whether a larger value is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// One metric in both documents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricChange {
    /// e.g. `batch 8, beams 1: images_per_s`, or `preprocess_ms`.
    pub metric: String,
    pub baseline: f64,
    pub current: f64,
    pub better: Better,
    /// Relative change in the bad direction: +0.20 = 20% worse, negative = better.
    pub worse_by: f64,
    /// `worse_by` exceeds the threshold.
    pub regressed: bool,
}

/// The outcome of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Fraction, e.g. 0.05.
    pub threshold: f64,
    pub metrics: Vec<MetricChange>,
    /// (batch size, beams) of this run that the baseline does not have, and the other way round.
    pub only_current: Vec<(usize, usize)>,
    pub only_baseline: Vec<(usize, usize)>,
}

impl Comparison {
    /// The metrics that regressed beyond the threshold.
    pub fn regressions(&self) -> impl Iterator<Item = &MetricChange> {
        self.metrics.iter().filter(|m| m.regressed)
    }

    pub fn has_regressions(&self) -> bool {
        self.regressions().next().is_some()
    }
}

/// Parses `5%`, `5` (both five percent) or `2.5%` into a fraction.
pub fn parse_threshold(text: &str) -> Result<f64, BenchError> {
    let bad = |message: &str| BenchError::Threshold {
        given: text.to_string(),
        message: message.to_string(),
    };
    let number = text.trim().trim_end_matches('%').trim();
    let percent: f64 = number.parse().map_err(|_| bad("not a number"))?;
    if !(percent.is_finite() && percent >= 0.0) {
        return Err(bad("must be a finite percentage >= 0"));
    }
    Ok(percent / 100.0)
}

/// Reads and checks a bench document (schema `vlmrun.bench/1`).
pub fn read_document(path: &Path) -> Result<BenchDocument, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::ReadDocument {
        path: path.to_path_buf(),
        source,
    })?;
    parse_document(&text, path)
}

/// Parses a bench document; `path` names it in errors.
pub fn parse_document(text: &str, path: &Path) -> Result<BenchDocument, BenchError> {
    let bad = |message: String| BenchError::BadDocument {
        path: path.to_path_buf(),
        message,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|err| bad(format!("not JSON: {err}")))?;
    match value.get("schema").and_then(|s| s.as_str()) {
        Some(SCHEMA) => {}
        Some(other) => {
            return Err(bad(format!(
                "schema {other:?}, this vlmrun reads {SCHEMA:?}"
            )))
        }
        None => return Err(bad("no \"schema\" field".to_string())),
    }
    serde_json::from_value(value).map_err(|err| bad(err.to_string()))
}

/// Compares `current` with `baseline`; errors when they were not measured alike.
pub fn compare(
    baseline: &BenchDocument,
    current: &BenchDocument,
    threshold: f64,
) -> Result<Comparison, BenchError> {
    let (b_env, c_env) = (&baseline.environment, &current.environment);
    if b_env.device_name != c_env.device_name {
        return Err(BenchError::DeviceMismatch {
            baseline: b_env.device_name.clone(),
            current: c_env.device_name.clone(),
        });
    }
    let mismatch = |what: &'static str, b: String, c: String| {
        if b == c {
            Ok(())
        } else {
            Err(BenchError::SettingsMismatch {
                what,
                baseline: b,
                current: c,
            })
        }
    };
    mismatch(
        "precision",
        b_env.precision.clone(),
        c_env.precision.clone(),
    )?;
    mismatch(
        "quantization",
        b_env.quantization.clone(),
        c_env.quantization.clone(),
    )?;
    let matmul = |d: &BenchDocument| {
        d.settings
            .quantized_matmul
            .clone()
            .unwrap_or_else(|| "default".to_string())
    };
    mismatch("quantized matmul", matmul(baseline), matmul(current))?;
    mismatch(
        "model shapes",
        format!("{:?}", baseline.model),
        format!("{:?}", current.model),
    )?;
    mismatch(
        "generated tokens",
        baseline.settings.generated_tokens.to_string(),
        current.settings.generated_tokens.to_string(),
    )?;
    mismatch(
        "prompt tokens",
        baseline.settings.prompt_tokens.to_string(),
        current.settings.prompt_tokens.to_string(),
    )?;

    let train = match (&baseline.train, &current.train) {
        (Some(b), Some(c)) => {
            let settings = |r: &TrainRecord| {
                format!(
                    "batch {} x {} accumulated, backward {}, fused kernels {}, gradient checkpointing {}",
                    r.batch_size,
                    r.grad_accumulation,
                    r.backward,
                    r.fused_kernels,
                    r.gradient_checkpointing
                )
            };
            mismatch("training settings", settings(b), settings(c))?;
            Some((b, c))
        }
        _ => None,
    };

    let key = |r: &Record| (r.batch_size, r.num_beams);
    let only_current: Vec<_> = current
        .records
        .iter()
        .map(key)
        .filter(|&(b, k)| baseline.record(b, k).is_none())
        .collect();
    let only_baseline: Vec<_> = baseline
        .records
        .iter()
        .map(key)
        .filter(|&(b, k)| current.record(b, k).is_none())
        .collect();
    let pairs: Vec<(&Record, &Record)> = current
        .records
        .iter()
        .filter_map(|c| baseline.record(c.batch_size, c.num_beams).map(|b| (b, c)))
        .collect();
    if pairs.is_empty() && train.is_none() {
        let keys = |d: &BenchDocument| {
            d.records
                .iter()
                .map(|r| format!("batch {} beams {}", r.batch_size, r.num_beams))
                .chain(
                    d.train
                        .as_ref()
                        .map(|t| format!("training batch {}", t.batch_size)),
                )
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(BenchError::NoCommonRecords {
            baseline: keys(baseline),
            current: keys(current),
        });
    }

    let mut metrics = Vec::new();
    let mut check = |metric: String, better: Better, b: Option<f64>, c: Option<f64>| {
        if let (Some(baseline), Some(current)) = (b, c) {
            if let Some(change) = change(metric, better, baseline, current, threshold) {
                metrics.push(change);
            }
        }
    };
    let preprocess_ms = |d: &BenchDocument| d.preprocess.as_ref().map(|p| p.ms.p50);
    check(
        "preprocess_ms".to_string(),
        Better::Lower,
        preprocess_ms(baseline),
        preprocess_ms(current),
    );
    if let Some((b, c)) = train {
        let bytes = |r: &TrainRecord| r.peak_gpu_bytes.map(|v| v as f64);
        check(
            "train: samples_per_s".to_string(),
            Better::Higher,
            Some(b.samples_per_s),
            Some(c.samples_per_s),
        );
        check(
            "train: startup_s".to_string(),
            Better::Lower,
            Some(b.startup_s),
            Some(c.startup_s),
        );
        check(
            "train: peak_gpu_bytes".to_string(),
            Better::Lower,
            bytes(b),
            bytes(c),
        );
    }
    for (b, c) in pairs {
        let name =
            |metric: &str| format!("batch {}, beams {}: {metric}", c.batch_size, c.num_beams);
        let bytes = |r: &Record| r.peak_gpu_bytes.map(|v| v as f64);
        check(
            name("images_per_s"),
            Better::Higher,
            Some(b.images_per_s),
            Some(c.images_per_s),
        );
        check(
            name("vision_images_per_s"),
            Better::Higher,
            b.vision_images_per_s,
            c.vision_images_per_s,
        );
        check(
            name("prefill_ms"),
            Better::Lower,
            b.prefill_ms,
            c.prefill_ms,
        );
        check(
            name("decode_step_ms"),
            Better::Lower,
            b.decode_step_ms,
            c.decode_step_ms,
        );
        check(
            name("latency_p95_ms"),
            Better::Lower,
            Some(b.latency_ms.p95),
            Some(c.latency_ms.p95),
        );
        check(name("peak_gpu_bytes"), Better::Lower, bytes(b), bytes(c));
    }
    Ok(Comparison {
        threshold,
        metrics,
        only_current,
        only_baseline,
    })
}

/// The change of one metric; `None` when the baseline value cannot anchor a ratio (zero, not finite).
fn change(
    metric: String,
    better: Better,
    baseline: f64,
    current: f64,
    threshold: f64,
) -> Option<MetricChange> {
    if !(baseline.is_finite() && current.is_finite()) || baseline <= 0.0 {
        return None;
    }
    let worse_by = match better {
        Better::Higher => (baseline - current) / baseline,
        Better::Lower => (current - baseline) / baseline,
    };
    Some(MetricChange {
        metric,
        baseline,
        current,
        better,
        worse_by,
        regressed: worse_by > threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_percentages() {
        assert_eq!(parse_threshold("5%").unwrap(), 0.05);
        assert_eq!(parse_threshold(" 5 ").unwrap(), 0.05);
        assert_eq!(parse_threshold("2.5%").unwrap(), 0.025);
        assert!(parse_threshold("five").is_err());
        assert!(parse_threshold("-1%").is_err());
    }

    #[test]
    fn direction_decides_what_is_worse() {
        let slower = change("t".into(), Better::Lower, 10.0, 12.0, 0.1).unwrap();
        assert!((slower.worse_by - 0.2).abs() < 1e-12);
        assert!(slower.regressed);
        let faster = change("r".into(), Better::Higher, 10.0, 12.0, 0.1).unwrap();
        assert!(faster.worse_by < 0.0 && !faster.regressed);
        assert!(change("z".into(), Better::Lower, 0.0, 1.0, 0.1).is_none());
    }

    fn document(device_name: &str) -> BenchDocument {
        use crate::bench::document::*;
        let summary = |ms: f64| Summary {
            count: 3,
            p50: ms,
            p95: ms * 1.1,
            mean: ms,
            max: ms * 1.2,
        };
        let record = |batch_size: usize| Record {
            batch_size,
            num_beams: 1,
            generated_tokens: 20,
            vision_ms: Some(10.0),
            vision_images_per_s: Some(100.0 * batch_size as f64),
            prefill_ms: Some(2.0),
            decode_step_ms: Some(1.0),
            decode_step_in_generate_ms: Some(1.2),
            generate_ms: Some(summary(40.0)),
            upload_ms: None,
            latency_ms: summary(50.0),
            images_per_s: 20.0 * batch_size as f64,
            generated_tokens_per_s: 400.0,
            peak_gpu_bytes: Some(1 << 30),
        };
        BenchDocument {
            schema: SCHEMA.to_string(),
            tool: "vlmrun".to_string(),
            environment: Environment {
                device: "cuda:0".into(),
                device_name: device_name.into(),
                driver: None,
                driver_cuda: None,
                cuda_build: None,
                compute_capability: None,
                precision: "bf16".into(),
                quantization: "none".into(),
                vlmrun_version: "0".into(),
                git_rev: "x".into(),
                framework: "candle".into(),
                cpu_threads: 1,
                model_dir: None,
            },
            model: ModelShape {
                image_size: 384,
                patch_size: 16,
                vision_hidden_size: 768,
                vision_layers: 12,
                text_hidden_size: 768,
                text_layers: 12,
                vocab_size: 30524,
            },
            settings: Settings {
                batch_sizes: vec![1, 8],
                beams: vec![1],
                prompt: String::new(),
                prompt_tokens: 1,
                generated_tokens: 20,
                forced_length: 21,
                warmup: 1,
                iterations: 3,
                peak_gpu_measure: Some("nvml-process".into()),
                quantized_matmul: None,
            },
            model_load_s: Some(1.0),
            preprocess: Some(PreprocessTiming {
                input: "x".into(),
                ms: summary(5.0),
                images_per_s_one_thread: 200.0,
            }),
            records: vec![record(1), record(8)],
            train: None,
            config: serde_json::Value::Null,
        }
    }

    #[test]
    fn names_only_what_regressed_beyond_the_threshold() {
        let baseline = document("GPU A");
        let mut current = baseline.clone();
        current.records[1].decode_step_ms = Some(1.2); // 20% slower
        current.records[1].images_per_s *= 0.97; // 3% slower: within 5%
        current.records[0].peak_gpu_bytes = Some(2 << 30); // twice the memory
        current.records[0].vision_images_per_s = Some(150.0); // better
        let report = compare(&baseline, &current, 0.05).unwrap();
        let names: Vec<&str> = report.regressions().map(|m| m.metric.as_str()).collect();
        assert_eq!(
            names,
            [
                "batch 1, beams 1: peak_gpu_bytes",
                "batch 8, beams 1: decode_step_ms"
            ]
        );
        assert_eq!(report.metrics.len(), 1 + 2 * 6);
        let within = compare(&baseline, &current, 2.0).unwrap();
        assert!(!within.has_regressions());
    }

    #[test]
    fn refuses_other_devices_and_settings() {
        let baseline = document("GPU A");
        let err = compare(&baseline, &document("GPU B"), 0.05).unwrap_err();
        assert!(matches!(err, BenchError::DeviceMismatch { .. }), "{err}");
        assert!(err.to_string().contains("\"GPU A\""), "{err}");
        let mut f16 = document("GPU A");
        f16.environment.precision = "f16".into();
        let err = compare(&baseline, &f16, 0.05).unwrap_err();
        assert!(err.to_string().contains("precision"), "{err}");
        let mut q4k = document("GPU A");
        q4k.environment.quantization = "q4k".into();
        let err = compare(&baseline, &q4k, 0.05).unwrap_err();
        assert!(
            err.to_string().contains("quantization") && err.to_string().contains("q4k"),
            "{err}"
        );
        let mut dequantize = document("GPU A");
        dequantize.settings.quantized_matmul = Some("dequantize".into());
        let err = compare(&baseline, &dequantize, 0.05).unwrap_err();
        assert!(
            err.to_string().contains("quantized matmul")
                && err
                    .to_string()
                    .contains("baseline default, this run dequantize"),
            "{err}"
        );
        let mut other_batches = document("GPU A");
        for r in &mut other_batches.records {
            r.batch_size += 100;
        }
        let err = compare(&baseline, &other_batches, 0.05).unwrap_err();
        assert!(matches!(err, BenchError::NoCommonRecords { .. }), "{err}");
    }

    #[test]
    fn reads_only_bench_documents() {
        let doc = document("GPU A");
        let text = serde_json::to_string(&doc).unwrap();
        assert_eq!(parse_document(&text, Path::new("a.json")).unwrap(), doc);
        let err =
            parse_document(r#"{"schema": "vlmrun.bench/2"}"#, Path::new("b.json")).unwrap_err();
        assert!(err.to_string().contains("vlmrun.bench/2"), "{err}");
        assert!(parse_document("[]", Path::new("c.json")).is_err());
    }
}
