//! The merged outputs of a data-parallel `baseline`: after rank 0's wait, or `vlmrun merge --output DIR`.
//! Collects the shards (`collect`); when every item is accounted for, writes the usual
//! `predictions.jsonl` and `errors.jsonl` (dataset order) and scores them; always writes `report.json`
//! with per-rank timings and the aggregate images/s. A missing shard is exit 3, naming the ranks and the
//! command that reruns each.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::collect::{collect, Collected};
use super::done::{self, RankDone, RankStatus};
use super::wait::{self, Expected, RankState};
use crate::baseline::report::{
    self, BaselineReport, Counts, DistributedSummary, Memory, MissingShard, ModelUsed, RankEntry,
    RankTimings, Timings,
};
use crate::baseline::{load_dataset, outputs, score, ERRORS_FILE, PREDICTIONS_FILE, REPORT_FILE};
use crate::config::Config;
use crate::data::dataset::Item;
use crate::distributed::command::rerun_line;
use crate::distributed::files::RankFiles;
use crate::distributed::world::{self, DatasetIdentity, WorldRecord};
use crate::distributed::{fingerprint, shard, DistributedError};
use crate::error::Error;
use crate::exit::Exit;
use crate::report::{write_atomic, write_json_atomic, Environment};

/// What to merge.
pub struct MergeJob<'a> {
    pub dir: &'a Path,
    pub items: &'a [Item],
    pub world: &'a WorldRecord,
    /// For the prompt (stripped before scoring) and the report's `config`.
    pub config: &'a Config,
    /// Ranks with a done file of this run.
    pub stopped: BTreeMap<usize, RankDone>,
    /// Ranks without one, and why.
    pub absent: BTreeMap<usize, String>,
    pub quiet: bool,
}

/// `vlmrun merge --output DIR`: merges what the ranks left in `dir`, no waiting.
pub fn merge_directory(dir: &Path, quiet: bool) -> Result<Exit, Error> {
    let record = world::read(dir)?.ok_or_else(|| {
        Error::Input(format!(
            "{} has no {}: it is not the output directory of a data-parallel baseline (or no rank has started there)\n  fix: pass the output.dir the ranks used",
            dir.display(),
            world::WORLD_FILE
        ))
    })?;
    let world_config: Config =
        serde_json::from_value(record.config.clone()).map_err(|err| DistributedError::BadFile {
            path: dir.join(world::WORLD_FILE),
            message: format!("its config does not parse ({err})"),
            fix: "rerun the ranks with --fresh".to_string(),
        })?;
    let items = load_dataset(&world_config)?;
    let dataset = DatasetIdentity {
        items: items.len(),
        fingerprint: fingerprint::dataset(&items),
    };
    world::agrees(dir, &record, record.world_size, &dataset)?;
    // Rank 0's record decides which configuration the merge belongs to; without it, world.json's.
    let rank0 = done::read(&RankFiles::in_dir(dir, 0).done)
        .ok()
        .flatten()
        .filter(|done| {
            done.world_size == record.world_size && done.dataset_fingerprint == dataset.fingerprint
        });
    let config: Config = match &rank0 {
        Some(done) => serde_json::from_value(done.config.clone()).unwrap_or(world_config),
        None => world_config,
    };
    let expected = Expected {
        world_size: record.world_size,
        dataset_fingerprint: dataset.fingerprint.clone(),
        config_fingerprint: rank0
            .map(|done| done.config_fingerprint)
            .unwrap_or_else(|| fingerprint::config(&config)),
    };
    let mut stopped = BTreeMap::new();
    let mut absent = BTreeMap::new();
    for rank in 0..record.world_size {
        match wait::state(dir, rank, &expected) {
            RankState::Stopped(done) => {
                stopped.insert(rank, *done);
            }
            RankState::Running => {
                absent.insert(rank, format!("no rank-{rank}.done.json"));
            }
            RankState::Stale(why) => {
                absent.insert(rank, why);
            }
        }
    }
    finish(MergeJob {
        dir,
        items: &items,
        world: &record,
        config: &config,
        stopped,
        absent,
        quiet,
    })
}

/// Merges, writes the outputs and the report, prints the summary; exit 3 when a shard is missing.
pub fn finish(job: MergeJob) -> Result<Exit, Error> {
    let world_size = job.world.world_size;
    let mut reasons: BTreeMap<usize, String> = job.absent.clone();
    for (rank, done) in &job.stopped {
        let reason = match done.status {
            RankStatus::Interrupted => "interrupted (Ctrl-C)".to_string(),
            RankStatus::Failed => format!(
                "failed: {}",
                done.error
                    .as_deref()
                    .and_then(|error| error.lines().next())
                    .unwrap_or("no error recorded")
            ),
            _ => format!(
                "its done file says {}, but items are missing from predictions.rank-{rank}.jsonl",
                status_name(done.status)
            ),
        };
        reasons.insert(*rank, reason);
    }
    let collected = collect(job.dir, job.items, world_size, &reasons)?;
    if collected.torn_bytes > 0 {
        tracing::warn!(
            "skipped {} bytes of unfinished last lines in the rank files (a rank still running or killed mid-write)",
            collected.torn_bytes
        );
    }
    let complete = collected.is_complete();
    let summary = summarize(&job, &collected);
    let done_now: usize = job.stopped.values().map(|done| done.counts.done).sum();
    let remaining: usize = collected.missing.iter().map(|m| m.missing).sum();
    let counts = Counts {
        dataset: job.items.len(),
        done: done_now,
        skipped: collected.predictions.len().saturating_sub(done_now),
        failed: collected.failures.len(),
        remaining,
    };
    let timings = merged_timings(&job.stopped, &summary);
    let memory = Memory {
        peak_gpu_bytes: job
            .stopped
            .values()
            .filter_map(|d| d.memory.peak_gpu_bytes)
            .max(),
        peak_host_rss_bytes: job
            .stopped
            .values()
            .filter_map(|d| d.memory.peak_host_rss_bytes)
            .max(),
    };
    let metrics = if complete {
        write_lines(
            &job.dir.join(PREDICTIONS_FILE),
            &collected.predictions,
            "the merged predictions",
        )?;
        write_lines(
            &job.dir.join(ERRORS_FILE),
            &collected.failures,
            "the merged errors",
        )?;
        outputs::write_results(
            job.dir,
            &collected.predictions,
            &job.config.generation.prompt,
        )?;
        score(
            job.items,
            &collected.predictions,
            &job.config.generation.prompt,
        )?
    } else {
        None
    };
    let status = if !complete {
        "incomplete"
    } else if counts.failed > 0 {
        "complete_with_failures"
    } else {
        "complete"
    };
    let environment = job
        .stopped
        .values()
        .find_map(|done| done.environment.clone())
        .unwrap_or_else(|| unknown_environment(job.config));
    let model = ModelUsed::describe(&job.config.model.source, environment.model_dir.as_deref());
    let report = BaselineReport {
        schema: report::SCHEMA.to_string(),
        status: status.to_string(),
        environment,
        model,
        timings,
        memory,
        counts,
        metrics,
        config: serde_json::to_value(job.config).map_err(|e| Error::Internal(e.to_string()))?,
        distributed: Some(summary),
    };
    let report_path = job.dir.join(REPORT_FILE);
    write_json_atomic(&report_path, &report).map_err(|source| Error::Output {
        what: "the report",
        path: report_path.clone(),
        source,
    })?;
    outputs::write_html(
        &report,
        &outputs::HtmlInputs {
            dir: job.dir,
            items: job.items,
            predictions: &collected.predictions,
            failures: &collected.failures,
            prompt: &job.config.generation.prompt,
            max_pixels: job.config.preprocess.max_pixels,
        },
    )?;
    if !job.quiet {
        eprint!("{}", report.summary());
        eprintln!("  results in {}", job.dir.display());
    }
    if !complete {
        // Always said, even with --quiet: this is the error of the run.
        eprintln!(
            "{}",
            missing_message(job.dir, job.world, &collected.missing)
        );
        return Ok(Exit::CompletedWithFailures);
    }
    Ok(if crate::baseline::every_item_failed(&report.counts) {
        eprintln!(
            "{}",
            crate::baseline::all_failed_message(&report.counts, &job.dir.join(ERRORS_FILE))
        );
        Exit::Input
    } else if report.counts.failed > 0 {
        Exit::CompletedWithFailures
    } else {
        Exit::Success
    })
}

fn summarize(job: &MergeJob, collected: &Collected) -> DistributedSummary {
    let world_size = job.world.world_size;
    let ranks: Vec<RankEntry> = (0..world_size)
        .map(|rank| {
            let shard_items = shard::len(job.items.len(), rank, world_size);
            match job.stopped.get(&rank) {
                Some(done) => RankEntry {
                    rank,
                    shard_items,
                    status: status_name(done.status).to_string(),
                    note: done.error.clone(),
                    host: Some(done.host.clone()),
                    device: Some(done.device.clone()),
                    counts: Some(done.counts.clone()),
                    timings: Some(done.timings.clone()),
                    memory: Some(done.memory.clone()),
                },
                None => RankEntry {
                    rank,
                    shard_items,
                    status: "no_done_file".to_string(),
                    note: job.absent.get(&rank).cloned(),
                    host: None,
                    device: None,
                    counts: None,
                    timings: None,
                    memory: None,
                },
            }
        })
        .collect();
    let slowest_rank_run_s = job
        .stopped
        .values()
        .map(|done| done.timings.run_s)
        .fold(0.0, f64::max);
    let done_now: usize = job.stopped.values().map(|done| done.counts.done).sum();
    let aggregate_images_per_s = if slowest_rank_run_s > 0.0 {
        done_now as f64 / slowest_rank_run_s
    } else {
        0.0
    };
    let first_start = job
        .stopped
        .values()
        .map(|d| d.started_unix_s)
        .fold(f64::INFINITY, f64::min);
    let last_finish = job
        .stopped
        .values()
        .map(|d| d.finished_unix_s)
        .fold(0.0, f64::max);
    DistributedSummary {
        world_size,
        aggregate_images_per_s,
        slowest_rank_run_s,
        span_s: (first_start.is_finite() && last_finish >= first_start)
            .then_some(last_finish - first_start),
        ranks,
        missing: collected.missing.clone(),
        duplicates: collected.duplicates,
        foreign: collected.foreign,
    }
}

/// The ranks' timings as one run: the slowest rank's phases, throughputs added up. Per-batch latency
/// percentiles stay per rank (in `distributed.ranks`).
fn merged_timings(stopped: &BTreeMap<usize, RankDone>, summary: &DistributedSummary) -> Timings {
    let max_of = |get: fn(&RankTimings) -> Option<f64>| {
        stopped
            .values()
            .filter_map(|d| get(&d.timings))
            .reduce(f64::max)
    };
    Timings {
        model_load_s: max_of(|t| t.model_load_s),
        warmup_s: max_of(|t| t.warmup_s),
        run_s: summary.slowest_rank_run_s,
        total_s: max_of(|t| Some(t.total_s)).unwrap_or(0.0),
        images_per_s: summary.aggregate_images_per_s,
        generation_images_per_s: stopped
            .values()
            .map(|d| d.timings.generation_images_per_s)
            .sum(),
        batch_latency_ms: None,
        preprocess_batch_ms: None,
        generated_tokens_per_s: stopped
            .values()
            .map(|d| d.timings.generated_tokens_per_s)
            .sum(),
    }
}

fn status_name(status: RankStatus) -> &'static str {
    match status {
        RankStatus::Complete => "complete",
        RankStatus::CompleteWithFailures => "complete_with_failures",
        RankStatus::Interrupted => "interrupted",
        RankStatus::Failed => "failed",
    }
}

/// The error text for missing shards: which ranks, why, and the commands that finish the run.
fn missing_message(dir: &Path, world: &WorldRecord, missing: &[MissingShard]) -> String {
    let mut text = format!(
        "error: {} of {} shards incomplete in {}:\n",
        missing.len(),
        world.world_size,
        dir.display()
    );
    for shard in missing {
        text.push_str(&format!(
            "  rank {}: {} of {} items missing ({})\n",
            shard.rank, shard.missing, shard.shard, shard.reason
        ));
    }
    text.push_str(
        "  fix: rerun the missing rank(s) with the same configuration (each resumes its shard):\n",
    );
    for shard in missing {
        text.push_str(&format!(
            "    {}\n",
            rerun_line(&world.command, shard.rank, world.world_size)
        ));
    }
    text.push_str(&format!(
        "  then merge: vlmrun merge --output {}",
        crate::distributed::command::shell_quote(&dir.display().to_string())
    ));
    text
}

/// Writes records as JSONL, atomically.
fn write_lines<T: Serialize>(path: &Path, records: &[T], what: &'static str) -> Result<(), Error> {
    let mut bytes = Vec::new();
    for record in records {
        serde_json::to_writer(&mut bytes, record).map_err(|e| Error::Internal(e.to_string()))?;
        bytes.push(b'\n');
    }
    write_atomic(path, &bytes).map_err(|source| Error::Output {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The environment block when no rank left a done file (nothing is known about the devices).
fn unknown_environment(config: &Config) -> Environment {
    Environment {
        device: "unknown (no rank done file)".to_string(),
        device_name: "unknown".to_string(),
        driver: None,
        driver_cuda: None,
        cuda_build: None,
        compute_capability: None,
        precision: config.precision.to_string(),
        quantization: config.quantization.to_string(),
        vlmrun_version: crate::device::build_info::VERSION.to_string(),
        git_rev: crate::device::build_info::GIT_REV.to_string(),
        framework: "candle".to_string(),
        cpu_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        model_dir: None,
    }
}
