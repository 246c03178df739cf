//! BLIP captioning training with an explicit backward pass: the same model structs as inference
//! (one definition), each with a training forward that keeps what its backward reads and the
//! backward beside it, in the manner of llm.c. No autograd graph is built: candle's autograd adds
//! a zeros + add per gradient edge and stores every intermediate (measured 56% of a step in
//! element-wise launches, docs/training.md), where this pass runs one GEMM per weight gradient
//! and the fused kernels of [`TrainOps`].

mod text;
mod vision;

pub use text::{HeadTape, TextTape};
pub use vision::VisionTape;

use candle_core::{DType, Result, Tensor};

use super::BlipForConditionalGeneration;
use crate::kernels::backprop::TrainOps;
use crate::models::gradients::{NamedGrads, ParamPath};

/// What the vision tower keeps for its backward pass (`train.gradient_checkpointing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activations {
    /// Every layer's activations, from the forward to the backward (the fastest).
    #[default]
    Stored,
    /// Each layer's input only; the backward runs the layer's forward again first (activation
    /// recomputation: one more vision forward per step for most of the activation memory).
    Recomputed,
}

/// Decoder inputs and the loss targets of one captioning batch.
#[derive(Debug, Clone, Copy)]
pub struct CaptionTargets<'a> {
    /// `(B, T)` u32 decoder inputs.
    pub input_ids: &'a Tensor,
    /// `(B, T-1)` u32: `input_ids` shifted left by one.
    pub targets: &'a Tensor,
    /// `(B, T-1)` f32: 1 for the counted targets, 0 for the prompt and padding.
    pub weights: &'a Tensor,
    /// Number of counted targets (the loss is their mean).
    pub counted: usize,
    pub label_smoothing: f64,
}

impl BlipForConditionalGeneration {
    /// One forward and backward of the mean label-smoothed caption loss (HF/LAVIS masking):
    /// returns the loss and adds the gradients of `loss * grad_factor` (loss scale / gradient
    /// accumulation) to `grads` under the checkpoint names. Only the parameters `grads` asks
    /// for get gradients; a frozen vision tower gets no backward pass at all. `activations`: what
    /// the vision tower keeps between its forward and backward (the gradients are the same).
    pub fn train_caption_step(
        &self,
        pixel_values: &Tensor,
        batch: CaptionTargets<'_>,
        grad_factor: f64,
        ops: &TrainOps,
        activations: Activations,
        grads: &mut NamedGrads,
    ) -> Result<f64> {
        let vision_path = ParamPath::root("vision_model");
        let text_path = ParamPath::root("text_decoder");
        let (image_embeds, vision_tape) =
            self.vision_model
                .train_forward(pixel_values, ops, activations)?;
        let (hidden, text_tape) =
            self.text_decoder
                .train_forward(batch.input_ids, &image_embeds, ops)?;
        let (b, t, d) = hidden.dims3()?;
        if t < 2 {
            candle_core::bail!("a caption batch needs at least one token after the bos");
        }
        // The last position predicts nothing: the head runs on the first T-1 only.
        let predicting = hidden
            .narrow(1, 0, t - 1)?
            .contiguous()?
            .reshape((b * (t - 1), d))?;
        let (logits, head_tape) = self.text_decoder.train_logits(&predicting, ops)?;
        let counted = batch.counted.max(1) as f64;
        let (loss_sum, d_logits) = ops.cross_entropy(
            &logits,
            &batch.targets.flatten_all()?,
            &batch.weights.flatten_all()?.to_dtype(DType::F32)?,
            batch.label_smoothing,
            grad_factor / counted,
        )?;
        drop(logits);
        let d_predicting = self
            .text_decoder
            .train_logits_backward(head_tape, &d_logits, ops, grads, &text_path)?;
        drop(d_logits);
        let d_hidden = Tensor::cat(
            &[
                &d_predicting.reshape((b, t - 1, d))?,
                &Tensor::zeros((b, 1, d), d_predicting.dtype(), d_predicting.device())?,
            ],
            1,
        )?;
        let vision_trains = grads.wants_any_under(&vision_path);
        let d_image = self.text_decoder.train_backward(
            text_tape,
            &d_hidden,
            &image_embeds,
            vision_trains,
            ops,
            grads,
            &text_path,
        )?;
        if let Some(d_image) = d_image {
            self.vision_model
                .train_backward(vision_tape, &d_image, ops, grads, &vision_path)?;
        }
        let loss = loss_sum.to_dtype(DType::F64)?.to_scalar::<f64>()? / counted;
        Ok(loss)
    }
}
