//! The vision tower's training forward (keeping what the backward reads) and its backward, layer
//! by layer beside each other. Gradients go to the checkpoint names the weights were loaded from,
//! undoing the load's transforms (the query rows of `qkv` pre-scaled by `head_dim^-0.5`, the
//! patch convolution flattened to a matmul).

use candle_core::{DType, Result, Tensor};

use super::Activations;
use crate::kernels::backprop::{linear, linear_backward, AttentionSaved, TrainOps};
use crate::models::blip::vision::{BlipEncoderLayer, BlipVisionEmbeddings, BlipVisionModel};
use crate::models::gradients::{NamedGrads, ParamPath};
use crate::models::linear::Linear;

/// The dense weight and bias of a projection (training has no quantized weights).
pub(super) fn dense(linear: &Linear, what: &str) -> Result<(Tensor, Option<Tensor>)> {
    match linear.dense_weight() {
        Some(w) => Ok((w.clone(), linear.bias().cloned())),
        None => candle_core::bail!("training needs dense weights; {what} is quantized"),
    }
}

/// Adds a projection's gradients under `path.weight` / `path.bias`.
pub(super) fn add_linear(
    grads: &mut NamedGrads,
    path: &ParamPath,
    dw: &Tensor,
    db: Option<&Tensor>,
) -> Result<()> {
    grads.add(path.name("weight"), dw)?;
    if let Some(db) = db {
        grads.add(path.name("bias"), db)?;
    }
    Ok(())
}

/// What one encoder layer's backward reads.
struct LayerTape {
    x: Tensor,
    ln1: Tensor,
    qkv: Tensor,
    context: Tensor,
    attention: AttentionSaved,
    hidden: Tensor,
    ln2: Tensor,
    /// `fc1` output before its bias.
    fc1: Tensor,
    /// `gelu(fc1 + bias)`.
    activated: Tensor,
}

/// What one layer keeps until its backward: its whole tape, or only its input, from which the
/// backward runs the layer's forward again ([`Activations::Recomputed`]).
enum LayerSaved {
    Tape(LayerTape),
    Input(Tensor),
}

/// What the tower's backward reads.
pub struct VisionTape {
    /// Flattened patches `(B, grid^2, 3 p^2)`.
    patches: Tensor,
    layers: Vec<LayerSaved>,
    /// Input of `post_layernorm`.
    last: Tensor,
}

impl BlipVisionEmbeddings {
    fn train_forward(&self, pixel_values: &Tensor, ops: &TrainOps) -> Result<(Tensor, Tensor)> {
        let (b, _, _, _) = pixel_values.dims4()?;
        let (p, g) = (self.patch_size, self.grid_size);
        let dtype = self.class_embedding.dtype();
        let patches = pixel_values
            .to_dtype(dtype)?
            .reshape((b, 3, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, g * g, 3 * p * p))?;
        let (w, bias) = dense(&self.patch_embedding, "the patch embedding")?;
        let projected = ops.linear(&patches, &w, bias.as_ref(), None)?;
        let class = self
            .class_embedding
            .broadcast_as((b, 1, self.hidden_size))?;
        let embeddings =
            Tensor::cat(&[&class, &projected], 1)?.broadcast_add(&self.position_embedding)?;
        Ok((embeddings, patches))
    }

    fn train_backward(
        &self,
        patches: &Tensor,
        d_embeddings: &Tensor,
        grads: &mut NamedGrads,
        path: &ParamPath,
    ) -> Result<()> {
        let (_, n, d) = d_embeddings.dims3()?;
        let p = self.patch_size;
        let d_f32 = d_embeddings.to_dtype(DType::F32)?;
        grads.add_shaped(path.name("position_embedding"), &d_f32.sum(0)?, &[1, n, d])?;
        grads.add_shaped(
            path.name("class_embedding"),
            &d_f32.narrow(1, 0, 1)?.sum(0)?,
            &[1, 1, d],
        )?;
        let (w, _) = dense(&self.patch_embedding, "the patch embedding")?;
        let d_patches = d_embeddings.narrow(1, 1, n - 1)?.contiguous()?;
        let g = linear_backward(patches, &w, true, &d_patches, false)?;
        let conv = path.pp("patch_embedding");
        grads.add_shaped(conv.name("weight"), &g.dw, &[d, 3, p, p])?;
        if let Some(db) = &g.db {
            grads.add(conv.name("bias"), db)?;
        }
        Ok(())
    }
}

impl BlipEncoderLayer {
    fn train_forward(&self, x: &Tensor, ops: &TrainOps) -> Result<(Tensor, LayerTape)> {
        let attn = &self.self_attn;
        let ln1 = ops.layer_norm(
            x,
            self.layer_norm1.weight(),
            self.layer_norm1.bias(),
            self.eps,
        )?;
        let (w_qkv, b_qkv) = dense(&attn.qkv, "self_attn.qkv")?;
        let qkv = ops.linear(&ln1, &w_qkv, b_qkv.as_ref(), None)?;
        // The query rows already carry head_dim^-0.5 (see `BlipAttention::new`).
        let (context, attention) = ops.self_attention(&qkv, attn.num_heads, 1.0, false)?;
        let (w_proj, b_proj) = dense(&attn.projection, "self_attn.projection")?;
        let hidden = ops.linear(&context, &w_proj, b_proj.as_ref(), Some(x))?;
        let ln2 = ops.layer_norm(
            &hidden,
            self.layer_norm2.weight(),
            self.layer_norm2.bias(),
            self.eps,
        )?;
        let (w1, b1) = dense(&self.mlp.fc1, "mlp.fc1")?;
        let fc1 = linear(&ln2, &w1, None)?;
        let activated = match &b1 {
            Some(b1) => ops.bias_gelu(&fc1, b1)?,
            None => fc1.gelu_erf()?,
        };
        let (w2, b2) = dense(&self.mlp.fc2, "mlp.fc2")?;
        let out = ops.linear(&activated, &w2, b2.as_ref(), Some(&hidden))?;
        let tape = LayerTape {
            x: x.clone(),
            ln1,
            qkv,
            context,
            attention,
            hidden,
            ln2,
            fc1,
            activated,
        };
        Ok((out, tape))
    }

    fn train_backward(
        &self,
        tape: LayerTape,
        dy: &Tensor,
        ops: &TrainOps,
        grads: &mut NamedGrads,
        path: &ParamPath,
    ) -> Result<Tensor> {
        let attn = &self.self_attn;
        // y = hidden + fc2(gelu(fc1(LN2(hidden)))): the residual passes dy through.
        let (w2, b2) = dense(&self.mlp.fc2, "mlp.fc2")?;
        let g2 = linear_backward(&tape.activated, &w2, b2.is_some(), dy, true)?;
        add_linear(grads, &path.pp("mlp").pp("fc2"), &g2.dw, g2.db.as_ref())?;
        let d_act = g2
            .dx
            .ok_or_else(|| candle_core::Error::Msg("fc2: no dx".into()))?;
        let (w1, b1) = dense(&self.mlp.fc1, "mlp.fc1")?;
        let (d_fc1, db1) = match &b1 {
            Some(b1) => {
                let (d, db) = ops.bias_gelu_backward(&tape.fc1, b1, &d_act)?;
                (d, Some(db))
            }
            None => candle_core::bail!("the vision MLP's fc1 has no bias"),
        };
        let g1 = linear_backward(&tape.ln2, &w1, false, &d_fc1, true)?;
        add_linear(grads, &path.pp("mlp").pp("fc1"), &g1.dw, db1.as_ref())?;
        let d_ln2 = g1
            .dx
            .ok_or_else(|| candle_core::Error::Msg("fc1: no dx".into()))?;
        let (d_hidden_ln, dw, db) =
            ops.layer_norm_backward(&tape.hidden, self.layer_norm2.weight(), &d_ln2, self.eps)?;
        add_layer_norm(grads, &path.pp("layer_norm2"), &dw, &db)?;
        let d_hidden = ops.add(dy, None, Some(&d_hidden_ln))?;
        // hidden = x + projection(attention(qkv(LN1(x)))).
        let (w_proj, b_proj) = dense(&attn.projection, "self_attn.projection")?;
        let gp = linear_backward(&tape.context, &w_proj, b_proj.is_some(), &d_hidden, true)?;
        let attn_path = path.pp("self_attn");
        add_linear(grads, &attn_path.pp("projection"), &gp.dw, gp.db.as_ref())?;
        let d_context = gp
            .dx
            .ok_or_else(|| candle_core::Error::Msg("projection: no dx".into()))?;
        let d_qkv = ops.self_attention_backward(
            &tape.qkv,
            &tape.context,
            &d_context,
            &tape.attention,
            attn.num_heads,
            1.0,
            false,
        )?;
        let (w_qkv, b_qkv) = dense(&attn.qkv, "self_attn.qkv")?;
        let gq = linear_backward(&tape.ln1, &w_qkv, b_qkv.is_some(), &d_qkv, true)?;
        // The loaded weight is W * s per row (s = head_dim^-0.5 on the query rows): dW = s * dW'.
        let d = w_qkv.dim(1)?;
        let scale = (attn.head_dim as f64).powf(-0.5);
        let rows = row_scale(3 * d, d, scale, gq.dw.device())?;
        grads.add(
            attn_path.pp("qkv").name("weight"),
            &gq.dw
                .to_dtype(DType::F32)?
                .broadcast_mul(&rows.unsqueeze(1)?)?,
        )?;
        if let Some(db) = &gq.db {
            grads.add(
                attn_path.pp("qkv").name("bias"),
                &db.to_dtype(DType::F32)?.mul(&rows)?,
            )?;
        }
        let d_ln1 = gq
            .dx
            .ok_or_else(|| candle_core::Error::Msg("qkv: no dx".into()))?;
        let (d_x_ln, dw, db) =
            ops.layer_norm_backward(&tape.x, self.layer_norm1.weight(), &d_ln1, self.eps)?;
        add_layer_norm(grads, &path.pp("layer_norm1"), &dw, &db)?;
        ops.add(&d_hidden, None, Some(&d_x_ln))
    }
}

/// `[scale; first] ++ [1; rows - first]` (f32).
pub(super) fn row_scale(
    rows: usize,
    first: usize,
    scale: f64,
    device: &candle_core::Device,
) -> Result<Tensor> {
    Tensor::cat(
        &[
            Tensor::full(scale as f32, first, device)?,
            Tensor::ones(rows - first, DType::F32, device)?,
        ],
        0,
    )
}

pub(super) fn add_layer_norm(
    grads: &mut NamedGrads,
    path: &ParamPath,
    dw: &Tensor,
    db: &Tensor,
) -> Result<()> {
    grads.add(path.name("weight"), dw)?;
    grads.add(path.name("bias"), db)
}

impl BlipVisionModel {
    /// Training forward: `(B, 3, H, W)` pixels -> image embeds `(B, 1 + grid^2, D)` and what the
    /// backward reads: every layer's tape, or with [`Activations::Recomputed`] each layer's
    /// input only (the tapes are ~16 activations of `(B, 1 + grid^2, D)` per layer, the bulk of
    /// a training step's memory).
    pub fn train_forward(
        &self,
        pixel_values: &Tensor,
        ops: &TrainOps,
        activations: Activations,
    ) -> Result<(Tensor, VisionTape)> {
        let (mut xs, patches) = self.embeddings.train_forward(pixel_values, ops)?;
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (out, tape) = layer.train_forward(&xs, ops)?;
            layers.push(match activations {
                Activations::Stored => LayerSaved::Tape(tape),
                Activations::Recomputed => LayerSaved::Input(xs),
            });
            xs = out;
        }
        let norm = &self.post_layernorm;
        let embeds = ops.layer_norm(&xs, norm.weight(), norm.bias(), norm.eps())?;
        Ok((
            embeds,
            VisionTape {
                patches,
                layers,
                last: xs,
            },
        ))
    }

    /// Backward of [`Self::train_forward`] for the image embeds' gradient; `path` is the
    /// tower's checkpoint prefix (`vision_model`).
    pub fn train_backward(
        &self,
        tape: VisionTape,
        d_embeds: &Tensor,
        ops: &TrainOps,
        grads: &mut NamedGrads,
        path: &ParamPath,
    ) -> Result<()> {
        let norm = &self.post_layernorm;
        let (mut dx, dw, db) =
            ops.layer_norm_backward(&tape.last, norm.weight(), d_embeds, norm.eps())?;
        add_layer_norm(grads, &path.pp("post_layernorm"), &dw, &db)?;
        let layers_path = path.pp("encoder").pp("layers");
        for (i, (layer, saved)) in self.layers.iter().zip(tape.layers).enumerate().rev() {
            let layer_tape = match saved {
                LayerSaved::Tape(tape) => tape,
                // The same kernels on the same input: the tape the forward dropped, bit for bit.
                LayerSaved::Input(x) => layer.train_forward(&x, ops)?.1,
            };
            dx = layer.train_backward(layer_tape, &dx, ops, grads, &layers_path.pp(i))?;
        }
        self.embeddings
            .train_backward(&tape.patches, &dx, grads, &path.pp("embeddings"))
    }
}
