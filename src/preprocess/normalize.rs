//! Rescale + normalize of a resized RGB image into a CHW f32 tensor, with exactly the
//! arithmetic of transformers' `BlipImageProcessor` (PIL path):
//!
//! 1. rescale: `(u8 as f64 * (1/255 as f64)) as f32` (numpy `astype(float64) * scale`,
//!    then `astype(float32)`);
//! 2. normalize in f32 with a real division: `(x - mean[c]) / std[c]`, where mean and std
//!    are the f32 roundings of the Python floats (numpy `np.array(mean, dtype=float32)`).
//!
//! A u8 has only 256 values, so both steps are tabulated once per channel; the table
//! entries are computed with the very same operations, so the result is unchanged.

use image::RgbImage;

/// transformers' `rescale_factor = 1 / 255` as the f64 Python computes (0.00392156862745098).
pub const RESCALE_FACTOR: f64 = 1.0 / 255.0;

/// Rescales one u8 sample to f32 as numpy does: in f64, then rounded to f32.
pub fn rescale(value: u8) -> f32 {
    (f64::from(value) * RESCALE_FACTOR) as f32
}

/// Per-channel lookup from a u8 sample to its normalized f32 value.
#[derive(Debug, Clone)]
pub struct Normalizer {
    table: [[f32; 256]; 3],
}

impl Normalizer {
    /// Tabulates `(rescale(v) - mean[c]) / std[c]` for every `v` and channel `c`.
    pub fn new(mean: [f32; 3], std: [f32; 3]) -> Self {
        let mut table = [[0f32; 256]; 3];
        for ((channel_table, channel_mean), channel_std) in table.iter_mut().zip(mean).zip(std) {
            for (value, entry) in (0u8..=255).zip(channel_table.iter_mut()) {
                *entry = (rescale(value) - channel_mean) / channel_std;
            }
        }
        Normalizer { table }
    }

    /// Normalizes every pixel of `image` into planar CHW layout
    /// (`[3, height, width]`, length `3 * width * height`).
    pub fn to_chw(&self, image: &RgbImage) -> Vec<f32> {
        let plane_len = image.as_raw().len() / 3;
        let mut chw = vec![0f32; plane_len * 3];
        let (red, rest) = chw.split_at_mut(plane_len);
        let (green, blue) = rest.split_at_mut(plane_len);
        let [red_table, green_table, blue_table] = &self.table;
        let planes = red.iter_mut().zip(green.iter_mut()).zip(blue.iter_mut());
        for (((r, g), b), pixel) in planes.zip(image.as_raw().chunks_exact(3)) {
            if let [pr, pg, pb] = *pixel {
                *r = red_table[usize::from(pr)];
                *g = green_table[usize::from(pg)];
                *b = blue_table[usize::from(pb)];
            }
        }
        chw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_factor_is_pythons_one_over_255() {
        assert_eq!(RESCALE_FACTOR, 0.00392156862745098);
        assert_eq!(rescale(0), 0.0);
        assert_eq!(rescale(255), 1.0);
        assert_eq!(rescale(128), (128.0f64 * 0.00392156862745098) as f32);
    }

    #[test]
    fn to_chw_puts_channels_in_planes() {
        let image = RgbImage::from_raw(2, 1, vec![0, 51, 102, 255, 204, 153]).unwrap_or_default();
        let normalizer = Normalizer::new([0.0; 3], [1.0; 3]);
        let chw = normalizer.to_chw(&image);
        assert_eq!(chw, vec![0.0, 1.0, 0.2, 0.8, 0.4, 0.6]);
    }

    #[test]
    fn normalize_uses_a_real_division() {
        let std = 0.26862954f64 as f32;
        let mean = 0.48145466f64 as f32;
        let normalizer = Normalizer::new([mean; 3], [std; 3]);
        let chw = normalizer.to_chw(&RgbImage::from_pixel(1, 1, image::Rgb([77, 77, 77])));
        assert_eq!(chw[0], (rescale(77) - mean) / std);
        // Multiplying by the reciprocal would round differently for some values.
        let by_reciprocal =
            (0..=255u8).filter(|&v| (rescale(v) - mean) * (1.0 / std) != (rescale(v) - mean) / std);
        assert!(by_reciprocal.count() > 0);
    }
}
