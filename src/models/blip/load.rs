//! Loading a BLIP captioning model from a Hugging Face style directory: `config.json` plus
//! `model.safetensors` or a sharded `model.safetensors.index.json`, memory-mapped and converted
//! to the requested dtype on the requested device, the projections optionally quantized on the
//! way (on the CPU, so that their dense copies never reach the device); or from a GGUF file
//! written by `vlmrun quantize` (see [`super::gguf`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Shape};
use candle_nn::VarBuilder;

use super::config::{BlipConfig, ConfigError};
use super::gguf;
use super::BlipForConditionalGeneration;
use crate::hub::{self, HubError};
use crate::models::gguf::GgufError;
use crate::models::projections::ProjectionLoader;
use crate::models::quantize::{format_name, QuantizationSummary};

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
    #[error("{dir}: no model.safetensors or model.safetensors.index.json (download the weights into this directory)", dir = .dir.display())]
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
    #[error(transparent)]
    GgufFile(Box<GgufError>),
    #[error("{path}: {problem}\n  fix: {fix}", path = .path.display())]
    Gguf {
        path: PathBuf,
        problem: String,
        fix: String,
    },
}

/// The files of a model directory, with its config already parsed.
#[derive(Debug, Clone)]
pub struct BlipWeights {
    pub dir: PathBuf,
    pub config: BlipConfig,
    /// `model.safetensors`, or every shard named by the index (sorted, deduplicated).
    pub weight_files: Vec<PathBuf>,
}

impl BlipWeights {
    /// Finds and parses `config.json` and the safetensors file(s) in `dir`; reads no tensor yet.
    pub fn locate(dir: &Path) -> Result<Self, LoadError> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(LoadError::MissingConfig { path: config_path });
        }
        let text = std::fs::read_to_string(&config_path).map_err(|source| LoadError::Io {
            path: config_path.clone(),
            source,
        })?;
        let config = BlipConfig::from_json_str(&text).map_err(|source| LoadError::Config {
            path: config_path,
            source,
        })?;

        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let weight_files = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            shard_files(dir, &index)?
        } else {
            return Err(LoadError::MissingWeights {
                dir: dir.to_path_buf(),
            });
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weight_files,
        })
    }

    /// The text of `config.json`.
    pub fn config_text(&self) -> Result<String, LoadError> {
        let path = self.dir.join("config.json");
        std::fs::read_to_string(&path).map_err(|source| LoadError::Io { path, source })
    }

    /// The error for weight files that candle cannot open.
    pub(crate) fn open_error(&self, source: candle_core::Error) -> LoadError {
        LoadError::OpenWeights {
            files: self
                .weight_files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            source,
        }
    }

    /// Memory-maps the weights and builds the model in `dtype` on `device` (dense).
    pub fn load(
        &self,
        dtype: DType,
        device: &Device,
    ) -> Result<BlipForConditionalGeneration, LoadError> {
        self.load_with(dtype, device, None)
    }

    /// [`BlipWeights::load`], the projections quantized to `quantization` when given: each is
    /// read on the CPU in f32, quantized there and placed on `device` in its quantized form, so
    /// the device never holds a dense copy of it. Logs what was quantized and every fallback.
    pub fn load_with(
        &self,
        dtype: DType,
        device: &Device,
        quantization: Option<GgmlDType>,
    ) -> Result<BlipForConditionalGeneration, LoadError> {
        // SAFETY: the files are mapped read-only; like every mmap user we rely on nobody
        // truncating them while the model is being built (tensors are copied out during `new`).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&self.weight_files, dtype, device) }
            .map_err(|source| self.open_error(source))?;
        let mut projections = match quantization {
            None => ProjectionLoader::dense(),
            Some(target) => ProjectionLoader::quantizing(
                target,
                vb.clone().set_device(Device::Cpu).set_dtype(DType::F32),
            ),
        };
        let model =
            BlipForConditionalGeneration::new_with_projections(&self.config, vb, &mut projections)
                .map_err(|e| classify_build_error(e, &self.dir))?;
        if let Some(target) = quantization {
            log_summary(target, dtype, projections.summary());
        }
        Ok(model)
    }
}

/// Turns candle's tensor lookup errors into named [`LoadError`]s (`dir`: where the weights are).
pub(crate) fn classify_build_error(err: candle_core::Error, dir: &Path) -> LoadError {
    match innermost(&err) {
        candle_core::Error::CannotFindTensor { path } => LoadError::MissingTensor {
            name: path.clone(),
            dir: dir.to_path_buf(),
        },
        candle_core::Error::UnexpectedShape { msg, expected, got }
            if msg.starts_with("shape mismatch for ") =>
        {
            LoadError::WrongShape {
                name: msg.trim_start_matches("shape mismatch for ").to_string(),
                expected: dims(expected),
                found: dims(got),
            }
        }
        _ => LoadError::Build {
            dir: dir.to_path_buf(),
            source: err,
        },
    }
}

/// Locates and loads the model in `dir` (see [`BlipWeights`]).
pub fn load_model(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> Result<BlipForConditionalGeneration, LoadError> {
    BlipWeights::locate(dir)?.load(dtype, device)
}

/// Loads the model at `source`: a model directory, its projections quantized at load to
/// `quantization` when given ([`BlipWeights::load_with`]); or a GGUF file from `vlmrun
/// quantize`, used as stored (`quantization` must then be `None` or the file's format).
pub fn load_model_with(
    source: &Path,
    dtype: DType,
    device: &Device,
    quantization: Option<GgmlDType>,
) -> Result<BlipForConditionalGeneration, LoadError> {
    if gguf::is_gguf_path(source) {
        return gguf::load(source, dtype, device, quantization);
    }
    BlipWeights::locate(source)?.load_with(dtype, device, quantization)
}

/// Logs what quantizing to `target` did.
fn log_summary(target: GgmlDType, dtype: DType, summary: &QuantizationSummary) {
    let format = format_name(target);
    tracing::info!(
        "quantized {} projections to {format}: weights {} -> {} bytes",
        summary.quantized_layers,
        summary.dense_bytes,
        summary.quantized_bytes
    );
    if !summary.fallbacks.is_empty() {
        tracing::info!(
            "{format} needs in_features divisible by {}; these projections use q8_0 instead: {}",
            target.block_size(),
            summary.fallbacks.join(", ")
        );
    }
    if !summary.kept_dense.is_empty() {
        tracing::info!(
            "{format}: in_features not divisible by {}, kept dense ({dtype:?}): {}",
            GgmlDType::Q8_0.block_size(),
            summary.kept_dense.join(", ")
        );
    }
}

/// The files a model source stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// A model directory or a GGUF file (what [`load_model_with`] takes).
    pub weights: PathBuf,
    /// The tokenizer.json to use with it.
    pub tokenizer: PathBuf,
}

/// Why `model.source` does not name usable model files.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Resolves `model.source` (a directory, a hub id in the local cache, or a `.gguf` file) without
/// network access. A GGUF file's tokenizer is `tokenizer.json` beside it when present, else the
/// one its metadata names (a path, or a hub id found in the cache at `revision`).
pub fn resolve_model_files(source: &str, revision: &str) -> Result<ModelFiles, SourceError> {
    let path = Path::new(source);
    if !gguf::is_gguf_path(path) {
        let dir = hub::resolve_complete_model_dir(source, revision)?;
        return Ok(ModelFiles {
            tokenizer: dir.join(hub::TOKENIZER_FILE),
            weights: dir,
        });
    }
    if !path.is_file() {
        return Err(LoadError::Gguf {
            path: path.to_path_buf(),
            problem: "no such file".to_string(),
            fix: "write it with `vlmrun quantize --model DIR --to FORMAT --out FILE.gguf`, or point model.source at an existing file".to_string(),
        }
        .into());
    }
    let header = gguf::BlipGguf::open(path)?.header;
    let beside = path
        .parent()
        .unwrap_or(Path::new("."))
        .join(hub::TOKENIZER_FILE);
    let mut tried = vec![beside.display().to_string()];
    if beside.is_file() {
        return Ok(ModelFiles {
            weights: path.to_path_buf(),
            tokenizer: beside,
        });
    }
    if let Some(reference) = &header.tokenizer {
        let recorded = PathBuf::from(reference);
        if recorded.is_file() {
            return Ok(ModelFiles {
                weights: path.to_path_buf(),
                tokenizer: recorded,
            });
        }
        tried.push(reference.clone());
        let rev = header.source_revision.as_deref().unwrap_or(revision);
        if let Ok(dir) = hub::resolve_model_dir(reference, rev) {
            let file = dir.join(hub::TOKENIZER_FILE);
            if file.is_file() {
                return Ok(ModelFiles {
                    weights: path.to_path_buf(),
                    tokenizer: file,
                });
            }
            tried.push(file.display().to_string());
        }
    }
    Err(LoadError::Gguf {
        path: path.to_path_buf(),
        problem: format!("no tokenizer found (tried {})", tried.join(", ")),
        fix: "copy the model's tokenizer.json next to the .gguf file".to_string(),
    }
    .into())
}

fn dims(shape: &Shape) -> Vec<usize> {
    shape.dims().to_vec()
}

fn innermost(err: &candle_core::Error) -> &candle_core::Error {
    match err {
        candle_core::Error::WithBacktrace { inner, .. }
        | candle_core::Error::Context { inner, .. }
        | candle_core::Error::WithPath { inner, .. } => innermost(inner),
        other => other,
    }
}

/// The shard files of a `model.safetensors.index.json` (`weight_map` values), checked to exist.
fn shard_files(dir: &Path, index: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let text = std::fs::read_to_string(index).map_err(|source| LoadError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| LoadError::BadIndex {
        path: index.to_path_buf(),
        reason,
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no \"weight_map\" object".to_string()))?;
    let mut files = BTreeSet::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[{tensor:?}] is not a file name")))?;
        files.insert(file.to_string());
    }
    if files.is_empty() {
        return Err(bad("empty weight_map".to_string()));
    }
    files
        .into_iter()
        .map(|file| {
            let path = dir.join(file);
            if path.is_file() {
                Ok(path)
            } else {
                Err(LoadError::MissingShard { path })
            }
        })
        .collect()
}
