//! AdamW in one kernel per parameter tensor on CUDA: reads the f32 gradient, updates the f32
//! master weight and both moments in place (the composed update in `train/optim.rs` runs ~10
//! tensor ops per parameter, each a full pass with a fresh allocation), and the global gradient
//! norm as one f64 accumulator on the device read back once. The multi-tensor forms update every
//! parameter in one launch and write each updated weight's compute-dtype copy in the same pass;
//! [`FusedAdamW::cast_many`] makes the first copy and turns 16-bit gradients into f32 in one
//! launch each (candle's `to_dtype` is one launch per tensor).
//!
//! [`FusedAdamW::update`] returns `false` where the kernel does not apply (CPU, a build without
//! `cuda`, non-f32 or non-contiguous tensors): the caller runs the composed update, which is the
//! reference (`tests/gpu_kernels.rs` compares the two on a GPU).

#[cfg(feature = "cuda")]
mod cuda;

use candle_core::{DType, Result, Tensor};

/// One step's scalars, as the composed update computes them.
#[derive(Debug, Clone, Copy)]
pub struct AdamWScalars {
    /// Multiplies the gradient first (gradient clipping's coefficient, or 1).
    pub grad_scale: f64,
    /// `1 - lr * weight_decay` (1 without decay).
    pub decay_factor: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// `1 / sqrt(1 - beta2^t)`.
    pub inv_bias_correction2_sqrt: f64,
    pub eps: f64,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f64,
}

/// One parameter of a multi-tensor update ([`FusedAdamW::update_many`]).
#[derive(Debug, Clone, Copy)]
pub struct AdamWItem<'a> {
    pub param: &'a Tensor,
    pub grad: &'a Tensor,
    pub exp_avg: &'a Tensor,
    pub exp_avg_sq: &'a Tensor,
    /// The parameter's compute-dtype copy (bf16/f16, contiguous), rewritten from the updated
    /// weight in the same pass.
    pub copy: Option<&'a Tensor>,
    pub scalars: AdamWScalars,
}

kernel_handle! {
    /// Handle to the compiled optimizer kernels (none on CPU).
    pub struct FusedAdamW(cuda::AdamWKernels);
}

impl FusedAdamW {
    /// Updates `param`, `exp_avg` and `exp_avg_sq` in place from `grad`; `false` (nothing
    /// changed) when the kernel does not apply.
    pub fn update(
        &self,
        param: &Tensor,
        grad: &Tensor,
        exp_avg: &Tensor,
        exp_avg_sq: &Tensor,
        scalars: &AdamWScalars,
    ) -> Result<bool> {
        #[cfg(feature = "cuda")]
        if let Some(kernels) = &self.kernels {
            return cuda::update(kernels, param, grad, exp_avg, exp_avg_sq, scalars);
        }
        let _ = (param, grad, exp_avg, exp_avg_sq, scalars);
        Ok(false)
    }

    /// [`Self::update`] for every item in one launch; `false` (nothing changed) when the kernel
    /// does not apply to some item.
    pub fn update_many(&self, items: &[AdamWItem<'_>]) -> Result<bool> {
        #[cfg(feature = "cuda")]
        if let Some(kernels) = &self.kernels {
            return cuda::update_many(kernels, items);
        }
        let _ = items;
        Ok(false)
    }

    /// Every tensor of `tensors` (one dtype) converted to `dtype` in one launch, f32 <-> bf16/f16
    /// with candle's rounding: views of one new allocation. `None` when the kernel does not
    /// apply (the caller converts each tensor with `to_dtype`).
    pub fn cast_many(&self, tensors: &[&Tensor], dtype: DType) -> Result<Option<Vec<Tensor>>> {
        #[cfg(feature = "cuda")]
        if let Some(kernels) = &self.kernels {
            return cuda::cast_many(kernels, tensors, dtype);
        }
        let _ = (tensors, dtype);
        Ok(None)
    }

    /// `sqrt(sum of squares)` of every tensor of `grads` (f32, on the GPU), accumulated in f64
    /// on the device; `None` when the kernel does not apply to some tensor.
    pub fn global_norm(&self, grads: &[&Tensor]) -> Result<Option<f64>> {
        #[cfg(feature = "cuda")]
        if let Some(kernels) = &self.kernels {
            return cuda::global_norm(kernels, grads);
        }
        let _ = grads;
        Ok(None)
    }
}
