//! GGUF files (the GGML container of llama.cpp) through candle: metadata, quantized tensors read
//! straight onto a device, dense tensors served to a `VarBuilder`, the tensor table checked
//! without reading any tensor data, and writing a file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek};
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
    /// Refused before candle's reader sees it (`super::gguf_guard`), or a tensor whose dimensions
    /// overflow.
    #[error("{path}: not a readable GGUF file: {reason}\n  fix: copy the file again, or point model.source at a readable GGUF file written by `vlmrun quantize --model DIR --to FORMAT --out FILE.gguf`", path = .path.display())]
    Refused { path: PathBuf, reason: String },
    #[error("{path}: truncated: its tensor table needs {needed} bytes, the file has {size}\n  fix: copy the file again, or write it again with `vlmrun quantize --model DIR --to FORMAT --out FILE.gguf`", path = .path.display())]
    Truncated {
        path: PathBuf,
        needed: u64,
        size: u64,
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
    /// Length of the file in bytes.
    size: u64,
    reader: Mutex<BufReader<File>>,
}

/// How much tensor data a GGUF file holds, from its tensor table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TensorStorage {
    /// Every tensor.
    pub tensors: usize,
    /// Bytes of tensor data.
    pub bytes: u64,
    /// Tensors in a block format (not f32, f16 or bf16).
    pub quantized_tensors: usize,
    /// Bytes of those.
    pub quantized_bytes: u64,
}

impl GgufFile {
    /// Reads the header of `path` (no tensor data yet) and checks that the file is long enough
    /// for every tensor its table lists.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let open_error = |source| GgufError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_error)?;
        let size = file.metadata().map_err(open_error)?.len();
        let mut reader = BufReader::new(file);
        let refused = |reason: String| GgufError::Refused {
            path: path.to_path_buf(),
            reason,
        };
        super::gguf_guard::check_metadata(&mut reader, size).map_err(refused)?;
        reader
            .seek(std::io::SeekFrom::Start(0))
            .map_err(open_error)?;
        let content = Content::read(&mut reader).map_err(|source| GgufError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        for (name, info) in &content.tensor_infos {
            let dims = info.shape.dims();
            if dims
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .is_none()
            {
                return Err(refused(format!(
                    "tensor {name} has dimensions {dims:?}, more elements than this machine can address"
                )));
            }
        }
        let needed = content
            .tensor_infos
            .values()
            .map(|info| {
                content
                    .tensor_data_offset
                    .saturating_add(info.offset)
                    .saturating_add(stored_bytes(info.ggml_dtype, &info.shape))
            })
            .max()
            .unwrap_or(0);
        if needed > size {
            return Err(GgufError::Truncated {
                path: path.to_path_buf(),
                needed,
                size,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            content,
            size,
            reader: Mutex::new(reader),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length of the file in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Tensor count and bytes, in all and in block formats.
    pub fn storage(&self) -> TensorStorage {
        let mut storage = TensorStorage::default();
        for info in self.content.tensor_infos.values() {
            let bytes = stored_bytes(info.ggml_dtype, &info.shape);
            storage.tensors += 1;
            storage.bytes = storage.bytes.saturating_add(bytes);
            if !is_dense_format(info.ggml_dtype) {
                storage.quantized_tensors += 1;
                storage.quantized_bytes = storage.quantized_bytes.saturating_add(bytes);
            }
        }
        storage
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

    /// The format of tensor `name`, checked to be in the file with shape `expected`; the errors
    /// are candle's `CannotFindTensor` and `UnexpectedShape` ("shape mismatch for NAME"), as a
    /// `VarBuilder` gives them. Reads no tensor data.
    pub fn check_tensor(&self, name: &str, expected: &Shape) -> candle_core::Result<GgmlDType> {
        let Some((found, format)) = self.tensor_info(name) else {
            return Err(candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            });
        };
        if found != expected {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: expected.clone(),
                got: found.clone(),
            });
        }
        Ok(format)
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

    /// A `VarBuilder` that checks each tensor asked for against the file's table
    /// ([`GgufFile::check_tensor`]) and hands out a [`placeholder`] instead of its data: building
    /// a model through it checks every name and shape without reading tensor data.
    pub fn checking_var_builder(self: &Arc<Self>) -> VarBuilder<'static> {
        VarBuilder::from_backend(
            Box::new(CheckingBackend(self.clone())),
            DType::F32,
            Device::Cpu,
        )
    }
}

/// A tensor of `shape` in `dtype` on the CPU that holds one zero (broadcast, stride 0): stands in
/// for a tensor whose data is not read.
pub fn placeholder(shape: &Shape, dtype: DType) -> candle_core::Result<Tensor> {
    Tensor::zeros((), dtype, &Device::Cpu)?.broadcast_as(shape)
}

/// Whether `format` stores plain values (not blocks).
pub fn is_dense_format(format: GgmlDType) -> bool {
    matches!(format, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
}

/// Bytes a tensor of `shape` takes in `format` (as candle reads it).
fn stored_bytes(format: GgmlDType, shape: &Shape) -> u64 {
    let blocks = shape.elem_count().div_ceil(format.block_size().max(1));
    (blocks as u64).saturating_mul(format.type_size() as u64)
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
        self.0.check_tensor(name, &shape)?;
        self.0.dense(name, dtype, device)
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

/// Serves placeholders of the shapes a model asks for, each checked against the file's table.
struct CheckingBackend(Arc<GgufFile>);

impl SimpleBackend for CheckingBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        _: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.check_tensor(name, &shape)?;
        placeholder(&shape, dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, _: &Device) -> candle_core::Result<Tensor> {
        match self.0.tensor_info(name) {
            Some((shape, _)) => placeholder(shape, dtype),
            None => Err(candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }),
        }
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
