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

/// The CPU side of a candle custom op that only has a CUDA kernel: `name` and a `cpu_fwd` that
/// refuses (the layers never hand such an op a CPU tensor; they take their composed path).
/// Inside `impl candle_core::$Trait for Op`, with the same `$Trait`, the op's name, then the
/// op's own `cuda_fwd`.
#[cfg_attr(not(feature = "cuda"), allow(unused_macros))]
macro_rules! cuda_op_shell {
    (@name $name:literal) => {
        fn name(&self) -> &'static str {
            $name
        }
    };
    (CustomOp1, $name:literal) => {
        cuda_op_shell!(@name $name);
        fn cpu_fwd(
            &self,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            $crate::kernels::cuda_only($name)
        }
    };
    (CustomOp2, $name:literal) => {
        cuda_op_shell!(@name $name);
        fn cpu_fwd(
            &self,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            $crate::kernels::cuda_only($name)
        }
    };
    (CustomOp3, $name:literal) => {
        cuda_op_shell!(@name $name);
        fn cpu_fwd(
            &self,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            $crate::kernels::cuda_only($name)
        }
    };
    (InplaceOp1, $name:literal) => {
        cuda_op_shell!(@name $name);
        fn cpu_fwd(
            &self,
            _: &mut candle_core::CpuStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<()> {
            $crate::kernels::cuda_only($name)
        }
    };
    (InplaceOp3, $name:literal) => {
        cuda_op_shell!(@name $name);
        fn cpu_fwd(
            &self,
            _: &mut candle_core::CpuStorage,
            _: &candle_core::Layout,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<()> {
            $crate::kernels::cuda_only($name)
        }
    };
}

/// The error of a CUDA-only op given CPU tensors ([`cuda_op_shell!`]).
#[cfg_attr(not(any(feature = "cuda", test)), allow(dead_code))]
fn cuda_only<T>(name: &str) -> candle_core::Result<T> {
    candle_core::bail!("{name} is a CUDA kernel; CPU tensors take the composed path")
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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    struct Unary;
    impl candle_core::CustomOp1 for Unary {
        cuda_op_shell!(CustomOp1, "test_unary");
    }
    struct Ternary;
    impl candle_core::CustomOp3 for Ternary {
        cuda_op_shell!(CustomOp3, "test_ternary");
    }
    struct Binary;
    impl candle_core::CustomOp2 for Binary {
        cuda_op_shell!(CustomOp2, "test_binary");
    }
    struct InPlace;
    impl candle_core::InplaceOp1 for InPlace {
        cuda_op_shell!(InplaceOp1, "test_in_place");
    }
    struct InPlace3;
    impl candle_core::InplaceOp3 for InPlace3 {
        cuda_op_shell!(InplaceOp3, "test_in_place3");
    }

    #[test]
    fn a_cuda_only_op_refuses_cpu_tensors_by_name() {
        let x = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = x.apply_op1_no_bwd(&Unary).unwrap_err().to_string();
        assert!(
            err.contains("test_unary is a CUDA kernel; CPU tensors take the composed path"),
            "{err}"
        );
        let err = x
            .apply_op3_no_bwd(&x, &x, &Ternary)
            .unwrap_err()
            .to_string();
        assert!(err.contains("test_ternary is a CUDA kernel"), "{err}");
        let err = x.apply_op2_no_bwd(&x, &Binary).unwrap_err().to_string();
        assert!(err.contains("test_binary is a CUDA kernel"), "{err}");
        let err = x.inplace_op1(&InPlace).unwrap_err().to_string();
        assert!(err.contains("test_in_place is a CUDA kernel"), "{err}");
        let (y, z) = (x.zeros_like().unwrap(), x.zeros_like().unwrap());
        let err = x.inplace_op3(&y, &z, &InPlace3).unwrap_err().to_string();
        assert!(err.contains("test_in_place3 is a CUDA kernel"), "{err}");
    }
}
