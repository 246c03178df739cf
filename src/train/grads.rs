//! The gradients of the trainable parameters, taken out of candle's [`GradStore`] (which also holds
//! the gradient of every intermediate tensor: dropping it frees those early) and converted to f32, in
//! the optimizer's parameter order. Loss scaling, clipping and AdamW work on this.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};

use super::compute_copy::cast_entries;
use super::params::TrainParams;
use crate::kernels::adamw::FusedAdamW;

#[derive(Debug, thiserror::Error)]
pub enum GradsError {
    #[error("gradient of {name}: {source}")]
    Tensor {
        name: String,
        #[source]
        source: candle_core::Error,
    },

    #[error("gradient of {name} has shape {found:?}, the parameter has {expected:?}\n  fix: gradients must come from a backward pass through this parameter set")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("cannot add gradients of different parameter sets ({mine} vs {theirs})\n  fix: accumulate gradients taken from the same TrainParams")]
    Mismatch { mine: String, theirs: String },

    #[error("reducing the gradients: {0}")]
    Reduce(#[source] candle_core::Error),
}

/// One gradient per trainable parameter (`None`: the parameter took no part in the loss; like
/// PyTorch's `grad is None`, the optimizer leaves it untouched).
#[derive(Debug, Clone)]
pub struct ParamGrads {
    entries: Vec<(String, Option<Tensor>)>,
}

impl ParamGrads {
    /// Takes the gradients of `params`' trainable Vars out of `store` (as f32) and drops the rest.
    pub fn from_store(mut store: GradStore, params: &TrainParams) -> Result<Self, GradsError> {
        let mut entries = Vec::new();
        for param in params.trainable() {
            let grad = store.remove(param.tensor());
            entries.push((
                param.name.clone(),
                checked_f32(&param.name, param.tensor(), grad)?,
            ));
        }
        Ok(Self { entries })
    }

    /// Gradients given by parameter name (tests, reference fixtures, gradients computed elsewhere).
    pub fn from_named(
        mut grads: HashMap<String, Tensor>,
        params: &TrainParams,
    ) -> Result<Self, GradsError> {
        let mut entries = Vec::new();
        for param in params.trainable() {
            let grad = grads.remove(&param.name);
            entries.push((
                param.name.clone(),
                checked_f32(&param.name, param.tensor(), grad)?,
            ));
        }
        Ok(Self { entries })
    }

    /// [`Self::from_named`] with the 16-bit gradients converted to f32 in one launch of the
    /// multi-tensor cast where `kernels` has it (one `to_dtype` launch per tensor otherwise).
    pub fn from_named_cast(
        mut grads: HashMap<String, Tensor>,
        params: &TrainParams,
        kernels: &FusedAdamW,
    ) -> Result<Self, GradsError> {
        for dtype in [DType::BF16, DType::F16] {
            // Where the kernel does not apply, `from_named` converts each one.
            cast_entries(&mut grads, dtype, DType::F32, kernels).map_err(|source| {
                GradsError::Tensor {
                    name: format!("the {dtype:?} gradients (one cast)"),
                    source,
                }
            })?;
        }
        Self::from_named(grads, params)
    }

    /// Adds another micro-batch's gradients (gradient accumulation); `other` must come from the same
    /// parameter set.
    pub fn accumulate(&mut self, other: ParamGrads) -> Result<(), GradsError> {
        let same_set = self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|((a, _), (b, _))| a == b);
        if !same_set {
            let first = |entries: &[(String, Option<Tensor>)]| {
                entries.first().map_or_else(String::new, |(n, _)| n.clone())
            };
            return Err(GradsError::Mismatch {
                mine: format!(
                    "{} parameters from {}",
                    self.entries.len(),
                    first(&self.entries)
                ),
                theirs: format!(
                    "{} parameters from {}",
                    other.entries.len(),
                    first(&other.entries)
                ),
            });
        }
        for ((name, mine), (_, theirs)) in self.entries.iter_mut().zip(other.entries) {
            *mine = match (mine.take(), theirs) {
                (Some(a), Some(b)) => Some(a.add(&b).map_err(|source| GradsError::Tensor {
                    name: name.clone(),
                    source,
                })?),
                (a, b) => a.or(b),
            };
        }
        Ok(())
    }

    /// `(name, gradient)` in the optimizer's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&Tensor>)> {
        self.entries
            .iter()
            .map(|(name, grad)| (name.as_str(), grad.as_ref()))
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, grad)| grad.as_ref())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Multiplies every gradient by `factor` (computed as f32 on the device).
    pub fn scale(&mut self, factor: f64) -> Result<(), GradsError> {
        for (name, grad) in &mut self.entries {
            if let Some(g) = grad {
                *g = g.affine(factor, 0.0).map_err(|source| GradsError::Tensor {
                    name: name.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Whether every gradient element is finite (one device synchronisation). `g - g` is 0 for a
    /// finite element and NaN for inf or NaN, so the sum is NaN exactly when some element is not
    /// finite (a plain sum could overflow on large finite values).
    pub fn all_finite(&self) -> Result<bool, GradsError> {
        let mut probes = Vec::new();
        for (_, grad) in &self.entries {
            if let Some(g) = grad {
                let probe = g
                    .sub(g)
                    .and_then(|d| d.sum_all())
                    .map_err(GradsError::Reduce)?;
                probes.push(probe);
            }
        }
        if probes.is_empty() {
            return Ok(true);
        }
        let total = Tensor::stack(&probes, 0)
            .and_then(|t| t.sum_all())
            .and_then(|t| t.to_scalar::<f32>())
            .map_err(GradsError::Reduce)?;
        Ok(total.is_finite())
    }

    /// The L2 norm over all gradients taken together, computed in f32 on the device (one
    /// synchronisation); `sqrt(sum over tensors of sum(g^2))`, which equals PyTorch's norm of the
    /// per-tensor norms.
    pub fn total_norm(&self) -> Result<f64, GradsError> {
        let mut squares = Vec::new();
        for (_, grad) in &self.entries {
            if let Some(g) = grad {
                squares.push(
                    g.sqr()
                        .and_then(|s| s.sum_all())
                        .map_err(GradsError::Reduce)?,
                );
            }
        }
        if squares.is_empty() {
            return Ok(0.0);
        }
        let total = Tensor::stack(&squares, 0)
            .and_then(|t| t.sum_all())
            .and_then(|t| t.sqrt())
            .and_then(|t| t.to_scalar::<f32>())
            .map_err(GradsError::Reduce)?;
        Ok(f64::from(total))
    }
}

/// Checks the gradient's shape against the parameter and converts it to f32.
fn checked_f32(
    name: &str,
    param: &Tensor,
    grad: Option<Tensor>,
) -> Result<Option<Tensor>, GradsError> {
    let Some(grad) = grad else {
        return Ok(None);
    };
    if grad.dims() != param.dims() {
        return Err(GradsError::Shape {
            name: name.to_string(),
            expected: param.dims().to_vec(),
            found: grad.dims().to_vec(),
        });
    }
    let grad = grad
        .to_dtype(DType::F32)
        .map_err(|source| GradsError::Tensor {
            name: name.to_string(),
            source,
        })?;
    Ok(Some(grad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::params::FreezeRule;
    use candle_core::{Device, Var};

    fn params() -> TrainParams {
        let a = Var::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let b = Var::new(&[[3.0f32]], &Device::Cpu).unwrap();
        TrainParams::from_named(
            vec![("a.bias".into(), a), ("b.weight".into(), b)],
            &FreezeRule::none(),
        )
        .unwrap()
    }

    #[test]
    fn from_store_takes_the_var_gradients() {
        let params = params();
        let a = params.get("a.bias").unwrap().tensor();
        let b = params.get("b.weight").unwrap().tensor();
        // loss = sum(a^2) + 3 * b
        let loss = a
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .add(&b.affine(3.0, 0.0).unwrap().sum_all().unwrap())
            .unwrap();
        let grads = ParamGrads::from_store(loss.backward().unwrap(), &params).unwrap();
        let ga: Vec<f32> = grads.get("a.bias").unwrap().to_vec1().unwrap();
        assert_eq!(ga, [2.0, 4.0]);
        assert!((grads.total_norm().unwrap() - (4.0f64 + 16.0 + 9.0).sqrt()).abs() < 1e-6);
        assert!(grads.all_finite().unwrap());
    }

    #[test]
    fn non_finite_is_detected_and_missing_is_none() {
        let params = params();
        let inf = Tensor::new(&[1.0f32, f32::INFINITY], &Device::Cpu).unwrap();
        let mut grads =
            ParamGrads::from_named(HashMap::from([("a.bias".to_string(), inf)]), &params).unwrap();
        assert!(grads.get("b.weight").is_none());
        assert!(!grads.all_finite().unwrap());
        let big = Tensor::new(&[3.0e38f32, 3.0e38], &Device::Cpu).unwrap();
        let other =
            ParamGrads::from_named(HashMap::from([("a.bias".to_string(), big)]), &params).unwrap();
        assert!(
            other.all_finite().unwrap(),
            "large finite values are finite"
        );
        grads.scale(0.5).unwrap();
        let scaled: Vec<f32> = grads.get("a.bias").unwrap().to_vec1().unwrap();
        assert_eq!(scaled[0], 0.5);
    }

    #[test]
    fn accumulate_adds_and_shape_is_checked() {
        let params = params();
        let one = || Tensor::new(&[1.0f32, 1.0], &Device::Cpu).unwrap();
        let mut grads =
            ParamGrads::from_named(HashMap::from([("a.bias".to_string(), one())]), &params)
                .unwrap();
        let b = Tensor::new(&[[2.0f32]], &Device::Cpu).unwrap();
        let more = ParamGrads::from_named(
            HashMap::from([("a.bias".to_string(), one()), ("b.weight".to_string(), b)]),
            &params,
        )
        .unwrap();
        grads.accumulate(more).unwrap();
        let ga: Vec<f32> = grads.get("a.bias").unwrap().to_vec1().unwrap();
        assert_eq!(ga, [2.0, 2.0]);
        assert!(grads.get("b.weight").is_some());
        let wrong = Tensor::new(&[1.0f32], &Device::Cpu).unwrap();
        let err = ParamGrads::from_named(HashMap::from([("a.bias".to_string(), wrong)]), &params)
            .unwrap_err();
        assert!(err.to_string().contains("a.bias"), "{err}");
    }
}
