//! Pre-quantized BLIP models in one GGUF file (`vlmrun quantize`): writing one from a Hugging
//! Face directory, checking one without reading its tensor data (`vlmrun doctor`), and loading
//! one without quantizing again.
//!
//! Layout (`vlmrun.gguf_layout` 1): every projection under the name the model gives it, as the
//! model multiplies with it: query rows pre-scaled by `1/sqrt(head_dim)`, the text
//! query/key/value stacked into `attention.self.qkv` and the cross-attention key/value into
//! `crossattention.self.key_value`; the weight in its GGML format (or dense when no block size
//! fits), the bias in f32. Every other tensor (embeddings, LayerNorms, LM head) under its
//! Hugging Face name in f32 or f16. Metadata: `general.architecture` = `blip`,
//! `blip.config_json` (the config.json text), the format, the vlmrun version, the source model
//! and revision, and where the tokenizer is.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::config::BlipConfig;
use super::weights::{classify_build_error, BlipWeights, LoadError};
use super::BlipForConditionalGeneration;
use crate::models::gguf::{write_file, GgufFile};
use crate::models::projections::ProjectionLoader;
use crate::models::quantize::{format_name, parse_format, QuantizationSummary, FORMAT_NAMES};

/// `general.architecture` of a vlmrun BLIP file.
pub const ARCHITECTURE: &str = "blip";
/// The layout this vlmrun writes and reads (`vlmrun.gguf_layout`).
pub const LAYOUT_VERSION: u32 = 1;

/// Metadata keys.
pub mod keys {
    pub const ARCHITECTURE: &str = "general.architecture";
    pub const NAME: &str = "general.name";
    pub const CONFIG_JSON: &str = "blip.config_json";
    pub const LAYOUT: &str = "vlmrun.gguf_layout";
    pub const QUANTIZATION: &str = "vlmrun.quantization";
    pub const DENSE_DTYPE: &str = "vlmrun.dense_dtype";
    pub const VERSION: &str = "vlmrun.version";
    pub const SOURCE_MODEL: &str = "vlmrun.source.model";
    pub const SOURCE_REVISION: &str = "vlmrun.source.revision";
    pub const TOKENIZER: &str = "vlmrun.tokenizer";
}

/// Whether `path` names a GGUF file (by its extension).
pub fn is_gguf_path(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("gguf"))
}

/// What to write: a model directory quantized to `target`.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Hugging Face style directory (config.json + safetensors).
    pub model_dir: PathBuf,
    pub target: GgmlDType,
    /// Storage of the tensors that are not quantized: f32 or f16.
    pub dense_dtype: DType,
    /// `model.source` as the user gave it (directory or hub id), recorded in the file.
    pub source: String,
    /// Revision of the source (hub revision or commit; `local` for a directory).
    pub revision: String,
    /// Where the tokenizer is: a path to tokenizer.json or a hub id.
    pub tokenizer: String,
}

/// What [`export`] wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub quantization: QuantizationSummary,
    /// Tensors written (projections' weights and biases, and the dense tensors).
    pub tensors: usize,
    /// Bytes of tensor data written.
    pub tensor_bytes: usize,
}

/// Quantizes the model of `request.model_dir` on the CPU and writes it with its metadata to `out`.
pub fn export(request: &ExportRequest, out: &Path) -> Result<ExportSummary, LoadError> {
    if !matches!(request.dense_dtype, DType::F32 | DType::F16) {
        return Err(LoadError::Gguf {
            path: out.to_path_buf(),
            problem: format!(
                "dense tensors can be stored in f32 or f16, not {}",
                request.dense_dtype.as_str()
            ),
            fix: "pass f32 or f16".to_string(),
        });
    }
    let weights = BlipWeights::locate(&request.model_dir)?;
    weights.verify()?;
    let config_json = weights.config_text()?;
    let open = || weights.backend();
    // Dense tensors are recorded as the model reads them; projections are read through `staging`.
    let dense_names = Arc::new(Mutex::new(BTreeSet::new()));
    let recording = Recording {
        inner: open()?,
        names: dense_names.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(recording), DType::F32, Device::Cpu);
    let staging = VarBuilder::from_backend(open()?, DType::F32, Device::Cpu);
    let mut projections = ProjectionLoader::quantizing(request.target, staging).recording();
    BlipForConditionalGeneration::new_with_projections(&weights.config, vb, &mut projections)
        .map_err(|err| classify_build_error(err, &weights.dir))?;
    let (built, quantization) = projections.into_built();

    let build_error = |err: candle_core::Error| LoadError::Build {
        dir: weights.dir.clone(),
        source: err,
    };
    let dense_format = match request.dense_dtype {
        DType::F16 => GgmlDType::F16,
        _ => GgmlDType::F32,
    };
    let as_dense = |tensor: &Tensor, format: GgmlDType| -> candle_core::Result<Arc<QTensor>> {
        Ok(Arc::new(QTensor::quantize(
            &tensor.to_dtype(DType::F32)?.contiguous()?,
            format,
        )?))
    };
    let mut tensors: Vec<(String, Arc<QTensor>)> = Vec::new();
    let source = open()?;
    let names = dense_names
        .lock()
        .map(|names| names.clone())
        .map_err(|_| LoadError::Build {
            dir: weights.dir.clone(),
            source: candle_core::Error::Msg("tensor name record poisoned".to_string()),
        })?;
    for name in names {
        let tensor = source
            .get_unchecked(&name, DType::F32, &Device::Cpu)
            .map_err(build_error)?;
        tensors.push((name, as_dense(&tensor, dense_format).map_err(build_error)?));
    }
    for (name, linear) in built {
        let weight = match (linear.qtensor(), linear.dense_weight()) {
            (Some(q), _) => q.clone(),
            (None, Some(w)) => as_dense(w, dense_format).map_err(build_error)?,
            (None, None) => continue,
        };
        tensors.push((format!("{name}.weight"), weight));
        if let Some(bias) = linear.bias() {
            tensors.push((
                format!("{name}.bias"),
                as_dense(bias, GgmlDType::F32).map_err(build_error)?,
            ));
        }
    }
    let tensor_bytes = tensors.iter().map(|(_, t)| t.storage_size_in_bytes()).sum();
    let dir_name = request
        .model_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| request.source.clone());
    let text = |s: &str| Value::String(s.to_string());
    let metadata = [
        (keys::ARCHITECTURE, text(ARCHITECTURE)),
        (keys::NAME, text(&dir_name)),
        (keys::CONFIG_JSON, Value::String(config_json)),
        (keys::LAYOUT, Value::U32(LAYOUT_VERSION)),
        (keys::QUANTIZATION, text(&format_name(request.target))),
        (keys::DENSE_DTYPE, text(request.dense_dtype.as_str())),
        (keys::VERSION, text(env!("CARGO_PKG_VERSION"))),
        (keys::SOURCE_MODEL, text(&request.source)),
        (keys::SOURCE_REVISION, text(&request.revision)),
        (keys::TOKENIZER, text(&request.tokenizer)),
    ];
    write_file(out, &metadata, &tensors).map_err(|err| LoadError::GgufFile(Box::new(err)))?;
    Ok(ExportSummary {
        quantization,
        tensors: tensors.len(),
        tensor_bytes,
    })
}

/// The metadata of a vlmrun BLIP GGUF file, checked.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub config: BlipConfig,
    /// `vlmrun.gguf_layout` (only [`LAYOUT_VERSION`] is accepted).
    pub layout: u32,
    /// The format the projections were quantized for.
    pub quantization: GgmlDType,
    /// Storage of the tensors that are not quantized (`f32` or `f16`), as recorded.
    pub dense_dtype: Option<String>,
    /// Tokenizer reference as recorded (path or hub id).
    pub tokenizer: Option<String>,
    pub source_model: Option<String>,
    pub source_revision: Option<String>,
    pub vlmrun_version: Option<String>,
}

/// An opened vlmrun BLIP GGUF file.
pub struct BlipGguf {
    file: Arc<GgufFile>,
    pub header: GgufHeader,
}

impl BlipGguf {
    /// Opens `path` and checks its metadata (architecture, layout, config, format).
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let file = GgufFile::open(path).map_err(|err| LoadError::GgufFile(Box::new(err)))?;
        let header = read_header(&file)?;
        Ok(Self {
            file: Arc::new(file),
            header,
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The file (header and tensor table).
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Checks every tensor [`BlipGguf::load`] would read (present, shape implied by the embedded
    /// config) against the file's tensor table, reading no tensor data: the model is built
    /// through the same code with placeholders (one element each, broadcast) for its tensors.
    /// The errors are the ones `load` gives.
    pub fn check_tensors(&self) -> Result<(), LoadError> {
        let vb = self.file.checking_var_builder();
        let mut projections =
            ProjectionLoader::checking_gguf(self.file.clone(), self.header.quantization);
        BlipForConditionalGeneration::new_with_projections(
            &self.header.config,
            vb,
            &mut projections,
        )
        .map(drop)
        .map_err(|err| self.explain(classify_build_error(err, self.path())))
    }

    /// Builds the model in `dtype` on `device`: quantized projections go to the device as stored,
    /// dense tensors are converted on the CPU first.
    pub fn load(
        &self,
        dtype: DType,
        device: &Device,
    ) -> Result<BlipForConditionalGeneration, LoadError> {
        let vb = self.file.var_builder(dtype, device);
        let mut projections =
            ProjectionLoader::from_gguf(self.file.clone(), self.header.quantization);
        BlipForConditionalGeneration::new_with_projections(
            &self.header.config,
            vb,
            &mut projections,
        )
        .map_err(|err| self.explain(classify_build_error(err, self.path())))
    }

    /// Rewords tensor errors for a GGUF file (its config is embedded, the fix is re-writing it).
    fn explain(&self, err: LoadError) -> LoadError {
        let path = self.path().to_path_buf();
        let fix = "write the file again with `vlmrun quantize --model DIR --to FORMAT --out FILE.gguf` (it must come from `vlmrun quantize` of this version's layout)".to_string();
        match err {
            LoadError::MissingTensor { name, .. } => LoadError::Gguf {
                path,
                problem: format!("tensor {name} is missing"),
                fix,
            },
            LoadError::WrongShape {
                name,
                expected,
                found,
            } => LoadError::Gguf {
                path,
                problem: format!(
                    "tensor {name} has shape {found:?}, the embedded config ({}) implies {expected:?}",
                    keys::CONFIG_JSON
                ),
                fix,
            },
            other => other,
        }
    }
}

/// Loads a GGUF file written by `vlmrun quantize`. `requested` is the configured
/// `quantization`: `None` takes the file's format; a different format than the file's is an
/// error (a GGUF file is never quantized again).
pub fn load(
    path: &Path,
    dtype: DType,
    device: &Device,
    requested: Option<GgmlDType>,
) -> Result<BlipForConditionalGeneration, LoadError> {
    let gguf = BlipGguf::open(path)?;
    check_requested(path, gguf.header.quantization, requested)?;
    let model = gguf.load(dtype, device)?;
    tracing::info!(
        "loaded {} ({} projections, no quantization at load)",
        path.display(),
        format_name(gguf.header.quantization)
    );
    Ok(model)
}

/// The rule for `quantization` with a GGUF model: `none` or the file's own format.
pub fn check_requested(
    path: &Path,
    in_file: GgmlDType,
    requested: Option<GgmlDType>,
) -> Result<(), LoadError> {
    match requested {
        Some(format) if format != in_file => Err(LoadError::Gguf {
            path: path.to_path_buf(),
            problem: format!(
                "the file holds {} weights but quantization is {}",
                format_name(in_file),
                format_name(format)
            ),
            fix: format!(
                "set quantization to none or {} (a GGUF model is used as stored), or write a {} file with `vlmrun quantize --to {}`",
                format_name(in_file),
                format_name(format),
                format_name(format)
            ),
        }),
        _ => Ok(()),
    }
}

fn read_header(file: &GgufFile) -> Result<GgufHeader, LoadError> {
    let path = file.path().to_path_buf();
    let bad = |problem: String, fix: &str| LoadError::Gguf {
        path: path.clone(),
        problem,
        fix: fix.to_string(),
    };
    let rewrite = "write it with `vlmrun quantize --model DIR --to FORMAT --out FILE.gguf`";
    match file.metadata_str(keys::ARCHITECTURE) {
        Some(ARCHITECTURE) => {}
        Some(other) => {
            return Err(bad(
                format!("{} is `{other}`, vlmrun loads `{ARCHITECTURE}` files", keys::ARCHITECTURE),
                "point model.source at a BLIP model directory or a GGUF file written by `vlmrun quantize`",
            ))
        }
        None => return Err(bad(format!("no {} (not a vlmrun BLIP file)", keys::ARCHITECTURE), rewrite)),
    }
    match file.metadata().get(keys::LAYOUT).map(|v| v.to_u32()) {
        Some(Ok(LAYOUT_VERSION)) => {}
        Some(Ok(other)) => {
            return Err(bad(
                format!(
                    "{} is {other}, this vlmrun reads layout {LAYOUT_VERSION}",
                    keys::LAYOUT
                ),
                "write it again with this version's `vlmrun quantize`",
            ))
        }
        _ => return Err(bad(format!("no u32 {}", keys::LAYOUT), rewrite)),
    }
    let Some(config_json) = file.metadata_str(keys::CONFIG_JSON) else {
        return Err(bad(
            format!("no {} (the model's config.json)", keys::CONFIG_JSON),
            rewrite,
        ));
    };
    let config = BlipConfig::from_json_str(config_json).map_err(|err| {
        bad(
            format!("{} does not parse: {err}", keys::CONFIG_JSON),
            rewrite,
        )
    })?;
    let Some(name) = file.metadata_str(keys::QUANTIZATION) else {
        return Err(bad(format!("no {}", keys::QUANTIZATION), rewrite));
    };
    let quantization = parse_format(name).ok_or_else(|| {
        bad(
            format!(
                "{} is `{name}`, expected one of {}",
                keys::QUANTIZATION,
                FORMAT_NAMES.join(", ")
            ),
            rewrite,
        )
    })?;
    let owned = |key: &str| file.metadata_str(key).map(str::to_string);
    Ok(GgufHeader {
        config,
        layout: LAYOUT_VERSION,
        quantization,
        dense_dtype: owned(keys::DENSE_DTYPE),
        tokenizer: owned(keys::TOKENIZER),
        source_model: owned(keys::SOURCE_MODEL),
        source_revision: owned(keys::SOURCE_REVISION),
        vlmrun_version: owned(keys::VERSION),
    })
}

/// Records the names of the tensors a model reads through it (the dense ones, when the
/// projections are read through another `VarBuilder`).
struct Recording {
    inner: Box<dyn SimpleBackend>,
    names: Arc<Mutex<BTreeSet<String>>>,
}

impl Recording {
    /// Adds `name` to the names read.
    fn record(&self, name: &str) -> candle_core::Result<()> {
        self.names
            .lock()
            .map_err(|_| candle_core::Error::Msg("tensor name record poisoned".to_string()))?
            .insert(name.to_string());
        Ok(())
    }
}

impl SimpleBackend for Recording {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.inner.get(shape, name, init, dtype, device)?;
        self.record(name)?;
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.inner.get_unchecked(name, dtype, device)?;
        self.record(name)?;
        Ok(tensor)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}
