//! Launcher of `kernel.cu`: the LayerNorm backward (dx in the input dtype, dweight and dbias in
//! f32).

use candle_core::cuda_backend::cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaDevice, DType, Result, Tensor};

use crate::kernels::nvrtc::{cuda_storage, load_module, tensor_from_slice, typed_view, with_half};

/// The kernels after what every kernel.cu shares (`../half.cu`).
const SOURCE: &str = concat!(include_str!("../half.cu"), include_str!("kernel.cu"));
/// Threads per block (one warp per row).
const THREADS: usize = 256;
/// Blocks at most: each adds its partial sums to the outputs once, so fewer is cheaper on the
/// atomics, and 1024 blocks of 8 rows still fill 132 SMs.
const MAX_BLOCKS: usize = 1024;

#[derive(Debug)]
pub struct LayerNormKernels {
    bf16: CudaFunction,
    f16: CudaFunction,
}

impl LayerNormKernels {
    pub fn load(dev: &CudaDevice) -> Result<Self> {
        let module = load_module(dev, SOURCE, "LayerNorm", None)?;
        Ok(Self {
            bf16: module.load_function("layer_norm_bwd_bf16").w()?,
            f16: module.load_function("layer_norm_bwd_f16").w()?,
        })
    }
}

/// `(x, weight, dy)` of a LayerNorm over the last dimension -> `(dx, dweight, dbias)`; `x` and
/// `dy` contiguous `(..., d)` in bf16/f16, `weight` `(d)` in the same dtype.
pub fn backward(
    kernels: &LayerNormKernels,
    dev: &CudaDevice,
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let d = weight.elem_count();
    let n = x.elem_count();
    if d == 0
        || x.dims().last() != Some(&d)
        || dy.shape() != x.shape()
        || weight.dtype() != x.dtype()
    {
        bail!(
            "LayerNorm backward: input {:?}, weight {:?}, gradient {:?} do not match",
            x.shape(),
            weight.shape(),
            dy.shape()
        );
    }
    let rows = n / d;
    let (xs, x0) = cuda_storage(x, "LayerNorm input")?;
    let (ws, w0) = cuda_storage(weight, "LayerNorm weight")?;
    let (gs, g0) = cuda_storage(dy, "LayerNorm gradient")?;
    let func = match x.dtype() {
        DType::BF16 => &kernels.bf16,
        DType::F16 => &kernels.f16,
        other => bail!("LayerNorm backward runs in bf16/f16, got {other:?}"),
    };
    let dw = dev.alloc_zeros::<f32>(d)?;
    let db = dev.alloc_zeros::<f32>(d)?;
    let (rows_arg, d_arg, eps_arg) = (rows as i64, d as i32, eps as f32);
    let warps = THREADS / 32;
    let cfg = LaunchConfig {
        grid_dim: (rows.div_ceil(warps).clamp(1, MAX_BLOCKS) as u32, 1, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: (2 * d * 4) as u32,
    };
    if 2 * d * 4 > 48 * 1024 {
        bail!("LayerNorm backward: width {d} exceeds the kernel's shared memory");
    }
    let dx = with_half!("LayerNorm backward", x.dtype(), T, {
        let xv = typed_view::<T>(&xs, x0)?;
        let wv = typed_view::<T>(&ws, w0)?;
        let gv = typed_view::<T>(&gs, g0)?;
        // SAFETY: every row of dx is written.
        let dx = unsafe { dev.alloc::<T>(n)? };
        let stream = dev.cuda_stream();
        let mut builder = stream.launch_builder(func);
        builder
            .arg(&xv)
            .arg(&wv)
            .arg(&gv)
            .arg(&dx)
            .arg(&dw)
            .arg(&db)
            .arg(&rows_arg)
            .arg(&d_arg)
            .arg(&eps_arg);
        // SAFETY: matches layer_norm_bwd's signature; x, dy, dx hold rows x d elements, the
        // weight and the two accumulators d.
        unsafe { builder.launch(cfg) }.w()?;
        tensor_from_slice(dx, dev, x.shape().clone())
    });
    Ok((
        dx,
        tensor_from_slice(dw, dev, d),
        tensor_from_slice(db, dev, d),
    ))
}
