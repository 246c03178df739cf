//! BLIP text encoder (HF `BlipTextModel` with `add_pooling_layer=False`, run with
//! `is_decoder=False`): the BERT of `text_encoder.*` in `BlipForQuestionAnswering` and
//! `BlipForImageTextRetrieval`. Same weights and blocks as the captioning decoder's `bert`, but
//! the self-attention is bidirectional with a padding mask over the keys, and the image
//! cross-attention is optional (HF skips it when no `encoder_hidden_states` are given: the
//! text-only pass of ITC).
//!
//! Runs once per input, so it uses the composed candle ops only (no cache, no fused kernels).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::config::BlipTextConfig;
use super::text::{BlipTextEmbeddings, BlipTextFeedForward};
use super::text_attention::{BlipTextCrossAttention, BlipTextSelfOutput, CrossAttentionKv};
use crate::kernels::fused::FusedOps;
use crate::models::linear::Linear;
use crate::models::norm::softmax_last_dim;
use crate::models::projections::ProjectionLoader;

/// `encoder.layer.N.attention`: bidirectional multi-head self-attention, HF
/// `self.{query,key,value}` stacked at load into one `(3D, D)` matmul.
#[derive(Debug, Clone)]
pub struct BlipTextBidirectionalAttention {
    /// `self.query|key|value` stacked: `(3D, D)`; query rows pre-scaled by `1/sqrt(head_dim)`.
    qkv: Linear,
    output: BlipTextSelfOutput,
    num_heads: usize,
    head_dim: usize,
}

impl BlipTextBidirectionalAttention {
    pub fn new(
        cfg: &BlipTextConfig,
        vb: VarBuilder,
        projections: &mut ProjectionLoader,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        let head_dim = cfg.head_dim();
        let qkv = projections.load(&vb.pp("self"), "qkv", (3 * d, d), |sv| {
            let query =
                Linear::load(d, d, sv.pp("query"))?.scaled(1.0 / (head_dim as f64).sqrt())?;
            let key = Linear::load(d, d, sv.pp("key"))?;
            let value = Linear::load(d, d, sv.pp("value"))?;
            Linear::concat_outputs(&[query, key, value])
        })?;
        Ok(Self {
            qkv,
            output: BlipTextSelfOutput::new(cfg, vb.pp("output"), projections)?,
            num_heads: cfg.num_attention_heads,
            head_dim,
        })
    }

    /// `(B, T, D) -> (B, T, D)`; `key_bias` `(B, 1, 1, T)` is added to the scores (0 for a real
    /// token, a large negative number for padding), so no query attends to padding; padded
    /// queries are computed all the same (HF keeps their states).
    pub fn forward(
        &self,
        xs: &Tensor,
        key_bias: Option<&Tensor>,
        ops: &FusedOps,
    ) -> Result<Tensor> {
        let (b, t, d) = xs.dims3()?;
        let qkv = self
            .qkv
            .forward(xs)?
            .reshape((b, t, 3, self.num_heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let scores = q.matmul(&k.t()?)?;
        let scores = match key_bias {
            Some(bias) => scores.broadcast_add(&bias.to_dtype(scores.dtype())?)?,
            None => scores,
        };
        let context = softmax_last_dim(&scores)?
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, t, d))?;
        self.output.forward(&context, xs, ops)
    }
}

/// `encoder.layer.N`: bidirectional self-attention, cross-attention to the image, feed-forward.
#[derive(Debug, Clone)]
pub struct BlipTextEncoderLayer {
    attention: BlipTextBidirectionalAttention,
    crossattention: BlipTextCrossAttention,
    feed_forward: BlipTextFeedForward,
}

impl BlipTextEncoderLayer {
    pub fn new(
        cfg: &BlipTextConfig,
        layer_idx: usize,
        vb: VarBuilder,
        projections: &mut ProjectionLoader,
    ) -> Result<Self> {
        Ok(Self {
            attention: BlipTextBidirectionalAttention::new(cfg, vb.pp("attention"), projections)?,
            crossattention: BlipTextCrossAttention::new(
                cfg,
                layer_idx,
                vb.pp("crossattention"),
                projections,
            )?,
            feed_forward: BlipTextFeedForward::new(cfg, &vb, projections)?,
        })
    }
}

/// `text_encoder`: `embeddings` and `encoder.layer.*` (no pooler).
#[derive(Debug, Clone)]
pub struct BlipTextModel {
    embeddings: BlipTextEmbeddings,
    layers: Vec<BlipTextEncoderLayer>,
    ops: FusedOps,
}

impl BlipTextModel {
    /// Builds the encoder from `vb` (the `text_encoder` prefix), dense projections.
    pub fn new(cfg: &BlipTextConfig, vb: VarBuilder) -> Result<Self> {
        Self::new_with_projections(cfg, vb, &mut ProjectionLoader::dense())
    }

    /// [`BlipTextModel::new`] with the projections built by `projections` (dense or quantized).
    pub fn new_with_projections(
        cfg: &BlipTextConfig,
        vb: VarBuilder,
        projections: &mut ProjectionLoader,
    ) -> Result<Self> {
        let embeddings = BlipTextEmbeddings::new(cfg, vb.pp("embeddings"))?;
        let layers_vb = vb.pp("encoder").pp("layer");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BlipTextEncoderLayer::new(cfg, i, layers_vb.pp(i), projections))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            layers,
            ops: FusedOps::disabled(),
        })
    }

    /// Cross-attention keys/values of every layer for image embeds `(B, N, D_v)`.
    pub fn image_kv(&self, image_embeds: &Tensor) -> Result<CrossAttentionKv> {
        let layers = self
            .layers
            .iter()
            .map(|layer| layer.crossattention.image_kv(image_embeds))
            .collect::<Result<Vec<_>>>()?;
        CrossAttentionKv::from_layers(&layers)
    }

    /// Last hidden states `(B, T, D)` for `input_ids` `(B, T)` (u32) with `attention_mask`
    /// `(B, T)` (u32, 1 = token, 0 = padding; `None` = no padding), cross-attending to `image`
    /// (one group per row) when given, as HF `text_encoder(input_ids, attention_mask,
    /// encoder_hidden_states=image_embeds)`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        image: Option<&CrossAttentionKv>,
    ) -> Result<Tensor> {
        let key_bias = attention_mask.map(padding_bias).transpose()?;
        let mut xs = self.embeddings.forward(input_ids, 0, &self.ops)?;
        for layer in &self.layers {
            xs = layer.attention.forward(&xs, key_bias.as_ref(), &self.ops)?;
            if let Some(image) = image {
                xs = layer.crossattention.forward(&xs, image, &self.ops)?;
            }
            xs = layer.feed_forward.forward(&xs, &self.ops)?;
        }
        Ok(xs)
    }
}

/// `(B, T)` 1/0 mask -> additive key bias `(B, 1, 1, T)` in f32: 0 for tokens and f32::MIN for
/// padding (transformers' `finfo.min`).
fn padding_bias(mask: &Tensor) -> Result<Tensor> {
    let (b, t) = mask.dims2()?;
    let keep = mask.to_dtype(candle_core::DType::F32)?;
    // (1 - keep) * MIN
    let bias = keep.affine(-(f32::MIN as f64), f32::MIN as f64)?;
    bias.reshape((b, 1, 1, t))
}
