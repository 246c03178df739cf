//! The bench result document, schema `vlmrun.bench/1`: written by `vlmrun bench --out` and by
//! `benches/reference/pytorch_blip.py`, read back by `--compare` and `--reference`. Every time is in
//! milliseconds or seconds as its field name says; a field that does not apply (peak GPU memory on the
//! CPU, a phase the reference cannot time apart) is `null`.

use serde::{Deserialize, Serialize};

use crate::report::Percentiles;

/// The schema name and version this module reads and writes.
pub const SCHEMA: &str = "vlmrun.bench/1";

/// One bench run on one device, precision and model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchDocument {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// What produced it: `vlmrun` or `pytorch` (the reference script).
    pub tool: String,
    pub environment: Environment,
    pub model: ModelShape,
    pub settings: Settings,
    /// Resolving the model directory, reading the tokenizer and loading the weights onto the device
    /// (synchronised), seconds.
    pub model_load_s: Option<f64>,
    /// Decode + resize + normalize of one synthetic 640x480 JPEG on one CPU thread.
    pub preprocess: Option<PreprocessTiming>,
    /// One record per (batch size, beams), in the order they ran.
    pub records: Vec<Record>,
    /// Training throughput (`vlmrun bench --train`); absent in inference documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainRecord>,
    /// The resolved configuration the run used (generation lengths forced), as JSON; the reference
    /// script writes its own settings here.
    pub config: serde_json::Value,
}

pub use crate::report::Environment;

/// The model's shapes (enough to tell base from large from tiny).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelShape {
    pub image_size: usize,
    pub patch_size: usize,
    pub vision_hidden_size: usize,
    pub vision_layers: usize,
    pub text_hidden_size: usize,
    pub text_layers: usize,
    pub vocab_size: usize,
}

/// What every record ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub batch_sizes: Vec<usize>,
    pub beams: Vec<usize>,
    pub prompt: String,
    /// Prompt length in decoder tokens, bos included.
    pub prompt_tokens: usize,
    /// Tokens generated per caption: min = max, so every run does the same work.
    pub generated_tokens: usize,
    /// Whole-sequence length used for both `max_length` and `min_length`.
    pub forced_length: usize,
    pub warmup: usize,
    pub iterations: usize,
    /// How `peak_gpu_bytes` was measured (`nvml-process`: this process's GPU memory, CUDA context
    /// included, sampled every 20 ms; `torch-allocated`: `torch.cuda.max_memory_allocated`).
    pub peak_gpu_measure: Option<String>,
    /// How quantized projections multiplied when `vlmrun bench --quantized-matmul` chose it
    /// (`weight-only`, `dequantize`, `kernel`); absent: the model's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantized_matmul: Option<String>,
}

/// CPU preprocessing of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessTiming {
    /// e.g. `640x480 synthetic JPEG (quality 90) -> 384x384`.
    pub input: String,
    pub ms: Summary,
    /// 1000 / median ms: one thread's rate.
    pub images_per_s_one_thread: f64,
}

/// Measurements for one (batch size, beams).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub batch_size: usize,
    pub num_beams: usize,
    pub generated_tokens: usize,
    /// Vision encoder on the batch (pixels already on the device), median.
    pub vision_ms: Option<f64>,
    /// batch_size / vision seconds.
    pub vision_images_per_s: Option<f64>,
    /// Cross-attention keys/values of the image embeds + the decoder over the prompt + the first
    /// token's logits and argmax, for the batch's rows, median.
    pub prefill_ms: Option<f64>,
    /// One decoder step for all batch_size x beams rows (forward with the cache, logits, argmax read
    /// back), median over every step of every iteration. The search's own bookkeeping is not in it.
    pub decode_step_ms: Option<f64>,
    /// (generate median - vision - prefill) / (generated_tokens - 1): a whole step inside `generate`,
    /// search bookkeeping included.
    pub decode_step_in_generate_ms: Option<f64>,
    /// Generation alone: pixels on the device -> token ids on the host.
    pub generate_ms: Option<Summary>,
    /// Host pixels -> a batch on the device in the model dtype (conversion and copy), median of the
    /// end-to-end runs. Absent in documents written before it was measured.
    #[serde(default)]
    pub upload_ms: Option<f64>,
    /// End to end per batch: preprocessed pixels on the host -> upload -> generate -> caption text.
    pub latency_ms: Summary,
    /// batch_size / median end-to-end seconds.
    pub images_per_s: f64,
    /// Generated tokens per second end to end (batch_size x generated_tokens / median seconds).
    pub generated_tokens_per_s: f64,
    /// Peak GPU memory during this record (see `settings.peak_gpu_measure`); null on the CPU.
    pub peak_gpu_bytes: Option<u64>,
}

/// Training steps on the configured data (`vlmrun bench --train`): the optimizer steps of
/// `vlmrun train` itself, nothing written but the document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    pub batch_size: usize,
    pub grad_accumulation: usize,
    /// `train.backward` (`explicit` or `autograd`).
    pub backward: String,
    pub fused_kernels: bool,
    pub gradient_checkpointing: bool,
    /// Optimizer steps run; the first (one-time set-up inside it) is not in the rates.
    pub steps: u64,
    /// Median over the steps after the first, pairs per second.
    pub samples_per_s: f64,
    /// Pairs per step / `samples_per_s`, milliseconds.
    pub step_ms: f64,
    /// From the start of the training run to its first step, seconds.
    pub startup_s: f64,
    /// Peak GPU memory of the process over the run (NVML); null on the CPU.
    pub peak_gpu_bytes: Option<u64>,
    pub training_pairs: usize,
}

/// Summary statistics of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub mean: f64,
    pub max: f64,
}

impl From<Percentiles> for Summary {
    fn from(p: Percentiles) -> Self {
        Summary {
            count: p.count,
            p50: p.p50,
            p95: p.p95,
            mean: p.mean,
            max: p.max,
        }
    }
}

impl Summary {
    /// Statistics of `values` (numpy-style percentiles); `None` for an empty sample.
    pub fn of(values: &[f64]) -> Option<Summary> {
        Percentiles::of(values).map(Summary::from)
    }
}

impl Settings {
    /// `peak_gpu_measure` of a vlmrun run on `active`: the NVML process monitor on CUDA, none on
    /// the CPU.
    pub fn vlmrun_peak_gpu_measure(active: &crate::device::ActiveDevice) -> Option<String> {
        match active.plan.target {
            crate::device::Target::Cuda { .. } => Some("nvml-process".to_string()),
            crate::device::Target::Cpu => None,
        }
    }
}

impl ModelShape {
    /// The shapes of a BLIP captioning configuration.
    pub fn of(config: &crate::models::blip::BlipConfig) -> Self {
        ModelShape {
            image_size: config.vision_config.image_size,
            patch_size: config.vision_config.patch_size,
            vision_hidden_size: config.vision_config.hidden_size,
            vision_layers: config.vision_config.num_hidden_layers,
            text_hidden_size: config.text_config.hidden_size,
            text_layers: config.text_config.num_hidden_layers,
            vocab_size: config.text_config.vocab_size,
        }
    }
}

impl BenchDocument {
    /// The record for (batch size, beams), if the run had one.
    pub fn record(&self, batch_size: usize, num_beams: usize) -> Option<&Record> {
        self.records
            .iter()
            .find(|r| r.batch_size == batch_size && r.num_beams == num_beams)
    }
}
