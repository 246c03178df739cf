//! Dense f32 projections on the CPU with their epilogue fused: `x W^T + b`, optionally followed
//! by the erf GELU, in one GEMM call and one parallel pass.
//!
//! The composed path (`matmul`, then `broadcast_add`, then `gelu_erf`) runs the GEMM on all
//! threads but each elementwise op on ONE thread (candle's CPU unary/binary maps are serial),
//! and writes the `(rows, out)` output three times. Here the output buffer starts as the bias
//! rows and the GEMM accumulates into it (`dst = dst + x W^T`: candle's own `gemm` crate, the
//! same kernels candle calls), and GELU runs in place on every thread with the vectorised erf
//! of [`super::cpu_math`]. Up to [`cpu_gemv::MAX_ROWS`] rows (decoding) take
//! [`cpu_gemv::gemv`] instead of the GEMM (which runs a single row on one thread).

use candle_core::{DType, Device, Result, Storage, Tensor};
use rayon::prelude::*;

use super::{cpu_gemv, cpu_math};

/// Whether [`linear`] takes `xs` and `weight`: f32 CPU tensors, `xs` `(rows, in)` and
/// `weight` `(out, in)` contiguous, outside an autograd graph (no backward pass here).
pub fn applies(xs: &Tensor, weight: &Tensor) -> bool {
    xs.device().is_cpu()
        && weight.device().is_cpu()
        && xs.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && xs.rank() == 2
        && weight.rank() == 2
        && xs.is_contiguous()
        && weight.is_contiguous()
        && !xs.track_op()
        && !weight.track_op()
}

/// `xs (m, k) · weight (n, k)^T [+ bias (n,)] [then gelu_erf]`, `(m, n)` f32. Call only where
/// [`applies`] holds (otherwise an error).
pub fn linear(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>, gelu: bool) -> Result<Tensor> {
    if !applies(xs, weight) {
        candle_core::bail!("cpu linear: needs contiguous f32 CPU tensors outside autograd");
    }
    let (m, k) = xs.dims2()?;
    let (n, wk) = weight.dims2()?;
    if wk != k {
        candle_core::bail!("cpu linear: input has {k} features, the weight {wk}");
    }
    let mut dst = match bias {
        Some(b) => {
            if b.dims() != [n] || b.track_op() {
                candle_core::bail!("cpu linear: bias must be ({n},), got {:?}", b.dims());
            }
            let b: Vec<f32> = b.to_dtype(DType::F32)?.to_vec1()?;
            let mut dst = vec![0f32; m * n];
            dst.par_chunks_mut(n)
                .for_each(|row| row.copy_from_slice(&b));
            dst
        }
        None => vec![0f32; m * n],
    };
    if m > 0 && n > 0 {
        let (x_storage, x_layout) = xs.storage_and_layout();
        let (w_storage, w_layout) = weight.storage_and_layout();
        let (Storage::Cpu(x_cpu), Storage::Cpu(w_cpu)) = (&*x_storage, &*w_storage) else {
            candle_core::bail!("cpu linear: tensors are not on the CPU");
        };
        let x = &x_cpu.as_slice::<f32>()?[x_layout.start_offset()..];
        let w = &w_cpu.as_slice::<f32>()?[w_layout.start_offset()..];
        if x.len() < m * k || w.len() < n * k {
            candle_core::bail!("cpu linear: storage smaller than its layout");
        }
        if m <= cpu_gemv::MAX_ROWS {
            // A handful of rows (decoding): every weight row read once, on all threads.
            let product = cpu_gemv::gemv(x, m, k, w, n);
            dst.par_chunks_mut(n.max(1))
                .zip(product.par_chunks(n.max(1)))
                .for_each(|(d, p)| {
                    for (d, p) in d.iter_mut().zip(p) {
                        *d += *p;
                    }
                });
        } else {
            gemm_accumulate(&mut dst, x, w, m, n, k, bias.is_some());
        }
    }
    if gelu {
        let chunk = (m * n).div_ceil(4 * rayon::current_num_threads()).max(4096);
        dst.par_chunks_mut(chunk)
            .for_each(cpu_math::gelu_erf_in_place);
    }
    Tensor::from_vec(dst, (m, n), &Device::Cpu)
}

/// `dst (m, n) [+]= x (m, k) · w (n, k)^T` through candle's own `gemm` crate on rayon's pool
/// (`read_dst`: accumulate onto what `dst` holds).
fn gemm_accumulate(
    dst: &mut [f32],
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    read_dst: bool,
) {
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    debug_assert!(dst.len() >= m * n && x.len() >= m * k && w.len() >= n * k);
    // SAFETY: dst is (m, n) row-major (column stride 1, row stride n), x is (m, k) row-major,
    // w is (n, k) row-major read as W^T (k, n): column stride k, row stride 1; the caller
    // checked the lengths and dst is exclusively borrowed. dst = 1 * dst + 1 * x W^T.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            read_dst,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: usize) -> Tensor {
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 2654435761 + seed * 40503) % 10007) as f32 / 5003.5 - 1.0)
            .collect();
        Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap()
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

    /// Against the composed ops it replaces (candle matmul, broadcast_add, gelu_erf). The
    /// products are the same kernels; only where the bias enters the f32 sum differs, so the
    /// tolerance is 1e-5 of the output scale (k = 300 products of values <= 1).
    #[test]
    fn fused_linear_matches_the_composed_ops() {
        let w = matrix(70, 300, 1);
        let b = matrix(1, 70, 2).flatten_all().unwrap();
        for m in [1, 5, 130] {
            let x = matrix(m, 300, 3 + m);
            let product = x.matmul(&w.t().unwrap()).unwrap();
            let with_bias = product.broadcast_add(&b).unwrap();
            for (bias, gelu, reference) in [
                (None, false, product.clone()),
                (Some(&b), false, with_bias.clone()),
                (Some(&b), true, with_bias.gelu_erf().unwrap()),
            ] {
                let ours = linear(&x, &w, bias, gelu).unwrap();
                assert_eq!(ours.dims(), &[m, 70]);
                let err = max_abs(&(&ours - &reference).unwrap());
                let scale = max_abs(&reference).max(1.0);
                assert!(
                    err <= 1e-5 * scale,
                    "m={m} bias={} gelu={gelu}: max error {err}",
                    bias.is_some()
                );
            }
        }
    }

    #[test]
    fn refuses_what_it_cannot_take() {
        let w = matrix(4, 8, 1);
        assert!(!applies(&matrix(2, 8, 2).t().unwrap(), &w));
        assert!(!applies(&matrix(2, 8, 2).to_dtype(DType::F16).unwrap(), &w));
        let err = linear(&matrix(2, 6, 2), &matrix(4, 6, 1).t().unwrap(), None, false);
        assert!(err.is_err());
        let err = linear(&matrix(2, 8, 2), &w, Some(&matrix(1, 3, 1)), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bias"), "{err}");
    }
}
