//! Where the projections of a model under construction come from: dense through the model's
//! `VarBuilder`; quantized while loading (each projection read on the CPU in f32, quantized there
//! and only its quantized blocks placed on the device, so its dense copy never reaches the
//! device); or already quantized in a GGUF file written by `vlmrun quantize` (read, or only
//! checked against the file's tensor table).
//!
//! Model code names every projection by its `VarBuilder` prefix and gives a recipe that builds
//! the dense projection from the checkpoint (load, scale, stack); the loader decides where the
//! recipe runs and what becomes of its result.

use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Result};
use candle_nn::VarBuilder;

use super::gguf::{is_dense_format, placeholder, GgufFile};
use super::linear::Linear;
use super::quantize::{format_name, quantize_matrix_onto, QuantizationSummary, Quantizer};

/// Where projection weights come from.
#[derive(Clone)]
enum Source<'a> {
    /// The recipe runs on the model's `VarBuilder` (device, dtype).
    Dense,
    /// The recipe runs on `staging` (CPU, f32, the same checkpoint); the result is quantized to
    /// `target` (or its fallback) on the CPU and placed on the model's device.
    Quantize {
        target: GgmlDType,
        staging: VarBuilder<'a>,
    },
    /// `{name}.weight` and `{name}.bias` are read from the file (written for `target`); the
    /// recipe never runs.
    Gguf {
        file: Arc<GgufFile>,
        target: GgmlDType,
    },
    /// As `Gguf`, but only the names and shapes are checked against the file's tensor table; the
    /// projection is a dense placeholder holding no data (see [`placeholder`]).
    GgufCheck {
        file: Arc<GgufFile>,
        target: GgmlDType,
    },
}

/// Builds the projections of one model (see the module doc), recording what it did.
pub struct ProjectionLoader<'a> {
    source: Source<'a>,
    summary: QuantizationSummary,
    /// Every projection built, by name, when recording (for writing them to a file).
    built: Option<Vec<(String, Linear)>>,
}

impl<'a> ProjectionLoader<'a> {
    /// Dense projections read through the model's `VarBuilder`.
    pub fn dense() -> Self {
        Self::with_source(Source::Dense)
    }

    /// Projections quantized to `target` at load, their weights read through `staging`: a
    /// `VarBuilder` over the same checkpoint on the CPU in f32.
    pub fn quantizing(target: GgmlDType, staging: VarBuilder<'a>) -> Self {
        Self::with_source(Source::Quantize { target, staging })
    }

    /// Projections stored in a GGUF file quantized for `target` (some may be in a fallback
    /// format or dense, as [`Quantizer::format_for`] decided when it was written).
    pub fn from_gguf(file: Arc<GgufFile>, target: GgmlDType) -> Self {
        Self::with_source(Source::Gguf { file, target })
    }

    /// Checks the projections a model asks for against a GGUF file's tensor table (as
    /// [`ProjectionLoader::from_gguf`] would read them) without reading tensor data; the
    /// projections built are placeholders, for checking a file only.
    pub fn checking_gguf(file: Arc<GgufFile>, target: GgmlDType) -> Self {
        Self::with_source(Source::GgufCheck { file, target })
    }

    fn with_source(source: Source<'a>) -> Self {
        Self {
            source,
            summary: QuantizationSummary::default(),
            built: None,
        }
    }

    /// Keeps every projection built, see [`ProjectionLoader::into_built`].
    pub fn recording(mut self) -> Self {
        self.built = Some(Vec::new());
        self
    }

    /// The target format of the quantized projections, `None` for dense ones.
    pub fn target(&self) -> Option<GgmlDType> {
        match &self.source {
            Source::Quantize { target, .. }
            | Source::Gguf { target, .. }
            | Source::GgufCheck { target, .. } => Some(*target),
            Source::Dense => None,
        }
    }

    /// What was quantized so far.
    pub fn summary(&self) -> &QuantizationSummary {
        &self.summary
    }

    /// The projections built (empty unless [`ProjectionLoader::recording`]) and the summary.
    pub fn into_built(self) -> (Vec<(String, Linear)>, QuantizationSummary) {
        (self.built.unwrap_or_default(), self.summary)
    }

    /// The `nn.Linear` `name` under `vb`: `weight` `(out_features, in_features)` and `bias`.
    pub fn linear(
        &mut self,
        vb: &VarBuilder,
        name: &str,
        in_features: usize,
        out_features: usize,
    ) -> Result<Linear> {
        self.load(vb, name, (out_features, in_features), |vb| {
            Linear::load(in_features, out_features, vb.pp(name))
        })
    }

    /// The projection named `vb.pp(name)` with weight shape `(out_features, in_features)`:
    /// `recipe` builds it dense from the tensors under `vb` (given a `VarBuilder` at the same
    /// prefix, on the device the source asks for); the loader then keeps it dense, quantizes it,
    /// or reads the prepared projection from a GGUF file instead.
    pub fn load(
        &mut self,
        vb: &VarBuilder,
        name: &str,
        shape: (usize, usize),
        recipe: impl FnOnce(&VarBuilder) -> Result<Linear>,
    ) -> Result<Linear> {
        let full_name = vb.pp(name).prefix();
        let linear = match self.source.clone() {
            Source::Dense => recipe(vb)?,
            Source::Quantize { target, staging } => {
                let dense = recipe(&at_prefix(&staging, vb))?;
                self.quantize_onto(&full_name, dense, target, vb.device(), vb.dtype())?
            }
            Source::Gguf { file, .. } => {
                read_gguf_projection(&file, &full_name, shape, vb.device(), vb.dtype())?
            }
            Source::GgufCheck { file, .. } => {
                let stored = check_gguf_projection(&file, &full_name, shape)?;
                let bias = match stored.bias {
                    Some(_) => Some(placeholder(&shape.0.into(), vb.dtype())?),
                    None => None,
                };
                Linear::from_parts(placeholder(&shape.into(), vb.dtype())?, bias)
            }
        };
        if let Some(built) = &mut self.built {
            built.push((full_name, linear.clone()));
        }
        Ok(linear)
    }

    /// Quantizes the dense CPU projection `dense` onto `device` (bias and a projection kept dense
    /// converted to `dtype` on the CPU first, so only the final bytes are uploaded).
    fn quantize_onto(
        &mut self,
        name: &str,
        dense: Linear,
        target: GgmlDType,
        device: &Device,
        dtype: DType,
    ) -> Result<Linear> {
        let (Some(weight), bias) = (dense.dense_weight(), dense.bias()) else {
            candle_core::bail!("{name}: the recipe returned a quantized projection");
        };
        let (out_features, in_features) = weight.dims2()?;
        let bias = bias
            .map(|b| b.to_dtype(dtype)?.to_device(device))
            .transpose()?;
        let Some(format) = Quantizer::format_for(target, in_features) else {
            self.summary.kept_dense.push(name.to_string());
            let weight = weight.to_dtype(dtype)?.to_device(device)?;
            return Ok(Linear::from_parts(weight, bias));
        };
        let values = weight
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let qtensor = quantize_matrix_onto(&values, (out_features, in_features), format, device)?;
        if format != target {
            self.summary
                .fallbacks
                .push(format!("{name}: {}", format_name(format)));
        }
        self.summary.quantized_layers += 1;
        self.summary.dense_bytes += out_features * in_features * dtype.size_in_bytes();
        self.summary.quantized_bytes += qtensor.storage_size_in_bytes();
        Linear::from_qtensor(qtensor, bias, dtype)
    }
}

/// `staging` moved to `vb`'s prefix.
fn at_prefix<'a>(staging: &VarBuilder<'a>, vb: &VarBuilder) -> VarBuilder<'a> {
    let prefix = vb.prefix();
    if prefix.is_empty() {
        staging.root()
    } else {
        staging.set_prefix(prefix)
    }
}

/// The tensors of projection `name` in a GGUF file.
struct StoredProjection {
    weight: String,
    format: GgmlDType,
    bias: Option<String>,
}

/// `{name}.weight` checked to be in the file with `shape`, `{name}.bias` (optional) with
/// `shape.0` rows; reads no tensor data.
fn check_gguf_projection(
    file: &GgufFile,
    name: &str,
    shape: (usize, usize),
) -> Result<StoredProjection> {
    let weight = format!("{name}.weight");
    let format = file.check_tensor(&weight, &shape.into())?;
    let bias_name = format!("{name}.bias");
    let bias = match file.tensor_info(&bias_name) {
        Some(_) => {
            file.check_tensor(&bias_name, &shape.0.into())?;
            Some(bias_name)
        }
        None => None,
    };
    Ok(StoredProjection {
        weight,
        format,
        bias,
    })
}

/// `{name}.weight` (quantized: placed on `device` as is; f32/f16/bf16: a dense weight in
/// `dtype`) and the optional `{name}.bias` from a GGUF file, checked first
/// ([`check_gguf_projection`]).
fn read_gguf_projection(
    file: &GgufFile,
    name: &str,
    shape: (usize, usize),
    device: &Device,
    dtype: DType,
) -> Result<Linear> {
    let stored = check_gguf_projection(file, name, shape)?;
    let bias = stored
        .bias
        .map(|bias| file.dense(&bias, dtype, device))
        .transpose()?;
    if is_dense_format(stored.format) {
        Ok(Linear::from_parts(
            file.dense(&stored.weight, dtype, device)?,
            bias,
        ))
    } else {
        Linear::from_qtensor(file.qtensor(&stored.weight, device)?, bias, dtype)
    }
}
