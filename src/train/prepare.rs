//! The first stage of `vlmrun train`: everything checked and set up before the first step.
//! Configuration -> dataset (pairs, held-out images, every image decoded when the set is small) ->
//! device -> model weights as f32 master `Var`s -> output directory (resume or start) -> optimizer,
//! scaler, schedule, checkpoints and the metrics log.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Var};

use super::checkpoint::{CheckpointDir, LoadedCheckpoint, MetricGoal, Retention};
use super::compute_copy::ComputeCopy;
use super::data::TrainData;
use super::eval::Evaluator;
use super::inputs::{InputBuilder, Unreadable};
use super::log::MetricsLog;
use super::optim::{AdamW, AdamWConfig};
use super::params::{FreezeRule, TrainParams};
use super::resume_settings;
use super::scaler::{LossScaler, ScalerConfig};
use super::schedule::WarmupCosine;
use super::workspace::{prepare_output_dir, resume_point, total_steps, RunState};
use super::workspace::{CHECKPOINTS_DIR, METRICS_FILE};
use crate::config::{Quantization, ResolvedConfig, TrainConfig};
use crate::data::dataset;
use crate::device::{self, ActiveDevice, CudaAvailability, SystemFacts};
use crate::engine::{self, generation_config, image_processor};
use crate::error::Error;
use crate::kernels::adamw::FusedAdamW;
use crate::kernels::backprop::TrainOps;
use crate::kernels::fused::FusedOps;
use crate::models::blip::weights::WeightFormat;
use crate::models::blip::BlipWeights;
use crate::preprocess::prompt::PromptTokenizer;
use crate::report::output::output_error;

/// Options that are not configuration.
pub struct TrainOptions {
    /// Continue from the newest checkpoint in the output directory.
    pub resume: bool,
    /// Delete earlier checkpoints and logs in the output directory and start over.
    pub fresh: bool,
    /// Set by the Ctrl-C handler; checked between steps.
    pub interrupted: Arc<AtomicBool>,
    pub quiet: bool,
    /// Write the loss curve here (SVG).
    pub plot: Option<PathBuf>,
    /// Save the first step's gradients here (safetensors).
    pub dump_grads: Option<PathBuf>,
    /// Write checkpoints (false: a measurement run, `vlmrun bench --train`, keeps none).
    pub checkpoints: bool,
    /// stderr as the logger shares it: the progress bar attaches to it.
    pub console: crate::report::console::Console,
}

/// A training run set up and ready for its next step: what [`prepare`] built, and where the run
/// stands (`state`, `last_checkpoint`), which the later stages advance.
pub struct Session<'a> {
    pub train: &'a TrainConfig,
    pub active: ActiveDevice,
    pub dev: Device,
    /// The compute dtype (the master weights are f32).
    pub dtype: DType,
    /// Where the base model came from (copied into every checkpoint).
    pub model_dir: PathBuf,
    pub weights: BlipWeights,
    pub tokenizer: PromptTokenizer,
    pub inputs: InputBuilder,
    pub evaluator: Option<Evaluator>,
    pub params: TrainParams,
    pub out_dir: PathBuf,
    pub samples_per_step: u64,
    pub total_steps: u64,
    pub schedule: WarmupCosine,
    pub optimizer: AdamW,
    pub scaler: LossScaler,
    pub checkpoints: CheckpointDir,
    pub state: RunState,
    pub metrics_path: PathBuf,
    pub log: MetricsLog,
    /// The newest checkpoint of this run (the resumed one until a step saves another).
    pub last_checkpoint: Option<PathBuf>,
    /// Kernels with a backward pass for the model builds (compiled once for the run).
    pub train_ops: FusedOps,
    /// The explicit backward pass's kernels (CUDA with `train.fused_kernels`, else composed).
    pub backprop_ops: TrainOps,
    /// One-kernel AdamW and gradient norm (CUDA, `train.fused_kernels`).
    pub fused_adamw: FusedAdamW,
    /// The weights in the compute dtype, kept current by the fused AdamW (`None`: made again at
    /// the next step, or not used).
    pub compute_copy: Option<ComputeCopy>,
    /// Where the set-up time went, phase by phase.
    pub startup: StartupPhases,
    /// Training images that could not be read (their pairs left out), with the reason.
    pub unreadable: Unreadable,
}

/// Seconds spent in each phase of the set-up before the first step.
pub struct StartupPhases {
    last: Instant,
    pub phases: Vec<(&'static str, f64)>,
}

impl StartupPhases {
    pub fn new(started: Instant) -> Self {
        Self {
            last: started,
            phases: Vec::new(),
        }
    }

    /// Ends the phase called `what` now.
    pub fn mark(&mut self, what: &'static str) {
        let now = Instant::now();
        self.phases
            .push((what, now.duration_since(self.last).as_secs_f64()));
        self.last = now;
    }

    pub fn describe(&self) -> String {
        self.phases
            .iter()
            .map(|(what, s)| format!("{what} {s:.2} s"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Checks and sets up everything, in the order of the module doc, so that every mistake is
/// reported before the first step.
pub fn prepare<'a>(
    resolved: &'a ResolvedConfig,
    facts: &SystemFacts,
    cuda: &CudaAvailability,
    options: &TrainOptions,
    started: Instant,
) -> Result<Session<'a>, Error> {
    let mut startup = StartupPhases::new(started);
    let config = &resolved.config;
    let train = &config.train;
    if config.quantization != Quantization::None {
        return Err(Error::Usage(format!(
            "quantization: {} cannot be trained (AdamW updates dense weights)\n  fix: set quantization: none; quantize the trained checkpoint afterwards",
            config.quantization
        )));
    }
    if let Some(path) = &options.dump_grads {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !parent.is_dir() {
            return Err(Error::Usage(format!(
                "--dump-grads {}: the folder {} does not exist\n  fix: create it, or give a file in an existing folder",
                path.display(),
                parent.display()
            )));
        }
    }
    let items = dataset::load(&config.data).map_err(Error::input)?;
    let data = TrainData::split(items, train.eval_images).map_err(Error::input)?;
    startup.mark("configuration and dataset index");
    let active = device::activate(config.device, config.precision, facts, cuda)?;
    let (dev, dtype) = (active.device.clone(), active.precision.dtype);
    startup.mark("device");

    let engine::Resolved { files, tokenizer } = engine::resolve(config)?;
    let model_dir = files.weights;
    let weights = BlipWeights::locate(&model_dir).map_err(Error::model)?;
    let processor = image_processor(config, weights.config.vision_config.image_size);
    let (inputs, decode_failures) = InputBuilder::new(
        data.samples,
        &tokenizer,
        &train.prompt,
        train.max_tokens,
        processor.clone(),
    )
    .map_err(Error::input)?;
    // Images unusable by name (counted before any is opened), then those that failed to decode.
    let mut unreadable = data.unusable;
    unreadable.extend(decode_failures);
    for (path, why) in &unreadable {
        tracing::warn!("skipping {} in training: {why}", path.display());
    }
    if inputs.is_empty() {
        return Err(Error::Input(format!(
            "no usable training pair: all {} training images failed to load (listed above)\n  fix: check data.path and the image files",
            unreadable.len()
        )));
    }
    startup.mark("tokenizing and decoding the training images");
    let evaluator = if data.eval_items.is_empty() {
        None
    } else {
        let generation = generation_config(config, &weights.config);
        Some(Evaluator::new(
            &data.eval_items,
            &processor,
            &tokenizer,
            &train.prompt,
            generation,
            config.generation.batch_size,
        )?)
    };

    let freeze = if train.freeze_vision {
        FreezeRule::vision_encoder()
    } else {
        FreezeRule::none()
    };
    startup.mark("evaluation set");
    let params = load_master_weights(&weights, &dev, &freeze)?;
    startup.mark("master weights");
    let out_dir = prepare_output_dir(&config.output.dir, options.fresh)?;

    let samples_per_step = (train.batch_size * train.grad_accumulation) as u64;
    let total_steps = total_steps(train, inputs.len());
    let schedule = WarmupCosine::new(
        train.lr,
        train.min_lr,
        train.warmup_steps as u64,
        total_steps,
    )
    .map_err(|err| Error::Usage(format!("train: {err}")))?;
    let mut optimizer = AdamW::new(
        &params,
        AdamWConfig {
            beta1: train.beta1,
            beta2: train.beta2,
            eps: train.eps,
            weight_decay: train.weight_decay,
        },
    );
    let mut scaler = LossScaler::new(ScalerConfig::for_compute_dtype(dtype));
    let settings = resume_settings::record(config, dtype.as_str());
    let checkpoints = CheckpointDir::new(
        out_dir.join(CHECKPOINTS_DIR),
        Retention {
            keep_last: train.keep_last.max(1),
            best: evaluator.as_ref().map(|_| MetricGoal::Higher),
        },
    )
    .map_err(Error::usage)?
    .with_settings(settings.clone());

    let resumed = resume_point(&checkpoints, options.resume, options.fresh)?;
    let state = match &resumed {
        Some(entry) => {
            let loaded = LoadedCheckpoint::load(&entry.dir, &params, &dev).map_err(Error::model)?;
            resume_settings::check(&entry.dir, &loaded.state.settings, &settings)?;
            let progress = loaded
                .restore(&params, &mut optimizer, &mut scaler)
                .map_err(Error::model)?;
            if progress.world_size != 1 {
                return Err(Error::Usage(format!(
                    "{} was written by a run of {} processes; this run has 1 (the data order depends on it)\n  fix: resume with the same world size, or start over with --fresh",
                    entry.dir.display(),
                    progress.world_size
                )));
            }
            tracing::info!(
                "resuming from {} (step {} of {total_steps})",
                entry.dir.display(),
                progress.step
            );
            RunState::from_progress(&progress, inputs.len())
        }
        None => RunState::start(config.seed),
    };
    // After the resume checks, so a refused resume leaves the run's resolved-config.yaml as it was.
    resolved
        .write_next_to(&out_dir)
        .map_err(|source| output_error("the resolved config", &out_dir, source))?;
    let metrics_path = out_dir.join(METRICS_FILE);
    let log =
        MetricsLog::open(&metrics_path, resumed.as_ref().map(|_| state.step)).map_err(|err| {
            Error::Output {
                what: "the metrics log",
                path: metrics_path.clone(),
                source: std::io::Error::other(err.to_string()),
            }
        })?;

    startup.mark("output directory and resume");
    // One-kernel AdamW and gradient norm on CUDA (the composed tensor ops on CPU, or with
    // train.fused_kernels: false); the kernels with a backward pass for every model build.
    let (fused_adamw, train_ops, backprop_ops) = if train.fused_kernels {
        (
            FusedAdamW::for_device(&dev).map_err(internal)?,
            FusedOps::for_training(&dev).map_err(internal)?,
            TrainOps::for_device(&dev).map_err(internal)?,
        )
    } else {
        (
            FusedAdamW::disabled(),
            FusedOps::disabled(),
            TrainOps::composed(),
        )
    };
    let optimizer = optimizer.with_kernels(fused_adamw.clone());
    startup.mark("fused kernels (NVRTC)");
    tracing::info!(
        "training {} of {} parameters ({} pairs, {} per step, {total_steps} steps) in {} on {}",
        params.trainable_elements(),
        params.total_elements(),
        inputs.len(),
        samples_per_step,
        dtype.as_str(),
        device::describe_target(&active.plan.target)
    );
    Ok(Session {
        train,
        last_checkpoint: resumed.as_ref().map(|e| e.dir.clone()),
        active,
        dev,
        dtype,
        model_dir,
        weights,
        tokenizer,
        inputs,
        evaluator,
        params,
        out_dir,
        samples_per_step,
        total_steps,
        schedule,
        optimizer,
        scaler,
        checkpoints,
        state,
        metrics_path,
        log,
        train_ops,
        backprop_ops,
        fused_adamw,
        compute_copy: None,
        startup,
        unreadable,
    })
}

fn internal(err: impl std::fmt::Display) -> Error {
    Error::Internal(format!("preparing the training kernels: {err}"))
}

/// Reads every floating-point tensor of the model's weight files as an f32 `Var` on `dev`.
pub fn load_master_weights(
    weights: &BlipWeights,
    dev: &Device,
    freeze: &FreezeRule,
) -> Result<TrainParams, Error> {
    let mut named = Vec::new();
    for file in &weights.weight_files {
        let tensors = match weights.format {
            WeightFormat::Safetensors => candle_core::safetensors::load(file, dev)
                .map_err(|err| Error::Model(format!("reading {}: {err}", file.display())))?,
            WeightFormat::Pytorch => {
                let mut tensors = std::collections::HashMap::new();
                for (name, tensor) in
                    crate::models::blip::pth::read_checked(file).map_err(Error::model)?
                {
                    let tensor = tensor.to_device(dev).map_err(|err| {
                        Error::Model(format!("{name} in {}: {err}", file.display()))
                    })?;
                    tensors.insert(name, tensor);
                }
                tensors
            }
        };
        for (name, tensor) in tensors {
            if !tensor.dtype().is_float() {
                continue;
            }
            let var = tensor
                .to_dtype(DType::F32)
                .and_then(|t| Var::from_tensor(&t))
                .map_err(|err| Error::Model(format!("{name} in {}: {err}", file.display())))?;
            named.push((name, var));
        }
    }
    TrainParams::from_named(named, freeze).map_err(Error::model)
}
