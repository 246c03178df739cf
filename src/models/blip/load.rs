//! Loading a BLIP captioning model from what `model.source` names: a model directory (see
//! [`super::weights`]) or a GGUF file written by `vlmrun quantize` (see [`super::gguf`]). Resolves
//! the source to its files without network access, then dispatches on the kind of file.

use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};

use super::gguf;
use super::weights::{BlipWeights, LoadError};
use super::BlipForConditionalGeneration;
use crate::hub::{self, HubError};

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
