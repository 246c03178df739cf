//! The CPU build doubles as a launcher for the CUDA build.
//!
//! candle's `cuda` feature links libcuda, libcudart, libcublas(Lt), libcurand and libnvrtc as DT_NEEDED,
//! so a CUDA build dies in the dynamic loader, before `main`, on a machine without them (crates.md trap 1).
//! vlmrun therefore ships two binaries side by side: `vlmrun` (CPU build, always starts) and `vlmrun-cuda`
//! (CUDA build). `vlmrun` first runs `vlmrun-cuda` with `VLMRUN_LOADER_PROBE=1`, which exits at once if the
//! loader could resolve every library; if so, `vlmrun` replaces itself with `vlmrun-cuda` (same arguments).
//! Otherwise it keeps running on the CPU and remembers the loader's message, which `doctor` and the device
//! policy report.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::policy::CudaAvailability;

/// File name of the CUDA build next to the CPU build.
pub const COMPANION_NAME: &str = "vlmrun-cuda";
/// Set when a binary is started only to check that the dynamic loader accepts it.
pub const PROBE_ENV: &str = "VLMRUN_LOADER_PROBE";
/// Set by the launcher on the companion it starts (so nothing launches twice).
pub const LAUNCHED_ENV: &str = "VLMRUN_LAUNCHED";
/// Set by the user to keep the CPU build even when the CUDA build could start.
pub const NO_LAUNCH_ENV: &str = "VLMRUN_NO_CUDA_LAUNCH";
/// Overrides where the companion is looked for.
pub const COMPANION_ENV: &str = "VLMRUN_CUDA_BINARY";

/// True when this process was started only as a loader probe.
pub fn is_loader_probe() -> bool {
    std::env::var_os(PROBE_ENV).is_some()
}

/// Where the CUDA companion would be.
pub fn companion_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(COMPANION_ENV) {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join(COMPANION_NAME))
}

/// In the CPU build: starts the CUDA companion in place of this process when it can run here
/// (this function then never returns), else says why not.
pub fn launch_companion_or_explain() -> CudaAvailability {
    let Some(companion) = companion_path().filter(|path| path.is_file()) else {
        return CudaAvailability::NotCompiled;
    };
    if std::env::var_os(LAUNCHED_ENV).is_some() {
        return CudaAvailability::CompanionUnloadable {
            companion,
            loader_error: "the companion at this path is not a CUDA build (it was launched and came back to the CPU build)".to_string(),
        };
    }
    if std::env::var_os(NO_LAUNCH_ENV).is_some() {
        return CudaAvailability::CompanionUnloadable {
            companion,
            loader_error: format!("not started because {NO_LAUNCH_ENV} is set"),
        };
    }
    if let Err(loader_error) = probe_loader(&companion) {
        return CudaAvailability::CompanionUnloadable {
            companion,
            loader_error,
        };
    }
    let error = exec(&companion);
    CudaAvailability::CompanionUnloadable {
        companion,
        loader_error: format!("could not start it: {error}"),
    }
}

/// Runs the companion as a loader probe: Ok when the dynamic loader resolved all its libraries.
pub fn probe_loader(companion: &Path) -> Result<(), String> {
    let output = Command::new(companion)
        .env(PROBE_ENV, "1")
        .output()
        .map_err(|err| format!("could not run it: {err}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.contains("error while loading shared libraries"))
        .or_else(|| stderr.lines().find(|line| !line.trim().is_empty()))
        .unwrap_or("it exited with an error and no message");
    Err(line
        .split("error while loading shared libraries: ")
        .last()
        .unwrap_or(line)
        .trim()
        .to_string())
}

#[cfg(unix)]
fn exec(companion: &Path) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    Command::new(companion)
        .args(std::env::args_os().skip(1))
        .env(LAUNCHED_ENV, "1")
        .exec()
}

#[cfg(not(unix))]
fn exec(_companion: &Path) -> std::io::Error {
    std::io::Error::other("launching the CUDA companion is only supported on Unix")
}
