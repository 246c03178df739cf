//! The ops of a training step with an explicit backward pass (in the manner of llm.c: each op's
//! forward and backward side by side, no autograd graph): the fused kernel where it applies
//! (CUDA, bf16/f16, heads of 64) and the composed candle ops otherwise (CPU, f32), which are the
//! reference the kernels are tested against. Forwards return what their backward needs.

use candle_core::{DType, Device, Result, Tensor, D};

use super::add::{composed_add, FusedAdd};
use super::attention::{AttentionStats, FusedAttention};
use super::cross_entropy::{composed_forward_backward, FusedCrossEntropy};
use super::gelu::FusedGelu;
use super::layer_norm::{composed_backward, FusedLayerNorm};
use super::softmax::softmax_last_dim;

/// The kernels a training step uses, loaded once per run.
#[derive(Debug, Clone, Default)]
pub struct TrainOps {
    attention: FusedAttention,
    gelu: FusedGelu,
    layer_norm: FusedLayerNorm,
    cross_entropy: FusedCrossEntropy,
    add: FusedAdd,
}

/// What an attention forward keeps for its backward.
#[derive(Debug, Clone)]
pub enum AttentionSaved {
    /// The fused kernel's per-row statistics.
    Fused(AttentionStats),
    /// The composed path's probabilities `(B, H, Nq, Nk)`.
    Probs(Tensor),
}

/// Gradients of `y = x W^T + b`.
#[derive(Debug, Clone)]
pub struct LinearGrads {
    /// `dx`, shaped like `x` (when asked for).
    pub dx: Option<Tensor>,
    /// `dW` `(N, K)` in the activation dtype.
    pub dw: Tensor,
    /// `db` `(N)` in the activation dtype (when the layer has a bias).
    pub db: Option<Tensor>,
}

impl TrainOps {
    /// The kernels for `device` (CUDA), or none (every op composed).
    pub fn for_device(device: &Device) -> Result<Self> {
        Ok(Self {
            attention: FusedAttention::for_device(device)?,
            gelu: FusedGelu::for_device(device)?,
            layer_norm: FusedLayerNorm::for_device(device)?,
            cross_entropy: FusedCrossEntropy::for_device(device)?,
            add: FusedAdd::for_device(device)?,
        })
    }

    /// Every op composed (the reference).
    pub fn composed() -> Self {
        Self::default()
    }

    /// `x W^T + b (+ residual)` for `x` `(..., K)`, `w` `(N, K)`: the matmul, then the bias and
    /// residual in one pass (see [`Self::add`]).
    pub fn linear(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.add(&linear(x, w, None)?, b, residual)
    }

    /// `x + bias + residual` (`bias` `(d)` broadcast over the rows of `x` `(..., d)`, `residual`
    /// shaped like `x`; either may be absent).
    pub fn add(
        &self,
        x: &Tensor,
        bias: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        if bias.is_none() && residual.is_none() {
            return Ok(x.clone());
        }
        match self.add.add(x, bias, residual)? {
            Some(y) => Ok(y),
            None => composed_add(x, bias, residual),
        }
    }

    /// `LayerNorm(x)` over the last dimension (the inference kernel).
    pub fn layer_norm(&self, x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, w, b, eps as f32)
    }

    /// `(dx, dw, db)` of [`Self::layer_norm`] (`dw`, `db` in f32).
    pub fn layer_norm_backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        eps: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        match self.layer_norm.backward(x, w, dy, eps)? {
            Some(grads) => Ok(grads),
            None => composed_backward(x, w, dy, eps),
        }
    }

    /// `gelu_erf(u + b)`.
    pub fn bias_gelu(&self, u: &Tensor, b: &Tensor) -> Result<Tensor> {
        match self.gelu.bias_gelu(u, b)? {
            Some(y) => Ok(y),
            None => u.broadcast_add(b)?.gelu_erf(),
        }
    }

    /// `(du, db)` of [`Self::bias_gelu`] for output gradient `dy`.
    pub fn bias_gelu_backward(
        &self,
        u: &Tensor,
        b: &Tensor,
        dy: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        if let Some(grads) = self.gelu.bias_gelu_grad(u, b, dy)? {
            return Ok(grads);
        }
        let dtype = u.dtype();
        let v = u
            .to_dtype(DType::F32)?
            .broadcast_add(&b.to_dtype(DType::F32)?)?;
        let cdf = ((v.affine(std::f64::consts::FRAC_1_SQRT_2, 0.0)?.erf()? + 1.0)? * 0.5)?;
        let pdf = (v.sqr()? * -0.5)?
            .exp()?
            .affine(0.398_942_280_401_432_7, 0.0)?;
        let du = (dy.to_dtype(DType::F32)? * (cdf + (v * pdf)?)?)?;
        let width = du.dim(D::Minus1)?;
        let db = du.reshape(((), width))?.sum(0)?.to_dtype(dtype)?;
        Ok((du.to_dtype(dtype)?, db))
    }

    /// Multi-head self-attention over a packed `qkv` `(B, N, 3D)` -> `(B, N, D)`.
    pub fn self_attention(
        &self,
        qkv: &Tensor,
        heads: usize,
        scale: f64,
        causal: bool,
    ) -> Result<(Tensor, AttentionSaved)> {
        if let Some((out, stats)) = self
            .attention
            .self_attention_saved(qkv, heads, scale, causal)?
        {
            return Ok((out, AttentionSaved::Fused(stats)));
        }
        let parts = split_heads(qkv, 3, heads)?;
        let (q, k, v) = (parts.get(0)?, parts.get(1)?, parts.get(2)?);
        let (out, probs) = composed_attention(&q, &k, &v, scale, causal)?;
        Ok((out, AttentionSaved::Probs(probs)))
    }

    /// `dqkv` `(B, N, 3D)` of [`Self::self_attention`].
    #[allow(clippy::too_many_arguments)]
    pub fn self_attention_backward(
        &self,
        qkv: &Tensor,
        out: &Tensor,
        dout: &Tensor,
        saved: &AttentionSaved,
        heads: usize,
        scale: f64,
        causal: bool,
    ) -> Result<Tensor> {
        match saved {
            AttentionSaved::Fused(stats) => self
                .attention
                .self_attention_grad(qkv, out, dout, stats, heads, scale, causal),
            AttentionSaved::Probs(probs) => {
                let parts = split_heads(qkv, 3, heads)?;
                let (q, k, v) = (parts.get(0)?, parts.get(1)?, parts.get(2)?);
                let (dq, dk, dv) = composed_attention_backward(&q, &k, &v, probs, dout, scale)?;
                merge_parts(&[dq, dk, dv])
            }
        }
    }

    /// Cross-attention of `q` `(B, T, D)` over keys and values packed in `kv` `(B, M, 2D)`.
    pub fn cross_attention(
        &self,
        q: &Tensor,
        kv: &Tensor,
        heads: usize,
        scale: f64,
    ) -> Result<(Tensor, AttentionSaved)> {
        if let Some((out, stats)) = self.attention.cross_attention_saved(q, kv, heads, scale)? {
            return Ok((out, AttentionSaved::Fused(stats)));
        }
        let qh = split_heads(q, 1, heads)?.get(0)?;
        let kvh = split_heads(kv, 2, heads)?;
        let (out, probs) = composed_attention(&qh, &kvh.get(0)?, &kvh.get(1)?, scale, false)?;
        Ok((out, AttentionSaved::Probs(probs)))
    }

    /// `(dq (B, T, D), dkv (B, M, 2D))` of [`Self::cross_attention`].
    #[allow(clippy::too_many_arguments)]
    pub fn cross_attention_backward(
        &self,
        q: &Tensor,
        kv: &Tensor,
        out: &Tensor,
        dout: &Tensor,
        saved: &AttentionSaved,
        heads: usize,
        scale: f64,
    ) -> Result<(Tensor, Tensor)> {
        match saved {
            AttentionSaved::Fused(stats) => self
                .attention
                .cross_attention_grad(q, kv, out, dout, stats, heads, scale),
            AttentionSaved::Probs(probs) => {
                let qh = split_heads(q, 1, heads)?.get(0)?;
                let kvh = split_heads(kv, 2, heads)?;
                let (k, v) = (kvh.get(0)?, kvh.get(1)?);
                let (dq, dk, dv) = composed_attention_backward(&qh, &k, &v, probs, dout, scale)?;
                Ok((merge_parts(&[dq])?, merge_parts(&[dk, dv])?))
            }
        }
    }

    /// Label-smoothed cross-entropy of `logits` `(R, V)`: `(Σ w_r loss_r` (f32 scalar),
    /// `grad_scale`-scaled `dlogits)` (see [`FusedCrossEntropy::forward_backward`]).
    pub fn cross_entropy(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        weights: &Tensor,
        eps: f64,
        grad_scale: f64,
    ) -> Result<(Tensor, Tensor)> {
        match self
            .cross_entropy
            .forward_backward(logits, targets, weights, eps, grad_scale)?
        {
            Some(out) => Ok(out),
            None => composed_forward_backward(logits, targets, weights, eps, grad_scale),
        }
    }
}

/// `y = x W^T (+ b)` for `x` `(..., K)`, `w` `(N, K)` -> `(..., N)`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (n, k) = w.dims2()?;
    let mut dims = x.dims().to_vec();
    let rows = x.elem_count() / k.max(1);
    let y = x.reshape((rows, k))?.matmul(&w.t()?)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    y.reshape(dims)
}

/// Gradients of [`linear`] for output gradient `dy`: `dx` when `need_dx`, `db` when `has_bias`.
pub fn linear_backward(
    x: &Tensor,
    w: &Tensor,
    has_bias: bool,
    dy: &Tensor,
    need_dx: bool,
) -> Result<LinearGrads> {
    let (n, k) = w.dims2()?;
    let rows = x.elem_count() / k.max(1);
    let dy2 = dy.reshape((rows, n))?;
    let x2 = x.reshape((rows, k))?;
    let dw = dy2.t()?.matmul(&x2)?;
    let db = if has_bias {
        // A GEMM with a row of ones sums the columns with f32 accumulation (candle's sum over
        // the first dimension of a row-major tensor is a strided reduction).
        let ones = Tensor::ones((1, rows), dy2.dtype(), dy2.device())?;
        Some(ones.matmul(&dy2)?.reshape(n)?)
    } else {
        None
    };
    let dx = if need_dx {
        Some(dy2.matmul(w)?.reshape(x.shape())?)
    } else {
        None
    };
    Ok(LinearGrads { dx, dw, db })
}

/// `(B, N, parts * H * dh)` -> `(parts, B, H, N, dh)` contiguous.
fn split_heads(xs: &Tensor, parts: usize, heads: usize) -> Result<Tensor> {
    let (b, n, width) = xs.dims3()?;
    let head_dim = width / (parts * heads);
    xs.reshape((b, n, parts, heads, head_dim))?
        .permute((2, 0, 3, 1, 4))?
        .contiguous()
}

/// `[(B, H, N, dh); parts]` -> `(B, N, parts * H * dh)` (the inverse of [`split_heads`]).
fn merge_parts(parts: &[Tensor]) -> Result<Tensor> {
    let stacked = Tensor::stack(parts, 0)?;
    let (p, b, h, n, dh) = stacked.dims5()?;
    stacked
        .permute((1, 3, 0, 2, 4))?
        .contiguous()?
        .reshape((b, n, p * h * dh))
}

/// Composed attention of `q` `(B, H, Nq, dh)` over `k`, `v` `(B, H, Nk, dh)`: `(out (B, Nq,
/// H * dh), probabilities (B, H, Nq, Nk))`.
fn composed_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    causal: bool,
) -> Result<(Tensor, Tensor)> {
    let (_, _, nq, _) = q.dims4()?;
    let nk = k.dim(2)?;
    let mut scores = (q.matmul(&k.t()?)? * scale)?;
    if causal {
        let mask: Vec<f32> = (0..nq)
            .flat_map(|i| (0..nk).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        let mask = Tensor::from_vec(mask, (nq, nk), q.device())?.to_dtype(scores.dtype())?;
        scores = scores.broadcast_add(&mask)?;
    }
    let probs = softmax_last_dim(&scores)?;
    let out = merge_parts(&[probs.matmul(v)?])?;
    Ok((out, probs))
}

/// `(dq, dk, dv)` (each `(B, H, N, dh)`) of [`composed_attention`] for `dout` `(B, Nq, H*dh)`:
/// `dv = P^T dO`, `dP = dO V^T`, `dS = P * (dP - rowsum(dP * P))`, `dq = scale dS K`,
/// `dk = scale dS^T Q`, in f32 for the softmax part.
fn composed_attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    probs: &Tensor,
    dout: &Tensor,
    scale: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let heads = q.dim(1)?;
    let dout = split_heads(&dout.to_dtype(q.dtype())?, 1, heads)?.get(0)?;
    let dv = probs.t()?.matmul(&dout)?;
    let dp = dout.matmul(&v.t()?)?.to_dtype(DType::F32)?;
    let p = probs.to_dtype(DType::F32)?;
    let dot = (&dp * &p)?.sum_keepdim(D::Minus1)?;
    let ds = (dp.broadcast_sub(&dot)? * p)?.to_dtype(q.dtype())?;
    let dq = (ds.matmul(k)? * scale)?;
    let dk = (ds.t()?.matmul(q)? * scale)?;
    Ok((dq, dk, dv))
}
