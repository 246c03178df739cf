//! Bias and residual adds for training in one pass: `x + bias (+ residual)` (candle runs the
//! bias add and the residual add as two broadcast kernels with 2-byte accesses; in the explicit
//! backward's step they were a fifth of the GPU time, `badd` in the profile of docs/training.md).
//!
//! [`FusedAdd::add`] returns `None` where the kernel does not apply (CPU, f32, mixed dtypes or
//! shapes, a build without `cuda`): the caller composes `x.broadcast_add(bias) + residual`, the
//! reference the kernel is tested against (`tests/gpu_kernels.rs`).

#[cfg(feature = "cuda")]
mod cuda;

use candle_core::{DType, Result, Tensor};

kernel_handle! {
    /// Handle to the compiled kernels (none on CPU).
    pub struct FusedAdd(cuda::AddKernels);
}

impl FusedAdd {
    /// `x + bias + residual` for `x` `(..., d)`, `bias` `(d)` and `residual` shaped like `x`
    /// (either may be absent), rounded once; `None` when the kernel does not apply.
    pub fn add(
        &self,
        x: &Tensor,
        bias: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        let d = x.dims().last().copied().unwrap_or(0);
        let applies = self.enabled()
            && x.device().is_cuda()
            && matches!(x.dtype(), DType::BF16 | DType::F16)
            && d > 0
            && d <= i32::MAX as usize
            && bias.is_none_or(|b| b.dtype() == x.dtype() && b.dims() == [d])
            && residual.is_none_or(|r| r.dtype() == x.dtype() && r.shape() == x.shape());
        if !applies {
            return Ok(None);
        }
        self.run(x, bias, residual).map(Some)
    }

    #[cfg(feature = "cuda")]
    fn run(&self, x: &Tensor, bias: Option<&Tensor>, residual: Option<&Tensor>) -> Result<Tensor> {
        let (Some(kernels), candle_core::Device::Cuda(dev)) = (&self.kernels, x.device()) else {
            candle_core::bail!("the add kernels are not loaded")
        };
        let x = x.contiguous()?;
        let bias = bias.map(Tensor::contiguous).transpose()?;
        let residual = residual.map(Tensor::contiguous).transpose()?;
        cuda::add(kernels, dev, &x, bias.as_ref(), residual.as_ref())
    }

    #[cfg(not(feature = "cuda"))]
    fn run(&self, _: &Tensor, _: Option<&Tensor>, _: Option<&Tensor>) -> Result<Tensor> {
        candle_core::bail!("the add kernels need a build with --features cuda")
    }
}

/// The composed reference of [`FusedAdd::add`]: candle's broadcast add, then the residual.
pub fn composed_add(
    x: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let y = match bias {
        Some(b) => x.broadcast_add(b)?,
        None => x.clone(),
    };
    match residual {
        Some(r) => y + r,
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cpu_tensors_take_the_composed_path() {
        let add = FusedAdd::for_device(&Device::Cpu).unwrap();
        let x = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
        let bias = Tensor::new(&[1f32, 2., 3., 4.], &Device::Cpu).unwrap();
        assert!(add.add(&x, Some(&bias), None).unwrap().is_none());
        let y = composed_add(&x, Some(&bias), Some(&x)).unwrap();
        assert_eq!(
            y.to_vec2::<f32>().unwrap(),
            vec![vec![3., 4., 5., 6.], vec![3., 4., 5., 6.]]
        );
    }
}
