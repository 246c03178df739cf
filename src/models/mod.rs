//! Model definitions (candle): shared layers and one module per model family.

pub mod blip;
pub mod cpu_attention;
pub mod cpu_dense;
pub mod cpu_gemv;
pub mod cpu_math;
pub mod cpu_qgemv;
pub mod family;
pub mod gguf;
pub mod gguf_guard;
pub mod gradients;
pub mod kv_cache;
pub mod label;
pub mod linear;
pub mod norm;
pub mod projections;
pub mod quantize;
pub mod registry;

/// `kernels::softmax` under its old path, for the attention code that still names it there.
pub use crate::kernels::softmax;
