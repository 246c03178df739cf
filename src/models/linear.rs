//! The projection type every model layer uses (`y = x W^T + b`), so that a quantized weight
//! format can be added as another variant later without touching the layers.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::fused::FusedOps;

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

/// An affine projection from `in_features` to `out_features`.
#[derive(Debug, Clone)]
pub enum Linear {
    /// Dense weight `(out_features, in_features)` in the activation dtype, optional bias `(out_features,)`.
    Dense {
        weight: Tensor,
        bias: Option<Tensor>,
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

    /// Stacks projections that read the same input into one whose output is their outputs
    /// concatenated (e.g. query/key/value into one matmul). All must be dense, all with or all
    /// without bias.
    pub fn concat_outputs(parts: &[Linear]) -> Result<Self> {
        let mut weights = Vec::with_capacity(parts.len());
        let mut biases = Vec::with_capacity(parts.len());
        for part in parts {
            let Self::Dense { weight, bias } = part;
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
        let Self::Dense { weight, bias } = self;
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
        let Self::Dense { weight, .. } = self;
        weight.dim(0)
    }

    /// The bias `(out_features,)`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        let Self::Dense { bias, .. } = self;
        bias.as_ref()
    }

    /// `(..., in_features) -> (..., out_features)`. The leading dimensions are flattened so that
    /// one GEMM runs whatever the rank.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let out = self.forward_no_bias(xs)?;
        match self.bias() {
            Some(b) => out.broadcast_add(b),
            None => Ok(out),
        }
    }

    /// `x W^T` without the bias, for callers that fuse the bias into the next kernel.
    pub fn forward_no_bias(&self, xs: &Tensor) -> Result<Tensor> {
        let Self::Dense { weight, .. } = self;
        let dims = xs.dims();
        let in_features = xs.dim(D::Minus1)?;
        let rows: usize = dims.iter().rev().skip(1).product();
        let out = xs.reshape((rows, in_features))?.matmul(&weight.t()?)?;
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = out.dim(1)?;
        }
        out.reshape(out_dims)
    }

    /// `x W^T` followed by `epilogue`, through the fused CUDA kernels when `ops` is enabled
    /// (a GEMV kernel for a handful of rows, else a GEMM plus one epilogue kernel), else through
    /// composed candle ops.
    pub fn forward_fused(&self, xs: &Tensor, ops: &FusedOps, epilogue: Epilogue) -> Result<Tensor> {
        let Self::Dense { weight, bias } = self;
        let bias = bias.as_ref();
        let needs_bias = || match bias {
            Some(b) => Ok(b),
            None => candle_core::bail!("linear epilogue {epilogue:?} needs a bias"),
        };
        if !ops.enabled() {
            return match epilogue {
                Epilogue::None => self.forward_no_bias(xs),
                Epilogue::Bias => self.forward(xs),
                Epilogue::BiasGelu => self.forward(xs)?.gelu_erf(),
                Epilogue::BiasF32 => self.forward(xs)?.to_dtype(DType::F32),
            };
        }
        let (gemv_bias, gelu, f32_out) = match epilogue {
            Epilogue::None => (None, false, false),
            Epilogue::Bias => (Some(needs_bias()?), false, false),
            Epilogue::BiasGelu => (Some(needs_bias()?), true, false),
            Epilogue::BiasF32 => (Some(needs_bias()?), false, true),
        };
        if let Some(out) = ops.gemv(xs, weight, gemv_bias, gelu, f32_out)? {
            return Ok(out);
        }
        let out = self.forward_no_bias(xs)?;
        match epilogue {
            Epilogue::None => Ok(out),
            Epilogue::Bias => out.broadcast_add(needs_bias()?),
            Epilogue::BiasGelu => ops.bias_gelu(&out, needs_bias()?),
            Epilogue::BiasF32 => ops.bias_to_f32(&out, needs_bias()?),
        }
    }

    /// The bias, or an error naming `what` when this projection has none.
    pub fn expect_bias(&self, what: &str) -> Result<&Tensor> {
        match self.bias() {
            Some(b) => Ok(b),
            None => candle_core::bail!("{what} has no bias"),
        }
    }
}
