//! Training checkpoints: one directory per save, `step-00000123/`, holding
//!
//! - `model.safetensors`: every parameter (trainable and frozen) in f32 under its Hugging Face name,
//!   plus `config.json` and `tokenizer.json` copied from the model directory the run started from, so
//!   the checkpoint is itself a model directory that `vlmrun caption` / `baseline` can load;
//! - `optimizer.safetensors`: the AdamW state ([`AdamW::state_tensors`]);
//! - `state.json`: where the run stands ([`Progress`]), the architecture fingerprint (every parameter's
//!   name and shape), the schema version and the vlmrun version that wrote it.
//!
//! A save writes everything into a hidden temporary directory next to the checkpoints, fsyncs each
//! file and the directory, then renames it into place and fsyncs the parent: a crash at any point
//! leaves either the complete new checkpoint or none, and never touches the previous ones. After a
//! save the retention policy removes old checkpoints: the newest `keep_last` stay, and the best one by
//! the eval metric when a goal is set. Checkpoints of later steps than the one saved belong to a run
//! that was abandoned by resuming from an earlier checkpoint: a save renames them to
//! `superseded-step-<theirs>-at-<this step>/` (kept, but no longer found by [`CheckpointDir::latest`]).
//! One trainer owns a checkpoint directory (a save removes temporary directories that crashed saves
//! left behind).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::optim::{AdamW, OptimError};
use super::params::{ParamShape, ParamsError, TrainParams};
use super::scaler::{LossScaler, ScalerState};
use crate::hub::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";
/// Version of the `state.json` layout; a reader refuses newer versions.
pub const STATE_SCHEMA_VERSION: u32 = 1;

const DIR_PREFIX: &str = "step-";
const TEMP_PREFIX: &str = ".tmp-step-";
const TRASH_PREFIX: &str = ".trash-step-";
const SUPERSEDED_PREFIX: &str = "superseded-";
/// Differences listed in an architecture mismatch message.
const SHOWN_DIFFERENCES: usize = 5;
const FIX_RESUME: &str =
    "resume from another checkpoint (--resume DIR, or delete this one so the previous is used), or start over with --fresh";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write {}: {source}\n  fix: check that the checkpoint directory is writable and the disk has space", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read {}: {source}\n  fix: {FIX_RESUME}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is missing: the checkpoint is incomplete\n  fix: {FIX_RESUME}", path.display())]
    MissingFile { path: PathBuf },

    #[error("{} is corrupt or truncated ({reason})\n  fix: {FIX_RESUME}", path.display())]
    Corrupt { path: PathBuf, reason: String },

    #[error("{} has schema version {found}; this vlmrun ({}) reads up to {STATE_SCHEMA_VERSION}\n  fix: resume with the vlmrun version that wrote it ({writer}), or start over with --fresh", path.display(), env!("CARGO_PKG_VERSION"))]
    NewerSchema {
        path: PathBuf,
        found: u32,
        writer: String,
    },

    #[error("{} does not match the model being trained ({count} difference(s)): {shown}\n  fix: resume with the model configuration the checkpoint was trained with, pick a checkpoint of this model, or start over with --fresh", path.display())]
    Architecture {
        path: PathBuf,
        count: usize,
        shown: String,
    },

    #[error("writing {}: {reason}", path.display())]
    Serialize { path: PathBuf, reason: String },

    #[error("copying {name} to the host for saving: {source}")]
    Tensor {
        name: String,
        #[source]
        source: candle_core::Error,
    },

    #[error("checkpoint retention keep_last = 0 would delete the checkpoint just written\n  fix: keep at least 1")]
    KeepNothing,

    #[error(transparent)]
    Params(#[from] ParamsError),

    #[error("{}: {source}", path.display())]
    Optimizer {
        path: PathBuf,
        #[source]
        source: Box<OptimError>,
    },
}

/// Where a run stands when it saves; what a resumed run continues from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Training steps completed (optimizer updates attempted, skipped f16 steps included).
    pub step: u64,
    /// The epoch in progress (0-based).
    pub epoch: u64,
    /// Samples of the current epoch's shuffled order already consumed (all ranks together).
    pub epoch_position: u64,
    /// Seed of the data order (the epoch's order derives from it and the epoch number).
    pub shuffle_seed: u64,
    pub scaler: ScalerState,
    /// Position in the learning-rate schedule (`WarmupCosine::lr_at`'s argument for the next step).
    pub schedule_step: u64,
    /// This checkpoint's eval metric, when an eval ran just before the save.
    pub metric: Option<f64>,
    /// Best eval metric of the run so far.
    pub best_metric: Option<f64>,
    /// Number of processes that trained (the data split depends on it).
    pub world_size: u32,
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    pub schema_version: u32,
    pub vlmrun_version: String,
    #[serde(flatten)]
    pub progress: Progress,
    /// Every parameter's name and shape, sorted by name.
    pub architecture: Vec<ParamShape>,
    /// The settings the run was made with (`super::resume_settings`); empty in checkpoints written
    /// before they were recorded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// Whether a lower or a higher eval metric is better (loss: lower; CIDEr: higher).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricGoal {
    Lower,
    Higher,
}

impl MetricGoal {
    /// Whether `candidate` beats `current` (NaN never does).
    pub fn improves(self, candidate: f64, current: Option<f64>) -> bool {
        if candidate.is_nan() {
            return false;
        }
        match (self, current) {
            (_, None) => true,
            (MetricGoal::Lower, Some(current)) => candidate < current,
            (MetricGoal::Higher, Some(current)) => candidate > current,
        }
    }
}

/// Which checkpoints survive a save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest this many (at least 1).
    pub keep_last: usize,
    /// Also the best by `Progress::metric`, when set.
    pub best: Option<MetricGoal>,
}

/// One complete checkpoint on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointEntry {
    pub step: u64,
    pub dir: PathBuf,
    pub metric: Option<f64>,
}

/// The directory that holds a run's checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    root: PathBuf,
    retention: Retention,
    /// Written into every checkpoint's `state.json` (`with_settings`).
    settings: BTreeMap<String, serde_json::Value>,
}

impl CheckpointDir {
    pub fn new(root: impl Into<PathBuf>, retention: Retention) -> Result<Self, CheckpointError> {
        if retention.keep_last == 0 {
            return Err(CheckpointError::KeepNothing);
        }
        Ok(Self {
            root: root.into(),
            retention,
            settings: BTreeMap::new(),
        })
    }

    /// Records `settings` in every checkpoint saved from now on.
    pub fn with_settings(mut self, settings: BTreeMap<String, serde_json::Value>) -> Self {
        self.settings = settings;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory a checkpoint of `step` has.
    pub fn dir_for(&self, step: u64) -> PathBuf {
        self.root.join(format!("{DIR_PREFIX}{step:08}"))
    }

    /// Saves a checkpoint atomically (module doc), then applies the retention policy. `model_dir` is
    /// the model directory the run started from (its `config.json` and `tokenizer.json` are copied).
    /// Returns the checkpoint's directory.
    pub fn save(
        &self,
        params: &TrainParams,
        optimizer: &AdamW,
        progress: &Progress,
        model_dir: &Path,
    ) -> Result<PathBuf, CheckpointError> {
        let write_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Write { path, source }
        };
        std::fs::create_dir_all(&self.root).map_err(write_error(&self.root))?;
        self.remove_leftovers()?;
        let name = format!("{DIR_PREFIX}{:08}", progress.step);
        let temp = self.root.join(format!(
            "{TEMP_PREFIX}{:08}-{}",
            progress.step,
            std::process::id()
        ));
        std::fs::create_dir(&temp).map_err(write_error(&temp))?;
        let written = write_contents(
            &temp,
            params,
            optimizer,
            progress,
            model_dir,
            &self.settings,
        );
        if let Err(err) = written {
            let _ = std::fs::remove_dir_all(&temp);
            return Err(err);
        }
        let target = self.root.join(&name);
        let replaced = if target.exists() {
            // Saving a step again (e.g. after resuming): move the old one aside first, since a
            // directory cannot be renamed onto a non-empty one.
            let aside = self.root.join(format!(
                "{TRASH_PREFIX}{:08}-{}",
                progress.step,
                std::process::id()
            ));
            std::fs::rename(&target, &aside).map_err(write_error(&target))?;
            Some(aside)
        } else {
            None
        };
        if let Err(source) = std::fs::rename(&temp, &target) {
            let _ = std::fs::remove_dir_all(&temp);
            if let Some(aside) = &replaced {
                let _ = std::fs::rename(aside, &target);
            }
            return Err(CheckpointError::Write {
                path: target,
                source,
            });
        }
        sync_dir(&self.root)?;
        if let Some(aside) = replaced {
            let _ = std::fs::remove_dir_all(aside);
        }
        self.set_aside_later_than(progress.step)?;
        self.prune()?;
        Ok(target)
    }

    /// Complete checkpoints (all three files present, `state.json` readable), oldest first.
    pub fn list(&self) -> Result<Vec<CheckpointEntry>, CheckpointError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CheckpointError::Read {
                    path: self.root.clone(),
                    source,
                })
            }
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(step) = file_name
                .to_str()
                .and_then(|n| n.strip_prefix(DIR_PREFIX))
                .and_then(|digits| digits.parse::<u64>().ok())
            else {
                continue;
            };
            let dir = entry.path();
            let complete = [WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE]
                .iter()
                .all(|file| dir.join(file).is_file());
            if !complete {
                continue;
            }
            match read_state(&dir) {
                Ok(state) => found.push(CheckpointEntry {
                    step,
                    dir,
                    metric: state.progress.metric,
                }),
                Err(err) => tracing::warn!("skipping checkpoint {}: {err}", dir.display()),
            }
        }
        found.sort_by_key(|entry| entry.step);
        Ok(found)
    }

    /// `step-` directories that [`CheckpointDir::list`] leaves out because a file is missing, with
    /// the missing files' names, oldest first: a resume names the ones newer than what it uses.
    pub fn incomplete(&self) -> Vec<(u64, PathBuf, Vec<&'static str>)> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut found: Vec<(u64, PathBuf, Vec<&'static str>)> = entries
            .flatten()
            .filter_map(|entry| {
                let step = entry
                    .file_name()
                    .to_str()?
                    .strip_prefix(DIR_PREFIX)?
                    .parse::<u64>()
                    .ok()?;
                let dir = entry.path();
                let missing: Vec<&'static str> = [WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE]
                    .into_iter()
                    .filter(|file| !dir.join(file).is_file())
                    .collect();
                (!missing.is_empty()).then_some((step, dir, missing))
            })
            .collect();
        found.sort_by_key(|(step, _, _)| *step);
        found
    }

    /// The newest complete checkpoint.
    pub fn latest(&self) -> Result<Option<CheckpointEntry>, CheckpointError> {
        Ok(self.list()?.pop())
    }

    /// The best checkpoint by metric under `goal` (the earliest on ties).
    pub fn best(&self, goal: MetricGoal) -> Result<Option<CheckpointEntry>, CheckpointError> {
        Ok(best_of(&self.list()?, goal).cloned())
    }

    /// Removes the checkpoints the retention policy does not keep.
    fn prune(&self) -> Result<(), CheckpointError> {
        let entries = self.list()?;
        let first_kept = entries.len().saturating_sub(self.retention.keep_last);
        let best_step = self
            .retention
            .best
            .and_then(|goal| best_of(&entries, goal))
            .map(|entry| entry.step);
        for entry in entries.iter().take(first_kept) {
            if Some(entry.step) == best_step {
                continue;
            }
            // Rename first so a crash mid-delete never leaves a half-deleted `step-` directory.
            let trash = self.root.join(format!(
                "{TRASH_PREFIX}{:08}-{}",
                entry.step,
                std::process::id()
            ));
            std::fs::rename(&entry.dir, &trash).map_err(|source| CheckpointError::Write {
                path: entry.dir.clone(),
                source,
            })?;
            std::fs::remove_dir_all(&trash).map_err(|source| CheckpointError::Write {
                path: trash,
                source,
            })?;
        }
        Ok(())
    }

    /// Renames the checkpoints of steps after `step` (an abandoned continuation) out of the way.
    fn set_aside_later_than(&self, step: u64) -> Result<(), CheckpointError> {
        for entry in self.list()?.into_iter().filter(|e| e.step > step) {
            let Some(name) = entry
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
            else {
                continue;
            };
            let aside = self
                .root
                .join(format!("{SUPERSEDED_PREFIX}{name}-at-{step:08}"));
            tracing::warn!(
                "checkpoint {} is from a later step than the one just saved ({step}): renamed to {}",
                entry.dir.display(),
                aside.display()
            );
            if aside.exists() {
                let _ = std::fs::remove_dir_all(&aside);
            }
            std::fs::rename(&entry.dir, &aside).map_err(|source| CheckpointError::Write {
                path: entry.dir.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Deletes temporary and trash directories of earlier saves that did not finish.
    fn remove_leftovers(&self) -> Result<(), CheckpointError> {
        let entries = std::fs::read_dir(&self.root).map_err(|source| CheckpointError::Read {
            path: self.root.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TEMP_PREFIX) || name.starts_with(TRASH_PREFIX) {
                let path = entry.path();
                std::fs::remove_dir_all(&path)
                    .map_err(|source| CheckpointError::Write { path, source })?;
            }
        }
        Ok(())
    }
}

fn best_of(entries: &[CheckpointEntry], goal: MetricGoal) -> Option<&CheckpointEntry> {
    let mut best: Option<&CheckpointEntry> = None;
    for entry in entries {
        if let Some(metric) = entry.metric {
            if goal.improves(metric, best.and_then(|b| b.metric)) {
                best = Some(entry);
            }
        }
    }
    best
}

/// Writes every file of a checkpoint into `dir` (state.json last) and fsyncs them and `dir`.
fn write_contents(
    dir: &Path,
    params: &TrainParams,
    optimizer: &AdamW,
    progress: &Progress,
    model_dir: &Path,
    settings: &BTreeMap<String, serde_json::Value>,
) -> Result<(), CheckpointError> {
    let model: Vec<(String, Tensor)> = params
        .all()
        .iter()
        .map(|p| (p.name.clone(), p.tensor().clone()))
        .collect();
    write_safetensors(&dir.join(WEIGHTS_FILE), model)?;
    let optimizer_path = dir.join(OPTIMIZER_FILE);
    let optimizer_state: Vec<(String, Tensor)> = optimizer
        .state_tensors()
        .map_err(|source| CheckpointError::Optimizer {
            path: optimizer_path.clone(),
            source: Box::new(source),
        })?
        .into_iter()
        .collect();
    write_safetensors(&optimizer_path, optimizer_state)?;
    for file in [CONFIG_FILE, TOKENIZER_FILE] {
        let from = model_dir.join(file);
        let to = dir.join(file);
        std::fs::copy(&from, &to).map_err(|source| CheckpointError::Read {
            path: from.clone(),
            source,
        })?;
        sync_file(&to)?;
    }
    let state = StateFile {
        schema_version: STATE_SCHEMA_VERSION,
        vlmrun_version: env!("CARGO_PKG_VERSION").to_string(),
        progress: progress.clone(),
        architecture: params.fingerprint(),
        settings: settings.clone(),
    };
    let state_path = dir.join(STATE_FILE);
    let mut bytes =
        serde_json::to_vec_pretty(&state).map_err(|err| CheckpointError::Serialize {
            path: state_path.clone(),
            reason: err.to_string(),
        })?;
    bytes.push(b'\n');
    std::fs::write(&state_path, bytes).map_err(|source| CheckpointError::Write {
        path: state_path.clone(),
        source,
    })?;
    sync_file(&state_path)?;
    sync_dir(dir)
}

/// Writes tensors (copied to the host first, so serialisation itself cannot fail on a device) with
/// the `{"format": "pt"}` metadata transformers expects, and fsyncs the file.
fn write_safetensors(path: &Path, tensors: Vec<(String, Tensor)>) -> Result<(), CheckpointError> {
    let mut host = BTreeMap::new();
    for (name, tensor) in tensors {
        let on_host = tensor
            .to_device(&Device::Cpu)
            .and_then(|t| t.contiguous())
            .map_err(|source| CheckpointError::Tensor {
                name: name.clone(),
                source,
            })?;
        host.insert(name, on_host);
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(&host, Some(metadata), path).map_err(|err| {
        CheckpointError::Serialize {
            path: path.to_path_buf(),
            reason: err.to_string(),
        }
    })?;
    sync_file(path)
}

fn sync_file(path: &Path) -> Result<(), CheckpointError> {
    File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(|source| CheckpointError::Write {
            path: path.to_path_buf(),
            source,
        })
}

fn sync_dir(path: &Path) -> Result<(), CheckpointError> {
    sync_file(path)
}

/// Reads and parses `state.json` of a checkpoint directory.
pub fn read_state(dir: &Path) -> Result<StateFile, CheckpointError> {
    let path = dir.join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(CheckpointError::MissingFile { path })
        }
        Err(source) => return Err(CheckpointError::Read { path, source }),
    };
    // Check the version before the full layout, so a newer file gets the version message.
    #[derive(Deserialize)]
    struct Versions {
        schema_version: u32,
        #[serde(default)]
        vlmrun_version: String,
    }
    let versions: Versions =
        serde_json::from_slice(&bytes).map_err(|err| CheckpointError::Corrupt {
            path: path.clone(),
            reason: err.to_string(),
        })?;
    if versions.schema_version > STATE_SCHEMA_VERSION {
        return Err(CheckpointError::NewerSchema {
            path,
            found: versions.schema_version,
            writer: versions.vlmrun_version,
        });
    }
    serde_json::from_slice(&bytes).map_err(|err| CheckpointError::Corrupt {
        path,
        reason: err.to_string(),
    })
}

/// A checkpoint read from disk and checked against the model being trained.
#[derive(Debug)]
pub struct LoadedCheckpoint {
    pub dir: PathBuf,
    pub state: StateFile,
    /// `model.safetensors`, on the requested device.
    pub model: HashMap<String, Tensor>,
    /// `optimizer.safetensors`, on the requested device.
    pub optimizer: HashMap<String, Tensor>,
}

impl LoadedCheckpoint {
    /// Reads `dir` onto `device`, verifying that `state.json` and `model.safetensors` describe exactly
    /// the parameters of `params` (names and shapes).
    pub fn load(
        dir: &Path,
        params: &TrainParams,
        device: &Device,
    ) -> Result<Self, CheckpointError> {
        let state = read_state(dir)?;
        let expected = params.fingerprint();
        check_architecture(&dir.join(STATE_FILE), &state.architecture, &expected)?;
        let model_path = dir.join(WEIGHTS_FILE);
        let model = read_safetensors(&model_path, device)?;
        let mut in_file: Vec<ParamShape> = model
            .iter()
            .map(|(name, tensor)| ParamShape {
                name: name.clone(),
                shape: tensor.dims().to_vec(),
            })
            .collect();
        in_file.sort_by(|a, b| a.name.cmp(&b.name));
        check_architecture(&model_path, &in_file, &expected)?;
        let optimizer = read_safetensors(&dir.join(OPTIMIZER_FILE), device)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            state,
            model,
            optimizer,
        })
    }

    /// Puts the checkpoint's trainable weights, optimizer state and scaler state into the run's
    /// objects; returns where the run stands.
    pub fn restore(
        &self,
        params: &TrainParams,
        optimizer: &mut AdamW,
        scaler: &mut LossScaler,
    ) -> Result<Progress, CheckpointError> {
        let model_source = self.dir.join(WEIGHTS_FILE).display().to_string();
        params.assign_trainable(&self.model, &model_source)?;
        optimizer
            .load_state(params, &self.optimizer)
            .map_err(|source| CheckpointError::Optimizer {
                path: self.dir.join(OPTIMIZER_FILE),
                source: Box::new(source),
            })?;
        scaler.load_state(self.state.progress.scaler);
        Ok(self.state.progress.clone())
    }
}

fn read_safetensors(
    path: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>, CheckpointError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(CheckpointError::MissingFile {
                path: path.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(CheckpointError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    candle_core::safetensors::load_buffer(&bytes, device).map_err(|err| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: err.to_string(),
    })
}

/// Compares two sorted fingerprints; the error names the first few parameters that differ.
fn check_architecture(
    path: &Path,
    found: &[ParamShape],
    expected: &[ParamShape],
) -> Result<(), CheckpointError> {
    let found_map: BTreeMap<&str, &[usize]> = found
        .iter()
        .map(|p| (p.name.as_str(), p.shape.as_slice()))
        .collect();
    let expected_map: BTreeMap<&str, &[usize]> = expected
        .iter()
        .map(|p| (p.name.as_str(), p.shape.as_slice()))
        .collect();
    let mut differences = Vec::new();
    for (name, shape) in &expected_map {
        match found_map.get(name) {
            None => differences.push((*name, format!("{name} missing from the checkpoint"))),
            Some(saved) if saved != shape => differences.push((
                *name,
                format!("{name} has shape {saved:?} in the checkpoint, {shape:?} in the model"),
            )),
            Some(_) => {}
        }
    }
    for name in found_map.keys() {
        if !expected_map.contains_key(name) {
            differences.push((
                *name,
                format!("{name} is in the checkpoint but not in the model"),
            ));
        }
    }
    if differences.is_empty() {
        return Ok(());
    }
    differences.sort_by(|a, b| a.0.cmp(b.0));
    let count = differences.len();
    let mut shown: Vec<String> = differences
        .into_iter()
        .take(SHOWN_DIFFERENCES)
        .map(|(_, text)| text)
        .collect();
    if count > SHOWN_DIFFERENCES {
        shown.push(format!("and {} more", count - SHOWN_DIFFERENCES));
    }
    Err(CheckpointError::Architecture {
        path: path.to_path_buf(),
        count,
        shown: shown.join("; "),
    })
}
