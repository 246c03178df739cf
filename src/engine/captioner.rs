//! The captioning engine shared by `caption`, `baseline` and `fidelity`: a BLIP model, its tokenizer,
//! the image processor and the generation settings ([`super::assemble`]), bound to one device and
//! dtype, with the f16 overflow fallback.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Tensor};

use super::assemble::{assemble, Assembled};
use crate::config::{Config, PrecisionFallback};
use crate::device::ActiveDevice;
use crate::error::Error;
use crate::generate::{generate, generate_with, GenerateError, GenerationConfig, StepGraphs};
use crate::models::blip::load::load_model_with;
use crate::models::blip::{BlipForConditionalGeneration, CrossAttentionKv};
use crate::preprocess::prompt::PromptTokenizer;
use crate::preprocess::upload::BatchUploader;
use crate::preprocess::ImageProcessor;

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
    /// Host -> device copies of the pixel batches (pinned staging on CUDA).
    uploader: BatchUploader,
    generation: GenerationConfig,
    /// Recorded decode steps of `model` (`generation.cuda_graphs`; the fallback model runs eagerly).
    graphs: StepGraphs<CrossAttentionKv>,
    prompt_ids: Vec<u32>,
    model_dir: PathBuf,
    active: ActiveDevice,
    quantization: Option<GgmlDType>,
    /// Precision an f16 batch with non-finite logits is recomputed in.
    fallback_dtype: DType,
    /// The model in `fallback_dtype`, loaded on the first overflow.
    fallback_model: OnceLock<BlipForConditionalGeneration>,
    /// Seconds spent resolving and loading the weights onto the device.
    pub load_seconds: f64,
}

impl Captioner {
    /// Resolves `model.source`, loads the weights in the active precision and prepares the prompt
    /// ([`assemble`]).
    pub fn load(config: &Config, active: &ActiveDevice) -> Result<Captioner, Error> {
        let Assembled {
            model,
            tokenizer,
            processor,
            generation,
            prompt_ids,
            model_dir,
            quantization,
            load_seconds,
        } = assemble(config, active)?;
        Ok(Captioner {
            model,
            tokenizer,
            processor,
            uploader: BatchUploader::new(),
            generation,
            graphs: StepGraphs::new(config.generation.cuda_graphs),
            prompt_ids,
            model_dir,
            active: active.clone(),
            quantization,
            fallback_dtype: match config.precision_fallback {
                PrecisionFallback::F32 => DType::F32,
                PrecisionFallback::Bf16 => DType::BF16,
            },
            fallback_model: OnceLock::new(),
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

    /// The model (for inspection: logits, weights).
    pub fn model(&self) -> &BlipForConditionalGeneration {
        &self.model
    }

    /// The model, to change how it computes (e.g. [`BlipForConditionalGeneration::set_quantized_matmul`]);
    /// the decode steps recorded so far are dropped.
    pub fn model_mut(&mut self) -> &mut BlipForConditionalGeneration {
        self.graphs.clear();
        &mut self.model
    }

    /// Decodes with `num_beams` beams from now on (1 = greedy).
    pub fn set_num_beams(&mut self, num_beams: usize) {
        self.generation.num_beams = num_beams;
    }

    /// The decoder start sequence: bos and the prompt's tokens.
    pub fn decoder_start(&self) -> Vec<u32> {
        crate::generate::decoder_start(&self.prompt_ids, self.generation.bos)
    }

    /// Number of tokens the prompt contributes (bos included).
    pub fn prompt_len(&self) -> usize {
        self.prompt_ids.len()
    }

    /// Captions a batch of preprocessed images (CHW f32 each). Waits for the device to finish.
    pub fn caption_pixels(&self, pixels: &[Vec<f32>]) -> Result<Vec<Caption>, Error> {
        self.caption_batch(pixels, &format!("of {} images", pixels.len()))
    }

    /// [`Captioner::caption_pixels`], naming the batch `label` in the warning an f16 overflow
    /// logs. In f16, a batch whose logits turn non-finite is recomputed once, whole, in the
    /// `precision_fallback` dtype (a second copy of the model, loaded on first need), so no
    /// caption comes from overflowed activations; other precisions report the error.
    pub fn caption_batch(&self, pixels: &[Vec<f32>], label: &str) -> Result<Vec<Caption>, Error> {
        if pixels.is_empty() {
            return Ok(Vec::new());
        }
        let upload = |dtype: DType| {
            self.uploader
                .upload(pixels, self.processor.size, &self.active.device, dtype)
                .map_err(|err| Error::Internal(format!("uploading the image batch: {err}")))
        };
        // Uploaded in the model's dtype (half the bytes for f16/bf16); the fallback starts again from
        // the host's f32 pixels, so it sees exactly what an f32 run would.
        let batch = upload(self.model.dtype())?;
        let sequences = match self.generate_in(&self.model, &batch) {
            Err(GenerateError::NonFiniteLogits { step }) if self.model.dtype() == DType::F16 => {
                tracing::warn!(
                    "batch {label}: non-finite logits at step {step} in f16 (overflow); recomputing it in {}",
                    self.fallback_dtype.as_str()
                );
                let fallback = self.fallback_model()?;
                self.generate_in(fallback, &upload(fallback.dtype())?)
            }
            other => other,
        }
        .map_err(|err| self.generation_error(err, label))?;
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

    /// What a failed generation is: non-finite logits that remain (f32 or bf16, or f16 after its
    /// fallback) are a model error (exit 4) naming the batch, the step, the model and the
    /// precision; the weights were checked finite at load, so the activations overflowed.
    fn generation_error(&self, err: GenerateError, label: &str) -> Error {
        match err {
            GenerateError::NonFiniteLogits { step } => Error::Model(format!(
                "the model's logits became NaN or infinite at generation step {step} of batch {label} \
                 (model {}, {}): its weights are finite (checked at load), so its activations \
                 overflowed\n  fix: run in f32 (--precision f32); if f32 gives this too, the model \
                 is unusable (its weights are too large for its activations)",
                self.model_dir.display(),
                self.model.dtype().as_str()
            )),
            err => Error::Internal(format!("generation failed (batch {label}): {err}")),
        }
    }

    /// Generates for the pixel batch with `model`, cast to the model's dtype if it is not already.
    fn generate_in(
        &self,
        model: &BlipForConditionalGeneration,
        batch: &Tensor,
    ) -> Result<Vec<Vec<u32>>, GenerateError> {
        let batch = batch.to_dtype(model.dtype())?;
        if std::ptr::eq(model, &self.model) {
            generate_with(
                model,
                &batch,
                &self.prompt_ids,
                &self.generation,
                &self.graphs,
            )
        } else {
            generate(model, &batch, &self.prompt_ids, &self.generation)
        }
    }

    /// The model in the fallback dtype, loaded on the first call.
    fn fallback_model(&self) -> Result<&BlipForConditionalGeneration, Error> {
        if let Some(model) = self.fallback_model.get() {
            return Ok(model);
        }
        let model = load_model_with(
            &self.model_dir,
            self.fallback_dtype,
            &self.active.device,
            self.quantization,
        )
        .map_err(|err| {
            Error::Model(format!(
                "loading the {} fallback model: {err:#}",
                self.fallback_dtype.as_str()
            ))
        })?;
        Ok(self.fallback_model.get_or_init(|| model))
    }
}
