//! One rank of a data-parallel `baseline` (world size > 1): captions its shard of the dataset into
//! `predictions.rank-K.jsonl` / `errors.rank-K.jsonl` (resumable, like the single-process run), records
//! the outcome in `rank-K.done.json`, and, on rank 0, waits for the other ranks and merges.
//!
//! `preprocess.workers: 0` (one per core) becomes the rank's share of the cores.
//!
//! Order: dataset -> shard -> the rank's device -> output directory and `world.json` (a mismatch stops
//! here, touching nothing) -> from here on any error is also written to the rank's done file, so rank 0
//! stops waiting for it -> device check and open -> captioning -> done file -> (rank 0) wait -> merge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::done::{self, RankDone, RankStatus};
use super::wait::{self, Expected, WaitOptions};
use crate::baseline::{
    caption_items, load_dataset, Captioned, OutputFiles, RunOptions, ERRORS_FILE, PREDICTIONS_FILE,
    REPORT_FILE, SETTINGS_FILE,
};
use crate::config::{Config, DeviceSpec, ResolvedConfig};
use crate::data::dataset::Item;
use crate::device::{self, CudaAvailability, SystemFacts, Target};
use crate::distributed::files::{self, RankFiles};
use crate::distributed::world::{self, DatasetIdentity, WorldRecord};
use crate::distributed::{fingerprint, shard, RankInfo};
use crate::error::Error;
use crate::exit::Exit;
use crate::report::lock;
use crate::report::output::prepare_output_dir;
use crate::report::Environment;

/// Everything about this process's place in a data-parallel run.
#[derive(Debug, Clone)]
pub struct RankSetup {
    pub info: RankInfo,
    /// This machine's name (reports, messages).
    pub host: String,
    /// `CUDA_VISIBLE_DEVICES`, which decides the rank's GPU (`distributed::device`).
    pub visible_devices: Option<String>,
    /// How long rank 0 waits for the others after finishing its own shard.
    pub wait_timeout: Duration,
    /// The launch command without rank flags (`distributed::command::launch_command`).
    pub command: Vec<String>,
}

/// Runs rank `setup.info.rank`'s part.
pub fn run(
    resolved: &ResolvedConfig,
    facts: &SystemFacts,
    cuda: &CudaAvailability,
    options: &RunOptions,
    setup: &RankSetup,
) -> Result<Exit, Error> {
    let started = Instant::now();
    let info = &setup.info;
    let items = load_dataset(&resolved.config)?;
    let shard_items = shard::select(&items, info.rank, info.world_size);
    let mut config = resolved.config.clone();
    let cuda_usable = matches!(
        device::plan(DeviceSpec::Auto, facts, cuda).map(|plan| plan.target),
        Ok(Target::Cuda { .. })
    );
    config.device = crate::distributed::device::for_rank(
        config.device,
        info,
        setup.visible_devices.as_deref(),
        cuda_usable,
    )?;
    if config.preprocess.workers == 0 {
        // One per core would oversubscribe the machine N times over with N ranks on it.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        config.preprocess.workers = (cores / info.ranks_on_this_machine()).max(1);
    }
    let dataset = DatasetIdentity {
        items: items.len(),
        fingerprint: fingerprint::dataset(&items),
    };
    let config_fingerprint = fingerprint::config(&config);
    let config_json = serde_json::to_value(&config).map_err(|e| Error::Internal(e.to_string()))?;

    let record = WorldRecord {
        schema: world::SCHEMA.to_string(),
        world_size: info.world_size,
        dataset: dataset.clone(),
        command: setup.command.clone(),
        config: config_json.clone(),
    };
    let (out_dir, _lock) = join_run(&config.output.dir, info, &record, options.fresh)?;
    let rank_files = RankFiles::in_dir(&out_dir, info.rank);

    let label = format!("rank {}/{}", info.rank, info.world_size);
    let mut done_record = RankDone::new(
        info,
        &setup.host,
        dataset.fingerprint.clone(),
        config_fingerprint.clone(),
    );
    done_record.device = config.device.to_string();
    done_record.config = config_json;
    done_record.counts.dataset = shard_items.len();
    let captioned = caption_shard(
        &ShardJob {
            resolved,
            config: &config,
            facts,
            cuda,
            files: &rank_files,
            items: &shard_items,
            label: &label,
        },
        options,
        &mut done_record,
    );
    let (captioned, environment) = match captioned {
        Ok(result) => result,
        Err(err) => {
            done_record.error = Some(err.to_string());
            done_record.timings.total_s = started.elapsed().as_secs_f64();
            done_record.finished_unix_s = done::unix_now();
            if let Err(write_err) = done::write(&rank_files.done, &done_record) {
                tracing::warn!("{write_err}");
            }
            return Err(err);
        }
    };
    done_record.status = if captioned.interrupted {
        RankStatus::Interrupted
    } else if captioned.counts.failed > 0 {
        RankStatus::CompleteWithFailures
    } else {
        RankStatus::Complete
    };
    let mut timings = captioned.timings;
    timings.total_s = started.elapsed().as_secs_f64();
    done_record.timings = (&timings).into();
    done_record.counts = captioned.counts;
    done_record.memory = captioned.memory;
    done_record.device = environment.device.clone();
    done_record.environment = Some(environment);
    done_record.finished_unix_s = done::unix_now();
    done::write(&rank_files.done, &done_record)?;
    if !options.quiet {
        eprintln!(
            "{label}: {} on {} ({}): {} captioned, {} skipped (earlier run), {} failed, {} remaining of {}; {:.2} images/s",
            status_word(done_record.status),
            setup.host,
            done_record.device,
            done_record.counts.done,
            done_record.counts.skipped,
            done_record.counts.failed,
            done_record.counts.remaining,
            done_record.counts.dataset,
            done_record.timings.images_per_s,
        );
    }
    let own_exit = match done_record.status {
        RankStatus::Interrupted => Exit::Interrupted,
        RankStatus::CompleteWithFailures => Exit::CompletedWithFailures,
        _ => Exit::Success,
    };
    if info.rank != 0 {
        if !options.quiet {
            eprintln!(
                "{label}: rank 0 merges the shards (or, once every rank has finished: vlmrun merge --output {})",
                out_dir.display()
            );
        }
        return Ok(own_exit);
    }
    if own_exit == Exit::Interrupted {
        return Ok(own_exit);
    }

    let expected = Expected {
        world_size: info.world_size,
        dataset_fingerprint: dataset.fingerprint,
        config_fingerprint,
    };
    let on_disk = world::read(&out_dir)?.unwrap_or(record);
    wait_and_merge(&RankZero {
        setup,
        dir: &out_dir,
        items: &items,
        config: &config,
        world: &on_disk,
        expected: &expected,
        own: done_record,
        options,
    })
}

/// Creates the output directory, takes this rank's lock (`report::lock::rank`: the directory shared
/// with the other ranks, the rank exclusively) and joins the run recorded there (`world.json`), or,
/// with `fresh`, deletes this rank's earlier files (rank 0: also the merged outputs and ranks beyond
/// the world, unless a live process holds one of them) and starts a new one. Returns the directory and
/// the lock, held until the rank ends.
fn join_run(
    dir: &Path,
    info: &RankInfo,
    record: &WorldRecord,
    fresh: bool,
) -> Result<(PathBuf, lock::DirLock), Error> {
    let out_dir = prepare_output_dir(dir, false, &[])?;
    let held = lock::rank(&out_dir, info.rank)?;
    let rank_files = RankFiles::in_dir(&out_dir, info.rank);
    if !fresh {
        world::claim(&out_dir, record, info.rank, false)?;
        files::remove_if_present(&rank_files.done)?;
        return Ok((out_dir, held));
    }
    // The done file goes first: rank 0 must never pair an old done file with a half-deleted shard.
    for path in [
        &rank_files.done,
        &rank_files.predictions,
        &rank_files.errors,
        &rank_files.settings,
    ] {
        files::remove_if_present(path)?;
    }
    if info.rank == 0 {
        if let Some(&live) = lock::held_ranks(&out_dir)
            .iter()
            .find(|&&rank| rank >= info.world_size)
        {
            return Err(Error::Busy(format!(
                "{} holds rank {live} of another live data-parallel run (this run has world size {}), so --fresh cannot delete its files\n  fix: wait until that run ends, or give this run another output.dir",
                out_dir.display(),
                info.world_size
            )));
        }
        for name in [
            PREDICTIONS_FILE,
            ERRORS_FILE,
            REPORT_FILE,
            SETTINGS_FILE,
            crate::baseline::outputs::RESULTS_FILE,
            crate::baseline::outputs::HTML_FILE,
        ] {
            files::remove_if_present(&out_dir.join(name))?;
        }
        files::remove_ranks_from(&out_dir, info.world_size)?;
    }
    world::claim(&out_dir, record, info.rank, true)?;
    Ok((out_dir, held))
}

/// Rank 0 after its own shard.
struct RankZero<'a> {
    setup: &'a RankSetup,
    dir: &'a Path,
    items: &'a [Item],
    config: &'a Config,
    world: &'a WorldRecord,
    expected: &'a Expected,
    /// Rank 0's own done record.
    own: RankDone,
    options: &'a RunOptions,
}

/// Waits (bounded) for the other ranks' done files, then merges.
fn wait_and_merge(zero: &RankZero) -> Result<Exit, Error> {
    let info = &zero.setup.info;
    let others: Vec<usize> = (1..info.world_size).collect();
    let waited = wait::wait_for(
        zero.dir,
        &others,
        zero.expected,
        &WaitOptions {
            timeout: zero.setup.wait_timeout,
            poll: Duration::from_millis(250),
            quiet: zero.options.quiet,
            interrupted: &zero.options.interrupted,
        },
    );
    if waited.interrupted {
        if !zero.options.quiet {
            eprintln!(
                "rank 0: interrupted while waiting; merge later with: vlmrun merge --output {}",
                zero.dir.display()
            );
        }
        return Ok(Exit::Interrupted);
    }
    let mut stopped: BTreeMap<usize, RankDone> = waited.stopped;
    stopped.insert(0, zero.own.clone());
    super::merged::finish(super::merged::MergeJob {
        dir: zero.dir,
        items: zero.items,
        world: zero.world,
        config: zero.config,
        stopped,
        absent: waited.absent,
        quiet: zero.options.quiet,
    })
}

/// What `caption_shard` works on.
struct ShardJob<'a> {
    resolved: &'a ResolvedConfig,
    /// The rank's configuration (its device).
    config: &'a Config,
    facts: &'a SystemFacts,
    cuda: &'a CudaAvailability,
    files: &'a RankFiles,
    items: &'a [Item],
    label: &'a str,
}

/// Opens the rank's device (recording it in `done_record`), writes its resolved config, and captions its
/// shard (resuming).
fn caption_shard(
    job: &ShardJob,
    options: &RunOptions,
    done_record: &mut RankDone,
) -> Result<(Captioned, Environment), Error> {
    let active = device::activate(job.config.device, job.config.precision, job.facts, job.cuda)?;
    done_record.device = device::describe_target(&active.plan.target);
    let resolved_here = ResolvedConfig {
        config: job.config.clone(),
        ..job.resolved.clone()
    };
    let yaml = resolved_here.to_annotated_yaml()?;
    std::fs::write(&job.files.resolved_config, yaml).map_err(|source| Error::Output {
        what: "the resolved config",
        path: job.files.resolved_config.clone(),
        source,
    })?;
    let output = OutputFiles {
        predictions: job.files.predictions.clone(),
        errors: job.files.errors.clone(),
        settings: job.files.settings.clone(),
    };
    let captioned = caption_items(
        &active,
        job.config,
        job.items,
        &output,
        options,
        Some(job.label),
    )?;
    let environment = crate::report::describe_environment(
        &active,
        job.facts,
        job.cuda,
        job.config,
        captioned.model_dir.clone(),
    );
    Ok((captioned, environment))
}

fn status_word(status: RankStatus) -> &'static str {
    match status {
        RankStatus::Complete => "shard complete",
        RankStatus::CompleteWithFailures => "shard complete with failures",
        RankStatus::Interrupted => "interrupted",
        RankStatus::Failed => "failed",
    }
}
