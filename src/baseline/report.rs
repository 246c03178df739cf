//! `report.json` for a baseline run (schema `vlmrun.baseline/1`) and the summary table printed at the end.

use serde::{Deserialize, Serialize};

use crate::metrics::Scores;
use crate::report::{Environment, Percentiles};

pub const SCHEMA: &str = "vlmrun.baseline/1";

#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    pub schema: String,
    /// `complete`, `complete_with_failures` or `interrupted`; a merged data-parallel report may also be
    /// `incomplete` (a shard is missing: see `distributed.missing`).
    pub status: String,
    pub environment: Environment,
    pub timings: Timings,
    pub memory: Memory,
    pub counts: Counts,
    /// COCO caption metrics over every prediction whose image has references (null when none has).
    pub metrics: Option<Scores>,
    /// The resolved configuration.
    pub config: serde_json::Value,
    /// Data-parallel runs only (the merged report): the ranks, their timings and any missing shard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distributed: Option<super::merged::DistributedSummary>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub model_load_s: Option<f64>,
    pub warmup_s: Option<f64>,
    /// From the first batch to the last prediction written (model load and warm-up excluded).
    pub run_s: f64,
    /// Whole command, including device checks, model load and warm-up.
    pub total_s: f64,
    /// Images captioned in this run / run_s.
    pub images_per_s: f64,
    /// Images captioned / time spent in generation alone (vision encoder + decoding, synchronised): the
    /// ceiling `images_per_s` would reach if decoding, resizing and writing cost nothing.
    pub generation_images_per_s: f64,
    /// Generation latency per batch (device work, synchronised), milliseconds.
    pub batch_latency_ms: Option<Percentiles>,
    /// Preprocessing wall time per batch on the worker threads, milliseconds.
    pub preprocess_batch_ms: Option<Percentiles>,
    /// Generated tokens (excluding bos and prompt) per second of generation time.
    pub generated_tokens_per_s: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// This process's peak GPU memory (NVML samples every 20 ms); null on CPU.
    pub peak_gpu_bytes: Option<u64>,
    pub peak_host_rss_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Images in the selected dataset.
    pub dataset: usize,
    /// Captioned by this run.
    pub done: usize,
    /// Already in predictions.jsonl from an earlier run (skipped).
    pub skipped: usize,
    /// Failed in this run (see errors.jsonl).
    pub failed: usize,
    /// Left undone because the run was interrupted.
    pub remaining: usize,
}

impl BaselineReport {
    /// The human summary (stderr).
    pub fn summary(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("status".into(), self.status.clone()),
            ("device".into(), self.environment.device.clone()),
            ("precision".into(), self.environment.precision.clone()),
            (
                "images".into(),
                format!(
                    "{} done, {} skipped (earlier run), {} failed, {} remaining",
                    self.counts.done,
                    self.counts.skipped,
                    self.counts.failed,
                    self.counts.remaining
                ),
            ),
        ];
        if let Some(load) = self.timings.model_load_s {
            rows.push(("model load".into(), format!("{load:.2} s")));
        }
        if let Some(warmup) = self.timings.warmup_s {
            rows.push(("warm-up".into(), format!("{warmup:.2} s")));
        }
        rows.push((
            "throughput".into(),
            format!(
                "{:.2} images/s ({:.2} in generation alone), {:.1} generated tokens/s",
                self.timings.images_per_s,
                self.timings.generation_images_per_s,
                self.timings.generated_tokens_per_s
            ),
        ));
        if let Some(latency) = &self.timings.batch_latency_ms {
            rows.push((
                "batch latency".into(),
                format!(
                    "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
                    latency.p50, latency.p95, latency.p99
                ),
            ));
        }
        if let Some(peak) = self.memory.peak_gpu_bytes {
            rows.push((
                "peak GPU memory".into(),
                format!("{:.2} GiB", peak as f64 / (1u64 << 30) as f64),
            ));
        }
        match &self.metrics {
            Some(scores) => rows.push((
                "metrics".into(),
                format!(
                    "BLEU-1..4 {:.4} {:.4} {:.4} {:.4}, CIDEr {:.4}, ROUGE-L {:.4} ({} images)",
                    scores.bleu[0],
                    scores.bleu[1],
                    scores.bleu[2],
                    scores.bleu[3],
                    scores.cider,
                    scores.rouge_l,
                    scores.n_images
                ),
            )),
            None if self.status == "incomplete" => {
                rows.push(("metrics".into(), "not computed: a shard is missing".into()))
            }
            None => rows.push((
                "metrics".into(),
                "none (the dataset has no references)".into(),
            )),
        }
        if let Some(distributed) = &self.distributed {
            rows.extend(distributed.summary_rows());
        }
        let width = rows.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
        let mut out = String::from("baseline summary\n");
        for (key, value) in rows {
            out.push_str(&format!("  {key:<width$}  {value}\n"));
        }
        out
    }
}
