//! [`LoadError`]: why a model directory could not be loaded, shared by the loaders
//! (`super::weights`, `super::gguf`, `super::load`) and the weight-file checks (`super::verify`),
//! in a file of its own so that neither imports the other for it.

use std::path::PathBuf;

use candle_core::quantized::GgmlDType;

use super::config::ConfigError;
use crate::models::gguf::GgufError;

/// Why a model directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: not found (a BLIP model directory needs config.json next to its weights)", path = .path.display())]
    MissingConfig { path: PathBuf },
    #[error("{path}: cannot read: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}", path = .path.display())]
    Config { path: PathBuf, source: ConfigError },
    #[error("{dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin (download the weights into this directory)", dir = .dir.display())]
    MissingWeights { dir: PathBuf },
    #[error("{path}: malformed shard index: {reason}", path = .path.display())]
    BadIndex { path: PathBuf, reason: String },
    #[error("{path}: weight shard listed in the index does not exist", path = .path.display())]
    MissingShard { path: PathBuf },
    #[error("cannot open weights {files}: {source}")]
    OpenWeights {
        files: String,
        source: candle_core::Error,
    },
    #[error("tensor {name} is missing from the weights in {dir} (is this a BlipForConditionalGeneration checkpoint?)", dir = .dir.display())]
    MissingTensor { name: String, dir: PathBuf },
    #[error("tensor {name} has shape {found:?}, the config implies {expected:?} (config.json and weights disagree)")]
    WrongShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("quantizing the model from {dir} to {format:?}: {source}", dir = .dir.display())]
    Quantize {
        dir: PathBuf,
        format: GgmlDType,
        source: candle_core::Error,
    },
    #[error("building the model from {dir}: {source}", dir = .dir.display())]
    Build {
        dir: PathBuf,
        source: candle_core::Error,
    },
    #[error("{path}: truncated: its header needs {needed} bytes, the file has {found}\n  fix: the download or copy was cut short; fetch the file again (vlmrun fetch ID, or copy it again)", path = .path.display())]
    Truncated {
        path: PathBuf,
        needed: u64,
        found: u64,
    },
    #[error("{path}: not a usable safetensors file: {reason}\n  fix: replace it with the model's original file", path = .path.display())]
    BadWeights { path: PathBuf, reason: String },
    #[error("{path}: not a usable PyTorch checkpoint: {reason}\n  fix: a download or copy cut short leaves a damaged archive; fetch the file again (vlmrun fetch ID, or copy it again), or use the model's model.safetensors", path = .path.display())]
    BadPytorch { path: PathBuf, reason: String },
    #[error("tensor {name} in {path} is stored as {dtype}; the model needs floats (F32, F16, BF16 or F64)\n  fix: this file was converted wrongly or is not a BLIP checkpoint; use the model's original weights", path = .path.display())]
    WrongDtype {
        name: String,
        dtype: String,
        path: PathBuf,
    },
    #[error("tensor {name} in {path} has {count} NaN or infinite value(s) (the first at element {first})\n  fix: the weights are damaged (a diverged training run or a bad conversion); use an earlier checkpoint or the original weights", path = .path.display())]
    NonFinite {
        name: String,
        path: PathBuf,
        count: u64,
        first: u64,
    },
    #[error(transparent)]
    GgufFile(Box<GgufError>),
    /// `config.json` declares another BLIP head than the one asked for (the message names both).
    #[error("{0}")]
    WrongArchitecture(String),
    #[error("{path}: {problem}\n  fix: {fix}", path = .path.display())]
    Gguf {
        path: PathBuf,
        problem: String,
        fix: String,
    },
}
