//! Dynamic loss scaling for f16 training, as `torch.amp.GradScaler` with its defaults: the loss is
//! multiplied by the scale (initially 2^16) before backward so small f16 gradients do not flush to
//! zero; the gradients are unscaled (multiplied by 1/scale) before clipping and the update. A step
//! whose gradients hold inf or NaN is skipped and the scale halves; after 2000 consecutive clean
//! steps the scale doubles. For f32 and bf16 (bf16 has f32's range) the scaler is disabled: scale 1,
//! no check, never skips (GradScaler(enabled=False)).
//!
//! Per step: `scaled = scaler.scale_loss(&loss)`, backward, `found_inf = scaler.unscale(&mut grads)`,
//! clip, `if !found_inf { optimizer.step(..) }`, `scaler.update(found_inf)`.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::grads::{GradsError, ParamGrads};

/// GradScaler's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScalerConfig {
    pub enabled: bool,
    pub init_scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    /// Consecutive steps without inf/NaN after which the scale grows.
    pub growth_interval: u64,
}

impl ScalerConfig {
    /// `torch.amp.GradScaler()`'s defaults, enabled.
    pub fn torch_defaults() -> Self {
        Self {
            enabled: true,
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }

    /// Enabled for f16 compute only.
    pub fn for_compute_dtype(dtype: DType) -> Self {
        Self {
            enabled: dtype == DType::F16,
            ..Self::torch_defaults()
        }
    }
}

/// What a checkpoint keeps of the scaler.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    pub scale: f64,
    /// Consecutive clean steps since the last growth or backoff.
    pub growth_tracker: u64,
    /// Steps skipped for inf/NaN gradients since the run began.
    pub skipped_steps: u64,
}

/// The dynamic loss scaler (module doc).
#[derive(Debug, Clone)]
pub struct LossScaler {
    config: ScalerConfig,
    state: ScalerState,
}

impl LossScaler {
    pub fn new(config: ScalerConfig) -> Self {
        let scale = if config.enabled {
            config.init_scale
        } else {
            1.0
        };
        Self {
            config,
            state: ScalerState {
                scale,
                growth_tracker: 0,
                skipped_steps: 0,
            },
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.config.enabled
    }

    /// The current scale (1 when disabled).
    pub fn scale(&self) -> f64 {
        self.state.scale
    }

    pub fn skipped_steps(&self) -> u64 {
        self.state.skipped_steps
    }

    /// `loss * scale` (the loss itself when disabled).
    pub fn scale_loss(&self, loss: &Tensor) -> candle_core::Result<Tensor> {
        if self.config.enabled {
            loss.affine(self.state.scale, 0.0)
        } else {
            Ok(loss.clone())
        }
    }

    /// Multiplies the gradients by 1/scale and reports whether any of them holds inf or NaN (then the
    /// optimizer step must be skipped). Disabled: leaves them alone and reports `false`.
    pub fn unscale(&self, grads: &mut ParamGrads) -> Result<bool, GradsError> {
        if !self.config.enabled {
            return Ok(false);
        }
        // GradScaler: inv_scale = scale.double().reciprocal().float(); exact for powers of two.
        grads.scale(1.0 / self.state.scale)?;
        Ok(!grads.all_finite()?)
    }

    /// Adjusts the scale after a step (`found_inf` from [`LossScaler::unscale`]): backoff and count a
    /// skipped step on inf/NaN, otherwise grow after `growth_interval` clean steps in a row
    /// (torch's `_amp_update_scale_`: the scale only grows while the grown value stays finite).
    pub fn update(&mut self, found_inf: bool) {
        if !self.config.enabled {
            return;
        }
        let state = &mut self.state;
        if found_inf {
            state.scale *= self.config.backoff_factor;
            state.growth_tracker = 0;
            state.skipped_steps += 1;
            return;
        }
        state.growth_tracker += 1;
        if state.growth_tracker >= self.config.growth_interval {
            let grown = state.scale * self.config.growth_factor;
            if grown.is_finite() {
                state.scale = grown;
            }
            state.growth_tracker = 0;
        }
    }

    pub fn state(&self) -> ScalerState {
        self.state
    }

    /// Restores a saved state (a disabled scaler keeps scale 1 but restores the skip count).
    pub fn load_state(&mut self, state: ScalerState) {
        self.state = if self.config.enabled {
            state
        } else {
            ScalerState {
                scale: 1.0,
                growth_tracker: 0,
                skipped_steps: state.skipped_steps,
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::params::{FreezeRule, TrainParams};
    use candle_core::{Device, Var};
    use std::collections::HashMap;

    fn config(growth_interval: u64) -> ScalerConfig {
        ScalerConfig {
            growth_interval,
            ..ScalerConfig::torch_defaults()
        }
    }

    fn grads(values: &[f32]) -> ParamGrads {
        let var = Var::zeros(values.len(), DType::F32, &Device::Cpu).unwrap();
        let params =
            TrainParams::from_named(vec![("p.bias".into(), var)], &FreezeRule::none()).unwrap();
        let grad = Tensor::new(values, &Device::Cpu).unwrap();
        ParamGrads::from_named(HashMap::from([("p.bias".to_string(), grad)]), &params).unwrap()
    }

    #[test]
    fn grows_after_the_interval_of_clean_steps() {
        let mut scaler = LossScaler::new(config(3));
        assert_eq!(scaler.scale(), 65536.0);
        for _ in 0..2 {
            scaler.update(false);
        }
        assert_eq!(scaler.scale(), 65536.0);
        scaler.update(false);
        assert_eq!(scaler.scale(), 131072.0);
        assert_eq!(scaler.state().growth_tracker, 0);
        // A skipped step resets the count: two clean, one inf, two clean -> no growth yet.
        scaler.update(false);
        scaler.update(false);
        scaler.update(true);
        scaler.update(false);
        scaler.update(false);
        assert_eq!(scaler.scale(), 65536.0);
        scaler.update(false);
        assert_eq!(scaler.scale(), 131072.0);
    }

    #[test]
    fn default_interval_is_2000() {
        let mut scaler = LossScaler::new(ScalerConfig::torch_defaults());
        for _ in 0..1999 {
            scaler.update(false);
        }
        assert_eq!(scaler.scale(), 65536.0);
        scaler.update(false);
        assert_eq!(scaler.scale(), 131072.0);
    }

    #[test]
    fn inf_or_nan_backs_off_and_counts_a_skip() {
        let mut scaler = LossScaler::new(config(2000));
        let mut clean = grads(&[65536.0, -131072.0]);
        let found_inf = scaler.unscale(&mut clean).unwrap();
        assert!(!found_inf);
        let unscaled: Vec<f32> = clean.get("p.bias").unwrap().to_vec1().unwrap();
        assert_eq!(unscaled, [1.0, -2.0]);
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            let mut g = grads(&[1.0, bad]);
            let found_inf = scaler.unscale(&mut g).unwrap();
            assert!(found_inf, "{bad}");
            scaler.update(found_inf);
        }
        assert_eq!(scaler.scale(), 8192.0);
        assert_eq!(scaler.skipped_steps(), 3);
    }

    #[test]
    fn disabled_never_scales_or_skips() {
        let mut scaler = LossScaler::new(ScalerConfig::for_compute_dtype(DType::BF16));
        assert!(!scaler.is_enabled());
        assert_eq!(scaler.scale(), 1.0);
        let mut g = grads(&[f32::INFINITY]);
        assert!(!scaler.unscale(&mut g).unwrap());
        scaler.update(true);
        assert_eq!(scaler.skipped_steps(), 0);
        let loss = Tensor::new(2.0f32, &Device::Cpu).unwrap();
        assert_eq!(
            scaler
                .scale_loss(&loss)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            2.0
        );
        assert!(ScalerConfig::for_compute_dtype(DType::F16).enabled);
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut scaler = LossScaler::new(config(2));
        scaler.update(false);
        scaler.update(true);
        scaler.update(false);
        let json = serde_json::to_string(&scaler.state()).unwrap();
        let mut restored = LossScaler::new(config(2));
        restored.load_state(serde_json::from_str(&json).unwrap());
        assert_eq!(restored.state(), scaler.state());
        // Both continue identically: one more clean step grows both.
        scaler.update(false);
        restored.update(false);
        assert_eq!(restored.state(), scaler.state());
        assert_eq!(restored.scale(), 65536.0);
    }
}
