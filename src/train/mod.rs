//! `vlmrun train`: fine-tuning BLIP captioning. `data` (training pairs, held-out images, the
//! seeded sample order), `inputs` (tokenized captions and pixels per batch), `loss` (the masked,
//! label-smoothed caption loss), `params` (the named f32 master weights, frozen selection,
//! weight-decay groups), `compute_copy` (their compute-dtype copy kept across steps on CUDA), `grads` (their gradients out of candle's backward), `optim` (AdamW as
//! PyTorch's, gradient clipping), `schedule` (warm-up + cosine learning rate), `scaler` (f16
//! dynamic loss scaling), `checkpoint` (atomic, resumable checkpoint directories that are also
//! model directories), `log` (`metrics.jsonl` and the loss curve), `eval` (captioning and scoring
//! the held-out images), `workspace` (run state, output directory, saves), `resume_settings` (the settings a checkpoint
//! was made with; what `--resume` refuses or warns about when they changed), and the loop in its stages: `prepare`
//! (set-up), `step` (one optimizer step) and `run` (the loop, evaluation and checkpoints, finish).

pub mod checkpoint;
pub mod compute_copy;
pub mod data;
pub mod eval;
pub mod grads;
pub mod inputs;
pub mod log;
pub mod loss;
pub mod optim;
pub mod params;
pub mod prepare;
pub mod resume_settings;
pub mod run;
pub mod scaler;
pub mod schedule;
pub mod step;
pub mod workspace;
