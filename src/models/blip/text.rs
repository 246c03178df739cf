//! BLIP text decoder (`text_decoder.*`, HF `BlipTextLMHeadModel`): BERT embeddings, post-LN
//! layers with causal self-attention and image cross-attention, and the tied LM head.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::config::{Activation, BlipTextConfig};
use super::text_attention::{
    residual_norm_params, BlipTextCrossAttention, BlipTextSelfAttention, CrossAttentionKv,
};
use super::vision::dense_activation;
use crate::kernels::fused::FusedOps;
use crate::models::kv_cache::KvCache;
use crate::models::linear::{Epilogue, Linear};
use crate::models::norm::{layer_norm, LayerNorm};
use crate::models::projections::ProjectionLoader;

/// `bert.embeddings`: word + absolute position embeddings, then LayerNorm (no token types).
#[derive(Debug, Clone)]
pub struct BlipTextEmbeddings {
    /// `word_embeddings.weight`: `(V, D)`.
    pub(super) word_embeddings: Embedding,
    /// `position_embeddings.weight`: `(P, D)`.
    pub(super) position_embeddings: Tensor,
    /// HF `LayerNorm`.
    pub(super) layer_norm: LayerNorm,
    /// `[position_embeddings; LayerNorm.weight; LayerNorm.bias]` `(P + 2, D)` for the fused kernel.
    pub(super) fused_table: Tensor,
    pub(super) eps: f64,
}

impl BlipTextEmbeddings {
    pub fn new(cfg: &BlipTextConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let word = vb
            .pp("word_embeddings")
            .get((cfg.vocab_size, d), "weight")?;
        let position_embeddings = vb
            .pp("position_embeddings")
            .get((cfg.max_position_embeddings, d), "weight")?;
        let layer_norm = layer_norm(d, cfg.layer_norm_eps, vb.pp("LayerNorm"))?;
        let fused_table = Tensor::cat(
            &[
                &position_embeddings,
                &layer_norm.weight().unsqueeze(0)?,
                &layer_norm.bias().unsqueeze(0)?,
            ],
            0,
        )?;
        Ok(Self {
            word_embeddings: Embedding::new(word, d),
            position_embeddings,
            layer_norm,
            fused_table,
            eps: cfg.layer_norm_eps,
        })
    }

    /// The word embedding matrix `(V, D)` (the LM head decoder weight when tied).
    pub fn word_embedding_weight(&self) -> &Tensor {
        self.word_embeddings.embeddings()
    }

    /// Token ids `(R, T)` (u32) at positions `past..past+T` -> `(R, T, D)`.
    pub fn forward(&self, input_ids: &Tensor, past: usize, ops: &FusedOps) -> Result<Tensor> {
        let t = input_ids.dim(1)?;
        let max_positions = self.position_embeddings.dim(0)?;
        if past + t > max_positions {
            candle_core::bail!(
                "text positions {}..{} exceed max_position_embeddings {max_positions}",
                past,
                past + t
            );
        }
        if ops.enabled() {
            let word = self.word_embeddings.embeddings();
            return ops.embed_layer_norm(input_ids, word, &self.fused_table, past, self.eps);
        }
        let words = self.word_embeddings.forward(input_ids)?;
        let positions = self.position_embeddings.narrow(0, past, t)?;
        self.layer_norm.forward(&words.broadcast_add(&positions)?)
    }
}

/// `intermediate` + `output` of a decoder layer: dense -> activation -> dense, residual, LayerNorm.
#[derive(Debug, Clone)]
pub struct BlipTextFeedForward {
    /// `intermediate.dense`: `(I, D)`.
    pub(super) intermediate: Linear,
    /// `output.dense`: `(D, I)`.
    pub(super) output: Linear,
    /// `output.LayerNorm`.
    pub(super) output_norm: LayerNorm,
    pub(super) act: Activation,
    /// `[output.dense.bias; output.LayerNorm.weight; output.LayerNorm.bias]` for the fused kernel.
    pub(super) fused_params: Tensor,
    pub(super) eps: f64,
}

impl BlipTextFeedForward {
    pub fn new(
        cfg: &BlipTextConfig,
        vb: &VarBuilder,
        projections: &mut ProjectionLoader,
    ) -> Result<Self> {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        let intermediate = projections.linear(&vb.pp("intermediate"), "dense", d, i)?;
        let output = projections.linear(&vb.pp("output"), "dense", i, d)?;
        let output_norm = layer_norm(d, cfg.layer_norm_eps, vb.pp("output").pp("LayerNorm"))?;
        let fused_params = residual_norm_params(output.expect_bias("output.dense")?, &output_norm)?;
        Ok(Self {
            intermediate,
            output,
            output_norm,
            act: cfg.hidden_act,
            fused_params,
            eps: cfg.layer_norm_eps,
        })
    }

    /// `(R, T, D) -> (R, T, D)`.
    pub fn forward(&self, xs: &Tensor, ops: &FusedOps) -> Result<Tensor> {
        if ops.enabled() {
            let hidden = if self.act == Activation::GeluErf {
                self.intermediate
                    .forward_fused(xs, ops, Epilogue::BiasGelu)?
            } else {
                self.act.forward(&self.intermediate.forward(xs)?)?
            };
            let projected = self.output.forward_fused(&hidden, ops, Epilogue::None)?;
            return ops.bias_residual_layer_norm(&projected, xs, &self.fused_params, self.eps);
        }
        let hidden = dense_activation(&self.intermediate, self.act, xs, ops)?;
        self.output_norm
            .forward(&(self.output.forward(&hidden)? + xs)?)
    }
}

/// `bert.encoder.layer.N`.
#[derive(Debug, Clone)]
pub struct BlipTextLayer {
    pub(super) attention: BlipTextSelfAttention,
    pub(super) crossattention: BlipTextCrossAttention,
    pub(super) feed_forward: BlipTextFeedForward,
}

impl BlipTextLayer {
    pub fn new(
        cfg: &BlipTextConfig,
        layer_idx: usize,
        vb: VarBuilder,
        projections: &mut ProjectionLoader,
    ) -> Result<Self> {
        Ok(Self {
            attention: BlipTextSelfAttention::new(cfg, layer_idx, vb.pp("attention"), projections)?,
            crossattention: BlipTextCrossAttention::new(
                cfg,
                layer_idx,
                vb.pp("crossattention"),
                projections,
            )?,
            feed_forward: BlipTextFeedForward::new(cfg, &vb, projections)?,
        })
    }

    /// `(R, T, D) -> (R, T, D)`; without a `cache` the `T` tokens attend causally to each other
    /// only (teacher forcing, differentiable).
    pub fn forward(
        &self,
        xs: &Tensor,
        image_kv: &CrossAttentionKv,
        cache: Option<&mut KvCache>,
        ops: &FusedOps,
    ) -> Result<Tensor> {
        let xs = self.attention.forward(xs, cache, ops)?;
        let xs = self.crossattention.forward(&xs, image_kv, ops)?;
        self.feed_forward.forward(&xs, ops)
    }
}

/// `cls.predictions`: transform (dense, activation, LayerNorm) then the vocabulary projection,
/// whose weight is tied to the word embeddings and whose bias is `cls.predictions.bias`.
#[derive(Debug, Clone)]
pub struct BlipTextLMPredictionHead {
    /// `transform.dense`: `(D, D)`.
    pub(super) transform_dense: Linear,
    /// `transform.LayerNorm`.
    pub(super) transform_norm: LayerNorm,
    pub(super) act: Activation,
    /// `decoder.weight` (or the tied word embeddings) `(V, D)` with bias `(V,)`.
    pub(super) decoder: Linear,
    /// `[transform.LayerNorm.weight; bias]` for the fused kernel.
    pub(super) norm_params: Tensor,
    /// Whether `decoder`'s weight is the word embedding matrix (no `decoder.weight` in the file).
    pub(super) tied: bool,
    pub(super) eps: f64,
}

impl BlipTextLMPredictionHead {
    /// `word_embeddings` is used as the decoder weight unless `decoder.weight` is in the file.
    pub fn new(
        cfg: &BlipTextConfig,
        word_embeddings: &Tensor,
        vb: VarBuilder,
        projections: &mut ProjectionLoader,
    ) -> Result<Self> {
        let (d, v) = (cfg.hidden_size, cfg.vocab_size);
        let transform = vb.pp("transform");
        let tied = !vb.contains_tensor("decoder.weight");
        let weight = if !tied {
            vb.pp("decoder").get((v, d), "weight")?
        } else {
            word_embeddings.clone()
        };
        let bias = vb.get(v, "bias")?;
        let transform_dense = projections.linear(&transform, "dense", d, d)?;
        let transform_norm = layer_norm(d, cfg.layer_norm_eps, transform.pp("LayerNorm"))?;
        let norm_params = Tensor::stack(&[transform_norm.weight(), transform_norm.bias()], 0)?;
        Ok(Self {
            transform_dense,
            transform_norm,
            act: cfg.hidden_act,
            decoder: Linear::from_parts(weight, Some(bias)),
            norm_params,
            tied,
            eps: cfg.layer_norm_eps,
        })
    }

    /// `(..., D) -> (..., V)` logits in f32 (as `generate` reads them).
    pub fn forward(&self, xs: &Tensor, ops: &FusedOps) -> Result<Tensor> {
        let hidden = if self.act == Activation::GeluErf && ops.enabled() {
            self.transform_dense
                .forward_fused(xs, ops, Epilogue::BiasGelu)?
        } else {
            dense_activation(&self.transform_dense, self.act, xs, ops)?
        };
        let normed = if ops.enabled() {
            ops.layer_norm(&hidden, &self.norm_params, self.eps)?
        } else {
            self.transform_norm.forward(&hidden)?
        };
        self.decoder.forward_fused(&normed, ops, Epilogue::BiasF32)
    }
}

/// `text_decoder`: `bert.{embeddings, encoder.layer.*}` and `cls.predictions`.
#[derive(Debug, Clone)]
pub struct BlipTextLMHeadModel {
    pub(super) embeddings: BlipTextEmbeddings,
    pub(super) layers: Vec<BlipTextLayer>,
    pub(super) predictions: BlipTextLMPredictionHead,
    pub(super) ops: FusedOps,
}

impl BlipTextLMHeadModel {
    /// Builds the decoder (dense) with fused CUDA kernels when `vb`'s device is CUDA.
    pub fn new(cfg: &BlipTextConfig, vb: VarBuilder) -> Result<Self> {
        let ops = FusedOps::for_device(vb.device())?;
        Self::new_with_ops(cfg, vb, ops, &mut ProjectionLoader::dense())
    }

    /// Builds the decoder with an existing kernel handle, its projections from `projections`.
    pub fn new_with_ops(
        cfg: &BlipTextConfig,
        vb: VarBuilder,
        ops: FusedOps,
        projections: &mut ProjectionLoader,
    ) -> Result<Self> {
        let bert = vb.pp("bert");
        let embeddings = BlipTextEmbeddings::new(cfg, bert.pp("embeddings"))?;
        let layers_vb = bert.pp("encoder").pp("layer");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BlipTextLayer::new(cfg, i, layers_vb.pp(i), projections))
            .collect::<Result<Vec<_>>>()?;
        let predictions = BlipTextLMPredictionHead::new(
            cfg,
            embeddings.word_embedding_weight(),
            vb.pp("cls").pp("predictions"),
            projections,
        )?;
        Ok(Self {
            embeddings,
            layers,
            predictions,
            ops,
        })
    }

    /// The kernel handle the decoder uses.
    pub fn fused_ops(&self) -> &FusedOps {
        &self.ops
    }

    /// Replaces the kernel handle (e.g. [`FusedOps::disabled`] for the composed ops).
    pub fn set_ops(&mut self, ops: FusedOps) {
        self.ops = ops;
    }

    /// Number of decoder layers (the [`KvCache`] needs one slot per layer).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Cross-attention keys/values of every layer for image embeds `(B, N, D_v)`.
    pub fn image_kv(&self, image_embeds: &Tensor) -> Result<CrossAttentionKv> {
        if self.ops.enabled() {
            if let Some(first) = self.layers.first() {
                let (b, n, _) = image_embeds.dims3()?;
                let (heads, head_dim) = first.crossattention.head_shape();
                // Pad the image tokens to a multiple of 8 so that the attention GEMMs get aligned
                // leading dimensions; the softmax ignores the zero rows.
                let padded = n.next_multiple_of(8);
                let dims = (self.layers.len(), 2, b, heads, padded, head_dim);
                let all = Tensor::zeros(dims, image_embeds.dtype(), image_embeds.device())?;
                for (l, layer) in self.layers.iter().enumerate() {
                    layer
                        .crossattention
                        .image_kv_into(&all.get(l)?, image_embeds, &self.ops)?;
                }
                return Ok(CrossAttentionKv::from_tensor(all, n));
            }
        }
        let layers = self
            .layers
            .iter()
            .map(|layer| layer.crossattention.image_kv(image_embeds))
            .collect::<Result<Vec<_>>>()?;
        CrossAttentionKv::from_layers(&layers)
    }

    /// Runs `input_ids` `(R, T)` (u32, positions `cache.len()..`) through the decoder and returns
    /// the last hidden states `(R, T, D)`. `R` must be a multiple of the images in `image_kv`
    /// (consecutive rows share an image). Advances `cache` by `T`.
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        image_kv: &CrossAttentionKv,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let t = input_ids.dim(1)?;
        let mut xs = self.embeddings.forward(input_ids, cache.len(), &self.ops)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, image_kv, Some(&mut *cache), &self.ops)?;
        }
        cache.advance(t);
        Ok(xs)
    }

    /// Teacher-forced hidden states `(R, T, D)` for `input_ids` `(R, T)` at positions `0..T`,
    /// without a cache: every op keeps the autograd graph (the training forward pass).
    pub fn forward_hidden_uncached(
        &self,
        input_ids: &Tensor,
        image_kv: &CrossAttentionKv,
    ) -> Result<Tensor> {
        let mut xs = self.embeddings.forward(input_ids, 0, &self.ops)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, image_kv, None, &self.ops)?;
        }
        Ok(xs)
    }

    /// Hidden states `(..., D)` -> vocabulary logits `(..., V)`, f32.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.predictions.forward(hidden, &self.ops)
    }
}

impl BlipTextLMHeadModel {
    /// Calls `visit` with every layer's attention, cross-attention and feed-forward projection
    /// and the LM-head transform, by full name; the embeddings, LayerNorms and the decoder (tied
    /// to the word embeddings) are not projections in this sense (they stay in the activation
    /// dtype).
    pub fn for_each_projection(
        &mut self,
        visit: &mut dyn FnMut(&str, &mut Linear) -> Result<()>,
    ) -> Result<()> {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let name = format!("text_decoder.bert.encoder.layer.{i}");
            layer
                .attention
                .for_each_projection(&format!("{name}.attention"), visit)?;
            layer
                .crossattention
                .for_each_projection(&format!("{name}.crossattention"), visit)?;
            let ff = &mut layer.feed_forward;
            visit(&format!("{name}.intermediate.dense"), &mut ff.intermediate)?;
            visit(&format!("{name}.output.dense"), &mut ff.output)?;
        }
        visit(
            "text_decoder.cls.predictions.transform.dense",
            &mut self.predictions.transform_dense,
        )
    }
}
