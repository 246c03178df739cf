//! Weight-only quantized projections on the CPU: `x W^T` for a GGML-quantized `W` with the
//! activations kept exact (f32), reading the quantized blocks directly.
//!
//! - [`quantized_gemv`] (a handful of input rows: decoding): each weight row is decoded into an
//!   L1-sized f32 buffer and multiplied with every input row, the rows split over the CPU's
//!   threads. The weight is read once per call in its quantized size (q8_0: 1.06 bytes per
//!   weight against 4 for f32) and never written out dense.
//! - [`dequantize`] (many rows: the vision encoder, cross-attention keys/values): the whole
//!   matrix decoded on all threads for a dense matmul (candle's own dequantization runs on one
//!   thread).
//!
//! Both give exactly the weights candle's `QTensor::dequantize` gives (`q * d` in f32 for q8_0;
//! candle's own row decoders for the other formats), so the products differ from
//! "dequantize, then matmul" only in the order of the f32 sums.

use candle_core::quantized::k_quants::{BlockQ4K, BlockQ4_0, BlockQ6K, BlockQ8_0, GgmlType};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Result, Tensor};
use half::f16;
use rayon::prelude::*;

/// Up to this many input rows a CPU call takes [`quantized_gemv`]; from it on the weight is
/// dequantized for a dense matmul (whose blocking wins once the weight is reused by many rows).
pub const MAX_GEMV_ROWS: usize = 16;

/// The quantized formats [`quantized_gemv`] and [`dequantize`] read.
pub fn supports(format: GgmlDType) -> bool {
    matches!(
        format,
        GgmlDType::Q8_0 | GgmlDType::Q4_0 | GgmlDType::Q4K | GgmlDType::Q6K
    )
}

/// `xs (m, k) · W^T` for `qtensor` `W` `(n, k)` on the CPU, returned `(m, n)` in `xs`'s dtype
/// (computed in f32).
pub fn quantized_gemv(xs: &Tensor, qtensor: &QTensor) -> Result<Tensor> {
    let (n, k) = qtensor.shape().dims2()?;
    let (m, xk) = xs.dims2()?;
    if xk != k {
        candle_core::bail!("quantized gemv: input has {xk} features, the weight {k}");
    }
    if m > MAX_GEMV_ROWS {
        let parts = (0..m)
            .step_by(MAX_GEMV_ROWS)
            .map(|r| quantized_gemv(&xs.narrow(0, r, MAX_GEMV_ROWS.min(m - r))?, qtensor))
            .collect::<Result<Vec<_>>>()?;
        return Tensor::cat(&parts, 0);
    }
    let x: Vec<f32> = xs.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let data = qtensor.data()?;
    let rows = Rows::new(qtensor.dtype(), &data, n, k)?;
    let kernel = RowKernel::detect();
    // out_t is (n, m): each task owns whole weight rows, so its output is one contiguous slice.
    let mut out_t = vec![0f32; n * m];
    let chunk = task_rows(n);
    out_t.par_chunks_mut(chunk * m).enumerate().for_each_init(
        || vec![0f32; k],
        |buf, (c, out)| {
            for (j, o) in out.chunks_exact_mut(m).enumerate() {
                kernel.run(&rows, c * chunk + j, buf, &x, o);
            }
        },
    );
    let mut out = vec![0f32; m * n];
    for (col, values) in out_t.chunks_exact(m).enumerate() {
        for (row, v) in values.iter().enumerate() {
            out[row * n + col] = *v;
        }
    }
    Tensor::from_vec(out, (m, n), &Device::Cpu)?.to_dtype(xs.dtype())
}

/// `qtensor` `(n, k)` dequantized to f32 on all threads: the values of `QTensor::dequantize`.
pub fn dequantize(qtensor: &QTensor) -> Result<Tensor> {
    let (n, k) = qtensor.shape().dims2()?;
    let data = qtensor.data()?;
    let rows = Rows::new(qtensor.dtype(), &data, n, k)?;
    let mut out = vec![0f32; n * k];
    let chunk = task_rows(n);
    out.par_chunks_mut(chunk * k)
        .enumerate()
        .for_each(|(c, part)| {
            for (j, row) in part.chunks_exact_mut(k).enumerate() {
                rows.decode(c * chunk + j, row);
            }
        });
    Tensor::from_vec(out, (n, k), &Device::Cpu)
}

/// Weight rows per parallel task: ~4 tasks per thread, at least 8 rows.
fn task_rows(n: usize) -> usize {
    n.div_ceil(4 * rayon::current_num_threads())
        .max(8)
        .min(n.max(1))
}

/// The rows of a quantized `(n, k)` matrix, decoded one at a time.
enum RowDecoder<'a> {
    /// q8_0 read from its bytes (34 per block: f16 scale, 32 i8).
    Q8_0(&'a [u8]),
    Q4_0(&'a [BlockQ4_0]),
    Q4K(&'a [BlockQ4K]),
    Q6K(&'a [BlockQ6K]),
}

/// Blocks per row, for the decoders' row slicing.
struct Rows<'a> {
    decoder: RowDecoder<'a>,
    blocks_per_row: usize,
}

impl<'a> Rows<'a> {
    fn new(format: GgmlDType, bytes: &'a [u8], n: usize, k: usize) -> Result<Self> {
        if !k.is_multiple_of(format.block_size()) {
            candle_core::bail!(
                "quantized gemv: {k} features are not a multiple of {format:?}'s block size"
            );
        }
        let blocks_per_row = k / format.block_size();
        let expected = n * blocks_per_row * format.type_size();
        if bytes.len() != expected {
            candle_core::bail!(
                "quantized gemv: {} bytes for a ({n}, {k}) {format:?} matrix, expected {expected}",
                bytes.len()
            );
        }
        let decoder = match format {
            GgmlDType::Q8_0 => RowDecoder::Q8_0(bytes),
            GgmlDType::Q4_0 => RowDecoder::Q4_0(blocks(bytes)?),
            GgmlDType::Q4K => RowDecoder::Q4K(blocks(bytes)?),
            GgmlDType::Q6K => RowDecoder::Q6K(blocks(bytes)?),
            other => candle_core::bail!("quantized gemv: format {other:?} is not supported"),
        };
        Ok(Self {
            decoder,
            blocks_per_row,
        })
    }
}

/// `bytes` viewed as the GGML blocks `T` they hold (the storage candle allocated as `Vec<T>`).
fn blocks<T: GgmlType>(bytes: &[u8]) -> Result<&[T]> {
    let size = std::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(size)
        || bytes.as_ptr().align_offset(std::mem::align_of::<T>()) != 0
    {
        candle_core::bail!("quantized gemv: the {:?} blocks are not aligned", T::DTYPE);
    }
    // SAFETY: the bytes are a `Vec<T>`'s storage (QTensor::data of a CPU tensor), whose length
    // and alignment were checked above; T is plain data (`repr(C)`, integers and f16).
    Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) })
}

impl Rows<'_> {
    /// Writes weight row `row` (`k` values) into `out`.
    #[inline(always)]
    fn decode(&self, row: usize, out: &mut [f32]) {
        let (start, end) = (row * self.blocks_per_row, (row + 1) * self.blocks_per_row);
        match &self.decoder {
            RowDecoder::Q8_0(bytes) => {
                let size = std::mem::size_of::<BlockQ8_0>();
                for (block, values) in bytes[start * size..end * size]
                    .chunks_exact(size)
                    .zip(out.chunks_exact_mut(32))
                {
                    let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
                    for (v, q) in values.iter_mut().zip(&block[2..]) {
                        *v = (*q as i8) as f32 * d;
                    }
                }
            }
            RowDecoder::Q4_0(b) => BlockQ4_0::to_float(&b[start..end], out),
            RowDecoder::Q4K(b) => BlockQ4K::to_float(&b[start..end], out),
            RowDecoder::Q6K(b) => BlockQ6K::to_float(&b[start..end], out),
        }
    }
}

/// One weight row against every input row, compiled for the widest vector unit found.
#[derive(Clone, Copy)]
enum RowKernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl RowKernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Self::Avx2;
            }
        }
        Self::Portable
    }

    /// `out[r] = W[row] · x[r]` for every input row `r` of `x` (`out.len()` rows), `buf` holding
    /// the decoded weight row.
    fn run(self, rows: &Rows, row: usize, buf: &mut [f32], x: &[f32], out: &mut [f32]) {
        match self {
            Self::Portable => row_kernel(rows, row, buf, x, out),
            // SAFETY: the features were detected at run time (detect).
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => unsafe { row_kernel_avx512(rows, row, buf, x, out) },
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => unsafe { row_kernel_avx2(rows, row, buf, x, out) },
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
/// SAFETY (caller): AVX-512F/BW and FMA present; `x` holds `out.len() <= MAX_GEMV_ROWS` rows of
/// `buf.len()` values, a multiple of the block size (checked by `Rows::new`); `row < n`.
unsafe fn row_kernel_avx512(rows: &Rows, row: usize, buf: &mut [f32], x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let k = buf.len();
    if let RowDecoder::Q8_0(bytes) = &rows.decoder {
        // q8_0 decoded in registers: per block of 32, w = q * d (the dequantized f32 values),
        // then one FMA per 16 weights and input row into that row's two accumulators.
        let size = std::mem::size_of::<BlockQ8_0>();
        let start = row * rows.blocks_per_row * size;
        let row_bytes = &bytes[start..start + rows.blocks_per_row * size];
        let m = out.len();
        let mut acc = [[_mm512_setzero_ps(); 2]; MAX_GEMV_ROWS];
        for (b, block) in row_bytes.chunks_exact(size).enumerate() {
            let d = _mm512_set1_ps(f16::from_le_bytes([block[0], block[1]]).to_f32());
            let q = block.as_ptr().add(2);
            let lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q.cast())));
            let hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q.add(16).cast())));
            let (w0, w1) = (_mm512_mul_ps(lo, d), _mm512_mul_ps(hi, d));
            for (r, a) in acc.iter_mut().enumerate().take(m) {
                let xp = x.as_ptr().add(r * k + b * 32);
                a[0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xp), a[0]);
                a[1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xp.add(16)), a[1]);
            }
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            *o = _mm512_reduce_add_ps(_mm512_add_ps(a[0], a[1]));
        }
        return;
    }
    rows.decode(row, buf);
    for (r, o) in out.iter_mut().enumerate() {
        let xr = &x[r * k..(r + 1) * k];
        let mut a = [_mm512_setzero_ps(); 2];
        let mut i = 0;
        while i + 32 <= k {
            a[0] = _mm512_fmadd_ps(
                _mm512_loadu_ps(buf.as_ptr().add(i)),
                _mm512_loadu_ps(xr.as_ptr().add(i)),
                a[0],
            );
            a[1] = _mm512_fmadd_ps(
                _mm512_loadu_ps(buf.as_ptr().add(i + 16)),
                _mm512_loadu_ps(xr.as_ptr().add(i + 16)),
                a[1],
            );
            i += 32;
        }
        let mut tail = 0f32;
        for j in i..k {
            tail += buf[j] * xr[j];
        }
        *o = _mm512_reduce_add_ps(_mm512_add_ps(a[0], a[1])) + tail;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_kernel_avx2(rows: &Rows, row: usize, buf: &mut [f32], x: &[f32], out: &mut [f32]) {
    row_kernel(rows, row, buf, x, out)
}

#[inline(always)]
fn row_kernel(rows: &Rows, row: usize, buf: &mut [f32], x: &[f32], out: &mut [f32]) {
    rows.decode(row, buf);
    let k = buf.len();
    for (r, o) in out.iter_mut().enumerate() {
        *o = dot(buf, &x[r * k..(r + 1) * k]);
    }
}

/// f32 dot product with 32 independent partial sums (vectorised by the compiler).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 32;
    let mut acc = [0f32; LANES];
    let (a_main, a_tail) = a.split_at(a.len() - a.len() % LANES);
    let (b_main, b_tail) = b.split_at(a_main.len());
    for (ca, cb) in a_main.chunks_exact(LANES).zip(b_main.chunks_exact(LANES)) {
        for i in 0..LANES {
            acc[i] += ca[i] * cb[i];
        }
    }
    let mut sum = 0f32;
    for (x, y) in a_tail.iter().zip(b_tail) {
        sum += x * y;
    }
    // Pairwise reduction of the partial sums.
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0] + sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: usize) -> Tensor {
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let h = (i * 2654435761 + seed * 40503) % 10007;
                h as f32 / 5003.5 - 1.0
            })
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

    /// The composed path it replaces: candle's dequantization, then a dense f32 matmul.
    fn composed(xs: &Tensor, q: &QTensor) -> Tensor {
        let w = q.dequantize(&Device::Cpu).unwrap();
        xs.matmul(&w.t().unwrap()).unwrap()
    }

    #[test]
    fn dequantize_gives_candles_values_bit_for_bit() {
        let w = matrix(40, 512, 1);
        for format in [
            GgmlDType::Q8_0,
            GgmlDType::Q4_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let q = QTensor::quantize(&w, format).unwrap();
            let ours: Vec<f32> = dequantize(&q)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let candle: Vec<f32> = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(ours.len(), candle.len());
            assert!(
                ours.iter()
                    .zip(&candle)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{format:?}: dequantized values differ"
            );
        }
    }

    /// Against dequantize + matmul: the same weights, only the f32 summation order differs.
    /// Tolerance: 1e-5 of the largest output magnitude (k = 512 or 768 products of values <= 1).
    #[test]
    fn gemv_matches_dequantize_then_matmul() {
        for (format, k) in [
            (GgmlDType::Q8_0, 96),
            (GgmlDType::Q8_0, 768),
            (GgmlDType::Q4_0, 512),
            (GgmlDType::Q4K, 512),
            (GgmlDType::Q6K, 768),
        ] {
            // 37 outputs: uneven task split; 1, 4, 16 and 19 rows: decode at batch 1 and 4, the
            // cap, and past it (split into calls of at most 16 rows).
            let q = QTensor::quantize(&matrix(37, k, 2), format).unwrap();
            for m in [1, 4, MAX_GEMV_ROWS, MAX_GEMV_ROWS + 3] {
                let xs = matrix(m, k, 3 + m);
                let ours = quantized_gemv(&xs, &q).unwrap();
                let reference = composed(&xs, &q);
                assert_eq!(ours.dims(), &[m, 37]);
                let err = max_abs(&(&ours - &reference).unwrap());
                let scale = max_abs(&reference);
                assert!(
                    err <= 1e-5 * scale.max(1.0),
                    "{format:?} k={k} m={m}: max error {err} (outputs up to {scale})"
                );
            }
        }
    }

    #[test]
    fn gemv_keeps_the_input_dtype_and_refuses_a_width_mismatch() {
        let q = QTensor::quantize(&matrix(8, 64, 4), GgmlDType::Q8_0).unwrap();
        let xs = matrix(2, 64, 5).to_dtype(DType::F16).unwrap();
        assert_eq!(quantized_gemv(&xs, &q).unwrap().dtype(), DType::F16);
        let err = quantized_gemv(&matrix(2, 32, 5), &q)
            .unwrap_err()
            .to_string();
        assert!(err.contains("32") && err.contains("64"), "{err}");
    }
}
