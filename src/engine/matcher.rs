//! The image-text matching engine of `vlmrun match`: a `BlipForImageTextRetrieval` from
//! `model.source` (checked by `config.json`'s `architectures`), its tokenizer and the image
//! processor, bound to one device and dtype.

use candle_core::Tensor;

use super::answerer::{padded_questions, wrong_architecture};
use super::assemble::resolve;
use super::settings::{image_processor, log_quantization, projection_loader};
use crate::config::Config;
use crate::device::ActiveDevice;
use crate::error::Error;
use crate::models::blip::itm::image_text_hidden_size;
use crate::models::blip::weights::classify_build_error;
use crate::models::blip::{BlipForImageTextRetrieval, BlipWeights};
use crate::models::registry::{architecture, Architecture};
use crate::preprocess::prompt::PromptTokenizer;
use crate::preprocess::upload::BatchUploader;
use crate::preprocess::ImageProcessor;

/// `[ENC]`: LAVIS's first token of an ITM text.
const ENC_TOKEN: &str = "[ENC]";

/// The scores of one (image, text) pair.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchScore {
    /// p(match): softmax of the ITM logits, index 1.
    pub itm_score: f32,
    /// The ITM "match" logit (what LAVIS's retrieval re-ranking adds to the ITC similarity).
    pub itm_logit: f32,
    /// Cosine similarity of the ITC image and text embeddings.
    pub itc_score: f32,
}

pub struct Matcher {
    model: BlipForImageTextRetrieval,
    tokenizer: PromptTokenizer,
    processor: ImageProcessor,
    uploader: BatchUploader,
    active: ActiveDevice,
}

impl Matcher {
    /// Resolves `model.source`, checks that it is a matching checkpoint and loads it (dense).
    pub fn load(config: &Config, active: &ActiveDevice) -> Result<Matcher, Error> {
        let resolved = resolve(config)?;
        let dir = resolved.files.weights;
        let source = &config.model.source;
        let model_error = |e: String| Error::Model(e);
        let weights = BlipWeights::locate(&dir).map_err(|e| model_error(format!("{e:#}")))?;
        let text = weights
            .config_text()
            .map_err(|e| model_error(format!("{e:#}")))?;
        let found =
            architecture(&text).map_err(|e| model_error(format!("{}: {e}", dir.display())))?;
        if found != Architecture::ImageTextRetrieval {
            return Err(wrong_architecture(
                source,
                found,
                Architecture::ImageTextRetrieval,
            ));
        }
        let embed = image_text_hidden_size(&text).map_err(|e| model_error(e.to_string()))?;
        let vb = weights
            .var_builder(active.precision.dtype, &active.device)
            .map_err(|e| model_error(format!("{e:#}")))?;
        let mut projections = projection_loader(config, &vb);
        let model = BlipForImageTextRetrieval::new_with_projections(
            &weights.config,
            embed,
            vb,
            &mut projections,
        )
        .map_err(|e| model_error(format!("{:#}", classify_build_error(e, &dir))))?;
        log_quantization(config, "matching", &projections);
        let processor = image_processor(config, weights.config.vision_config.image_size);
        Ok(Matcher {
            model,
            tokenizer: resolved.tokenizer,
            processor,
            uploader: BatchUploader::new(),
            active: active.clone(),
        })
    }

    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    /// `[CLS] text [SEP]` (transformers), checked against the encoder's positions.
    pub fn text_ids(&self, text: &str) -> Result<Vec<u32>, Error> {
        let ids = self.tokenizer.text_ids(text).map_err(Error::usage)?;
        let max = self.model.config().text_config.max_position_embeddings;
        if ids.len() > max {
            return Err(Error::Usage(format!(
                "the text is {} tokens but the model takes at most {max} (max_position_embeddings)\n  fix: shorten the text",
                ids.len()
            )));
        }
        Ok(ids)
    }

    /// The ids with LAVIS's `[ENC]` in place of `[CLS]` (its ITM input).
    pub fn with_enc_first(&self, ids: &[u32]) -> Result<Vec<u32>, Error> {
        let enc = self.tokenizer.token_id(ENC_TOKEN).ok_or_else(|| {
            Error::Model("the tokenizer has no [ENC] token (BLIP adds it as id 30523)".to_string())
        })?;
        let mut ids = ids.to_vec();
        if let Some(first) = ids.first_mut() {
            *first = enc;
        }
        Ok(ids)
    }

    /// Scores `text_ids` (ITC, `[CLS]` first) and `itm_ids` (ITM) against every image of
    /// `pixels` (CHW f32 each).
    pub fn score_pixels(
        &self,
        pixels: &[Vec<f32>],
        itc_ids: &[u32],
        itm_ids: &[u32],
    ) -> Result<Vec<MatchScore>, Error> {
        if pixels.is_empty() {
            return Ok(Vec::new());
        }
        let internal = |e: candle_core::Error| Error::Internal(format!("matching: {e}"));
        let device = &self.active.device;
        let batch = self
            .uploader
            .upload(pixels, self.processor.size, device, self.model.dtype())
            .map_err(internal)?;
        let n = pixels.len();
        let rows = |ids: &[u32]| -> candle_core::Result<Tensor> {
            Tensor::new(ids, device)?.unsqueeze(0)?.repeat((n, 1))
        };
        let image_embeds = self.model.image_embeds(&batch).map_err(internal)?;
        let logits = self
            .model
            .itm_logits(&image_embeds, &rows(itm_ids).map_err(internal)?, None)
            .map_err(internal)?;
        let probs = BlipForImageTextRetrieval::itm_probability(&logits)
            .and_then(|p| p.to_vec1::<f32>())
            .map_err(internal)?;
        let logits = logits.to_vec2::<f32>().map_err(internal)?;
        let image = self.model.image_feature(&image_embeds).map_err(internal)?;
        let text = self
            .model
            .text_feature(&rows(itc_ids).map_err(internal)?, None)
            .map_err(internal)?;
        let itc = (image * text)
            .and_then(|x| x.sum(1))
            .and_then(|x| x.to_vec1::<f32>())
            .map_err(internal)?;
        Ok(probs
            .into_iter()
            .zip(logits)
            .zip(itc)
            .map(|((itm_score, l), itc_score)| MatchScore {
                itm_score,
                itm_logit: l.get(1).copied().unwrap_or(f32::NAN),
                itc_score,
            })
            .collect())
    }

    /// The id of `[ENC]` (LAVIS's first ITM token).
    pub fn enc_id(&self) -> Result<u32, Error> {
        self.with_enc_first(&[0]).map(|ids| ids[0])
    }

    /// The text encoder's positions (`max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.model.config().text_config.max_position_embeddings
    }

    /// `[CLS] text [SEP]` truncated to `max_tokens` ids with the `[SEP]` kept, as LAVIS's
    /// retrieval evaluation tokenizes (`truncation=True, max_length=35`).
    pub fn truncated_text_ids(&self, text: &str, max_tokens: usize) -> Result<Vec<u32>, Error> {
        let mut ids = self.tokenizer.text_ids(text).map_err(Error::input)?;
        if ids.len() > max_tokens && max_tokens >= 2 {
            let sep = self.model.config().text_config.sep_token_id;
            ids.truncate(max_tokens - 1);
            ids.push(sep);
        }
        Ok(ids)
    }

    /// Image embeds `(B, N, D_v)` (kept on the device, for ITM) and the normalised ITC image
    /// embeddings, one row per image, of `pixels` (CHW f32 each).
    pub fn embed_images(&self, pixels: &[Vec<f32>]) -> Result<(Tensor, Vec<Vec<f32>>), Error> {
        let internal = |e: candle_core::Error| Error::Internal(format!("image embeddings: {e}"));
        let batch = self
            .uploader
            .upload(
                pixels,
                self.processor.size,
                &self.active.device,
                self.model.dtype(),
            )
            .map_err(internal)?;
        let embeds = self.model.image_embeds(&batch).map_err(internal)?;
        let features = self
            .model
            .image_feature(&embeds)
            .and_then(|f| f.to_vec2::<f32>())
            .map_err(internal)?;
        Ok((embeds, features))
    }

    /// The normalised ITC text embeddings of `texts` (ids with `[CLS]` first), one row each;
    /// padded to the longest, the padding masked.
    pub fn embed_texts(&self, texts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, Error> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let internal = |e: candle_core::Error| Error::Internal(format!("text embeddings: {e}"));
        let pad = self.model.config().text_config.pad_token_id;
        let (ids, mask) = padded_questions(texts, pad, &self.active.device).map_err(internal)?;
        self.model
            .text_feature(&ids, mask.as_ref())
            .and_then(|f| f.to_vec2::<f32>())
            .map_err(internal)
    }

    /// The ITM match logit (index 1) of row i of `image_embeds` `(R, N, D_v)` with `texts[i]`
    /// (padded to the longest, the padding masked, as LAVIS passes its attention mask); with one
    /// image `(1, N, D_v)`, every text against it (its keys and values computed once).
    pub fn match_logits(
        &self,
        image_embeds: &Tensor,
        texts: &[Vec<u32>],
    ) -> Result<Vec<f32>, Error> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let internal = |e: candle_core::Error| Error::Internal(format!("ITM: {e}"));
        let pad = self.model.config().text_config.pad_token_id;
        let (ids, mask) = padded_questions(texts, pad, &self.active.device).map_err(internal)?;
        self.model
            .itm_logits(image_embeds, &ids, mask.as_ref())
            .and_then(|l| l.narrow(1, 1, 1))
            .and_then(|l| l.flatten_all())
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(internal)
    }
}
