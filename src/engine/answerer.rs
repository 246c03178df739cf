//! The question-answering engine of `vlmrun vqa`: a `BlipForQuestionAnswering` from
//! `model.source` (checked to be one, by `config.json`'s `architectures`), its tokenizer, the
//! image processor and the generation settings, bound to one device and dtype.
//!
//! Order of work per batch: tokenize the questions (`[CLS] question [SEP]`, right-padded with
//! `[PAD]` and masked in the question encoder) -> vision + question encoder -> answer decoder from
//! `[DEC]` through `generate` (greedy or beam, transformers semantics) -> decode.

use candle_core::{DType, Tensor};

use super::assemble::resolve;
use super::settings::{generation_config, image_processor, log_quantization, projection_loader};
use crate::config::Config;
use crate::device::ActiveDevice;
use crate::error::Error;
use crate::generate::{generate_from, GenerationConfig};
use crate::models::blip::weights::classify_build_error;
use crate::models::blip::{BlipForQuestionAnswering, BlipWeights};
use crate::models::registry::{architecture, Architecture};
use crate::preprocess::prompt::PromptTokenizer;
use crate::preprocess::upload::BatchUploader;
use crate::preprocess::ImageProcessor;

/// One generated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// `[DEC]`, the generated ids and the final `[SEP]` when one was generated.
    pub token_ids: Vec<u32>,
    /// Decoded with special tokens skipped.
    pub text: String,
}

pub struct Answerer {
    model: BlipForQuestionAnswering,
    tokenizer: PromptTokenizer,
    processor: ImageProcessor,
    uploader: BatchUploader,
    generation: GenerationConfig,
    active: ActiveDevice,
}

/// The error for a checkpoint of another family passed where `wanted` is needed.
pub fn wrong_architecture(source: &str, found: Architecture, wanted: Architecture) -> Error {
    let (command, _) = found.command_and_example();
    let (_, example) = wanted.command_and_example();
    Error::Model(format!(
        "{source} is a {} checkpoint (config.json architectures), not a {}\n  fix: pass a {} model with --model (e.g. {example}), or use `vlmrun {command}` for this one",
        found.class_name(),
        wanted.class_name(),
        wanted.class_name(),
    ))
}

impl Answerer {
    /// Resolves `model.source`, checks that it is a question-answering checkpoint and loads it in
    /// the active precision, its projections quantized when `quantization` asks for it (as the
    /// captioner's; GGUF files are captioning-only).
    pub fn load(config: &Config, active: &ActiveDevice) -> Result<Answerer, Error> {
        let resolved = resolve(config)?;
        let dir = resolved.files.weights;
        let source = &config.model.source;
        if crate::models::blip::gguf::is_gguf_path(&dir) {
            return Err(Error::Model(format!(
                "{source}: GGUF files hold captioning models only\n  fix: point --model at a BlipForQuestionAnswering directory or hub id"
            )));
        }
        let weights = BlipWeights::locate(&dir).map_err(Error::model)?;
        let text = weights.config_text().map_err(Error::model)?;
        let found =
            architecture(&text).map_err(|e| Error::Model(format!("{}: {e}", dir.display())))?;
        if found != Architecture::QuestionAnswering {
            return Err(wrong_architecture(
                source,
                found,
                Architecture::QuestionAnswering,
            ));
        }
        let dtype = active.precision.dtype;
        let vb = weights
            .var_builder(dtype, &active.device)
            .map_err(|e| Error::Model(format!("{e:#}")))?;
        let mut projections = projection_loader(config, &vb);
        let mut model =
            BlipForQuestionAnswering::new_with_projections(&weights.config, vb, &mut projections)
                .map_err(|e| Error::Model(format!("{:#}", classify_build_error(e, &dir))))?;
        log_quantization(config, "vqa", &projections);
        let native = weights.config.vision_config.image_size;
        if let Some(size) = config.vqa.image_size.filter(|&s| s != native) {
            let patch = weights.config.vision_config.patch_size;
            if size == 0 || !size.is_multiple_of(patch) {
                return Err(Error::Usage(format!(
                    "vqa.image_size is {size}, not a multiple of the model's patch size {patch}\n  fix: use a multiple of {patch} (LAVIS: 480), or null for the checkpoint's {native}"
                )));
            }
            model.interpolate_image_size(size).map_err(|e| {
                Error::Internal(format!("interpolating the position embeddings: {e}"))
            })?;
        }
        let processor = image_processor(config, model.config().vision_config.image_size);
        let generation = generation_config(config, &weights.config);
        Ok(Answerer {
            model,
            tokenizer: resolved.tokenizer,
            processor,
            uploader: BatchUploader::new(),
            generation,
            active: active.clone(),
        })
    }

    /// The image processor (cheap to clone into preprocessing workers).
    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    /// `[CLS] question [SEP]`, checked against the encoder's positions.
    pub fn question_ids(&self, question: &str) -> Result<Vec<u32>, Error> {
        let ids = self.tokenizer.text_ids(question).map_err(Error::usage)?;
        let max = self.model.config().text_config.max_position_embeddings;
        if ids.len() > max {
            return Err(Error::Usage(format!(
                "the question is {} tokens but the model takes at most {max} (max_position_embeddings)\n  fix: shorten the question",
                ids.len()
            )));
        }
        Ok(ids)
    }

    /// Answers `questions[i]` about image `pixels[i]` (CHW f32 each, preprocessed).
    pub fn answer_pixels(
        &self,
        pixels: &[Vec<f32>],
        questions: &[Vec<u32>],
    ) -> Result<Vec<Answer>, Error> {
        if pixels.len() != questions.len() {
            return Err(Error::Internal(format!(
                "{} images but {} questions",
                pixels.len(),
                questions.len()
            )));
        }
        if pixels.is_empty() {
            return Ok(Vec::new());
        }
        let internal = |what: &str, e: candle_core::Error| Error::Internal(format!("{what}: {e}"));
        let device = &self.active.device;
        let batch = self
            .uploader
            .upload(pixels, self.processor.size, device, self.model.dtype())
            .map_err(|e| Error::Internal(format!("uploading the image batch: {e}")))?;
        let (ids, mask) = padded_questions(questions, self.generation.pad, device)
            .map_err(|e| internal("question batch", e))?;
        let context = self
            .model
            .question_kv(&batch, &ids, mask.as_ref())
            .map_err(|e| internal("encoding the questions", e))?;
        let sequences = generate_from(&self.model, context, &[], &self.generation)
            .map_err(|e| Error::Internal(format!("answer generation failed: {e}")))?;
        sequences
            .into_iter()
            .map(|token_ids| {
                let text = self
                    .tokenizer
                    .decode(&token_ids)
                    .map_err(|e| Error::Internal(format!("decoding tokens: {e}")))?;
                Ok(Answer { token_ids, text })
            })
            .collect()
    }

    pub fn dtype(&self) -> DType {
        self.model.dtype()
    }

    /// `ids` with LAVIS's `[ENC]` in place of the first token (`[CLS]`).
    pub fn with_enc_first(&self, mut ids: Vec<u32>) -> Result<Vec<u32>, Error> {
        let enc = self.tokenizer.token_id("[ENC]").ok_or_else(|| {
            Error::Model("the tokenizer has no [ENC] token (BLIP adds it as id 30523)".to_string())
        })?;
        if let Some(first) = ids.first_mut() {
            *first = enc;
        }
        Ok(ids)
    }

    /// LAVIS's answer candidates: each answer tokenized `[CLS] answer [SEP]` with `[DEC]`
    /// (`bos_token_id`) in place of `[CLS]`.
    pub fn answer_candidates(&self, answers: &[String]) -> Result<Vec<Vec<u32>>, Error> {
        let bos = self.model.config().text_config.bos_token_id;
        answers
            .iter()
            .map(|a| {
                let mut ids = self
                    .tokenizer
                    .text_ids(a)
                    .map_err(|e| Error::Input(format!("answer list entry {a:?}: {e}")))?;
                ids[0] = bos;
                Ok(ids)
            })
            .collect()
    }

    /// LAVIS `rank` mode for a batch: `questions[i]` about image `pixels[i]` (CHW f32 each),
    /// encoded together (right-padded, the padding masked in the encoder and, as LAVIS does in
    /// this mode, in the answer decoder's cross-attention), every question's top `k` candidates
    /// by their first token's probability scored together by minus their label-smoothed (0.1)
    /// summed cross-entropy. Per question the best (the first of equal scores in top-k order).
    pub fn rank_pixels(
        &self,
        pixels: &[Vec<f32>],
        questions: &[Vec<u32>],
        candidates: &[Vec<u32>],
        k: usize,
    ) -> Result<Vec<crate::models::blip::vqa::RankedAnswer>, Error> {
        if pixels.len() != questions.len() {
            return Err(Error::Internal(format!(
                "{} images but {} questions",
                pixels.len(),
                questions.len()
            )));
        }
        if pixels.is_empty() {
            return Ok(Vec::new());
        }
        let internal = |e: candle_core::Error| Error::Internal(format!("rank mode: {e}"));
        let device = &self.active.device;
        let batch = self
            .uploader
            .upload(pixels, self.processor.size, device, self.model.dtype())
            .map_err(internal)?;
        let (ids, mask) =
            padded_questions(questions, self.generation.pad, device).map_err(internal)?;
        let context = self
            .model
            .question_kv(&batch, &ids, mask.as_ref())
            .map_err(internal)?;
        let context = match &mask {
            Some(mask) => context.with_key_mask(mask).map_err(internal)?,
            None => context,
        };
        let ranked = self
            .model
            .rank_answers_batch(&context, candidates, k, 0.1)
            .map_err(internal)?;
        ranked
            .into_iter()
            .map(|candidates| {
                let mut best: Option<crate::models::blip::vqa::RankedAnswer> = None;
                for candidate in candidates {
                    if best.as_ref().is_none_or(|b| candidate.score > b.score) {
                        best = Some(candidate);
                    }
                }
                best.ok_or_else(|| Error::Internal("rank mode: no candidates".to_string()))
            })
            .collect()
    }
}

/// Right-pads `questions` with `pad` into `(B, T)` u32 ids and, when any is padded, the 1/0
/// attention mask.
pub fn padded_questions(
    questions: &[Vec<u32>],
    pad: u32,
    device: &candle_core::Device,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let longest = questions.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(questions.len() * longest);
    let mut mask = Vec::with_capacity(questions.len() * longest);
    for q in questions {
        ids.extend(q.iter().copied());
        ids.extend(std::iter::repeat_n(pad, longest - q.len()));
        mask.extend(std::iter::repeat_n(1u32, q.len()));
        mask.extend(std::iter::repeat_n(0u32, longest - q.len()));
    }
    let ids = Tensor::from_vec(ids, (questions.len(), longest), device)?;
    let padded = questions.iter().any(|q| q.len() < longest);
    let mask = padded
        .then(|| Tensor::from_vec(mask, (questions.len(), longest), device))
        .transpose()?;
    Ok((ids, mask))
}
