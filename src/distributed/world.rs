//! `world.json`: the world size and dataset a data-parallel output directory belongs to. The first rank
//! to start creates it (atomically: written to a temporary file, then hard-linked into place, which fails
//! if another rank won); every later rank, and every resumed run, must agree with it or stop with an
//! error that says how to fix it. It also keeps the launch command (for "rerun rank K" hints) and the
//! configuration (so `vlmrun merge` needs nothing but the directory).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::DistributedError;

pub const WORLD_FILE: &str = "world.json";
pub const SCHEMA: &str = "vlmrun.world/1";

/// The dataset as the shards see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetIdentity {
    pub items: usize,
    /// `fingerprint::dataset` of the items in order.
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldRecord {
    pub schema: String,
    pub world_size: usize,
    pub dataset: DatasetIdentity,
    /// The command line that started the run, without rank flags and `--fresh`.
    pub command: Vec<String>,
    /// The resolved configuration of the rank that created the file.
    pub config: serde_json::Value,
}

/// The record in `dir`, if there is one.
pub fn read(dir: &Path) -> Result<Option<WorldRecord>, DistributedError> {
    let path = dir.join(WORLD_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DistributedError::Io { path, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|err| DistributedError::BadFile {
            path,
            message: format!("not a {SCHEMA} record ({err})"),
            fix: "it was edited or belongs to something else; pass --fresh to start over, or choose another output.dir".to_string(),
        })
}

/// Makes `dir` belong to `record`'s run: creates `world.json`, or checks the one there. With `fresh` the
/// file is replaced (every rank of one launch writes the same record). `rank` keeps temporary names
/// apart between ranks.
pub fn claim(
    dir: &Path,
    record: &WorldRecord,
    rank: usize,
    fresh: bool,
) -> Result<(), DistributedError> {
    let path = dir.join(WORLD_FILE);
    let mut bytes = serde_json::to_vec_pretty(record).map_err(|err| DistributedError::Io {
        path: path.clone(),
        source: std::io::Error::other(err),
    })?;
    bytes.push(b'\n');
    let temp = dir.join(format!(".{WORLD_FILE}.tmp-{rank}-{}", std::process::id()));
    write_synced(&temp, &bytes)?;
    let placed = if fresh {
        std::fs::rename(&temp, &path).map(|()| true)
    } else {
        let linked = match std::fs::hard_link(&temp, &path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            // A filesystem without hard links: create-if-absent without the atomicity.
            Err(_) if !path.exists() => std::fs::rename(&temp, &path).map(|()| true),
            Err(_) => Ok(false),
        };
        let _ = std::fs::remove_file(&temp);
        linked
    };
    let placed = placed.map_err(DistributedError::io(&path))?;
    if placed {
        return Ok(());
    }
    match read(dir)? {
        Some(found) => agrees(dir, &found, record.world_size, &record.dataset),
        None => Err(DistributedError::BadFile {
            path,
            message: "vanished while being read".to_string(),
            fix: "another launch is using this output.dir; choose another one".to_string(),
        }),
    }
}

/// Checks that the run in `dir` (`found`) has this world size and dataset.
pub fn agrees(
    dir: &Path,
    found: &WorldRecord,
    world_size: usize,
    dataset: &DatasetIdentity,
) -> Result<(), DistributedError> {
    if found.world_size != world_size {
        return Err(DistributedError::WorldMismatch {
            dir: dir.to_path_buf(),
            found: found.world_size,
            requested: world_size,
        });
    }
    if found.dataset != *dataset {
        return Err(DistributedError::DatasetMismatch {
            dir: dir.to_path_buf(),
            found: found.dataset.fingerprint.clone(),
            found_items: found.dataset.items,
            requested: dataset.fingerprint.clone(),
            requested_items: dataset.items,
        });
    }
    Ok(())
}

/// For a single-process run: refuses a directory that holds a data-parallel run (resuming it alone
/// would redo every shard into `predictions.jsonl`).
pub fn check_single_process(dir: &Path) -> Result<(), DistributedError> {
    match read(dir)? {
        Some(found) if found.world_size != 1 => Err(DistributedError::WorldMismatch {
            dir: dir.to_path_buf(),
            found: found.world_size,
            requested: 1,
        }),
        _ => Ok(()),
    }
}

fn write_synced(path: &PathBuf, bytes: &[u8]) -> Result<(), DistributedError> {
    let result = std::fs::File::create(path).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    result.map_err(DistributedError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(world_size: usize, fingerprint: &str) -> WorldRecord {
        WorldRecord {
            schema: SCHEMA.into(),
            world_size,
            dataset: DatasetIdentity {
                items: 12,
                fingerprint: fingerprint.into(),
            },
            command: vec!["vlmrun".into(), "baseline".into()],
            config: serde_json::json!({}),
        }
    }

    #[test]
    fn first_claim_creates_later_claims_must_agree() {
        let dir = tempfile::tempdir().unwrap();
        claim(dir.path(), &record(2, "a"), 0, false).unwrap();
        claim(dir.path(), &record(2, "a"), 1, false).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(record(2, "a")));
        let message = claim(dir.path(), &record(4, "a"), 0, false)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("world size 2") && message.contains("world size 4"),
            "{message}"
        );
        assert!(message.contains("--fresh"), "{message}");
        let message = claim(dir.path(), &record(2, "b"), 0, false)
            .unwrap_err()
            .to_string();
        assert!(message.contains("another dataset"), "{message}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary files left");
    }

    #[test]
    fn fresh_replaces_the_record() {
        let dir = tempfile::tempdir().unwrap();
        claim(dir.path(), &record(2, "a"), 0, false).unwrap();
        claim(dir.path(), &record(4, "b"), 3, true).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(record(4, "b")));
    }

    #[test]
    fn a_single_process_refuses_a_data_parallel_directory() {
        let dir = tempfile::tempdir().unwrap();
        check_single_process(dir.path()).unwrap();
        claim(dir.path(), &record(3, "a"), 0, false).unwrap();
        let message = check_single_process(dir.path()).unwrap_err().to_string();
        assert!(message.contains("world size 3"), "{message}");
    }

    #[test]
    fn garbage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WORLD_FILE), "{").unwrap();
        let message = read(dir.path()).unwrap_err().to_string();
        assert!(message.contains("world.json"), "{message}");
    }
}
