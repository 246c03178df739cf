//! BLIP vision tower (`vision_model.*`): a pre-LN ViT turning pixels into image embeddings that
//! the text decoder cross-attends to (HF `BlipVisionModel`).

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::{Activation, BlipVisionConfig};
use super::text_attention::residual_norm_params;
use crate::kernels::attention::composed_self_attention;
use crate::kernels::fused::{FusedOps, SplitGeometry};
use crate::models::cpu_attention;
use crate::models::linear::{Epilogue, Linear};
use crate::models::norm::{layer_norm, softmax_last_dim, LayerNorm};
use crate::models::projections::ProjectionLoader;

/// `vision_model.embeddings`: patch projection + class token + learned positions.
#[derive(Debug, Clone)]
pub struct BlipVisionEmbeddings {
    /// `patch_embedding`: the Conv2d(3, D, p, stride p) as a matmul over flattened patches,
    /// weight `(D, 3*p*p)` in (channel, row, column) order.
    pub(super) patch_embedding: Linear,
    /// `class_embedding`: `(1, 1, D)`.
    pub(super) class_embedding: Tensor,
    /// `position_embedding`: `(1, 1 + grid^2, D)`.
    pub(super) position_embedding: Tensor,
    /// `[patch bias; class; positions]` `(3 + grid^2, D)` for the fused kernel.
    pub(super) fused_table: Tensor,
    pub(super) patch_size: usize,
    pub(super) grid_size: usize,
    pub(super) hidden_size: usize,
}

impl BlipVisionEmbeddings {
    pub fn new(cfg: &BlipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let p = cfg.patch_size;
        let pe = vb.pp("patch_embedding");
        let weight = pe.get((d, 3, p, p), "weight")?.reshape((d, 3 * p * p))?;
        let bias = pe.get(d, "bias")?;
        let class_embedding = vb.get((1, 1, d), "class_embedding")?;
        let position_embedding = vb.get((1, cfg.num_positions(), d), "position_embedding")?;
        let fused_table = Tensor::cat(
            &[
                &bias.unsqueeze(0)?,
                &class_embedding.reshape((1, d))?,
                &position_embedding.squeeze(0)?,
            ],
            0,
        )?;
        Ok(Self {
            patch_embedding: Linear::from_parts(weight, Some(bias)),
            class_embedding,
            position_embedding,
            fused_table,
            patch_size: p,
            grid_size: cfg.grid_size(),
            hidden_size: d,
        })
    }

    /// Resamples the patch positions to `image_size / patch_size` per side (LAVIS's and
    /// transformers' bicubic interpolation, `super::interpolate`); the input size becomes
    /// `image_size`.
    pub fn interpolate_to(&mut self, image_size: usize) -> Result<()> {
        let p = self.patch_size;
        if image_size == 0 || !image_size.is_multiple_of(p) {
            candle_core::bail!(
                "image size {image_size} is not a positive multiple of the patch size {p}"
            );
        }
        let grid = image_size / p;
        let positions = super::interpolate::interpolate_positions(&self.position_embedding, grid)?;
        let d = self.hidden_size;
        let bias = self.fused_table.narrow(0, 0, 1)?;
        let class = self.fused_table.narrow(0, 1, 1)?;
        self.fused_table = Tensor::cat(
            &[&bias, &class, &positions.reshape((grid * grid + 1, d))?],
            0,
        )?;
        self.position_embedding = positions;
        self.grid_size = grid;
        Ok(())
    }

    /// `(B, 3, H, W)` pixels (any float dtype) -> `(B, 1 + grid^2, D)` in the weights' dtype.
    pub fn forward(&self, pixel_values: &Tensor, ops: &FusedOps) -> Result<Tensor> {
        let (b, c, h, w) = pixel_values.dims4()?;
        let (p, g) = (self.patch_size, self.grid_size);
        if c != 3 || h != g * p || w != g * p {
            candle_core::bail!(
                "vision embeddings expect pixel_values of shape (B, 3, {}, {}), got {:?}",
                g * p,
                g * p,
                pixel_values.dims()
            );
        }
        let dtype = self.class_embedding.dtype();
        if ops.enabled() {
            if let Some(patches) = ops.patchify(pixel_values, p, dtype)? {
                let projected =
                    self.patch_embedding
                        .forward_fused(&patches, ops, Epilogue::None)?;
                return ops.vision_embed(&projected, &self.fused_table);
            }
        }
        // (B, 3, g, p, g, p) -> (B, g, g, 3, p, p): each patch becomes one row of 3*p*p values.
        let patches = pixel_values
            .to_dtype(dtype)?
            .reshape((b, 3, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, g * g, 3 * p * p))?;
        let patch_embeds = self.patch_embedding.forward(&patches)?;
        let class_embeds = self
            .class_embedding
            .broadcast_as((b, 1, self.hidden_size))?;
        let embeddings = Tensor::cat(&[&class_embeds, &patch_embeds], 1)?;
        embeddings.broadcast_add(&self.position_embedding)
    }
}

/// `encoder.layers.N.self_attn`: multi-head self-attention with one fused `qkv` projection.
#[derive(Debug, Clone)]
pub struct BlipAttention {
    /// `qkv`: `(3D, D)`; the query rows are pre-multiplied by `head_dim^-0.5` at load.
    pub(super) qkv: Linear,
    /// `projection`: `(D, D)`.
    pub(super) projection: Linear,
    pub(super) num_heads: usize,
    pub(super) head_dim: usize,
}

impl BlipAttention {
    pub fn new(
        cfg: &BlipVisionConfig,
        vb: VarBuilder,
        projections: &mut ProjectionLoader,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        let head_dim = cfg.head_dim();
        let qkv = projections.load(&vb, "qkv", (3 * d, d), |vb| {
            let qkv = vb.pp("qkv");
            let weight = qkv.get((3 * d, d), "weight")?;
            let bias = qkv.get(3 * d, "bias")?;
            // HF multiplies the scores by head_dim^-0.5; scaling q's projection is the same product.
            let scale = (head_dim as f64).powf(-0.5);
            let row_scale = Tensor::cat(
                &[
                    Tensor::full(scale as f32, d, weight.device())?,
                    Tensor::ones(2 * d, DType::F32, weight.device())?,
                ],
                0,
            )?
            .to_dtype(weight.dtype())?;
            let weight = weight.broadcast_mul(&row_scale.unsqueeze(1)?)?;
            let bias = bias.mul(&row_scale)?;
            Ok(Linear::from_parts(weight, Some(bias)))
        })?;
        Ok(Self {
            qkv,
            projection: projections.linear(&vb, "projection", d, d)?,
            num_heads: cfg.num_attention_heads,
            head_dim,
        })
    }

    /// `(B, N, D) -> (B, N, D)`: the fused attention kernel where `ops` has one that applies
    /// (training on CUDA), else the composed ops.
    pub fn forward(&self, xs: &Tensor, ops: &FusedOps) -> Result<Tensor> {
        let qkv = self.qkv.forward(xs)?;
        let context = match ops
            .attention()
            .self_attention(&qkv, self.num_heads, 1.0, false)?
        {
            Some(context) => context,
            // The CPU (f32, inference): heads read in place, no score tensors.
            None if cpu_attention::applies(&qkv) => {
                cpu_attention::self_attention(&qkv, self.num_heads, 1.0, false)?
            }
            None => composed_self_attention(&qkv, self.num_heads, 1.0, false, softmax_last_dim)?,
        };
        self.projection.forward(&context)
    }

    /// Fused-kernel version of [`BlipAttention::forward`] returning the projection *without*
    /// its bias (the caller adds it together with the residual), `(B, N, D)`.
    pub fn forward_fused(&self, xs: &Tensor, ops: &FusedOps) -> Result<Tensor> {
        let (b, n, _) = xs.dims3()?;
        // The FlashAttention kernel (the training forward's) where it applies: Q/K/V read straight
        // from the packed projection, the (B, heads, N, N) scores never stored.
        if ops.attention().enabled() {
            let qkv = self.qkv.forward_fused(xs, ops, Epilogue::Bias)?;
            // The query rows already carry head_dim^-0.5 (see `BlipAttention::new`).
            if let Some(context) =
                ops.attention()
                    .self_attention(&qkv, self.num_heads, 1.0, false)?
            {
                return self.projection.forward_fused(&context, ops, Epilogue::None);
            }
        }
        // Keys/values padded with zero rows to a multiple of 8 tokens, so that the attention
        // GEMMs get 16-byte aligned leading dimensions (577 would force slow unaligned kernels);
        // the softmax gives the padded columns probability 0.
        let padded = n.next_multiple_of(8);
        let padded = if padded <= 1024 { padded } else { n };
        let geometry = SplitGeometry {
            batch: b,
            tokens: n,
            padded,
            heads: self.num_heads,
            head_dim: self.head_dim,
            nproj: 3,
        };
        let qkv = self.qkv.forward_fused(xs, ops, Epilogue::None)?;
        let heads = ops.split_heads(&qkv, self.qkv.expect_bias("qkv")?, geometry)?;
        let q = heads.get(0)?.narrow(2, 0, n)?;
        let (k, v) = (heads.get(1)?, heads.get(2)?);
        let scores = q.matmul(&k.t()?)?;
        let probs = match ops.softmax_last_dim(&scores, n)? {
            Some(p) => p,
            None if padded == n => crate::models::softmax::softmax_last_dim(&scores)?,
            None => candle_core::bail!(
                "vision attention: {padded} padded tokens exceed the softmax kernel"
            ),
        };
        let context = ops.merge_heads(&probs.matmul(&v)?)?;
        self.projection.forward_fused(&context, ops, Epilogue::None)
    }
}

/// `act(linear(xs))`: the fused bias + GELU kernel (with its backward) where `ops` has one that
/// applies (training on CUDA in bf16/f16), else the composed bias add and activation.
pub(crate) fn dense_activation(
    linear: &Linear,
    act: Activation,
    xs: &Tensor,
    ops: &FusedOps,
) -> Result<Tensor> {
    if act == Activation::GeluErf && ops.gelu().enabled() {
        if let Some(bias) = linear.bias() {
            if let Some(hidden) = ops.gelu().bias_gelu(&linear.forward_no_bias(xs)?, bias)? {
                return Ok(hidden);
            }
        }
    }
    if act == Activation::GeluErf {
        return linear.forward_gelu(xs);
    }
    act.forward(&linear.forward(xs)?)
}

/// `encoder.layers.N.mlp`: fc1 -> activation -> fc2.
#[derive(Debug, Clone)]
pub struct BlipMlp {
    /// `fc1`: `(I, D)`.
    pub(super) fc1: Linear,
    /// `fc2`: `(D, I)`.
    pub(super) fc2: Linear,
    pub(super) act: Activation,
}

impl BlipMlp {
    pub fn new(
        cfg: &BlipVisionConfig,
        vb: VarBuilder,
        projections: &mut ProjectionLoader,
    ) -> Result<Self> {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            fc1: projections.linear(&vb, "fc1", d, i)?,
            fc2: projections.linear(&vb, "fc2", i, d)?,
            act: cfg.hidden_act,
        })
    }

    /// `(B, N, D) -> (B, N, D)`.
    pub fn forward(&self, xs: &Tensor, ops: &FusedOps) -> Result<Tensor> {
        self.fc2
            .forward(&dense_activation(&self.fc1, self.act, xs, ops)?)
    }

    /// Fused-kernel version returning `fc2` *without* its bias.
    pub fn forward_fused(&self, xs: &Tensor, ops: &FusedOps) -> Result<Tensor> {
        let hidden = if self.act == Activation::GeluErf {
            self.fc1.forward_fused(xs, ops, Epilogue::BiasGelu)?
        } else {
            self.act.forward(&self.fc1.forward(xs)?)?
        };
        self.fc2.forward_fused(&hidden, ops, Epilogue::None)
    }
}

/// `encoder.layers.N`: `x + attn(LN1(x))`, then `x + mlp(LN2(x))`.
#[derive(Debug, Clone)]
pub struct BlipEncoderLayer {
    pub(super) self_attn: BlipAttention,
    pub(super) layer_norm1: LayerNorm,
    pub(super) mlp: BlipMlp,
    pub(super) layer_norm2: LayerNorm,
    /// `[projection.bias; layer_norm2.weight; layer_norm2.bias]` for the fused kernel.
    pub(super) attn_exit_params: Tensor,
    pub(super) eps: f64,
}

impl BlipEncoderLayer {
    pub fn new(
        cfg: &BlipVisionConfig,
        vb: VarBuilder,
        projections: &mut ProjectionLoader,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        let self_attn = BlipAttention::new(cfg, vb.pp("self_attn"), projections)?;
        let layer_norm2 = layer_norm(d, cfg.layer_norm_eps, vb.pp("layer_norm2"))?;
        let attn_exit_params = residual_norm_params(
            self_attn.projection.expect_bias("projection")?,
            &layer_norm2,
        )?;
        Ok(Self {
            self_attn,
            layer_norm1: layer_norm(d, cfg.layer_norm_eps, vb.pp("layer_norm1"))?,
            mlp: BlipMlp::new(cfg, vb.pp("mlp"), projections)?,
            layer_norm2,
            attn_exit_params,
            eps: cfg.layer_norm_eps,
        })
    }

    /// `(B, N, D) -> (B, N, D)`.
    pub fn forward(&self, xs: &Tensor, ops: &FusedOps) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, ops)?;
        let xs = (xs + attn)?;
        let mlp = self.mlp.forward(&self.layer_norm2.forward(&xs)?, ops)?;
        xs + mlp
    }

    /// Fused-kernel layer: takes `xs` and `LN1(xs)`, returns the layer output and the
    /// LayerNorm `exit_params = [fc2.bias; gamma; beta]` of it (the next layer's `layer_norm1`,
    /// or `post_layernorm` after the last layer), as one `(2, B, N, D)` tensor.
    pub fn forward_fused(
        &self,
        xs: &Tensor,
        normed: &Tensor,
        exit_params: &Tensor,
        ops: &FusedOps,
    ) -> Result<Tensor> {
        let attn = self.self_attn.forward_fused(normed, ops)?;
        let mid = ops.bias_residual_layer_norm2(&attn, xs, &self.attn_exit_params, self.eps)?;
        let (hidden, hidden_normed) = (mid.get(0)?, mid.get(1)?);
        let mlp = self.mlp.forward_fused(&hidden_normed, ops)?;
        ops.bias_residual_layer_norm2(&mlp, &hidden, exit_params, self.eps)
    }
}

/// `vision_model`: embeddings, `encoder.layers.*`, `post_layernorm`.
#[derive(Debug, Clone)]
pub struct BlipVisionModel {
    pub(super) embeddings: BlipVisionEmbeddings,
    pub(super) layers: Vec<BlipEncoderLayer>,
    pub(super) post_layernorm: LayerNorm,
    /// Per layer `[fc2.bias; next LayerNorm weight; bias]` (the next layer's `layer_norm1`, or
    /// `post_layernorm`) for the fused kernels.
    pub(super) exit_params: Vec<Tensor>,
    pub(super) ops: FusedOps,
}

impl BlipVisionModel {
    /// Builds the tower (dense) with fused CUDA kernels when `vb`'s device is CUDA.
    pub fn new(cfg: &BlipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let ops = FusedOps::for_device(vb.device())?;
        Self::new_with_ops(cfg, vb, ops, &mut ProjectionLoader::dense())
    }

    /// Builds the tower with an existing kernel handle, its projections from `projections`.
    pub fn new_with_ops(
        cfg: &BlipVisionConfig,
        vb: VarBuilder,
        ops: FusedOps,
        projections: &mut ProjectionLoader,
    ) -> Result<Self> {
        let layers_vb = vb.pp("encoder").pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BlipEncoderLayer::new(cfg, layers_vb.pp(i), projections))
            .collect::<Result<Vec<_>>>()?;
        let post_layernorm =
            layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("post_layernorm"))?;
        let exit_params = layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let next = layers
                    .get(i + 1)
                    .map_or(&post_layernorm, |l| &l.layer_norm1);
                residual_norm_params(layer.mlp.fc2.expect_bias("fc2")?, next)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: BlipVisionEmbeddings::new(cfg, vb.pp("embeddings"))?,
            layers,
            post_layernorm,
            exit_params,
            ops,
        })
    }

    /// Runs on `image_size` x `image_size` pixels with interpolated positions
    /// ([`BlipVisionEmbeddings::interpolate_to`]).
    pub fn interpolate_to(&mut self, image_size: usize) -> Result<()> {
        self.embeddings.interpolate_to(image_size)
    }

    /// Replaces the kernel handle (e.g. [`FusedOps::disabled`] for the composed ops).
    pub fn set_ops(&mut self, ops: FusedOps) {
        self.ops = ops;
    }

    /// `(B, 3, H, W)` pixels -> `(B, 1 + grid^2, D)` image embeddings (`last_hidden_state`, post-LN).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let mut xs = self.embeddings.forward(pixel_values, &self.ops)?;
        if self.ops.enabled() {
            let Some(first) = self.layers.first() else {
                return self.post_layernorm.forward(&xs);
            };
            let mut normed = first.layer_norm1.forward(&xs)?;
            for (layer, exit) in self.layers.iter().zip(&self.exit_params) {
                let out = layer.forward_fused(&xs, &normed, exit, &self.ops)?;
                (xs, normed) = (out.get(0)?, out.get(1)?);
            }
            return Ok(normed);
        }
        for layer in &self.layers {
            xs = layer.forward(&xs, &self.ops)?;
        }
        self.post_layernorm.forward(&xs)
    }
}

impl BlipVisionModel {
    /// Calls `visit` with every encoder projection and its full name (`self_attn.qkv`,
    /// `self_attn.projection`, `mlp.fc1`, `mlp.fc2` of each layer); the patch embedding is not
    /// one (it stays in the activation dtype, like the LayerNorms).
    pub fn for_each_projection(
        &mut self,
        visit: &mut dyn FnMut(&str, &mut Linear) -> Result<()>,
    ) -> Result<()> {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let name = |what: &str| format!("vision_model.encoder.layers.{i}.{what}");
            visit(&name("self_attn.qkv"), &mut layer.self_attn.qkv)?;
            visit(
                &name("self_attn.projection"),
                &mut layer.self_attn.projection,
            )?;
            visit(&name("mlp.fc1"), &mut layer.mlp.fc1)?;
            visit(&name("mlp.fc2"), &mut layer.mlp.fc2)?;
        }
        Ok(())
    }
}
