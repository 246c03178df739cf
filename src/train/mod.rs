//! `vlmrun train`: fine-tuning BLIP captioning (loss, data, optimizer, mixed precision,
//! checkpoints).

pub mod loss;
