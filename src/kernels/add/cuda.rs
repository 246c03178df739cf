//! Launcher of `kernel.cu`: `x + bias + residual` into a new tensor.

use candle_core::cuda_backend::cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaDevice, DType, Result, Tensor};

use crate::kernels::nvrtc::{cuda_storage, load_module, tensor_from_slice, typed_view, with_half};

/// The kernels after what every kernel.cu shares (`../half.cu`).
const SOURCE: &str = concat!(include_str!("../half.cu"), include_str!("kernel.cu"));
const THREADS: usize = 256;
/// Grid-stride loops: more blocks than this only add scheduling.
const MAX_BLOCKS: usize = 8192;

#[derive(Debug)]
struct Typed {
    vec: CudaFunction,
    any: CudaFunction,
}

#[derive(Debug)]
pub struct AddKernels {
    bf16: Typed,
    f16: Typed,
}

impl AddKernels {
    pub fn load(dev: &CudaDevice) -> Result<Self> {
        let module = load_module(dev, SOURCE, "add", None)?;
        let typed = |suffix: &str| -> Result<Typed> {
            Ok(Typed {
                vec: module.load_function(&format!("add_vec_{suffix}")).w()?,
                any: module.load_function(&format!("add_any_{suffix}")).w()?,
            })
        };
        Ok(Self {
            bf16: typed("bf16")?,
            f16: typed("f16")?,
        })
    }
}

/// `x + bias + residual`; `x`, `residual` contiguous `(..., d)`, `bias` contiguous `(d)`, all
/// of one 16-bit dtype (checked by the caller).
pub fn add(
    kernels: &AddKernels,
    dev: &CudaDevice,
    x: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let n = x.elem_count();
    let d = x.dims().last().copied().unwrap_or(0);
    let typed = match x.dtype() {
        DType::BF16 => &kernels.bf16,
        DType::F16 => &kernels.f16,
        other => bail!("the add kernels run in bf16/f16, got {other:?}"),
    };
    let (xs, x0) = cuda_storage(x, "add input")?;
    let bias_storage = bias.map(|b| cuda_storage(b, "add bias")).transpose()?;
    let residual_storage = residual
        .map(|r| cuda_storage(r, "add residual"))
        .transpose()?;
    let b0 = bias_storage.as_ref().map_or(0, |(_, s)| *s);
    let r0 = residual_storage.as_ref().map_or(0, |(_, s)| *s);
    // 16-byte accesses need 8-element rows and starts (fresh allocations are aligned).
    let vectorized = d % 8 == 0 && [x0, b0, r0].iter().all(|s| s % 8 == 0);
    let (func, items) = if vectorized {
        (&typed.vec, n / 8)
    } else {
        (&typed.any, n)
    };
    let cfg = LaunchConfig {
        grid_dim: (items.div_ceil(THREADS).clamp(1, MAX_BLOCKS) as u32, 1, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let (items_arg, d_arg) = (items as i64, d as i32);
    with_half!("add", x.dtype(), T, {
        let xv = typed_view::<T>(&xs, x0)?;
        let bv = bias_storage
            .as_ref()
            .map(|(s, start)| typed_view::<T>(s, *start))
            .transpose()?;
        let rv = residual_storage
            .as_ref()
            .map(|(s, start)| typed_view::<T>(s, *start))
            .transpose()?;
        // SAFETY: every element of y is written.
        let y = unsafe { dev.alloc::<T>(n)? };
        let null: u64 = 0;
        let stream = dev.cuda_stream();
        let mut builder = stream.launch_builder(func);
        builder.arg(&xv);
        match &bv {
            Some(v) => builder.arg(v),
            None => builder.arg(&null),
        };
        match &rv {
            Some(v) => builder.arg(v),
            None => builder.arg(&null),
        };
        builder.arg(&y).arg(&items_arg).arg(&d_arg);
        // SAFETY: matches add_vec/add_any's signature; x, residual and y hold n elements, the
        // bias d, and a null pointer is an absent operand.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(tensor_from_slice(y, dev, x.shape().clone()))
    })
}
