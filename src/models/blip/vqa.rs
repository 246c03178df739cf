//! BLIP visual question answering (HF `BlipForQuestionAnswering`, `Salesforce/blip-vqa-base`,
//! `blip-vqa-capfilt-large`): the ViT of `vision_model.*`, the question encoder
//! `text_encoder.*` (bidirectional BERT with cross-attention to the image) and the answer decoder
//! `text_decoder.*` (the captioning decoder, cross-attending to the encoded question).
//!
//! Order of work, as transformers' `BlipForQuestionAnswering.generate`:
//! 1. `image_embeds = vision_model(pixels)` `(B, N, D_v)`;
//! 2. `question_states = text_encoder(ids, mask, encoder_hidden_states=image_embeds)` `(B, T, D)`;
//! 3. the decoder starts from `[DEC]` (`bos_token_id`) and cross-attends to the question states
//!    with an all-ones mask: the padding of a batched question is NOT masked there (as in
//!    transformers and LAVIS), so a padded question can answer differently than alone.
//!
//! As a [`Decoder`] the context is the question's cross-attention keys/values, one group per
//! question ([`BlipForQuestionAnswering::question_kv`]). LAVIS's `rank` answer mode (scoring a
//! fixed answer list instead of generating) is [`BlipForQuestionAnswering::rank_answers_batch`].

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::decoder::last_position_logits;
use super::text_encoder::BlipTextModel;
use super::{BlipConfig, BlipTextLMHeadModel, BlipVisionModel, CrossAttentionKv};
use crate::kernels::fused::FusedOps;
use crate::models::family::Decoder;
use crate::models::kv_cache::{KvCache, KvCacheShape};
use crate::models::projections::ProjectionLoader;

/// `vision_model` + `text_encoder` + `text_decoder`.
#[derive(Debug, Clone)]
pub struct BlipForQuestionAnswering {
    vision_model: BlipVisionModel,
    text_encoder: BlipTextModel,
    text_decoder: BlipTextLMHeadModel,
    config: BlipConfig,
    dtype: DType,
    device: Device,
}

impl BlipForQuestionAnswering {
    /// Builds the model with dense weights from `vb` (root of the HF checkpoint); the activation
    /// dtype is `vb`'s. The decoder's cross-attention reads question states of the text width
    /// through `encoder_hidden_size`-wide projections (as transformers builds them), so the two
    /// must agree (768 in both VQA checkpoints).
    pub fn new(cfg: &BlipConfig, vb: VarBuilder) -> Result<Self> {
        Self::new_with_projections(cfg, vb, &mut ProjectionLoader::dense())
    }

    /// [`BlipForQuestionAnswering::new`] with the projections of all three parts built by
    /// `projections` (the captioner's quantization path: quantized at load, or dense).
    pub fn new_with_projections(
        cfg: &BlipConfig,
        vb: VarBuilder,
        projections: &mut ProjectionLoader,
    ) -> Result<Self> {
        let text = &cfg.text_config;
        if text.encoder_hidden_size != text.hidden_size {
            candle_core::bail!(
                "BlipForQuestionAnswering needs vision_config.hidden_size ({}) equal to text_config.hidden_size ({}): the answer decoder cross-attends to the question states",
                text.encoder_hidden_size,
                text.hidden_size
            );
        }
        let ops = FusedOps::for_device(vb.device())?;
        Ok(Self {
            vision_model: BlipVisionModel::new_with_ops(
                &cfg.vision_config,
                vb.pp("vision_model"),
                ops.clone(),
                projections,
            )?,
            text_encoder: BlipTextModel::new_with_projections(
                text,
                vb.pp("text_encoder"),
                projections,
            )?,
            text_decoder: BlipTextLMHeadModel::new_with_ops(
                text,
                vb.pp("text_decoder"),
                ops,
                projections,
            )?,
            config: cfg.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// Runs the vision tower on `image_size` pixels with its position embeddings interpolated
    /// (LAVIS evaluates VQA at 480 with the 384-px checkpoints); `config().vision_config.image_size`
    /// becomes `image_size`.
    pub fn interpolate_image_size(&mut self, image_size: usize) -> Result<()> {
        self.vision_model.interpolate_to(image_size)?;
        self.config.vision_config.image_size = image_size;
        Ok(())
    }

    pub fn config(&self) -> &BlipConfig {
        &self.config
    }

    /// Activation dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn text_decoder(&self) -> &BlipTextLMHeadModel {
        &self.text_decoder
    }

    /// `(B, 3, S, S)` pixels -> image embeds `(B, 1 + (S/p)^2, D_v)`.
    pub fn image_embeds(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.vision_model.forward(pixel_values)
    }

    /// Question states `(B, T, D)` for question ids `(B, T)` (u32, `[CLS] question [SEP]` then
    /// padding) with `attention_mask` `(B, T)` (u32 1/0, `None` = no padding) and image embeds
    /// `(B, N, D_v)`: HF `text_encoder(input_ids, attention_mask, encoder_hidden_states)`.
    pub fn encode_question(
        &self,
        image_embeds: &Tensor,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let image_kv = self.text_encoder.image_kv(image_embeds)?;
        self.text_encoder
            .forward(input_ids, attention_mask, Some(&image_kv))
    }

    /// The answer decoder's context for a batch: pixels `(B, 3, S, S)` and questions `(B, T)`
    /// -> the cross-attention keys/values of the question states (one group per question).
    pub fn question_kv(
        &self,
        pixel_values: &Tensor,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<CrossAttentionKv> {
        let image_embeds = self.image_embeds(pixel_values)?;
        let states = self.encode_question(&image_embeds, input_ids, attention_mask)?;
        self.text_decoder.image_kv(&states)
    }

    /// Teacher-forced answer logits `(B, L, V)` (f32) for `answer_ids` `(B, L)` (u32, starting
    /// with `[DEC]`) over the decoder context `question_kv`.
    pub fn answer_logits(
        &self,
        question_kv: &CrossAttentionKv,
        answer_ids: &Tensor,
    ) -> Result<Tensor> {
        let hidden = self
            .text_decoder
            .forward_hidden_uncached(answer_ids, question_kv)?;
        self.text_decoder.logits(&hidden)
    }
}

/// One candidate of LAVIS's `rank` answer mode.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedAnswer {
    /// Index into the answer list.
    pub index: usize,
    /// Softmax probability of the answer's first token after `[DEC]`.
    pub first_token_prob: f32,
    /// Minus the summed label-smoothed cross-entropy of the answer's tokens.
    pub score: f32,
}

/// Bytes of f32 candidate logits `(rows, tokens, vocab)` one teacher-forced pass of rank mode may
/// hold (questions are scored in groups under it; the log-softmax needs as much again).
const RANK_LOGIT_BYTES: usize = 256 << 20;

impl BlipForQuestionAnswering {
    /// LAVIS `blip_vqa._rank_answers` for ONE question: [`Self::rank_answers_batch`] with one
    /// group in `question_kv`.
    pub fn rank_answers(
        &self,
        question_kv: &CrossAttentionKv,
        answers: &[Vec<u32>],
        k: usize,
        label_smoothing: f64,
    ) -> Result<Vec<RankedAnswer>> {
        if question_kv.images()? != 1 {
            candle_core::bail!("rank_answers takes one question; use rank_answers_batch");
        }
        let mut ranked = self.rank_answers_batch(question_kv, answers, k, label_smoothing)?;
        Ok(ranked.pop().unwrap_or_default())
    }

    /// LAVIS `blip_vqa._rank_answers` for a batch of questions (`question_kv`: one group per
    /// question; a padded batch carries its question mask, [`CrossAttentionKv::with_key_mask`],
    /// as LAVIS passes `encoder_attention_mask` here): one decoder step from `[DEC]` for all
    /// questions, per question the softmax probability of every answer's first token
    /// (`answers[i][1]`; each answer is `[DEC] tokens... [SEP]`) and the `k` most probable (ties:
    /// the lower index first), then every question's candidates teacher-forced together (the
    /// question's keys/values shared by its `k` rows, never repeated) and scored by minus the
    /// summed cross-entropy with label smoothing `label_smoothing` (LAVIS 0.1, `med.py`), padding
    /// ignored. Returns per question the candidates in top-k order; the best is the one of
    /// highest score.
    pub fn rank_answers_batch(
        &self,
        question_kv: &CrossAttentionKv,
        answers: &[Vec<u32>],
        k: usize,
        label_smoothing: f64,
    ) -> Result<Vec<Vec<RankedAnswer>>> {
        if answers.iter().any(|a| a.len() < 2) {
            candle_core::bail!("every answer needs [DEC] and at least one token");
        }
        let questions = question_kv.images()?;
        let k = k.min(answers.len());
        if questions == 0 || k == 0 {
            return Ok(vec![Vec::new(); questions]);
        }
        let bos = self.config.text_config.bos_token_id;
        let start = Tensor::from_vec(vec![bos; questions], (questions, 1), &self.device)?;
        let first = self.answer_logits(question_kv, &start)?.squeeze(1)?;
        let probs = candle_nn::ops::softmax_last_dim(&first)?.to_vec2::<f32>()?;
        let orders: Vec<Vec<(usize, f32)>> = probs
            .iter()
            .map(|probs| {
                let mut order: Vec<(usize, f32)> = answers
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (i, probs.get(a[1] as usize).copied().unwrap_or(0.0)))
                    .collect();
                order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                order.truncate(k);
                order
            })
            .collect();

        let longest = answers.iter().map(Vec::len).max().unwrap_or(2);
        let vocab = self.config.text_config.vocab_size.max(1);
        let per_question = k * longest * vocab * std::mem::size_of::<f32>();
        let group = (RANK_LOGIT_BYTES / per_question.max(1)).clamp(1, questions);
        let mut out = Vec::with_capacity(questions);
        for first_question in (0..questions).step_by(group) {
            let members: Vec<u32> = (first_question..questions.min(first_question + group))
                .map(|q| q as u32)
                .collect();
            let context = if members.len() == questions {
                question_kv.clone()
            } else {
                let indices = Tensor::new(members.as_slice(), &self.device)?;
                question_kv.select_images(&indices)?
            };
            let group_orders = &orders[first_question..first_question + members.len()];
            let scores = self.score_candidates(&context, answers, group_orders, label_smoothing)?;
            for (order, scores) in group_orders.iter().zip(scores.chunks(k)) {
                out.push(
                    order
                        .iter()
                        .zip(scores)
                        .map(|(&(index, first_token_prob), &score)| RankedAnswer {
                            index,
                            first_token_prob,
                            score,
                        })
                        .collect(),
                );
            }
        }
        Ok(out)
    }

    /// Minus the label-smoothed summed cross-entropy of each question's candidates (`orders`,
    /// `k` per question, rows in that order) over `context` (one group per question).
    fn score_candidates(
        &self,
        context: &CrossAttentionKv,
        answers: &[Vec<u32>],
        orders: &[Vec<(usize, f32)>],
        label_smoothing: f64,
    ) -> Result<Vec<f32>> {
        let pad = self.config.text_config.pad_token_id;
        let longest = orders
            .iter()
            .flatten()
            .map(|&(i, _)| answers[i].len())
            .max()
            .unwrap_or(0);
        let rows = orders.iter().map(Vec::len).sum::<usize>();
        let mut ids = Vec::with_capacity(rows * longest);
        for &(i, _) in orders.iter().flatten() {
            ids.extend(answers[i].iter().copied());
            ids.extend(std::iter::repeat_n(pad, longest - answers[i].len()));
        }
        let ids = Tensor::from_vec(ids, (rows, longest), &self.device)?;
        // Right padding needs no mask in the causal decoder; the pads' targets are ignored below.
        let logits = self.answer_logits(context, &ids)?;
        let log_probs = candle_nn::ops::log_softmax(
            &logits.narrow(1, 0, longest - 1)?,
            candle_core::D::Minus1,
        )?;
        let targets = ids.narrow(1, 1, longest - 1)?.contiguous()?;
        let nll = log_probs
            .gather(&targets.unsqueeze(2)?, 2)?
            .squeeze(2)?
            .neg()?;
        let smooth = log_probs.mean(2)?.neg()?;
        let per_token = ((nll * (1.0 - label_smoothing))? + (smooth * label_smoothing)?)?;
        let keep = targets.ne(pad)?.to_dtype(per_token.dtype())?;
        (per_token * keep)?.sum(1)?.neg()?.to_vec1::<f32>()
    }
}

impl Decoder for BlipForQuestionAnswering {
    type Context = CrossAttentionKv;

    fn vocab_size(&self) -> usize {
        self.config.text_config.vocab_size
    }

    fn max_positions(&self) -> usize {
        self.config.text_config.max_position_embeddings
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn fused_ops(&self) -> &FusedOps {
        self.text_decoder.fused_ops()
    }

    fn new_cache(&self, rows: usize, capacity: usize) -> Result<KvCache> {
        let t = &self.config.text_config;
        let shape = KvCacheShape {
            num_layers: self.text_decoder.num_layers(),
            rows,
            num_heads: t.num_attention_heads,
            capacity,
            head_dim: t.head_dim(),
        };
        KvCache::new(shape, self.dtype, &self.device)
    }

    fn context_groups(&self, context: &CrossAttentionKv) -> Result<usize> {
        context.images()
    }

    fn select_groups(&self, context: &CrossAttentionKv, indices: &Tensor) -> Result<Self::Context> {
        context.select_images(indices)
    }

    fn context_dims(&self, context: &CrossAttentionKv) -> Vec<usize> {
        context.dims()
    }

    fn copy_context(&self, dst: &CrossAttentionKv, src: &CrossAttentionKv) -> Result<()> {
        dst.copy_from(src)
    }

    fn next_token_logits(
        &self,
        input_ids: &Tensor,
        context: &CrossAttentionKv,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        last_position_logits(&self.text_decoder, input_ids, context, cache)
    }
}
