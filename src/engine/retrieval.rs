//! LAVIS's retrieval evaluation over a [`Matcher`]: the images' embeds (kept on the device for ITM)
//! and ITC embeddings, the texts' ids and ITC embeddings, then the similarity matrix and the ITM
//! re-ranking of both directions (`metrics::retrieval::rerank`).
//!
//! ITM input: the text ids with `[ENC]` first (LAVIS, `ItmFirstToken::Enc`) or `[CLS]` as
//! transformers' processor leaves them; ITC always reads `[CLS]` first. Texts are truncated to
//! `max_text_tokens` (LAVIS 35). ITM rows go through the model `itm_batch` at a time; an image's
//! candidate texts share its cross-attention keys and values (LAVIS repeats the image per text).

use candle_core::Tensor;

use super::matcher::Matcher;
use crate::error::Error;
use crate::metrics::retrieval::{rerank, transpose};

/// The first token of the ITM input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItmFirstToken {
    /// `[ENC]` (LAVIS).
    Enc,
    /// `[CLS]` (transformers' `BlipForImageTextRetrieval` with its processor).
    Cls,
}

/// What a retrieval evaluation computes.
#[derive(Debug, Clone)]
pub struct RetrievalScores {
    /// ITC similarity, images x texts.
    pub itc: Vec<Vec<f32>>,
    /// Re-ranked image -> text scores, images x texts (-100 outside each row's top k).
    pub i2t: Vec<Vec<f32>>,
    /// Re-ranked text -> image scores, texts x images.
    pub t2i: Vec<Vec<f32>>,
    /// ITM rows computed (image-text pairs through the cross-encoder).
    pub itm_pairs: usize,
}

/// The images and texts of one evaluation, embedded.
pub struct RetrievalIndex {
    image_embeds: Vec<Tensor>,
    image_features: Vec<Vec<f32>>,
    /// ITC ids (`[CLS]` first), truncated.
    text_ids: Vec<Vec<u32>>,
    text_features: Vec<Vec<f32>>,
}

impl Default for RetrievalIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl RetrievalIndex {
    pub fn new() -> Self {
        Self {
            image_embeds: Vec::new(),
            image_features: Vec::new(),
            text_ids: Vec::new(),
            text_features: Vec::new(),
        }
    }

    pub fn images(&self) -> usize {
        self.image_features.len()
    }

    pub fn texts(&self) -> usize {
        self.text_features.len()
    }

    /// Embeds one batch of images (CHW f32 each), appended in order.
    pub fn add_images(&mut self, matcher: &Matcher, pixels: &[Vec<f32>]) -> Result<(), Error> {
        if pixels.is_empty() {
            return Ok(());
        }
        let (embeds, features) = matcher.embed_images(pixels)?;
        self.image_embeds.push(embeds);
        self.image_features.extend(features);
        Ok(())
    }

    /// Embeds one batch of tokenized texts (`[CLS]` first), appended in order.
    pub fn add_texts(&mut self, matcher: &Matcher, ids: Vec<Vec<u32>>) -> Result<(), Error> {
        let features = matcher.embed_texts(&ids)?;
        self.text_ids.extend(ids);
        self.text_features.extend(features);
        Ok(())
    }

    /// The ITC similarity matrix, images x texts.
    pub fn similarity(&self) -> Vec<Vec<f32>> {
        self.image_features
            .iter()
            .map(|image| {
                self.text_features
                    .iter()
                    .map(|text| image.iter().zip(text).map(|(a, b)| a * b).sum())
                    .collect()
            })
            .collect()
    }

    /// The similarity matrix and LAVIS's re-ranking of both directions with the top `k_test`.
    /// `progress(done, total)` is called after every re-ranked row (images, then texts).
    pub fn scores(
        &self,
        matcher: &Matcher,
        k_test: usize,
        first: ItmFirstToken,
        itm_batch: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<RetrievalScores, Error> {
        let internal = |e: candle_core::Error| Error::Internal(format!("retrieval: {e}"));
        let all_images = Tensor::cat(&self.image_embeds, 0).map_err(internal)?;
        let itm_ids: Vec<Vec<u32>> = match first {
            ItmFirstToken::Cls => self.text_ids.clone(),
            ItmFirstToken::Enc => {
                let enc = matcher.enc_id()?;
                self.text_ids
                    .iter()
                    .map(|ids| {
                        let mut ids = ids.clone();
                        if let Some(f) = ids.first_mut() {
                            *f = enc;
                        }
                        ids
                    })
                    .collect()
            }
        };
        let itc = self.similarity();
        let total = self.images() + self.texts();
        let batch = itm_batch.max(1);
        let mut done = 0usize;
        let mut pairs = 0usize;
        let i2t = rerank(&itc, k_test, |image, texts| {
            let mut logits = Vec::with_capacity(texts.len());
            for chunk in texts.chunks(batch) {
                // One image for all the rows: the cross-attention groups the rows over it, so
                // its keys and values are computed once, not once per candidate text.
                let rows = all_images.narrow(0, image, 1).map_err(internal)?;
                let ids: Vec<Vec<u32>> = chunk.iter().map(|&t| itm_ids[t].clone()).collect();
                logits.extend(matcher.match_logits(&rows, &ids)?);
            }
            pairs += texts.len();
            done += 1;
            progress(done, total);
            Ok::<_, Error>(logits)
        })?;
        let device = all_images.device().clone();
        let t2i = rerank(&transpose(&itc), k_test, |text, images| {
            let mut logits = Vec::with_capacity(images.len());
            for chunk in images.chunks(batch) {
                let index: Vec<u32> = chunk.iter().map(|&i| i as u32).collect();
                let index = Tensor::new(index.as_slice(), &device).map_err(internal)?;
                let rows = all_images.index_select(&index, 0).map_err(internal)?;
                let ids = vec![itm_ids[text].clone(); chunk.len()];
                logits.extend(matcher.match_logits(&rows, &ids)?);
            }
            pairs += images.len();
            done += 1;
            progress(done, total);
            Ok::<_, Error>(logits)
        })?;
        Ok(RetrievalScores {
            itc,
            i2t,
            t2i,
            itm_pairs: pairs,
        })
    }
}
