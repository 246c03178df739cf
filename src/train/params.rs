//! The parameters a training run owns: every model tensor under its Hugging Face name, the trainable
//! ones as f32 master [`Var`]s (the optimizer updates these; a half-precision forward casts from them),
//! the frozen ones as plain tensors that backward never reaches, and per parameter whether AdamW's
//! weight decay applies.
//!
//! Weight decay rule ([`weight_decay_applies`]), decided from the name and the rank:
//! - no decay for tensors of rank < 2 (every bias, every LayerNorm weight and bias, the LM-head bias
//!   `text_decoder.cls.predictions.bias`);
//! - no decay for any tensor whose last name component is `bias`, or whose name has a LayerNorm
//!   component (`LayerNorm`, `layer_norm1`, `post_layernorm`, ...: any component containing
//!   `layernorm` or `layer_norm`, case-insensitive), whatever its rank;
//! - no decay for embeddings: a component ending in `_embeddings` (`word_embeddings`,
//!   `position_embeddings`) or `_embedding` (`class_embedding`, `position_embedding`: rank-3
//!   tensors in the vision embeddings), **except `patch_embedding`**, which is a convolution kernel
//!   `[hidden, 3, patch, patch]`: it is a linear map of pixel patches and is decayed like every other
//!   weight matrix (as in the usual PyTorch grouping by `ndim >= 2`, and in LAVIS' BLIP fine-tuning);
//! - everything else (linear and convolution weights) is decayed.
//!
//! `tests/fixtures/make_optim_fixtures.py` implements the same rule and the optimizer test checks
//! that both sides agree on every fixture parameter.

use std::collections::{HashMap, HashSet};

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("parameter {name} is {dtype:?}; master weights must be f32\n  fix: load the weights into the VarMap as f32 and cast to the compute precision in the forward pass")]
    NotF32 { name: String, dtype: DType },

    #[error("parameter {name} is listed twice\n  fix: build the parameter list from one VarMap, or deduplicate tied weights (keep one name per tensor)")]
    Duplicate { name: String },

    #[error("the freeze rule selects no parameter for prefix `{prefix}`\n  fix: prefixes are Hugging Face names such as `vision_model.` or `text_decoder.bert.embeddings.`")]
    FreezeMatchesNothing { prefix: String },

    #[error("no parameter is trainable (all {total} are frozen)\n  fix: freeze fewer modules")]
    NothingTrainable { total: usize },

    #[error("{source_name} has no tensor {name}\n  fix: the file belongs to another model; resume from a checkpoint of this model or start with --fresh")]
    MissingValue { name: String, source_name: String },

    #[error("{source_name}: tensor {name} has shape {found:?}, the model's parameter has {expected:?}\n  fix: the file belongs to another model configuration; resume from a matching checkpoint or start with --fresh")]
    ValueShape {
        name: String,
        source_name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("setting parameter {name}: {source}")]
    Tensor {
        name: String,
        #[source]
        source: candle_core::Error,
    },
}

/// Which parameters stay fixed: every name starting with one of the prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreezeRule {
    prefixes: Vec<String>,
}

impl FreezeRule {
    /// Train everything.
    pub fn none() -> Self {
        Self::default()
    }

    /// Freeze every parameter whose HF name starts with one of `prefixes` (e.g. `vision_model.`).
    pub fn prefixes<I: IntoIterator<Item = S>, S: Into<String>>(prefixes: I) -> Self {
        Self {
            prefixes: prefixes.into_iter().map(Into::into).collect(),
        }
    }

    /// Freeze the whole vision encoder (`vision_model.`).
    pub fn vision_encoder() -> Self {
        Self::prefixes(["vision_model."])
    }

    pub fn is_frozen(&self, name: &str) -> bool {
        self.prefixes.iter().any(|prefix| name.starts_with(prefix))
    }

    pub fn prefix_list(&self) -> &[String] {
        &self.prefixes
    }
}

/// Whether AdamW's decoupled weight decay applies to the parameter `name` of rank `rank` (module doc).
pub fn weight_decay_applies(name: &str, rank: usize) -> bool {
    if rank < 2 {
        return false;
    }
    let components: Vec<&str> = name.split('.').collect();
    if components.last() == Some(&"bias") {
        return false;
    }
    let is_layer_norm = components.iter().any(|component| {
        let lower = component.to_ascii_lowercase();
        lower.contains("layernorm") || lower.contains("layer_norm")
    });
    let is_embedding = components.iter().any(|component| {
        *component != "patch_embedding"
            && (component.ends_with("_embeddings") || component.ends_with("_embedding"))
    });
    !(is_layer_norm || is_embedding)
}

/// A parameter's value: a master Var the optimizer updates, or a frozen tensor outside the graph.
#[derive(Debug, Clone)]
pub enum ParamValue {
    Trainable(Var),
    Frozen(Tensor),
}

/// One named parameter.
#[derive(Debug, Clone)]
pub struct TrainParam {
    /// Hugging Face name, e.g. `text_decoder.bert.encoder.layer.0.attention.self.query.weight`.
    pub name: String,
    pub value: ParamValue,
    /// Whether weight decay applies ([`weight_decay_applies`]).
    pub decay: bool,
}

impl TrainParam {
    /// The tensor the model reads: the Var itself for a trainable parameter (so backward reaches it),
    /// a detached tensor for a frozen one.
    pub fn tensor(&self) -> &Tensor {
        match &self.value {
            ParamValue::Trainable(var) => var.as_tensor(),
            ParamValue::Frozen(tensor) => tensor,
        }
    }

    pub fn var(&self) -> Option<&Var> {
        match &self.value {
            ParamValue::Trainable(var) => Some(var),
            ParamValue::Frozen(_) => None,
        }
    }

    pub fn is_trainable(&self) -> bool {
        matches!(self.value, ParamValue::Trainable(_))
    }
}

/// One entry of the architecture fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamShape {
    pub name: String,
    pub shape: Vec<usize>,
}

/// All parameters of a model, sorted by name.
#[derive(Debug, Clone)]
pub struct TrainParams {
    params: Vec<TrainParam>,
}

impl TrainParams {
    /// Every Var of `varmap` (f32), frozen where `freeze` says so.
    pub fn from_varmap(varmap: &VarMap, freeze: &FreezeRule) -> Result<Self, ParamsError> {
        let named: Vec<(String, Var)> = match varmap.data().lock() {
            Ok(data) => data
                .iter()
                .map(|(name, var)| (name.clone(), var.clone()))
                .collect(),
            // A poisoned lock only means another thread panicked while holding it; the map is intact.
            Err(poisoned) => poisoned
                .into_inner()
                .iter()
                .map(|(name, var)| (name.clone(), var.clone()))
                .collect(),
        };
        Self::from_named(named, freeze)
    }

    /// Named f32 Vars, frozen where `freeze` says so. Every freeze prefix must match something and at
    /// least one parameter must stay trainable.
    pub fn from_named(vars: Vec<(String, Var)>, freeze: &FreezeRule) -> Result<Self, ParamsError> {
        let mut seen = HashSet::new();
        let mut params = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            if var.dtype() != DType::F32 {
                return Err(ParamsError::NotF32 {
                    name,
                    dtype: var.dtype(),
                });
            }
            if !seen.insert(name.clone()) {
                return Err(ParamsError::Duplicate { name });
            }
            let decay = weight_decay_applies(&name, var.rank());
            let value = if freeze.is_frozen(&name) {
                ParamValue::Frozen(var.as_detached_tensor())
            } else {
                ParamValue::Trainable(var)
            };
            params.push(TrainParam { name, value, decay });
        }
        for prefix in freeze.prefix_list() {
            if !params.iter().any(|p| p.name.starts_with(prefix.as_str())) {
                return Err(ParamsError::FreezeMatchesNothing {
                    prefix: prefix.clone(),
                });
            }
        }
        if !params.iter().any(TrainParam::is_trainable) {
            return Err(ParamsError::NothingTrainable {
                total: params.len(),
            });
        }
        params.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { params })
    }

    /// Every parameter, sorted by name.
    pub fn all(&self) -> &[TrainParam] {
        &self.params
    }

    /// The trainable parameters, sorted by name (the optimizer's order).
    pub fn trainable(&self) -> impl Iterator<Item = &TrainParam> {
        self.params.iter().filter(|p| p.is_trainable())
    }

    pub fn get(&self, name: &str) -> Option<&TrainParam> {
        self.params
            .binary_search_by(|p| p.name.as_str().cmp(name))
            .ok()
            .and_then(|index| self.params.get(index))
    }

    /// Number of scalars in trainable parameters.
    pub fn trainable_elements(&self) -> usize {
        self.trainable().map(|p| p.tensor().elem_count()).sum()
    }

    /// Number of scalars in all parameters.
    pub fn total_elements(&self) -> usize {
        self.params.iter().map(|p| p.tensor().elem_count()).sum()
    }

    /// Name -> the tensor the model should read (for `VarBuilder::from_tensors`): trainable ones are
    /// the Vars (gradients flow to them, also through a dtype cast), frozen ones detached.
    pub fn model_tensors(&self) -> HashMap<String, Tensor> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.tensor().clone()))
            .collect()
    }

    /// The architecture fingerprint: every parameter's name and shape, sorted by name.
    pub fn fingerprint(&self) -> Vec<ParamShape> {
        self.params
            .iter()
            .map(|p| ParamShape {
                name: p.name.clone(),
                shape: p.tensor().dims().to_vec(),
            })
            .collect()
    }

    /// Overwrites every trainable parameter with the tensor of the same name from `values` (converted
    /// to f32 on the parameter's device). Frozen parameters are left alone (they come from the model).
    /// `source_name` names where the values come from, for errors.
    pub fn assign_trainable(
        &self,
        values: &HashMap<String, Tensor>,
        source_name: &str,
    ) -> Result<(), ParamsError> {
        for param in &self.params {
            let ParamValue::Trainable(var) = &param.value else {
                continue;
            };
            let value = values
                .get(&param.name)
                .ok_or_else(|| ParamsError::MissingValue {
                    name: param.name.clone(),
                    source_name: source_name.to_string(),
                })?;
            if value.dims() != var.dims() {
                return Err(ParamsError::ValueShape {
                    name: param.name.clone(),
                    source_name: source_name.to_string(),
                    expected: var.dims().to_vec(),
                    found: value.dims().to_vec(),
                });
            }
            let tensor_error = |source| ParamsError::Tensor {
                name: param.name.clone(),
                source,
            };
            let value = value
                .to_dtype(DType::F32)
                .and_then(|v| v.to_device(var.device()))
                .map_err(tensor_error)?;
            var.set(&value).map_err(tensor_error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn decay_rule_on_blip_names() {
        let decayed = [
            (
                "text_decoder.bert.encoder.layer.0.attention.self.query.weight",
                2,
            ),
            (
                "text_decoder.bert.encoder.layer.3.crossattention.self.key.weight",
                2,
            ),
            ("text_decoder.cls.predictions.transform.dense.weight", 2),
            ("vision_model.encoder.layers.0.self_attn.qkv.weight", 2),
            ("vision_model.encoder.layers.0.mlp.fc1.weight", 2),
            ("vision_model.embeddings.patch_embedding.weight", 4),
        ];
        let not_decayed = [
            (
                "text_decoder.bert.encoder.layer.0.attention.self.query.bias",
                1,
            ),
            (
                "text_decoder.bert.encoder.layer.0.output.LayerNorm.weight",
                1,
            ),
            ("text_decoder.bert.embeddings.LayerNorm.weight", 1),
            ("text_decoder.bert.embeddings.word_embeddings.weight", 2),
            ("text_decoder.bert.embeddings.position_embeddings.weight", 2),
            ("text_decoder.cls.predictions.bias", 1),
            ("vision_model.embeddings.class_embedding", 3),
            ("vision_model.embeddings.position_embedding", 3),
            ("vision_model.embeddings.patch_embedding.bias", 1),
            ("vision_model.encoder.layers.1.layer_norm2.weight", 1),
            ("vision_model.post_layernorm.weight", 1),
            // Rank alone would decay these; the name rule does not.
            ("some.module.bias", 2),
            ("some.LayerNorm.weight", 2),
        ];
        for (name, rank) in decayed {
            assert!(weight_decay_applies(name, rank), "{name} should decay");
        }
        for (name, rank) in not_decayed {
            assert!(!weight_decay_applies(name, rank), "{name} should not decay");
        }
    }

    fn var(dims: &[usize]) -> Var {
        Var::zeros(dims, DType::F32, &Device::Cpu).unwrap()
    }

    #[test]
    fn freezing_detaches_and_sorts() {
        let params = TrainParams::from_named(
            vec![
                (
                    "vision_model.encoder.layers.0.mlp.fc1.weight".into(),
                    var(&[4, 2]),
                ),
                (
                    "text_decoder.bert.embeddings.word_embeddings.weight".into(),
                    var(&[5, 2]),
                ),
                ("text_decoder.cls.predictions.bias".into(), var(&[5])),
            ],
            &FreezeRule::vision_encoder(),
        )
        .unwrap();
        let names: Vec<&str> = params.trainable().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "text_decoder.bert.embeddings.word_embeddings.weight",
                "text_decoder.cls.predictions.bias"
            ]
        );
        let frozen = params
            .get("vision_model.encoder.layers.0.mlp.fc1.weight")
            .unwrap();
        assert!(!frozen.is_trainable());
        assert!(!frozen.tensor().is_variable());
        assert!(frozen.decay);
        assert_eq!(params.trainable_elements(), 15);
        assert_eq!(params.total_elements(), 23);
    }

    #[test]
    fn bad_inputs_are_named() {
        let f16 = Var::zeros(&[2], DType::F16, &Device::Cpu).unwrap();
        let err =
            TrainParams::from_named(vec![("a.bias".into(), f16)], &FreezeRule::none()).unwrap_err();
        assert!(err.to_string().contains("a.bias"), "{err}");
        let err = TrainParams::from_named(
            vec![("a.bias".into(), var(&[2])), ("a.bias".into(), var(&[2]))],
            &FreezeRule::none(),
        )
        .unwrap_err();
        assert!(matches!(err, ParamsError::Duplicate { .. }), "{err}");
        let err = TrainParams::from_named(
            vec![("text.bias".into(), var(&[2]))],
            &FreezeRule::vision_encoder(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("vision_model."), "{err}");
        let err = TrainParams::from_named(
            vec![("vision_model.x".into(), var(&[2]))],
            &FreezeRule::vision_encoder(),
        )
        .unwrap_err();
        assert!(matches!(err, ParamsError::NothingTrainable { total: 1 }));
    }

    #[test]
    fn assign_checks_names_and_shapes() {
        let params =
            TrainParams::from_named(vec![("w.weight".into(), var(&[2, 2]))], &FreezeRule::none())
                .unwrap();
        let ones = Tensor::ones((2, 2), DType::F32, &Device::Cpu).unwrap();
        params
            .assign_trainable(&HashMap::from([("w.weight".to_string(), ones)]), "x")
            .unwrap();
        let value: Vec<Vec<f32>> = params.all()[0].tensor().to_vec2().unwrap();
        assert_eq!(value, vec![vec![1.0, 1.0], vec![1.0, 1.0]]);
        let wrong = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
        let err = params
            .assign_trainable(&HashMap::from([("w.weight".to_string(), wrong)]), "ckpt")
            .unwrap_err();
        assert!(err.to_string().contains("w.weight"), "{err}");
        let err = params
            .assign_trainable(&HashMap::new(), "ckpt/model.safetensors")
            .unwrap_err();
        assert!(err.to_string().contains("ckpt/model.safetensors"), "{err}");
    }
}
