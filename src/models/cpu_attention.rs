//! Multi-head self-attention on the CPU read straight from the packed `(B, N, 3D)` projection
//! output, writing the `(B, N, D)` context with the heads already merged.
//!
//! The composed path (`kernels::attention::composed_self_attention`) copies the projection
//! into `(3, B, H, N, Dh)` heads, allocates `(B, H, N, N)` scores and probabilities, and copies
//! the `(B, H, N, Dh)` context back into `(B, N, D)`; its softmax calls libm's `expf` once per
//! score. Here every (image, head) pair is one task on rayon's pool: the scores GEMM reads the
//! head's queries and keys in place (strided views of the projection, `gemm`'s strides), the
//! softmax runs in place in the task's reused `(N, N)` buffer with the vectorised `exp` of
//! [`super::cpu_math`], and the second GEMM writes the head's columns of the output rows.

use candle_core::{DType, Device, Result, Storage, Tensor};
use rayon::prelude::*;

use super::cpu_math;

/// Whether [`self_attention`] takes `qkv`: a contiguous f32 CPU tensor of rank 3 outside an
/// autograd graph.
pub fn applies(qkv: &Tensor) -> bool {
    qkv.device().is_cpu()
        && qkv.dtype() == DType::F32
        && qkv.rank() == 3
        && qkv.is_contiguous()
        && !qkv.track_op()
}

/// Output pointer shared by the tasks; each writes only its own (image, head) block.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks write disjoint elements (see `self_attention`), and the buffer outlives them.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `softmax(scale * q k^T) v` per head of a packed `qkv` `(B, N, 3 * heads * Dh)` (queries,
/// keys, values) -> `(B, N, heads * Dh)`, the values of `composed_self_attention` up to the
/// order of the f32 sums; `causal`: token `i` attends to tokens `<= i`. Call only where
/// [`applies`] holds (otherwise an error).
pub fn self_attention(qkv: &Tensor, heads: usize, scale: f32, causal: bool) -> Result<Tensor> {
    if !applies(qkv) {
        candle_core::bail!("cpu attention: needs a contiguous f32 (B, N, 3D) CPU tensor");
    }
    let (b, n, three_d) = qkv.dims3()?;
    if heads == 0 || !three_d.is_multiple_of(3 * heads) {
        candle_core::bail!("cpu attention: qkv width {three_d} is not 3 x {heads} heads");
    }
    let d = three_d / 3;
    let hd = d / heads;
    let mut out = vec![0f32; b * n * d];
    if b * n * hd == 0 {
        return Tensor::from_vec(out, (b, n, d), &Device::Cpu);
    }
    let (storage, layout) = qkv.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("cpu attention: the tensor is not on the CPU");
    };
    let src = &cpu.as_slice::<f32>()?[layout.start_offset()..];
    if src.len() < b * n * three_d {
        candle_core::bail!("cpu attention: storage smaller than its layout");
    }
    let out_ptr = OutPtr(out.as_mut_ptr());
    (0..b * heads).into_par_iter().for_each_init(
        || vec![0f32; n * n],
        |scores, task| {
            let (image, head) = (task / heads, task % heads);
            let base = image * n * three_d + head * hd;
            let (q, k, v) = (&src[base..], &src[base + d..], &src[base + 2 * d..]);
            // SAFETY (both GEMMs): q, k and v start at this head's first column of image
            // `image`; row r of each is at r * three_d, Dh values wide, all inside `src`
            // (checked above). scores is (n, n) row-major. The destination of the second is
            // rows image * n .. image * n + n, columns head * hd .. head * hd + hd of `out`
            // (row stride d), written by this task only.
            unsafe {
                // scores = scale * q k^T: lhs q (n, hd), rhs k^T (hd, n) with k's row stride as
                // its column stride.
                gemm::gemm(
                    n,
                    n,
                    hd,
                    scores.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    q.as_ptr(),
                    1,
                    three_d as isize,
                    k.as_ptr(),
                    three_d as isize,
                    1,
                    0.0f32,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for (i, row) in scores.chunks_exact_mut(n).enumerate() {
                let valid = if causal { i + 1 } else { n };
                let (live, masked) = row.split_at_mut(valid);
                let total = cpu_math::exp_sub_sum(live, cpu_math::max(live));
                for p in live.iter_mut() {
                    *p /= total;
                }
                masked.fill(0.0);
            }
            let dst = out_ptr;
            unsafe {
                gemm::gemm(
                    n,
                    hd,
                    n,
                    dst.0.add(image * n * d + head * hd),
                    1,
                    d as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    n as isize,
                    v.as_ptr(),
                    1,
                    three_d as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        },
    );
    Tensor::from_vec(out, (b, n, d), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::attention::composed_self_attention;
    use crate::models::norm::softmax_last_dim;

    fn packed(b: usize, n: usize, width: usize, seed: usize) -> Tensor {
        let values: Vec<f32> = (0..b * n * width)
            .map(|i| ((i * 2654435761 + seed * 40503) % 10007) as f32 / 2501.75 - 2.0)
            .collect();
        Tensor::from_vec(values, (b, n, width), &Device::Cpu).unwrap()
    }

    fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Against the composed ops it replaces (head split, candle matmuls, the softmax kernel,
    /// head merge), bidirectional and causal, with a scale and an odd token count. Scores up to
    /// ~|16 * 4 * scale|; the outputs are convex combinations of values <= 2, so the order of
    /// the f32 sums and the polynomial exp (a few ulps) bound the difference by 2e-5.
    #[test]
    fn matches_the_composed_attention() {
        for (b, n, heads, hd, scale, causal) in [
            (1, 37, 3, 16, 0.25f32, false),
            (2, 19, 2, 8, 1.0, true),
            (3, 1, 4, 4, 0.5, false),
        ] {
            let qkv = packed(b, n, 3 * heads * hd, n + heads);
            let ours = self_attention(&qkv, heads, scale, causal).unwrap();
            let reference =
                composed_self_attention(&qkv, heads, scale as f64, causal, softmax_last_dim)
                    .unwrap();
            assert_eq!(ours.dims(), reference.dims());
            let err = max_abs(&(&ours - &reference).unwrap());
            assert!(
                err < 2e-5,
                "b={b} n={n} heads={heads} causal={causal}: {err}"
            );
            assert!(
                max_abs(&reference) > 0.1,
                "a trivial reference proves nothing"
            );
        }
    }

    #[test]
    fn refuses_what_it_cannot_take() {
        let qkv = packed(1, 4, 12, 1);
        assert!(self_attention(&qkv, 5, 1.0, false).is_err());
        assert!(!applies(&qkv.to_dtype(DType::F16).unwrap()));
        assert!(!applies(&packed(2, 4, 12, 1).transpose(1, 2).unwrap()));
    }
}
