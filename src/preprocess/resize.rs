//! Pillow-compatible BICUBIC resampling of 8-bit RGB images, bit for bit.
//!
//! This is the resize of `Image.resize(size, Image.BICUBIC)` (no `box`, no `reducing_gap`)
//! for 8-bit images, written from the algorithm's description:
//!
//! - the kernel is Keys' cubic with `a = -0.5` and support 2;
//! - each axis has its own table: `scale = in / out`, `filterscale = max(scale, 1)`, and
//!   output index `i` reads the inputs `j` in `trunc(center -/+ support + 0.5)` around
//!   `center = (i + 0.5) * scale`, weighted by `kernel((j - center + 0.5) * (1 / filterscale))`
//!   (a multiplication by the reciprocal, as Pillow does: a division can round differently);
//!   the taps are normalised to sum 1 in f64 (real division by their sum), then turned into
//!   i32 fixed point with 22 fractional bits (rounded half away from zero);
//! - a pass accumulates `pixel * weight` in i32 from `1 << 21` (the rounding half) and
//!   keeps `acc >> 22` clamped to 0..=255, so the image is rounded to u8 between the two
//!   passes;
//! - an axis whose size does not change is not resampled at all (a pure copy when neither
//!   changes).
//!
//! The only version-dependent part is which pass runs first ([`PassOrder`]); because of the
//! intermediate u8 rounding, the two orders differ by one level on some values:
//! - Pillow <= 12.1: always horizontal first;
//! - Pillow 12.2 and 12.3: horizontal first, except that an image more than 100 times taller
//!   than wide whose height shrinks is resized vertically first (`Image.resize` in Python
//!   splits it into two one-axis resizes);
//! - Pillow 13.0: vertical first when the height shrinks by more than twice as many pixels as
//!   the width does (signed), horizontal first otherwise.
//!
//! Both passes are exact integer arithmetic, so summation order is free: the vertical
//! pass accumulates whole rows (cache order, vectorisable) instead of walking columns.

use image::RgbImage;

/// Fractional bits of the fixed-point weights (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 22;
/// Accumulator start value: one half in fixed point, so the final shift rounds.
const ROUNDING_HALF: i32 = 1 << (PRECISION_BITS - 1);
/// Half-width of the bicubic kernel in output pixels.
const BICUBIC_SUPPORT: f64 = 2.0;
/// Keys' cubic parameter used by Pillow.
const BICUBIC_A: f64 = -0.5;
/// Channels of an RGB pixel.
const CHANNELS: usize = 3;

/// Which of the two separable passes runs first, i.e. which Pillow version to agree with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassOrder {
    /// Pillow 12.2 and 12.3 (the version the Python baseline pins): horizontal pass first,
    /// except vertical first when `in_h > 100 * in_w` and `out_h < in_h`. For every image
    /// that is not 100 times taller than wide this is the same as [`Self::AlwaysHorizontal`].
    #[default]
    HorizontalFirst,
    /// Pillow 13.0: vertical first when `dy > 0 && dy > 2 * dx` with the signed shrinkages
    /// `dx = in_w - out_w`, `dy = in_h - out_h`; horizontal first otherwise.
    Pillow13,
    /// Pillow up to 12.1 (and the Pillow of LAVIS-era environments): always horizontal first.
    AlwaysHorizontal,
}

impl PassOrder {
    /// Whether the vertical pass runs before the horizontal one for this size change.
    pub fn vertical_first(self, in_w: u32, in_h: u32, out_w: u32, out_h: u32) -> bool {
        match self {
            PassOrder::AlwaysHorizontal => false,
            PassOrder::HorizontalFirst => u64::from(in_h) > 100 * u64::from(in_w) && out_h < in_h,
            PassOrder::Pillow13 => {
                let dx = i64::from(in_w) - i64::from(out_w);
                let dy = i64::from(in_h) - i64::from(out_h);
                dy > 0 && dy > 2 * dx
            }
        }
    }
}

/// Pillow's bicubic kernel (`a = -0.5`), evaluated exactly as Pillow does in f64.
fn bicubic_kernel(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        ((BICUBIC_A + 2.0) * x - (BICUBIC_A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * BICUBIC_A
    } else {
        0.0
    }
}

/// Rounds a normalised f64 weight to fixed point, half away from zero (then truncation).
fn to_fixed_point(weight: f64) -> i32 {
    let scaled = weight * f64::from(1u32 << PRECISION_BITS);
    if weight < 0.0 {
        (scaled - 0.5) as i32
    } else {
        (scaled + 0.5) as i32
    }
}

/// Clamps an accumulator to a u8 after removing the fixed-point fraction.
fn fixed_point_to_u8(acc: i32) -> u8 {
    // acc >> 22 is in -512..=511 for any reachable acc; negative and >255 saturate.
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The taps of one output index: the first input index they read and their weights.
struct OutputTaps {
    first_input: usize,
    weights: Vec<i32>,
}

/// Fixed-point bicubic weights of one axis for one `(in_len, out_len)` pair.
struct AxisWeights {
    taps: Vec<OutputTaps>,
}

impl AxisWeights {
    /// Builds the table mapping `in_len` samples onto `out_len` samples.
    /// Both lengths must be non-zero.
    fn bicubic(in_len: u32, out_len: u32) -> Self {
        // Pillow computes the extent from float box coordinates: (float)in - 0.0f.
        let scale = f64::from(in_len as f32) / f64::from(out_len);
        let filterscale = scale.max(1.0);
        let support = BICUBIC_SUPPORT * filterscale;
        let inv_filterscale = 1.0 / filterscale;
        let in_len_i64 = i64::from(in_len);
        let taps = (0..out_len)
            .map(|out_index| {
                let center = (f64::from(out_index) + 0.5) * scale;
                // C `(int)` conversions truncate toward zero.
                let first = ((center - support + 0.5) as i64).max(0);
                let end = ((center + support + 0.5) as i64).min(in_len_i64);
                let raw: Vec<f64> = (first..end.max(first))
                    .map(|input| bicubic_kernel((input as f64 - center + 0.5) * inv_filterscale))
                    .collect();
                let total: f64 = raw.iter().sum();
                let weights = raw
                    .iter()
                    .map(|&w| to_fixed_point(if total != 0.0 { w / total } else { w }))
                    .collect();
                OutputTaps {
                    first_input: usize::try_from(first).unwrap_or(0),
                    weights,
                }
            })
            .collect();
        AxisWeights { taps }
    }
}

/// An 8-bit RGB raster: `width * height * 3` bytes, rows top to bottom.
struct Raster<'a> {
    width: usize,
    height: usize,
    data: std::borrow::Cow<'a, [u8]>,
}

/// Resamples every row to `weights.taps.len()` pixels.
fn horizontal_pass(src: &Raster, weights: &AxisWeights) -> Raster<'static> {
    let out_width = weights.taps.len();
    let mut data = vec![0u8; out_width * src.height * CHANNELS];
    let src_rows = src.data.chunks_exact(src.width * CHANNELS);
    let dst_rows = data.chunks_exact_mut(out_width * CHANNELS);
    for (src_row, dst_row) in src_rows.zip(dst_rows) {
        for (taps, dst_px) in weights.taps.iter().zip(dst_row.chunks_exact_mut(CHANNELS)) {
            let start = taps.first_input * CHANNELS;
            let window = src_row.get(start..).unwrap_or_default();
            let (mut red, mut green, mut blue) = (ROUNDING_HALF, ROUNDING_HALF, ROUNDING_HALF);
            for (&w, px) in taps.weights.iter().zip(window.chunks_exact(CHANNELS)) {
                if let [r, g, b] = *px {
                    red = red.wrapping_add(i32::from(r).wrapping_mul(w));
                    green = green.wrapping_add(i32::from(g).wrapping_mul(w));
                    blue = blue.wrapping_add(i32::from(b).wrapping_mul(w));
                }
            }
            if let [r, g, b] = dst_px {
                *r = fixed_point_to_u8(red);
                *g = fixed_point_to_u8(green);
                *b = fixed_point_to_u8(blue);
            }
        }
    }
    Raster {
        width: out_width,
        height: src.height,
        data: data.into(),
    }
}

/// Resamples every column to `weights.taps.len()` pixels, accumulating whole rows.
fn vertical_pass(src: &Raster, weights: &AxisWeights) -> Raster<'static> {
    let row_len = src.width * CHANNELS;
    let out_height = weights.taps.len();
    let mut data = vec![0u8; row_len * out_height];
    let mut acc = vec![0i32; row_len];
    for (taps, dst_row) in weights.taps.iter().zip(data.chunks_exact_mut(row_len)) {
        acc.fill(ROUNDING_HALF);
        let start = taps.first_input * row_len;
        let window = src.data.get(start..).unwrap_or_default();
        for (&w, src_row) in taps.weights.iter().zip(window.chunks_exact(row_len)) {
            for (a, &p) in acc.iter_mut().zip(src_row) {
                *a = a.wrapping_add(i32::from(p).wrapping_mul(w));
            }
        }
        for (d, &a) in dst_row.iter_mut().zip(acc.iter()) {
            *d = fixed_point_to_u8(a);
        }
    }
    Raster {
        width: src.width,
        height: out_height,
        data: data.into(),
    }
}

/// Resizes `src` to `out_width x out_height` exactly like Pillow's 8-bit BICUBIC resize.
///
/// An axis whose size is unchanged is copied, not filtered. A zero-sized input with a
/// non-zero output (which Pillow refuses) yields a black image instead of panicking.
pub fn resize_bicubic(
    src: &RgbImage,
    out_width: u32,
    out_height: u32,
    order: PassOrder,
) -> RgbImage {
    let (in_width, in_height) = src.dimensions();
    if in_width == 0 || in_height == 0 || out_width == 0 || out_height == 0 {
        return RgbImage::new(out_width, out_height);
    }
    let need_horizontal = in_width != out_width;
    let need_vertical = in_height != out_height;
    let mut raster = Raster {
        width: in_width as usize,
        height: in_height as usize,
        data: src.as_raw().as_slice().into(),
    };
    let horizontal = need_horizontal.then(|| AxisWeights::bicubic(in_width, out_width));
    let vertical = need_vertical.then(|| AxisWeights::bicubic(in_height, out_height));
    if order.vertical_first(in_width, in_height, out_width, out_height) {
        if let Some(weights) = &vertical {
            raster = vertical_pass(&raster, weights);
        }
        if let Some(weights) = &horizontal {
            raster = horizontal_pass(&raster, weights);
        }
    } else {
        if let Some(weights) = &horizontal {
            raster = horizontal_pass(&raster, weights);
        }
        if let Some(weights) = &vertical {
            raster = vertical_pass(&raster, weights);
        }
    }
    RgbImage::from_raw(out_width, out_height, raster.data.into_owned())
        .unwrap_or_else(|| RgbImage::new(out_width, out_height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_matches_keys_cubic_at_known_points() {
        assert_eq!(bicubic_kernel(0.0), 1.0);
        assert_eq!(bicubic_kernel(1.0), 0.0);
        assert_eq!(bicubic_kernel(-0.5), 0.5625);
        assert_eq!(bicubic_kernel(1.5), -0.0625);
        assert_eq!(bicubic_kernel(2.0), 0.0);
    }

    #[test]
    fn fixed_point_rounds_half_away_from_zero() {
        assert_eq!(to_fixed_point(1.0), 1 << 22);
        assert_eq!(to_fixed_point(-0.0625), -(1 << 18));
        assert_eq!(to_fixed_point(0.5 / f64::from(1u32 << 22)), 1);
        assert_eq!(to_fixed_point(-0.5 / f64::from(1u32 << 22)), -1);
    }

    #[test]
    fn weights_of_each_output_sum_to_one_in_fixed_point_within_rounding() {
        for (in_len, out_len) in [(640, 384), (10, 384), (4000, 384), (1, 7), (3, 2)] {
            let table = AxisWeights::bicubic(in_len, out_len);
            assert_eq!(table.taps.len(), out_len as usize);
            for taps in &table.taps {
                let sum: i32 = taps.weights.iter().sum();
                assert!(
                    (sum - (1 << 22)).abs() <= taps.weights.len() as i32,
                    "{in_len}->{out_len}: {sum}"
                );
                assert!(taps.first_input + taps.weights.len() <= in_len as usize);
            }
        }
    }

    #[test]
    fn pass_order_rules_pick_vertical_first_as_each_pillow_version() {
        let order = PassOrder::Pillow13;
        assert!(order.vertical_first(691, 1000, 384, 384));
        assert!(!order.vertical_first(692, 1000, 384, 384));
        assert!(!order.vertical_first(640, 480, 384, 384));
        assert!(order.vertical_first(10, 4000, 16, 16));
        assert!(!PassOrder::HorizontalFirst.vertical_first(691, 1000, 384, 384));
        assert!(PassOrder::HorizontalFirst.vertical_first(10, 1001, 16, 16));
        assert!(!PassOrder::HorizontalFirst.vertical_first(10, 1000, 16, 16));
        assert!(!PassOrder::HorizontalFirst.vertical_first(10, 1001, 16, 2000));
        assert!(!PassOrder::AlwaysHorizontal.vertical_first(10, 4000, 16, 16));
    }

    #[test]
    fn constant_image_stays_constant_and_identity_is_a_copy() {
        let flat = RgbImage::from_pixel(37, 23, image::Rgb([200, 7, 128]));
        let resized = resize_bicubic(&flat, 11, 50, PassOrder::HorizontalFirst);
        assert!(resized.pixels().all(|p| p.0 == [200, 7, 128]));
        let noisy = RgbImage::from_fn(5, 4, |x, y| image::Rgb([(x * 50) as u8, (y * 60) as u8, 9]));
        assert_eq!(resize_bicubic(&noisy, 5, 4, PassOrder::Pillow13), noisy);
    }

    #[test]
    fn empty_input_gives_black_output_without_panicking() {
        let empty = RgbImage::new(0, 5);
        let out = resize_bicubic(&empty, 4, 4, PassOrder::HorizontalFirst);
        assert_eq!(out.dimensions(), (4, 4));
        assert!(out.as_raw().iter().all(|&v| v == 0));
    }
}
