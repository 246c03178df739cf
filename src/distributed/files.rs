//! The per-rank files in the shared output directory: `predictions.rank-K.jsonl`, `errors.rank-K.jsonl`,
//! `rank-K.done.json`, `resolved-config.rank-K.yaml` and `settings.rank-K.json` (the settings that made
//! its predictions: `baseline::resume`). Each rank writes only its own, so ranks never
//! write the same file (the one shared file, `world.json`, is created atomically: see `world`).

use std::path::{Path, PathBuf};

use super::DistributedError;

/// Where rank K's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankFiles {
    pub predictions: PathBuf,
    pub errors: PathBuf,
    pub done: PathBuf,
    pub resolved_config: PathBuf,
    pub settings: PathBuf,
}

impl RankFiles {
    pub fn in_dir(dir: &Path, rank: usize) -> RankFiles {
        RankFiles {
            predictions: dir.join(format!("predictions.rank-{rank}.jsonl")),
            errors: dir.join(format!("errors.rank-{rank}.jsonl")),
            done: dir.join(format!("rank-{rank}.done.json")),
            resolved_config: dir.join(format!("resolved-config.rank-{rank}.yaml")),
            settings: dir.join(format!("settings.rank-{rank}.json")),
        }
    }
}

/// The rank a per-rank file name belongs to, or `None` for any other name.
pub fn rank_of(name: &str) -> Option<usize> {
    let number = name
        .strip_prefix("predictions.rank-")
        .and_then(|rest| rest.strip_suffix(".jsonl"))
        .or_else(|| {
            name.strip_prefix("errors.rank-")
                .and_then(|rest| rest.strip_suffix(".jsonl"))
        })
        .or_else(|| {
            name.strip_prefix("rank-")
                .and_then(|rest| rest.strip_suffix(".done.json"))
        })
        .or_else(|| {
            name.strip_prefix("resolved-config.rank-")
                .and_then(|rest| rest.strip_suffix(".yaml"))
        })
        .or_else(|| {
            name.strip_prefix("settings.rank-")
                .and_then(|rest| rest.strip_suffix(".json"))
        })?;
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

/// Deletes a file; a file that is not there is fine.
pub fn remove_if_present(path: &Path) -> Result<(), DistributedError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DistributedError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Deletes every per-rank file of ranks >= `from_rank` (left by an earlier run with a larger world, or by
/// any data-parallel run when a single process starts over).
pub fn remove_ranks_from(dir: &Path, from_rank: usize) -> Result<(), DistributedError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(DistributedError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let stale = name
            .to_str()
            .and_then(rank_of)
            .is_some_and(|rank| rank >= from_rank);
        if stale {
            remove_if_present(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let files = RankFiles::in_dir(Path::new("out"), 12);
        for path in [
            &files.predictions,
            &files.errors,
            &files.done,
            &files.resolved_config,
            &files.settings,
        ] {
            let name = path.file_name().unwrap().to_str().unwrap();
            assert_eq!(rank_of(name), Some(12), "{name}");
        }
        for other in [
            "predictions.jsonl",
            "report.json",
            "world.json",
            "rank-.done.json",
            "rank-x.done.json",
        ] {
            assert_eq!(rank_of(other), None, "{other}");
        }
    }

    #[test]
    fn removing_stale_ranks_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        for rank in 0..4 {
            let files = RankFiles::in_dir(dir.path(), rank);
            std::fs::write(&files.predictions, "").unwrap();
            std::fs::write(&files.done, "{}").unwrap();
        }
        std::fs::write(dir.path().join("predictions.jsonl"), "").unwrap();
        remove_ranks_from(dir.path(), 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "predictions.jsonl",
                "predictions.rank-0.jsonl",
                "predictions.rank-1.jsonl",
                "rank-0.done.json",
                "rank-1.done.json"
            ]
        );
    }
}
