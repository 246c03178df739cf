//! Uploading image batches to the device. On CUDA, half-precision batches are converted straight
//! into a page-locked (pinned) host buffer that is kept between batches, and copied from there:
//! a copy from ordinary (pageable) memory is staged by the driver through its own small pinned
//! buffers, which on virtualised hosts runs at a fraction of the bus speed. Everything else takes
//! [`batch_tensor_as`].

#[cfg(feature = "cuda")]
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};

use super::batch_tensor_as;

/// Uploads `(N, 3, S, S)` batches; owns the pinned staging buffer (CUDA builds).
#[derive(Default)]
pub struct BatchUploader {
    #[cfg(feature = "cuda")]
    staging: Mutex<Option<pinned::Staging>>,
}

impl std::fmt::Debug for BatchUploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchUploader")
    }
}

impl BatchUploader {
    pub fn new() -> Self {
        Self::default()
    }

    /// As [`batch_tensor_as`] (same values, same checks), through the pinned buffer when `device`
    /// is CUDA and `dtype` is f16 or bf16.
    pub fn upload<I: AsRef<[f32]> + Sync>(
        &self,
        images: &[I],
        size: usize,
        device: &Device,
        dtype: DType,
    ) -> candle_core::Result<Tensor> {
        #[cfg(feature = "cuda")]
        if let (Device::Cuda(dev), DType::BF16 | DType::F16) = (device, dtype) {
            let image_len = 3 * size * size;
            if images.iter().all(|image| image.as_ref().len() == image_len) && !images.is_empty() {
                let mut staging = match self.staging.lock() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                return pinned::upload(&mut staging, images, size, dev, dtype);
            }
        }
        batch_tensor_as(images, size, device, dtype)
    }
}

#[cfg(feature = "cuda")]
mod pinned {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::PinnedHostSlice;
    use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
    use candle_core::op::BackpropOp;
    use candle_core::{CudaDevice, CudaStorage, DType, Storage, Tensor};
    use half::{bf16, f16};
    use rayon::prelude::*;

    /// A pinned buffer of one element type and length (reallocated when either changes).
    pub enum Staging {
        Bf16(PinnedHostSlice<bf16>),
        F16(PinnedHostSlice<f16>),
    }

    pub fn upload<I: AsRef<[f32]> + Sync>(
        staging: &mut Option<Staging>,
        images: &[I],
        size: usize,
        dev: &CudaDevice,
        dtype: DType,
    ) -> candle_core::Result<Tensor> {
        let image_len = 3 * size * size;
        let len = images.len() * image_len;
        let fits = match staging.as_ref() {
            Some(Staging::Bf16(buffer)) => dtype == DType::BF16 && buffer.len() == len,
            Some(Staging::F16(buffer)) => dtype == DType::F16 && buffer.len() == len,
            None => false,
        };
        if !fits {
            let context = dev.cuda_stream().context().clone();
            // SAFETY: the buffer is uninitialised; it is completely written below (every image has
            // `image_len` values, checked by the caller) before the copy reads it.
            *staging = Some(match dtype {
                DType::BF16 => Staging::Bf16(unsafe { context.alloc_pinned(len) }.w()?),
                _ => Staging::F16(unsafe { context.alloc_pinned(len) }.w()?),
            });
        }
        let slice = match staging.as_mut() {
            Some(Staging::Bf16(buffer)) => {
                fill(
                    buffer.as_mut_slice().w()?,
                    images,
                    image_len,
                    bf16::from_f32,
                );
                CudaStorageSlice::BF16(dev.clone_htod(buffer)?)
            }
            Some(Staging::F16(buffer)) => {
                fill(buffer.as_mut_slice().w()?, images, image_len, f16::from_f32);
                CudaStorageSlice::F16(dev.clone_htod(buffer)?)
            }
            None => candle_core::bail!("pinned staging buffer missing"),
        };
        let storage = CudaStorage {
            slice,
            device: dev.clone(),
        };
        debug_assert_eq!(storage.dtype(), dtype);
        Ok(Tensor::from_storage(
            Storage::Cuda(storage),
            (images.len(), 3, size, size),
            BackpropOp::none(),
            false,
        ))
    }

    fn fill<I: AsRef<[f32]> + Sync, T: Send>(
        out: &mut [T],
        images: &[I],
        image_len: usize,
        convert: impl Fn(f32) -> T + Sync,
    ) {
        out.par_chunks_mut(image_len.max(1))
            .zip(images.par_iter())
            .for_each(|(out, image)| {
                for (slot, value) in out.iter_mut().zip(image.as_ref()) {
                    *slot = convert(*value);
                }
            });
    }
}
