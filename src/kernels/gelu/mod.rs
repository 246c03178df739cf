//! Bias + exact GELU for training, forward and backward in one kernel each (candle composes the
//! bias add and the erf GELU forward from 2 ops and their backward from ~12, each a full pass
//! over the `(rows, intermediate)` activations, plus a reduction for the bias gradient).
//!
//! [`FusedGelu::bias_gelu`] returns `None` where the kernel does not apply (CPU, f32, a build
//! without `cuda`): the caller runs `gelu_erf(x + bias)` composed, the reference the kernel is
//! tested against (`tests/gpu_kernels.rs`).

#[cfg(feature = "cuda")]
mod cuda;

use candle_core::{DType, Result, Tensor};

kernel_handle! {
    /// Handle to the compiled kernels (none on CPU).
    pub struct FusedGelu(cuda::GeluKernels);
}

impl FusedGelu {
    /// `gelu_erf(xs + bias)` for `xs` `(..., d)` and `bias` `(d)`, differentiable with respect
    /// to both; `None` when the kernel does not apply.
    pub fn bias_gelu(&self, xs: &Tensor, bias: &Tensor) -> Result<Option<Tensor>> {
        let applies = self.enabled()
            && xs.device().is_cuda()
            && matches!(xs.dtype(), DType::BF16 | DType::F16)
            && bias.dtype() == xs.dtype()
            && bias.rank() == 1
            && xs.dims().last() == Some(&bias.elem_count());
        if !applies {
            return Ok(None);
        }
        self.run(xs, bias).map(Some)
    }

    /// Gradients `(dx, dbias)` (both in `xs`' dtype) of `gelu_erf(xs + bias)` for the output
    /// gradient `dy`, without candle's autograd; `None` when the kernel does not apply.
    pub fn bias_gelu_grad(
        &self,
        xs: &Tensor,
        bias: &Tensor,
        dy: &Tensor,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let applies = self.enabled()
            && xs.device().is_cuda()
            && matches!(xs.dtype(), DType::BF16 | DType::F16)
            && bias.dtype() == xs.dtype()
            && bias.rank() == 1
            && xs.dims().last() == Some(&bias.elem_count());
        if !applies {
            return Ok(None);
        }
        self.run_grad(xs, bias, dy).map(Some)
    }

    #[cfg(feature = "cuda")]
    fn run_grad(&self, xs: &Tensor, bias: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
        let Some(kernels) = &self.kernels else {
            candle_core::bail!("fused GELU kernels are not loaded")
        };
        let dy = dy.to_dtype(xs.dtype())?.contiguous()?;
        let packed = xs.contiguous()?.apply_op3_no_bwd(
            &bias.contiguous()?,
            &dy,
            &cuda::BiasGeluBackward {
                kernels: kernels.clone(),
            },
        )?;
        let (n, d) = (xs.elem_count(), bias.elem_count());
        let dx = packed.narrow(0, 0, n)?.reshape(xs.shape())?;
        let db = packed.narrow(0, n, d)?;
        Ok((dx, db))
    }

    #[cfg(not(feature = "cuda"))]
    fn run_grad(&self, _: &Tensor, _: &Tensor, _: &Tensor) -> Result<(Tensor, Tensor)> {
        candle_core::bail!("fused GELU needs a build with --features cuda")
    }

    #[cfg(feature = "cuda")]
    fn run(&self, xs: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let Some(kernels) = &self.kernels else {
            candle_core::bail!("fused GELU kernels are not loaded")
        };
        xs.contiguous()?.apply_op2(
            &bias.contiguous()?,
            cuda::BiasGelu {
                kernels: kernels.clone(),
            },
        )
    }

    #[cfg(not(feature = "cuda"))]
    fn run(&self, _: &Tensor, _: &Tensor) -> Result<Tensor> {
        candle_core::bail!("fused GELU needs a build with --features cuda")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cpu_tensors_take_the_composed_path() {
        let gelu = FusedGelu::for_device(&Device::Cpu).unwrap();
        let xs = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        let bias = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        assert!(gelu.bias_gelu(&xs, &bias).unwrap().is_none());
    }
}
