//! Vectorised f32 `exp` and erf GELU over slices for the CPU layers (softmax rows, the fc1 /
//! intermediate epilogue), in place of libm's scalar `expf` / `erff`, one call per value.
//!
//! Both are branch-free polynomials that the compiler vectorises: compiled once for AVX-512
//! (chosen at run time where the CPU has it) and once for the baseline target.
//! - `exp`: range reduction `x = n ln2 + r` (ln2 split in two constants), a degree-7
//!   polynomial for `e^r` on `|r| <= ln2 / 2`, `2^n` built in the exponent bits; inputs clamped
//!   to `[-87.3, 88.3]` (so `exp(-inf)` is ~1e-38, not 0: softmax rows never hold -inf here).
//!   Relative error within a few f32 ulps of `f32::exp` (tested).
//! - `gelu_erf`: `0.5 x (1 + erf(x / sqrt 2))` with erf from Abramowitz & Stegun 7.1.26
//!   (`1 - t (a1 + t (a2 + ...)) e^{-z^2}`, `t = 1 / (1 + p z)`, absolute error <= 1.5e-7), the
//!   formula PyTorch's vectorised CPU erf uses; odd symmetry by the sign.

/// `row[i] = exp(row[i] - max)` for every value; returns their sum.
pub fn exp_sub_sum(row: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: the features were detected just above.
        return unsafe { exp_sub_sum_avx512(row, max) };
    }
    exp_sub_sum_portable(row, max)
}

/// `values[i] = gelu_erf(values[i])`.
pub fn gelu_erf_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: the features were detected just above.
        return unsafe { gelu_avx512(values) };
    }
    gelu_portable(values)
}

/// The largest value of `row` (`-inf` when empty), 16 lanes wide.
pub fn max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = l.max(*v);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, v| a.max(*v));
    lanes.iter().fold(tail, |a, v| a.max(*v))
}

const LANES: usize = 16;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn exp_sub_sum_avx512(row: &mut [f32], max: f32) -> f32 {
    exp_sub_sum_portable(row, max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn gelu_avx512(values: &mut [f32]) {
    gelu_portable(values)
}

#[inline(always)]
fn exp_sub_sum_portable(row: &mut [f32], max: f32) -> f32 {
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, v) in sums.iter_mut().zip(c.iter_mut()) {
            *v = exp(*v - max);
            *s += *v;
        }
    }
    let mut total = 0f32;
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        total += *v;
    }
    total + sums.iter().sum::<f32>()
}

#[inline(always)]
fn gelu_portable(values: &mut [f32]) {
    for v in values {
        *v = gelu_erf(*v);
    }
}

/// `e^x` (see the module doc for the method and range).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = LN2_HI + LN2_LO, LN2_HI with few significant bits so that n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to the nearest integer, held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor coefficients 1/k! to k = 7 (|r| <= 0.347: the remainder is < 1e-8 relative).
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // n is in [-126, 127] after the clamp: 2^n as the exponent field alone.
    let n_bits = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let scale = f32::from_bits((n_bits.wrapping_add(127) << 23) as u32);
    p * scale
}

/// `0.5 x (1 + erf(x / sqrt 2))` (see the module doc).
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152;
    const A5: f32 = 1.061_405_4;
    let z = (x * std::f32::consts::FRAC_1_SQRT_2).abs();
    let t = 1.0 / (1.0 + P * z);
    let poly = ((((A5 * t + A4) * t + A3) * t + A2) * t + A1) * t;
    let erf_abs = 1.0 - poly * exp(-z * z);
    let erf = if x < 0.0 { -erf_abs } else { erf_abs };
    0.5 * x * (1.0 + erf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::cpu::erf::erf_f32;

    fn grid(lo: f32, hi: f32, count: usize) -> Vec<f32> {
        (0..count)
            .map(|i| lo + (hi - lo) * i as f32 / (count - 1) as f32)
            .collect()
    }

    /// Against `f32::exp` (libm) over the range softmax feeds it: within 4 ulps relative.
    #[test]
    fn exp_matches_libm() {
        let xs = grid(-87.0, 88.0, 200_003);
        let mut worst = 0f32;
        for &x in &xs {
            let (ours, reference) = (exp(x), x.exp());
            worst = worst.max(((ours - reference) / reference).abs());
        }
        assert!(worst < 4.0 * f32::EPSILON, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
    }

    /// The slice form (the vectorised build) gives the scalar values and their sum, for a
    /// length with a tail.
    #[test]
    fn exp_sub_sum_gives_the_values_and_their_sum() {
        let original = grid(-30.0, 5.0, 37);
        let mut row = original.clone();
        let total = exp_sub_sum(&mut row, 5.0);
        let expected: Vec<f32> = original.iter().map(|v| (v - 5.0).exp()).collect();
        for (a, b) in row.iter().zip(&expected) {
            assert!(((a - b) / b).abs() < 4.0 * f32::EPSILON, "{a} vs {b}");
        }
        let sum: f32 = expected.iter().sum();
        assert!((total - sum).abs() < 1e-6 * sum, "{total} vs {sum}");
        assert_eq!(max(&original), 5.0);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }

    /// Against candle's `gelu_erf` (its `erf_f32`): the A&S erf's 1.5e-7 absolute error times
    /// `0.5 |x|`, plus an f32 rounding of each output (1.2e-7 relative, the output is <= |x|):
    /// `|diff| <= 3e-7 * max(|x|, 1)`.
    #[test]
    fn gelu_matches_candles_erf_gelu() {
        let mut values = grid(-10.0, 10.0, 100_001);
        values.extend([0.0, -0.0, 1e-6, -1e-6, 30.0, -30.0]);
        let reference: Vec<f32> = values
            .iter()
            .map(|&v| (erf_f32(v * std::f32::consts::FRAC_1_SQRT_2) + 1.) * 0.5 * v)
            .collect();
        let mut ours = values.clone();
        gelu_erf_in_place(&mut ours);
        for ((x, a), b) in values.iter().zip(&ours).zip(&reference) {
            assert!(
                (a - b).abs() <= 3e-7 * x.abs().max(1.0),
                "gelu({x}) = {a}, candle {b}"
            );
        }
    }
}
