//! Fused multi-head attention for training (FlashAttention-2: the probabilities are never
//! stored; the backward recomputes them from one f32 log-sum-exp per query row), reading the
//! queries, keys and values straight out of a packed `(B, N, 3D)` projection output and
//! writing the context `(B, N, D)` with the heads already merged, so neither the head split,
//! the `(B, H, N, N)` scores nor the head merge (and their backward copies) exist.
//!
//! [`FusedAttention`] is the handle a model receives. [`FusedAttention::self_attention`]
//! returns `None` where the kernel does not apply (CPU, f32, a head width other than 64, a
//! build without `cuda`): the caller then runs its composed ops, the reference the kernel is
//! tested against (`tests/gpu_kernels.rs` on a GPU).

#[cfg(feature = "cuda")]
mod cuda;

use candle_core::{DType, Device, Result, Tensor};

/// Head width the kernels support.
pub const HEAD_DIM: usize = 64;

kernel_handle! {
    /// Handle to the compiled attention kernels (none on CPU).
    pub struct FusedAttention(cuda::AttentionKernels), load = load_if_capable;
}

/// The kernels on a CUDA device of compute capability 8.0 or newer; `None` on older GPUs (they
/// take the composed path, said once in the log).
#[cfg(feature = "cuda")]
fn load_if_capable(dev: &candle_core::CudaDevice) -> Result<Option<cuda::AttentionKernels>> {
    let capability = cuda::compute_capability(dev)?;
    if capability < cuda::MIN_COMPUTE_CAPABILITY {
        tracing::info!(
            "fused attention needs compute capability 8.0 or newer (this GPU has {}.{}): composed attention",
            capability.0,
            capability.1
        );
        return Ok(None);
    }
    Ok(Some(cuda::AttentionKernels::load(dev)?))
}

impl FusedAttention {
    /// Whether [`Self::self_attention`] runs the kernel for a `dtype` tensor of `heads` heads of
    /// width `head_dim` on `device`.
    pub fn applies(&self, device: &Device, dtype: DType, head_dim: usize) -> bool {
        self.enabled()
            && device.is_cuda()
            && matches!(dtype, DType::BF16 | DType::F16)
            && head_dim == HEAD_DIM
    }

    /// `softmax(scale * q k^T) v` for every head of a packed `qkv` `(B, N, 3 * heads * 64)`
    /// (queries, then keys, then values, each `heads x 64` wide) -> `(B, N, heads * 64)`;
    /// `causal`: token `i` attends to tokens `<= i` only. Differentiable with respect to `qkv`.
    /// `None` when the kernel does not apply (see [`Self::applies`]).
    pub fn self_attention(
        &self,
        qkv: &Tensor,
        heads: usize,
        scale: f64,
        causal: bool,
    ) -> Result<Option<Tensor>> {
        let (_, _, three_d) = qkv.dims3()?;
        if heads == 0 || three_d % (3 * heads) != 0 {
            candle_core::bail!("attention: qkv width {three_d} is not 3 x {heads} heads");
        }
        let head_dim = three_d / (3 * heads);
        if !self.applies(qkv.device(), qkv.dtype(), head_dim) {
            return Ok(None);
        }
        self.run_self_attention(qkv, heads, scale, causal).map(Some)
    }

    #[cfg(feature = "cuda")]
    fn run_self_attention(
        &self,
        qkv: &Tensor,
        heads: usize,
        scale: f64,
        causal: bool,
    ) -> Result<Tensor> {
        let Some(kernels) = &self.kernels else {
            candle_core::bail!("fused attention kernels are not loaded")
        };
        let op = cuda::SelfAttention::new(kernels.clone(), heads, causal, scale as f32);
        qkv.contiguous()?.apply_op1(op)
    }

    #[cfg(not(feature = "cuda"))]
    fn run_self_attention(&self, _: &Tensor, _: usize, _: f64, _: bool) -> Result<Tensor> {
        candle_core::bail!("fused attention needs a build with --features cuda")
    }
}

/// What a fused forward keeps for its backward: the per-row log-sum-exp (f32, on the GPU).
#[derive(Debug, Clone)]
pub struct AttentionStats {
    #[cfg(feature = "cuda")]
    lse: std::sync::Arc<candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>>,
}

/// The explicit forward/backward entry points (training without candle's autograd): the
/// forward returns the statistics its backward takes.
impl FusedAttention {
    /// As [`Self::self_attention`] (not differentiable through candle), keeping the statistics.
    pub fn self_attention_saved(
        &self,
        qkv: &Tensor,
        heads: usize,
        scale: f64,
        causal: bool,
    ) -> Result<Option<(Tensor, AttentionStats)>> {
        let (_, _, three_d) = qkv.dims3()?;
        if heads == 0 || three_d % (3 * heads) != 0 {
            candle_core::bail!("attention: qkv width {three_d} is not 3 x {heads} heads");
        }
        if !self.applies(qkv.device(), qkv.dtype(), three_d / (3 * heads)) {
            return Ok(None);
        }
        let qkv = qkv.contiguous()?;
        self.run_forward(&qkv, &qkv, self_placement(&qkv, heads)?, causal, scale)
            .map(Some)
    }

    /// Gradient `(B, N, 3D)` of [`Self::self_attention_saved`] with respect to `qkv`.
    #[allow(clippy::too_many_arguments)]
    pub fn self_attention_grad(
        &self,
        qkv: &Tensor,
        out: &Tensor,
        dout: &Tensor,
        stats: &AttentionStats,
        heads: usize,
        scale: f64,
        causal: bool,
    ) -> Result<Tensor> {
        let qkv = qkv.contiguous()?;
        let at = self_placement(&qkv, heads)?;
        let (dq, _) = self.run_backward(&qkv, &qkv, out, dout, stats, at, causal, scale)?;
        Ok(dq)
    }

    /// Cross-attention of queries `q` `(B, T, D)` over keys and values packed in `kv`
    /// `(B, M, 2D)` (keys first) -> `(B, T, D)` and the statistics; `None` where the kernel
    /// does not apply.
    pub fn cross_attention_saved(
        &self,
        q: &Tensor,
        kv: &Tensor,
        heads: usize,
        scale: f64,
    ) -> Result<Option<(Tensor, AttentionStats)>> {
        let (_, _, d) = q.dims3()?;
        if heads == 0 || d % heads != 0 {
            candle_core::bail!("attention: query width {d} is not {heads} heads");
        }
        if !self.applies(q.device(), q.dtype(), d / heads) {
            return Ok(None);
        }
        let (q, kv) = (q.contiguous()?, kv.contiguous()?);
        self.run_forward(&q, &kv, cross_placement(&q, &kv, heads)?, false, scale)
            .map(Some)
    }

    /// Gradients `(dq (B, T, D), dkv (B, M, 2D))` of [`Self::cross_attention_saved`].
    #[allow(clippy::too_many_arguments)]
    pub fn cross_attention_grad(
        &self,
        q: &Tensor,
        kv: &Tensor,
        out: &Tensor,
        dout: &Tensor,
        stats: &AttentionStats,
        heads: usize,
        scale: f64,
    ) -> Result<(Tensor, Tensor)> {
        let (q, kv) = (q.contiguous()?, kv.contiguous()?);
        let at = cross_placement(&q, &kv, heads)?;
        self.run_backward(&q, &kv, out, dout, stats, at, false, scale)
    }

    #[cfg(feature = "cuda")]
    fn run_forward(
        &self,
        q: &Tensor,
        kv: &Tensor,
        at: cuda::Placement,
        causal: bool,
        scale: f64,
    ) -> Result<(Tensor, AttentionStats)> {
        let (Some(kernels), Device::Cuda(dev)) = (&self.kernels, q.device()) else {
            candle_core::bail!("fused attention kernels are not loaded")
        };
        let (out, lse) = cuda::forward(kernels, dev, q, kv, at, causal, scale as f32)?;
        Ok((out, AttentionStats { lse }))
    }

    #[cfg(not(feature = "cuda"))]
    fn run_forward(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: Placement,
        _: bool,
        _: f64,
    ) -> Result<(Tensor, AttentionStats)> {
        candle_core::bail!("fused attention needs a build with --features cuda")
    }

    #[cfg(feature = "cuda")]
    #[allow(clippy::too_many_arguments)]
    fn run_backward(
        &self,
        q: &Tensor,
        kv: &Tensor,
        out: &Tensor,
        dout: &Tensor,
        stats: &AttentionStats,
        at: cuda::Placement,
        causal: bool,
        scale: f64,
    ) -> Result<(Tensor, Tensor)> {
        let (Some(kernels), Device::Cuda(dev)) = (&self.kernels, q.device()) else {
            candle_core::bail!("fused attention kernels are not loaded")
        };
        let dout = dout.to_dtype(out.dtype())?.contiguous()?;
        cuda::backward(
            kernels,
            dev,
            q,
            kv,
            &out.contiguous()?,
            &dout,
            &stats.lse,
            at,
            causal,
            scale as f32,
        )
    }

    #[cfg(not(feature = "cuda"))]
    #[allow(clippy::too_many_arguments)]
    fn run_backward(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: &AttentionStats,
        _: Placement,
        _: bool,
        _: f64,
    ) -> Result<(Tensor, Tensor)> {
        candle_core::bail!("fused attention needs a build with --features cuda")
    }
}

#[cfg(feature = "cuda")]
use cuda::Placement;

/// Stand-in for the CUDA placement in a build without `cuda` (never constructed).
#[cfg(not(feature = "cuda"))]
#[derive(Debug, Clone, Copy)]
struct Placement;

#[cfg(feature = "cuda")]
fn self_placement(qkv: &Tensor, heads: usize) -> Result<Placement> {
    let (b, n, three_d) = qkv.dims3()?;
    let d = three_d / 3;
    Ok(Placement {
        batch: b,
        nq: n,
        nk: n,
        heads,
        q_row: three_d,
        q_col: 0,
        kv_row: three_d,
        k_col: d,
        v_col: 2 * d,
        packed: true,
    })
}

#[cfg(not(feature = "cuda"))]
fn self_placement(_: &Tensor, _: usize) -> Result<Placement> {
    Ok(Placement)
}

#[cfg(feature = "cuda")]
fn cross_placement(q: &Tensor, kv: &Tensor, heads: usize) -> Result<Placement> {
    let (b, t, d) = q.dims3()?;
    let (bk, m, two_d) = kv.dims3()?;
    if bk != b || two_d != 2 * d {
        candle_core::bail!(
            "cross-attention: queries {:?} and keys/values {:?} do not match",
            q.shape(),
            kv.shape()
        );
    }
    Ok(Placement {
        batch: b,
        nq: t,
        nk: m,
        heads,
        q_row: d,
        q_col: 0,
        kv_row: two_d,
        k_col: 0,
        v_col: d,
        packed: false,
    })
}

#[cfg(not(feature = "cuda"))]
fn cross_placement(_: &Tensor, _: &Tensor, _: usize) -> Result<Placement> {
    Ok(Placement)
}

/// The composed reference of [`FusedAttention::self_attention`] (what the model runs without
/// the kernel): packed `qkv` `(B, N, 3D)` -> `(B, N, D)`, with `softmax` supplied by the caller
/// (the model's, which carries a backward pass).
pub fn composed_self_attention(
    qkv: &Tensor,
    heads: usize,
    scale: f64,
    causal: bool,
    softmax: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (b, n, three_d) = qkv.dims3()?;
    let d = three_d / 3;
    let head_dim = d / heads;
    let qkv = qkv
        .reshape((b, n, 3, heads, head_dim))?
        .permute((2, 0, 3, 1, 4))?
        .contiguous()?;
    let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
    let mut scores = q.matmul(&k.t()?)?;
    if scale != 1.0 {
        scores = (scores * scale)?;
    }
    if causal {
        let mask: Vec<f32> = (0..n)
            .flat_map(|i| (0..n).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        let mask = Tensor::from_vec(mask, (n, n), qkv.device())?.to_dtype(scores.dtype())?;
        scores = scores.broadcast_add(&mask)?;
    }
    softmax(&scores)?
        .matmul(&v)?
        .transpose(1, 2)?
        .reshape((b, n, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_tensors_take_the_composed_path() {
        let attention = FusedAttention::for_device(&Device::Cpu).unwrap();
        assert!(!attention.enabled());
        let qkv = Tensor::zeros((1, 3, 3 * 64), DType::F32, &Device::Cpu).unwrap();
        assert!(attention
            .self_attention(&qkv, 1, 1.0, false)
            .unwrap()
            .is_none());
    }

    #[test]
    fn packed_width_must_split_into_heads() {
        let qkv = Tensor::zeros((1, 3, 100), DType::F32, &Device::Cpu).unwrap();
        assert!(FusedAttention::disabled()
            .self_attention(&qkv, 3, 1.0, false)
            .is_err());
    }

    #[test]
    fn composed_causal_attention_ignores_later_tokens() {
        let dev = Device::Cpu;
        let qkv = Tensor::randn(0f32, 1.0, (2, 5, 3 * 8), &dev).unwrap();
        let softmax = |x: &Tensor| candle_nn::ops::softmax_last_dim(x);
        let full = composed_self_attention(&qkv, 2, 0.5, true, softmax).unwrap();
        // Changing the last token changes no earlier output.
        let tail = Tensor::randn(0f32, 1.0, (2, 1, 3 * 8), &dev).unwrap();
        let changed = Tensor::cat(&[&qkv.narrow(1, 0, 4).unwrap(), &tail], 1).unwrap();
        let again = composed_self_attention(&changed, 2, 0.5, true, softmax).unwrap();
        let diff = (full.narrow(1, 0, 4).unwrap() - again.narrow(1, 0, 4).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
        let last = (full.narrow(1, 4, 1).unwrap() - again.narrow(1, 4, 1).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(last > 0.0);
    }
}
