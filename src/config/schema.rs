//! The typed run configuration: what `configs/config.yaml` may contain. Every struct rejects unknown keys;
//! every field has a default so a partial file is complete after loading.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The whole run configuration (`configs/config.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// What `vlmrun baseline` runs over the dataset: `caption`, `vqa` or `retrieval`.
    pub task: Task,
    /// `cuda`, `cuda:N`, `cpu` or `auto` (CUDA when usable, else CPU with a warning).
    pub device: DeviceSpec,
    /// `f32`, `f16`, `bf16` or `auto` (bf16 on compute capability >= 8.0, f16 on older GPUs, f32 on CPU).
    pub precision: PrecisionSpec,
    /// Weight quantization: `none`, `q8_0`, `q4_0`, `q4k` or `q6k` (docs/precision.md).
    pub quantization: Quantization,
    /// f16 runs: precision (`f32` or `bf16`) a batch is recomputed in when its logits overflow.
    pub precision_fallback: PrecisionFallback,
    /// Seed for everything random (synthetic inputs, shuffling).
    pub seed: u64,
    pub model: ModelConfig,
    pub data: DataConfig,
    pub preprocess: PreprocessConfig,
    pub generation: GenerationSettings,
    pub output: OutputConfig,
    /// `vlmrun train` only.
    pub train: TrainConfig,
    /// `task: vqa` only.
    pub vqa: VqaConfig,
    /// `task: retrieval` only.
    pub retrieval: RetrievalConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            task: Task::Caption,
            device: DeviceSpec::Auto,
            precision: PrecisionSpec::Auto,
            quantization: Quantization::None,
            precision_fallback: PrecisionFallback::F32,
            seed: 42,
            model: ModelConfig::default(),
            data: DataConfig::default(),
            preprocess: PreprocessConfig::default(),
            generation: GenerationSettings::default(),
            output: OutputConfig::default(),
            train: TrainConfig::default(),
            vqa: VqaConfig::default(),
            retrieval: RetrievalConfig::default(),
        }
    }
}

/// The dataset task of `vlmrun baseline`. Any other value is refused naming `task` and the valid
/// values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Task {
    /// Caption every image (a captioning checkpoint), COCO caption metrics.
    Caption,
    /// Answer every question (a `BlipForQuestionAnswering` checkpoint), VQA accuracy.
    Vqa,
    /// Image-text retrieval both ways (a `BlipForImageTextRetrieval` checkpoint), recall@1/5/10.
    Retrieval,
}

impl Task {
    pub const NAMES: &'static str = "caption, vqa, retrieval";
}

impl FromStr for Task {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "caption" => Ok(Task::Caption),
            "vqa" => Ok(Task::Vqa),
            "retrieval" => Ok(Task::Retrieval),
            _ => Err(format!(
                "invalid task `{text}`: the key `task` takes one of {}",
                Task::NAMES
            )),
        }
    }
}

impl TryFrom<String> for Task {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Task> for String {
    fn from(task: Task) -> String {
        task.to_string()
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Task::Caption => "caption",
            Task::Vqa => "vqa",
            Task::Retrieval => "retrieval",
        })
    }
}

/// The first token of a BLIP text-encoder input: `[CLS]` (transformers' processor) or `[ENC]`
/// (LAVIS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirstToken {
    Cls,
    Enc,
}

/// How `task: vqa` answers: transformers/LAVIS `generate` (the `generation.*` settings) or LAVIS's
/// `rank` over `vqa.answer_list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VqaInference {
    Generate,
    Rank,
}

/// Ground-truth normalisation of the VQA accuracy: `official` (the VQA evaluation, LAVIS) or
/// `full` (lmms-eval: every human answer normalised like the prediction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VqaGroundTruth {
    Official,
    Full,
}

/// `task: vqa`: `data.path` is a VQAv2 questions file or a LAVIS VQA JSON list, images under
/// `data.image_root`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VqaConfig {
    /// VQAv2 annotations of the same split (`v2_mscoco_*_annotations.json`); null: the LAVIS
    /// file's own `answer` lists, if any.
    pub annotations: Option<PathBuf>,
    /// LAVIS `answer_list.json` (a JSON list of strings): the candidates of `rank` mode.
    pub answer_list: Option<PathBuf>,
    pub inference: VqaInference,
    /// `rank` mode: answers kept by their first token's probability (LAVIS 128).
    pub num_ans_candidates: usize,
    pub ground_truth: VqaGroundTruth,
    /// The question's first token: `cls` (transformers) or `enc` (LAVIS).
    pub question_first_token: FirstToken,
    /// Pixels per side the images are resized to, the ViT's position embeddings interpolated
    /// (bicubic) when it differs from the checkpoint's (LAVIS evaluates VQA at 480); null: the
    /// checkpoint's `vision_config.image_size`.
    pub image_size: Option<usize>,
}

impl Default for VqaConfig {
    fn default() -> Self {
        VqaConfig {
            annotations: None,
            answer_list: None,
            inference: VqaInference::Generate,
            num_ans_candidates: 128,
            ground_truth: VqaGroundTruth::Official,
            question_first_token: FirstToken::Cls,
            image_size: None,
        }
    }
}

/// `task: retrieval`: LAVIS's evaluation over the dataset's images and their captions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrievalConfig {
    /// Candidates per image and per text re-ranked by ITM (LAVIS: 256 COCO, 128 Flickr30k).
    pub k_test: usize,
    /// Texts are truncated to this many tokens, `[CLS]` and `[SEP]` included (LAVIS 35).
    pub max_text_tokens: usize,
    /// The ITM input's first token: `enc` (LAVIS) or `cls` (transformers).
    pub itm_first_token: FirstToken,
    /// Captions through LAVIS's `pre_caption` (lowercase, punctuation, at most 50 words).
    pub pre_caption: bool,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        RetrievalConfig {
            k_test: 256,
            max_text_tokens: 35,
            itm_first_token: FirstToken::Enc,
            pre_caption: true,
        }
    }
}

/// Where the weights come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A local model directory (config.json, model.safetensors, tokenizer.json), or a hub id such as
    /// `Salesforce/blip-image-captioning-base` resolved in the Hugging Face cache.
    pub source: String,
    /// Hub revision (branch, tag or commit) used when `source` is a hub id.
    pub revision: String,
    /// Never touch the network (also set by HF_HUB_OFFLINE=1).
    pub offline: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            source: crate::config::builtin::DEMO_MODEL_SOURCE.to_string(),
            revision: "main".to_string(),
            offline: false,
        }
    }
}

/// The kind of dataset `data.path` points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSource {
    /// A folder of images (no references, so no metrics).
    Folder,
    /// A JSONL manifest: `{"id"?, "image", "references"?}` per line, paths relative to the manifest.
    Manifest,
    /// A COCO captions annotation file (`images` + `annotations`) with `image_root`.
    Coco,
    /// A LAVIS annotation file: a JSON list of `{"image", "caption" (string or list), "image_id"?}`
    /// with `image_root`.
    Lavis,
    /// Hugging Face datasets' parquet files (one, or a folder of them): an `image` column of
    /// `{bytes, path}` and a caption column.
    Parquet,
}

/// The dataset to run over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub source: DataSource,
    /// The folder, manifest or annotation file.
    pub path: PathBuf,
    /// COCO and LAVIS: the folder holding the images named in the annotation file (default: the
    /// file's folder).
    pub image_root: Option<PathBuf>,
    /// COCO: optional Karpathy-style split file (`dataset_coco.json`).
    pub split_file: Option<PathBuf>,
    /// COCO: split name inside `split_file` (`test`, `val`, ...).
    pub split: Option<String>,
    /// Use at most this many items (after `offset`).
    pub limit: Option<usize>,
    /// Skip this many items first.
    pub offset: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            source: DataSource::Manifest,
            path: PathBuf::from("tests/fixtures/samples.jsonl"),
            image_root: None,
            split_file: None,
            split: None,
            limit: None,
            offset: 0,
        }
    }
}

/// Which Pillow's BICUBIC pass order to reproduce (the two separable passes round to u8 in between, so
/// the order changes pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizePassOrder {
    /// Pillow 12.2-12.3 (the reference fixtures): horizontal first, except vertical first for images more
    /// than 100 times taller than wide.
    Pillow12,
    /// Pillow 13: vertical first when the height shrinks by more than twice the width.
    Pillow13,
    /// Pillow <= 12.1 (LAVIS-era environments): always horizontal first.
    Pillow121,
}

/// Image preprocessing (BlipImageProcessor, PIL path).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessConfig {
    pub resize_pass_order: ResizePassOrder,
    /// Images with more pixels than this are refused before decoding (Pillow's MAX_IMAGE_PIXELS).
    pub max_pixels: u64,
    /// CPU worker threads for decoding and resizing; 0 = one per core.
    pub workers: usize,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            resize_pass_order: ResizePassOrder::Pillow12,
            max_pixels: 89_478_485,
            workers: 0,
        }
    }
}

/// Caption generation, with Hugging Face `generate` semantics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationSettings {
    /// Text the caption starts with (LAVIS uses "a picture of "). Empty: unconditional.
    pub prompt: String,
    /// 1 = greedy; more = beam search.
    pub num_beams: usize,
    /// Whole-sequence length limit (bos and prompt included), as transformers counts it.
    pub max_length: usize,
    /// The end token is blocked until the sequence (bos and prompt included) is this long.
    pub min_length: usize,
    pub length_penalty: f64,
    pub repetition_penalty: f32,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Greedy search on CUDA records each decode step as a CUDA graph and replays it (the same
    /// token ids, far fewer kernel launches); `false` runs every step eagerly.
    pub cuda_graphs: bool,
}

impl Default for GenerationSettings {
    fn default() -> Self {
        GenerationSettings {
            prompt: String::new(),
            num_beams: 1,
            max_length: 20,
            min_length: 0,
            length_penalty: 1.0,
            repetition_penalty: 1.0,
            batch_size: 8,
            cuda_graphs: true,
        }
    }
}

/// Where results go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Run directory: predictions, errors, report and the resolved config are written here.
    pub dir: PathBuf,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            dir: PathBuf::from("runs/default"),
        }
    }
}

/// A device request as written in the config or on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    Auto,
    Cpu,
    /// `cuda` (ordinal 0) or `cuda:N`.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase();
        match lower.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => match lower.strip_prefix("cuda:") {
                Some(index) => index.parse::<usize>().map(DeviceSpec::Cuda).map_err(|_| {
                    format!("invalid device `{text}`: the GPU index after `cuda:` must be a number, e.g. cuda:0")
                }),
                None => Err(format!(
                    "invalid device `{text}`: expected one of cuda, cuda:N, cpu, auto"
                )),
            },
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(spec: DeviceSpec) -> String {
        spec.to_string()
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

/// A precision request as written in the config or on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionSpec {
    Auto,
    F32,
    F16,
    Bf16,
}

impl FromStr for PrecisionSpec {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(PrecisionSpec::Auto),
            "f32" | "fp32" | "float32" => Ok(PrecisionSpec::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(PrecisionSpec::F16),
            "bf16" | "bfloat16" => Ok(PrecisionSpec::Bf16),
            _ => Err(format!(
                "invalid precision `{text}`: expected one of f32, f16, bf16, auto"
            )),
        }
    }
}

impl fmt::Display for PrecisionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrecisionSpec::Auto => "auto",
            PrecisionSpec::F32 => "f32",
            PrecisionSpec::F16 => "f16",
            PrecisionSpec::Bf16 => "bf16",
        })
    }
}

/// Weight quantization of the vision and text projections (GGML block formats, quantized at load).
/// The error for an unknown name lists the valid ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quantization {
    /// Dense weights in the compute precision.
    #[serde(rename = "none")]
    None,
    /// 8-bit blocks of 32 (one f16 scale each).
    #[serde(rename = "q8_0")]
    Q8_0,
    /// 4-bit blocks of 32 (one f16 scale each).
    #[serde(rename = "q4_0")]
    Q4_0,
    /// 4-bit k-quant super-blocks of 256; layers whose input size is not a multiple of 256 use q8_0.
    #[serde(rename = "q4k")]
    Q4k,
    /// 6-bit k-quant super-blocks of 256; layers whose input size is not a multiple of 256 use q8_0.
    #[serde(rename = "q6k")]
    Q6k,
}

impl fmt::Display for Quantization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quantization::None => "none",
            Quantization::Q8_0 => "q8_0",
            Quantization::Q4_0 => "q4_0",
            Quantization::Q4k => "q4k",
            Quantization::Q6k => "q6k",
        })
    }
}

/// The precision a batch is recomputed in when an f16 run produces non-finite logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionFallback {
    F32,
    Bf16,
}

impl fmt::Display for PrecisionFallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrecisionFallback::F32 => "f32",
            PrecisionFallback::Bf16 => "bf16",
        })
    }
}

/// Fine-tuning (`vlmrun train`). Defaults follow LAVIS' BLIP COCO captioning recipe where it has
/// one (prompt, label smoothing, AdamW settings, lr 1e-5 with cosine decay to 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Text before every caption; its tokens are not predicted (masked out of the loss).
    pub prompt: String,
    /// Longest token sequence (bos, prompt, caption, [SEP]); longer captions are truncated.
    pub max_tokens: usize,
    /// Label smoothing of the cross-entropy (LAVIS/HF BLIP: 0.1).
    pub label_smoothing: f64,
    /// (image, caption) pairs per optimizer step, before accumulation.
    pub batch_size: usize,
    /// Micro-batches summed into one optimizer step (effective batch = batch_size x this).
    pub grad_accumulation: usize,
    /// Passes over the training pairs (ignored when max_steps is set).
    pub epochs: usize,
    /// Stop after this many optimizer steps (overrides epochs).
    pub max_steps: Option<usize>,
    /// Peak learning rate.
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f64,
    /// Linear warm-up steps from 0 to lr.
    pub warmup_steps: usize,
    /// AdamW decoupled weight decay (not applied to biases, LayerNorms and embeddings).
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Clip gradients to this global L2 norm (0 = no clipping).
    pub max_grad_norm: f64,
    /// Train the text decoder only; the vision encoder stays as loaded.
    pub freeze_vision: bool,
    /// Hold out this many images (the last ones of the dataset) for evaluation (0 = none).
    pub eval_images: usize,
    /// Evaluate every this many steps (0 = only at the end); needs eval_images > 0.
    pub eval_every: usize,
    /// Write a checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: usize,
    /// Checkpoints kept besides the best one.
    pub keep_last: usize,
    /// On a CUDA device in bf16/f16, run the fused training kernels (attention forward and
    /// backward without stored probabilities); false = the composed candle ops everywhere (the
    /// reference path they are checked against).
    pub fused_kernels: bool,
    /// How gradients are computed: `explicit` (each layer's hand-written backward beside its
    /// forward, no autograd graph; the default) or `autograd` (candle's autograd through the
    /// model's differentiable forward: the reference the explicit pass is tested against).
    pub backward: BackwardPass,
    /// Visit the pairs in a new seeded order every epoch (false: dataset order, as a PyTorch loop
    /// without a shuffling sampler; for side-by-side comparisons).
    pub shuffle: bool,
    /// Activation recomputation (explicit backward): keep only each vision layer's input from
    /// the forward and run the layer again in the backward. The same gradients in less memory
    /// (most of a step's activations are the vision tower's) for one more vision forward.
    pub gradient_checkpointing: bool,
}

/// `train.backward`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackwardPass {
    Explicit,
    Autograd,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            prompt: "a picture of ".to_string(),
            max_tokens: 30,
            label_smoothing: 0.1,
            batch_size: 32,
            grad_accumulation: 1,
            epochs: 5,
            max_steps: None,
            lr: 1e-5,
            min_lr: 0.0,
            warmup_steps: 0,
            weight_decay: 0.05,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm: 1.0,
            freeze_vision: false,
            eval_images: 0,
            eval_every: 0,
            checkpoint_every: 0,
            keep_last: 2,
            fused_kernels: true,
            backward: BackwardPass::Explicit,
            shuffle: true,
            gradient_checkpointing: false,
        }
    }
}
