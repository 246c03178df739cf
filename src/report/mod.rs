//! What jobs report and how: the shared environment block, atomic JSON writes (temp file + fsync +
//! rename, so a reader or a crash never sees half a report) and the latency statistics they carry;
//! `html` (report.html; `vqa_html` for `task: vqa`), `lock` (one writer per output directory), `memory` (peak GPU and host memory), `chart` (the SVG plot style), `output` (the output directory)
//! and `progress` (the progress bar or lines).

pub mod chart;
pub mod console;
mod environment;
pub mod html;
pub mod lock;
pub mod memory;
pub mod output;
pub mod progress;
pub mod vqa_html;

pub use environment::{cpu_model, describe as describe_environment, device_name, Environment};

use std::io::Write;
use std::path::Path;

use serde::Serialize;

/// Writes `value` as pretty JSON to `path` atomically.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Writes bytes to `path` atomically (same-directory temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "report".to_string());
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// p50/p95/p99 and mean of a sample, in the sample's unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Linear interpolation between closest ranks (numpy's default). `None` for an empty sample.
    pub fn of(values: &[f64]) -> Option<Percentiles> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let position = q * (sorted.len() - 1) as f64;
            let low = position.floor() as usize;
            let high = position.ceil() as usize;
            let fraction = position - low as f64;
            sorted[low] + (sorted[high] - sorted[low]) * fraction
        };
        Some(Percentiles {
            count: sorted.len(),
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: sorted[sorted.len() - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let p = Percentiles::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(p.p50, 2.5); // numpy.percentile([1,2,3,4], 50)
        assert!((p.p95 - 3.85).abs() < 1e-12); // numpy: 3.85
        assert_eq!(p.mean, 2.5);
        assert_eq!(p.max, 4.0);
        assert!(Percentiles::of(&[]).is_none());
    }

    #[test]
    fn atomic_write_replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        write_json_atomic(&path, &serde_json::json!({"a": 1})).unwrap();
        write_json_atomic(&path, &serde_json::json!({"a": 2})).unwrap();
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back["a"], 2);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
