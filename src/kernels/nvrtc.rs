//! What the CUDA kernel folders share: compiling a `kernel.cu` with NVRTC and loading it, and
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
