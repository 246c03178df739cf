//! A runnable model from the configuration: `captioner` binds a BLIP model, its tokenizer, the image
//! processor and the generation settings to one device and dtype (used by `caption`, `baseline` and
//! `fidelity`); `settings` turns the configuration into what the model code takes.

pub mod captioner;
mod settings;

pub use captioner::{Caption, Captioner};
pub use settings::{generation_config, image_processor, quantization_format};
