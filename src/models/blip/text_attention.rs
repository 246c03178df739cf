//! Attention blocks of the BLIP text decoder (`text_decoder.bert.encoder.layer.N.{attention,
//! crossattention}`): causal self-attention over a [`KvCache`], and cross-attention over image
//! keys/values computed once per image ([`CrossAttentionKv`]). One-token decode steps take the
//! fused CUDA kernels when [`FusedOps`] is enabled.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::config::BlipTextConfig;
use crate::kernels::fused::{FusedOps, SplitGeometry};
use crate::models::kv_cache::KvCache;
use crate::models::linear::{Epilogue, Linear};
use crate::models::norm::{layer_norm, softmax_last_dim, LayerNorm};
use crate::models::projections::ProjectionLoader;

/// `[bias; LayerNorm weight; LayerNorm bias]` `(3, d)`: the parameters of the fused
/// bias + residual + LayerNorm kernel.
pub(crate) fn residual_norm_params(bias: &Tensor, norm: &LayerNorm) -> Result<Tensor> {
    Tensor::stack(&[bias, norm.weight(), norm.bias()], 0)
}

/// `*.output`: dense projection, residual, post-LayerNorm (HF `BlipTextSelfOutput`).
#[derive(Debug, Clone)]
pub struct BlipTextSelfOutput {
    /// `dense`: `(D, D)`.
    pub(super) dense: Linear,
    /// HF `LayerNorm`.
    pub(super) layer_norm: LayerNorm,
    /// `[dense.bias; LayerNorm.weight; LayerNorm.bias]` for the fused kernel.
    pub(super) fused_params: Tensor,
    pub(super) eps: f64,
}

impl BlipTextSelfOutput {
    pub fn new(
        cfg: &BlipTextConfig,
        vb: VarBuilder,
        projections: &mut ProjectionLoader,
    ) -> Result<Self> {
        let dense = projections.linear(&vb, "dense", cfg.hidden_size, cfg.hidden_size)?;
        let layer_norm = layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("LayerNorm"))?;
        let fused_params = residual_norm_params(dense.expect_bias("dense")?, &layer_norm)?;
        Ok(Self {
            dense,
            layer_norm,
            fused_params,
            eps: cfg.layer_norm_eps,
        })
    }

    /// `LN(dense(context) + residual)`, `(R, T, D)`.
    pub fn forward(&self, context: &Tensor, residual: &Tensor, ops: &FusedOps) -> Result<Tensor> {
        if ops.enabled() {
            let projected = self.dense.forward_fused(context, ops, Epilogue::None)?;
            return ops.bias_residual_layer_norm(
                &projected,
                residual,
                &self.fused_params,
                self.eps,
            );
        }
        self.layer_norm
            .forward(&(self.dense.forward(context)? + residual)?)
    }
}

/// `(R, T, H*Dh)` -> `(R, H, T, Dh)` contiguous, for `n` stacked projections at once:
/// input `(R, T, n*H*Dh)`, output `(n, R, H, T, Dh)`.
fn split_heads(xs: &Tensor, n: usize, heads: usize, head_dim: usize) -> Result<Tensor> {
    let (r, t, _) = xs.dims3()?;
    xs.reshape((r, t, n, heads, head_dim))?
        .permute((2, 0, 3, 1, 4))?
        .contiguous()
}

/// Causal additive mask `(t, past + t)` in `dtype`: 0 where a query may attend, -inf elsewhere.
fn causal_mask(past: usize, t: usize, like: &Tensor) -> Result<Tensor> {
    let total = past + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j <= past + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (t, total), like.device())?.to_dtype(like.dtype())
}

/// `attention` of a decoder layer: causal multi-head self-attention with separate HF
/// `self.{query,key,value}` projections, stacked at load into one `(3D, D)` matmul.
#[derive(Debug, Clone)]
pub struct BlipTextSelfAttention {
    /// `self.query|key|value` stacked: `(3D, D)`; query rows pre-scaled by `1/sqrt(head_dim)`.
    pub(super) qkv: Linear,
    pub(super) output: BlipTextSelfOutput,
    pub(super) layer_idx: usize,
    pub(super) num_heads: usize,
    pub(super) head_dim: usize,
}

impl BlipTextSelfAttention {
    pub fn new(
        cfg: &BlipTextConfig,
        layer_idx: usize,
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
            layer_idx,
            num_heads: cfg.num_attention_heads,
            head_dim,
        })
    }

    /// `(R, T, D) -> (R, T, D)`: appends this step's keys/values to `cache` (layer `layer_idx`)
    /// and attends causally over everything cached; without a cache the `T` tokens attend
    /// causally to each other only.
    pub fn forward(
        &self,
        xs: &Tensor,
        cache: Option<&mut KvCache>,
        ops: &FusedOps,
    ) -> Result<Tensor> {
        let (r, t, d) = xs.dims3()?;
        let Some(cache) = cache else {
            let packed = self.qkv.forward(xs)?;
            if let Some(context) =
                ops.attention()
                    .self_attention(&packed, self.num_heads, 1.0, true)?
            {
                return self.output.forward(&context, xs, ops);
            }
            let qkv = split_heads(&packed, 3, self.num_heads, self.head_dim)?;
            let (q, keys, values) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
            let context = self.attend(&q, &keys, &values, 0)?.reshape((r, t, d))?;
            return self.output.forward(&context, xs, ops);
        };
        let past = cache.len();
        let context = if t == 1 && ops.enabled() && ops.self_attention_fits(past + 1, self.head_dim)
        {
            cache.check_room(1)?;
            let qkv = self
                .qkv
                .forward_fused(xs, ops, Epilogue::None)?
                .reshape((r, 3 * d))?;
            let bias = self.qkv.expect_bias("text self-attention qkv")?;
            let buffer = cache.layer(self.layer_idx)?;
            ops.self_attention_step(&qkv, bias, &buffer, cache.geometry(), past + 1)?
                .reshape((r, 1, d))?
        } else {
            let qkv = split_heads(&self.qkv.forward(xs)?, 3, self.num_heads, self.head_dim)?;
            let q = qkv.get(0)?;
            let (keys, values) = cache.append(self.layer_idx, &qkv.get(1)?, &qkv.get(2)?)?;
            self.attend(&q, &keys, &values, past)?.reshape((r, t, d))?
        };
        self.output.forward(&context, xs, ops)
    }

    /// Causal attention of queries `(R, H, T, Dh)` at positions `past..past+T` over keys and
    /// values `(R, H, past+T, Dh)` -> context `(R, T, H, Dh)`.
    fn attend(&self, q: &Tensor, keys: &Tensor, values: &Tensor, past: usize) -> Result<Tensor> {
        let t = q.dim(2)?;
        let scores = q.matmul(&keys.t()?)?;
        let scores = if t > 1 {
            scores.broadcast_add(&causal_mask(past, t, &scores)?)?
        } else {
            scores
        };
        softmax_last_dim(&scores)?.matmul(values)?.transpose(1, 2)
    }
}

/// Cross-attention keys and values of every decoder layer for a batch of images, one
/// `(layers, 2, images, heads, image_tokens, head_dim)` tensor (keys, then values): computed
/// once per image and shared by all of that image's beams.
#[derive(Debug, Clone)]
pub struct CrossAttentionKv {
    /// `(layers, 2, images, heads, padded_tokens, head_dim)`; tokens past `tokens` are zero.
    pub(super) all: Tensor,
    /// Image tokens that are real (the rest is alignment padding).
    pub(super) tokens: usize,
    /// Per image, an additive key mask `(images, 1, 1, padded_tokens)` in the keys' dtype: 0 for
    /// a key to attend to, -10000 for one to ignore (a padded question token of a batch).
    /// `None`: every real token is attended to (images, and `generate`'s question states).
    pub(super) key_mask: Option<Tensor>,
}

impl CrossAttentionKv {
    /// Wraps a `(layers, 2, images, heads, padded_tokens, head_dim)` tensor of which the first
    /// `tokens` positions are real.
    pub fn from_tensor(all: Tensor, tokens: usize) -> Self {
        Self {
            all,
            tokens,
            key_mask: None,
        }
    }

    /// Stacks per-layer `(2, images, heads, image_tokens, head_dim)` tensors (no padding).
    pub fn from_layers(layers: &[Tensor]) -> Result<Self> {
        let all = Tensor::stack(layers, 0)?;
        let tokens = all.dim(4)?;
        Ok(Self {
            all,
            tokens,
            key_mask: None,
        })
    }

    /// The same keys/values with the key positions where `mask` `(images, tokens)` (u32 1/0)
    /// is 0 ignored by every query (LAVIS's `encoder_attention_mask` in rank mode: a padded
    /// question of a batch then scores as it does alone). Steps with a mask take the batched
    /// attention path, never the one-token fused kernel.
    pub fn with_key_mask(&self, mask: &Tensor) -> Result<Self> {
        let (images, tokens) = mask.dims2()?;
        let padded = self.all.dim(4)?;
        if images != self.images()? || tokens != self.tokens {
            candle_core::bail!(
                "key mask ({images}, {tokens}) for {} images of {} tokens",
                self.images()?,
                self.tokens
            );
        }
        let dtype = self.all.dtype();
        // 1 -> 0, 0 -> -10000 (BERT's classic additive mask: exp underflows to exactly 0 after
        // the softmax's max subtraction, in every dtype, and no kernel sees an infinity).
        let blocked = Tensor::full(-10_000f32, (images, tokens), mask.device())?;
        let zeros = blocked.zeros_like()?;
        let additive = mask
            .to_dtype(candle_core::DType::U32)?
            .eq(0u32)?
            .where_cond(&blocked, &zeros)?;
        let additive = additive.pad_with_zeros(1, 0, padded - tokens)?;
        Ok(Self {
            all: self.all.clone(),
            tokens: self.tokens,
            key_mask: Some(additive.to_dtype(dtype)?.reshape((images, 1, 1, padded))?),
        })
    }

    /// Number of images.
    pub fn images(&self) -> Result<usize> {
        self.all.dim(2)
    }

    /// Keeps images `indices` (u32 on the same device), in that order.
    pub fn select_images(&self, indices: &Tensor) -> Result<Self> {
        Ok(Self {
            all: self.all.index_select(indices, 2)?,
            tokens: self.tokens,
            key_mask: self
                .key_mask
                .as_ref()
                .map(|mask| mask.index_select(indices, 0))
                .transpose()?,
        })
    }

    /// The shape of the keys/values, `(layers, 2, images, heads, padded_tokens, head_dim)`, with
    /// the real token count and whether a key mask is set last: equal for two contexts a decoder
    /// step treats alike.
    pub fn dims(&self) -> Vec<usize> {
        let mut dims = self.all.dims().to_vec();
        dims.push(self.tokens);
        dims.push(usize::from(self.key_mask.is_some()));
        dims
    }

    /// Overwrites these keys/values with `src`'s (same [`CrossAttentionKv::dims`]) in place, so
    /// that work recorded against this buffer reads `src`'s values.
    pub fn copy_from(&self, src: &CrossAttentionKv) -> Result<()> {
        if self.key_mask.is_some() || src.key_mask.is_some() || self.dims() != src.dims() {
            candle_core::bail!(
                "cross-attention kv: cannot copy {:?} into {:?} (masked keys are not copied)",
                src.dims(),
                self.dims()
            );
        }
        self.all.slice_set(&src.all, 0, 0)
    }

    fn layer(&self, idx: usize) -> Result<Tensor> {
        if idx >= self.all.dim(0)? {
            candle_core::bail!("cross-attention kv has no layer {idx}");
        }
        self.all.get(idx)
    }
}

/// `crossattention` of a decoder layer: queries from the text, keys/values from the image embeds.
#[derive(Debug, Clone)]
pub struct BlipTextCrossAttention {
    /// `self.query`: `(D, D)`, pre-scaled by `1/sqrt(head_dim)`.
    pub(super) query: Linear,
    /// `self.key|value` stacked: `(2D, D_v)`.
    pub(super) key_value: Linear,
    pub(super) output: BlipTextSelfOutput,
    pub(super) layer_idx: usize,
    pub(super) num_heads: usize,
    pub(super) head_dim: usize,
}

impl BlipTextCrossAttention {
    pub fn new(
        cfg: &BlipTextConfig,
        layer_idx: usize,
        vb: VarBuilder,
        projections: &mut ProjectionLoader,
    ) -> Result<Self> {
        let (d, dv) = (cfg.hidden_size, cfg.encoder_hidden_size);
        let head_dim = cfg.head_dim();
        let sv = vb.pp("self");
        let query = projections.load(&sv, "query", (d, d), |sv| {
            Linear::load(d, d, sv.pp("query"))?.scaled(1.0 / (head_dim as f64).sqrt())
        })?;
        let key_value = projections.load(&sv, "key_value", (2 * d, dv), |sv| {
            let key = Linear::load(dv, d, sv.pp("key"))?;
            let value = Linear::load(dv, d, sv.pp("value"))?;
            Linear::concat_outputs(&[key, value])
        })?;
        Ok(Self {
            query,
            key_value,
            output: BlipTextSelfOutput::new(cfg, vb.pp("output"), projections)?,
            layer_idx,
            num_heads: cfg.num_attention_heads,
            head_dim,
        })
    }

    /// Fused path of [`BlipTextCrossAttention::image_kv`]: writes this layer's keys and values
    /// into `dst` `(2, B, H, N, Dh)`.
    /// `dst` may have more token rows than the image (alignment padding): they are zeroed.
    pub fn image_kv_into(&self, dst: &Tensor, image_embeds: &Tensor, ops: &FusedOps) -> Result<()> {
        let (b, n, _) = image_embeds.dims3()?;
        let geometry = SplitGeometry {
            batch: b,
            tokens: n,
            padded: dst.dim(3)?,
            heads: self.num_heads,
            head_dim: self.head_dim,
            nproj: 2,
        };
        let kv = self
            .key_value
            .forward_fused(image_embeds, ops, Epilogue::None)?;
        ops.split_heads_into(
            dst,
            &kv,
            self.key_value.expect_bias("cross-attention key/value")?,
            geometry,
        )
    }

    /// Heads and head width.
    pub fn head_shape(&self) -> (usize, usize) {
        (self.num_heads, self.head_dim)
    }

    /// Image embeds `(B, N, D_v)` -> this layer's keys and values, `(2, B, H, N, Dh)`.
    pub fn image_kv(&self, image_embeds: &Tensor) -> Result<Tensor> {
        split_heads(
            &self.key_value.forward(image_embeds)?,
            2,
            self.num_heads,
            self.head_dim,
        )
    }

    /// `(R, T, D) -> (R, T, D)` where the `R` rows are `B` images x `g` consecutive rows each
    /// (beams): the `g*T` queries of an image attend to that image's keys/values together, so the
    /// image K/V are never repeated per beam.
    pub fn forward(
        &self,
        xs: &Tensor,
        image_kv: &CrossAttentionKv,
        ops: &FusedOps,
    ) -> Result<Tensor> {
        let (r, t, d) = xs.dims3()?;
        let kv = image_kv.layer(self.layer_idx)?;
        let (b, padded, valid) = (kv.dim(1)?, kv.dim(3)?, image_kv.tokens);
        if b == 0 || r % b != 0 {
            candle_core::bail!("cross-attention: {r} text rows cannot be grouped over {b} images");
        }
        let g = r / b;
        let (h, dh) = (self.num_heads, self.head_dim);
        let mask = image_kv.key_mask.as_ref();
        let context = if mask.is_none()
            && ops.enabled()
            && t == 1
            && r < 16
            && ops.cross_attention_fits(g, padded, dh)
        {
            // Few rows: one fused kernel per step, split over the image keys (measured on the
            // H200, bf16, BLIP-base: 1.9x the bench at batch 1 and 1.46x at 8 over the batched
            // GEMMs below, which win at 64 rows: 880 against 830-850 images/s).
            let q = self
                .query
                .forward_fused(xs, ops, Epilogue::None)?
                .reshape((r, d))?;
            let bias = self.query.expect_bias("cross-attention query")?;
            ops.cross_attention_step(&q, bias, &kv, g, valid)?
                .reshape((r, 1, d))?
        } else if ops.enabled() {
            // Many rows: batched GEMMs over the (aligned, padded) image keys/values.
            let q = self.query.forward_fused(xs, ops, Epilogue::None)?;
            let geometry = SplitGeometry {
                batch: b,
                tokens: g * t,
                padded: g * t,
                heads: h,
                head_dim: dh,
                nproj: 1,
            };
            let q = ops
                .split_heads(
                    &q,
                    self.query.expect_bias("cross-attention query")?,
                    geometry,
                )?
                .get(0)?;
            let scores = q.matmul(&kv.get(0)?.t()?)?;
            let scores = match mask {
                Some(mask) => scores.broadcast_add(mask)?,
                None => scores,
            };
            let probs = match ops.softmax_last_dim(&scores, valid)? {
                Some(p) => p,
                None => softmax_last_dim(&scores.narrow(3, 0, valid)?)?.pad_with_zeros(
                    3,
                    0,
                    padded - valid,
                )?,
            };
            ops.merge_heads(&probs.matmul(&kv.get(1)?)?)?
                .reshape((r, t, d))?
        } else {
            // (B*g, T, D) -> (B, g*T, H, Dh) -> (B, H, g*T, Dh)
            let q = self
                .query
                .forward(xs)?
                .reshape((b, g * t, h, dh))?
                .transpose(1, 2)?
                .contiguous()?;
            let keys = kv.get(0)?.narrow(2, 0, valid)?;
            let scores = q.matmul(&keys.t()?)?;
            let scores = match mask {
                Some(mask) => scores.broadcast_add(&mask.narrow(3, 0, valid)?)?,
                None => scores,
            };
            let probs = softmax_last_dim(&scores)?;
            // (B, H, g*T, Dh) -> (B, g*T, H, Dh) -> (B*g, T, D)
            probs
                .matmul(&kv.get(1)?.narrow(2, 0, valid)?)?
                .transpose(1, 2)?
                .reshape((r, t, d))?
        };
        self.output.forward(&context, xs, ops)
    }
}

impl BlipTextSelfAttention {
    /// Calls `visit` with `self.qkv` (query/key/value stacked) and `output.dense`; `name` is
    /// the layer's `attention` path.
    pub fn for_each_projection(
        &mut self,
        name: &str,
        visit: &mut dyn FnMut(&str, &mut Linear) -> Result<()>,
    ) -> Result<()> {
        visit(&format!("{name}.self.qkv"), &mut self.qkv)?;
        visit(&format!("{name}.output.dense"), &mut self.output.dense)
    }
}

impl BlipTextCrossAttention {
    /// Calls `visit` with `self.query`, `self.key_value` (key/value stacked) and
    /// `output.dense`; `name` is the layer's `crossattention` path.
    pub fn for_each_projection(
        &mut self,
        name: &str,
        visit: &mut dyn FnMut(&str, &mut Linear) -> Result<()>,
    ) -> Result<()> {
        visit(&format!("{name}.self.query"), &mut self.query)?;
        visit(&format!("{name}.self.key_value"), &mut self.key_value)?;
        visit(&format!("{name}.output.dense"), &mut self.output.dense)
    }
}
