//! Where a training run stands and where it writes: the run state a checkpoint records, the number of
//! steps, the output directory (resume or start over), checkpoint saves and metrics lines.

use std::path::{Path, PathBuf};

use super::checkpoint::{CheckpointDir, CheckpointEntry, Progress};
use super::log::{MetricsLog, MetricsRecord};
use super::optim::AdamW;
use super::params::TrainParams;
use super::scaler::LossScaler;
use crate::config::TrainConfig;
use crate::error::Error;
use crate::report::output::{self, output_error};

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CHECKPOINTS_DIR: &str = "checkpoints";
pub const SUMMARY_FILE: &str = "train-summary.json";

/// Where the run stands (what a checkpoint records).
pub struct RunState {
    pub step: u64,
    pub samples_seen: u64,
    pub shuffle_seed: u64,
    pub best_metric: Option<f64>,
}

impl RunState {
    pub fn start(seed: u64) -> Self {
        Self {
            step: 0,
            samples_seen: 0,
            shuffle_seed: seed,
            best_metric: None,
        }
    }

    pub fn from_progress(progress: &Progress, pairs: usize) -> Self {
        Self {
            step: progress.step,
            samples_seen: progress.epoch * pairs as u64 + progress.epoch_position,
            shuffle_seed: progress.shuffle_seed,
            best_metric: progress.best_metric,
        }
    }

    pub fn progress(&self, pairs: usize, scaler: &LossScaler, metric: Option<f64>) -> Progress {
        let pairs = pairs.max(1) as u64;
        Progress {
            step: self.step,
            epoch: self.samples_seen / pairs,
            epoch_position: self.samples_seen % pairs,
            shuffle_seed: self.shuffle_seed,
            scaler: scaler.state(),
            schedule_step: self.step,
            metric,
            best_metric: self.best_metric,
            world_size: 1,
        }
    }
}

/// Optimizer steps of the run: `max_steps`, else enough for `epochs` passes over the pairs.
pub fn total_steps(train: &TrainConfig, pairs: usize) -> u64 {
    let per_step = (train.batch_size * train.grad_accumulation).max(1) as u64;
    match train.max_steps {
        Some(steps) => steps as u64,
        None => (train.epochs as u64 * pairs as u64)
            .div_ceil(per_step)
            .max(1),
    }
}

/// The checkpoint to continue from, per `--resume`/`--fresh` and what the directory holds.
pub fn resume_point(
    checkpoints: &CheckpointDir,
    resume: bool,
    fresh: bool,
) -> Result<Option<CheckpointEntry>, Error> {
    if fresh {
        return Ok(None);
    }
    let latest = checkpoints.latest().map_err(Error::model)?;
    if resume {
        // Never skipped without a word: a newer step directory that lacks a file (a copy cut short,
        // a file deleted by hand) is named, and the resume uses the newest complete one.
        let used = latest.as_ref().map(|entry| entry.step);
        for (step, dir, missing) in checkpoints.incomplete() {
            if used.is_none_or(|used| step > used) {
                tracing::warn!(
                    "--resume: skipping checkpoint {} (step {step}): {} missing; {}",
                    dir.display(),
                    missing.join(", "),
                    match used {
                        Some(used) => format!("resuming from step {used} instead"),
                        None => "no complete checkpoint is left".to_string(),
                    }
                );
            }
        }
    }
    match (latest, resume) {
        (Some(entry), true) => Ok(Some(entry)),
        (Some(entry), false) => Err(Error::Usage(format!(
            "{} holds checkpoints of an earlier run (newest: step {})\n  fix: pass --resume to continue it, or --fresh to delete them and start over",
            checkpoints.root().display(),
            entry.step
        ))),
        (None, true) => {
            tracing::warn!(
                "--resume: no checkpoint in {}; starting from the model",
                checkpoints.root().display()
            );
            Ok(None)
        }
        (None, false) => Ok(None),
    }
}

/// Creates the output directory, checks it is writable (as `baseline` does), and with `fresh`
/// removes what an earlier training run left there: the metrics log, the summary, the checkpoints.
pub fn prepare_output_dir(dir: &Path, fresh: bool) -> Result<PathBuf, Error> {
    let dir = output::prepare_output_dir(dir, fresh, &[METRICS_FILE, SUMMARY_FILE])?;
    let checkpoints = dir.join(CHECKPOINTS_DIR);
    if fresh && checkpoints.exists() {
        std::fs::remove_dir_all(&checkpoints)
            .map_err(|source| output_error("(removing) old checkpoints", &checkpoints, source))?;
    }
    Ok(dir)
}

pub fn save(
    checkpoints: &CheckpointDir,
    params: &TrainParams,
    optimizer: &AdamW,
    progress: &Progress,
    model_dir: &Path,
) -> Result<PathBuf, Error> {
    checkpoints
        .save(params, optimizer, progress, model_dir)
        .map_err(|err| Error::Output {
            what: "a checkpoint",
            path: checkpoints.dir_for(progress.step),
            source: std::io::Error::other(err.to_string()),
        })
}

pub fn append(log: &mut MetricsLog, path: &Path, record: MetricsRecord) -> Result<(), Error> {
    log.append(&record).map_err(|err| Error::Output {
        what: "the metrics log",
        path: path.to_path_buf(),
        source: std::io::Error::other(err.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::scaler::ScalerConfig;
    use candle_core::DType;

    #[test]
    fn total_steps_cover_the_epochs_or_obey_max_steps() {
        let mut train = TrainConfig {
            batch_size: 4,
            grad_accumulation: 2,
            epochs: 3,
            ..TrainConfig::default()
        };
        // 3 epochs x 10 pairs = 30 samples, 8 per step -> 4 steps.
        assert_eq!(total_steps(&train, 10), 4);
        train.max_steps = Some(7);
        assert_eq!(total_steps(&train, 10), 7);
    }

    #[test]
    fn run_state_round_trips_through_progress() {
        let state = RunState {
            step: 5,
            samples_seen: 23,
            shuffle_seed: 9,
            best_metric: Some(0.5),
        };
        let scaler = LossScaler::new(ScalerConfig::for_compute_dtype(DType::F32));
        let progress = state.progress(10, &scaler, None);
        assert_eq!((progress.epoch, progress.epoch_position), (2, 3));
        let back = RunState::from_progress(&progress, 10);
        assert_eq!(back.samples_seen, 23);
        assert_eq!(back.step, 5);
        assert_eq!(back.shuffle_seed, 9);
    }
}
