//! The captioning engine shared by `caption`, `baseline` and `bench`: a BLIP model, its tokenizer, the
//! image processor and the generation settings, bound to one device and dtype.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::GgmlDType;

use crate::config::{Config, Quantization, ResizePassOrder};
use crate::device::ActiveDevice;
use crate::error::Error;
use crate::generate::{generate, GenerationConfig};
use crate::hub;
use crate::models::blip::{load::load_model_with, BlipForConditionalGeneration};
use crate::preprocess::prompt::PromptTokenizer;
use crate::preprocess::{batch_tensor, ImageProcessor, PassOrder};

/// One generated caption.
#[derive(Debug, Clone, PartialEq)]
pub struct Caption {
    /// The full sequence as transformers returns it: bos, prompt, generated ids, final 102 if generated.
    pub token_ids: Vec<u32>,
    /// Decoded with special tokens skipped (the prompt text is kept, as transformers decodes it).
    pub text: String,
}

pub struct Captioner {
    model: BlipForConditionalGeneration,
    tokenizer: PromptTokenizer,
    processor: ImageProcessor,
    generation: GenerationConfig,
    prompt_ids: Vec<u32>,
    model_dir: PathBuf,
    active: ActiveDevice,
    /// Seconds spent resolving and loading the weights onto the device.
    pub load_seconds: f64,
}

impl Captioner {
    /// Resolves `model.source`, loads the weights in the active precision and prepares the prompt.
    pub fn load(config: &Config, active: &ActiveDevice) -> Result<Captioner, Error> {
        let started = Instant::now();
        let model_dir =
            hub::resolve_complete_model_dir(&config.model.source, &config.model.revision)?;
        let tokenizer = PromptTokenizer::from_file(model_dir.join(hub::TOKENIZER_FILE))
            .map_err(|err| Error::Model(err.to_string()))?;
        let model = load_model_with(
            &model_dir,
            active.precision.dtype,
            &active.device,
            quantization_format(config.quantization),
        )
        .map_err(|err| Error::Model(format!("{err:#}")))?;
        active
            .device
            .synchronize()
            .map_err(|err| Error::Internal(format!("device synchronise after load: {err}")))?;
        let load_seconds = started.elapsed().as_secs_f64();
        let image_size = model.config().vision_config.image_size;
        let mut processor = ImageProcessor::blip(image_size);
        processor.max_pixels = config.preprocess.max_pixels;
        processor.pass_order = match config.preprocess.resize_pass_order {
            ResizePassOrder::Pillow12 => PassOrder::HorizontalFirst,
            ResizePassOrder::Pillow13 => PassOrder::Pillow13,
            ResizePassOrder::Pillow121 => PassOrder::AlwaysHorizontal,
        };
        let prompt_ids = tokenizer
            .prompt_ids(&config.generation.prompt)
            .map_err(|err| Error::Usage(format!("generation.prompt: {err}")))?;
        let settings = &config.generation;
        let text_config = &model.config().text_config;
        // BLIP captioning stops on [SEP] (sep_token_id), not on the config's eos_token_id (2).
        let generation = GenerationConfig {
            max_length: settings.max_length,
            min_length: settings.min_length,
            num_beams: settings.num_beams,
            length_penalty: settings.length_penalty,
            repetition_penalty: settings.repetition_penalty,
            bos: text_config.bos_token_id,
            eos: text_config.sep_token_id,
            pad: text_config.pad_token_id,
        };
        Ok(Captioner {
            model,
            tokenizer,
            processor,
            generation,
            prompt_ids,
            model_dir,
            active: active.clone(),
            load_seconds,
        })
    }

    /// The image processor (cheap to clone into preprocessing workers).
    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    pub fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    pub fn active(&self) -> &ActiveDevice {
        &self.active
    }

    pub fn image_size(&self) -> usize {
        self.processor.size
    }

    /// Number of tokens the prompt contributes (bos included).
    pub fn prompt_len(&self) -> usize {
        self.prompt_ids.len()
    }

    /// Captions a batch of preprocessed images (CHW f32 each). Waits for the device to finish.
    pub fn caption_pixels(&self, pixels: &[Vec<f32>]) -> Result<Vec<Caption>, Error> {
        if pixels.is_empty() {
            return Ok(Vec::new());
        }
        let size = self.processor.size;
        let batch = batch_tensor(pixels, size, &self.active.device)
            .and_then(|t| t.to_dtype(self.active.precision.dtype))
            .map_err(|err| Error::Internal(format!("uploading the image batch: {err}")))?;
        let sequences = generate(&self.model, &batch, &self.prompt_ids, &self.generation)
            .map_err(|err| Error::Internal(format!("generation failed: {err}")))?;
        sequences
            .into_iter()
            .map(|token_ids| {
                let text = self
                    .tokenizer
                    .decode(&token_ids)
                    .map_err(|err| Error::Internal(format!("decoding tokens: {err}")))?;
                Ok(Caption { token_ids, text })
            })
            .collect()
    }
}

/// The GGML format a `quantization` setting asks for, `None` for dense weights.
pub fn quantization_format(quantization: Quantization) -> Option<GgmlDType> {
    match quantization {
        Quantization::None => None,
        Quantization::Q8_0 => Some(GgmlDType::Q8_0),
        Quantization::Q4_0 => Some(GgmlDType::Q4_0),
        Quantization::Q4k => Some(GgmlDType::Q4K),
        Quantization::Q6k => Some(GgmlDType::Q6K),
    }
}
