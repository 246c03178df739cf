//! What the binary carries so it runs from any directory: the demo model (`models/demo-blip`: the
//! tiny BLIP trained on the sample images by `scripts/make-demo-model.sh`, labelled `demo` by its
//! `vlmrun-model.json`, see `models::label`) and the sample dataset (`tests/fixtures/samples.jsonl` and its images), embedded with
//! `include_bytes!` and unpacked on first use into the data directory:
//!
//! `$VLMRUN_DATA_DIR`, else the platform data directory + `vlmrun` (`$XDG_DATA_HOME/vlmrun`, i.e.
//! `~/.local/share/vlmrun` on Linux; `~/Library/Application Support/vlmrun` on macOS), then
//! `<version>/models/demo-blip/` and `<version>/samples/`.
//!
//! The defaults `model.source: models/demo-blip` and `data.path: tests/fixtures/samples.jsonl` are
//! relative to the working directory. When a run leaves them at their default and the working
//! directory does not have them (anywhere outside the repository), they point at the unpacked copies
//! instead. Unpacking compares each file with the embedded bytes and rewrites only what differs, so
//! a damaged or older copy repairs itself; files are written to a temporary name and renamed, so
//! ranks unpacking at once never see half a file.

use std::path::{Path, PathBuf};

/// The default `model.source`, relative to the working directory.
pub const DEMO_MODEL_SOURCE: &str = "models/demo-blip";
/// The default `data.path`, relative to the working directory.
pub const SAMPLES_PATH: &str = "tests/fixtures/samples.jsonl";

/// Overrides the data directory the embedded files are unpacked into.
pub const DATA_DIR_VAR: &str = "VLMRUN_DATA_DIR";

/// One embedded file: its path below the version directory and its bytes.
struct Embedded {
    path: &'static str,
    bytes: &'static [u8],
}

macro_rules! embed {
    ($dest:literal, $src:literal) => {
        Embedded {
            path: $dest,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $src)),
        }
    };
}

const DEMO_MODEL: &[Embedded] = &[
    embed!(
        "models/demo-blip/config.json",
        "models/demo-blip/config.json"
    ),
    embed!(
        "models/demo-blip/model.safetensors",
        "models/demo-blip/model.safetensors"
    ),
    embed!(
        "models/demo-blip/tokenizer.json",
        "models/demo-blip/tokenizer.json"
    ),
    embed!(
        "models/demo-blip/vlmrun-model.json",
        "models/demo-blip/vlmrun-model.json"
    ),
];

const SAMPLES: &[Embedded] = &[
    embed!("samples/samples.jsonl", "tests/fixtures/samples.jsonl"),
    embed!(
        "samples/images/astronaut.png",
        "tests/fixtures/images/astronaut.png"
    ),
    embed!(
        "samples/images/chelsea.png",
        "tests/fixtures/images/chelsea.png"
    ),
    embed!(
        "samples/images/coffee.png",
        "tests/fixtures/images/coffee.png"
    ),
    embed!(
        "samples/images/rocket.png",
        "tests/fixtures/images/rocket.png"
    ),
    embed!(
        "samples/images/tall_37x211.png",
        "tests/fixtures/images/tall_37x211.png"
    ),
    embed!(
        "samples/images/wide_300x41.png",
        "tests/fixtures/images/wide_300x41.png"
    ),
    embed!(
        "samples/images/tiny_5x3.png",
        "tests/fixtures/images/tiny_5x3.png"
    ),
    embed!(
        "samples/images/upscaled_20x20.png",
        "tests/fixtures/images/upscaled_20x20.png"
    ),
    embed!(
        "samples/images/rgba_50x40.png",
        "tests/fixtures/images/rgba_50x40.png"
    ),
    embed!(
        "samples/images/gray_45x60.png",
        "tests/fixtures/images/gray_45x60.png"
    ),
    embed!(
        "samples/images/palette_40x30.png",
        "tests/fixtures/images/palette_40x30.png"
    ),
    embed!(
        "samples/images/exif_rot6_48x32.png",
        "tests/fixtures/images/exif_rot6_48x32.png"
    ),
];

/// Unpacking failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot unpack the built-in {what} into {}: {source}\n  fix: set {DATA_DIR_VAR} to a writable directory, or set {key} to your own files", path.display())]
pub struct UnpackError {
    what: &'static str,
    key: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The directory this version unpacks into (nothing is written).
pub fn version_dir() -> PathBuf {
    let base = std::env::var_os(DATA_DIR_VAR)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .or_else(|| dirs::data_dir().map(|dir| dir.join("vlmrun")))
        .unwrap_or_else(|| std::env::temp_dir().join("vlmrun"));
    base.join(env!("CARGO_PKG_VERSION"))
}

/// Where the demo model is (or will be) unpacked.
pub fn demo_model_dir() -> PathBuf {
    version_dir().join(DEMO_MODEL_SOURCE)
}

/// Where the sample manifest is (or will be) unpacked.
pub fn samples_manifest() -> PathBuf {
    version_dir().join("samples/samples.jsonl")
}

/// Unpacks the demo model; returns its directory.
pub fn unpack_demo_model() -> Result<PathBuf, UnpackError> {
    unpack(DEMO_MODEL, "demo model", "model.source")?;
    Ok(demo_model_dir())
}

/// Unpacks the sample dataset; returns the manifest.
pub fn unpack_samples() -> Result<PathBuf, UnpackError> {
    unpack(SAMPLES, "sample images", "data.path")?;
    Ok(samples_manifest())
}

/// True when `path` lies in this version's unpack directory.
pub fn is_unpacked_path(path: &Path) -> bool {
    path.starts_with(version_dir())
}

fn unpack(files: &[Embedded], what: &'static str, key: &'static str) -> Result<(), UnpackError> {
    let root = version_dir();
    for file in files {
        let path = root.join(file.path);
        write_if_different(&path, file.bytes).map_err(|source| UnpackError {
            what,
            key,
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

fn write_if_different(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let same = std::fs::metadata(path).is_ok_and(|meta| meta.len() == bytes.len() as u64)
        && std::fs::read(path).is_ok_and(|existing| existing == bytes);
    if same {
        return Ok(());
    }
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.partial", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_files_match_the_repository_copies() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // Every file of the demo model is embedded, byte for byte.
        let mut files: Vec<String> = std::fs::read_dir(root.join(DEMO_MODEL_SOURCE))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files.len(), DEMO_MODEL.len(), "{files:?}");
        for file in &files {
            let wanted = format!("{DEMO_MODEL_SOURCE}/{file}");
            let found = DEMO_MODEL.iter().find(|f| f.path == wanted);
            assert!(found.is_some(), "{wanted} is not embedded");
            let on_disk = std::fs::read(root.join(&wanted)).unwrap();
            assert_eq!(found.unwrap().bytes, on_disk.as_slice());
        }
        let manifest = std::str::from_utf8(SAMPLES[0].bytes).unwrap();
        // Every image the manifest names is embedded under the same relative path.
        for line in manifest.lines().filter(|l| !l.trim().is_empty()) {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let image = value["image"].as_str().unwrap();
            let wanted = format!("samples/{image}");
            let found = SAMPLES.iter().find(|f| f.path == wanted);
            assert!(found.is_some(), "{image} is not embedded");
            let on_disk = std::fs::read(root.join("tests/fixtures").join(image)).unwrap();
            assert_eq!(found.unwrap().bytes, on_disk.as_slice());
        }
    }

    #[test]
    fn rewrites_a_damaged_copy_and_keeps_a_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b.bin");
        write_if_different(&path, b"hello").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        std::fs::write(&path, b"hellp").unwrap();
        write_if_different(&path, b"hello").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        write_if_different(&path, b"hello").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            modified
        );
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left: {leftovers:?}");
    }
}
