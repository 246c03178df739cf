//! `vlmrun train`: fine-tuning BLIP captioning (loss, data, optimizer, mixed precision,
//! checkpoints).

pub mod data;
pub mod loss;
