//! Dense f32 `x W^T` for a handful of input rows (decoding) on all threads.
//!
//! `gemm` takes a single-row product (`m = 1`) through its GEMV, which runs on one thread, and
//! a few rows through its blocked kernel, which packs the whole weight first. Decoding is bound
//! by reading the weight (the LM head alone is 94 MB of f32), so here each weight row is read
//! once, straight from the tensor, and multiplied with every input row (AVX-512 FMAs where the
//! CPU has them), the weight rows split over rayon's threads.

use rayon::prelude::*;

/// Up to this many input rows [`linear`](super::cpu_dense::linear) takes [`gemv`].
pub const MAX_ROWS: usize = 16;

/// `x (m, k) · w (n, k)^T` -> `(m, n)` row-major, `m <= MAX_ROWS` (more rows: call per block).
pub fn gemv(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    debug_assert!(m <= MAX_ROWS && x.len() >= m * k && w.len() >= n * k);
    let kernel = Kernel::detect();
    // out_t is (n, m): each task owns whole weight rows, so its output is one contiguous slice.
    let mut out_t = vec![0f32; n * m];
    if m == 0 || n == 0 {
        return out_t;
    }
    let chunk = n.div_ceil(4 * rayon::current_num_threads()).max(8).min(n);
    out_t
        .par_chunks_mut(chunk * m)
        .enumerate()
        .for_each(|(c, out)| {
            for (j, o) in out.chunks_exact_mut(m).enumerate() {
                let row = c * chunk + j;
                kernel.run(&w[row * k..(row + 1) * k], x, o);
            }
        });
    if m == 1 {
        return out_t;
    }
    let mut out = vec![0f32; m * n];
    for (col, values) in out_t.chunks_exact(m).enumerate() {
        for (row, v) in values.iter().enumerate() {
            out[row * n + col] = *v;
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return Self::Avx512;
        }
        Self::Portable
    }

    /// `out[r] = w_row · x[r]` for the `out.len()` rows of `x`.
    #[inline(always)]
    fn run(self, w_row: &[f32], x: &[f32], out: &mut [f32]) {
        match self {
            Self::Portable => row_portable(w_row, x, out),
            // SAFETY: the features were detected at run time (detect); `x` holds `out.len()`
            // rows of `w_row.len()` values (gemv's contract).
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => unsafe { row_avx512(w_row, x, out) },
        }
    }
}

fn row_portable(w_row: &[f32], x: &[f32], out: &mut [f32]) {
    let k = w_row.len();
    for (r, o) in out.iter_mut().enumerate() {
        let xr = &x[r * k..(r + 1) * k];
        let mut acc = [0f32; 16];
        let mut chunks = w_row.chunks_exact(16).zip(xr.chunks_exact(16));
        for (a, b) in &mut chunks {
            for i in 0..16 {
                acc[i] += a[i] * b[i];
            }
        }
        let main = k - k % 16;
        let tail: f32 = w_row[main..]
            .iter()
            .zip(&xr[main..])
            .map(|(a, b)| a * b)
            .sum();
        *o = acc.iter().sum::<f32>() + tail;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
/// SAFETY (caller): AVX-512F and FMA present; `x` holds `out.len() <= MAX_ROWS` rows of
/// `w_row.len()` values.
unsafe fn row_avx512(w_row: &[f32], x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let k = w_row.len();
    let m = out.len();
    let main = k - k % 32;
    let mut acc = [[_mm512_setzero_ps(); 2]; MAX_ROWS];
    let wp = w_row.as_ptr();
    let mut i = 0;
    while i < main {
        let w0 = _mm512_loadu_ps(wp.add(i));
        let w1 = _mm512_loadu_ps(wp.add(i + 16));
        for (r, a) in acc.iter_mut().enumerate().take(m) {
            let xp = x.as_ptr().add(r * k + i);
            a[0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xp), a[0]);
            a[1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xp.add(16)), a[1]);
        }
        i += 32;
    }
    for (r, (o, a)) in out.iter_mut().zip(&acc).enumerate() {
        let xr = &x[r * k..(r + 1) * k];
        let tail: f32 = w_row[main..]
            .iter()
            .zip(&xr[main..])
            .map(|(a, b)| a * b)
            .sum();
        *o = _mm512_reduce_add_ps(_mm512_add_ps(a[0], a[1])) + tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(count: usize, seed: usize) -> Vec<f32> {
        (0..count)
            .map(|i| ((i * 2654435761 + seed * 40503) % 10007) as f32 / 5003.5 - 1.0)
            .collect()
    }

    /// Against an f64 reference product: k = 301 (a tail past the 32-wide blocks) products of
    /// values <= 1, so f32 sums in any order stay within 1e-4 of it.
    #[test]
    fn matches_a_reference_product() {
        let (k, n) = (301, 45);
        let w = values(n * k, 1);
        for m in [1, 3, MAX_ROWS] {
            let x = values(m * k, 2 + m);
            let ours = gemv(&x, m, k, &w, n);
            for r in 0..m {
                for c in 0..n {
                    let exact: f64 = (0..k)
                        .map(|i| x[r * k + i] as f64 * w[c * k + i] as f64)
                        .sum();
                    let got = ours[r * n + c] as f64;
                    assert!(
                        (got - exact).abs() < 1e-4,
                        "m={m} ({r},{c}): {got} vs {exact}"
                    );
                }
            }
            let mut portable = vec![0f32; m];
            row_portable(&w[k..2 * k], &x, &mut portable);
            for r in 0..m {
                assert!((portable[r] - ours[r * n + 1]).abs() < 1e-4);
            }
        }
    }
}
