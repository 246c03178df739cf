//! Fine-tuning BLIP (`vlmrun train`): the building blocks of a training run. `params` (the named
//! f32 master weights, frozen selection, weight-decay groups), `grads` (their gradients out of
//! candle's backward), `optim` (AdamW as PyTorch's, gradient clipping), `schedule` (warm-up +
//! cosine learning rate), `scaler` (f16 dynamic loss scaling), `checkpoint` (atomic, resumable
//! checkpoint directories that are also model directories) and `log` (`metrics.jsonl` and the loss
//! curve).

pub mod checkpoint;
pub mod grads;
pub mod log;
pub mod optim;
pub mod params;
pub mod scaler;
pub mod schedule;
