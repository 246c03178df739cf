//! The ops below the model layers: `fused` (the CUDA source, its NVRTC launchers and the CPU stubs
//! of the fused inference ops), `grad_ops` (hand-written backward passes for layer norm and
//! softmax), `softmax` (f32 accumulation for f16/bf16 on every device). Models call them; they call
//! no model.

pub mod fused;
pub mod grad_ops;
pub mod softmax;
