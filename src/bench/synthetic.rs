//! The bench's input image: a deterministic 640x480 RGB picture (gradients plus hashed noise, so JPEG
//! has real work to do), encoded once as a quality-90 JPEG, and the timing of its CPU preprocessing
//! (decode + Pillow-exact bicubic resize + normalize). `benches/reference/pytorch_blip.py` builds the
//! same pixels with the same formula.

use std::path::Path;
use std::time::Instant;

use image::{ImageEncoder, RgbImage};

use super::document::{PreprocessTiming, Summary};
use super::BenchError;
use crate::preprocess::{decode::decode_rgb, ImageProcessor};

/// Width of the synthetic image (a typical COCO photo size).
pub const WIDTH: u32 = 640;
/// Height of the synthetic image.
pub const HEIGHT: u32 = 480;
/// JPEG quality of the encoded image.
pub const JPEG_QUALITY: u8 = 90;

/// The synthetic picture: channel `c` at `(x, y)` is a gradient (`x`, `y`, `x + y` scaled to
/// 0..=191) plus 6 bits of a multiplicative hash of `(x, y, c)`, so every value is in 0..=254.
pub fn synthetic_image() -> RgbImage {
    RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
        let channel = |c: u32| {
            let hash = x.wrapping_mul(73_856_093)
                ^ y.wrapping_mul(19_349_663)
                ^ c.wrapping_mul(83_492_791);
            let noise = (hash >> 11) & 63;
            let gradient = match c {
                0 => x * 191 / (WIDTH - 1),
                1 => y * 191 / (HEIGHT - 1),
                _ => (x + y) * 191 / (WIDTH + HEIGHT - 2),
            };
            u8::try_from(gradient + noise).unwrap_or(u8::MAX)
        };
        image::Rgb([channel(0), channel(1), channel(2)])
    })
}

/// The synthetic picture as JPEG bytes.
pub fn synthetic_jpeg() -> Result<Vec<u8>, BenchError> {
    let image = synthetic_image();
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY)
        .write_image(
            image.as_raw(),
            WIDTH,
            HEIGHT,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|err| BenchError::Internal(format!("encoding the synthetic JPEG: {err}")))?;
    Ok(bytes)
}

/// Decodes and preprocesses `jpeg` once: CHW f32 of `processor.size` squared.
pub fn preprocess_once(processor: &ImageProcessor, jpeg: &[u8]) -> Result<Vec<f32>, BenchError> {
    let rgb = decode_rgb(jpeg, Path::new("synthetic.jpg"), processor.max_pixels)
        .map_err(|err| BenchError::Internal(format!("decoding the synthetic JPEG: {err}")))?;
    Ok(processor.process_rgb(&rgb))
}

/// Times [`preprocess_once`] `iterations` times after `warmup` untimed runs, on this thread.
pub fn time_preprocess(
    processor: &ImageProcessor,
    jpeg: &[u8],
    warmup: usize,
    iterations: usize,
) -> Result<PreprocessTiming, BenchError> {
    for _ in 0..warmup {
        preprocess_once(processor, jpeg)?;
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations.max(1) {
        let started = Instant::now();
        let pixels = preprocess_once(processor, jpeg)?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(pixels);
    }
    let ms = Summary::of(&samples)
        .ok_or_else(|| BenchError::Internal("no preprocessing sample".into()))?;
    Ok(PreprocessTiming {
        input: format!(
            "{WIDTH}x{HEIGHT} synthetic JPEG (quality {JPEG_QUALITY}) -> {size}x{size}",
            size = processor.size
        ),
        images_per_s_one_thread: if ms.p50 > 0.0 { 1e3 / ms.p50 } else { 0.0 },
        ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_image_is_deterministic_and_varied() {
        let image = synthetic_image();
        assert_eq!(image.dimensions(), (WIDTH, HEIGHT));
        assert_eq!(image, synthetic_image());
        // Values benches/reference/pytorch_blip.py's numpy version of the formula gives.
        for (x, y, rgb) in [
            (0, 0, [0, 63, 63]),
            (100, 50, [90, 21, 27]),
            (639, 479, [194, 251, 251]),
            (333, 222, [157, 93, 99]),
        ] {
            assert_eq!(image.get_pixel(x, y).0, rgb, "pixel ({x}, {y})");
        }
        let sum: u64 = image.as_raw().iter().map(|&v| u64::from(v)).sum();
        assert_eq!(sum, 116_579_761);
        let distinct: std::collections::BTreeSet<u8> = image.as_raw().iter().copied().collect();
        assert!(
            distinct.len() > 200,
            "only {} distinct values",
            distinct.len()
        );
    }

    #[test]
    fn preprocessing_the_jpeg_gives_model_input() {
        let processor = ImageProcessor::blip(64);
        let jpeg = synthetic_jpeg().unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "JPEG start-of-image marker");
        let pixels = preprocess_once(&processor, &jpeg).unwrap();
        assert_eq!(pixels.len(), 3 * 64 * 64);
        let timing = time_preprocess(&processor, &jpeg, 0, 2).unwrap();
        assert_eq!(timing.ms.count, 2);
    }
}
