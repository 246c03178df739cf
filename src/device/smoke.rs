//! The smoke test: a random matmul (plus softmax, which loads the elementwise kernels) run on the device
//! in f32 and in half precision, compared with an f64 CPU reference, then a synchronise. Proves that the
//! device computes correctly, not only that it opens. [`verify`] is the check every job's
//! `device::activate` makes; `doctor` reports the same results in detail.

use candle_core::{DType, Device, Tensor, D};
use serde::Serialize;

use super::policy::{DeviceError, Target};

/// Tolerances on ‖out − ref‖ / ‖ref‖ against the f64 CPU result.
/// f32: GEMM rounding is ~1e-7 relative; 1e-4 leaves room for TF32-free split-K orders.
pub const TOL_F32: f64 = 1e-4;
/// f16 operands carry 11 significant bits (~5e-4 per element); the relative norm lands near 3e-4.
pub const TOL_F16: f64 = 5e-3;
/// bf16 operands carry 8 bits (~4e-3 per element); the relative norm lands near 3e-3.
pub const TOL_BF16: f64 = 2e-2;

/// One dtype's result.
#[derive(Debug, Clone, Serialize)]
pub struct SmokeResult {
    pub dtype: String,
    pub matmul_rel_error: f64,
    pub softmax_max_abs_error: f64,
    pub tolerance: f64,
    pub passed: bool,
    pub millis: f64,
}

const M: usize = 96;
const K: usize = 160;
const N: usize = 128;

/// Runs the test in `dtype` on `device`.
pub fn run(device: &Device, dtype: DType) -> candle_core::Result<SmokeResult> {
    let started = std::time::Instant::now();
    let a_values = pseudo_random(M * K, 1);
    let b_values = pseudo_random(K * N, 2);
    let a_cpu = Tensor::from_vec(a_values, (M, K), &Device::Cpu)?;
    let b_cpu = Tensor::from_vec(b_values, (K, N), &Device::Cpu)?;
    // The reference sees the same rounded operands the device sees, so only the arithmetic is compared.
    let a_rounded = a_cpu.to_dtype(dtype)?.to_dtype(DType::F64)?;
    let b_rounded = b_cpu.to_dtype(dtype)?.to_dtype(DType::F64)?;
    let reference = a_rounded.matmul(&b_rounded)?;

    let a = a_cpu.to_dtype(dtype)?.to_device(device)?;
    let b = b_cpu.to_dtype(dtype)?.to_device(device)?;
    let product = a.matmul(&b)?;
    let softmax = candle_nn::ops::softmax_last_dim(&product.to_dtype(DType::F32)?)?;
    device.synchronize()?;
    let product = product.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let softmax = softmax.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;

    let matmul_rel_error = relative_error(&product, &reference)?;
    let reference_softmax = softmax_f64(&product)?;
    let softmax_max_abs_error = (softmax - reference_softmax)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    let tolerance = match dtype {
        DType::F16 => TOL_F16,
        DType::BF16 => TOL_BF16,
        _ => TOL_F32,
    };
    let passed = matmul_rel_error.is_finite()
        && matmul_rel_error <= tolerance
        && softmax_max_abs_error.is_finite()
        && softmax_max_abs_error <= 1e-5;
    Ok(SmokeResult {
        dtype: dtype.as_str().to_string(),
        matmul_rel_error,
        softmax_max_abs_error,
        tolerance,
        passed,
        millis: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// The half precision the test runs in beside f32: the resolved one when it is half, else bf16
/// (f16 on a GPU without bf16).
pub fn half_dtype_to_test(resolved: DType, target: &Target) -> DType {
    match (resolved, target) {
        (DType::F16, _) | (DType::BF16, _) => resolved,
        (_, Target::Cuda { gpu: Some(gpu), .. }) if gpu.compute_capability < (8, 0) => DType::F16,
        _ => DType::BF16,
    }
}

/// Runs the test in f32 and in the half precision of [`half_dtype_to_test`] on `device`; the
/// first failure is the error (`requested`: the device as configured, for the message).
pub fn verify(
    device: &Device,
    resolved: DType,
    target: &Target,
    requested: &str,
) -> Result<(), DeviceError> {
    for dtype in [DType::F32, half_dtype_to_test(resolved, target)] {
        let failure = match run(device, dtype) {
            Ok(result) if result.passed => continue,
            Ok(result) => format!(
                "matmul {M}x{K}x{N} rel. error {:.2e} (tolerance {:.0e}), softmax max error {:.1e}",
                result.matmul_rel_error, result.tolerance, result.softmax_max_abs_error
            ),
            Err(err) => format!("the computation failed: {err}"),
        };
        return Err(DeviceError::SmokeFailed {
            requested: requested.to_string(),
            dtype: dtype.as_str().to_string(),
            failure,
        });
    }
    Ok(())
}

fn relative_error(out: &Tensor, reference: &Tensor) -> candle_core::Result<f64> {
    let diff = (out - reference)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()?
        .sqrt();
    let norm = reference.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    Ok(if norm > 0.0 { diff / norm } else { diff })
}

/// Softmax in f64 of the device's own product, so only the softmax kernel is judged.
fn softmax_f64(logits: &Tensor) -> candle_core::Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?;
    let exp = logits.broadcast_sub(&max)?.exp()?;
    exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)
}

/// Deterministic values in [-1, 1) from a 64-bit LCG (no RNG state shared with anything else).
fn pseudo_random(count: usize, stream: u64) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_smoke_passes_in_f32_and_bf16() {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let result = run(&Device::Cpu, dtype).unwrap();
            assert!(result.passed, "{result:?}");
        }
    }

    #[test]
    fn the_check_can_fail() {
        let a = Tensor::new(&[1.0f64, 2.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[1.0f64, 2.5], &Device::Cpu).unwrap();
        assert!(relative_error(&a, &b).unwrap() > TOL_BF16);
    }
}
