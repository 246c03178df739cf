//! A BLIP captioning model in a Hugging Face style directory: `config.json` plus
//! `model.safetensors` or a sharded `model.safetensors.index.json` (memory-mapped), or, when neither
//! exists, a PyTorch `pytorch_model.bin` (read through [`super::pth`]); converted to the requested
//! dtype on the requested device, the projections optionally quantized on the
//! way (on the CPU, so that their dense copies never reach the device). [`LoadError`] is every
//! loader's error (this one's, `super::gguf`'s and `super::load`'s).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Shape};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

pub use super::load_error::LoadError;

use super::config::BlipConfig;
use super::BlipForConditionalGeneration;
use crate::models::projections::ProjectionLoader;
use crate::models::quantize::{format_name, QuantizationSummary};

/// How a model directory stores its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// `model.safetensors` or the shards of `model.safetensors.index.json`.
    Safetensors,
    /// `pytorch_model.bin` (torch.save's zip format), used only when no safetensors exist.
    Pytorch,
}

/// The files of a model directory, with its config already parsed.
#[derive(Debug, Clone)]
pub struct BlipWeights {
    pub dir: PathBuf,
    pub config: BlipConfig,
    /// `model.safetensors`, or every shard named by the index (sorted, deduplicated), or
    /// `pytorch_model.bin`.
    pub weight_files: Vec<PathBuf>,
    pub format: WeightFormat,
}

impl BlipWeights {
    /// Finds and parses `config.json` and the weight file(s) in `dir` (safetensors first, else
    /// `pytorch_model.bin`); reads no tensor yet.
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
        let pytorch = dir.join(super::pth::PTH_FILE);
        let (weight_files, format) = if single.is_file() {
            (vec![single], WeightFormat::Safetensors)
        } else if index.is_file() {
            (shard_files(dir, &index)?, WeightFormat::Safetensors)
        } else if pytorch.is_file() {
            (vec![pytorch], WeightFormat::Pytorch)
        } else {
            return Err(LoadError::MissingWeights {
                dir: dir.to_path_buf(),
            });
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weight_files,
            format,
        })
    }

    /// Checks every weight file as loading needs it ([`super::verify::check_file`], or
    /// [`super::pth::read_checked`] for a PyTorch file): complete, float tensors only, every
    /// value finite.
    pub fn verify(&self) -> Result<(), LoadError> {
        for file in &self.weight_files {
            match self.format {
                WeightFormat::Safetensors => {
                    super::verify::check_file(file)?;
                }
                WeightFormat::Pytorch => {
                    super::pth::read_checked(file)?;
                }
            }
        }
        Ok(())
    }

    /// The tensors as a candle backend, without the value checks for safetensors (call
    /// [`BlipWeights::verify`] first) and with them for a PyTorch file (read once, checked, kept
    /// in CPU memory).
    pub fn backend(&self) -> Result<Box<dyn SimpleBackend>, LoadError> {
        match self.format {
            WeightFormat::Safetensors => {
                // SAFETY: the files are mapped read-only; like every mmap user we rely on nobody
                // truncating them while the model is being built (tensors are copied out during `new`).
                let mapped = unsafe {
                    candle_core::safetensors::MmapedSafetensors::multi(&self.weight_files)
                }
                .map_err(|source| self.open_error(source))?;
                Ok(Box::new(mapped))
            }
            WeightFormat::Pytorch => {
                let mut tensors = std::collections::HashMap::new();
                for file in &self.weight_files {
                    tensors.extend(super::pth::read_checked(file)?);
                }
                Ok(Box::new(tensors))
            }
        }
    }

    /// Every weight checked ([`BlipWeights::verify`]) and offered as a `VarBuilder` in `dtype` on
    /// `device`, whatever the file format.
    pub fn var_builder(
        &self,
        dtype: DType,
        device: &Device,
    ) -> Result<VarBuilder<'static>, LoadError> {
        if self.format == WeightFormat::Safetensors {
            self.verify()?;
        }
        Ok(VarBuilder::from_backend(
            self.backend()?,
            dtype,
            device.clone(),
        ))
    }

    /// How many values the weight files hold, from the headers (the whole file, checked, for a
    /// PyTorch one).
    pub fn element_count(&self) -> Result<usize, LoadError> {
        let mut count = 0;
        for file in &self.weight_files {
            count += match self.format {
                WeightFormat::Safetensors => super::verify::read_header(file)?
                    .tensors
                    .iter()
                    .map(|entry| entry.shape.iter().product::<usize>())
                    .sum::<usize>(),
                WeightFormat::Pytorch => super::pth::read_checked(file)?
                    .values()
                    .map(|tensor| tensor.elem_count())
                    .sum(),
            };
        }
        Ok(count)
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
        let vb = self.var_builder(dtype, device)?;
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
