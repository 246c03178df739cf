//! LayerNorm and softmax for the model layers: the inference kernels always compute the values;
//! when the input is part of an autograd graph (training) a hand-written backward pass is
//! attached to them ([`crate::kernels::grad_ops`]).
//!
//! candle 0.11's fused `candle_nn::ops::layer_norm` and `softmax_last_dim` have no backward pass:
//! gradients stop there silently (candle issues #3569, #3011, #3752). Whether a tensor is tracked
//! ([`Tensor::track_op`]: a `Var`, or computed from one) decides whether the backward is attached,
//! so one model definition serves both inference and training, with the same forward values.

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::kernels::grad_ops::{layer_norm_with_backward, softmax_with_backward, stat_dtype};

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

    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// `(..., D) -> (..., D)` in the input dtype.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (weight, bias) = (self.weight.detach(), self.bias.detach());
        let normed = normalize(&xs.detach(), &weight, &bias, self.eps)?;
        if xs.track_op() || self.weight.track_op() || self.bias.track_op() {
            return layer_norm_with_backward(xs, &self.weight, &self.bias, self.eps, normed);
        }
        Ok(normed)
    }
}

/// The inference LayerNorm (no gradient): candle's fused kernel on a contiguous input, an
/// equivalent composition with f32 statistics for f16/bf16 otherwise.
fn normalize(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if xs.is_contiguous() {
        return candle_nn::ops::layer_norm(xs, weight, bias, eps as f32);
    }
    let dtype = xs.dtype();
    let xs = xs.to_dtype(stat_dtype(dtype))?;
    let mean = xs.mean_keepdim(D::Minus1)?;
    let centered = xs.broadcast_sub(&mean)?;
    let variance = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(variance + eps)?.sqrt()?)?;
    normed
        .to_dtype(dtype)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

/// Softmax over the last dimension, in the input dtype: [`crate::models::softmax`]'s kernel
/// (f32 accumulation), with the backward pass attached when `xs` is tracked.
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    let probs = crate::kernels::softmax::softmax_last_dim(&xs.detach())?;
    if xs.track_op() {
        return softmax_with_backward(xs, probs);
    }
    Ok(probs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

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

    /// A tensor's values, bit for bit (f16 and bf16 widen to f32 exactly).
    fn bits(t: &Tensor) -> Vec<u32> {
        let values: Vec<f32> = t
            .flatten_all()
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec1())
            .unwrap();
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// Training (tracked input) and inference compute the same forward values, bit for bit, in
    /// every dtype.
    #[test]
    fn tracked_forward_equals_inference() {
        let dev = Device::Cpu;
        let xs = Tensor::new(
            &[
                [1.0f32, 2.0, 4.0, -3.0],
                [0.5, 0.25, -1.0, 8.0],
                [3.0, 3.5, -2.0, 0.1],
                [-0.7, 1.25, 6.0, 2.5],
            ],
            &dev,
        )
        .unwrap();
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let layer = norm(&dev);
            let layer = LayerNorm {
                weight: layer.weight.to_dtype(dtype).unwrap(),
                bias: layer.bias.to_dtype(dtype).unwrap(),
                ..layer
            };
            // Contiguous (the fused kernel) and transposed (the composition) inputs.
            for transposed in [false, true] {
                let base = xs.to_dtype(dtype).unwrap();
                let var = Var::from_tensor(&base).unwrap();
                let (input, tracked) = if transposed {
                    (base.t().unwrap(), var.as_tensor().t().unwrap())
                } else {
                    (base, var.as_tensor().clone())
                };
                assert_eq!(tracked.is_contiguous(), !transposed);
                let trained = layer.forward(&tracked).unwrap();
                assert!(trained.track_op());
                assert_eq!(bits(&trained), bits(&layer.forward(&input).unwrap()));
                // candle's softmax kernel takes contiguous scores only, as attention's are.
                if !transposed {
                    let trained = softmax_last_dim(&tracked).unwrap();
                    assert!(trained.track_op());
                    assert_eq!(bits(&trained), bits(&softmax_last_dim(&input).unwrap()));
                }
            }
        }
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
