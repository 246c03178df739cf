//! `vlmrun bench`: throughput and latency of the captioning pipeline, phase by phase, on the
//! configured model, device and precision.
//!
//! Measured, per (batch size, beams), after warm-up, every GPU clock read after a device
//! synchronisation, medians of `iterations` runs: the vision encoder alone, the prefill, one decode
//! step, whole generation, and whole batches end to end (host pixels -> captions); peak GPU memory.
//! Per run: model load time and CPU preprocessing of a synthetic 640x480 JPEG. Generation lengths are
//! forced (`min_length = max_length = prompt + N`), so every run generates exactly N tokens per caption.
//!
//! The result is a [`document::BenchDocument`] (schema `vlmrun.bench/1`, shared with
//! `benches/reference/pytorch_blip.py`); `compare` checks it against a baseline, `markdown` and
//! `plot` show it.

pub mod compare;
pub mod document;
pub mod engine;
mod error;
pub mod markdown;
pub mod phases;
pub mod plot;
pub mod synthetic;

pub use error::BenchError;

use crate::config::ResolvedConfig;
use crate::device::{ActiveDevice, CudaAvailability, SystemFacts};
use crate::models::linear::QuantizedMatmul;
use document::{BenchDocument, Settings, SCHEMA};
use engine::BenchModel;
use phases::Repetitions;

/// What to sweep and how often to repeat; the rest comes from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchPlan {
    pub batch_sizes: Vec<usize>,
    pub beams: Vec<usize>,
    /// Tokens generated per caption (forced).
    pub generated_tokens: usize,
    pub warmup: usize,
    pub iterations: usize,
    /// How quantized projections multiply; `None`: the model's default.
    pub quantized_matmul: Option<QuantizedMatmul>,
}

impl BenchPlan {
    fn validate(&self) -> Result<(), BenchError> {
        let bad = |message: &str| Err(BenchError::Settings(message.to_string()));
        if self.batch_sizes.is_empty() || self.batch_sizes.contains(&0) {
            return bad("--batch-sizes needs at least one size, each at least 1");
        }
        if self.beams.is_empty() || self.beams.contains(&0) {
            return bad("--beams needs at least one beam count, each at least 1");
        }
        if self.iterations == 0 {
            return bad("--iterations must be at least 1");
        }
        Ok(())
    }
}

/// Runs the plan; `progress` prints one line per record on stderr.
pub fn run(
    resolved: &ResolvedConfig,
    active: &ActiveDevice,
    facts: &SystemFacts,
    cuda: &CudaAvailability,
    plan: &BenchPlan,
    progress: bool,
) -> Result<BenchDocument, BenchError> {
    plan.validate()?;
    let mut bench = BenchModel::load(&resolved.config, active, plan.generated_tokens)?;
    if let Some(policy) = plan.quantized_matmul {
        bench
            .model_mut()
            .set_quantized_matmul(policy)
            .map_err(BenchError::compute("setting the quantized matmul"))?;
    }
    let mut config = resolved.config.clone();
    config.generation.max_length = bench.forced_length();
    config.generation.min_length = bench.forced_length();
    let reps = Repetitions {
        warmup: plan.warmup,
        iterations: plan.iterations,
    };

    let jpeg = synthetic::synthetic_jpeg()?;
    let preprocess = synthetic::time_preprocess(
        bench.processor(),
        &jpeg,
        plan.warmup.max(1),
        plan.iterations.max(5),
    )?;
    let pixels = synthetic::preprocess_once(bench.processor(), &jpeg)?;

    let mut records = Vec::new();
    for &batch_size in &plan.batch_sizes {
        let batch = vec![pixels.clone(); batch_size];
        for &num_beams in &plan.beams {
            let record = phases::measure_record(&bench, &batch, num_beams, reps)?;
            if progress {
                eprintln!(
                    "bench: batch {batch_size}, beams {num_beams}: {:.2} images/s, latency p50 {:.1} ms",
                    record.images_per_s, record.latency_ms.p50
                );
            }
            records.push(record);
        }
    }

    let prompt_tokens = bench.prompt().len();
    Ok(BenchDocument {
        schema: SCHEMA.to_string(),
        tool: "vlmrun".to_string(),
        environment: crate::report::describe_environment(
            active,
            facts,
            cuda,
            &config,
            Some(bench.model_dir().display().to_string()),
        ),
        model: bench.shape(),
        settings: Settings {
            batch_sizes: plan.batch_sizes.clone(),
            beams: plan.beams.clone(),
            prompt: config.generation.prompt.clone(),
            prompt_tokens,
            generated_tokens: plan.generated_tokens,
            forced_length: bench.forced_length(),
            warmup: plan.warmup,
            iterations: plan.iterations,
            peak_gpu_measure: Settings::vlmrun_peak_gpu_measure(active),
            quantized_matmul: plan
                .quantized_matmul
                .and_then(|p| p.name())
                .map(str::to_string),
        },
        model_load_s: Some(bench.load_seconds),
        preprocess: Some(preprocess),
        records,
        train: None,
        config: serde_json::to_value(&config)
            .map_err(|err| BenchError::Internal(format!("serialising the config: {err}")))?,
    })
}
