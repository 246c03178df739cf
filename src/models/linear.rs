//! The projection type every model layer uses (`y = x W^T + b`): a dense weight in the
//! activation dtype, or a GGML-quantized weight (q8_0, q4_0, q4k, q6k) read in its blocks by the
//! fused CUDA GEMV (a few rows), dequantized into a regular matmul, or multiplied through candle's
//! `QMatMul` kernel ([`QuantizedMatmul`]), with the bias and epilogue applied by regular ops.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::{cpu_dense, cpu_qgemv};
use crate::kernels::fused::FusedOps;

/// What follows the product `x W^T` in [`Linear::forward_fused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    /// Nothing: the caller fuses the bias into a later kernel.
    None,
    /// `+ bias`.
    Bias,
    /// `gelu_erf(. + bias)`.
    BiasGelu,
    /// `+ bias`, result in f32 (logits).
    BiasF32,
}

/// How a quantized projection multiplies `rows` input rows.
///
/// candle's quantized kernels round the activations to 8-bit blocks too (q8_1 on CUDA, q8_0/q8k
/// on CPU), which costs agreement with the dense model; dequantizing the weight and running a
/// regular matmul in the activation dtype keeps the activations exact (weight-only
/// quantization) and, for many rows, is the faster design (as llama.cpp does for large batches).
/// The kernel reads 2-4x fewer weight bytes, which can pay off for a handful of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantizedMatmul {
    /// From this many input rows on the weight is dequantized and multiplied densely; below it
    /// candle's quantized kernel runs. `0`: always dequantize; `usize::MAX`: always the kernel.
    pub dequantize_from_rows: usize,
    /// Whether a weight-only call with at most 8 rows through the fused CUDA kernels reads the
    /// quantized blocks directly (a GEMV that decodes q8_0, q4_0, q4k and q6k weights in registers)
    /// instead of first writing the whole weight out dense. The activations stay exact either
    /// way; the decoded weight is f32 in registers rather than rounded to the activation dtype.
    /// On the CPU the same choice takes [`cpu_qgemv::quantized_gemv`] for up to
    /// [`cpu_qgemv::MAX_GEMV_ROWS`] rows (each weight row decoded once into an L1 buffer).
    pub direct_gemv: bool,
}

impl QuantizedMatmul {
    /// Weight-only quantization for every call, reading the quantized blocks directly for a
    /// handful of rows (decoding) where a kernel exists.
    pub const WEIGHT_ONLY: Self = Self {
        dequantize_from_rows: 0,
        direct_gemv: true,
    };
    /// Weight-only quantization, the weight dequantized on every call (the design before the
    /// direct GEMV; kept to compare with it).
    pub const DEQUANTIZE: Self = Self {
        dequantize_from_rows: 0,
        direct_gemv: false,
    };
    /// candle's quantized kernel for every call (activations rounded to 8 bits).
    pub const KERNEL: Self = Self {
        dequantize_from_rows: usize::MAX,
        direct_gemv: false,
    };

    /// The choices by name, as `vlmrun fidelity --variants Q:NAME` and `vlmrun bench
    /// --quantized-matmul NAME` spell them.
    pub const NAMED: [(&'static str, Self); 3] = [
        ("weight-only", Self::WEIGHT_ONLY),
        ("dequantize", Self::DEQUANTIZE),
        ("kernel", Self::KERNEL),
    ];

    /// The choice called `name` (see [`Self::NAMED`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, policy)| *policy)
    }

    /// This choice's name in [`Self::NAMED`], `None` for a threshold of its own.
    pub fn name(&self) -> Option<&'static str> {
        Self::NAMED
            .iter()
            .find(|(_, policy)| policy == self)
            .map(|(n, _)| *n)
    }

    /// The valid names, for messages: `weight-only, dequantize, kernel`.
    pub fn names() -> String {
        Self::NAMED.map(|(n, _)| n).join(", ")
    }

    /// Whether a call with `rows` input rows dequantizes the weight.
    pub fn dequantizes(&self, rows: usize) -> bool {
        rows >= self.dequantize_from_rows
    }
}

impl Default for QuantizedMatmul {
    /// Weight-only for every row count: captions do not depend on the batch size, and on a
    /// mid-size random-weight BLIP (docs/precision.md) q8_0 agreed with f32 on 81% of greedy
    /// captions this way against 67% through the kernel.
    fn default() -> Self {
        Self::WEIGHT_ONLY
    }
}

/// An affine projection from `in_features` to `out_features`.
#[derive(Debug, Clone)]
pub enum Linear {
    /// Dense weight `(out_features, in_features)` in the activation dtype, optional bias `(out_features,)`.
    Dense {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    /// Quantized weight `(out_features, in_features)`; the bias `(out_features,)` stays in the
    /// activation dtype.
    Quantized {
        weight: QMatMul,
        /// The quantized tensor behind `weight` (for its format and storage size).
        qtensor: Arc<QTensor>,
        bias: Option<Tensor>,
        /// Activation dtype of the rest of the model (outputs are returned in it).
        dtype: DType,
        /// Kernel or dequantized matmul, by row count.
        matmul: QuantizedMatmul,
    },
}

impl Linear {
    /// Loads `weight` and `bias` under `vb` (HF `nn.Linear` spelling).
    pub fn load(in_features: usize, out_features: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_features, in_features), "weight")?;
        let bias = vb.get(out_features, "bias")?;
        Ok(Self::Dense {
            weight,
            bias: Some(bias),
        })
    }

    /// Loads a projection without bias (HF `nn.Linear(.., bias=False)`).
    pub fn load_no_bias(in_features: usize, out_features: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_features, in_features), "weight")?;
        Ok(Self::Dense { weight, bias: None })
    }

    /// Builds a dense projection from tensors already in memory.
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self::Dense { weight, bias }
    }

    /// Builds a quantized projection from a quantized weight `(out_features, in_features)`; the
    /// outputs are returned in `dtype` (the activation dtype), the bias added in it.
    pub fn from_qtensor(qtensor: QTensor, bias: Option<Tensor>, dtype: DType) -> Result<Self> {
        if qtensor.rank() != 2 {
            candle_core::bail!(
                "a quantized projection weight must be (out_features, in_features), got {:?}",
                qtensor.shape()
            );
        }
        let qtensor = Arc::new(qtensor);
        Ok(Self::Quantized {
            weight: QMatMul::from_arc(qtensor.clone())?,
            qtensor,
            bias,
            dtype,
            matmul: QuantizedMatmul::default(),
        })
    }

    /// The quantized weight, `None` for a dense projection.
    pub fn qtensor(&self) -> Option<&Arc<QTensor>> {
        match self {
            Self::Dense { .. } => None,
            Self::Quantized { qtensor, .. } => Some(qtensor),
        }
    }

    /// The dense weight `(out_features, in_features)`, `None` for a quantized projection.
    pub fn dense_weight(&self) -> Option<&Tensor> {
        match self {
            Self::Dense { weight, .. } => Some(weight),
            Self::Quantized { .. } => None,
        }
    }

    /// Sets how a quantized projection multiplies (no effect on a dense one).
    pub fn set_quantized_matmul(&mut self, policy: QuantizedMatmul) {
        if let Self::Quantized { matmul, .. } = self {
            *matmul = policy;
        }
    }

    /// Stacks projections that read the same input into one whose output is their outputs
    /// concatenated (e.g. query/key/value into one matmul). All must be dense, all with or all
    /// without bias.
    pub fn concat_outputs(parts: &[Linear]) -> Result<Self> {
        let mut weights = Vec::with_capacity(parts.len());
        let mut biases = Vec::with_capacity(parts.len());
        for part in parts {
            let Self::Dense { weight, bias } = part else {
                candle_core::bail!("concat_outputs: quantized projections cannot be stacked (quantize after stacking)");
            };
            weights.push(weight.clone());
            if let Some(b) = bias {
                biases.push(b.clone());
            }
        }
        let weight = Tensor::cat(&weights, 0)?;
        let bias = match biases.len() {
            0 => None,
            n if n == parts.len() => Some(Tensor::cat(&biases, 0)?),
            _ => candle_core::bail!("concat_outputs: either every part or none must have a bias"),
        };
        Ok(Self::Dense { weight, bias })
    }

    /// Multiplies the output (weight rows and bias) by `factor`: folds a constant scale that
    /// follows the projection (such as the attention `1/sqrt(head_dim)`) into the weights.
    pub fn scaled(&self, factor: f64) -> Result<Self> {
        let Self::Dense { weight, bias } = self else {
            candle_core::bail!(
                "scaled: a quantized projection cannot be rescaled (scale before quantizing)"
            );
        };
        let bias = match bias {
            Some(b) => Some((b * factor)?),
            None => None,
        };
        Ok(Self::Dense {
            weight: (weight * factor)?,
            bias,
        })
    }

    /// Number of output features.
    pub fn out_features(&self) -> Result<usize> {
        match self {
            Self::Dense { weight, .. } => weight.dim(0),
            Self::Quantized { qtensor, .. } => qtensor.shape().dim(0),
        }
    }

    /// Number of input features.
    pub fn in_features(&self) -> Result<usize> {
        match self {
            Self::Dense { weight, .. } => weight.dim(1),
            Self::Quantized { qtensor, .. } => qtensor.shape().dim(1),
        }
    }

    /// The bias `(out_features,)`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        match self {
            Self::Dense { bias, .. } | Self::Quantized { bias, .. } => bias.as_ref(),
        }
    }

    /// The GGML format of the weight, `None` for a dense weight.
    pub fn quantized_format(&self) -> Option<GgmlDType> {
        match self {
            Self::Dense { .. } => None,
            Self::Quantized { qtensor, .. } => Some(qtensor.dtype()),
        }
    }

    /// Bytes the weight matrix occupies (the bias not included): elements times the dtype size
    /// for a dense weight, the quantized blocks' storage size otherwise.
    pub fn weight_bytes(&self) -> usize {
        match self {
            Self::Dense { weight, .. } => weight.elem_count() * weight.dtype().size_in_bytes(),
            Self::Quantized { qtensor, .. } => qtensor.storage_size_in_bytes(),
        }
    }

    /// This projection with its weight quantized to `format` (on the weight's device; the bias
    /// is kept). `format`'s block size must divide `in_features` (candle checks it and errors).
    /// Quantizing an already quantized projection is an error.
    pub fn quantize(&self, format: GgmlDType) -> Result<Self> {
        let Self::Dense { weight, bias } = self else {
            candle_core::bail!("quantize: this projection is already quantized");
        };
        Self::from_qtensor(
            QTensor::quantize(weight, format)?,
            bias.clone(),
            weight.dtype(),
        )
    }

    /// `(..., in_features) -> (..., out_features)`. The leading dimensions are flattened so that
    /// one GEMM runs whatever the rank.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if let Some(out) = self.forward_cpu_dense(xs, false)? {
            return Ok(out);
        }
        let out = self.forward_no_bias(xs)?;
        match self.bias() {
            Some(b) => out.broadcast_add(b),
            None => Ok(out),
        }
    }

    /// `gelu_erf(x W^T + b)`: on the CPU (f32, outside autograd) the GEMM accumulates onto the
    /// bias and GELU runs on every thread ([`cpu_dense::linear`]); elsewhere the composed ops.
    pub fn forward_gelu(&self, xs: &Tensor) -> Result<Tensor> {
        if let Some(out) = self.forward_cpu_dense(xs, true)? {
            return Ok(out);
        }
        self.forward(xs)?.gelu_erf()
    }

    /// `x W^T + b` (then GELU when `gelu`) through [`cpu_dense::linear`] when it applies: a CPU
    /// call multiplying by a dense f32 weight (a dense projection, or a quantized one whose
    /// weight this call dequantizes), with a bias. `None`: take the composed path.
    fn forward_cpu_dense(&self, xs: &Tensor, gelu: bool) -> Result<Option<Tensor>> {
        let Some(bias) = self.bias() else {
            return Ok(None);
        };
        let rows = leading_rows(xs);
        if !xs.device().is_cpu()
            || xs.dtype() != DType::F32
            || xs.track_op()
            || self.cpu_gemv_weight(rows, xs.device()).is_some()
        {
            return Ok(None);
        }
        let Some(weight) = self.matmul_weight(rows, xs.device())? else {
            return Ok(None);
        };
        let flat = xs.reshape((rows, xs.dim(D::Minus1)?))?;
        if !xs.is_contiguous() || !cpu_dense::applies(&flat, &weight) {
            return Ok(None);
        }
        over_rows(xs, |flat| {
            cpu_dense::linear(flat, &weight, Some(bias), gelu)
        })
        .map(Some)
    }

    /// `x W^T` without the bias, for callers that fuse the bias into the next kernel.
    pub fn forward_no_bias(&self, xs: &Tensor) -> Result<Tensor> {
        let rows = leading_rows(xs);
        if let Some(qtensor) = self.cpu_gemv_weight(rows, xs.device()) {
            return over_rows(xs, |flat| cpu_qgemv::quantized_gemv(flat, qtensor));
        }
        match (self, self.matmul_weight(rows, xs.device())?) {
            (Self::Dense { .. }, Some(weight)) => over_rows(xs, |flat| flat.matmul(&weight.t()?)),
            (Self::Quantized { .. }, Some(weight)) => over_rows(xs, |flat| {
                flat.to_dtype(weight.dtype())?.matmul(&weight.t()?)
            }),
            // candle's quantized kernels take every input dtype on CPU, but some CUDA fallbacks
            // read f32 only: multiply in f32 and return the activation dtype.
            (Self::Quantized { weight, dtype, .. }, None) => over_rows(xs, |flat| {
                weight
                    .forward(&flat.to_dtype(DType::F32)?.contiguous()?)?
                    .to_dtype(*dtype)
            }),
            (Self::Dense { .. }, None) => candle_core::bail!("a dense projection has a weight"),
        }
    }

    /// The quantized weight when a call with `rows` input rows on `device` takes the CPU's
    /// weight-only GEMV (a quantized projection on the CPU, weight-only with the direct GEMV, a
    /// handful of rows, a format it reads): the counterpart of the fused CUDA GEMV.
    fn cpu_gemv_weight(&self, rows: usize, device: &candle_core::Device) -> Option<&QTensor> {
        match self {
            Self::Quantized {
                qtensor, matmul, ..
            } if device.is_cpu()
                && qtensor.device().is_cpu()
                && matmul.direct_gemv
                && matmul.dequantizes(rows)
                && rows <= cpu_qgemv::MAX_GEMV_ROWS
                && cpu_qgemv::supports(qtensor.dtype()) =>
            {
                Some(qtensor)
            }
            _ => None,
        }
    }

    /// The dense weight a call with `rows` input rows multiplies by: the weight itself, or the
    /// quantized weight dequantized into the activation dtype (weight-only); `None` when the
    /// call takes candle's quantized kernel instead.
    fn matmul_weight(&self, rows: usize, device: &candle_core::Device) -> Result<Option<Tensor>> {
        match self {
            Self::Dense { weight, .. } => Ok(Some(weight.clone())),
            Self::Quantized {
                qtensor,
                dtype,
                matmul,
                ..
            } if matmul.dequantizes(rows) => Ok(Some(match dtype {
                // On the CPU on all threads (candle's dequantization runs on one), same values.
                _ if device.is_cpu()
                    && qtensor.device().is_cpu()
                    && cpu_qgemv::supports(qtensor.dtype()) =>
                {
                    cpu_qgemv::dequantize(qtensor)?.to_dtype(*dtype)?
                }
                DType::F16 => qtensor.dequantize_f16(device)?,
                _ => qtensor.dequantize(device)?.to_dtype(*dtype)?,
            })),
            Self::Quantized { .. } => Ok(None),
        }
    }

    /// `x W^T` followed by `epilogue`, through the fused CUDA kernels when `ops` is enabled
    /// (a GEMV kernel for a handful of rows, else a GEMM plus one epilogue kernel), else through
    /// composed candle ops. A quantized projection takes the quantized GEMV kernel for a handful
    /// of rows (see [`QuantizedMatmul::direct_gemv`]), else the fused kernels with its weight
    /// dequantized (weight-only), and the composed path when it multiplies through candle's
    /// quantized kernel.
    pub fn forward_fused(&self, xs: &Tensor, ops: &FusedOps, epilogue: Epilogue) -> Result<Tensor> {
        if let Self::Quantized {
            qtensor,
            dtype,
            matmul,
            ..
        } = self
        {
            if ops.enabled() && matmul.direct_gemv && xs.dtype() == *dtype {
                let (bias, gelu, f32_out) = self.gemv_epilogue(epilogue)?;
                if let Some(out) = ops.quantized_gemv(xs, qtensor, bias, gelu, f32_out)? {
                    return Ok(out);
                }
            }
        }
        let rows = leading_rows(xs);
        let weight = match ops.enabled() {
            true => self.matmul_weight(rows, xs.device())?,
            false => None,
        };
        let Some(weight) = weight else {
            return match epilogue {
                Epilogue::None => self.forward_no_bias(xs),
                Epilogue::Bias => self.forward(xs),
                Epilogue::BiasGelu => self.forward_gelu(xs),
                Epilogue::BiasF32 => self.forward(xs)?.to_dtype(DType::F32),
            };
        };
        let (bias, gelu, f32_out) = self.gemv_epilogue(epilogue)?;
        if let Some(out) = ops.gemv(xs, &weight, bias, gelu, f32_out)? {
            return Ok(out);
        }
        let out = over_rows(xs, |flat| flat.matmul(&weight.t()?))?;
        match (epilogue, bias) {
            (Epilogue::None, _) => Ok(out),
            (Epilogue::Bias, Some(b)) => ops.add_bias(&out, b),
            (Epilogue::BiasGelu, Some(b)) => ops.bias_gelu(&out, b),
            (Epilogue::BiasF32, Some(b)) => ops.bias_to_f32(&out, b),
            (_, None) => candle_core::bail!("linear epilogue {epilogue:?} needs a bias"),
        }
    }

    /// The GEMV kernels' arguments for `epilogue`: the bias to add (an error when it needs one
    /// and this projection has none), whether GELU follows, whether the output is f32.
    fn gemv_epilogue(&self, epilogue: Epilogue) -> Result<(Option<&Tensor>, bool, bool)> {
        let needs_bias = || match self.bias() {
            Some(b) => Ok(b),
            None => candle_core::bail!("linear epilogue {epilogue:?} needs a bias"),
        };
        Ok(match epilogue {
            Epilogue::None => (None, false, false),
            Epilogue::Bias => (Some(needs_bias()?), false, false),
            Epilogue::BiasGelu => (Some(needs_bias()?), true, false),
            Epilogue::BiasF32 => (Some(needs_bias()?), false, true),
        })
    }

    /// The bias, or an error naming `what` when this projection has none.
    pub fn expect_bias(&self, what: &str) -> Result<&Tensor> {
        match self.bias() {
            Some(b) => Ok(b),
            None => candle_core::bail!("{what} has no bias"),
        }
    }
}

/// Rows of `xs` `(..., in_features)` once its leading dimensions are flattened.
fn leading_rows(xs: &Tensor) -> usize {
    xs.dims().iter().rev().skip(1).product()
}

/// Applies `multiply` to `xs` flattened to `(rows, in_features)` and gives its `(rows, out)`
/// result the leading dimensions of `xs` back: `(..., out)`.
fn over_rows(xs: &Tensor, multiply: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let in_features = xs.dim(D::Minus1)?;
    let out = multiply(&xs.reshape((leading_rows(xs), in_features))?)?;
    let mut out_dims = xs.dims().to_vec();
    if let Some(last) = out_dims.last_mut() {
        *last = out.dim(1)?;
    }
    out.reshape(out_dims)
}
