//! `vlmrun train`: the fine-tuning loop, in four named stages: [`prepare`] (everything checked and
//! set up before the expensive part), [`step`] (one optimizer step), [`evaluate_and_checkpoint`]
//! (at their intervals and at the end) and [`finish`] (the checkpoint of an interrupted run, the
//! summary and the loss plot). Ctrl-C saves a checkpoint and exits 130; a non-finite loss in
//! f32/bf16 stops with the step and the last good checkpoint.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use super::checkpoint::MetricGoal;
use super::data::SampleOrder;
use super::eval::BEST_METRIC;
use super::log::{write_loss_svg, EvalRecord, MetricsRecord, StepRecord};
pub use super::prepare::{load_master_weights, TrainOptions};
use super::prepare::{prepare, Session};
use super::step::{step, Stepped};
use super::workspace::{append, save};
use crate::config::ResolvedConfig;
use crate::device::{self, CudaAvailability, SystemFacts, Target};
use crate::error::Error;
use crate::exit::Exit;
use crate::models::label::{self, ModelKind};
use crate::report::memory::GpuMemoryMonitor;
use crate::report::output::output_error;
use crate::report::progress::Progress as StepProgress;
use crate::report::write_json_atomic;

pub use super::workspace::{CHECKPOINTS_DIR, METRICS_FILE, SUMMARY_FILE};

/// `train-summary.json`.
#[derive(Debug, Serialize)]
pub struct TrainSummary {
    pub schema: &'static str,
    pub steps: u64,
    pub total_steps: u64,
    pub samples_seen: u64,
    pub training_pairs: usize,
    /// The model training started from (its directory), and its label's kind (`models::label`:
    /// `random`, `demo`, or null for an unlabelled model). Checkpoints carry no label.
    pub base_model: PathBuf,
    pub base_model_kind: Option<ModelKind>,
    /// Training images that could not be read; their pairs are not in `training_pairs`.
    pub unreadable_images: usize,
    /// Each of them with the reason.
    pub unreadable: Vec<UnreadableImage>,
    pub precision: String,
    pub device: String,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    /// Median over this invocation's steps (the first, with one-time setup, excluded when there
    /// are others).
    pub samples_per_s: Option<f64>,
    /// Pairs per optimizer step (batch size x gradient accumulation).
    pub samples_per_step: u64,
    pub seconds: f64,
    /// From the start of `train` to the first step.
    pub startup_s: f64,
    /// Where [`TrainSummary::startup_s`] went, in order (seconds per phase).
    pub startup_phases: Vec<(&'static str, f64)>,
    pub skipped_steps: u64,
    pub peak_gpu_bytes: Option<u64>,
    pub best_metric: Option<f64>,
    pub last_checkpoint: Option<PathBuf>,
    pub best_checkpoint: Option<PathBuf>,
    pub interrupted: bool,
}

/// A training image left out of the run.
#[derive(Debug, Serialize)]
pub struct UnreadableImage {
    pub image: PathBuf,
    pub reason: String,
}

/// Runs the training; returns 0, or 130 when interrupted (after saving a checkpoint).
pub fn run(
    resolved: &ResolvedConfig,
    facts: &SystemFacts,
    cuda: &CudaAvailability,
    options: &TrainOptions,
) -> Result<Exit, Error> {
    run_measured(resolved, facts, cuda, options).map(|(exit, _)| exit)
}

/// [`run`], returning the summary written to `train-summary.json` too.
pub fn run_measured(
    resolved: &ResolvedConfig,
    facts: &SystemFacts,
    cuda: &CudaAvailability,
    options: &TrainOptions,
) -> Result<(Exit, TrainSummary), Error> {
    let started = Instant::now();
    let mut session = prepare(resolved, facts, cuda, options, started)?;
    let monitor = match &session.active.plan.target {
        Target::Cuda { index, .. } => Some(GpuMemoryMonitor::start(*index)),
        Target::Cpu => None,
    };
    let mut order = if session.train.shuffle {
        SampleOrder::new(session.inputs.len(), session.state.shuffle_seed)
    } else {
        SampleOrder::sequential(session.inputs.len())
    };
    let mut losses = Losses::default();
    let mut interrupted = false;
    let bar = StepProgress::new(
        session.total_steps,
        session.state.step,
        options.quiet,
        None,
        "steps",
        "{wide_bar} step {pos}/{len}  {msg}  elapsed {elapsed}  ETA {eta}",
        &options.console,
    );
    let run_started = Instant::now();
    let startup_s = started.elapsed().as_secs_f64();
    tracing::info!(
        "first step after {startup_s:.1} s: {}",
        session.startup.describe()
    );

    while session.state.step < session.total_steps {
        if options.interrupted.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let first_step = session.state.step == 0;
        let Stepped {
            loss,
            lr,
            grad_norm,
            loss_scale,
            skipped,
            seconds,
        } = step(
            &mut session,
            &mut order,
            options.dump_grads.as_deref().filter(|_| first_step),
        )
        .inspect_err(|err| {
            if matches!(err, Error::Diverged(_)) {
                bar.finish();
            }
        })?;
        let samples_per_s = session.samples_per_step as f64 / seconds.max(1e-9);
        losses.rates.push(samples_per_s);
        losses.first.get_or_insert(loss);
        losses.last = Some(loss);
        let epoch = order.epoch_of(session.state.samples_seen.saturating_sub(1));
        append(
            &mut session.log,
            &session.metrics_path,
            MetricsRecord::Step(StepRecord {
                step: session.state.step,
                epoch,
                loss,
                lr,
                grad_norm,
                loss_scale,
                skipped,
                samples_per_s,
                elapsed_s: run_started.elapsed().as_secs_f64(),
            }),
        )?;
        bar.update(
            session.state.step,
            &format!("loss {loss:.4}  lr {lr:.2e}  {samples_per_s:.1} samples/s"),
        );
        evaluate_and_checkpoint(&mut session, epoch, &bar, run_started, options.checkpoints)?;
    }
    bar.finish();
    finish(
        session,
        Ending {
            losses,
            interrupted,
            monitor,
            started,
            startup_s,
        },
        options,
    )
}

/// The losses and rates of this invocation's steps.
#[derive(Default)]
struct Losses {
    first: Option<f64>,
    last: Option<f64>,
    /// Samples per second of each step.
    rates: Vec<f64>,
}

/// Evaluates the held-out images and saves a checkpoint when their intervals (or the last step)
/// say so.
fn evaluate_and_checkpoint(
    session: &mut Session,
    epoch: u64,
    bar: &StepProgress,
    run_started: Instant,
    checkpoints_wanted: bool,
) -> Result<(), Error> {
    let Session {
        train,
        dev,
        dtype,
        model_dir,
        weights,
        tokenizer,
        inputs,
        evaluator,
        params,
        total_steps,
        optimizer,
        scaler,
        checkpoints,
        state,
        metrics_path,
        log,
        last_checkpoint,
        ..
    } = session;
    let last = state.step == *total_steps;
    let mut metric = None;
    if let Some(evaluator) = evaluator {
        if last || (train.eval_every > 0 && state.step % train.eval_every as u64 == 0) {
            let values = evaluator
                .evaluate(params, &weights.config, *dtype, dev, tokenizer)?
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
                log,
                metrics_path,
                MetricsRecord::Eval(EvalRecord {
                    step: state.step,
                    epoch,
                    metrics: values,
                    elapsed_s: run_started.elapsed().as_secs_f64(),
                }),
            )?;
        }
    }
    let due =
        last || (train.checkpoint_every > 0 && state.step % train.checkpoint_every as u64 == 0);
    if checkpoints_wanted && due {
        let progress = state.progress(inputs.len(), scaler, metric);
        *last_checkpoint = Some(save(checkpoints, params, optimizer, &progress, model_dir)?);
    }
    Ok(())
}

/// How the loop ended.
struct Ending {
    losses: Losses,
    interrupted: bool,
    monitor: Option<GpuMemoryMonitor>,
    /// When the command started.
    started: Instant,
    /// Seconds from the start to the first step.
    startup_s: f64,
}

/// Saves the checkpoint of an interrupted run, writes `train-summary.json` and the loss plot, and
/// prints the summary line.
fn finish(
    mut session: Session,
    ending: Ending,
    options: &TrainOptions,
) -> Result<(Exit, TrainSummary), Error> {
    let Ending {
        losses,
        interrupted,
        monitor,
        started,
        startup_s,
    } = ending;
    let startup_phases = std::mem::take(&mut session.startup.phases);
    let state = &session.state;
    if interrupted && options.checkpoints {
        let progress = state.progress(session.inputs.len(), &session.scaler, None);
        if session.last_checkpoint.as_deref()
            != Some(session.checkpoints.dir_for(state.step).as_path())
        {
            session.last_checkpoint = Some(save(
                &session.checkpoints,
                &session.params,
                &session.optimizer,
                &progress,
                &session.model_dir,
            )?);
        }
        eprintln!(
            "interrupted at step {} of {}: checkpoint saved; rerun with --resume to continue",
            state.step, session.total_steps
        );
    }

    let best_checkpoint = session
        .checkpoints
        .best(MetricGoal::Higher)
        .ok()
        .flatten()
        .filter(|_| session.evaluator.is_some())
        .map(|e| e.dir);
    let rates = &losses.rates;
    let measured = if rates.len() > 1 {
        &rates[1..]
    } else {
        &rates[..]
    };
    let summary = TrainSummary {
        schema: "vlmrun.train/1",
        steps: state.step,
        total_steps: session.total_steps,
        samples_seen: state.samples_seen,
        training_pairs: session.inputs.len(),
        base_model: session.model_dir.clone(),
        base_model_kind: label::read(&session.model_dir)
            .unwrap_or_else(|err| {
                tracing::warn!("{err}");
                None
            })
            .map(|l| l.kind),
        unreadable_images: session.unreadable.len(),
        unreadable: session
            .unreadable
            .iter()
            .map(|(image, reason)| UnreadableImage {
                image: image.clone(),
                reason: reason.clone(),
            })
            .collect(),
        precision: session.dtype.as_str().to_string(),
        device: device::describe_target(&session.active.plan.target),
        first_loss: losses.first,
        last_loss: losses.last,
        samples_per_s: median(measured),
        samples_per_step: session.samples_per_step,
        seconds: started.elapsed().as_secs_f64(),
        startup_s,
        startup_phases,
        skipped_steps: session.scaler.skipped_steps(),
        peak_gpu_bytes: monitor.and_then(GpuMemoryMonitor::finish),
        best_metric: state.best_metric,
        last_checkpoint: session.last_checkpoint.clone(),
        best_checkpoint,
        interrupted,
    };
    let summary_path = session.out_dir.join(SUMMARY_FILE);
    write_json_atomic(&summary_path, &summary)
        .map_err(|source| output_error("the training summary", &summary_path, source))?;
    let metrics_path = &session.metrics_path;
    if let Some(plot) = &options.plot {
        let records = super::log::read_records(metrics_path)
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
    let exit = if interrupted {
        Exit::Interrupted
    } else {
        Exit::Success
    };
    Ok((exit, summary))
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
    let unreadable = match summary.unreadable_images {
        0 => String::new(),
        n => format!("; {n} unreadable image(s) left out (train-summary.json lists them)"),
    };
    format!(
        "trained {}/{} steps ({} precision): {loss}{rate}{best}{checkpoint}{unreadable}",
        summary.steps, summary.total_steps, summary.precision
    )
}
