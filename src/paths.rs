//! What a path is when it is not the regular file a command expected (a directory, a FIFO, ...), and
//! the messages for writes that fail: a full disk names the path and the free space left.
//!
//! Reading a FIFO where a file is expected would block forever, and "not found" for a directory
//! sends the user looking for a file that is there; so every reader asks [`not_a_file`] first.

use std::path::Path;

/// What `path` is when it exists but is not a regular file (symbolic links followed): "a directory",
/// "a FIFO (named pipe)", ... `None` for a regular file or a path that does not exist.
pub fn not_a_file(path: &Path) -> Option<&'static str> {
    let kind = std::fs::metadata(path).ok()?.file_type();
    if kind.is_file() {
        None
    } else {
        Some(describe(kind))
    }
}

/// What `path` is when it exists but is not a directory. `None` for a directory or a missing path.
pub fn not_a_dir(path: &Path) -> Option<&'static str> {
    let kind = std::fs::metadata(path).ok()?.file_type();
    if kind.is_dir() {
        None
    } else {
        Some(describe(kind))
    }
}

fn describe(kind: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else if kind.is_file() {
        "a file"
    } else {
        "not a regular file"
    }
}

/// Whether a write failed because the file system is full (ENOSPC or a quota). Also recognises the
/// error text of an `io::Error` rebuilt from another error's message (`(os error 28)`).
pub fn is_disk_full(err: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    matches!(err.kind(), std::io::ErrorKind::StorageFull)
        || matches!(err.raw_os_error(), Some(ENOSPC) | Some(EDQUOT))
        || err.to_string().contains("(os error 28)")
}

/// Bytes free to an unprivileged user on the file system holding `path` (its nearest existing
/// ancestor), where the platform says.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| {
        let p = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        p.exists()
    })?;
    let existing = if existing.as_os_str().is_empty() {
        Path::new(".")
    } else {
        existing
    };
    statvfs_free(existing)
}

#[cfg(unix)]
fn statvfs_free(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string and `stats` points to writable memory of the
    // struct's size; statvfs fills it when it returns 0, and only then is it read.
    let status = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if status != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so the struct is initialised.
    let stats = unsafe { stats.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some((stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64))
}

#[cfg(not(unix))]
fn statvfs_free(_path: &Path) -> Option<u64> {
    None
}

/// A byte count for people: `512 B`, `3.4 MiB`, `12.0 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The message for `what` that could not be written at `path`: the cause's first line (its own fix
/// lines dropped, so a message never carries two) and one fix line. A full disk says so with the free
/// space left there; a path in the way (a file where a folder is needed, a folder where a file is)
/// is named as what it is. `free` is the free space, measured by the caller ([`free_bytes`]) so the
/// message can be built and tested without a full disk.
pub fn write_failure(what: &str, path: &Path, cause: &std::io::Error, free: Option<u64>) -> String {
    let shown = path.display();
    let text = cause.to_string();
    let first = text.lines().next().unwrap_or("").trim();
    if is_disk_full(cause) {
        let free = match free {
            Some(bytes) => format!("{} free", human_bytes(bytes)),
            None => "free space unknown".to_string(),
        };
        let folder = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        return format!(
            "cannot write {what} to {shown}: the disk is full, {free} on the file system of {} ({first})\n  fix: free space there, or set output.dir to a disk with room",
            folder.display()
        );
    }
    let in_the_way = match cause.kind() {
        std::io::ErrorKind::IsADirectory => Some((path, "a directory")),
        std::io::ErrorKind::NotADirectory | std::io::ErrorKind::AlreadyExists => path
            .ancestors()
            .filter(|p| !p.as_os_str().is_empty())
            .find_map(|p| not_a_dir(p).map(|kind| (p, kind))),
        _ => None,
    };
    if let Some((blocker, kind)) = in_the_way {
        let needed = if kind == "a directory" {
            "a file"
        } else {
            "a directory"
        };
        return format!(
            "cannot write {what} to {shown}: {} is {kind}, not {needed} ({first})\n  fix: move it away, or set output.dir to another path",
            blocker.display()
        );
    }
    let fix = if cause.kind() == std::io::ErrorKind::PermissionDenied {
        "check that you may write there, or set output.dir elsewhere"
    } else {
        "check that the directory exists and is writable, or change output.dir"
    };
    format!("cannot write {what} to {shown}: {first}\n  fix: {fix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_path_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(not_a_file(&file), None);
        assert_eq!(not_a_file(dir.path()), Some("a directory"));
        assert_eq!(not_a_file(&dir.path().join("missing")), None);
        assert_eq!(not_a_dir(&file), Some("a file"));
        assert_eq!(not_a_dir(dir.path()), None);
        #[cfg(unix)]
        {
            let fifo = dir.path().join("pipe");
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: a NUL-terminated path; mkfifo only creates the node.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            assert_eq!(not_a_file(&fifo), Some("a FIFO (named pipe)"));
        }
    }

    #[test]
    fn a_full_disk_names_the_path_and_the_free_space() {
        let err = std::io::Error::from_raw_os_error(28);
        let path = Path::new("/data/run/predictions.jsonl");
        let message = write_failure("results", path, &err, Some(3 * 1024 * 1024 + 512 * 1024));
        assert!(
            message.starts_with("cannot write results to /data/run/predictions.jsonl: the disk is full, 3.5 MiB free on the file system of /data/run ("),
            "{message}"
        );
        assert_eq!(message.matches("fix:").count(), 1, "{message}");
        // The same cause rebuilt from another error's text (checkpoint writers do this).
        let rebuilt = std::io::Error::other(format!("writing model.safetensors: {err}"));
        assert!(is_disk_full(&rebuilt));
        let message = write_failure("a checkpoint", path, &rebuilt, None);
        assert!(
            message.contains("the disk is full, free space unknown"),
            "{message}"
        );
        // Measured for real on an existing folder: some number of bytes.
        assert!(free_bytes(&std::env::temp_dir().join("no/such/file")).is_some());
    }

    #[test]
    fn a_file_in_the_way_is_named_and_the_cause_is_not_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("afile");
        std::fs::write(&file, b"x").unwrap();
        let target = file.join("sub");
        let err = std::fs::create_dir_all(&target).unwrap_err();
        let message = write_failure("the output directory", &target, &err, None);
        assert!(
            message.contains(&format!("{} is a file, not a directory", file.display())),
            "{message}"
        );
        assert_eq!(message.matches("fix:").count(), 1, "{message}");

        let err = std::fs::write(dir.path(), b"x").unwrap_err();
        let message = write_failure("the report", dir.path(), &err, None);
        assert!(
            message.contains(&format!(
                "{} is a directory, not a file",
                dir.path().display()
            )),
            "{message}"
        );

        let other = std::io::Error::other(
            "cannot access x: boom\n  fix: check that output.dir is writable",
        );
        let message = write_failure("results", &dir.path().join("r.jsonl"), &other, None);
        assert_eq!(message.matches("fix:").count(), 1, "{message}");
        assert!(message.contains("cannot access x: boom"), "{message}");
    }

    #[test]
    fn byte_counts_read_as_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12 * 1024 * 1024 * 1024), "12.0 GiB");
    }
}
