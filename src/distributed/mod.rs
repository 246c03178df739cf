//! Data-parallel runs: several `vlmrun baseline` processes (ranks) share one dataset and one output
//! directory, each captions its own shard, and rank 0 (or `vlmrun merge`) merges the shards into the usual
//! outputs. Ranks never talk to each other: the shared filesystem is the only channel (`world.json` pins
//! the world size and dataset, `rank-K.done.json` says a rank finished), so a run spans GPUs of one
//! machine or machines that mount the same directory, with no network setup.
//!
//! `rank` finds who this process is (flags, torchrun, Slurm, Open MPI), `device` picks its GPU, `shard`
//! decides which items it owns, `fingerprint` and `world` guard against mixing runs, `files` names the
//! per-rank files, `command` the line that reruns a rank. A rank's done file, rank 0's wait and the merge
//! of the shards are baseline's (`baseline::shards`). docs/scaling.md is the user's guide.

pub mod command;
pub mod device;
pub mod files;
pub mod fingerprint;
pub mod rank;
pub mod shard;
pub mod world;

use std::path::PathBuf;

pub use rank::{discover, Env, Launcher, RankFlags, RankInfo};

/// What went wrong in a data-parallel run. Every message names the variable, flag or file, and the fix.
#[derive(Debug, thiserror::Error)]
pub enum DistributedError {
    #[error("{name}={value:?} is not {expected}\n  fix: {fix}")]
    Malformed {
        name: String,
        value: String,
        expected: &'static str,
        fix: String,
    },

    #[error("{name} is not set, but {because}\n  fix: {fix}")]
    Missing {
        name: String,
        because: String,
        fix: String,
    },

    #[error("{message}\n  fix: {fix}")]
    Inconsistent { message: String, fix: String },

    #[error("{} holds a run with world size {found} ({}), but this run has world size {requested}\n  fix: resume it with world size {found}, or pass --fresh (to every rank) to delete the earlier results and start over, or choose another output.dir", dir.display(), world::WORLD_FILE)]
    WorldMismatch {
        dir: PathBuf,
        found: usize,
        requested: usize,
    },

    #[error("{} holds a run over another dataset ({found_items} items, {found}); this run's dataset has {requested_items} items ({requested})\n  fix: use the same data.* settings as that run, or pass --fresh (to every rank) to start over, or choose another output.dir", dir.display())]
    DatasetMismatch {
        dir: PathBuf,
        found: String,
        found_items: usize,
        requested: String,
        requested_items: usize,
    },

    #[error("{}: {message}\n  fix: {fix}", path.display())]
    BadFile {
        path: PathBuf,
        message: String,
        fix: String,
    },

    #[error("cannot access {}: {source}\n  fix: check that output.dir exists on a filesystem every rank can write", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DistributedError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DistributedError {
        let path = path.to_path_buf();
        move |source| DistributedError::Io { path, source }
    }
}

impl From<DistributedError> for crate::error::Error {
    fn from(err: DistributedError) -> Self {
        match err {
            DistributedError::Io { path, source } => crate::error::Error::Output {
                what: "data-parallel run files",
                path,
                source,
            },
            DistributedError::BadFile { .. } => crate::error::Error::Input(err.to_string()),
            other => crate::error::Error::Usage(other.to_string()),
        }
    }
}
