//! A runnable model from the configuration: `assemble` is the one place that puts it together (source
//! -> weights -> tokenizer -> processor -> settings) for every job; `captioner` binds the result to one
//! device and dtype for `caption`, `baseline` and `fidelity`; `answerer` and `matcher` do the same for `vqa` and `match`; `retrieval` is LAVIS's retrieval
//! evaluation over the matcher; `settings` turns the configuration into
//! what the model code takes.

pub mod answerer;
mod assemble;
pub mod captioner;
pub mod matcher;
pub mod retrieval;
mod settings;

pub use answerer::{Answer, Answerer};
pub use assemble::{assemble, resolve, Assembled, EngineError, Resolved};
pub use captioner::{Caption, Captioner};
pub use matcher::{MatchScore, Matcher};
pub use settings::{generation_config, image_processor, quantization_format};
