//! Rank 0 waiting for the other ranks' `rank-K.done.json`, bounded by a timeout, with a progress line on
//! stderr. A done file counts only when it belongs to this run (same world size, dataset and
//! configuration); one left by an earlier run is reported as stale, not trusted.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::done::{self, RankDone};
use crate::distributed::files::RankFiles;

/// What a done file must say to belong to this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub world_size: usize,
    pub dataset_fingerprint: String,
    pub config_fingerprint: String,
}

/// Where a rank stands, as its done file shows.
#[derive(Debug, Clone, PartialEq)]
pub enum RankState {
    /// It wrote a done file for this run (finished, interrupted or failed: see its status).
    Stopped(Box<RankDone>),
    /// No done file yet.
    Running,
    /// A done file from another run (why).
    Stale(String),
}

/// Reads rank `rank`'s done file in `dir`.
pub fn state(dir: &Path, rank: usize, expected: &Expected) -> RankState {
    let path = RankFiles::in_dir(dir, rank).done;
    let record = match done::read(&path) {
        Ok(Some(record)) => record,
        Ok(None) => return RankState::Running,
        Err(err) => return RankState::Stale(err.to_string()),
    };
    let differs = if record.world_size != expected.world_size {
        Some(format!("world size {}", record.world_size))
    } else if record.dataset_fingerprint != expected.dataset_fingerprint {
        Some("another dataset".to_string())
    } else if record.config_fingerprint != expected.config_fingerprint {
        Some("another configuration".to_string())
    } else {
        None
    };
    match differs {
        Some(what) => RankState::Stale(format!(
            "{} is from an earlier run ({what})",
            path.display()
        )),
        None => RankState::Stopped(Box::new(record)),
    }
}

/// How long to wait and how to report it.
pub struct WaitOptions<'a> {
    pub timeout: Duration,
    /// Between looks at the directory.
    pub poll: Duration,
    pub quiet: bool,
    /// Ctrl-C: stop waiting.
    pub interrupted: &'a AtomicBool,
}

/// What the wait ended with.
#[derive(Debug, Default)]
pub struct Waited {
    /// Ranks whose done file belongs to this run.
    pub stopped: BTreeMap<usize, RankDone>,
    /// Ranks still without one, and why (no file, or a stale one).
    pub absent: BTreeMap<usize, String>,
    pub interrupted: bool,
}

/// Waits until every rank in `ranks` has a done file for this run, the timeout passes, or Ctrl-C.
pub fn wait_for(dir: &Path, ranks: &[usize], expected: &Expected, options: &WaitOptions) -> Waited {
    let started = Instant::now();
    let mut last_line: Option<Instant> = None;
    let mut waited = Waited::default();
    let mut pending: Vec<usize> = ranks.to_vec();
    loop {
        let mut still = Vec::new();
        for &rank in &pending {
            match state(dir, rank, expected) {
                RankState::Stopped(record) => {
                    waited.stopped.insert(rank, *record);
                }
                RankState::Running => {
                    waited.absent.insert(
                        rank,
                        format!("no {} yet", file_name(&RankFiles::in_dir(dir, rank).done)),
                    );
                    still.push(rank);
                }
                RankState::Stale(why) => {
                    waited.absent.insert(rank, why);
                    still.push(rank);
                }
            }
        }
        for rank in waited.stopped.keys() {
            waited.absent.remove(rank);
        }
        pending = still;
        let elapsed = started.elapsed();
        if pending.is_empty() || elapsed >= options.timeout {
            break;
        }
        if options.interrupted.load(Ordering::Relaxed) {
            waited.interrupted = true;
            break;
        }
        let due = last_line.is_none_or(|last| last.elapsed() >= Duration::from_secs(10));
        if due && !options.quiet {
            last_line = Some(Instant::now());
            eprintln!(
                "rank 0: waiting for rank(s) {} ({} of {} finished), {:.0} s of {:.0} s",
                join(&pending),
                ranks.len() - pending.len(),
                ranks.len(),
                elapsed.as_secs_f64(),
                options.timeout.as_secs_f64()
            );
        }
        std::thread::sleep(options.poll.min(options.timeout.saturating_sub(elapsed)));
    }
    waited
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().to_string(),
    )
}

/// `1, 3, 4`.
pub fn join(ranks: &[usize]) -> String {
    ranks
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::shards::done::RankStatus;
    use crate::distributed::RankInfo;

    fn expected() -> Expected {
        Expected {
            world_size: 3,
            dataset_fingerprint: "d".into(),
            config_fingerprint: "c".into(),
        }
    }

    fn write_done(dir: &Path, rank: usize, config: &str) {
        let info = RankInfo {
            rank,
            world_size: 3,
            local_rank: rank,
            ..RankInfo::single()
        };
        let mut record = RankDone::new(&info, "host", "d".into(), config.into());
        record.status = RankStatus::Complete;
        done::write(&RankFiles::in_dir(dir, rank).done, &record).unwrap();
    }

    #[test]
    fn returns_at_once_when_all_are_done_and_names_the_rest_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        write_done(dir.path(), 1, "c");
        write_done(dir.path(), 2, "old");
        let stop = AtomicBool::new(false);
        let options = WaitOptions {
            timeout: Duration::ZERO,
            poll: Duration::from_millis(10),
            quiet: true,
            interrupted: &stop,
        };
        let waited = wait_for(dir.path(), &[1, 2], &expected(), &options);
        assert_eq!(waited.stopped.keys().copied().collect::<Vec<_>>(), [1]);
        let why = &waited.absent[&2];
        assert!(why.contains("another configuration"), "{why}");

        write_done(dir.path(), 2, "c");
        let waited = wait_for(dir.path(), &[1, 2], &expected(), &options);
        assert_eq!(waited.stopped.len(), 2);
        assert!(waited.absent.is_empty());
    }

    #[test]
    fn a_missing_file_is_running() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(state(dir.path(), 1, &expected()), RankState::Running);
    }

    #[test]
    fn ctrl_c_stops_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(true);
        let options = WaitOptions {
            timeout: Duration::from_secs(3600),
            poll: Duration::from_millis(10),
            quiet: true,
            interrupted: &stop,
        };
        let waited = wait_for(dir.path(), &[1], &expected(), &options);
        assert!(waited.interrupted);
        assert!(waited.absent.contains_key(&1));
    }
}
