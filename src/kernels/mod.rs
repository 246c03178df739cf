//! Fused kernels with a backward pass, one folder per op: the CUDA source (`kernel.cu`, compiled
//! at run time with NVRTC), its launchers and candle custom ops (`cuda.rs`), the public entry
//! point that falls back to "not applicable" where the kernel does not run (CPU, f32, other
//! shapes), and a test against the composed candle ops it replaces.

pub mod adamw;
pub mod attention;
pub mod gelu;
