//! vlmrun: a Rust-native GPU harness for vision-language models.

pub mod metrics;
