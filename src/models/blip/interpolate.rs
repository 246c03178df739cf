//! Position embeddings for another image size: the ViT's learned patch positions resampled to a
//! new grid as LAVIS (`interpolate_pos_embed`, its 480-px VQA evaluation of 384-px checkpoints)
//! and transformers (`BlipVisionEmbeddings.interpolate_pos_encoding`) do:
//! `torch.nn.functional.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)`,
//! the class position kept as it is.
//!
//! [`bicubic_resize`] is PyTorch's CPU `upsample_bicubic2d` in f32: source index
//! `(o + 0.5) * in / out - 0.5` (not clamped, as for cubic), its floor and fraction, Keys' cubic
//! convolution with A = -0.75 over the 4 x 4 neighbours (indices clamped to the border),
//! interpolated along the row first, then the column.

use candle_core::{Result, Tensor};

const A: f32 = -0.75;

fn cubic1(x: f32) -> f32 {
    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
}

fn cubic2(x: f32) -> f32 {
    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
}

fn coefficients(t: f32) -> [f32; 4] {
    [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)]
}

/// For each output index: the floor of its source index and the 4 weights.
fn taps(input: usize, output: usize) -> Vec<(i64, [f32; 4])> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let real = scale * (o as f32 + 0.5) - 0.5;
            let index = (real.floor() as i64).min(input as i64 - 1);
            let t = (real - index as f32).clamp(0.0, 1.0);
            (index, coefficients(t))
        })
        .collect()
}

/// Resamples `values` `(g_in, g_in, channels)` (row-major, channels last) to `(g_out, g_out,
/// channels)`.
pub fn bicubic_resize(values: &[f32], g_in: usize, g_out: usize, channels: usize) -> Vec<f32> {
    let at = |y: i64, x: i64, c: usize| {
        let y = y.clamp(0, g_in as i64 - 1) as usize;
        let x = x.clamp(0, g_in as i64 - 1) as usize;
        values[(y * g_in + x) * channels + c]
    };
    let taps = taps(g_in, g_out);
    let mut out = vec![0.0f32; g_out * g_out * channels];
    for (oy, &(iy, wy)) in taps.iter().enumerate() {
        for (ox, &(ix, wx)) in taps.iter().enumerate() {
            for c in 0..channels {
                let mut rows = [0.0f32; 4];
                for (k, row) in rows.iter_mut().enumerate() {
                    let y = iy - 1 + k as i64;
                    *row = at(y, ix - 1, c) * wx[0]
                        + at(y, ix, c) * wx[1]
                        + at(y, ix + 1, c) * wx[2]
                        + at(y, ix + 2, c) * wx[3];
                }
                out[(oy * g_out + ox) * channels + c] =
                    rows[0] * wy[0] + rows[1] * wy[1] + rows[2] * wy[2] + rows[3] * wy[3];
            }
        }
    }
    out
}

/// `(1, 1 + g_in^2, D)` position embeddings -> `(1, 1 + g_out^2, D)` (class position first,
/// unchanged), in the input's dtype and device; computed in f32.
pub fn interpolate_positions(positions: &Tensor, g_out: usize) -> Result<Tensor> {
    let (_, n, d) = positions.dims3()?;
    let g_in = (n - 1).isqrt();
    if g_in * g_in + 1 != n {
        candle_core::bail!("position embeddings of {n} rows are not 1 + a square grid");
    }
    if g_in == g_out {
        return Ok(positions.clone());
    }
    let dtype = positions.dtype();
    let f32s = positions.to_dtype(candle_core::DType::F32)?;
    let class = f32s.narrow(1, 0, 1)?;
    let grid = f32s.narrow(1, 1, n - 1)?.flatten_all()?.to_vec1::<f32>()?;
    let resized = bicubic_resize(&grid, g_in, g_out, d);
    let resized = Tensor::from_vec(resized, (1, g_out * g_out, d), positions.device())?;
    Tensor::cat(&[&class, &resized], 1)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_a_constant_grid_stays_constant() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            let s: f32 = coefficients(t).iter().sum();
            assert!((s - 1.0).abs() < 1e-6, "{t}: {s}");
        }
        let out = bicubic_resize(&[2.5; 9 * 2], 3, 5, 2);
        assert!(out.iter().all(|v| (v - 2.5).abs() < 1e-5), "{out:?}");
    }

    #[test]
    fn same_size_is_the_identity() {
        let values: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(bicubic_resize(&values, 4, 4, 1), values);
    }
}
