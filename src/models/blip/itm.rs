//! BLIP image-text matching and retrieval (HF `BlipForImageTextRetrieval`,
//! `Salesforce/blip-itm-{base,large}-{coco,flickr}`): the ViT of `vision_model.*`, the text
//! encoder `text_encoder.*` (bidirectional BERT, cross-attention to the image for ITM, none for
//! ITC), `vision_proj` / `text_proj` (width -> `image_text_hidden_size`) and `itm_head` (D -> 2).
//!
//! - ITM (transformers `use_itm_head=True`): `itm_head(text_encoder(ids, mask, image)[:, 0])`, the
//!   two logits (no match, match); p(match) = softmax[1].
//! - ITC (`use_itm_head=False`): cosine similarity of `normalize(vision_proj(image[:, 0]))` and
//!   `normalize(text_proj(text_encoder(ids, mask)[:, 0]))` (raw; the temperature is for training).
//!
//! The text is tokenized `[CLS] text [SEP]` as the transformers processor does; LAVIS puts `[ENC]`
//! (30523) at position 0 for ITM, which the caller chooses by the ids it passes.

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::text_encoder::BlipTextModel;
use super::{BlipConfig, BlipVisionModel};
use crate::kernels::fused::FusedOps;
use crate::models::linear::Linear;
use crate::models::projections::ProjectionLoader;

/// `image_text_hidden_size` of config.json (transformers' default 256).
#[derive(Deserialize)]
struct RawRetrievalConfig {
    image_text_hidden_size: Option<usize>,
}

/// The width of the ITC embeddings in `config_json` (256 when absent).
pub fn image_text_hidden_size(config_json: &str) -> Result<usize> {
    let raw: RawRetrievalConfig =
        serde_json::from_str(config_json).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    Ok(raw.image_text_hidden_size.unwrap_or(256))
}

/// `vision_model` + `text_encoder` + `vision_proj` + `text_proj` + `itm_head`.
#[derive(Debug, Clone)]
pub struct BlipForImageTextRetrieval {
    vision_model: BlipVisionModel,
    text_encoder: BlipTextModel,
    /// `vision_proj`: `(E, D_v)`.
    vision_proj: Linear,
    /// `text_proj`: `(E, D)`.
    text_proj: Linear,
    /// `itm_head`: `(2, D)`.
    itm_head: Linear,
    config: BlipConfig,
    dtype: DType,
    device: Device,
}

impl BlipForImageTextRetrieval {
    /// Builds the model with dense weights from `vb` (root of the HF checkpoint); `embed_dim` is
    /// config.json's `image_text_hidden_size` ([`image_text_hidden_size`]).
    pub fn new(cfg: &BlipConfig, embed_dim: usize, vb: VarBuilder) -> Result<Self> {
        Self::new_with_projections(cfg, embed_dim, vb, &mut ProjectionLoader::dense())
    }

    /// [`BlipForImageTextRetrieval::new`] with the vision and text encoders' projections built
    /// by `projections` (quantized at load, or dense); the small heads (`vision_proj`,
    /// `text_proj`, `itm_head`) stay dense.
    pub fn new_with_projections(
        cfg: &BlipConfig,
        embed_dim: usize,
        vb: VarBuilder,
        projections: &mut ProjectionLoader,
    ) -> Result<Self> {
        let (dv, d) = (cfg.vision_config.hidden_size, cfg.text_config.hidden_size);
        Ok(Self {
            vision_model: BlipVisionModel::new_with_ops(
                &cfg.vision_config,
                vb.pp("vision_model"),
                FusedOps::for_device(vb.device())?,
                projections,
            )?,
            text_encoder: BlipTextModel::new_with_projections(
                &cfg.text_config,
                vb.pp("text_encoder"),
                projections,
            )?,
            vision_proj: Linear::load(dv, embed_dim, vb.pp("vision_proj"))?,
            text_proj: Linear::load(d, embed_dim, vb.pp("text_proj"))?,
            itm_head: Linear::load(d, 2, vb.pp("itm_head"))?,
            config: cfg.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &BlipConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `(B, 3, S, S)` pixels -> image embeds `(B, N, D_v)` (post-LayerNorm, class token first).
    pub fn image_embeds(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.vision_model.forward(pixel_values)
    }

    /// ITM logits `(B, 2)` (f32) of text `input_ids` `(B, T)` (mask `(B, T)` or `None`) against
    /// image embeds `(B, N, D_v)`, row i with image i.
    pub fn itm_logits(
        &self,
        image_embeds: &Tensor,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let image_kv = self.text_encoder.image_kv(image_embeds)?;
        let hidden = self
            .text_encoder
            .forward(input_ids, attention_mask, Some(&image_kv))?;
        let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        self.itm_head.forward(&cls)?.to_dtype(DType::F32)
    }

    /// p(match) `(B,)` from ITM logits `(B, 2)`.
    pub fn itm_probability(logits: &Tensor) -> Result<Tensor> {
        candle_nn::ops::softmax_last_dim(logits)?
            .narrow(1, 1, 1)?
            .squeeze(1)
    }

    /// L2-normalised ITC image embeddings `(B, E)` (f32) from image embeds `(B, N, D_v)`.
    pub fn image_feature(&self, image_embeds: &Tensor) -> Result<Tensor> {
        let cls = image_embeds.narrow(1, 0, 1)?.squeeze(1)?;
        normalize(&self.vision_proj.forward(&cls)?.to_dtype(DType::F32)?)
    }

    /// L2-normalised ITC text embeddings `(B, E)` (f32): the text encoder without the image.
    pub fn text_feature(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let hidden = self.text_encoder.forward(input_ids, attention_mask, None)?;
        let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        normalize(&self.text_proj.forward(&cls)?.to_dtype(DType::F32)?)
    }
}

/// `torch.nn.functional.normalize(x, dim=-1)`: `x / max(||x||, 1e-12)`.
fn normalize(xs: &Tensor) -> Result<Tensor> {
    let norm = xs
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    xs.broadcast_div(&norm)
}
