//! Hand-written device kernels and the autograd around them: `fused` (the CUDA source, its NVRTC
//! launchers and the CPU stubs of the fused inference ops), `grad_ops` (custom backward passes for
//! the fused layer norm and softmax). Models call them; they call no model.

pub mod fused;
pub mod grad_ops;
