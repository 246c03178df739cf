//! The model's weights in the compute dtype (bf16/f16), kept from one step to the next on CUDA.
//! Made once from the master weights (one multi-tensor cast launch), then rewritten by the fused
//! AdamW in the same pass as each update (`AdamW::step_scaled_with_copy`), so a step builds its
//! model without converting every weight again: candle's `to_dtype` is a launch per tensor, ~480
//! launches and ~1.6 ms of GPU time per BLIP-base step (docs/training.md's profile).
//!
//! Where the kernels do not apply (CPU, f32 compute, `train.fused_kernels: false`) there is no
//! copy and the step converts the master weights as before.

use std::collections::HashMap;

use candle_core::{DType, Tensor};

use super::params::TrainParams;
use crate::kernels::adamw::FusedAdamW;

/// Every model tensor by name in the compute dtype; the trainable ones equal the f32 master
/// weights rounded to that dtype as long as the optimizer keeps it current.
#[derive(Debug)]
pub struct ComputeCopy {
    tensors: HashMap<String, Tensor>,
}

impl ComputeCopy {
    /// The copy of `params` in `dtype`; `None` when `dtype` is f32 (the model reads the master
    /// weights themselves) or the cast kernel does not apply.
    pub fn make(
        params: &TrainParams,
        dtype: DType,
        kernels: &FusedAdamW,
    ) -> candle_core::Result<Option<Self>> {
        if dtype == DType::F32 || !kernels.enabled() {
            return Ok(None);
        }
        // The master weights, frozen ones included, are all f32 (`prepare::load_master_weights`).
        let mut tensors = params.model_tensors();
        if !cast_entries(&mut tensors, DType::F32, dtype, kernels)?
            || tensors.values().any(|t| t.dtype() != dtype)
        {
            return Ok(None);
        }
        Ok(Some(Self { tensors }))
    }

    /// The tensors to build the model from (shared storage, no copy).
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }
}

/// Replaces every `from` entry of `tensors` by its conversion to `to`, all in one launch of the
/// multi-tensor cast; `false` (nothing replaced) where that kernel does not apply.
pub fn cast_entries(
    tensors: &mut HashMap<String, Tensor>,
    from: DType,
    to: DType,
    kernels: &FusedAdamW,
) -> candle_core::Result<bool> {
    let names: Vec<String> = tensors
        .iter()
        .filter(|(_, t)| t.dtype() == from)
        .map(|(n, _)| n.clone())
        .collect();
    let sources: Vec<&Tensor> = names.iter().filter_map(|n| tensors.get(n)).collect();
    if sources.is_empty() {
        return Ok(true);
    }
    let Some(cast) = kernels.cast_many(&sources, to)? else {
        return Ok(false);
    };
    tensors.extend(names.into_iter().zip(cast));
    Ok(true)
}
