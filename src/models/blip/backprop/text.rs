//! The text decoder's training forward (teacher forcing, keeping what the backward reads) and its
//! backward, block by block beside each other. Gradients go to the checkpoint names, undoing the
//! load's transforms: `query|key|value` stacked into one `qkv` with the query rows pre-scaled by
//! `1/sqrt(head_dim)`, cross-attention `key|value` stacked, the LM head's decoder tied to the word
//! embeddings.

use candle_core::{DType, Result, Tensor};

use super::vision::{add_layer_norm, add_linear, dense};
use crate::kernels::backprop::{linear, linear_backward, AttentionSaved, TrainOps};
use crate::models::blip::text::{
    BlipTextEmbeddings, BlipTextLMHeadModel, BlipTextLMPredictionHead, BlipTextLayer,
};
use crate::models::blip::text_attention::BlipTextSelfOutput;
use crate::models::gradients::{NamedGrads, ParamPath};
use crate::models::norm::LayerNorm;

fn no_dx(what: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{what}: the backward produced no input gradient"))
}

/// What one decoder layer's backward reads.
struct LayerTape {
    x: Tensor,
    qkv: Tensor,
    self_context: Tensor,
    self_saved: AttentionSaved,
    /// `dense(context) + x`, the input of the attention output LayerNorm.
    self_sum: Tensor,
    after_self: Tensor,
    query: Tensor,
    /// This layer's image keys and values `(B, M, 2D)`.
    kv: Tensor,
    cross_context: Tensor,
    cross_saved: AttentionSaved,
    cross_sum: Tensor,
    after_cross: Tensor,
    /// `intermediate.dense` output before its bias.
    intermediate: Tensor,
    activated: Tensor,
    ffn_sum: Tensor,
}

/// What the decoder's backward reads.
pub struct TextTape {
    input_ids: Tensor,
    /// Word + position embeddings, the input of the embedding LayerNorm.
    embedded: Tensor,
    layers: Vec<LayerTape>,
}

/// What the LM head's backward reads.
pub struct HeadTape {
    hidden: Tensor,
    transform: Tensor,
    activated: Tensor,
    normed: Tensor,
}

fn norm(ops: &TrainOps, x: &Tensor, n: &LayerNorm) -> Result<Tensor> {
    ops.layer_norm(x, n.weight(), n.bias(), n.eps())
}

fn norm_backward(
    ops: &TrainOps,
    x: &Tensor,
    n: &LayerNorm,
    dy: &Tensor,
    grads: &mut NamedGrads,
    path: &ParamPath,
) -> Result<Tensor> {
    let (dx, dw, db) = ops.layer_norm_backward(x, n.weight(), dy, n.eps())?;
    add_layer_norm(grads, path, &dw, &db)?;
    Ok(dx)
}

impl BlipTextSelfOutput {
    /// `(dense(context) + residual` (the LayerNorm input), `LN` of it`)`.
    fn train_forward(
        &self,
        context: &Tensor,
        residual: &Tensor,
        ops: &TrainOps,
    ) -> Result<(Tensor, Tensor)> {
        let (w, b) = dense(&self.dense, "output.dense")?;
        let sum = ops.linear(context, &w, b.as_ref(), Some(residual))?;
        let out = norm(ops, &sum, &self.layer_norm)?;
        Ok((sum, out))
    }

    /// `(d context, d residual)` for the output gradient `dy`.
    fn train_backward(
        &self,
        context: &Tensor,
        sum: &Tensor,
        dy: &Tensor,
        ops: &TrainOps,
        grads: &mut NamedGrads,
        path: &ParamPath,
    ) -> Result<(Tensor, Tensor)> {
        let d_sum = norm_backward(ops, sum, &self.layer_norm, dy, grads, &path.pp("LayerNorm"))?;
        let (w, b) = dense(&self.dense, "output.dense")?;
        let g = linear_backward(context, &w, b.is_some(), &d_sum, true)?;
        add_linear(grads, &path.pp("dense"), &g.dw, g.db.as_ref())?;
        Ok((g.dx.ok_or_else(|| no_dx("output.dense"))?, d_sum))
    }
}

/// Adds the gradient of a stacked projection `(parts * D, K)` to its parts' names, the first
/// part's rows multiplied by `first_scale` (the folded attention scale).
fn add_stacked(
    grads: &mut NamedGrads,
    parts: &[ParamPath],
    dw: &Tensor,
    db: Option<&Tensor>,
    first_scale: f64,
) -> Result<()> {
    let rows = dw.dim(0)? / parts.len();
    for (i, path) in parts.iter().enumerate() {
        let factor = if i == 0 { first_scale } else { 1.0 };
        let w = dw.narrow(0, i * rows, rows)?.to_dtype(DType::F32)?;
        grads.add(path.name("weight"), &(w * factor)?)?;
        if let Some(db) = db {
            let b = db.narrow(0, i * rows, rows)?.to_dtype(DType::F32)?;
            grads.add(path.name("bias"), &(b * factor)?)?;
        }
    }
    Ok(())
}

impl BlipTextLayer {
    fn train_forward(
        &self,
        x: &Tensor,
        image_embeds: &Tensor,
        ops: &TrainOps,
    ) -> Result<(Tensor, LayerTape)> {
        let sa = &self.attention;
        let (w, b) = dense(&sa.qkv, "attention.self.qkv")?;
        let qkv = ops.linear(x, &w, b.as_ref(), None)?;
        let (self_context, self_saved) = ops.self_attention(&qkv, sa.num_heads, 1.0, true)?;
        let (self_sum, after_self) = sa.output.train_forward(&self_context, x, ops)?;
        let ca = &self.crossattention;
        let (wq, bq) = dense(&ca.query, "crossattention.self.query")?;
        let query = ops.linear(&after_self, &wq, bq.as_ref(), None)?;
        let (wkv, bkv) = dense(&ca.key_value, "crossattention.self.key_value")?;
        let kv = ops.linear(image_embeds, &wkv, bkv.as_ref(), None)?;
        let (cross_context, cross_saved) = ops.cross_attention(&query, &kv, ca.num_heads, 1.0)?;
        let (cross_sum, after_cross) = ca.output.train_forward(&cross_context, &after_self, ops)?;
        let ff = &self.feed_forward;
        let (w1, b1) = dense(&ff.intermediate, "intermediate.dense")?;
        let intermediate = linear(&after_cross, &w1, None)?;
        let Some(b1) = b1 else {
            candle_core::bail!("the text feed-forward's intermediate.dense has no bias")
        };
        let activated = ops.bias_gelu(&intermediate, &b1)?;
        let (w2, b2) = dense(&ff.output, "output.dense")?;
        let ffn_sum = ops.linear(&activated, &w2, b2.as_ref(), Some(&after_cross))?;
        let out = norm(ops, &ffn_sum, &ff.output_norm)?;
        let tape = LayerTape {
            x: x.clone(),
            qkv,
            self_context,
            self_saved,
            self_sum,
            after_self,
            query,
            kv,
            cross_context,
            cross_saved,
            cross_sum,
            after_cross,
            intermediate,
            activated,
            ffn_sum,
        };
        Ok((out, tape))
    }

    /// Returns `d x`; adds this layer's image-embeds gradient to `d_image` when it is `Some`.
    #[allow(clippy::too_many_arguments)]
    fn train_backward(
        &self,
        tape: LayerTape,
        dy: &Tensor,
        image_embeds: &Tensor,
        d_image: &mut Option<Tensor>,
        ops: &TrainOps,
        grads: &mut NamedGrads,
        path: &ParamPath,
    ) -> Result<Tensor> {
        // Feed-forward: y = LN(output.dense(gelu(intermediate.dense(c))) + c).
        let ff = &self.feed_forward;
        let output_path = path.pp("output");
        let d_sum = norm_backward(
            ops,
            &tape.ffn_sum,
            &ff.output_norm,
            dy,
            grads,
            &output_path.pp("LayerNorm"),
        )?;
        let (w2, b2) = dense(&ff.output, "output.dense")?;
        let g2 = linear_backward(&tape.activated, &w2, b2.is_some(), &d_sum, true)?;
        add_linear(grads, &output_path.pp("dense"), &g2.dw, g2.db.as_ref())?;
        let (w1, b1) = dense(&ff.intermediate, "intermediate.dense")?;
        let Some(b1) = b1 else {
            candle_core::bail!("the text feed-forward's intermediate.dense has no bias")
        };
        let d_act = g2.dx.ok_or_else(|| no_dx("output.dense"))?;
        let (d_inter, db1) = ops.bias_gelu_backward(&tape.intermediate, &b1, &d_act)?;
        let g1 = linear_backward(&tape.after_cross, &w1, false, &d_inter, true)?;
        add_linear(
            grads,
            &path.pp("intermediate").pp("dense"),
            &g1.dw,
            Some(&db1),
        )?;
        let d_inter_x = g1.dx.ok_or_else(|| no_dx("intermediate.dense"))?;
        let d_after_cross = ops.add(&d_sum, None, Some(&d_inter_x))?;
        // Cross-attention: c = LN(dense(cross(query(a), kv(image))) + a).
        let ca = &self.crossattention;
        let cross_path = path.pp("crossattention");
        let (d_cross_context, mut d_after_self) = ca.output.train_backward(
            &tape.cross_context,
            &tape.cross_sum,
            &d_after_cross,
            ops,
            grads,
            &cross_path.pp("output"),
        )?;
        let (d_query, d_kv) = ops.cross_attention_backward(
            &tape.query,
            &tape.kv,
            &tape.cross_context,
            &d_cross_context,
            &tape.cross_saved,
            ca.num_heads,
            1.0,
        )?;
        let cross_self = cross_path.pp("self");
        let (wq, bq) = dense(&ca.query, "crossattention.self.query")?;
        let gq = linear_backward(&tape.after_self, &wq, bq.is_some(), &d_query, true)?;
        let scale = 1.0 / (ca.head_dim as f64).sqrt();
        add_stacked(
            grads,
            &[cross_self.pp("query")],
            &gq.dw,
            gq.db.as_ref(),
            scale,
        )?;
        let d_query_x = gq.dx.ok_or_else(|| no_dx("crossattention query"))?;
        d_after_self = ops.add(&d_after_self, None, Some(&d_query_x))?;
        let (wkv, bkv) = dense(&ca.key_value, "crossattention.self.key_value")?;
        let gkv = linear_backward(image_embeds, &wkv, bkv.is_some(), &d_kv, d_image.is_some())?;
        add_stacked(
            grads,
            &[cross_self.pp("key"), cross_self.pp("value")],
            &gkv.dw,
            gkv.db.as_ref(),
            1.0,
        )?;
        if let (Some(sum), Some(dx)) = (d_image.as_mut(), gkv.dx) {
            *sum = ops.add(sum, None, Some(&dx))?;
        }
        // Self-attention: a = LN(dense(causal(qkv(x))) + x).
        let sa = &self.attention;
        let self_path = path.pp("attention");
        let (d_self_context, d_x) = sa.output.train_backward(
            &tape.self_context,
            &tape.self_sum,
            &d_after_self,
            ops,
            grads,
            &self_path.pp("output"),
        )?;
        let d_qkv = ops.self_attention_backward(
            &tape.qkv,
            &tape.self_context,
            &d_self_context,
            &tape.self_saved,
            sa.num_heads,
            1.0,
            true,
        )?;
        let (w, b) = dense(&sa.qkv, "attention.self.qkv")?;
        let g = linear_backward(&tape.x, &w, b.is_some(), &d_qkv, true)?;
        let sp = self_path.pp("self");
        let scale = 1.0 / (sa.head_dim as f64).sqrt();
        add_stacked(
            grads,
            &[sp.pp("query"), sp.pp("key"), sp.pp("value")],
            &g.dw,
            g.db.as_ref(),
            scale,
        )?;
        ops.add(
            &d_x,
            None,
            Some(&g.dx.ok_or_else(|| no_dx("attention qkv"))?),
        )
    }
}

impl BlipTextEmbeddings {
    fn train_forward(&self, input_ids: &Tensor, ops: &TrainOps) -> Result<(Tensor, Tensor)> {
        let (b, t) = input_ids.dims2()?;
        let word = self.word_embeddings.embeddings();
        let d = word.dim(1)?;
        let words = word
            .index_select(&input_ids.flatten_all()?, 0)?
            .reshape((b, t, d))?;
        let embedded = words.broadcast_add(&self.position_embeddings.narrow(0, 0, t)?)?;
        let out = norm(ops, &embedded, &self.layer_norm)?;
        Ok((out, embedded))
    }

    fn train_backward(
        &self,
        input_ids: &Tensor,
        embedded: &Tensor,
        dy: &Tensor,
        ops: &TrainOps,
        grads: &mut NamedGrads,
        path: &ParamPath,
    ) -> Result<()> {
        let d_embedded = norm_backward(
            ops,
            embedded,
            &self.layer_norm,
            dy,
            grads,
            &path.pp("LayerNorm"),
        )?;
        let (_, t, d) = d_embedded.dims3()?;
        let d_f32 = d_embedded.to_dtype(DType::F32)?;
        let positions = self.position_embeddings.dim(0)?;
        let name = path.pp("position_embeddings").name("weight");
        if grads.wants(&name) {
            let used = d_f32.sum(0)?;
            let d_pos = if positions > t {
                Tensor::cat(
                    &[
                        &used,
                        &Tensor::zeros((positions - t, d), DType::F32, used.device())?,
                    ],
                    0,
                )?
            } else {
                used
            };
            grads.add(name, &d_pos)?;
        }
        let name = path.pp("word_embeddings").name("weight");
        if grads.wants(&name) {
            let vocab = self.word_embeddings.embeddings().dim(0)?;
            let d_word = Tensor::zeros((vocab, d), DType::F32, d_f32.device())?.index_add(
                &input_ids.flatten_all()?,
                &d_f32.reshape(((), d))?,
                0,
            )?;
            grads.add(name, &d_word)?;
        }
        Ok(())
    }
}

impl BlipTextLMPredictionHead {
    /// Hidden states `(R, D)` -> logits `(R, V)` in the activation dtype.
    fn train_forward(&self, hidden: &Tensor, ops: &TrainOps) -> Result<(Tensor, HeadTape)> {
        let (wt, bt) = dense(&self.transform_dense, "transform.dense")?;
        let transform = linear(hidden, &wt, None)?;
        let Some(bt) = bt else {
            candle_core::bail!("the LM head's transform.dense has no bias")
        };
        let activated = ops.bias_gelu(&transform, &bt)?;
        let normed = norm(ops, &activated, &self.transform_norm)?;
        let (wd, bd) = dense(&self.decoder, "the LM head decoder")?;
        let logits = ops.linear(&normed, &wd, bd.as_ref(), None)?;
        let tape = HeadTape {
            hidden: hidden.clone(),
            transform,
            activated,
            normed,
        };
        Ok((logits, tape))
    }

    /// `d hidden` `(R, D)`; `path` is `cls.predictions`, `word_embeddings` the name of the word
    /// embedding matrix (the tied decoder weight).
    fn train_backward(
        &self,
        tape: HeadTape,
        d_logits: &Tensor,
        ops: &TrainOps,
        grads: &mut NamedGrads,
        path: &ParamPath,
        word_embeddings: &str,
    ) -> Result<Tensor> {
        let (wd, bd) = dense(&self.decoder, "the LM head decoder")?;
        let gd = linear_backward(&tape.normed, &wd, bd.is_some(), d_logits, true)?;
        let decoder_name = if self.tied {
            word_embeddings.to_string()
        } else {
            path.pp("decoder").name("weight")
        };
        grads.add(decoder_name, &gd.dw)?;
        if let Some(db) = &gd.db {
            grads.add(path.name("bias"), db)?;
        }
        let transform_path = path.pp("transform");
        let d_act = norm_backward(
            ops,
            &tape.activated,
            &self.transform_norm,
            &gd.dx.ok_or_else(|| no_dx("the LM head decoder"))?,
            grads,
            &transform_path.pp("LayerNorm"),
        )?;
        let (wt, bt) = dense(&self.transform_dense, "transform.dense")?;
        let Some(bt) = bt else {
            candle_core::bail!("the LM head's transform.dense has no bias")
        };
        let (d_transform, dbt) = ops.bias_gelu_backward(&tape.transform, &bt, &d_act)?;
        let g = linear_backward(&tape.hidden, &wt, false, &d_transform, true)?;
        add_linear(grads, &transform_path.pp("dense"), &g.dw, Some(&dbt))?;
        g.dx.ok_or_else(|| no_dx("transform.dense"))
    }
}

impl BlipTextLMHeadModel {
    /// Teacher-forced training forward: `input_ids` `(B, T)` over image embeds `(B, M, D_v)`
    /// -> hidden states `(B, T, D)` and what the backward reads.
    pub fn train_forward(
        &self,
        input_ids: &Tensor,
        image_embeds: &Tensor,
        ops: &TrainOps,
    ) -> Result<(Tensor, TextTape)> {
        let (mut xs, embedded) = self.embeddings.train_forward(input_ids, ops)?;
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (out, tape) = layer.train_forward(&xs, image_embeds, ops)?;
            layers.push(tape);
            xs = out;
        }
        Ok((
            xs,
            TextTape {
                input_ids: input_ids.clone(),
                embedded,
                layers,
            },
        ))
    }

    /// Hidden states `(R, D)` -> logits `(R, V)` (activation dtype) and the head's tape.
    pub fn train_logits(&self, hidden: &Tensor, ops: &TrainOps) -> Result<(Tensor, HeadTape)> {
        self.predictions.train_forward(hidden, ops)
    }

    /// Backward of the LM head: `d hidden` `(R, D)` for `d logits` `(R, V)`; `path` is the
    /// decoder's checkpoint prefix (`text_decoder`).
    pub fn train_logits_backward(
        &self,
        tape: HeadTape,
        d_logits: &Tensor,
        ops: &TrainOps,
        grads: &mut NamedGrads,
        path: &ParamPath,
    ) -> Result<Tensor> {
        let words = path
            .pp("bert")
            .pp("embeddings")
            .pp("word_embeddings")
            .name("weight");
        self.predictions.train_backward(
            tape,
            d_logits,
            ops,
            grads,
            &path.pp("cls").pp("predictions"),
            &words,
        )
    }

    /// Backward of [`Self::train_forward`] for `d hidden` `(B, T, D)`; returns the image
    /// embeds' gradient when `image_grad` (the vision tower trains).
    #[allow(clippy::too_many_arguments)]
    pub fn train_backward(
        &self,
        tape: TextTape,
        d_hidden: &Tensor,
        image_embeds: &Tensor,
        image_grad: bool,
        ops: &TrainOps,
        grads: &mut NamedGrads,
        path: &ParamPath,
    ) -> Result<Option<Tensor>> {
        let bert = path.pp("bert");
        let layers_path = bert.pp("encoder").pp("layer");
        let mut d_image = if image_grad {
            Some(image_embeds.zeros_like()?)
        } else {
            None
        };
        let mut dx = d_hidden.clone();
        for (i, (layer, layer_tape)) in self.layers.iter().zip(tape.layers).enumerate().rev() {
            dx = layer.train_backward(
                layer_tape,
                &dx,
                image_embeds,
                &mut d_image,
                ops,
                grads,
                &layers_path.pp(i),
            )?;
        }
        self.embeddings.train_backward(
            &tape.input_ids,
            &tape.embedded,
            &dx,
            ops,
            grads,
            &bert.pp("embeddings"),
        )?;
        Ok(d_image)
    }
}
