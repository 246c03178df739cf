//! `vlmrun baseline`: the run_baseline.py equivalent. Dataset in; `predictions.jsonl`, `errors.jsonl`,
//! COCO caption metrics, `report.json` and a summary out; resumable after a crash or Ctrl-C.
//!
//! Order of work, so that every mistake is reported before the expensive part: configuration -> dataset
//! (every file and line checked) -> device (opened and smoke-tested by `device::activate`, as in every
//! job) -> output directory writable -> model load (timed) -> warm-up -> batches (preprocessing on
//! worker threads, a few batches ahead of the device) -> metrics -> report.
//!
//! With world size > 1 (`--rank/--world-size` or a launcher's variables) the process is one rank of a
//! data-parallel run: `shards::ranked` captions its shard into per-rank files, `shards::merged` puts
//! the shards together (docs/scaling.md). World size 1 is the single-process run above, unchanged.

pub mod outputs;
pub mod pipeline;
pub mod report;
pub mod resume;
pub mod retrieval;
pub mod shards;
pub mod vqa;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, ResolvedConfig};
use crate::data::dataset;
use crate::data::predictions::{self, JsonlAppender, Prediction};
use crate::device::{self, ActiveDevice, CudaAvailability, SystemFacts, Target};
use crate::distributed::{files, world};
use crate::engine::Captioner;
use crate::error::Error;
use crate::exit::Exit;
use crate::metrics;
use crate::report::memory;
use crate::report::output::{lock_output_dir, output_error, prepare_output_dir};
use crate::report::progress::Progress;
use crate::report::{write_json_atomic, Percentiles};
use report::{BaselineReport, Counts, Memory, ModelUsed, Timings};

pub const PREDICTIONS_FILE: &str = "predictions.jsonl";
pub const ERRORS_FILE: &str = "errors.jsonl";
pub const REPORT_FILE: &str = "report.json";
/// The settings that made `predictions.jsonl` (`resume`).
pub const SETTINGS_FILE: &str = "settings.json";

/// Options that are not configuration (they do not change what a run computes).
pub struct RunOptions {
    /// Delete earlier results in the output directory and start over.
    pub fresh: bool,
    /// Set by the Ctrl-C handler; checked between batches.
    pub interrupted: Arc<AtomicBool>,
    /// Progress output: a bar on a terminal, periodic lines otherwise, nothing when quiet.
    pub quiet: bool,
    /// This process's rank in a data-parallel run; `None` (or world size 1) is a single process.
    pub distributed: Option<shards::ranked::RankSetup>,
    /// stderr as the logger shares it: the progress bar attaches to it.
    pub console: crate::report::console::Console,
}

/// Runs the baseline; returns the exit status (0, 3 completed with failures or a shard missing,
/// 130 interrupted). With world size > 1 this process captions its shard (`shards::ranked`).
pub fn run(
    resolved: &ResolvedConfig,
    facts: &SystemFacts,
    cuda: &CudaAvailability,
    options: &RunOptions,
) -> Result<Exit, Error> {
    let task = resolved.config.task;
    if task != crate::config::Task::Caption {
        if let Some(setup) = options
            .distributed
            .as_ref()
            .filter(|s| s.info.world_size > 1)
        {
            let why = match task {
                crate::config::Task::Retrieval => "(its ITC top-k ranks every image against every text, so a shard is not independent)",
                _ => "(sharding its questions is not built yet)",
            };
            return Err(Error::Usage(format!(
                "task: {task} runs in one process {why}; this is rank {} of {}\n  fix: run it without --rank/--world-size (or the launcher's RANK/WORLD_SIZE), or use task: caption",
                setup.info.rank, setup.info.world_size
            )));
        }
    }
    match task {
        crate::config::Task::Vqa => return vqa::run(resolved, facts, cuda, options),
        crate::config::Task::Retrieval => return retrieval::run(resolved, facts, cuda, options),
        crate::config::Task::Caption => {}
    }
    match &options.distributed {
        Some(setup) if setup.info.world_size > 1 => {
            shards::ranked::run(resolved, facts, cuda, options, setup)
        }
        _ => run_single(resolved, facts, cuda, options),
    }
}

fn run_single(
    resolved: &ResolvedConfig,
    facts: &SystemFacts,
    cuda: &CudaAvailability,
    options: &RunOptions,
) -> Result<Exit, Error> {
    let started = Instant::now();
    let config = &resolved.config;
    let items = load_dataset(config)?;
    let active = device::activate(config.device, config.precision, facts, cuda)?;

    // Held until this function returns: no other run writes here meanwhile, and `--fresh` below never
    // deletes a file another live run appends to.
    let _lock = lock_output_dir(&config.output.dir)?;
    let out_dir = prepare_output_dir(
        &config.output.dir,
        options.fresh,
        &[
            PREDICTIONS_FILE,
            ERRORS_FILE,
            REPORT_FILE,
            SETTINGS_FILE,
            outputs::RESULTS_FILE,
            outputs::HTML_FILE,
        ],
    )?;
    if options.fresh {
        // Leftovers of a data-parallel run in the same directory go too.
        files::remove_if_present(&out_dir.join(world::WORLD_FILE))?;
        files::remove_ranks_from(&out_dir, 0)?;
    } else {
        world::check_single_process(&out_dir)?;
    }
    resolved
        .write_next_to(&out_dir)
        .map_err(|source| output_error("the resolved config", &out_dir, source))?;
    let files = OutputFiles {
        predictions: out_dir.join(PREDICTIONS_FILE),
        errors: out_dir.join(ERRORS_FILE),
        settings: out_dir.join(SETTINGS_FILE),
    };
    let captioned = caption_items(&active, config, &items, &files, options, None)?;
    let Captioned {
        counts,
        mut timings,
        memory,
        model_dir,
        interrupted,
        predictions: all_predictions,
    } = captioned;
    let scores = score(&items, &all_predictions, &config.generation.prompt)?;
    timings.total_s = started.elapsed().as_secs_f64();
    let status = if interrupted || counts.remaining > 0 {
        "interrupted"
    } else if counts.failed > 0 {
        "complete_with_failures"
    } else {
        "complete"
    };
    let model = ModelUsed::describe(&config.model.source, model_dir.as_deref());
    let report = BaselineReport {
        schema: report::SCHEMA.to_string(),
        status: status.to_string(),
        environment: crate::report::describe_environment(&active, facts, cuda, config, model_dir),
        model,
        timings,
        memory,
        counts,
        metrics: scores,
        config: serde_json::to_value(config).map_err(|e| Error::Internal(e.to_string()))?,
        distributed: None,
    };
    outputs::write_results(&out_dir, &all_predictions, &config.generation.prompt)?;
    let report_path = out_dir.join(REPORT_FILE);
    write_json_atomic(&report_path, &report)
        .map_err(|source| output_error("the report", &report_path, source))?;
    // errors.jsonl holds this run's failures (it was started over by caption_all).
    let failures = predictions::read_jsonl::<predictions::Failure>(&files.errors)
        .map(|read| read.records)
        .unwrap_or_default();
    outputs::write_html(
        &report,
        &outputs::HtmlInputs {
            dir: &out_dir,
            items: &items,
            predictions: &all_predictions,
            failures: &failures,
            prompt: &config.generation.prompt,
            max_pixels: config.preprocess.max_pixels,
        },
    )?;
    if !options.quiet {
        eprint!("{}", report.summary());
        eprintln!("  results in {}", out_dir.display());
    }
    Ok(if interrupted {
        Exit::Interrupted
    } else if every_item_failed(&report.counts) {
        // Always said, even with --quiet: this is the error of the run.
        eprintln!("{}", all_failed_message(&report.counts, &files.errors));
        Exit::Input
    } else if report.counts.failed > 0 {
        Exit::CompletedWithFailures
    } else {
        Exit::Success
    })
}

/// Whether no item of the dataset has a caption and some failed: no usable input (exit 5), not a run
/// that completed with a few failures (exit 3).
pub fn every_item_failed(counts: &Counts) -> bool {
    counts.failed > 0 && counts.done == 0 && counts.skipped == 0 && counts.remaining == 0
}

/// The error line of a run in which every image failed.
pub fn all_failed_message(counts: &Counts, errors: &Path) -> String {
    format!(
        "error: all {} image(s) failed, none was captioned (each reason is in {})\n  fix: check data.path and the images' format (PNG, JPEG or WebP)",
        counts.failed,
        errors.display()
    )
}

/// Reads the configured dataset (every file and line checked).
fn load_dataset(config: &Config) -> Result<Vec<dataset::Item>, Error> {
    dataset::load(&config.data).map_err(Error::input)
}

/// Where one process appends its results.
pub struct OutputFiles {
    pub predictions: PathBuf,
    pub errors: PathBuf,
    /// The settings that made the predictions (`resume`).
    pub settings: PathBuf,
}

/// What captioning a list of items left: the report's counts, timings and memory (total_s not set),
/// and every prediction (earlier runs' first, then this run's).
struct Captioned {
    counts: Counts,
    timings: Timings,
    memory: Memory,
    model_dir: Option<String>,
    interrupted: bool,
    predictions: Vec<Prediction>,
}

/// Captions the items not yet in `files.predictions` (resuming an earlier run made with the same
/// settings, redoing images that changed since: `resume`): model load, warm-up, batches. `label`
/// prefixes progress lines (a rank's name when several processes share a terminal).
fn caption_items(
    active: &ActiveDevice,
    config: &Config,
    items: &[dataset::Item],
    files: &OutputFiles,
    options: &RunOptions,
    label: Option<&str>,
) -> Result<Captioned, Error> {
    let predictions_path = &files.predictions;
    let mut resumed = predictions::recover(predictions_path).map_err(|err| Error::Output {
        what: "predictions",
        path: predictions_path.clone(),
        source: std::io::Error::other(err.to_string()),
    })?;
    if resumed.dropped_torn_bytes > 0 {
        tracing::warn!(
            "dropped a torn last line ({} bytes) from {}: that image is captioned again",
            resumed.dropped_torn_bytes,
            predictions_path.display()
        );
    }
    let settings = resume::current_settings(config, active)?;
    resume::check_settings(
        &files.settings,
        predictions_path,
        resumed.predictions.len(),
        &settings,
    )?;
    let changed = resume::drop_changed_images(items, &mut resumed, predictions_path)?;
    if changed > 0 {
        tracing::warn!(
            "{changed} image(s) changed (size or modification time) since they were captioned in {}: captioned again",
            predictions_path.display()
        );
    }
    let done_ids = resumed.done_ids();
    let pending: Vec<dataset::Item> = items
        .iter()
        .filter(|item| !done_ids.contains(&item.id))
        .cloned()
        .collect();
    let skipped = items.len() - pending.len();
    if skipped > 0 && !options.quiet {
        eprintln!(
            "{}resuming: {skipped} of {} images already in {}",
            label.map(|l| format!("{l}: ")).unwrap_or_default(),
            items.len(),
            predictions_path.display()
        );
    }

    let mut captioned = Captioned {
        counts: Counts {
            dataset: items.len(),
            skipped,
            ..Counts::default()
        },
        timings: Timings::default(),
        memory: Memory::default(),
        model_dir: None,
        interrupted: false,
        predictions: Vec::new(),
    };
    let mut new_predictions = Vec::new();
    // An interrupt (Ctrl-C, SIGTERM) during the dataset check, the model load or the warm-up stops
    // before the next phase: the run is "interrupted" with every pending item remaining.
    let stop = || options.interrupted.load(Ordering::Relaxed);
    let interrupted_before_batches = |captioned: &mut Captioned| {
        captioned.interrupted = true;
        captioned.counts.remaining = pending.len();
        if !options.quiet {
            eprintln!(
                "{}interrupted before the first batch: {} images remaining; rerun the same command to resume",
                label.map(|l| format!("{l}: ")).unwrap_or_default(),
                pending.len()
            );
        }
    };
    if !pending.is_empty() && stop() {
        interrupted_before_batches(&mut captioned);
    } else if !pending.is_empty() {
        let gpu_monitor = match &active.plan.target {
            Target::Cuda { index, .. } => Some(memory::GpuMemoryMonitor::start(*index)),
            Target::Cpu => None,
        };
        let captioner = Captioner::load(config, active)?;
        captioned.timings.model_load_s = Some(captioner.load_seconds);
        captioned.model_dir = Some(captioner.model_dir().display().to_string());
        if !stop() {
            captioned.timings.warmup_s = Some(warm_up(
                &captioner,
                config.generation.batch_size.min(pending.len()),
            )?);
        }
        if stop() {
            interrupted_before_batches(&mut captioned);
            captioned.memory.peak_gpu_bytes =
                gpu_monitor.and_then(memory::GpuMemoryMonitor::finish);
            return Ok(finish(captioned, resumed.predictions, Vec::new()));
        }
        let counts = &mut captioned.counts;
        let timings = &mut captioned.timings;
        let outcome = caption_all(&captioner, pending, files, config, options, label)?;
        counts.done = outcome.predictions.len();
        counts.failed = outcome.failed;
        counts.remaining = outcome.remaining;
        captioned.interrupted = outcome.interrupted;
        timings.run_s = outcome.run_s;
        timings.images_per_s = if outcome.run_s > 0.0 {
            counts.done as f64 / outcome.run_s
        } else {
            0.0
        };
        let generate_s: f64 = outcome.batch_latency_ms.iter().sum::<f64>() / 1e3;
        let generated_tokens: usize = outcome
            .predictions
            .iter()
            .map(|p| p.token_ids.len().saturating_sub(captioner.prompt_len()))
            .sum();
        timings.generation_images_per_s = if generate_s > 0.0 {
            counts.done as f64 / generate_s
        } else {
            0.0
        };
        timings.generated_tokens_per_s = if generate_s > 0.0 {
            generated_tokens as f64 / generate_s
        } else {
            0.0
        };
        timings.batch_latency_ms = Percentiles::of(&outcome.batch_latency_ms);
        timings.preprocess_batch_ms = Percentiles::of(&outcome.preprocess_ms);
        captioned.memory.peak_gpu_bytes = gpu_monitor.and_then(memory::GpuMemoryMonitor::finish);
        new_predictions = outcome.predictions;
    }
    Ok(finish(captioned, resumed.predictions, new_predictions))
}

/// `captioned` with the host memory and every prediction (earlier runs' first).
fn finish(mut captioned: Captioned, earlier: Vec<Prediction>, new: Vec<Prediction>) -> Captioned {
    captioned.memory.peak_host_rss_bytes = memory::peak_rss_bytes();
    captioned.predictions = earlier.into_iter().chain(new).collect();
    captioned
}

/// Runs one batch of a flat gray image so kernel compilation, cuBLAS handles and allocator growth stay
/// out of the timings. Returns its seconds.
fn warm_up(captioner: &Captioner, batch: usize) -> Result<f64, Error> {
    let started = Instant::now();
    let size = captioner.image_size();
    let image = image::RgbImage::from_pixel(size as u32, size as u32, image::Rgb([128, 128, 128]));
    let pixels = captioner.processor().process_rgb(&image);
    let batch = vec![pixels; batch.max(1)];
    captioner.caption_pixels(&batch)?;
    Ok(started.elapsed().as_secs_f64())
}

struct Outcome {
    predictions: Vec<Prediction>,
    failed: usize,
    remaining: usize,
    interrupted: bool,
    run_s: f64,
    batch_latency_ms: Vec<f64>,
    preprocess_ms: Vec<f64>,
}

fn caption_all(
    captioner: &Captioner,
    pending: Vec<dataset::Item>,
    files: &OutputFiles,
    config: &Config,
    options: &RunOptions,
    label: Option<&str>,
) -> Result<Outcome, Error> {
    let total = pending.len();
    let workers = match config.preprocess.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let predictions_path = files.predictions.clone();
    let errors_path = files.errors.clone();
    let as_output = |path: &Path| {
        let path = path.to_path_buf();
        move |err: predictions::PredictionsError| Error::Output {
            what: "results",
            path: path.clone(),
            source: std::io::Error::other(err.to_string()),
        }
    };
    let mut predictions_log =
        JsonlAppender::open(&predictions_path).map_err(as_output(&predictions_path))?;
    // errors.jsonl describes the latest run: images that failed before are retried.
    let _ = std::fs::remove_file(&errors_path);
    let mut errors_log = JsonlAppender::open(&errors_path).map_err(as_output(&errors_path))?;

    let (batches, producer) = pipeline::spawn(
        pending,
        config.generation.batch_size,
        captioner.processor().clone(),
        workers,
        options.interrupted.clone(),
    )
    .map_err(|err| Error::Internal(format!("starting preprocessing threads: {err}")))?;
    let progress = Progress::new(
        total as u64,
        0,
        options.quiet,
        label,
        "images",
        "{wide_bar} {pos}/{len} images  {msg}  elapsed {elapsed}  ETA {eta}",
        &options.console,
    );
    let started = Instant::now();
    let mut outcome = Outcome {
        predictions: Vec::new(),
        failed: 0,
        remaining: 0,
        interrupted: false,
        run_s: 0.0,
        batch_latency_ms: Vec::new(),
        preprocess_ms: Vec::new(),
    };
    let mut handled = 0usize;
    for batch in batches.iter() {
        if !batch.failures.is_empty() {
            for failure in &batch.failures {
                tracing::warn!("{}", failure.error);
            }
            errors_log
                .append(&batch.failures)
                .map_err(as_output(&errors_path))?;
            outcome.failed += batch.failures.len();
        }
        if !batch.pixels.is_empty() {
            let generation_started = Instant::now();
            let captions =
                captioner.caption_batch(&batch.pixels, &batch_label(&batch.items, batch.index))?;
            let latency_ms = generation_started.elapsed().as_secs_f64() * 1e3;
            let records: Vec<Prediction> = batch
                .items
                .iter()
                .zip(&batch.stamps)
                .zip(captions)
                .map(|((item, stamp), caption)| Prediction {
                    id: item.id.clone(),
                    image: item.image_as_given.clone(),
                    caption: caption.text,
                    token_ids: caption.token_ids,
                    batch: batch.index,
                    latency_ms,
                    image_stamp: stamp.clone(),
                    prompt: Some(config.generation.prompt.clone()),
                })
                .collect();
            predictions_log
                .append(&records)
                .map_err(as_output(&predictions_path))?;
            outcome.batch_latency_ms.push(latency_ms);
            outcome.predictions.extend(records);
        }
        outcome.preprocess_ms.push(batch.preprocess_ms);
        handled += batch.items.len() + batch.failures.len();
        progress.update(handled as u64, "");
        if options.interrupted.load(Ordering::Relaxed) {
            outcome.interrupted = true;
            break;
        }
    }
    drop(batches);
    let _ = producer.join();
    progress.finish();
    outcome.remaining = total - handled;
    // The preprocessing thread also stops on the flag: batches it never sent are remaining, and the
    // run is interrupted, never "complete" with items left.
    if outcome.remaining > 0 {
        outcome.interrupted = true;
    }
    outcome.run_s = started.elapsed().as_secs_f64();
    if outcome.interrupted && !options.quiet {
        eprintln!(
            "interrupted: {} images done and saved, {} remaining; rerun the same command to resume",
            handled, outcome.remaining
        );
    }
    Ok(outcome)
}

/// A batch as messages name it: its index and its first ids (`3 (ids a, b, c and 5 more)`).
fn batch_label(items: &[dataset::Item], index: usize) -> String {
    const SHOWN: usize = 3;
    let ids: Vec<&str> = items
        .iter()
        .take(SHOWN)
        .map(|item| item.id.as_str())
        .collect();
    let more = match items.len().saturating_sub(SHOWN) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!("{index} (ids {}{more})", ids.join(", "))
}

/// COCO metrics over every prediction whose item has references (`None` when none has), the prompt
/// stripped as LAVIS does.
pub(crate) fn score(
    items: &[dataset::Item],
    predictions: &[Prediction],
    prompt: &str,
) -> Result<Option<metrics::Scores>, Error> {
    let captions = predictions
        .iter()
        .map(|p| (p.id.as_str(), p.caption.as_str()));
    match metrics::score_captions(captions, &dataset::references(items), prompt) {
        Ok(scores) => Ok(Some(scores)),
        Err(metrics::MetricsError::Empty) => Ok(None),
        Err(err) => Err(Error::Internal(format!("metrics: {err}"))),
    }
}
