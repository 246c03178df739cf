//! Model definitions (candle): shared layers and one module per model family.

pub mod blip;
pub mod fused;
pub mod linear;
pub mod norm;
pub mod quantize;
