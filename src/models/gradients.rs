//! Parameter gradients by checkpoint name, as an explicit backward pass produces them: each
//! layer's backward adds the gradients of the weights it read under the names its weights were
//! loaded from (the [`ParamPath`] spelling `VarBuilder::pp` uses), accumulated in f32.

use std::collections::{HashMap, HashSet};

use candle_core::{DType, Result, Tensor};

/// A dotted weight path, built as `VarBuilder::pp` builds one.
#[derive(Debug, Clone)]
pub struct ParamPath(String);

impl ParamPath {
    pub fn root(name: &str) -> Self {
        Self(name.to_string())
    }

    /// The path one level down.
    pub fn pp(&self, part: impl std::fmt::Display) -> Self {
        if self.0.is_empty() {
            return Self(part.to_string());
        }
        Self(format!("{}.{part}", self.0))
    }

    /// The full name of tensor `leaf` under this path.
    pub fn name(&self, leaf: &str) -> String {
        self.pp(leaf).0
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// f32 gradients by parameter name, for the parameters asked for only.
#[derive(Debug)]
pub struct NamedGrads {
    wanted: HashSet<String>,
    grads: HashMap<String, Tensor>,
}

impl NamedGrads {
    /// Collects gradients of the parameters called `wanted` (the trainable ones).
    pub fn new(wanted: impl IntoIterator<Item = String>) -> Self {
        Self {
            wanted: wanted.into_iter().collect(),
            grads: HashMap::new(),
        }
    }

    pub fn wants(&self, name: &str) -> bool {
        self.wanted.contains(name)
    }

    /// Whether some wanted parameter's name starts with `prefix` (a whole frozen tower needs no
    /// backward pass).
    pub fn wants_any_under(&self, prefix: &ParamPath) -> bool {
        let dotted = format!("{}.", prefix.as_str());
        self.wanted.iter().any(|name| name.starts_with(&dotted))
    }

    /// Adds `grad` (any float dtype) to the gradient of `name`. Sums are taken in f32; a
    /// parameter's only gradient stays in its own dtype (the caller converts all of them at once:
    /// `ParamGrads::from_named_cast`, one launch on CUDA instead of one per parameter).
    pub fn add(&mut self, name: String, grad: &Tensor) -> Result<()> {
        if !self.wanted.contains(&name) {
            return Ok(());
        }
        let sum = match self.grads.remove(&name) {
            Some(previous) => {
                let grad = grad.to_dtype(DType::F32)?.reshape(previous.shape())?;
                (previous.to_dtype(DType::F32)? + grad)?
            }
            None => grad.contiguous()?,
        };
        self.grads.insert(name, sum);
        Ok(())
    }

    /// As [`Self::add`], reshaped to `shape` first.
    pub fn add_shaped(&mut self, name: String, grad: &Tensor, shape: &[usize]) -> Result<()> {
        if !self.wanted.contains(&name) {
            return Ok(());
        }
        self.add(name, &grad.reshape(shape)?)
    }

    /// The gradients collected, by name.
    pub fn into_map(self) -> HashMap<String, Tensor> {
        self.grads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn paths_spell_names_as_var_builder_does() {
        let p = ParamPath::root("text_decoder")
            .pp("bert")
            .pp("encoder")
            .pp(3);
        assert_eq!(p.name("weight"), "text_decoder.bert.encoder.3.weight");
    }

    #[test]
    fn gradients_accumulate_for_wanted_names_only() {
        let dev = Device::Cpu;
        let mut grads = NamedGrads::new(["a.w".to_string()]);
        let one = Tensor::ones(3, DType::F32, &dev).unwrap();
        grads.add("a.w".into(), &one).unwrap();
        grads.add("a.w".into(), &one).unwrap();
        grads.add("b.w".into(), &one).unwrap();
        assert!(grads.wants_any_under(&ParamPath::root("a")));
        assert!(!grads.wants_any_under(&ParamPath::root("b")));
        let map = grads.into_map();
        assert_eq!(map.len(), 1);
        assert_eq!(map["a.w"].to_vec1::<f32>().unwrap(), vec![2.0; 3]);
    }

    #[test]
    fn a_single_gradient_keeps_its_dtype_and_sums_are_f32() {
        let dev = Device::Cpu;
        let mut grads = NamedGrads::new(["one".to_string(), "two".to_string()]);
        let half = |v: f32| {
            Tensor::new(&[v], &dev)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap()
        };
        grads.add("one".into(), &half(1.0)).unwrap();
        grads.add("two".into(), &half(1.0)).unwrap();
        // 1 + 2^-8 is not a bf16 value (it would round to 1): the sum must be f32.
        grads.add("two".into(), &half(1.0 / 256.0)).unwrap();
        let map = grads.into_map();
        assert_eq!(map["one"].dtype(), DType::BF16);
        assert_eq!(map["two"].dtype(), DType::F32);
        assert_eq!(
            map["two"].to_vec1::<f32>().unwrap(),
            vec![1.0 + 1.0 / 256.0]
        );
    }
}
