//! Launchers of `kernel.cu` and the candle custom ops: `(x, bias) -> gelu(x + bias)`, whose
//! backward returns `dx` and `dbias` packed in one buffer.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Result, Shape, Tensor};

use crate::kernels::nvrtc::{load_module, with_half};

/// The kernels after what every kernel.cu shares (`../half.cu`).
const SOURCE: &str = concat!(include_str!("../half.cu"), include_str!("kernel.cu"));
/// Rows each backward block sums its columns' bias gradient over.
const ROWS_PER_BLOCK: usize = 64;

#[derive(Debug)]
struct Typed {
    fwd: CudaFunction,
    bwd: CudaFunction,
    /// 16-byte variants (`d % 8 == 0`, aligned starts).
    fwd_vec: CudaFunction,
    bwd_vec: CudaFunction,
    to_half: CudaFunction,
}

#[derive(Debug)]
pub struct GeluKernels {
    bf16: Typed,
    f16: Typed,
}

impl GeluKernels {
    pub fn load(dev: &CudaDevice) -> Result<Self> {
        let module = load_module(dev, SOURCE, "GELU", None)?;
        let typed = |suffix: &str| -> Result<Typed> {
            Ok(Typed {
                fwd: module
                    .load_function(&format!("bias_gelu_fwd_{suffix}"))
                    .w()?,
                bwd: module
                    .load_function(&format!("bias_gelu_bwd_{suffix}"))
                    .w()?,
                fwd_vec: module
                    .load_function(&format!("bias_gelu_fwd_vec_{suffix}"))
                    .w()?,
                bwd_vec: module
                    .load_function(&format!("bias_gelu_bwd_vec_{suffix}"))
                    .w()?,
                to_half: module.load_function(&format!("f32_to_{suffix}")).w()?,
            })
        };
        Ok(Self {
            bf16: typed("bf16")?,
            f16: typed("f16")?,
        })
    }

    fn typed(&self, dtype: DType) -> Result<&Typed> {
        match dtype {
            DType::BF16 => Ok(&self.bf16),
            DType::F16 => Ok(&self.f16),
            other => bail!("fused GELU runs in bf16/f16, got {other:?}"),
        }
    }
}

fn linear(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 1 << 16) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn start(layout: &Layout, what: &str) -> Result<usize> {
    match layout.contiguous_offsets() {
        Some((start, _)) => Ok(start),
        None => bail!("fused GELU: {what} must be contiguous"),
    }
}

fn width(x: &Layout, bias: &Layout) -> Result<usize> {
    let d = bias.shape().elem_count();
    if x.shape().dims().last() != Some(&d) || d == 0 || d > i32::MAX as usize {
        bail!(
            "fused GELU: input {:?} and bias {:?} do not match",
            x.shape(),
            bias.shape()
        );
    }
    Ok(d)
}

pub struct BiasGelu {
    pub kernels: Arc<GeluKernels>,
}

impl candle_core::CustomOp2 for BiasGelu {
    cuda_op_shell!(CustomOp2, "fused_bias_gelu");
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        b: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let d = width(xl, bl)?;
        let n = xl.shape().elem_count();
        let typed = self.kernels.typed(x.dtype())?;
        let (xs, bs) = (start(xl, "input")?, start(bl, "bias")?);
        let vec = d % 8 == 0 && xs % 8 == 0 && bs % 8 == 0;
        let (func, items) = if vec {
            (&typed.fwd_vec, n / 8)
        } else {
            (&typed.fwd, n)
        };
        let (n_arg, d_arg) = (items as i64, d as i32);
        with_half!("fused GELU", x.dtype(), T, {
            let xv = x.as_cuda_slice::<T>()?.slice(xs..xs + n);
            let bv = b.as_cuda_slice::<T>()?.slice(bs..bs + d);
            // SAFETY: every element is written.
            let y = unsafe { dev.alloc::<T>(n)? };
            let stream = dev.cuda_stream();
            let mut builder = stream.launch_builder(func);
            builder.arg(&xv).arg(&bv).arg(&y).arg(&n_arg).arg(&d_arg);
            // SAFETY: matches bias_gelu_fwd(_vec)'s signature; x and y hold n elements (n / 8
            // chunks for the vector kernel), bias d.
            unsafe { builder.launch(linear(items)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(y, dev), xl.shape().clone()))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.to_dtype(x.dtype())?.contiguous()?;
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &bias.contiguous()?,
            &grad,
            &BiasGeluBackward {
                kernels: self.kernels.clone(),
            },
        )?;
        let (n, d) = (x.elem_count(), bias.elem_count());
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let db = packed.narrow(0, n, d)?.reshape(bias.shape())?;
        Ok((Some(dx), Some(db)))
    }
}

/// `(x, bias, dy)` -> `[dx (all of x's elements); dbias (d)]`, flat.
pub struct BiasGeluBackward {
    pub kernels: Arc<GeluKernels>,
}

impl candle_core::CustomOp3 for BiasGeluBackward {
    cuda_op_shell!(CustomOp3, "fused_bias_gelu_backward");
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        b: &CudaStorage,
        bl: &Layout,
        g: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let d = width(xl, bl)?;
        let n = xl.shape().elem_count();
        if gl.shape() != xl.shape() {
            bail!(
                "fused GELU backward: gradient {:?} for input {:?}",
                gl.shape(),
                xl.shape()
            );
        }
        let rows = n / d;
        let typed = self.kernels.typed(x.dtype())?;
        let (xs, bs, gs) = (
            start(xl, "input")?,
            start(bl, "bias")?,
            start(gl, "gradient")?,
        );
        let (rows_arg, d_arg, per_block) = (rows as i64, d as i32, ROWS_PER_BLOCK as i32);
        with_half!("fused GELU", x.dtype(), T, {
            let xv = x.as_cuda_slice::<T>()?.slice(xs..xs + n);
            let bv = b.as_cuda_slice::<T>()?.slice(bs..bs + d);
            let gv = g.as_cuda_slice::<T>()?.slice(gs..gs + n);
            // SAFETY: dx (n) and the bias gradient (d) are written below.
            let out = unsafe { dev.alloc::<T>(n + d)? };
            let db = dev.alloc_zeros::<f32>(d)?;
            let stream = dev.cuda_stream();
            {
                let dx = out.slice(0..n);
                let vec = d % 8 == 0 && xs % 8 == 0 && bs % 8 == 0 && gs % 8 == 0;
                let (func, threads, cols_per_thread) = if vec {
                    (&typed.bwd_vec, 128, 8)
                } else {
                    (&typed.bwd, 256, 1)
                };
                let mut builder = stream.launch_builder(func);
                builder
                    .arg(&xv)
                    .arg(&bv)
                    .arg(&gv)
                    .arg(&dx)
                    .arg(&db)
                    .arg(&rows_arg)
                    .arg(&d_arg)
                    .arg(&per_block);
                let cfg = LaunchConfig {
                    grid_dim: (
                        d.div_ceil(threads * cols_per_thread) as u32,
                        rows.div_ceil(ROWS_PER_BLOCK).clamp(1, 65_535) as u32,
                        1,
                    ),
                    block_dim: (threads as u32, 1, 1),
                    shared_mem_bytes: 0,
                };
                if rows.div_ceil(ROWS_PER_BLOCK) > 65_535 {
                    bail!("fused GELU backward: {rows} rows exceed the kernel's grid");
                }
                // SAFETY: matches bias_gelu_bwd(_vec)'s signature; the grid covers rows x d.
                unsafe { builder.launch(cfg) }.w()?;
            }
            {
                let dbias = out.slice(n..n + d);
                let mut builder = stream.launch_builder(&typed.to_half);
                builder.arg(&db).arg(&dbias).arg(&d_arg);
                // SAFETY: db holds d floats, dbias d 16-bit values.
                unsafe { builder.launch(linear(d)) }.w()?;
            }
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(n + d)))
        })
    }
}
