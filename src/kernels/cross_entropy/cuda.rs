//! Launcher of `kernel.cu`: label-smoothed cross-entropy and its logits gradient in one pass.

use candle_core::cuda_backend::cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaDevice, DType, Result, Tensor};

use crate::kernels::nvrtc::{cuda_storage, load_module, tensor_from_slice, typed_view, with_half};

/// The kernels after what every kernel.cu shares (`../half.cu`).
const SOURCE: &str = concat!(include_str!("../half.cu"), include_str!("kernel.cu"));
const THREADS: u32 = 256;

#[derive(Debug)]
pub struct CrossEntropyKernels {
    bf16: CudaFunction,
    f16: CudaFunction,
}

impl CrossEntropyKernels {
    pub fn load(dev: &CudaDevice) -> Result<Self> {
        let module = load_module(dev, SOURCE, "cross-entropy", None)?;
        Ok(Self {
            bf16: module.load_function("cross_entropy_bf16").w()?,
            f16: module.load_function("cross_entropy_f16").w()?,
        })
    }
}

/// See [`super::FusedCrossEntropy::forward_backward`]; `logits` `(R, V)` contiguous bf16/f16,
/// `targets` `(R)` u32, `weights` `(R)` f32.
pub fn forward_backward(
    kernels: &CrossEntropyKernels,
    dev: &CudaDevice,
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
    eps: f64,
    grad_scale: f64,
) -> Result<(Tensor, Tensor)> {
    let (rows, vocab) = logits.dims2()?;
    if targets.dims() != [rows] || weights.dims() != [rows] {
        bail!(
            "cross-entropy: logits {:?}, targets {:?}, weights {:?} do not match",
            logits.shape(),
            targets.shape(),
            weights.shape()
        );
    }
    if targets.dtype() != DType::U32 || weights.dtype() != DType::F32 {
        bail!("cross-entropy: targets must be u32 and weights f32");
    }
    let func = match logits.dtype() {
        DType::BF16 => &kernels.bf16,
        DType::F16 => &kernels.f16,
        other => bail!("the cross-entropy kernel runs in bf16/f16, got {other:?}"),
    };
    let (ls, l0) = cuda_storage(logits, "logits")?;
    let (ts, t0) = cuda_storage(targets, "targets")?;
    let (ws, w0) = cuda_storage(weights, "target weights")?;
    let loss = dev.alloc_zeros::<f32>(1)?;
    let (v_arg, eps_arg, scale_arg) = (vocab as i32, eps as f32, grad_scale as f32);
    let cfg = LaunchConfig {
        grid_dim: (rows.max(1) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let dlogits = with_half!("cross-entropy", logits.dtype(), T, {
        let lv = typed_view::<T>(&ls, l0)?;
        let tv = typed_view::<u32>(&ts, t0)?;
        let wv = typed_view::<f32>(&ws, w0)?;
        // SAFETY: every element of every row is written.
        let dx = unsafe { dev.alloc::<T>(rows * vocab)? };
        if rows > 0 {
            let stream = dev.cuda_stream();
            let mut builder = stream.launch_builder(func);
            builder
                .arg(&lv)
                .arg(&tv)
                .arg(&wv)
                .arg(&loss)
                .arg(&dx)
                .arg(&v_arg)
                .arg(&eps_arg)
                .arg(&scale_arg);
            // SAFETY: matches cross_entropy's signature; logits and dx hold rows x V elements,
            // targets and weights rows.
            unsafe { builder.launch(cfg) }.w()?;
        }
        tensor_from_slice(dx, dev, (rows, vocab))
    });
    Ok((tensor_from_slice(loss, dev, ()), dlogits))
}
