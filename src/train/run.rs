//! `vlmrun train`: the fine-tuning loop.
//!
//! Order of work, so that every mistake is reported before the expensive part: configuration ->
//! dataset (pairs, held-out images, every image decoded when the set is small) -> device ->
//! model weights as f32 master `Var`s -> output directory (resume or start) -> steps.
//!
//! A step: `grad_accumulation` micro-batches, each building the model in the compute dtype from
//! the master weights (a differentiable cast), forward, label-smoothed loss, backward (loss scaled
//! under f16); then gradients unscaled and checked, clipped by global norm, AdamW at the
//! schedule's learning rate. Evaluation and checkpoints at their intervals and at the end; Ctrl-C
//! saves a checkpoint and exits 130; a non-finite loss in f32/bf16 stops with the step and the
//! last good checkpoint.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use serde::Serialize;

use super::checkpoint::{CheckpointDir, LoadedCheckpoint, MetricGoal, Retention};
use super::data::{SampleOrder, TrainData};
use super::eval::{Evaluator, BEST_METRIC};
use super::grads::ParamGrads;
use super::inputs::InputBuilder;
use super::log::{write_loss_svg, EvalRecord, MetricsLog, MetricsRecord, StepRecord};
use super::loss::caption_loss;
use super::optim::{clip_grad_norm, AdamW, AdamWConfig};
use super::params::{FreezeRule, TrainParams};
use super::scaler::{LossScaler, ScalerConfig};
use super::schedule::WarmupCosine;
use super::workspace::{append, prepare_output_dir, resume_point, save, total_steps, RunState};
use crate::config::{Quantization, ResolvedConfig, TrainConfig};
use crate::data::dataset;
use crate::device::{self, CudaAvailability, SystemFacts, Target};
use crate::engine::{self, generation_config, image_processor};
use crate::error::Error;
use crate::exit::Exit;
use crate::models::blip::{BlipConfig, BlipForConditionalGeneration, BlipWeights};
use crate::report::memory::GpuMemoryMonitor;
use crate::report::output::output_error;
use crate::report::progress::Progress as StepProgress;
use crate::report::write_json_atomic;

pub use super::workspace::{CHECKPOINTS_DIR, METRICS_FILE, SUMMARY_FILE};

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
}

/// `train-summary.json`.
#[derive(Debug, Serialize)]
pub struct TrainSummary {
    pub schema: &'static str,
    pub steps: u64,
    pub total_steps: u64,
    pub samples_seen: u64,
    pub training_pairs: usize,
    pub precision: String,
    pub device: String,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    /// Median over this invocation's steps (the first, with one-time setup, excluded when there
    /// are others).
    pub samples_per_s: Option<f64>,
    pub seconds: f64,
    pub skipped_steps: u64,
    pub peak_gpu_bytes: Option<u64>,
    pub best_metric: Option<f64>,
    pub last_checkpoint: Option<PathBuf>,
    pub best_checkpoint: Option<PathBuf>,
    pub interrupted: bool,
}

/// Runs the training; returns 0, or 130 when interrupted (after saving a checkpoint).
pub fn run(
    resolved: &ResolvedConfig,
    facts: &SystemFacts,
    cuda: &CudaAvailability,
    options: &TrainOptions,
) -> Result<Exit, Error> {
    let started = Instant::now();
    let config = &resolved.config;
    let train = &config.train;
    if config.quantization != Quantization::None {
        return Err(Error::Usage(format!(
            "quantization: {} cannot be trained (AdamW updates dense weights)\n  fix: set quantization: none; quantize the trained checkpoint afterwards",
            config.quantization
        )));
    }
    let items = dataset::load(&config.data).map_err(|err| Error::Input(err.to_string()))?;
    let data =
        TrainData::split(items, train.eval_images).map_err(|err| Error::Input(err.to_string()))?;
    let active = device::activate(config.device, config.precision, facts, cuda)?;
    let (dev, dtype) = (active.device.clone(), active.precision.dtype);

    let engine::Resolved { files, tokenizer } = engine::resolve(config)?;
    let model_dir = files.weights;
    let weights = BlipWeights::locate(&model_dir).map_err(|err| Error::Model(err.to_string()))?;
    let processor = image_processor(config, weights.config.vision_config.image_size);
    let (inputs, unreadable) = InputBuilder::new(
        data.samples,
        &tokenizer,
        &train.prompt,
        train.max_tokens,
        processor.clone(),
    )
    .map_err(|err| Error::Input(err.to_string()))?;
    for (path, why) in &unreadable {
        tracing::warn!("skipping {} in training: {why}", path.display());
    }
    if inputs.is_empty() {
        return Err(Error::Input(format!(
            "no usable training pair: all {} training images failed to load (listed above)\n  fix: check data.path and the image files",
            unreadable.len()
        )));
    }
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
    let params = load_master_weights(&weights, &dev, &freeze)?;
    let out_dir = prepare_output_dir(&config.output.dir, options.fresh)?;
    resolved
        .write_next_to(&out_dir)
        .map_err(|source| output_error("the resolved config", &out_dir, source))?;

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
    let checkpoints = CheckpointDir::new(
        out_dir.join(CHECKPOINTS_DIR),
        Retention {
            keep_last: train.keep_last.max(1),
            best: evaluator.as_ref().map(|_| MetricGoal::Higher),
        },
    )
    .map_err(|err| Error::Usage(err.to_string()))?;

    let resumed = resume_point(&checkpoints, options.resume, options.fresh)?;
    let mut state = match &resumed {
        Some(entry) => {
            let loaded = LoadedCheckpoint::load(&entry.dir, &params, &dev)
                .map_err(|err| Error::Model(err.to_string()))?;
            let progress = loaded
                .restore(&params, &mut optimizer, &mut scaler)
                .map_err(|err| Error::Model(err.to_string()))?;
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
    let metrics_path = out_dir.join(METRICS_FILE);
    let mut log =
        MetricsLog::open(&metrics_path, resumed.as_ref().map(|_| state.step)).map_err(|err| {
            Error::Output {
                what: "the metrics log",
                path: metrics_path.clone(),
                source: std::io::Error::other(err.to_string()),
            }
        })?;

    tracing::info!(
        "training {} of {} parameters ({} pairs, {} per step, {total_steps} steps) in {} on {}",
        params.trainable_elements(),
        params.total_elements(),
        inputs.len(),
        samples_per_step,
        dtype.as_str(),
        device::describe_target(&active.plan.target)
    );
    let monitor = match &active.plan.target {
        Target::Cuda { index, .. } => Some(GpuMemoryMonitor::start(*index)),
        Target::Cpu => None,
    };
    let mut order = SampleOrder::new(inputs.len(), state.shuffle_seed);
    let mut first_loss = None;
    let mut last_loss = None;
    let mut rates = Vec::new();
    let mut last_checkpoint = resumed.as_ref().map(|e| e.dir.clone());
    let mut interrupted = false;
    let bar = StepProgress::new(
        total_steps,
        state.step,
        options.quiet,
        None,
        "steps",
        "{bar:30} step {pos}/{len}  {msg}  ETA {eta}",
    );
    let run_started = Instant::now();

    while state.step < total_steps {
        if options.interrupted.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let step_started = Instant::now();
        let mut loss = 0.0;
        let mut grads: Option<ParamGrads> = None;
        for _ in 0..train.grad_accumulation {
            let indices = order.take(state.samples_seen, train.batch_size);
            state.samples_seen += train.batch_size as u64;
            let (pixels, batch) = inputs
                .batch(&indices, dtype, &dev)
                .map_err(|err| Error::Input(err.to_string()))?;
            let micro = forward_backward(
                &params,
                &weights.config,
                dtype,
                &dev,
                &pixels,
                &batch,
                train,
                &scaler,
            )?;
            loss += micro.loss / train.grad_accumulation as f64;
            match grads.as_mut() {
                None => grads = Some(micro.grads),
                Some(sum) => sum.accumulate(micro.grads).map_err(internal)?,
            }
        }
        let mut grads = grads.ok_or_else(|| Error::Internal("no micro-batch ran".into()))?;
        let lr = schedule.lr_at(state.step);
        let loss_scale = scaler.scale();
        let found_non_finite = if scaler.is_enabled() {
            let found = scaler.unscale(&mut grads).map_err(internal)?;
            scaler.update(found);
            found
        } else {
            !loss.is_finite() || !grads.all_finite().map_err(internal)?
        };
        if found_non_finite && !scaler.is_enabled() {
            bar.finish();
            return Err(Error::Diverged(format!(
                "the loss or its gradients became non-finite at step {} (loss {loss}) in {}\n  last good checkpoint: {}\n  fix: lower train.lr, raise train.warmup_steps, or train in f32; resume from that checkpoint with --resume",
                state.step + 1,
                dtype.as_str(),
                last_checkpoint
                    .as_ref()
                    .map_or("none (no checkpoint was written yet)".to_string(), |p| p.display().to_string())
            )));
        }
        let grad_norm = if found_non_finite {
            f64::NAN
        } else if train.max_grad_norm > 0.0 {
            clip_grad_norm(&mut grads, train.max_grad_norm).map_err(internal)?
        } else {
            grads.total_norm().map_err(internal)?
        };
        if !found_non_finite {
            optimizer.step(&params, &grads, lr).map_err(internal)?;
        }
        drop(grads);
        dev.synchronize().map_err(internal)?;
        state.step += 1;
        let seconds = step_started.elapsed().as_secs_f64();
        let samples_per_s = samples_per_step as f64 / seconds.max(1e-9);
        rates.push(samples_per_s);
        first_loss.get_or_insert(loss);
        last_loss = Some(loss);
        let epoch = order.epoch_of(state.samples_seen.saturating_sub(1));
        append(
            &mut log,
            &metrics_path,
            MetricsRecord::Step(StepRecord {
                step: state.step,
                epoch,
                loss,
                lr,
                grad_norm,
                loss_scale,
                skipped: found_non_finite,
                samples_per_s,
                elapsed_s: run_started.elapsed().as_secs_f64(),
            }),
        )?;
        bar.update(
            state.step,
            &format!("loss {loss:.4}  lr {lr:.2e}  {samples_per_s:.1} samples/s"),
        );

        let last = state.step == total_steps;
        let mut metric = None;
        if let Some(evaluator) = &evaluator {
            if last || (train.eval_every > 0 && state.step % train.eval_every as u64 == 0) {
                let values = evaluator
                    .evaluate(&params, &weights.config, dtype, &dev, &tokenizer)?
                    .metrics;
                metric = values.get(BEST_METRIC).copied();
                if let Some(value) = metric {
                    if MetricGoal::Higher.improves(value, state.best_metric) {
                        state.best_metric = Some(value);
                    }
                }
                bar.println(&format!(
                    "eval at step {}: {}",
                    state.step,
                    values
                        .iter()
                        .map(|(k, v)| format!("{k} {v:.4}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                append(
                    &mut log,
                    &metrics_path,
                    MetricsRecord::Eval(EvalRecord {
                        step: state.step,
                        epoch,
                        metrics: values,
                        elapsed_s: run_started.elapsed().as_secs_f64(),
                    }),
                )?;
            }
        }
        if last || (train.checkpoint_every > 0 && state.step % train.checkpoint_every as u64 == 0) {
            let progress = state.progress(inputs.len(), &scaler, metric);
            last_checkpoint = Some(save(
                &checkpoints,
                &params,
                &optimizer,
                &progress,
                &model_dir,
            )?);
        }
    }
    bar.finish();
    if interrupted {
        let progress = state.progress(inputs.len(), &scaler, None);
        if last_checkpoint.as_deref() != Some(checkpoints.dir_for(state.step).as_path()) {
            last_checkpoint = Some(save(
                &checkpoints,
                &params,
                &optimizer,
                &progress,
                &model_dir,
            )?);
        }
        eprintln!(
            "interrupted at step {} of {total_steps}: checkpoint saved; rerun with --resume to continue",
            state.step
        );
    }

    let best_checkpoint = checkpoints
        .best(MetricGoal::Higher)
        .ok()
        .flatten()
        .filter(|_| evaluator.is_some())
        .map(|e| e.dir);
    let measured = if rates.len() > 1 {
        &rates[1..]
    } else {
        &rates[..]
    };
    let summary = TrainSummary {
        schema: "vlmrun.train/1",
        steps: state.step,
        total_steps,
        samples_seen: state.samples_seen,
        training_pairs: inputs.len(),
        precision: dtype.as_str().to_string(),
        device: device::describe_target(&active.plan.target),
        first_loss,
        last_loss,
        samples_per_s: median(measured),
        seconds: started.elapsed().as_secs_f64(),
        skipped_steps: scaler.skipped_steps(),
        peak_gpu_bytes: monitor.and_then(GpuMemoryMonitor::finish),
        best_metric: state.best_metric,
        last_checkpoint,
        best_checkpoint,
        interrupted,
    };
    let summary_path = out_dir.join(SUMMARY_FILE);
    write_json_atomic(&summary_path, &summary)
        .map_err(|source| output_error("the training summary", &summary_path, source))?;
    if let Some(plot) = &options.plot {
        let records = super::log::read_records(&metrics_path)
            .map_err(|err| Error::Internal(format!("reading {}: {err}", metrics_path.display())))?;
        write_loss_svg(plot, &records, "vlmrun train: loss per step").map_err(|err| {
            output_error(
                "the loss plot",
                plot,
                std::io::Error::other(err.to_string()),
            )
        })?;
    }
    println!("{}", summary_line(&summary));
    Ok(if interrupted {
        Exit::Interrupted
    } else {
        Exit::Success
    })
}

/// What one micro-batch produced.
struct MicroBatch {
    /// Unscaled mean loss.
    loss: f64,
    /// Gradients of `loss * scale / grad_accumulation`.
    grads: ParamGrads,
}

#[allow(clippy::too_many_arguments)]
fn forward_backward(
    params: &TrainParams,
    config: &BlipConfig,
    dtype: DType,
    dev: &Device,
    pixels: &Tensor,
    batch: &super::loss::CaptionBatch,
    train: &TrainConfig,
    scaler: &LossScaler,
) -> Result<MicroBatch, Error> {
    let compute = |what: &'static str| {
        move |err: candle_core::Error| Error::Internal(format!("training step, {what}: {err}"))
    };
    let vb = VarBuilder::from_tensors(params.model_tensors(), dtype, dev);
    let model = BlipForConditionalGeneration::new_differentiable(config, vb)
        .map_err(compute("building the model"))?;
    let logits = model
        .forward(pixels, &batch.input_ids)
        .map_err(compute("forward"))?;
    let loss = caption_loss(&logits, batch, train.label_smoothing).map_err(compute("loss"))?;
    let value = loss
        .to_dtype(DType::F64)
        .and_then(|l| l.to_scalar::<f64>())
        .map_err(compute("reading the loss"))?;
    let scaled = scaler
        .scale_loss(
            &loss
                .affine(1.0 / train.grad_accumulation as f64, 0.0)
                .map_err(compute("loss"))?,
        )
        .map_err(compute("scaling the loss"))?;
    let store = scaled.backward().map_err(compute("backward"))?;
    let grads = ParamGrads::from_store(store, params).map_err(internal)?;
    Ok(MicroBatch { loss: value, grads })
}

/// Reads every floating-point tensor of the model's weight files as an f32 `Var` on `dev`.
pub fn load_master_weights(
    weights: &BlipWeights,
    dev: &Device,
    freeze: &FreezeRule,
) -> Result<TrainParams, Error> {
    let mut named = Vec::new();
    for file in &weights.weight_files {
        let tensors = candle_core::safetensors::load(file, dev)
            .map_err(|err| Error::Model(format!("reading {}: {err}", file.display())))?;
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
    TrainParams::from_named(named, freeze).map_err(|err| Error::Model(err.to_string()))
}

fn internal(err: impl std::fmt::Display) -> Error {
    Error::Internal(format!("training step: {err}"))
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

fn summary_line(summary: &TrainSummary) -> String {
    let loss = match (summary.first_loss, summary.last_loss) {
        (Some(first), Some(last)) => format!("loss {first:.4} -> {last:.4}"),
        _ => "no step run".to_string(),
    };
    let rate = summary
        .samples_per_s
        .map_or(String::new(), |r| format!(", {r:.1} samples/s"));
    let best = summary
        .best_metric
        .map_or(String::new(), |m| format!(", best {BEST_METRIC} {m:.4}"));
    let checkpoint = summary
        .last_checkpoint
        .as_ref()
        .map_or(String::new(), |p| format!("; checkpoint {}", p.display()));
    format!(
        "trained {}/{} steps ({} precision): {loss}{rate}{best}{checkpoint}",
        summary.steps, summary.total_steps, summary.precision
    )
}
