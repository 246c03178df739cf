//! One optimizer step of `vlmrun train`: `grad_accumulation` micro-batches, each building the model
//! in the compute dtype from the master weights (a differentiable cast), forward, label-smoothed
//! loss, backward (loss scaled under f16); then gradients unscaled and checked, clipped by global
//! norm, AdamW at the schedule's learning rate. A non-finite loss in f32/bf16 is
//! [`Error::Diverged`], naming the step and the last good checkpoint.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::compute_copy::ComputeCopy;
use super::data::SampleOrder;
use super::grads::ParamGrads;
use super::loss::caption_loss;
use super::optim::grad_norm_and_clip;
use super::params::TrainParams;
use super::prepare::Session;
use super::scaler::LossScaler;
use crate::config::{BackwardPass, TrainConfig};
use crate::error::Error;
use crate::kernels::fused::FusedOps;
use crate::models::blip::backprop::{Activations, CaptionTargets};
use crate::models::blip::config::Activation;
use crate::models::blip::{BlipConfig, BlipForConditionalGeneration};
use crate::models::gradients::NamedGrads;

/// What one step did.
pub struct Stepped {
    /// Mean unscaled loss over the micro-batches.
    pub loss: f64,
    pub lr: f64,
    /// NaN when the step was skipped.
    pub grad_norm: f64,
    /// The loss scale the step ran with (1 without f16 scaling).
    pub loss_scale: f64,
    /// Non-finite gradients under f16 scaling: the update was skipped.
    pub skipped: bool,
    /// Wall time of the step, synchronised.
    pub seconds: f64,
}

/// Runs step `session.state.step + 1` on the next samples of `order` and advances the state.
/// With `dump_grads`, the step's gradients (before unscaling and clipping) are saved there too.
pub fn step(
    session: &mut Session,
    order: &mut SampleOrder,
    dump_grads: Option<&std::path::Path>,
) -> Result<Stepped, Error> {
    let Session {
        train,
        dev,
        dtype,
        weights,
        inputs,
        params,
        schedule,
        optimizer,
        scaler,
        state,
        last_checkpoint,
        train_ops,
        backprop_ops,
        fused_adamw,
        compute_copy,
        ..
    } = session;
    let (train, dtype) = (*train, *dtype);
    let step_started = Instant::now();
    let micro_batches = train.grad_accumulation;
    let mut loss = 0.0;
    let mut next_batch = || {
        let indices = order.take(state.samples_seen, train.batch_size);
        state.samples_seen += train.batch_size as u64;
        inputs.batch(&indices, dtype, dev).map_err(Error::input)
    };
    let mut grads = if explicit_backward(train, &weights.config) {
        // One model build per step (not per micro-batch), from the updated master weights: from
        // their compute-dtype copy where the fused AdamW keeps one.
        if compute_copy.is_none() {
            *compute_copy = ComputeCopy::make(params, dtype, fused_adamw).map_err(internal)?;
        }
        let tensors = match compute_copy.as_ref() {
            Some(copy) => copy.tensors().clone(),
            None => params.model_tensors(),
        };
        let model = compute_model(tensors, &weights.config, dtype, dev, FusedOps::disabled())?;
        let mut named = NamedGrads::new(params.trainable().map(|p| p.name.clone()));
        let grad_factor = scaler.scale() / micro_batches as f64;
        let activations = if train.gradient_checkpointing {
            Activations::Recomputed
        } else {
            Activations::Stored
        };
        for _ in 0..micro_batches {
            let (pixels, batch) = next_batch()?;
            let targets = CaptionTargets {
                input_ids: &batch.input_ids,
                targets: &batch.targets,
                weights: &batch.weights,
                counted: batch.target_tokens,
                label_smoothing: train.label_smoothing,
            };
            let micro = model
                .train_caption_step(
                    &pixels,
                    targets,
                    grad_factor,
                    backprop_ops,
                    activations,
                    &mut named,
                )
                .map_err(|err| Error::Internal(format!("training step: {err}")))?;
            loss += micro / micro_batches as f64;
        }
        drop(model);
        ParamGrads::from_named_cast(named.into_map(), params, fused_adamw).map_err(internal)?
    } else {
        let mut sum: Option<ParamGrads> = None;
        for _ in 0..micro_batches {
            let (pixels, batch) = next_batch()?;
            let micro = forward_backward(
                params,
                &weights.config,
                dtype,
                dev,
                &pixels,
                &batch,
                train,
                scaler,
                train_ops,
            )?;
            loss += micro.loss / micro_batches as f64;
            match sum.as_mut() {
                None => sum = Some(micro.grads),
                Some(sum) => sum.accumulate(micro.grads).map_err(internal)?,
            }
        }
        sum.ok_or_else(|| Error::Internal("no micro-batch ran".into()))?
    };
    if let Some(path) = dump_grads {
        save_grads(&grads, loss, path)?;
    }
    let lr = schedule.lr_at(state.step);
    let loss_scale = scaler.scale();
    let max_norm = train.max_grad_norm.max(0.0);
    // Norm and clipping factor when already known (the fused norm sums squares in f64, which no
    // finite f32 gradient overflows: it is finite exactly when every gradient is).
    let mut norm_and_scale = None;
    let found_non_finite = if scaler.is_enabled() {
        let found = scaler.unscale(&mut grads).map_err(internal)?;
        scaler.update(found);
        found
    } else if fused_adamw.enabled() {
        let (norm, scale) = grad_norm_and_clip(&grads, max_norm, fused_adamw).map_err(internal)?;
        norm_and_scale = Some((norm, scale));
        !loss.is_finite() || !norm.is_finite()
    } else {
        !loss.is_finite() || !grads.all_finite().map_err(internal)?
    };
    if found_non_finite && !scaler.is_enabled() {
        return Err(Error::Diverged(format!(
            "the loss or its gradients became non-finite at step {} (loss {loss}) in {}\n  last good checkpoint: {}\n  fix: lower train.lr, raise train.warmup_steps, or train in f32; resume from that checkpoint with --resume",
            state.step + 1,
            dtype.as_str(),
            last_checkpoint
                .as_ref()
                .map_or("none (no checkpoint was written yet)".to_string(), |p| p.display().to_string())
        )));
    }
    let (grad_norm, grad_scale) = match norm_and_scale {
        _ if found_non_finite => (f64::NAN, 1.0),
        Some(known) => known,
        None => grad_norm_and_clip(&grads, max_norm, fused_adamw).map_err(internal)?,
    };
    if !found_non_finite {
        let copy = compute_copy.as_ref().map(ComputeCopy::tensors);
        let copy_current = optimizer
            .step_scaled_with_copy(params, &grads, lr, grad_scale, copy)
            .map_err(internal)?;
        if !copy_current {
            *compute_copy = None;
        }
    }
    drop(grads);
    dev.synchronize().map_err(internal)?;
    state.step += 1;
    let seconds = step_started.elapsed().as_secs_f64();
    Ok(Stepped {
        loss,
        lr,
        grad_norm,
        loss_scale,
        skipped: found_non_finite,
        seconds,
    })
}

/// What one micro-batch produced.
struct MicroBatch {
    /// Unscaled mean loss.
    loss: f64,
    /// Gradients of `loss * scale / grad_accumulation`.
    grads: ParamGrads,
}

#[allow(clippy::too_many_arguments)]
fn forward_backward(
    params: &TrainParams,
    config: &BlipConfig,
    dtype: DType,
    dev: &Device,
    pixels: &Tensor,
    batch: &super::loss::CaptionBatch,
    train: &TrainConfig,
    scaler: &LossScaler,
    ops: &FusedOps,
) -> Result<MicroBatch, Error> {
    let compute = |what: &'static str| {
        move |err: candle_core::Error| Error::Internal(format!("training step, {what}: {err}"))
    };
    let vb = VarBuilder::from_tensors(params.model_tensors(), dtype, dev);
    let model = BlipForConditionalGeneration::new_trainable(config, vb, ops.clone())
        .map_err(compute("building the model"))?;
    let logits = model
        .forward(pixels, &batch.input_ids)
        .map_err(compute("forward"))?;
    let loss = caption_loss(&logits, batch, train.label_smoothing).map_err(compute("loss"))?;
    let value = loss
        .to_dtype(DType::F64)
        .and_then(|l| l.to_scalar::<f64>())
        .map_err(compute("reading the loss"))?;
    let scaled = scaler
        .scale_loss(
            &loss
                .affine(1.0 / train.grad_accumulation as f64, 0.0)
                .map_err(compute("loss"))?,
        )
        .map_err(compute("scaling the loss"))?;
    let store = scaled.backward().map_err(compute("backward"))?;
    let grads = ParamGrads::from_store(store, params).map_err(internal)?;
    Ok(MicroBatch { loss: value, grads })
}

/// Writes `grads` (f32, by parameter name) and the loss as safetensors metadata-free tensors:
/// the loss is stored as the scalar tensor `__loss__`.
fn save_grads(grads: &ParamGrads, loss: f64, path: &std::path::Path) -> Result<(), Error> {
    let mut tensors = std::collections::HashMap::new();
    for (name, grad) in grads.iter() {
        if let Some(grad) = grad {
            let host = grad.to_device(&Device::Cpu).map_err(internal)?;
            tensors.insert(name.to_string(), host);
        }
    }
    let loss = Tensor::new(&[loss as f32], &Device::Cpu).map_err(internal)?;
    tensors.insert("__loss__".to_string(), loss);
    candle_core::safetensors::save(&tensors, path).map_err(|err| Error::Output {
        what: "the gradient dump",
        path: path.to_path_buf(),
        source: std::io::Error::other(err.to_string()),
    })
}

/// Whether the step runs the explicit backward pass: `train.backward: explicit` and a model whose
/// layers it covers (exact-GELU activations, as every BLIP checkpoint has); otherwise autograd.
pub fn explicit_backward(train: &TrainConfig, config: &BlipConfig) -> bool {
    train.backward == BackwardPass::Explicit
        && config.vision_config.hidden_act == Activation::GeluErf
        && config.text_config.hidden_act == Activation::GeluErf
}

/// The model in the compute dtype from `tensors` (the master weights or their compute copy, by
/// name), detached: no autograd graph.
fn compute_model(
    tensors: std::collections::HashMap<String, Tensor>,
    config: &BlipConfig,
    dtype: DType,
    dev: &Device,
    ops: FusedOps,
) -> Result<BlipForConditionalGeneration, Error> {
    let tensors = tensors
        .into_iter()
        .map(|(name, t)| (name, t.detach()))
        .collect();
    let vb = VarBuilder::from_tensors(tensors, dtype, dev);
    BlipForConditionalGeneration::new_trainable(config, vb, ops)
        .map_err(|err| Error::Internal(format!("training step, building the model: {err}")))
}

fn internal(err: impl std::fmt::Display) -> Error {
    Error::Internal(format!("training step: {err}"))
}
