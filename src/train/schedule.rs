//! The learning-rate schedule: linear warm-up from 0, then a half cosine down to a minimum, as
//! transformers' `get_cosine_with_min_lr_schedule_with_warmup` (`num_cycles = 0.5`, `min_lr` given)
//! driven by `torch.optim.lr_scheduler.LambdaLR`.
//!
//! For `step` = the number of optimizer steps already taken (the learning rate of the first update
//! is `lr_at(0)`, as LambdaLR's before its first `scheduler.step()`):
//!
//! ```text
//! step < warmup:  lr = base_lr * step / max(1, warmup)
//! otherwise:      progress = (step - warmup) / max(1, total - warmup), at most 1
//!                 factor   = 0.5 * (1 + cos(pi * progress))
//!                 lr       = base_lr * (factor * (1 - min_lr / base_lr) + min_lr / base_lr)
//! ```
//!
//! So the first update runs at lr 0 when there is a warm-up (as in transformers' Trainer). The only
//! difference from transformers: past `total` steps the rate stays at `min_lr` (transformers lets
//! the cosine rise again).

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("learning rate {base_lr} is not positive and finite\n  fix: set a learning rate such as 1e-5")]
    BaseLr { base_lr: f64 },

    #[error("minimum learning rate {min_lr} is outside [0, {base_lr}]\n  fix: the minimum must be between 0 and the learning rate")]
    MinLr { min_lr: f64, base_lr: f64 },

    #[error("warm-up of {warmup_steps} steps is longer than the {total_steps} training steps\n  fix: shorten the warm-up or train longer")]
    Warmup { warmup_steps: u64, total_steps: u64 },
}

/// Linear warm-up then cosine decay (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosine {
    pub base_lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl WarmupCosine {
    pub fn new(
        base_lr: f64,
        min_lr: f64,
        warmup_steps: u64,
        total_steps: u64,
    ) -> Result<Self, ScheduleError> {
        if !(base_lr.is_finite() && base_lr > 0.0) {
            return Err(ScheduleError::BaseLr { base_lr });
        }
        if !(min_lr.is_finite() && (0.0..=base_lr).contains(&min_lr)) {
            return Err(ScheduleError::MinLr { min_lr, base_lr });
        }
        if warmup_steps > total_steps {
            return Err(ScheduleError::Warmup {
                warmup_steps,
                total_steps,
            });
        }
        Ok(Self {
            base_lr,
            min_lr,
            warmup_steps,
            total_steps,
        })
    }

    /// The learning rate for the update that follows `step` completed optimizer steps.
    pub fn lr_at(&self, step: u64) -> f64 {
        self.base_lr * self.factor_at(step)
    }

    /// The multiplier of the base learning rate (LambdaLR's lambda).
    pub fn factor_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return step as f64 / self.warmup_steps.max(1) as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let min_lr_rate = self.min_lr / self.base_lr;
        let factor = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        (factor * (1.0 - min_lr_rate) + min_lr_rate).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_the_minimum() {
        let schedule = WarmupCosine::new(1e-3, 1e-4, 4, 14).unwrap();
        assert_eq!(schedule.lr_at(0), 0.0);
        assert!((schedule.lr_at(2) - 0.5e-3).abs() < 1e-15);
        assert_eq!(schedule.lr_at(4), 1e-3);
        // Half way through the decay: cos(pi/2) = 0, so the factor is halfway to min.
        assert!((schedule.lr_at(9) - 0.55e-3).abs() < 1e-12);
        assert!((schedule.lr_at(14) - 1e-4).abs() < 1e-15);
        assert!(
            (schedule.lr_at(100) - 1e-4).abs() < 1e-15,
            "holds the minimum"
        );
        let values: Vec<f64> = (4..=14).map(|s| schedule.lr_at(s)).collect();
        assert!(values.windows(2).all(|w| w[1] < w[0]), "{values:?}");
    }

    #[test]
    fn no_warmup_starts_at_the_base_rate() {
        let schedule = WarmupCosine::new(2e-5, 0.0, 0, 10).unwrap();
        assert_eq!(schedule.lr_at(0), 2e-5);
        assert!(schedule.lr_at(10).abs() < 1e-20);
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(WarmupCosine::new(0.0, 0.0, 0, 1).is_err());
        assert!(WarmupCosine::new(1e-3, 2e-3, 0, 1).is_err());
        let err = WarmupCosine::new(1e-3, 0.0, 5, 4).unwrap_err();
        assert!(err.to_string().contains("warm-up"), "{err}");
    }
}
