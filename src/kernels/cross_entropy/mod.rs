//! Label-smoothed cross-entropy over the vocabulary with its gradient, in one kernel that reads
//! each row of logits twice and never stores the `(rows, V)` f32 log-probabilities (the composed
//! loss keeps them, and its backward runs ~8 more passes over them).
//!
//! [`FusedCrossEntropy::forward_backward`] returns `None` where the kernel does not apply (CPU,
//! f32, a build without `cuda`): the caller runs [`composed_forward_backward`], the reference the
//! kernel is tested against (`tests/gpu_kernels.rs`).

#[cfg(feature = "cuda")]
mod cuda;

use candle_core::{DType, Result, Tensor, D};

kernel_handle! {
    /// Handle to the compiled kernel (none on CPU).
    pub struct FusedCrossEntropy(cuda::CrossEntropyKernels);
}

impl FusedCrossEntropy {
    /// For logits `(R, V)`, targets `(R)` (u32) and per-row weights `(R)` (f32, 0 = not
    /// counted): `(Σ_r w_r * loss_r` as an f32 scalar, `dlogits` `(R, V)` in the logits' dtype`)`
    /// with `loss_r = (1 - eps) * -log p(target) + eps * mean_v(-log p(v))` and
    /// `dlogits = grad_scale * w_r * d loss_r / d logits`. `None` when the kernel does not apply.
    pub fn forward_backward(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        weights: &Tensor,
        eps: f64,
        grad_scale: f64,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let applies = self.enabled()
            && logits.device().is_cuda()
            && matches!(logits.dtype(), DType::BF16 | DType::F16);
        if !applies {
            return Ok(None);
        }
        self.run(logits, targets, weights, eps, grad_scale)
            .map(Some)
    }

    #[cfg(feature = "cuda")]
    fn run(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        weights: &Tensor,
        eps: f64,
        grad_scale: f64,
    ) -> Result<(Tensor, Tensor)> {
        let (Some(kernels), candle_core::Device::Cuda(dev)) = (&self.kernels, logits.device())
        else {
            candle_core::bail!("the cross-entropy kernel is not loaded")
        };
        cuda::forward_backward(
            kernels,
            dev,
            &logits.contiguous()?,
            &targets.contiguous()?,
            &weights.to_dtype(DType::F32)?.contiguous()?,
            eps,
            grad_scale,
        )
    }

    #[cfg(not(feature = "cuda"))]
    fn run(&self, _: &Tensor, _: &Tensor, _: &Tensor, _: f64, _: f64) -> Result<(Tensor, Tensor)> {
        candle_core::bail!("the cross-entropy kernel needs a build with --features cuda")
    }
}

/// The composed reference of [`FusedCrossEntropy::forward_backward`] (f32 arithmetic, the
/// gradient returned in the logits' dtype).
pub fn composed_forward_backward(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
    eps: f64,
    grad_scale: f64,
) -> Result<(Tensor, Tensor)> {
    let (_, vocab) = logits.dims2()?;
    let x = logits.to_dtype(DType::F32)?;
    let weights = weights.to_dtype(DType::F32)?;
    let log_probs = candle_nn::ops::log_softmax(&x, D::Minus1)?;
    let target_log_probs = log_probs.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    let uniform = log_probs.mean(D::Minus1)?;
    let per_row = ((target_log_probs * (1.0 - eps))? + (uniform * eps)?)?.neg()?;
    let loss = (&per_row * &weights)?.sum_all()?;
    let onehot = Tensor::zeros(x.shape(), DType::F32, x.device())?.scatter_add(
        &targets.unsqueeze(1)?,
        &Tensor::full(1f32 - eps as f32, (targets.elem_count(), 1), x.device())?,
        1,
    )?;
    let grad = ((log_probs.exp()? - eps / vocab as f64)? - onehot)?
        .broadcast_mul(&(weights * grad_scale)?.unsqueeze(1)?)?
        .to_dtype(logits.dtype())?;
    Ok((loss, grad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_core::Var;

    /// The composed gradient equals autograd through the composed loss; the loss equals a
    /// hand-computed value.
    #[test]
    fn composed_gradient_matches_autograd() {
        let dev = Device::Cpu;
        let logits = Tensor::randn(0f32, 2.0, (5, 11), &dev).unwrap();
        let targets = Tensor::new(&[3u32, 0, 10, 7, 7], &dev).unwrap();
        let weights = Tensor::new(&[1f32, 0.0, 1.0, 1.0, 0.0], &dev).unwrap();
        let (eps, scale) = (0.1, 0.25);
        let (loss, grad) =
            composed_forward_backward(&logits, &targets, &weights, eps, scale).unwrap();
        let rows: Vec<Vec<f32>> = logits.to_vec2().unwrap();
        let expected: f64 = [(0usize, 3usize), (2, 10), (3, 7)]
            .iter()
            .map(|&(r, t)| {
                let row = &rows[r];
                let lse = row.iter().map(|v| (*v as f64).exp()).sum::<f64>().ln();
                let smooth = row.iter().map(|v| lse - *v as f64).sum::<f64>() / 11.0;
                (1.0 - eps) * (lse - row[t] as f64) + eps * smooth
            })
            .sum();
        let loss = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((loss - expected).abs() < 1e-4, "{loss} vs {expected}");
        let var = Var::from_tensor(&logits).unwrap();
        let (auto_loss, _) =
            composed_forward_backward(var.as_tensor(), &targets, &weights, eps, scale).unwrap();
        let store = (auto_loss * scale).unwrap().backward().unwrap();
        let reference = store.get(var.as_tensor()).unwrap();
        let row1: Vec<f32> = grad.get(1).unwrap().to_vec1().unwrap();
        let diff = (grad - reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-6, "{diff}");
        // Rows of weight 0 get no gradient.
        assert!(row1.iter().all(|v| *v == 0.0));
    }
}
