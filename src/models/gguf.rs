//! GGUF files (the GGML container of llama.cpp) through candle: metadata, quantized tensors read
//! straight onto a device, dense tensors served to a `VarBuilder`, and writing a file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

/// Why a GGUF file could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: cannot open: {source}", path = .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable GGUF file: {source}", path = .path.display())]
    Parse {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("cannot write {path}: {source}\n  fix: check that the directory exists and is writable", path = .path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}", path = .path.display())]
    Write {
        path: PathBuf,
        source: candle_core::Error,
    },
}

/// An open GGUF file: its header (metadata and tensor table) in memory, tensor data read on demand.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: Mutex<BufReader<File>>,
}

impl GgufFile {
    /// Reads the header of `path` (no tensor data yet).
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let file = File::open(path).map_err(|source| GgufError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|source| GgufError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader: Mutex::new(reader),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every metadata entry.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// A string metadata value, `None` when absent or not a string.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        match self.content.metadata.get(key) {
            Some(Value::String(text)) => Some(text),
            _ => None,
        }
    }

    /// Shape and format of tensor `name`, if the file has it.
    pub fn tensor_info(&self, name: &str) -> Option<(&Shape, GgmlDType)> {
        self.content
            .tensor_infos
            .get(name)
            .map(|info| (&info.shape, info.ggml_dtype))
    }

    /// Names of every tensor in the file (unordered).
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.content.tensor_infos.keys().map(String::as_str)
    }

    /// Tensor `name` as stored (quantized blocks or a dense GGML type), placed on `device`.
    /// A missing name is candle's `CannotFindTensor`.
    pub fn qtensor(&self, name: &str, device: &Device) -> candle_core::Result<QTensor> {
        let Some(info) = self.content.tensor_infos.get(name) else {
            return Err(candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            });
        };
        let mut reader = self.reader.lock().map_err(|_| {
            candle_core::Error::Msg(format!("{}: reader lock poisoned", self.path.display()))
        })?;
        info.read(&mut *reader, self.content.tensor_data_offset, device)
    }

    /// Tensor `name` as a dense tensor in `dtype` on `device`: read and converted on the CPU, so only
    /// the final bytes reach the device.
    pub fn dense(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        self.qtensor(name, &Device::Cpu)?
            .dequantize(&Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    }

    /// A `VarBuilder` over the file's tensors (dense, in `dtype` on `device`).
    pub fn var_builder(self: &Arc<Self>, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(DenseBackend(self.clone())), dtype, device.clone())
    }
}

/// Serves a GGUF file's tensors to a `VarBuilder`, dequantized.
struct DenseBackend(Arc<GgufFile>);

impl SimpleBackend for DenseBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.0.dense(name, dtype, device)?;
        if tensor.shape() != &shape {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape,
                got: tensor.shape().clone(),
            });
        }
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.dense(name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.tensor_info(name).is_some()
    }
}

/// Writes `tensors` (name, tensor in any GGML type) with `metadata` to `path` (created or replaced).
pub fn write_file(
    path: &Path,
    metadata: &[(&str, Value)],
    tensors: &[(String, Arc<QTensor>)],
) -> Result<(), GgufError> {
    let file = File::create(path).map_err(|source| GgufError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    let mut writer = BufWriter::new(file);
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors
        .iter()
        .map(|(name, tensor)| (name.as_str(), tensor.as_ref()))
        .collect();
    gguf_file::write(&mut writer, &metadata, &tensors).map_err(|source| GgufError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    use std::io::Write;
    writer.flush().map_err(|source| GgufError::Create {
        path: path.to_path_buf(),
        source,
    })
}
