//! Command-line arguments (clap). Parsing only: `commands` runs them, `config` merges them with the file.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// `vlmrun -V`: version, git revision, and whether CUDA kernels are compiled in.
#[cfg(feature = "cuda")]
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("VLMRUN_GIT_REV"),
    "; CUDA compiled in: toolkit ",
    env!("VLMRUN_CUDA_VERSION"),
    ", compute capability ",
    env!("VLMRUN_CUDA_COMPUTE_CAP"),
    ")"
);

/// `vlmrun -V`: version, git revision, and whether CUDA kernels are compiled in.
#[cfg(not(feature = "cuda"))]
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("VLMRUN_GIT_REV"),
    "; CPU build: CUDA not compiled in)"
);

#[derive(Debug, Parser)]
#[command(
    name = "vlmrun",
    version = VERSION,
    about = "Rust-native GPU harness for vision-language models (BLIP captioning)",
    long_about = None,
    after_help = "Exit codes: 0 ok, 1 internal error, 2 bad config/flags or unusable device, 3 completed with failures, 4 model error, 5 input error, 6 output error, 7 training diverged, 130 interrupted."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes (listed under "Global options" in each command's help).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Run configuration file [default: $VLMRUN_CONFIG, else ./configs/config.yaml when present, else
    /// the built-in defaults].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Override a configuration value, e.g. --set generation.num_beams=3 (repeatable; last wins).
    #[arg(long = "set", global = true, value_name = "KEY.PATH=VALUE")]
    pub sets: Vec<String>,
    /// Device: cuda, cuda:N, cpu or auto (overrides the config).
    #[arg(long, global = true, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Precision: f32, f16, bf16 or auto (overrides the config).
    #[arg(long, global = true, value_name = "PRECISION")]
    pub precision: Option<String>,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the resolved configuration as YAML, with where each value came from.
    Config,
    /// Check the driver, GPUs, this build, the configured device (with a real computation) and model files.
    Doctor {
        /// Print the report as JSON (schema in docs/doctor.md).
        #[arg(long)]
        json: bool,
    },
    /// Caption images (one caption per line; --json: one object per line).
    Caption(CaptionArgs),
    /// Answer a question about images with a BLIP VQA model (one answer per line; --json: one object per line).
    Vqa(VqaArgs),
    /// How well a text matches images, with a BLIP ITM model (ITM probability and logit, ITC similarity).
    Match(MatchArgs),
    /// ITC embeddings of images and texts with a BLIP ITM model, written to a safetensors file.
    Embed(EmbedArgs),
    /// Run the configured dataset: predictions.jsonl, errors.jsonl, metrics, report.json (resumable);
    /// several ranks split it (docs/scaling.md).
    Baseline(BaselineArgs),
    /// Merge the shards of a data-parallel baseline in output.dir: predictions.jsonl, metrics, report.json
    /// (exit 3 naming any rank whose shard is incomplete).
    Merge {
        /// The ranks' output directory (default: output.dir).
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
    },
    /// Download a model (config.json, tokenizer.json, weights) into the Hugging Face cache (feature `hub`).
    Fetch {
        /// Hub id, e.g. Salesforce/blip-image-captioning-base.
        #[arg(value_name = "HUB_ID")]
        id: String,
        /// Branch, tag or commit.
        #[arg(long, default_value = "main")]
        revision: String,
    },
    /// Throughput and latency, phase by phase (docs/performance.md); --compare checks for regressions (exit 3).
    Bench(BenchArgs),
    /// Print a shell completion script, e.g. `vlmrun completions bash > ~/.local/share/bash-completion/completions/vlmrun`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Fine-tune the model on the configured dataset (train.* keys): checkpoints, metrics.jsonl, train-summary.json.
    Train(TrainArgs),
    /// Write the model quantized to one GGUF file, which model.source (or --model) can then point at.
    Quantize(QuantizeArgs),
    /// How much a precision or quantization changes the captions: agreement with f32 on the dataset's images.
    Fidelity(FidelityArgs),
    /// COCO caption metrics (BLEU-1..4, CIDEr-D, ROUGE-L) of an existing predictions file.
    Score {
        /// predictions.jsonl (lines with "id" and "caption").
        #[arg(long, value_name = "FILE")]
        predictions: std::path::PathBuf,
        /// JSONL manifest with "id" + "references", or a COCO captions annotation file (.json).
        #[arg(long, value_name = "FILE")]
        references: std::path::PathBuf,
        /// Print the scores (with per-image values) as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `vlmrun baseline`. The rank flags override the launcher's variables (RANK/WORLD_SIZE, SLURM_*,
/// OMPI_COMM_WORLD_*); see docs/scaling.md. --model and --limit override the config keys in their help.
#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Model directory or hub id (model.source).
    #[arg(long, value_name = "DIR|HUB_ID")]
    pub model: Option<String>,
    /// At most this many items of the dataset, after data.offset (data.limit).
    #[arg(long, value_name = "N")]
    pub limit: Option<String>,
    /// Delete earlier results in output.dir and start over (default: resume). With several ranks, give it
    /// to every rank.
    #[arg(long)]
    pub fresh: bool,
    /// This process's rank, 0..world-size (data-parallel run; with --world-size).
    #[arg(long, value_name = "K")]
    pub rank: Option<usize>,
    /// Number of ranks sharing the dataset (with --rank).
    #[arg(long, value_name = "N")]
    pub world_size: Option<usize>,
    /// Rank on this machine, picks GPU cuda:K (default: --rank, i.e. all ranks on one machine).
    #[arg(long, value_name = "K")]
    pub local_rank: Option<usize>,
    /// Rank 0: how long to wait for the other ranks after its own shard before merging what is there.
    #[arg(long, value_name = "SECONDS", default_value_t = 1800)]
    pub wait_timeout: u64,
}

impl BaselineArgs {
    /// The flags that stand for config keys, in a fixed order.
    pub fn overrides(&self) -> Vec<crate::config::FlagOverride> {
        let pairs: [(&'static str, &'static str, &Option<String>); 2] = [
            ("--model", "model.source", &self.model),
            ("--limit", "data.limit", &self.limit),
        ];
        crate::config::FlagOverride::from_flags(&pairs)
    }
}

/// `vlmrun caption`: each flag overrides the config key named in its help.
#[derive(Debug, Args)]
pub struct CaptionArgs {
    /// Model directory or hub id (model.source).
    #[arg(long, value_name = "DIR|HUB_ID")]
    pub model: Option<String>,
    /// Caption prefix (generation.prompt), e.g. "a picture of ".
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Beams; 1 = greedy (generation.num_beams).
    #[arg(long, value_name = "N")]
    pub beams: Option<String>,
    /// Whole-sequence length limit (generation.max_length).
    #[arg(long, value_name = "N")]
    pub max_length: Option<String>,
    /// Minimum whole-sequence length (generation.min_length).
    #[arg(long, value_name = "N")]
    pub min_length: Option<String>,
    /// Images per forward pass (generation.batch_size).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<String>,
    /// Caption at most the first N images given.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// One JSON object per line: {"image", "caption", "token_ids"}, or {"image", "error"}.
    #[arg(long)]
    pub json: bool,
    /// Image files (PNG, JPEG, WebP). One output line per image, in order; an image that fails
    /// gives an `error: ...` line (exit 3, or 5 when all fail).
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
}

impl CaptionArgs {
    /// The flags that stand for config keys, in a fixed order.
    pub fn overrides(&self) -> Vec<crate::config::FlagOverride> {
        let pairs: [(&'static str, &'static str, &Option<String>); 6] = [
            ("--model", "model.source", &self.model),
            ("--prompt", "generation.prompt", &self.prompt),
            ("--beams", "generation.num_beams", &self.beams),
            ("--max-length", "generation.max_length", &self.max_length),
            ("--min-length", "generation.min_length", &self.min_length),
            ("--batch-size", "generation.batch_size", &self.batch_size),
        ];
        crate::config::FlagOverride::from_flags(&pairs)
    }
}

/// `vlmrun vqa`: each flag overrides the config key named in its help.
#[derive(Debug, Args)]
pub struct VqaArgs {
    /// BlipForQuestionAnswering model directory or hub id (model.source), e.g. Salesforce/blip-vqa-base.
    #[arg(long, value_name = "DIR|HUB_ID")]
    pub model: Option<String>,
    /// The question asked about every image.
    #[arg(long, value_name = "TEXT", required_unless_present = "questions")]
    pub question: Option<String>,
    /// A VQAv2 questions file (v2_OpenEnded_mscoco_*_questions.json): answer all its questions
    /// (images from --images) and write the submission to --out, instead of IMAGE arguments.
    #[arg(long, value_name = "FILE", requires_all = ["images_dir", "out"], conflicts_with = "question")]
    pub questions: Option<PathBuf>,
    /// The VQAv2 annotations of the same split (v2_mscoco_*_annotations.json): print the VQA accuracy.
    #[arg(long, value_name = "FILE", requires = "questions")]
    pub annotations: Option<PathBuf>,
    /// The COCO images folder of the questions file (COCO_<split>_<image_id:012>.jpg).
    #[arg(long = "images", value_name = "DIR", requires = "questions")]
    pub images_dir: Option<PathBuf>,
    /// Where the submission [{"question_id", "answer"}] is written.
    #[arg(long, value_name = "FILE", requires = "questions")]
    pub out: Option<PathBuf>,
    /// Ground-truth normalisation of the accuracy: official (the VQA evaluation, LAVIS) or full (lmms-eval).
    #[arg(long, value_name = "MODE", default_value = "official")]
    pub ground_truth: String,
    /// Beams; 1 = greedy (generation.num_beams).
    #[arg(long, value_name = "N")]
    pub beams: Option<String>,
    /// Whole-sequence length limit, [DEC] included (generation.max_length).
    #[arg(long, value_name = "N")]
    pub max_length: Option<String>,
    /// Minimum whole-sequence length (generation.min_length).
    #[arg(long, value_name = "N")]
    pub min_length: Option<String>,
    /// Images per forward pass (generation.batch_size).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<String>,
    /// Answer for at most the first N images given.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// One JSON object per line: {"image", "question", "answer", "token_ids"}, or {"image", "question", "error"}.
    #[arg(long)]
    pub json: bool,
    /// Image files (PNG, JPEG, WebP). One output line per image, in order.
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
}

impl VqaArgs {
    /// The flags that stand for config keys, in a fixed order.
    pub fn overrides(&self) -> Vec<crate::config::FlagOverride> {
        let pairs: [(&'static str, &'static str, &Option<String>); 5] = [
            ("--model", "model.source", &self.model),
            ("--beams", "generation.num_beams", &self.beams),
            ("--max-length", "generation.max_length", &self.max_length),
            ("--min-length", "generation.min_length", &self.min_length),
            ("--batch-size", "generation.batch_size", &self.batch_size),
        ];
        crate::config::FlagOverride::from_flags(&pairs)
    }
}

/// `vlmrun match`: each flag overrides the config key named in its help.
#[derive(Debug, Args)]
pub struct MatchArgs {
    /// BlipForImageTextRetrieval model directory or hub id (model.source), e.g. Salesforce/blip-itm-base-coco.
    #[arg(long, value_name = "DIR|HUB_ID")]
    pub model: Option<String>,
    /// The text matched against every image.
    #[arg(long, value_name = "TEXT")]
    pub text: String,
    /// LAVIS's ITM input: [ENC] instead of [CLS] as the first token (ITC keeps [CLS]).
    #[arg(long)]
    pub enc: bool,
    /// Images per forward pass (generation.batch_size).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<String>,
    /// Score at most the first N images given.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// One JSON object per line: {"image", "text", "itm_score", "itm_logit", "itc_score"}, or {"image", "text", "error"}.
    #[arg(long)]
    pub json: bool,
    /// Image files (PNG, JPEG, WebP). One output line per image, in order.
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
}

impl MatchArgs {
    /// The flags that stand for config keys, in a fixed order.
    pub fn overrides(&self) -> Vec<crate::config::FlagOverride> {
        let pairs: [(&'static str, &'static str, &Option<String>); 2] = [
            ("--model", "model.source", &self.model),
            ("--batch-size", "generation.batch_size", &self.batch_size),
        ];
        crate::config::FlagOverride::from_flags(&pairs)
    }
}

/// `vlmrun embed`: each flag overrides the config key named in its help.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// BlipForImageTextRetrieval model directory or hub id (model.source), e.g. Salesforce/blip-itm-base-coco.
    #[arg(long, value_name = "DIR|HUB_ID")]
    pub model: Option<String>,
    /// A text to embed (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub text: Vec<String>,
    /// A file of texts to embed, one per line (after the --text ones).
    #[arg(long, value_name = "FILE")]
    pub texts: Option<PathBuf>,
    /// The safetensors file written: image_embeds, text_embeds and their names in the metadata.
    #[arg(long, value_name = "FILE.safetensors")]
    pub out: PathBuf,
    /// Images or texts per forward pass (generation.batch_size).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<String>,
    /// Image files (PNG, JPEG, WebP), one row each in order.
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
}

impl EmbedArgs {
    /// The flags that stand for config keys, in a fixed order.
    pub fn overrides(&self) -> Vec<crate::config::FlagOverride> {
        let pairs: [(&'static str, &'static str, &Option<String>); 2] = [
            ("--model", "model.source", &self.model),
            ("--batch-size", "generation.batch_size", &self.batch_size),
        ];
        crate::config::FlagOverride::from_flags(&pairs)
    }
}

/// `vlmrun bench`: --model, --prompt and --quantization override the config keys named in their help;
/// batch sizes and beams default to generation.batch_size and generation.num_beams.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model directory or hub id (model.source).
    #[arg(long, value_name = "DIR|HUB_ID")]
    pub model: Option<String>,
    /// Caption prefix (generation.prompt).
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Weight quantization (quantization): none, q8_0, q4_0, q4k or q6k.
    #[arg(long, value_name = "KIND")]
    pub quantization: Option<String>,
    /// How quantized projections multiply: weight-only (default: a quantized GEMV for a few rows
    /// on CUDA, else the dequantized weight), dequantize (always the dequantized weight) or
    /// kernel (candle's quantized kernel, 8-bit activations).
    #[arg(long, value_name = "HOW")]
    pub quantized_matmul: Option<String>,
    /// Batch sizes to measure, e.g. 1,8,64 (default: generation.batch_size).
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    pub batch_sizes: Vec<usize>,
    /// Beam counts to measure, e.g. 1,3; 1 = greedy (default: generation.num_beams).
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    pub beams: Vec<usize>,
    /// Tokens generated per caption, forced (max_length = min_length = prompt + N).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub tokens: usize,
    /// Untimed warm-up batches per record.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub warmup: usize,
    /// Timed repetitions of each phase per record (medians are reported).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub iterations: usize,
    /// Where to write the JSON document (schema vlmrun.bench/1); default OUTPUT_DIR/bench.json.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Draw images/s against batch size to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// A reference document (e.g. from benches/reference/pytorch_blip.py): ratio table and plot lines.
    #[arg(long, value_name = "REF.json")]
    pub reference: Option<PathBuf>,
    /// A baseline document: exit 3 naming every metric worse than --threshold (same device only).
    #[arg(long, value_name = "BASELINE.json")]
    pub compare: Option<PathBuf>,
    /// Allowed regression for --compare, e.g. 5%.
    #[arg(long, value_name = "PERCENT", default_value = "5%")]
    pub threshold: String,
    /// Measure training instead of captioning: --train-steps optimizer steps of `vlmrun train` on
    /// the configured data (the train.* keys apply; no checkpoints are written), recorded in the
    /// document for --compare.
    #[arg(long)]
    pub train: bool,
    /// Optimizer steps of --train; the first (one-time set-up) is not in the rate.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub train_steps: usize,
}

impl BenchArgs {
    /// The flags that stand for config keys, in a fixed order.
    pub fn overrides(&self) -> Vec<crate::config::FlagOverride> {
        let pairs: [(&'static str, &'static str, &Option<String>); 3] = [
            ("--model", "model.source", &self.model),
            ("--prompt", "generation.prompt", &self.prompt),
            ("--quantization", "quantization", &self.quantization),
        ];
        crate::config::FlagOverride::from_flags(&pairs)
    }
}

/// `vlmrun train`: --model, --steps, --batch-size and --lr override the config keys named in their help.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Continue from the newest checkpoint in output.dir/checkpoints.
    #[arg(long, conflicts_with = "fresh")]
    pub resume: bool,
    /// Delete earlier checkpoints and logs in output.dir and start over.
    #[arg(long)]
    pub fresh: bool,
    /// Write the loss curve (SVG) here.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Save every parameter's gradient of the first step (f32, before unscaling and clipping,
    /// checkpoint names) to this safetensors file: for comparing with another implementation.
    #[arg(long, value_name = "FILE.safetensors")]
    pub dump_grads: Option<PathBuf>,
    /// Model directory or hub id to start from (model.source).
    #[arg(long, value_name = "DIR|HUB_ID")]
    pub model: Option<String>,
    /// Optimizer steps (train.max_steps).
    #[arg(long, value_name = "N")]
    pub steps: Option<String>,
    /// Pairs per micro-batch (train.batch_size).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<String>,
    /// Peak learning rate (train.lr).
    #[arg(long, value_name = "LR")]
    pub lr: Option<String>,
    /// At most this many items of the dataset, after data.offset (data.limit).
    #[arg(long, value_name = "N")]
    pub limit: Option<String>,
}

impl TrainArgs {
    /// The flags that stand for config keys, in a fixed order.
    pub fn overrides(&self) -> Vec<crate::config::FlagOverride> {
        let pairs: [(&'static str, &'static str, &Option<String>); 5] = [
            ("--model", "model.source", &self.model),
            ("--steps", "train.max_steps", &self.steps),
            ("--batch-size", "train.batch_size", &self.batch_size),
            ("--lr", "train.lr", &self.lr),
            ("--limit", "data.limit", &self.limit),
        ];
        crate::config::FlagOverride::from_flags(&pairs)
    }
}

/// `vlmrun quantize`: --model overrides model.source.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Model directory or hub id (model.source).
    #[arg(long, value_name = "DIR|HUB_ID")]
    pub model: Option<String>,
    /// Quantization format of the projections: q8_0, q4_0, q4k or q6k.
    #[arg(long, value_name = "FORMAT")]
    pub to: String,
    /// The file to write (must end in .gguf).
    #[arg(long, value_name = "FILE.gguf")]
    pub out: PathBuf,
    /// Storage of the tensors that stay dense (embeddings, LayerNorms, LM head): f32 or f16.
    #[arg(long, value_name = "DTYPE", default_value = "f32")]
    pub dense: String,
}

impl QuantizeArgs {
    /// The flags that stand for config keys.
    pub fn overrides(&self) -> Vec<crate::config::FlagOverride> {
        let pairs: [(&'static str, &'static str, &Option<String>); 1] =
            [("--model", "model.source", &self.model)];
        crate::config::FlagOverride::from_flags(&pairs)
    }
}

/// `vlmrun fidelity`: the reference is the model in f32 with dense weights; images come from the
/// configured dataset (data.*); --model and --batch-size override the config keys in their help.
#[derive(Debug, Args)]
pub struct FidelityArgs {
    /// Model directory or hub id (model.source).
    #[arg(long, value_name = "DIR|HUB_ID")]
    pub model: Option<String>,
    /// Variants to compare with the f32 reference: a precision (f32, f16, bf16), or a quantization
    /// (q8_0, q4_0, q4k, q6k; f32 activations unless @f16/@bf16 follows), optionally with
    /// :kernel, :weight-only or :dequantize (how quantized projections multiply; default:
    /// weight-only).
    #[arg(
        long,
        value_name = "V,V,...",
        value_delimiter = ',',
        default_value = "f16,bf16,q8_0,q4k,q4_0"
    )]
    pub variants: Vec<String>,
    /// Beam counts to decode with; 1 = greedy.
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        default_value = "1,3"
    )]
    pub beams: Vec<usize>,
    /// At most this many images of the dataset (after data.offset/data.limit).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Images per forward pass (generation.batch_size).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<String>,
    /// Where to write the JSON document (schema vlmrun.fidelity/1); default OUTPUT_DIR/fidelity.json.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

impl FidelityArgs {
    /// The flags that stand for config keys, in a fixed order.
    pub fn overrides(&self) -> Vec<crate::config::FlagOverride> {
        let pairs: [(&'static str, &'static str, &Option<String>); 2] = [
            ("--model", "model.source", &self.model),
            ("--batch-size", "generation.batch_size", &self.batch_size),
        ];
        crate::config::FlagOverride::from_flags(&pairs)
    }
}

/// Every `--set` value on the command line, in order, before and after the subcommand (`args`
/// without the program name; nothing after a lone `--`). clap keeps only the subcommand's values of
/// a global option given on both sides of it (clap-rs/clap#1570), which would silently drop the
/// first of `vlmrun --set seed=1 baseline --set generation.num_beams=3`; `main` uses this list when
/// it holds more values than clap's.
pub fn sets_in_order<I, S>(args: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut sets = Vec::new();
    let mut tokens = args.into_iter().map(Into::into);
    while let Some(token) = tokens.next() {
        let Some(text) = token.to_str() else { continue };
        if text == "--" {
            break;
        } else if text == "--set" {
            if let Some(value) = tokens.next().and_then(|v| v.into_string().ok()) {
                sets.push(value);
            }
        } else if let Some(value) = text.strip_prefix("--set=") {
            sets.push(value.to_string());
        }
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_on_both_sides_of_the_subcommand_are_all_kept_in_order() {
        let args = [
            "--set",
            "seed=1",
            "config",
            "--set=generation.num_beams=3",
            "--prompt=--set",
            "--set",
            "seed=2",
            "--",
            "--set",
            "x=1",
        ];
        assert_eq!(
            sets_in_order(args),
            ["seed=1", "generation.num_beams=3", "seed=2"]
        );
        // clap alone drops the values before the subcommand (the reason for the list above).
        let parsed =
            Cli::try_parse_from(["vlmrun", "--set", "seed=1", "config", "--set", "seed=2"])
                .unwrap();
        assert_eq!(parsed.global.sets, ["seed=2"]);
    }
}
