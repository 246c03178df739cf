//! Caption generation with Hugging Face `generate` semantics (transformers 5.17): greedy search
//! and beam search over a [`Decoder`] (BLIP captioning, BLIP question answering), batched, with an
//! explicit KV cache.
//!
//! Sequences count from bos: `max_length`/`min_length` bound the whole sequence (bos and prompt
//! included), as in `BlipForConditionalGeneration.generate`.

pub mod beam;
pub mod beam_state;
pub mod graphed;
pub mod greedy;
pub mod logits;

pub use graphed::StepGraphs;

use candle_core::Tensor;

use crate::models::blip::{BlipForConditionalGeneration, CrossAttentionKv};
use crate::models::family::Decoder;

/// Decoding parameters (HF `GenerationConfig` fields that BLIP captioning uses).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Maximum length of the whole sequence (bos + prompt + generated).
    pub max_length: usize,
    /// The stop token is blocked while the sequence is shorter than this.
    pub min_length: usize,
    /// 1 = greedy search; more = beam search with this many beams.
    pub num_beams: usize,
    /// Beam search: finished hypotheses score `sum_logprobs / generated_len ** length_penalty`.
    pub length_penalty: f64,
    /// HF `repetition_penalty` (1.0 = off).
    pub repetition_penalty: f32,
    /// First token of every sequence (`[DEC]`, 30522 for BLIP).
    pub bos: u32,
    /// Stop token (`[SEP]`, 102: BLIP generates with `eos_token_id = sep_token_id`).
    pub eos: u32,
    /// Padding id (never part of the returned sequences).
    pub pad: u32,
}

impl Default for GenerationConfig {
    /// transformers' defaults for BLIP captioning: greedy, `max_length` 20.
    fn default() -> Self {
        Self {
            max_length: 20,
            min_length: 0,
            num_beams: 1,
            length_penalty: 1.0,
            repetition_penalty: 1.0,
            bos: 30522,
            eos: 102,
            pad: 0,
        }
    }
}

/// Why generation could not run.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("invalid generation config: {0}")]
    InvalidConfig(String),
    #[error("the prompt is {prompt_len} tokens (with bos) but max_length is {max_length}: raise max_length or shorten the prompt")]
    PromptTooLong {
        prompt_len: usize,
        max_length: usize,
    },
    #[error("pixel_values must be (batch, 3, height, width), got {0:?}")]
    BadPixelValues(Vec<usize>),
    /// The logits of generation step `step` (0 = the first generated token) hold a NaN or an
    /// infinity: usually an f16 overflow somewhere in the model.
    #[error("non-finite logits (NaN or infinity) at generation step {step}: the activations overflowed; run in f32 or bf16 (precision, precision_fallback)")]
    NonFiniteLogits { step: usize },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl GenerationConfig {
    fn validate<M: Decoder>(&self, model: &M) -> Result<(), GenerateError> {
        let vocab_size = model.vocab_size();
        let bad = |what: String| Err(GenerateError::InvalidConfig(what));
        if self.num_beams == 0 {
            return bad("num_beams must be at least 1".into());
        }
        if 2 * self.num_beams > vocab_size {
            return bad(format!(
                "num_beams {} needs a vocabulary of at least {} tokens",
                self.num_beams,
                2 * self.num_beams
            ));
        }
        if self.max_length > model.max_positions() {
            return bad(format!(
                "max_length {} exceeds the decoder's max_position_embeddings {}",
                self.max_length,
                model.max_positions()
            ));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition_penalty must be a positive number, got {}",
                self.repetition_penalty
            ));
        }
        if !self.length_penalty.is_finite() {
            return bad(format!(
                "length_penalty must be finite, got {}",
                self.length_penalty
            ));
        }
        for (name, id) in [("bos", self.bos), ("eos", self.eos)] {
            if id as usize >= vocab_size {
                return bad(format!(
                    "{name} id {id} is outside the vocabulary ({vocab_size} tokens)"
                ));
            }
        }
        Ok(())
    }
}

/// The decoder start sequence: `prompt_ids` as given when it starts with bos (as
/// `PromptTokenizer::prompt_ids` returns it), bos prepended otherwise, `[bos]` when empty.
pub fn decoder_start(prompt_ids: &[u32], bos: u32) -> Vec<u32> {
    match prompt_ids.first() {
        Some(&first) if first == bos => prompt_ids.to_vec(),
        _ => std::iter::once(bos)
            .chain(prompt_ids.iter().copied())
            .collect(),
    }
}

/// Captions every image of `pixel_values` `(B, 3, S, S)` (f32 or the model dtype). Returns, per
/// image, the full sequence as transformers returns it: bos, prompt, generated ids, and the final
/// eos when one was generated; never padding. Each caption depends only on its own image. Every
/// step runs eagerly; [`generate_with`] replays recorded steps.
pub fn generate(
    model: &BlipForConditionalGeneration,
    pixel_values: &Tensor,
    prompt_ids: &[u32],
    cfg: &GenerationConfig,
) -> Result<Vec<Vec<u32>>, GenerateError> {
    generate_with(
        model,
        pixel_values,
        prompt_ids,
        cfg,
        &StepGraphs::new(false),
    )
}

/// [`generate`], with greedy search on CUDA replaying the decode steps recorded in `graphs` (see
/// [`StepGraphs`]): the same token ids.
pub fn generate_with(
    model: &BlipForConditionalGeneration,
    pixel_values: &Tensor,
    prompt_ids: &[u32],
    cfg: &GenerationConfig,
    graphs: &StepGraphs<CrossAttentionKv>,
) -> Result<Vec<Vec<u32>>, GenerateError> {
    cfg.validate(model)?;
    let dims = pixel_values.dims().to_vec();
    if !matches!(dims.as_slice(), [_, 3, _, _]) {
        return Err(GenerateError::BadPixelValues(dims));
    }
    let prompt = checked_prompt(prompt_ids, cfg)?;
    if dims.first() == Some(&0) {
        return Ok(Vec::new());
    }
    let image_kv = model
        .text_decoder()
        .image_kv(&model.image_embeds(pixel_values)?)?;
    search(model, image_kv, &prompt, cfg, graphs)
}

/// Generates from the decoder start `prompt_ids` for every group of `context` (e.g. one image's
/// or one question's cross-attention keys/values): the sequences as [`generate`] returns them.
pub fn generate_from<M: Decoder>(
    model: &M,
    context: M::Context,
    prompt_ids: &[u32],
    cfg: &GenerationConfig,
) -> Result<Vec<Vec<u32>>, GenerateError> {
    generate_from_with(model, context, prompt_ids, cfg, &StepGraphs::new(false))
}

/// [`generate_from`] through the decode steps recorded in `graphs` where they apply.
pub fn generate_from_with<M: Decoder>(
    model: &M,
    context: M::Context,
    prompt_ids: &[u32],
    cfg: &GenerationConfig,
    graphs: &StepGraphs<M::Context>,
) -> Result<Vec<Vec<u32>>, GenerateError> {
    cfg.validate(model)?;
    let prompt = checked_prompt(prompt_ids, cfg)?;
    if model.context_groups(&context)? == 0 {
        return Ok(Vec::new());
    }
    search(model, context, &prompt, cfg, graphs)
}

/// The decoder start sequence for `prompt_ids`, checked to leave room for one token.
fn checked_prompt(prompt_ids: &[u32], cfg: &GenerationConfig) -> Result<Vec<u32>, GenerateError> {
    let prompt = decoder_start(prompt_ids, cfg.bos);
    if prompt.len() >= cfg.max_length {
        return Err(GenerateError::PromptTooLong {
            prompt_len: prompt.len(),
            max_length: cfg.max_length,
        });
    }
    Ok(prompt)
}

/// Greedy or beam search, as `cfg.num_beams` says; greedy through `graphs` where they apply.
fn search<M: Decoder>(
    model: &M,
    context: M::Context,
    prompt: &[u32],
    cfg: &GenerationConfig,
    graphs: &StepGraphs<M::Context>,
) -> Result<Vec<Vec<u32>>, GenerateError> {
    if graphs.applies(model, cfg) {
        graphs.greedy_search(model, context, prompt, cfg)
    } else if cfg.num_beams == 1 {
        greedy::greedy_search(model, context, prompt, cfg)
    } else {
        beam::beam_search(model, context, prompt, cfg)
    }
}

/// Errors with [`GenerateError::NonFiniteLogits`] when the f32 `logits` hold a NaN or an
/// infinity. One elementwise kernel, one reduction and a 4-byte read per step.
fn ensure_finite(logits: &Tensor, step: usize) -> Result<(), GenerateError> {
    // 0 * x + 0 is 0 for every finite x and NaN for NaN and +-inf: the sum is finite iff all are.
    let probe = logits
        .affine(0.0, 0.0)?
        .sum_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_scalar::<f32>()?;
    if probe.is_finite() {
        Ok(())
    } else {
        Err(GenerateError::NonFiniteLogits { step })
    }
}

/// `(rows, T)` u32 tensor with `prompt` on every row.
fn prompt_tensor(
    prompt: &[u32],
    rows: usize,
    device: &candle_core::Device,
) -> candle_core::Result<Tensor> {
    Tensor::new(prompt, device)?.unsqueeze(0)?.repeat((rows, 1))
}

/// u32 index tensor on `device`.
fn index_tensor(indices: &[usize], device: &candle_core::Device) -> candle_core::Result<Tensor> {
    let ids: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
    Tensor::from_vec(ids, indices.len(), device)
}
