//! The one assembly of a runnable model from the configuration, for every job: `model.source` ->
//! model files and tokenizer ([`resolve`]) -> weights on the device in the active precision (timed,
//! synchronised) -> image processor, prompt and generation settings ([`assemble`]). `train` takes
//! [`resolve`] alone: its model is built from f32 master weights, not loaded.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::quantized::GgmlDType;

use super::settings::{check_lengths, generation_config, image_processor, quantization_format};
use crate::config::Config;
use crate::device::ActiveDevice;
use crate::generate::GenerationConfig;
use crate::hub::HubError;
use crate::models::blip::load::{load_model_with, resolve_model_files, ModelFiles, SourceError};
use crate::models::blip::{BlipForConditionalGeneration, LoadError};
use crate::preprocess::prompt::{PromptError, PromptTokenizer};
use crate::preprocess::ImageProcessor;

/// Why a model could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Hub(#[from] HubError),

    #[error(transparent)]
    Load(#[from] LoadError),

    #[error("{0}")]
    Tokenizer(#[source] PromptError),

    #[error("generation.prompt: {0}")]
    Prompt(#[source] PromptError),

    /// A generation setting the model or the prompt does not allow (`settings::check_lengths`).
    #[error("config key {key}: {message}")]
    Setting { key: &'static str, message: String },

    #[error("device synchronise after load: {0}")]
    Synchronize(#[source] candle_core::Error),
}

impl From<SourceError> for EngineError {
    fn from(err: SourceError) -> Self {
        match err {
            SourceError::Hub(err) => EngineError::Hub(err),
            SourceError::Load(err) => EngineError::Load(err),
        }
    }
}

impl From<EngineError> for crate::error::Error {
    fn from(err: EngineError) -> Self {
        use crate::error::Error;
        match err {
            EngineError::Hub(err) => Error::Hub(err),
            EngineError::Load(err) => Error::model(err),
            EngineError::Tokenizer(_) => Error::model(err),
            EngineError::Prompt(_) | EngineError::Setting { .. } => Error::usage(err),
            EngineError::Synchronize(_) => Error::Internal(err.to_string()),
        }
    }
}

/// The files `model.source` names and their tokenizer.
pub struct Resolved {
    pub files: ModelFiles,
    pub tokenizer: PromptTokenizer,
}

/// Resolves `model.source` (no network access) and reads its tokenizer.
pub fn resolve(config: &Config) -> Result<Resolved, EngineError> {
    let files = resolve_model_files(&config.model.source, &config.model.revision)?;
    let tokenizer = PromptTokenizer::from_file(&files.tokenizer).map_err(EngineError::Tokenizer)?;
    Ok(Resolved { files, tokenizer })
}

/// A model on the device with everything needed to run it as configured.
pub struct Assembled {
    pub model: BlipForConditionalGeneration,
    pub tokenizer: PromptTokenizer,
    pub processor: ImageProcessor,
    /// `generation.*` with the model's special ids.
    pub generation: GenerationConfig,
    /// `generation.prompt`'s tokens (without bos).
    pub prompt_ids: Vec<u32>,
    /// The model directory or GGUF file the weights came from.
    pub model_dir: PathBuf,
    /// The GGML format the projections were quantized to at load (`None`: dense).
    pub quantization: Option<GgmlDType>,
    /// Seconds spent resolving the source, reading the tokenizer and loading the weights (synchronised).
    pub load_seconds: f64,
}

/// Resolves `model.source`, loads the weights in the active precision on the active device and
/// prepares the processor, the prompt and the generation settings.
pub fn assemble(config: &Config, active: &ActiveDevice) -> Result<Assembled, EngineError> {
    let started = Instant::now();
    let Resolved { files, tokenizer } = resolve(config)?;
    let model_dir = files.weights;
    check_captioning(&config.model.source, &model_dir)?;
    let quantization = quantization_format(config.quantization);
    let model = load_model_with(
        &model_dir,
        active.precision.dtype,
        &active.device,
        quantization,
    )?;
    active
        .device
        .synchronize()
        .map_err(EngineError::Synchronize)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let processor = image_processor(config, model.config().vision_config.image_size);
    let prompt_ids = tokenizer
        .prompt_ids(&config.generation.prompt)
        .map_err(EngineError::Prompt)?;
    check_lengths(config, model.config(), prompt_ids.len())
        .map_err(|(key, message)| EngineError::Setting { key, message })?;
    let generation = generation_config(config, model.config());
    Ok(Assembled {
        model,
        tokenizer,
        processor,
        generation,
        prompt_ids,
        model_dir,
        quantization,
        load_seconds,
    })
}

/// Refuses a model directory whose `config.json` declares another head than captioning (a VQA or
/// matching checkpoint has the same vision tower and decoder names, so it would load and caption
/// nonsense). GGUF files and unreadable configs are left to the loader.
fn check_captioning(source: &str, model_dir: &std::path::Path) -> Result<(), EngineError> {
    use crate::models::registry::{architecture, Architecture};
    let Ok(text) = std::fs::read_to_string(model_dir.join("config.json")) else {
        return Ok(());
    };
    match architecture(&text) {
        Ok(Architecture::Captioning) | Err(_) => Ok(()),
        Ok(found) => {
            let (command, _) = found.command_and_example();
            Err(EngineError::Load(LoadError::WrongArchitecture(format!(
                "{source} is a {} checkpoint (config.json architectures), not a BlipForConditionalGeneration\n  fix: use `vlmrun {command}` for it, or pass a captioning model (e.g. Salesforce/blip-image-captioning-base)",
                found.class_name()
            ))))
        }
    }
}
