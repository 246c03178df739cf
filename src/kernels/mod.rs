//! The ops below the model layers; models call them, they call no model.
//! - `fused`: the fused inference ops (CUDA source, NVRTC launchers, CPU stubs).
//! - `grad_ops`: hand-written backward passes for LayerNorm and softmax.
//! - `softmax`: f32 accumulation for f16/bf16 on every device.
//! - Training kernels, one folder per op (`attention`, `gelu`, `layer_norm`, `add`,
//!   `cross_entropy`, `adamw`): the
//!   CUDA source (`kernel.cu`, compiled at run time with NVRTC), its launchers and candle custom
//!   ops (`cuda.rs`), the entry point that answers "not applicable" where the kernel does not run
//!   (CPU, f32, other shapes) so the caller takes its composed ops, and a test against those
//!   composed ops (`tests/gpu_kernels.rs`, on a GPU). Each folder's handle comes from
//!   [`kernel_handle!`]; each CUDA op's CPU side from [`cuda_op_shell!`].

/// The handle a training-kernel folder gives its callers: `$name` holds the folder's compiled
/// kernels (`cuda::$kernels`, loaded by `cuda::$kernels::load(dev)`) on a CUDA device and
/// nothing elsewhere, with `for_device`, `disabled` and `enabled`. `load = path` names a
/// function `fn(&CudaDevice) -> Result<Option<cuda::$kernels>>` that loads them instead (`None`:
/// disabled on this device).
macro_rules! kernel_handle {
    ($(#[$meta:meta])* pub struct $name:ident(cuda::$kernels:ident);) => {
        kernel_handle!(@define $(#[$meta])* $name, $kernels, |dev| Ok(Some(cuda::$kernels::load(dev)?)));
    };
    ($(#[$meta:meta])* pub struct $name:ident(cuda::$kernels:ident), load = $load:path;) => {
        kernel_handle!(@define $(#[$meta])* $name, $kernels, |dev| $load(dev));
    };
    (@define $(#[$meta:meta])* $name:ident, $kernels:ident, |$dev:ident| $load:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default)]
        pub struct $name {
            #[cfg(feature = "cuda")]
            kernels: Option<std::sync::Arc<cuda::$kernels>>,
            #[cfg(not(feature = "cuda"))]
            kernels: Option<std::sync::Arc<()>>,
        }

        impl $name {
            /// Compiles and loads the kernels when `device` is a CUDA device; disabled otherwise.
            pub fn for_device(device: &candle_core::Device) -> candle_core::Result<Self> {
                #[cfg(feature = "cuda")]
                if let candle_core::Device::Cuda($dev) = device {
                    let loaded: candle_core::Result<Option<cuda::$kernels>> = $load;
                    return Ok(Self {
                        kernels: loaded?.map(std::sync::Arc::new),
                    });
                }
                let _ = device;
                Ok(Self::default())
            }

            /// A disabled handle: every caller takes its composed path.
            pub fn disabled() -> Self {
                Self::default()
            }

            /// Whether the kernels are loaded.
            pub fn enabled(&self) -> bool {
                self.kernels.is_some()
            }
        }
    };
}

pub mod adamw;
pub mod add;
pub mod attention;
pub mod backprop;
pub mod cross_entropy;
pub mod fused;
pub mod gelu;
pub mod grad_ops;
pub mod layer_norm;
#[cfg(feature = "cuda")]
mod nvrtc;
pub mod softmax;
