//! The ops below the model layers; models call them, they call no model.
//! - `fused`: the fused inference ops (CUDA source, NVRTC launchers, CPU stubs).
//! - `grad_ops`: hand-written backward passes for LayerNorm and softmax.
//! - `softmax`: f32 accumulation for f16/bf16 on every device.
//! - Training kernels, one folder per op (`attention`, `gelu`, `layer_norm`, `add`,
//!   `cross_entropy`, `adamw`): the
//!   CUDA source (`kernel.cu`, compiled at run time with NVRTC), its launchers and candle custom
//!   ops (`cuda.rs`), the entry point that answers "not applicable" where the kernel does not run
//!   (CPU, f32, other shapes) so the caller takes its composed ops, and a test against those
//!   composed ops (`tests/gpu_kernels.rs`, on a GPU).

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
