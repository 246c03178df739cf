//! `report.json` for a baseline run (schema `vlmrun.baseline/1`) and the summary table printed at the
//! end; with its data-parallel parts (a rank's timings in its done file, the merged `distributed`
//! block and the missing shards), so that every report type lives here.

use serde::{Deserialize, Serialize};

use crate::metrics::Scores;
use crate::models::label::{self, ModelKind};
use crate::report::{Environment, Percentiles};

pub const SCHEMA: &str = "vlmrun.baseline/1";

#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    pub schema: String,
    /// `complete`, `complete_with_failures` or `interrupted`; a merged data-parallel report may also be
    /// `incomplete` (a shard is missing: see `distributed.missing`).
    pub status: String,
    pub environment: Environment,
    /// The model used and what its label says (`models::label`: random, demo, or unlabelled).
    pub model: ModelUsed,
    pub timings: Timings,
    pub memory: Memory,
    pub counts: Counts,
    /// COCO caption metrics over every prediction whose image has references (null when none has).
    pub metrics: Option<Scores>,
    /// The resolved configuration.
    pub config: serde_json::Value,
    /// Data-parallel runs only (the merged report): the ranks, their timings and any missing shard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distributed: Option<DistributedSummary>,
}

/// The model a run used, and what its label file (`vlmrun-model.json`) says about it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelUsed {
    /// `model.source` as resolved (the built-in default: its unpacked directory).
    pub source: String,
    /// The directory or `.gguf` file loaded; null when no model was loaded (every image done earlier).
    pub directory: Option<String>,
    /// `random` or `demo` when the model is labelled so; null for an unlabelled model (a hub or
    /// `train` checkpoint).
    pub kind: Option<ModelKind>,
    /// The label's one sentence for people.
    pub description: Option<String>,
}

impl ModelUsed {
    /// Reads the label of the loaded `directory`, else of `source` when it is a directory. A label
    /// file that cannot be read is a warning, and the model counts as unlabelled.
    pub fn describe(source: &str, directory: Option<&str>) -> ModelUsed {
        let dir = std::path::Path::new(directory.unwrap_or(source));
        let found = label::read(dir).unwrap_or_else(|err| {
            tracing::warn!("{err}");
            None
        });
        ModelUsed {
            source: source.to_string(),
            directory: directory.map(str::to_string),
            kind: found.as_ref().map(|l| l.kind),
            description: found.and_then(|l| l.description),
        }
    }

    /// The summary's `model` row: the source, and its kind when labelled (the caveat explains it).
    pub fn summary(&self) -> String {
        match self.kind {
            Some(kind) => format!("{} ({} model)", self.source, kind.as_str()),
            None => self.source.clone(),
        }
    }

    /// A warning for people when the model is known not to be a real captioner.
    pub fn caveat(&self) -> Option<String> {
        match self.kind? {
            ModelKind::Random => Some(
                "this model has random weights: its captions are gibberish and its scores mean nothing"
                    .to_string(),
            ),
            ModelKind::Demo => Some(
                "this is the built-in demo model, trained on the sample images: its captions there are memorised, so the scores say nothing about captioning quality; set model.source (or --model) to a real checkpoint such as Salesforce/blip-image-captioning-base"
                    .to_string(),
            ),
        }
    }
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

/// The timings of one rank (the scalar part of the baseline report's timings).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RankTimings {
    pub model_load_s: Option<f64>,
    pub warmup_s: Option<f64>,
    /// First batch to last prediction of the shard.
    pub run_s: f64,
    /// The rank's whole command up to this file (device checks, model load, warm-up, captioning).
    pub total_s: f64,
    pub images_per_s: f64,
    pub generation_images_per_s: f64,
    pub generated_tokens_per_s: f64,
    pub batch_latency_p50_ms: Option<f64>,
    pub batch_latency_p95_ms: Option<f64>,
}

impl From<&Timings> for RankTimings {
    fn from(timings: &Timings) -> Self {
        RankTimings {
            model_load_s: timings.model_load_s,
            warmup_s: timings.warmup_s,
            run_s: timings.run_s,
            total_s: timings.total_s,
            images_per_s: timings.images_per_s,
            generation_images_per_s: timings.generation_images_per_s,
            generated_tokens_per_s: timings.generated_tokens_per_s,
            batch_latency_p50_ms: timings.batch_latency_ms.map(|p| p.p50),
            batch_latency_p95_ms: timings.batch_latency_ms.map(|p| p.p95),
        }
    }
}

/// The `distributed` block of a merged report.
#[derive(Debug, Clone, Serialize)]
pub struct DistributedSummary {
    pub world_size: usize,
    /// Images captioned by the ranks' latest runs / the slowest rank's `run_s` (the figure
    /// docs/scaling.md compares against one GPU; also `timings.images_per_s`).
    pub aggregate_images_per_s: f64,
    pub slowest_rank_run_s: f64,
    /// First rank start to last done file, wall clock across machines (includes model loads).
    pub span_s: Option<f64>,
    pub ranks: Vec<RankEntry>,
    /// Shards with items still to do (empty when the merge is complete).
    pub missing: Vec<MissingShard>,
    /// Prediction lines for an id already merged (ignored).
    pub duplicates: usize,
    /// Lines for ids outside the writing rank's shard (ignored).
    pub foreign: usize,
}

/// One rank in the merged report, from its done file.
#[derive(Debug, Clone, Serialize)]
pub struct RankEntry {
    pub rank: usize,
    pub shard_items: usize,
    /// `complete`, `complete_with_failures`, `interrupted`, `failed`, or `no_done_file`.
    pub status: String,
    /// Why there is no usable done file, or the rank's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub host: Option<String>,
    pub device: Option<String>,
    pub counts: Option<Counts>,
    pub timings: Option<RankTimings>,
    pub memory: Option<Memory>,
}

impl DistributedSummary {
    /// Rows for the human summary.
    pub fn summary_rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![(
            "ranks".to_string(),
            format!(
                "{} ({} missing a shard), {:.2} images/s together (slowest rank {:.2} s)",
                self.world_size,
                self.missing.len(),
                self.aggregate_images_per_s,
                self.slowest_rank_run_s
            ),
        )];
        for entry in &self.ranks {
            let value = match (&entry.counts, &entry.timings) {
                (Some(counts), Some(timings)) => format!(
                    "{} on {} ({}): {} captioned, {} skipped, {} failed of {}; {:.2} images/s",
                    entry.status,
                    entry.host.as_deref().unwrap_or("?"),
                    entry.device.as_deref().unwrap_or("?"),
                    counts.done,
                    counts.skipped,
                    counts.failed,
                    entry.shard_items,
                    timings.images_per_s
                ),
                _ => format!(
                    "{}{}",
                    entry.status,
                    entry
                        .note
                        .as_ref()
                        .map(|note| format!(" ({note})"))
                        .unwrap_or_default()
                ),
            };
            rows.push((format!("rank {}", entry.rank), value));
        }
        rows
    }
}

/// A shard with items that have neither a prediction nor a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingShard {
    pub rank: usize,
    /// Items of the shard still to do.
    pub missing: usize,
    /// Items in the shard.
    pub shard: usize,
    /// What the rank's done file says (or that there is none).
    pub reason: String,
}

impl BaselineReport {
    /// The human summary (stderr).
    pub fn summary(&self) -> String {
        let rows = self.summary_rows();
        let width = rows.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
        let mut out = String::from("baseline summary\n");
        for (key, value) in rows {
            out.push_str(&format!("  {key:<width$}  {value}\n"));
        }
        if let Some(caveat) = self.model.caveat() {
            out.push_str(&format!("  note: {caveat}\n"));
        }
        out
    }

    /// The summary's (label, value) rows (stderr and report.html).
    pub fn summary_rows(&self) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = vec![
            ("status".into(), self.status.clone()),
            ("device".into(), self.environment.device.clone()),
            ("precision".into(), self.environment.precision.clone()),
            ("model".into(), self.model.summary()),
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
        rows
    }
}
