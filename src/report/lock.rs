//! One writer per output directory: an OS advisory lock (`flock` on Unix, `LockFileEx` on Windows,
//! through std's `File::try_lock`) on `DIR/vlmrun.lock`, held for the whole run. The OS drops it when
//! the process ends in any way (kill -9 included), so a dead run never leaves a stale lock.
//!
//! A single-process run (baseline, train, merge, fidelity) takes the lock exclusively. The ranks of a
//! data-parallel baseline share the directory: each takes `vlmrun.lock` shared (so no single-process
//! run can start there) and its own `rank-K.lock` exclusively (so two processes never act as one rank).
//! The holder writes who it is (pid, host, command, since when) into the file it holds exclusively;
//! a refused run names it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lock file of an output directory.
pub const LOCK_FILE: &str = "vlmrun.lock";

/// The lock file of rank `rank` in a data-parallel output directory.
pub fn rank_lock_file(rank: usize) -> String {
    format!("rank-{rank}.lock")
}

/// Who holds a lock (written into the lock file by its holder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// The command line, as started.
    pub command: String,
    /// Seconds since the Unix epoch when the lock was taken.
    pub since_unix_s: u64,
}

impl Holder {
    /// This process, now.
    pub fn this_process() -> Holder {
        let command: Vec<String> = std::env::args_os()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        Holder {
            pid: std::process::id(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|name| name.trim().to_string())
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "this machine".to_string()),
            command: command.join(" "),
            since_unix_s: unix_now(),
        }
    }

    fn describe(&self) -> String {
        let ago = unix_now().saturating_sub(self.since_unix_s);
        format!(
            "pid {} on {}, running `{}` since {}s ago",
            self.pid, self.host, self.command, ago
        )
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{} is in use by another vlmrun run ({})\n  fix: wait until that run ends, or give this run another output.dir (--set output.dir=...)", dir.display(), holder_text(holder.as_ref(), what))]
    Busy {
        dir: PathBuf,
        /// What is held: "the directory" or "rank K".
        what: String,
        holder: Option<Holder>,
    },

    #[error("cannot lock {}: {source}\n  fix: output.dir must be on a filesystem that supports file locks and be writable", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn holder_text(holder: Option<&Holder>, what: &str) -> String {
    match holder {
        Some(holder) => format!("{what} is held by {}", holder.describe()),
        None => format!("{what} is held by a process that has not said who it is yet, or by the ranks of a data-parallel run"),
    }
}

/// A held lock: released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _files: Vec<File>,
}

/// A filesystem without locks (Lustre mounted without `flock`, some FUSE filesystems): the run goes
/// ahead unguarded, with a warning, rather than not at all.
fn unsupported(path: &Path, source: &std::io::Error) -> bool {
    let unsupported = source.kind() == std::io::ErrorKind::Unsupported;
    if unsupported {
        tracing::warn!(
            "{} cannot be locked on this filesystem ({source}): nothing stops a second run from writing to the same directory meanwhile",
            path.display()
        );
    }
    unsupported
}

/// Takes `dir`'s lock exclusively (the directory must exist), or says who holds it.
pub fn exclusive(dir: &Path) -> Result<DirLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let file = open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(LockError::Busy {
                dir: dir.to_path_buf(),
                what: "the directory".to_string(),
                holder: read_holder(&path).or_else(|| any_rank_holder(dir)),
            })
        }
        Err(TryLockError::Error(source)) if unsupported(&path, &source) => {
            return Ok(DirLock { _files: Vec::new() })
        }
        Err(TryLockError::Error(source)) => return Err(LockError::Io { path, source }),
    }
    write_holder(&file, &path)?;
    Ok(DirLock { _files: vec![file] })
}

/// For rank `rank` of a data-parallel run: `dir`'s lock shared and the rank's own lock exclusively.
pub fn rank(dir: &Path, rank: usize) -> Result<DirLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let shared = open(&path)?;
    match shared.try_lock_shared() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(LockError::Busy {
                dir: dir.to_path_buf(),
                what: "the directory".to_string(),
                holder: read_holder(&path),
            })
        }
        Err(TryLockError::Error(source)) if unsupported(&path, &source) => {
            return Ok(DirLock { _files: Vec::new() })
        }
        Err(TryLockError::Error(source)) => return Err(LockError::Io { path, source }),
    }
    // No exclusive holder can be there now: clear what the last one wrote, so a refused run does not
    // name a process that has ended.
    let _ = shared.set_len(0);
    let rank_path = dir.join(rank_lock_file(rank));
    let own = open(&rank_path)?;
    match own.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(LockError::Busy {
                dir: dir.to_path_buf(),
                what: format!("rank {rank}"),
                holder: read_holder(&rank_path),
            })
        }
        Err(TryLockError::Error(source)) => {
            return Err(LockError::Io {
                path: rank_path,
                source,
            })
        }
    }
    write_holder(&own, &rank_path)?;
    Ok(DirLock {
        _files: vec![shared, own],
    })
}

/// Whether a live process holds rank `rank`'s lock in `dir` (a file nobody holds, or none, is free).
pub fn rank_is_held(dir: &Path, rank: usize) -> bool {
    let path = dir.join(rank_lock_file(rank));
    let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
        return false;
    };
    matches!(file.try_lock(), Err(TryLockError::WouldBlock))
}

fn open(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn write_holder(mut file: &File, path: &Path) -> Result<(), LockError> {
    let mut text = serde_json::to_string(&Holder::this_process()).unwrap_or_default();
    text.push('\n');
    let result = file
        .set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(text.as_bytes()))
        .and_then(|()| file.flush());
    result.map_err(|source| LockError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_holder(path: &Path) -> Option<Holder> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// The ranks whose lock a live process holds in `dir`, in order.
pub fn held_ranks(dir: &Path) -> Vec<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ranks: Vec<usize> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.strip_prefix("rank-")?
                .strip_suffix(".lock")?
                .parse()
                .ok()
        })
        .filter(|&rank| rank_is_held(dir, rank))
        .collect();
    ranks.sort_unstable();
    ranks
}

/// The holder of the lowest held rank lock in `dir` (for naming a data-parallel run).
fn any_rank_holder(dir: &Path) -> Option<Holder> {
    let rank = *held_ranks(dir).first()?;
    read_holder(&dir.join(rank_lock_file(rank)))
}

impl From<LockError> for crate::error::Error {
    fn from(err: LockError) -> Self {
        match err {
            LockError::Busy { .. } => crate::error::Error::Busy(err.to_string()),
            LockError::Io { path, source } => crate::error::Error::Output {
                what: "the lock file",
                path,
                source,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_exclusive_lock_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = exclusive(dir.path()).unwrap();
        let err = exclusive(dir.path()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        assert!(message.contains("output.dir"), "{message}");
        assert!(matches!(err, LockError::Busy { .. }));
        drop(held);
        exclusive(dir.path()).unwrap();
    }

    #[test]
    fn ranks_share_the_directory_but_not_a_rank() {
        let dir = tempfile::tempdir().unwrap();
        let zero = rank(dir.path(), 0).unwrap();
        let one = rank(dir.path(), 1).unwrap();
        assert!(rank_is_held(dir.path(), 1));
        assert!(!rank_is_held(dir.path(), 2));
        assert_eq!(held_ranks(dir.path()), [0, 1]);
        let again = rank(dir.path(), 1).unwrap_err().to_string();
        assert!(again.contains("rank 1 is held"), "{again}");
        let single = exclusive(dir.path()).unwrap_err().to_string();
        assert!(single.contains("in use"), "{single}");
        drop((zero, one));
        let single = exclusive(dir.path()).unwrap();
        let rank_now = rank(dir.path(), 0).unwrap_err().to_string();
        assert!(rank_now.contains("the directory is held"), "{rank_now}");
        drop(single);
    }
}
