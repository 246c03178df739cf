//! What the CUDA kernel folders share: compiling a `kernel.cu` with NVRTC and loading it (most of
//! them after `half.cu`, the 16-bit loads and stores), and
//! dispatching on the 16-bit element type.

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::CudaModule;
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaDevice, Result};

/// Compiles `source` for `arch` (NVRTC's default when `None`) and loads it into `dev`'s context;
/// `what` names the kernels in the error.
pub fn load_module(
    dev: &CudaDevice,
    source: &str,
    what: &str,
    arch: Option<&'static str>,
) -> Result<Arc<CudaModule>> {
    let options = CompileOptions {
        arch,
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(source, options).map_err(|e| {
        candle_core::Error::Msg(format!("compiling vlmrun's {what} kernels with NVRTC: {e}"))
    })?;
    dev.cuda_stream().context().load_module(ptx).w()
}

/// Runs `$body` with `$t` bound to the 16-bit Rust type (`half::f16` / `half::bf16`) of
/// `$dtype`; other dtypes are an error naming `$what`.
macro_rules! with_half {
    ($what:expr, $dtype:expr, $t:ident, $body:block) => {
        match $dtype {
            candle_core::DType::F16 => {
                type $t = half::f16;
                $body
            }
            candle_core::DType::BF16 => {
                type $t = half::bf16;
                $body
            }
            other => candle_core::bail!("{} runs in bf16/f16, got {other:?}", $what),
        }
    };
}
pub(crate) use with_half;

/// The contiguous CUDA storage of `t` (a read guard) and the element offset its data starts at;
/// `what` names the tensor in the error.
pub fn cuda_storage<'a>(
    t: &'a candle_core::Tensor,
    what: &str,
) -> Result<(
    impl std::ops::Deref<Target = candle_core::Storage> + 'a,
    usize,
)> {
    let (storage, layout) = t.storage_and_layout();
    let Some((start, _)) = layout.contiguous_offsets() else {
        candle_core::bail!("{what} must be contiguous")
    };
    if !matches!(&*storage, candle_core::Storage::Cuda(_)) {
        candle_core::bail!("{what} must be on a CUDA device");
    }
    Ok((storage, start))
}

/// The typed device view of `t`'s elements from `start` on, in a guard from [`cuda_storage`].
pub fn typed_view<'a, T: candle_core::cuda_backend::CudaDType>(
    storage: &'a candle_core::Storage,
    start: usize,
) -> Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>> {
    match storage {
        candle_core::Storage::Cuda(s) => Ok(s.as_cuda_slice::<T>()?.slice(start..)),
        _ => candle_core::bail!("expected a CUDA tensor"),
    }
}

/// A tensor of `shape` (contiguous) owning `slice`.
pub fn tensor_from_slice<T: candle_core::cuda_backend::CudaDType, S: Into<candle_core::Shape>>(
    slice: candle_core::cuda_backend::cudarc::driver::CudaSlice<T>,
    dev: &CudaDevice,
    shape: S,
) -> candle_core::Tensor {
    let storage = candle_core::CudaStorage::wrap_cuda_slice(slice, dev.clone());
    candle_core::Tensor::from_storage(
        candle_core::Storage::Cuda(storage),
        shape,
        candle_core::op::BackpropOp::none(),
        false,
    )
}
