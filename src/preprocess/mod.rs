//! Image preprocessing for BLIP, bit-exact with transformers' `BlipImageProcessor` on the PIL
//! path (the Python baseline), plus prompt tokenization ([`prompt`]).
//!
//! The pipeline is: decode + EXIF orientation + `convert("RGB")` ([`decode`]), Pillow BICUBIC
//! resize to `size x size` with no aspect ratio kept ([`resize`]), rescale by 1/255 and
//! normalize with mean/std into CHW f32 ([`normalize`]), and stacking into an NCHW tensor
//! ([`batch_tensor`]). Everything runs on the CPU; only the finished batch is uploaded.
//!
//! Exactness: PNG input gives the very same f32 values as the Python baseline (Pillow 12.3 by
//! default; Pillow 13.0 or <= 12.1 through [`PassOrder`]). JPEG input is decoded by zune-jpeg rather than
//! libjpeg-turbo; on 4:2:0 chroma-subsampled photos the decoded RGB differs from Pillow's by up
//! to a few levels (see [`decode`]), i.e. up to about 4/255/0.26 = 0.06 in normalized units on
//! the affected values, before the resize averages them.

pub mod decode;
mod error;
pub mod lavis_text;
pub mod normalize;
pub mod prompt;
pub mod resize;
pub mod upload;

use std::path::Path;

use candle_core::{Device, Tensor};
use image::RgbImage;

pub use error::PreprocessError;
pub use resize::PassOrder;

use normalize::Normalizer;

/// OpenAI CLIP mean used by BLIP, as numpy rounds the Python floats to f32.
pub const BLIP_MEAN: [f32; 3] = [
    0.48145466f64 as f32,
    0.4578275f64 as f32,
    0.40821073f64 as f32,
];
/// OpenAI CLIP std used by BLIP, as numpy rounds the Python floats to f32.
pub const BLIP_STD: [f32; 3] = [
    0.26862954f64 as f32,
    0.26130258f64 as f32,
    0.27577711f64 as f32,
];
/// Pillow's default `Image.MAX_IMAGE_PIXELS` (1024 * 1024 * 1024 // 4 // 3).
pub const PILLOW_MAX_IMAGE_PIXELS: u64 = 89_478_485;

/// Turns image files into normalized CHW f32 pixel arrays of `size x size`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    /// Output height and width in pixels (config `vision_config.image_size`).
    pub size: usize,
    /// Per-channel mean subtracted after rescaling to 0..=1.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub std: [f32; 3],
    /// Order of the two resize passes (which Pillow version to agree with).
    pub pass_order: PassOrder,
    /// Largest accepted `width * height`, checked from the file header before decoding.
    pub max_pixels: u64,
}

impl ImageProcessor {
    /// BLIP's processor: CLIP mean/std, Pillow 12.3 pass order, Pillow's pixel limit.
    pub fn blip(size: usize) -> Self {
        ImageProcessor {
            size,
            mean: BLIP_MEAN,
            std: BLIP_STD,
            pass_order: PassOrder::HorizontalFirst,
            max_pixels: PILLOW_MAX_IMAGE_PIXELS,
        }
    }

    /// Decodes `path` to RGB (EXIF orientation applied, Pillow's `convert("RGB")`).
    pub fn load_rgb(&self, path: &Path) -> Result<RgbImage, PreprocessError> {
        decode::load_rgb(path, self.max_pixels)
    }

    /// Loads and preprocesses one image file: CHW f32, length `3 * size * size`.
    pub fn process_file(&self, path: &Path) -> Result<Vec<f32>, PreprocessError> {
        Ok(self.process_rgb(&self.load_rgb(path)?))
    }

    /// Resizes and normalizes an RGB image: CHW f32, length `3 * size * size`.
    pub fn process_rgb(&self, image: &RgbImage) -> Vec<f32> {
        let side = u32::try_from(self.size).unwrap_or(u32::MAX);
        let resized = resize::resize_bicubic(image, side, side, self.pass_order);
        Normalizer::new(self.mean, self.std).to_chw(&resized)
    }

    /// Stacks preprocessed images into one `(N, 3, size, size)` f32 tensor on `device`
    /// (same as the free function [`batch_tensor`]).
    pub fn batch_tensor(
        images: &[Vec<f32>],
        size: usize,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        batch_tensor(images, size, device)
    }
}

/// Stacks CHW f32 images (each of length `3 * size * size`) into an `(N, 3, size, size)`
/// tensor on `device`; errors if any image has another length.
pub fn batch_tensor(
    images: &[Vec<f32>],
    size: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    batch_tensor_as(images, size, device, candle_core::DType::F32)
}

/// As [`batch_tensor`], converted to `dtype` (f32, f16 or bf16) on the host before the upload: the batch
/// is stacked and converted in parallel (one image per task), and a half-precision batch moves half the
/// bytes to the device. f32 -> f16/bf16 rounds to nearest even, as the device cast does.
pub fn batch_tensor_as<I: AsRef<[f32]> + Sync>(
    images: &[I],
    size: usize,
    device: &Device,
    dtype: candle_core::DType,
) -> candle_core::Result<Tensor> {
    use rayon::prelude::*;
    let image_len = 3 * size * size;
    if let Some((index, wrong)) = images
        .iter()
        .enumerate()
        .find(|(_, image)| image.as_ref().len() != image_len)
    {
        candle_core::bail!(
            "batch_tensor: image {index} has {} values, expected 3*{size}*{size} = {image_len}; \
             preprocess every image with the same size",
            wrong.as_ref().len()
        );
    }
    let shape = (images.len(), 3, size, size);
    fn stack<I: AsRef<[f32]> + Sync, T: Copy + Default + Send + Sync>(
        images: &[I],
        image_len: usize,
        convert: impl Fn(f32) -> T + Sync,
    ) -> Vec<T> {
        let mut flat = vec![T::default(); images.len() * image_len];
        flat.par_chunks_mut(image_len.max(1))
            .zip(images.par_iter())
            .for_each(|(out, image)| {
                for (slot, value) in out.iter_mut().zip(image.as_ref()) {
                    *slot = convert(*value);
                }
            });
        flat
    }
    match dtype {
        candle_core::DType::BF16 => Tensor::from_vec(
            stack(images, image_len, half::bf16::from_f32),
            shape,
            device,
        ),
        candle_core::DType::F16 => {
            Tensor::from_vec(stack(images, image_len, half::f16::from_f32), shape, device)
        }
        other => Tensor::from_vec(stack(images, image_len, |v| v), shape, device)?.to_dtype(other),
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn half_batches_equal_a_cast_of_the_f32_batch() {
        // Values spanning the normalised pixel range plus rounding-sensitive ones.
        let images: Vec<Vec<f32>> = (0..3)
            .map(|i| {
                (0..3 * 4 * 4)
                    .map(|j| ((i * 48 + j) as f32 * 0.0371).sin() * 2.1 + 1.0 / 3.0)
                    .collect()
            })
            .collect();
        let f32_batch = batch_tensor(&images, 4, &Device::Cpu).unwrap();
        for dtype in [DType::BF16, DType::F16] {
            let direct = batch_tensor_as(&images, 4, &Device::Cpu, dtype).unwrap();
            let cast = f32_batch.to_dtype(dtype).unwrap();
            assert_eq!(direct.dtype(), dtype);
            let (a, b) = (
                direct
                    .to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
                cast.to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
            assert_eq!(a, b, "{dtype:?}");
        }
        assert!(batch_tensor_as(&images[..1], 5, &Device::Cpu, DType::BF16).is_err());
    }
}
