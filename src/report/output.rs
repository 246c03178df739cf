//! The output directory of a job: created, locked, proved writable, and with `fresh` cleared of the
//! job's earlier results; [`output_error`] names what could not be written where.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// The error for `what` that could not be written at `path`.
pub fn output_error(what: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Output {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the output directory and takes its lock exclusively (`super::lock`): the one writer there
/// until the returned lock drops. Another live run holding it is an `Error::Busy` naming it.
pub fn lock_output_dir(dir: &Path) -> Result<super::lock::DirLock, Error> {
    std::fs::create_dir_all(dir)
        .map_err(|source| output_error("the output directory", dir, source))?;
    Ok(super::lock::exclusive(dir)?)
}

/// Creates the output directory, proves it is writable, and with `fresh` deletes the named earlier
/// results in it (the caller holds the directory's lock first, so no live run loses a file).
pub fn prepare_output_dir(dir: &Path, fresh: bool, results: &[&str]) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir)
        .map_err(|source| output_error("the output directory", dir, source))?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"ok").map_err(|source| output_error("files", dir, source))?;
    let _ = std::fs::remove_file(&probe);
    if fresh {
        for name in results {
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(output_error("(removing) an old result", &path, source)),
            }
        }
    }
    Ok(dir.to_path_buf())
}
