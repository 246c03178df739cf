//! The model under test, set up for benchmarking: BLIP, its tokenizer and image processor on one
//! device and dtype, with generation lengths forced (`min_length = max_length = prompt + N`) so every
//! caption has exactly N generated tokens and every run does the same work.

use std::path::PathBuf;

use candle_core::Tensor;

use super::document::ModelShape;
use super::BenchError;
use crate::config::Config;
use crate::device::ActiveDevice;
use crate::engine::{assemble, Assembled};
use crate::generate::{decoder_start, generate_with, GenerationConfig, StepGraphs};
use crate::models::blip::{BlipForConditionalGeneration, CrossAttentionKv};
use crate::preprocess::prompt::PromptTokenizer;
use crate::preprocess::upload::BatchUploader;
use crate::preprocess::ImageProcessor;

pub struct BenchModel {
    model: BlipForConditionalGeneration,
    tokenizer: PromptTokenizer,
    processor: ImageProcessor,
    uploader: BatchUploader,
    /// The decoder start sequence: bos and the prompt's tokens.
    prompt: Vec<u32>,
    /// Generation settings from the config with both lengths set to `prompt.len() + generated_tokens`.
    generation: GenerationConfig,
    generated_tokens: usize,
    /// Recorded decode steps of `model` (`generation.cuda_graphs`).
    graphs: StepGraphs<CrossAttentionKv>,
    active: ActiveDevice,
    model_dir: PathBuf,
    /// Seconds spent resolving the directory, reading the tokenizer and loading the weights (synchronised).
    pub load_seconds: f64,
}

impl BenchModel {
    /// Loads `model.source` in the active precision and forces `generated_tokens` per caption.
    pub fn load(
        config: &Config,
        active: &ActiveDevice,
        generated_tokens: usize,
    ) -> Result<BenchModel, BenchError> {
        if generated_tokens == 0 {
            return Err(BenchError::Settings(
                "--tokens must be at least 1".to_string(),
            ));
        }
        let Assembled {
            model,
            tokenizer,
            processor,
            generation,
            prompt_ids,
            model_dir,
            load_seconds,
            ..
        } = assemble(config, active)?;

        let text = &model.config().text_config;
        let prompt = decoder_start(&prompt_ids, text.bos_token_id);
        let forced_length = prompt.len() + generated_tokens;
        if forced_length > text.max_position_embeddings {
            return Err(BenchError::Settings(format!(
                "prompt ({} tokens) + {generated_tokens} generated tokens exceeds the decoder's {} positions: lower --tokens",
                prompt.len(),
                text.max_position_embeddings
            )));
        }
        // The captioner's settings, with [SEP] blocked until the forced length.
        let generation = GenerationConfig {
            max_length: forced_length,
            min_length: forced_length,
            num_beams: 1,
            ..generation
        };
        Ok(BenchModel {
            model,
            tokenizer,
            processor,
            uploader: BatchUploader::new(),
            prompt,
            generation,
            generated_tokens,
            graphs: StepGraphs::new(config.generation.cuda_graphs),
            active: active.clone(),
            model_dir,
            load_seconds,
        })
    }

    pub fn model(&self) -> &BlipForConditionalGeneration {
        &self.model
    }

    /// The model, to change how it computes (e.g. how quantized projections multiply); the
    /// decode steps recorded so far are dropped.
    pub fn model_mut(&mut self) -> &mut BlipForConditionalGeneration {
        self.graphs.clear();
        &mut self.model
    }

    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    pub fn active(&self) -> &ActiveDevice {
        &self.active
    }

    pub fn model_dir(&self) -> &std::path::Path {
        &self.model_dir
    }

    /// The decoder start sequence (bos + prompt tokens).
    pub fn prompt(&self) -> &[u32] {
        &self.prompt
    }

    pub fn generated_tokens(&self) -> usize {
        self.generated_tokens
    }

    /// `max_length` = `min_length` of every generation.
    pub fn forced_length(&self) -> usize {
        self.generation.max_length
    }

    /// The forced generation settings with `num_beams` beams.
    pub fn generation(&self, num_beams: usize) -> GenerationConfig {
        GenerationConfig {
            num_beams,
            ..self.generation.clone()
        }
    }

    /// The model's shapes.
    pub fn shape(&self) -> ModelShape {
        ModelShape::of(self.model.config())
    }

    /// Waits for the device to finish queued work (a no-op on the CPU).
    pub fn synchronize(&self) -> Result<(), BenchError> {
        self.active
            .device
            .synchronize()
            .map_err(BenchError::compute("device synchronise"))
    }

    /// Uploads preprocessed CHW images as an `(N, 3, S, S)` batch in the model dtype.
    pub fn upload(&self, pixels: &[Vec<f32>]) -> Result<Tensor, BenchError> {
        self.uploader
            .upload(
                pixels,
                self.processor.size,
                &self.active.device,
                self.active.precision.dtype,
            )
            .map_err(BenchError::compute("uploading the image batch"))
    }

    /// Forced-length generation of `batch` with `num_beams`; checks every caption has exactly
    /// `generated_tokens` tokens after the prompt.
    pub fn generate_forced(
        &self,
        batch: &Tensor,
        num_beams: usize,
    ) -> Result<Vec<Vec<u32>>, BenchError> {
        let sequences = generate_with(
            &self.model,
            batch,
            &self.prompt,
            &self.generation(num_beams),
            &self.graphs,
        )?;
        for sequence in &sequences {
            let found = sequence.len().saturating_sub(self.prompt.len());
            if found != self.generated_tokens {
                return Err(BenchError::ForcedTokens {
                    batch_size: sequences.len(),
                    num_beams,
                    expected: self.generated_tokens,
                    found,
                });
            }
        }
        Ok(sequences)
    }

    /// Caption text of each sequence (special tokens skipped).
    pub fn decode(&self, sequences: &[Vec<u32>]) -> Result<Vec<String>, BenchError> {
        sequences
            .iter()
            .map(|ids| {
                self.tokenizer
                    .decode(ids)
                    .map_err(|err| BenchError::Internal(format!("decoding tokens: {err}")))
            })
            .collect()
    }
}
