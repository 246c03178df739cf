//! LayerNorm backward in one kernel (the composed backward is ~15 full passes over the
//! activations in f32): dx per row from the statistics recomputed from the input, dweight and
//! dbias summed in f32. The forward is the inference LayerNorm (candle's kernel).
//!
//! [`FusedLayerNorm::backward`] returns `None` where the kernel does not apply (CPU, f32, a build
//! without `cuda`): the caller runs [`composed_backward`], the reference the kernel is tested
//! against (`tests/gpu_kernels.rs`).

#[cfg(feature = "cuda")]
mod cuda;

use candle_core::{DType, Result, Tensor, D};

use crate::kernels::grad_ops::stat_dtype;

kernel_handle! {
    /// Handle to the compiled kernel (none on CPU).
    pub struct FusedLayerNorm(cuda::LayerNormKernels);
}

impl FusedLayerNorm {
    /// Gradients of `LayerNorm(x; weight, bias, eps)` for output gradient `dy`: `(dx` in `x`'s
    /// dtype, `dweight`, `dbias` in f32`)`; `None` when the kernel does not apply.
    pub fn backward(
        &self,
        x: &Tensor,
        weight: &Tensor,
        dy: &Tensor,
        eps: f64,
    ) -> Result<Option<(Tensor, Tensor, Tensor)>> {
        let applies = self.enabled()
            && x.device().is_cuda()
            && matches!(x.dtype(), DType::BF16 | DType::F16)
            && weight.dtype() == x.dtype()
            && dy.dtype() == x.dtype();
        if !applies {
            return Ok(None);
        }
        self.run(x, weight, dy, eps).map(Some)
    }

    #[cfg(feature = "cuda")]
    fn run(
        &self,
        x: &Tensor,
        weight: &Tensor,
        dy: &Tensor,
        eps: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (Some(kernels), candle_core::Device::Cuda(dev)) = (&self.kernels, x.device()) else {
            candle_core::bail!("the LayerNorm kernel is not loaded")
        };
        cuda::backward(
            kernels,
            dev,
            &x.contiguous()?,
            &weight.contiguous()?,
            &dy.contiguous()?,
            eps,
        )
    }

    #[cfg(not(feature = "cuda"))]
    fn run(&self, _: &Tensor, _: &Tensor, _: &Tensor, _: f64) -> Result<(Tensor, Tensor, Tensor)> {
        candle_core::bail!("the LayerNorm kernel needs a build with --features cuda")
    }
}

/// The composed LayerNorm backward (statistics in f32 for half inputs): with
/// `x̂ = (x - mean) / sqrt(var + eps)` and `g = dy * w`,
/// `dx = (g - mean(g) - x̂ * mean(g * x̂)) / sqrt(var + eps)` (in `x`'s dtype),
/// `dw = Σ dy * x̂`, `db = Σ dy` over every leading dimension (f32).
pub fn composed_backward(
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let width = x.dim(D::Minus1)?;
    if width == 0 {
        candle_core::bail!("layer norm backward: the normalized dimension is empty");
    }
    let rows = x.elem_count() / width;
    let stat = stat_dtype(x.dtype());
    let flat = |t: &Tensor| t.to_dtype(stat)?.reshape((rows, width));
    let (xs, grad) = (flat(x)?, flat(dy)?);
    let centered = xs.broadcast_sub(&xs.mean_keepdim(1)?)?;
    let inv_std = (centered.sqr()?.mean_keepdim(1)? + eps)?.sqrt()?.recip()?;
    let normalized = centered.broadcast_mul(&inv_std)?;
    let g = grad.broadcast_mul(&weight.to_dtype(stat)?)?;
    let g_mean = g.mean_keepdim(1)?;
    let gx_mean = (&g * &normalized)?.mean_keepdim(1)?;
    let dx = g
        .broadcast_sub(&g_mean)?
        .sub(&normalized.broadcast_mul(&gx_mean)?)?
        .broadcast_mul(&inv_std)?
        .reshape(x.shape())?
        .to_dtype(x.dtype())?;
    let dw = (&grad * &normalized)?.sum(0)?.to_dtype(DType::F32)?;
    let db = grad.sum(0)?.to_dtype(DType::F32)?;
    Ok((dx, dw, db))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_core::Var;

    /// The composed backward equals candle's autograd through an f32 LayerNorm written out.
    #[test]
    fn composed_backward_matches_autograd() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0.5f32, 2.0, (3, 4, 24), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.3, 24, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.3, 24, &dev).unwrap();
        let dy = Tensor::randn(0f32, 1.0, (3, 4, 24), &dev).unwrap();
        let vars = [&x, &w, &b].map(|t| Var::from_tensor(t).unwrap());
        let [xv, wv, bv] = vars.each_ref().map(|v| v.as_tensor());
        let mean = xv.mean_keepdim(D::Minus1).unwrap();
        let centered = xv.broadcast_sub(&mean).unwrap();
        let var = centered.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let y = centered
            .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(wv)
            .unwrap()
            .broadcast_add(bv)
            .unwrap();
        let grads = (y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        let (dx, dw, db) = composed_backward(&x, &w, &dy, 1e-5).unwrap();
        for (ours, theirs) in [(dx, xv), (dw, wv), (db, bv)] {
            let reference = grads.get(theirs).unwrap();
            let diff = (ours - reference)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "{diff}");
        }
    }
}
