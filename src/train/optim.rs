//! AdamW on f32 master weights, as `torch.optim.AdamW` (decoupled weight decay, PyTorch's bias
//! correction), with a per-parameter decay flag, and gradient clipping by global L2 norm as
//! `torch.nn.utils.clip_grad_norm_`. The state (per parameter: step count, first and second moments)
//! goes to and from a name -> tensor map for checkpoints.
//!
//! One step, for a parameter `p` with gradient `g` at learning rate `lr` (PyTorch's single-tensor
//! path, `amsgrad = maximize = False`):
//!
//! ```text
//! t   += 1
//! p   *= 1 - lr * weight_decay              (only when the parameter's decay flag is set)
//! m   += (g - m) * (1 - beta1)              (torch: exp_avg.lerp_(g, 1 - beta1))
//! v    = v * beta2 + g * g * (1 - beta2)
//! p   -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```
//!
//! A parameter whose gradient is missing (it took no part in the loss) is skipped entirely, decay
//! included, and its step count does not advance (PyTorch skips `grad is None`).

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::grads::{GradsError, ParamGrads};
use super::params::{TrainParam, TrainParams};
use crate::kernels::adamw::{AdamWItem, AdamWScalars, FusedAdamW};

#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("gradients are for {grads} parameters in another order than the optimizer's {params} (first difference: {first})\n  fix: build the gradients with ParamGrads::from_store from this parameter set")]
    Mismatch {
        grads: usize,
        params: usize,
        first: String,
    },

    #[error("AdamW update of {name}: {source}")]
    Tensor {
        name: String,
        #[source]
        source: candle_core::Error,
    },

    #[error(transparent)]
    Grads(#[from] GradsError),

    #[error("optimizer state: {key} {problem}\n  fix: resume with the same trainable parameters (same freeze setting and model) as the checkpoint, or start with --fresh")]
    State { key: String, problem: String },
}

/// AdamW hyper-parameters (defaults: `torch.optim.AdamW`'s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

/// Per-parameter state, created at the parameter's first step (as PyTorch's lazy state).
#[derive(Debug, Clone)]
struct Moments {
    step: u64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// AdamW over the trainable parameters of one [`TrainParams`].
#[derive(Debug, Clone)]
pub struct AdamW {
    config: AdamWConfig,
    /// One kernel per parameter on CUDA (see [`AdamW::with_kernels`]); the composed update
    /// otherwise.
    fused: FusedAdamW,
    /// Trainable parameter names, the order of `moments` and of [`ParamGrads`].
    names: Vec<String>,
    moments: Vec<Option<Moments>>,
}

/// Suffixes of the state map's keys: `<param name>.<suffix>`.
const STEP_KEY: &str = "step";
const EXP_AVG_KEY: &str = "exp_avg";
const EXP_AVG_SQ_KEY: &str = "exp_avg_sq";

impl AdamW {
    pub fn new(params: &TrainParams, config: AdamWConfig) -> Self {
        let names: Vec<String> = params.trainable().map(|p| p.name.clone()).collect();
        let moments = vec![None; names.len()];
        Self {
            config,
            fused: FusedAdamW::disabled(),
            names,
            moments,
        }
    }

    /// Updates CUDA parameters with the fused kernels of `fused` (f32 on the device, one pass
    /// per tensor) instead of the composed tensor ops; CPU parameters keep the composed update.
    pub fn with_kernels(mut self, fused: FusedAdamW) -> Self {
        self.fused = fused;
        self
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Steps taken by the parameter `name` (0 before its first update or for unknown names).
    pub fn param_step(&self, name: &str) -> u64 {
        self.names
            .iter()
            .position(|n| n == name)
            .and_then(|index| self.moments.get(index))
            .and_then(|m| m.as_ref())
            .map_or(0, |m| m.step)
    }

    /// One AdamW update of every trainable parameter that has a gradient, at learning rate `lr`.
    pub fn step(
        &mut self,
        params: &TrainParams,
        grads: &ParamGrads,
        lr: f64,
    ) -> Result<(), OptimError> {
        self.step_scaled(params, grads, lr, 1.0)
    }

    /// [`AdamW::step`] with every gradient multiplied by `grad_scale` first (gradient clipping's
    /// coefficient, applied inside the fused kernel instead of a pass of its own).
    pub fn step_scaled(
        &mut self,
        params: &TrainParams,
        grads: &ParamGrads,
        lr: f64,
        grad_scale: f64,
    ) -> Result<(), OptimError> {
        self.step_scaled_with_copy(params, grads, lr, grad_scale, None)
            .map(|_| ())
    }

    /// [`AdamW::step_scaled`] that also rewrites `copy` (the compute-dtype copy of the weights,
    /// by parameter name) from the updated weights in the fused kernel's pass. `true` when it did;
    /// `false` when the copy no longer matches the weights (the update ran another way) and must
    /// be made again.
    pub fn step_scaled_with_copy(
        &mut self,
        params: &TrainParams,
        grads: &ParamGrads,
        lr: f64,
        grad_scale: f64,
        copy: Option<&HashMap<String, Tensor>>,
    ) -> Result<bool, OptimError> {
        let trainable: Vec<_> = params.trainable().collect();
        let aligned = trainable.len() == self.names.len()
            && grads.len() == self.names.len()
            && trainable.iter().zip(grads.iter()).zip(&self.names).all(
                |((param, (grad_name, _)), name)| param.name == *name && grad_name == name.as_str(),
            );
        if !aligned {
            let first = trainable
                .iter()
                .map(|p| p.name.as_str())
                .zip(grads.iter().map(|(n, _)| n))
                .find(|(a, b)| a != b)
                .map_or_else(
                    || "the counts differ".to_string(),
                    |(a, b)| format!("{a} vs {b}"),
                );
            return Err(OptimError::Mismatch {
                grads: grads.len(),
                params: trainable.len(),
                first,
            });
        }
        let config = self.config;
        if self.fused.enabled() {
            // With a copy, every stepped parameter must have its entry; else the copy goes stale.
            if let Some(copy) = copy {
                if self.step_all_fused(&trainable, grads, lr, grad_scale, Some(copy))? {
                    return Ok(true);
                }
            }
            if self.step_all_fused(&trainable, grads, lr, grad_scale, None)? {
                return Ok(false);
            }
        }
        for ((param, (_, grad)), slot) in trainable
            .iter()
            .zip(grads.iter())
            .zip(self.moments.iter_mut())
        {
            let (Some(grad), Some(var)) = (grad, param.var()) else {
                continue;
            };
            let tensor_error = |source| OptimError::Tensor {
                name: param.name.clone(),
                source,
            };
            let moments = match slot {
                Some(moments) => moments,
                None => slot.insert(Moments {
                    step: 0,
                    exp_avg: var.zeros_like().map_err(tensor_error)?,
                    exp_avg_sq: var.zeros_like().map_err(tensor_error)?,
                }),
            };
            let weight_decay = if param.decay {
                config.weight_decay
            } else {
                0.0
            };
            let scalars = step_scalars(moments.step + 1, &config, weight_decay, lr, grad_scale);
            let fused = self
                .fused
                .update(
                    var.as_tensor(),
                    grad,
                    &moments.exp_avg,
                    &moments.exp_avg_sq,
                    &scalars,
                )
                .map_err(tensor_error)?;
            if fused {
                moments.step += 1;
                continue;
            }
            let scaled;
            let grad = if grad_scale == 1.0 {
                grad
            } else {
                scaled = grad.affine(grad_scale, 0.0).map_err(tensor_error)?;
                &scaled
            };
            let updated = adamw_update(var.as_tensor(), grad, moments, &config, weight_decay, lr)
                .map_err(tensor_error)?;
            var.set(&updated).map_err(tensor_error)?;
        }
        Ok(false)
    }

    /// Every parameter with a gradient in one multi-tensor launch of the fused kernel, writing
    /// each one's entry of `copy` too when given; `false` (nothing stepped, moments created at
    /// most) when the kernel does not apply to some tensor or `copy` lacks a stepped parameter.
    fn step_all_fused(
        &mut self,
        trainable: &[&TrainParam],
        grads: &ParamGrads,
        lr: f64,
        grad_scale: f64,
        copy: Option<&HashMap<String, Tensor>>,
    ) -> Result<bool, OptimError> {
        let mut stepped = Vec::with_capacity(trainable.len());
        for (i, (param, (_, grad))) in trainable.iter().zip(grads.iter()).enumerate() {
            let (Some(_), Some(var)) = (grad, param.var()) else {
                continue;
            };
            if self.moments[i].is_none() {
                let tensor_error = |source| OptimError::Tensor {
                    name: param.name.clone(),
                    source,
                };
                self.moments[i] = Some(Moments {
                    step: 0,
                    exp_avg: var.zeros_like().map_err(tensor_error)?,
                    exp_avg_sq: var.zeros_like().map_err(tensor_error)?,
                });
            }
            stepped.push(i);
        }
        let config = self.config;
        let grad_list: Vec<Option<&Tensor>> = grads.iter().map(|(_, g)| g).collect();
        let mut items = Vec::with_capacity(stepped.len());
        for &i in &stepped {
            let (param, moments) = (trainable[i], &self.moments[i]);
            let (Some(Some(grad)), Some(var), Some(moments)) =
                (grad_list.get(i), param.var(), moments)
            else {
                return Ok(false);
            };
            let weight_decay = if param.decay {
                config.weight_decay
            } else {
                0.0
            };
            let copy = match copy {
                None => None,
                Some(copy) => match copy.get(&param.name) {
                    Some(entry) => Some(entry),
                    None => return Ok(false),
                },
            };
            items.push(AdamWItem {
                param: var.as_tensor(),
                grad,
                exp_avg: &moments.exp_avg,
                exp_avg_sq: &moments.exp_avg_sq,
                copy,
                scalars: step_scalars(moments.step + 1, &config, weight_decay, lr, grad_scale),
            });
        }
        let applied = self
            .fused
            .update_many(&items)
            .map_err(|source| OptimError::Tensor {
                name: "every trainable parameter (multi-tensor update)".into(),
                source,
            })?;
        if applied {
            for i in stepped {
                if let Some(moments) = self.moments[i].as_mut() {
                    moments.step += 1;
                }
            }
        }
        Ok(applied)
    }

    /// The state as a name -> tensor map: `<param>.step` (i64 scalar) for every trainable parameter,
    /// and `<param>.exp_avg` / `<param>.exp_avg_sq` (f32) for those stepped at least once.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>, OptimError> {
        let mut map = HashMap::new();
        for (name, moments) in self.names.iter().zip(&self.moments) {
            let step = moments.as_ref().map_or(0, |m| m.step);
            let step = i64::try_from(step).unwrap_or(i64::MAX);
            let step_tensor = Tensor::new(step, &candle_core::Device::Cpu).map_err(|source| {
                OptimError::Tensor {
                    name: name.clone(),
                    source,
                }
            })?;
            map.insert(format!("{name}.{STEP_KEY}"), step_tensor);
            if let Some(moments) = moments {
                map.insert(format!("{name}.{EXP_AVG_KEY}"), moments.exp_avg.clone());
                map.insert(
                    format!("{name}.{EXP_AVG_SQ_KEY}"),
                    moments.exp_avg_sq.clone(),
                );
            }
        }
        Ok(map)
    }

    /// Restores the state written by [`AdamW::state_tensors`] (moments go to each parameter's
    /// device as f32). The map must hold a step for exactly this optimizer's trainable parameters.
    pub fn load_state(
        &mut self,
        params: &TrainParams,
        state: &HashMap<String, Tensor>,
    ) -> Result<(), OptimError> {
        let state_error = |key: &str, problem: String| OptimError::State {
            key: key.to_string(),
            problem,
        };
        for key in state.keys() {
            let owner = [STEP_KEY, EXP_AVG_KEY, EXP_AVG_SQ_KEY]
                .iter()
                .find_map(|suffix| key.strip_suffix(&format!(".{suffix}")));
            match owner {
                Some(name) if self.names.iter().any(|n| n == name) => {}
                Some(name) => {
                    return Err(state_error(
                        key,
                        format!("belongs to {name}, which is not a trainable parameter now"),
                    ))
                }
                None => return Err(state_error(key, "is not an AdamW state entry".into())),
            }
        }
        let mut restored = Vec::with_capacity(self.names.len());
        for name in &self.names {
            let step_key = format!("{name}.{STEP_KEY}");
            let step = state
                .get(&step_key)
                .ok_or_else(|| {
                    state_error(
                        &step_key,
                        "is missing: the parameter was not trainable when the state was saved"
                            .into(),
                    )
                })?
                .to_dtype(DType::I64)
                .and_then(|t| t.to_scalar::<i64>())
                .map_err(|err| state_error(&step_key, err.to_string()))?;
            let step = u64::try_from(step)
                .map_err(|_| state_error(&step_key, format!("is negative ({step})")))?;
            if step == 0 {
                restored.push(None);
                continue;
            }
            let param = params
                .get(name)
                .and_then(|p| p.var())
                .ok_or_else(|| state_error(name, "is not a trainable parameter".into()))?;
            let moment = |suffix: &str| -> Result<Tensor, OptimError> {
                let key = format!("{name}.{suffix}");
                let tensor = state
                    .get(&key)
                    .ok_or_else(|| state_error(&key, "is missing".into()))?;
                if tensor.dims() != param.dims() {
                    return Err(state_error(
                        &key,
                        format!(
                            "has shape {:?}, the parameter has {:?}",
                            tensor.dims(),
                            param.dims()
                        ),
                    ));
                }
                tensor
                    .to_dtype(DType::F32)
                    .and_then(|t| t.to_device(param.device()))
                    .map_err(|err| state_error(&key, err.to_string()))
            };
            restored.push(Some(Moments {
                step,
                exp_avg: moment(EXP_AVG_KEY)?,
                exp_avg_sq: moment(EXP_AVG_SQ_KEY)?,
            }));
        }
        self.moments = restored;
        Ok(())
    }
}

/// The scalars of step `step` (1-based) for the fused kernel, as [`adamw_update`] computes them.
fn step_scalars(
    step: u64,
    config: &AdamWConfig,
    weight_decay: f64,
    lr: f64,
    grad_scale: f64,
) -> AdamWScalars {
    let step = i32::try_from(step).unwrap_or(i32::MAX);
    AdamWScalars {
        grad_scale,
        decay_factor: 1.0 - lr * weight_decay,
        beta1: config.beta1,
        beta2: config.beta2,
        inv_bias_correction2_sqrt: 1.0 / (1.0 - config.beta2.powi(step)).sqrt(),
        eps: config.eps,
        step_size: lr / (1.0 - config.beta1.powi(step)),
    }
}

/// The AdamW formula of the module doc for one parameter; advances `moments` and returns the new
/// parameter value.
fn adamw_update(
    param: &Tensor,
    grad: &Tensor,
    moments: &mut Moments,
    config: &AdamWConfig,
    weight_decay: f64,
    lr: f64,
) -> candle_core::Result<Tensor> {
    moments.step += 1;
    let step = i32::try_from(moments.step).unwrap_or(i32::MAX);
    let decayed = if weight_decay != 0.0 {
        param.affine(1.0 - lr * weight_decay, 0.0)?
    } else {
        param.clone()
    };
    let exp_avg = moments.exp_avg.add(
        &grad
            .sub(&moments.exp_avg)?
            .affine(1.0 - config.beta1, 0.0)?,
    )?;
    let exp_avg_sq = moments
        .exp_avg_sq
        .affine(config.beta2, 0.0)?
        .add(&grad.sqr()?.affine(1.0 - config.beta2, 0.0)?)?;
    let bias_correction1 = 1.0 - config.beta1.powi(step);
    let bias_correction2_sqrt = (1.0 - config.beta2.powi(step)).sqrt();
    let step_size = lr / bias_correction1;
    let denom = exp_avg_sq
        .sqrt()?
        .affine(1.0 / bias_correction2_sqrt, config.eps)?;
    let updated = decayed.sub(&exp_avg.div(&denom)?.affine(step_size, 0.0)?)?;
    moments.exp_avg = exp_avg;
    moments.exp_avg_sq = exp_avg_sq;
    Ok(updated)
}

/// Clips the gradients in place to a global L2 norm of at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_`: `total = sqrt(sum of squares of all gradients)`, and when
/// `max_norm / (total + 1e-6) < 1` every gradient is multiplied by that factor. Returns `total` (the
/// norm before clipping). A non-finite total leaves the gradients as they are (PyTorch would turn
/// them all into NaN); such a step must be skipped, which the loss scaler does.
pub fn clip_grad_norm(grads: &mut ParamGrads, max_norm: f64) -> Result<f64, GradsError> {
    let total = grads.total_norm()?;
    if !total.is_finite() {
        return Ok(total);
    }
    let coefficient = max_norm / (total + 1e-6);
    if coefficient < 1.0 {
        grads.scale(coefficient)?;
    }
    Ok(total)
}

/// The global L2 norm of `grads` (with the fused kernel when it applies) and the factor
/// [`clip_grad_norm`] would multiply them by (1 when `max_norm` is 0, the norm is within it, or
/// the norm is not finite), for [`AdamW::step_scaled`].
pub fn grad_norm_and_clip(
    grads: &ParamGrads,
    max_norm: f64,
    fused: &FusedAdamW,
) -> Result<(f64, f64), GradsError> {
    let tensors: Vec<&Tensor> = grads.iter().filter_map(|(_, g)| g).collect();
    let total = match fused.global_norm(&tensors).map_err(GradsError::Reduce)? {
        Some(total) => total,
        None => grads.total_norm()?,
    };
    let coefficient = max_norm / (total + 1e-6);
    let factor = if max_norm > 0.0 && total.is_finite() && coefficient < 1.0 {
        coefficient
    } else {
        1.0
    };
    Ok((total, factor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::params::FreezeRule;
    use candle_core::{Device, Var};

    fn params() -> TrainParams {
        let w = Var::new(&[[1.0f32, -2.0], [0.5, 3.0]], &Device::Cpu).unwrap();
        let b = Var::new(&[0.25f32, -0.5], &Device::Cpu).unwrap();
        TrainParams::from_named(
            vec![("l.weight".into(), w), ("l.bias".into(), b)],
            &FreezeRule::none(),
        )
        .unwrap()
    }

    fn grads(params: &TrainParams, with_bias: bool) -> ParamGrads {
        let mut map = HashMap::from([(
            "l.weight".to_string(),
            Tensor::new(&[[0.1f32, 0.2], [-0.3, 0.4]], &Device::Cpu).unwrap(),
        )]);
        if with_bias {
            map.insert(
                "l.bias".into(),
                Tensor::new(&[1.0f32, -1.0], &Device::Cpu).unwrap(),
            );
        }
        ParamGrads::from_named(map, params).unwrap()
    }

    #[test]
    fn first_step_moves_each_element_by_lr_and_decays_only_weights() {
        // At t = 1, m_hat = g and v_hat = g^2, so the Adam part is lr * sign(g) (up to eps).
        let params = params();
        let mut adamw = AdamW::new(
            &params,
            AdamWConfig {
                weight_decay: 0.5,
                ..AdamWConfig::default()
            },
        );
        adamw.step(&params, &grads(&params, true), 0.1).unwrap();
        let w: Vec<Vec<f32>> = params.get("l.weight").unwrap().tensor().to_vec2().unwrap();
        let expected_w = [
            [1.0 * 0.95 - 0.1, -2.0 * 0.95 - 0.1],
            [0.5 * 0.95 + 0.1, 3.0 * 0.95 - 0.1],
        ];
        for (row, expected_row) in w.iter().zip(expected_w) {
            for (value, expected) in row.iter().zip(expected_row) {
                assert!((value - expected).abs() < 1e-6, "{value} vs {expected}");
            }
        }
        let b: Vec<f32> = params.get("l.bias").unwrap().tensor().to_vec1().unwrap();
        assert!(
            (b[0] - 0.15).abs() < 1e-6 && (b[1] + 0.4).abs() < 1e-6,
            "{b:?}"
        );
    }

    #[test]
    fn missing_gradient_skips_the_parameter_and_its_step_count() {
        let params = params();
        let mut adamw = AdamW::new(&params, AdamWConfig::default());
        let before: Vec<f32> = params.get("l.bias").unwrap().tensor().to_vec1().unwrap();
        adamw.step(&params, &grads(&params, false), 0.1).unwrap();
        let after: Vec<f32> = params.get("l.bias").unwrap().tensor().to_vec1().unwrap();
        assert_eq!(before, after);
        assert_eq!(adamw.param_step("l.bias"), 0);
        assert_eq!(adamw.param_step("l.weight"), 1);
        let state = adamw.state_tensors().unwrap();
        assert!(state.contains_key("l.bias.step"));
        assert!(!state.contains_key("l.bias.exp_avg"));
    }

    #[test]
    fn state_from_another_parameter_set_is_refused() {
        let params = params();
        let mut adamw = AdamW::new(&params, AdamWConfig::default());
        adamw.step(&params, &grads(&params, true), 0.1).unwrap();
        let mut state = adamw.state_tensors().unwrap();
        state.insert(
            "vision_model.x.step".into(),
            Tensor::new(1i64, &Device::Cpu).unwrap(),
        );
        let err = adamw.load_state(&params, &state).unwrap_err();
        assert!(err.to_string().contains("vision_model.x"), "{err}");
        state.remove("vision_model.x.step");
        state.remove("l.bias.exp_avg");
        let err = adamw.load_state(&params, &state).unwrap_err();
        assert!(err.to_string().contains("l.bias.exp_avg"), "{err}");
    }

    #[test]
    fn clipping_scales_to_max_norm_and_reports_the_norm_before() {
        let params = params();
        let mut g = grads(&params, true);
        let before = g.total_norm().unwrap();
        let reported = clip_grad_norm(&mut g, 0.5).unwrap();
        assert_eq!(reported, before);
        assert!((g.total_norm().unwrap() - 0.5).abs() < 1e-5);
        let mut small = grads(&params, false);
        let norm = small.total_norm().unwrap();
        clip_grad_norm(&mut small, 10.0).unwrap();
        assert_eq!(
            small.total_norm().unwrap(),
            norm,
            "no clipping below max_norm"
        );
    }
}
