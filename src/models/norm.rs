//! LayerNorm and softmax for the model layers: candle's fused kernels at inference, and
//! differentiable compositions when the input is part of an autograd graph (training).
//!
//! candle 0.11's fused `candle_nn::ops::layer_norm` and `softmax_last_dim` have no backward pass:
//! gradients stop there silently (candle issues #3569, #3011, #3752). Whether a tensor is tracked
//! ([`Tensor::track_op`]: a `Var`, or computed from one) decides the path, so one model
//! definition serves both inference (fast) and training (exact gradients). The compositions
//! compute their statistics in f32 for f16/bf16 inputs, as the fused kernels do.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

/// HF `nn.LayerNorm` over the last dimension, with weight and bias.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// `weight` `(D,)`.
    weight: Tensor,
    /// `bias` `(D,)`.
    bias: Tensor,
    eps: f64,
}

/// Loads an HF `nn.LayerNorm` (`weight`, `bias`) of width `dim`.
pub fn layer_norm(dim: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    Ok(LayerNorm {
        weight: vb.get(dim, "weight")?,
        bias: vb.get(dim, "bias")?,
        eps,
    })
}

impl LayerNorm {
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// `(..., D) -> (..., D)` in the input dtype.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let tracked = xs.track_op() || self.weight.track_op() || self.bias.track_op();
        if !tracked && xs.is_contiguous() {
            return candle_nn::ops::layer_norm(xs, &self.weight, &self.bias, self.eps as f32);
        }
        let dtype = xs.dtype();
        let xs = xs.to_dtype(stat_dtype(dtype))?;
        let mean = xs.mean_keepdim(D::Minus1)?;
        let centered = xs.broadcast_sub(&mean)?;
        let variance = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
        normed
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// Softmax over the last dimension, in the input dtype: [`crate::models::softmax`]'s kernel
/// (f32 accumulation) at inference, a differentiable f32 composition when tracked.
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    if !xs.track_op() {
        return crate::models::softmax::softmax_last_dim(xs);
    }
    let dtype = xs.dtype();
    candle_nn::ops::softmax(&xs.to_dtype(stat_dtype(dtype))?, D::Minus1)?.to_dtype(dtype)
}

/// f32 for the half types, the dtype itself otherwise.
fn stat_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn norm(dev: &Device) -> LayerNorm {
        LayerNorm {
            weight: Tensor::new(&[1.5f32, -0.5, 2.0, 1.0], dev).unwrap(),
            bias: Tensor::new(&[0.1f32, 0.2, -0.3, 0.0], dev).unwrap(),
            eps: 1e-5,
        }
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn composed_layer_norm_matches_the_fused_kernel() {
        let dev = Device::Cpu;
        let xs = Tensor::new(&[[1.0f32, 2.0, 4.0, -3.0], [0.5, 0.25, -1.0, 8.0]], &dev).unwrap();
        let fused = norm(&dev).forward(&xs).unwrap();
        let var = Var::from_tensor(&xs).unwrap();
        let composed = norm(&dev).forward(var.as_tensor()).unwrap();
        // Same f32 arithmetic up to summation order.
        assert!(max_abs_diff(&fused, &composed) < 1e-5);
    }

    #[test]
    fn layer_norm_propagates_gradients_to_input_and_weight() {
        let dev = Device::Cpu;
        let xs = Var::new(&[[1.0f32, 2.0, 4.0, -3.0]], &dev).unwrap();
        let weight = Var::new(&[1.5f32, -0.5, 2.0, 1.0], &dev).unwrap();
        let layer = LayerNorm {
            weight: weight.as_tensor().clone(),
            bias: Tensor::zeros(4, DType::F32, &dev).unwrap(),
            eps: 1e-5,
        };
        // A weighted sum, so that the gradient is not zero by symmetry.
        let probe = Tensor::new(&[[1.0f32, 0.0, -2.0, 0.5]], &dev).unwrap();
        let loss = (layer.forward(xs.as_tensor()).unwrap() * &probe)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let dx = grads.get(xs.as_tensor()).expect("input gradient");
        let dw = grads.get(weight.as_tensor()).expect("weight gradient");
        // d(loss)/d(weight) = probe * normalized(x): nonzero where probe is.
        assert!(
            dw.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.1
        );
        // LayerNorm's input gradient sums to zero over the normalized dimension.
        let dx_sum = dx.sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(dx_sum.abs() < 1e-5, "{dx_sum}");
        assert!(
            dx.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.1
        );
    }

    #[test]
    fn softmax_propagates_gradients_and_matches_the_kernel() {
        let dev = Device::Cpu;
        let raw = Tensor::new(&[[0.5f32, -1.0, 3.0]], &dev).unwrap();
        let var = Var::from_tensor(&raw).unwrap();
        let probs = softmax_last_dim(var.as_tensor()).unwrap();
        assert!(max_abs_diff(&probs, &softmax_last_dim(&raw).unwrap()) < 1e-6);
        let probe = Tensor::new(&[[1.0f32, 0.0, 0.0]], &dev).unwrap();
        let grads = (probs.clone() * probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let grad: Vec<f32> = grads
            .get(var.as_tensor())
            .expect("softmax gradient")
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // d p0 / d x = p0 (delta - p): positive for x0, negative for the others.
        let p: Vec<f32> = probs.flatten_all().unwrap().to_vec1().unwrap();
        assert!((grad[0] - p[0] * (1.0 - p[0])).abs() < 1e-6);
        assert!((grad[1] + p[0] * p[1]).abs() < 1e-6);
    }
}
