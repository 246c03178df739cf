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

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};

/// Head width the kernels support.
pub const HEAD_DIM: usize = 64;

/// Handle to the compiled attention kernels (none on CPU).
#[derive(Debug, Clone, Default)]
pub struct FusedAttention {
    #[cfg(feature = "cuda")]
    kernels: Option<Arc<cuda::AttentionKernels>>,
    #[cfg(not(feature = "cuda"))]
    kernels: Option<Arc<()>>,
}

impl FusedAttention {
    /// Compiles and loads the kernels when `device` is a CUDA device of compute capability 8.0
    /// or newer; disabled otherwise (older GPUs take the composed path, said once in the log).
    pub fn for_device(device: &Device) -> Result<Self> {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(dev) = device {
            let capability = cuda::compute_capability(dev)?;
            if capability < cuda::MIN_COMPUTE_CAPABILITY {
                tracing::info!(
                    "fused attention needs compute capability 8.0 or newer (this GPU has {}.{}): composed attention",
                    capability.0,
                    capability.1
                );
                return Ok(Self::default());
            }
            return Ok(Self {
                kernels: Some(Arc::new(cuda::AttentionKernels::load(dev)?)),
            });
        }
        let _ = device;
        Ok(Self::default())
    }

    /// A disabled handle: every caller takes its composed path.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Whether the kernels are loaded.
    pub fn enabled(&self) -> bool {
        self.kernels.is_some()
    }

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
