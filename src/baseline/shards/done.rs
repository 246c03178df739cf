//! `rank-K.done.json` (schema `vlmrun.rank/1`): written by rank K when it stops working on its shard,
//! finished or not (`status` says which), with its counts, timings, host and device. Rank 0 waits for
//! these files; the merge reads them for the per-rank part of the report. A rank deletes its own file
//! when it starts, so a file on disk always describes the rank's latest run.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::baseline::report::{Counts, Memory, RankTimings};
use crate::distributed::{DistributedError, Env, Launcher, RankInfo};
use crate::report::Environment;

pub const SCHEMA: &str = "vlmrun.rank/1";

/// How a rank's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RankStatus {
    /// Every item of the shard has a prediction.
    Complete,
    /// Every item was tried; some failed (errors.rank-K.jsonl).
    CompleteWithFailures,
    /// Stopped by Ctrl-C: part of the shard is done; rerunning the rank resumes it.
    Interrupted,
    /// Stopped by an error (in `error`).
    Failed,
}

impl RankStatus {
    /// Whether the shard was worked to the end.
    pub fn finished_shard(self) -> bool {
        matches!(
            self,
            RankStatus::Complete | RankStatus::CompleteWithFailures
        )
    }
}

/// One rank's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankDone {
    pub schema: String,
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub launcher: Launcher,
    pub host: String,
    pub pid: u32,
    /// `cuda:1 (NVIDIA H100 ...)`, `cpu`, or the requested device when the rank failed before opening it.
    pub device: String,
    pub status: RankStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub dataset_fingerprint: String,
    pub config_fingerprint: String,
    /// `dataset` is the shard's size.
    pub counts: Counts,
    pub timings: RankTimings,
    pub memory: Memory,
    /// Wall clock (seconds since the Unix epoch) when the rank started and when it wrote this file.
    pub started_unix_s: f64,
    pub finished_unix_s: f64,
    pub environment: Option<Environment>,
    /// The rank's resolved configuration.
    pub config: serde_json::Value,
}

impl RankDone {
    /// A record with the rank's identity filled in and everything else empty.
    pub fn new(
        info: &RankInfo,
        host: &str,
        dataset_fingerprint: String,
        config_fingerprint: String,
    ) -> RankDone {
        RankDone {
            schema: SCHEMA.to_string(),
            rank: info.rank,
            world_size: info.world_size,
            local_rank: info.local_rank,
            launcher: info.launcher,
            host: host.to_string(),
            pid: std::process::id(),
            device: String::new(),
            status: RankStatus::Failed,
            error: None,
            dataset_fingerprint,
            config_fingerprint,
            counts: Counts::default(),
            timings: RankTimings::default(),
            memory: Memory::default(),
            started_unix_s: unix_now(),
            finished_unix_s: 0.0,
            environment: None,
            config: serde_json::Value::Null,
        }
    }
}

/// Writes the record atomically (a reader never sees half of it).
pub fn write(path: &Path, done: &RankDone) -> Result<(), DistributedError> {
    crate::report::write_json_atomic(path, done).map_err(DistributedError::io(path))
}

/// Reads a record; `None` when the file is not there.
pub fn read(path: &Path) -> Result<Option<RankDone>, DistributedError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DistributedError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|err| DistributedError::BadFile {
            path: path.to_path_buf(),
            message: format!("not a {SCHEMA} record ({err})"),
            fix: "rerun that rank (it rewrites the file), or delete the file".to_string(),
        })
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's name: the kernel's hostname, else `HOSTNAME` from `env`, else `unknown`.
pub fn host_name(env: &Env) -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| env.get("HOSTNAME").cloned())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rank-1.done.json");
        assert_eq!(read(&path).unwrap(), None);
        let info = RankInfo {
            rank: 1,
            world_size: 2,
            local_rank: 1,
            ..RankInfo::single()
        };
        let mut done = RankDone::new(&info, "node0", "d".into(), "c".into());
        done.status = RankStatus::CompleteWithFailures;
        done.timings.run_s = 2.5;
        write(&path, &done).unwrap();
        assert_eq!(read(&path).unwrap(), Some(done));
        std::fs::write(&path, "{}").unwrap();
        assert!(read(&path)
            .unwrap_err()
            .to_string()
            .contains("rank-1.done.json"));
    }

    #[test]
    fn host_name_is_never_empty() {
        assert!(!host_name(&Env::new()).is_empty());
    }
}
