//! Softmax (last dimension) and LayerNorm with hand-written backward passes, for training.
//!
//! The caller computes the forward value on detached inputs with the inference path (the fused
//! candle kernels, bit for bit what inference gets); [`softmax_with_backward`] and
//! [`layer_norm_with_backward`] then attach it to the autograd graph through a candle custom op
//! whose forward hands back that value and whose `bwd` computes the input gradients, in f32 for
//! f16/bf16, from what it needs only: the softmax output, or LayerNorm's input and weight. A
//! composition of tensor ops instead keeps every intermediate (f32 copies, exponentials,
//! centred values, ...) alive until the backward pass, and runs a kernel for each.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor, D,
};

/// `softmax(xs)` over the last dimension, valued `probs` (computed by the caller from
/// `xs.detach()`, same shape), with the backward pass `dx = y * (dy - sum(dy * y))` that reads
/// the output only.
pub fn softmax_with_backward(xs: &Tensor, probs: Tensor) -> Result<Tensor> {
    xs.apply_op1(SoftmaxLastDim {
        probs: Precomputed::new(probs)?,
    })
}

/// `LayerNorm(xs) * weight + bias` over the last dimension, valued `normed` (computed by the
/// caller from the detached inputs, same shape as `xs`), with a backward pass that recomputes the
/// normalized input in f32 from `xs` and gives gradients to the tracked inputs only.
pub fn layer_norm_with_backward(
    xs: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    normed: Tensor,
) -> Result<Tensor> {
    xs.apply_op3(
        weight,
        bias,
        LayerNormOp {
            eps,
            normed: Precomputed::new(normed)?,
        },
    )
}

/// f32 for the half types, the dtype itself otherwise: where statistics and gradients accumulate.
pub(crate) fn stat_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

/// An op's forward result, computed before the op is applied. The op's single forward call moves
/// it out (a copy of its storage becomes the op's output), so that the graph holds it once.
struct Precomputed(Mutex<Option<Tensor>>);

impl Precomputed {
    /// Holds `values` (detached) contiguous from offset 0, so that a copy of the whole storage
    /// reads as a contiguous tensor of its shape.
    fn new(values: Tensor) -> Result<Self> {
        let plain = {
            let layout = values.layout();
            layout.is_contiguous() && layout.start_offset() == 0
        };
        let values = if plain {
            values.detach()
        } else {
            values.detach().force_contiguous()?
        };
        Ok(Self(Mutex::new(Some(values))))
    }

    /// Takes the values out, checking them against the op's input shape.
    fn take(&self, op: &str, expected: &Shape) -> Result<Tensor> {
        let values = self
            .0
            .lock()
            .map_err(|_| candle_core::Error::Msg(format!("{op}: a forward pass panicked")))?
            .take();
        let Some(values) = values else {
            candle_core::bail!("{op}: the forward pass ran twice (the op is applied once)");
        };
        if values.shape() != expected {
            candle_core::bail!(
                "{op}: precomputed result {:?} does not match the input {expected:?}",
                values.shape()
            );
        }
        Ok(values)
    }

    fn cpu(&self, op: &str, expected: &Shape) -> Result<(CpuStorage, Shape)> {
        let values = self.take(op, expected)?;
        let (storage, layout) = values.storage_and_layout();
        match &*storage {
            Storage::Cpu(storage) => Ok((storage.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("{op}: the precomputed result is not on the CPU"),
        }
    }

    /// Compiles against candle's stand-in CUDA backend without the `cuda` feature (it is never
    /// called there: no tensor lives on a CUDA device).
    fn cuda(&self, op: &str, expected: &Shape) -> Result<(CudaStorage, Shape)> {
        let values = self.take(op, expected)?;
        let (storage, layout) = values.storage_and_layout();
        match &*storage {
            Storage::Cuda(storage) => Ok((storage.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("{op}: the precomputed result is not on the CUDA device"),
        }
    }
}

/// Softmax over the last dimension; backward from the output.
struct SoftmaxLastDim {
    probs: Precomputed,
}

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax-last-dim-with-backward"
    }

    fn cpu_fwd(&self, _: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        self.probs.cpu(self.name(), layout.shape())
    }

    fn cuda_fwd(&self, _: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        self.probs.cuda(self.name(), layout.shape())
    }

    /// `dx = y * (dy - sum(dy * y, last))`, accumulated in [`stat_dtype`].
    fn bwd(&self, xs: &Tensor, probs: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // Detached: the gradient must not carry a graph that keeps these temporaries alive.
        let stat = stat_dtype(xs.dtype());
        let probs = probs.detach().to_dtype(stat)?;
        // In a block so that each full-size temporary is freed as soon as it has been read.
        let centered = {
            let grad = grad.detach().to_dtype(stat)?;
            let dot = (&grad * &probs)?.sum_keepdim(D::Minus1)?;
            grad.broadcast_sub(&dot)?
        };
        Ok(Some((centered * probs)?.to_dtype(xs.dtype())?))
    }
}

/// LayerNorm over the last dimension with weight and bias; backward from the input and weight.
struct LayerNormOp {
    eps: f64,
    normed: Precomputed,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm-with-backward"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        layout: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.normed.cpu(self.name(), layout.shape())
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        layout: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.normed.cuda(self.name(), layout.shape())
    }

    /// With `x̂ = (x - mean) / sqrt(var + eps)` recomputed from `x` and `g = dy * w`:
    /// `dx = (g - mean(g) - x̂ * mean(g * x̂)) / sqrt(var + eps)`, `dw = Σ dy * x̂` and
    /// `db = Σ dy` over every leading dimension; each only for a tracked input.
    fn bwd(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let width = xs.dim(D::Minus1)?;
        if width == 0 {
            candle_core::bail!("layer norm backward: the normalized dimension is empty");
        }
        let rows = xs.elem_count() / width;
        let stat = stat_dtype(xs.dtype());
        // Detached: the gradients must not carry a graph that keeps these temporaries alive.
        let flat = |t: &Tensor| t.detach().to_dtype(stat)?.reshape((rows, width));
        let (xs_stat, grad) = (flat(xs)?, flat(grad)?);
        let centered = xs_stat.broadcast_sub(&xs_stat.mean_keepdim(1)?)?;
        let inv_std = (centered.sqr()?.mean_keepdim(1)? + self.eps)?
            .sqrt()?
            .recip()?;
        let normalized = centered.broadcast_mul(&inv_std)?;
        let dx = if xs.track_op() {
            let g = grad.broadcast_mul(&weight.detach().to_dtype(stat)?)?;
            let g_mean = g.mean_keepdim(1)?;
            let gx_mean = (&g * &normalized)?.mean_keepdim(1)?;
            let dx = g
                .broadcast_sub(&g_mean)?
                .sub(&normalized.broadcast_mul(&gx_mean)?)?
                .broadcast_mul(&inv_std)?;
            Some(dx.reshape(xs.shape())?.to_dtype(xs.dtype())?)
        } else {
            None
        };
        let dw = if weight.track_op() {
            Some((&grad * &normalized)?.sum(0)?.to_dtype(weight.dtype())?)
        } else {
            None
        };
        let db = if bias.track_op() {
            Some(grad.sum(0)?.to_dtype(bias.dtype())?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Deterministic values in `[-scale, scale)` + `offset` (a 64-bit LCG), as an f32 tensor.
    fn pseudo_random(shape: &[usize], seed: u64, scale: f32, offset: f32) -> Tensor {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
                (2.0 * unit - 1.0) * scale + offset
            })
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    fn to_f32(t: &Tensor) -> Tensor {
        t.to_dtype(DType::F32).unwrap()
    }

    /// `max |a - b| / max |b|`, both read as f32.
    fn relative_error(actual: &Tensor, expected: &Tensor) -> f32 {
        let (actual, expected) = (to_f32(actual), to_f32(expected));
        let max = |t: Tensor| t.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        let diff = max((&actual - &expected).unwrap())
            .to_scalar::<f32>()
            .unwrap();
        diff / max(expected).to_scalar::<f32>().unwrap()
    }

    /// The differentiable composition training used before these ops (statistics in f32).
    fn composed_softmax(xs: &Tensor) -> Tensor {
        let dtype = xs.dtype();
        candle_nn::ops::softmax(&xs.to_dtype(stat_dtype(dtype)).unwrap(), D::Minus1)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// The differentiable composition training used before these ops (statistics in f32).
    fn composed_layer_norm(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Tensor {
        let dtype = xs.dtype();
        let xs = xs.to_dtype(stat_dtype(dtype)).unwrap();
        let centered = xs
            .broadcast_sub(&xs.mean_keepdim(D::Minus1).unwrap())
            .unwrap();
        let variance = centered.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let normed = centered
            .broadcast_div(&(variance + eps).unwrap().sqrt().unwrap())
            .unwrap();
        normed
            .to_dtype(dtype)
            .unwrap()
            .broadcast_mul(weight)
            .unwrap()
            .broadcast_add(bias)
            .unwrap()
    }

    /// `sum(out * probe)`: its gradient with respect to `out` is `probe`.
    fn probe_loss(out: &Tensor, probe: &Tensor) -> Tensor {
        (to_f32(out) * to_f32(probe)).unwrap().sum_all().unwrap()
    }

    fn softmax_op(xs: &Tensor) -> Tensor {
        let probs = crate::kernels::softmax::softmax_last_dim(&xs.detach()).unwrap();
        softmax_with_backward(xs, probs).unwrap()
    }

    fn layer_norm_op(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Tensor {
        let normed =
            candle_nn::ops::layer_norm(&xs.detach(), &weight.detach(), &bias.detach(), eps as f32)
                .unwrap();
        layer_norm_with_backward(xs, weight, bias, eps, normed).unwrap()
    }

    /// The op's gradient (inputs in `dtype`) against the reference: the f32 composition's
    /// gradient at the same (rounded) inputs, in f32. The old composition run in `dtype` is
    /// printed beside it for comparison. Returns the op's relative error.
    fn softmax_gradient_error(dtype: DType) -> f32 {
        let shape = [2, 3, 7, 33];
        let xs = pseudo_random(&shape, 1, 4.0, 0.0).to_dtype(dtype).unwrap();
        let probe = pseudo_random(&shape, 2, 1.0, 0.0).to_dtype(dtype).unwrap();
        let grad_of = |f: &dyn Fn(&Tensor) -> Tensor, xs: &Tensor| {
            let var = Var::from_tensor(xs).unwrap();
            let grads = probe_loss(&f(var.as_tensor()), &probe).backward().unwrap();
            grads.get(var.as_tensor()).expect("input gradient").clone()
        };
        let reference = grad_of(&composed_softmax, &to_f32(&xs));
        let ours = relative_error(&grad_of(&softmax_op, &xs), &reference);
        let composed = relative_error(&grad_of(&composed_softmax, &xs), &reference);
        println!("softmax {dtype:?}: op {ours:.2e}, composition in {dtype:?} {composed:.2e}");
        ours
    }

    /// As [`softmax_gradient_error`], for LayerNorm's input, weight and bias gradients; returns
    /// the worst of the three.
    fn layer_norm_gradient_error(dtype: DType) -> f32 {
        let (rows, width, eps) = ([4, 5], 48, 1e-5);
        let shape = [rows[0], rows[1], width];
        let inputs = [
            // An offset mean, as hidden states have.
            pseudo_random(&shape, 3, 2.0, 0.7),
            pseudo_random(&[width], 4, 1.0, 1.0),
            pseudo_random(&[width], 5, 0.5, 0.0),
        ]
        .map(|t| t.to_dtype(dtype).unwrap());
        let probe = pseudo_random(&shape, 6, 1.0, 0.0).to_dtype(dtype).unwrap();
        type Norm<'a> = &'a dyn Fn(&Tensor, &Tensor, &Tensor, f64) -> Tensor;
        let grads_of = |f: Norm, inputs: &[Tensor; 3]| {
            let vars = inputs.clone().map(|t| Var::from_tensor(&t).unwrap());
            let [xs, weight, bias] = vars.each_ref().map(|v| v.as_tensor());
            let grads = probe_loss(&f(xs, weight, bias, eps), &probe)
                .backward()
                .unwrap();
            [xs, weight, bias].map(|t| grads.get(t).expect("gradient").clone())
        };
        let reference = grads_of(&composed_layer_norm, &inputs.clone().map(|t| to_f32(&t)));
        let ours = grads_of(&layer_norm_op, &inputs);
        let composed = grads_of(&composed_layer_norm, &inputs);
        let mut worst = 0f32;
        for (i, name) in ["input", "weight", "bias"].iter().enumerate() {
            let error = relative_error(&ours[i], &reference[i]);
            let old = relative_error(&composed[i], &reference[i]);
            println!(
                "layer norm {dtype:?} {name}: op {error:.2e}, composition in {dtype:?} {old:.2e}"
            );
            worst = worst.max(error);
        }
        worst
    }

    #[test]
    fn softmax_gradient_matches_the_f32_composition() {
        // f32: the same arithmetic up to summation order (measured 2.6e-7).
        let error = softmax_gradient_error(DType::F32);
        assert!(error < 1e-6, "f32 {error}");
        // Half types: the op reads the output rounded to the dtype (bf16 keeps 8 significant bits:
        // 2^-9 relative), and the gradient is rounded once more on return. Measured 3.4e-3 (bf16)
        // and 5.6e-4 (f16), beside 2.6e-3 and 3.2e-4 for the composition run in the half type.
        let error = softmax_gradient_error(DType::BF16);
        assert!(error < 1e-2, "bf16 {error}");
        let error = softmax_gradient_error(DType::F16);
        assert!(error < 2e-3, "f16 {error}");
    }

    #[test]
    fn layer_norm_gradients_match_the_f32_composition() {
        // f32: summation order only (measured 1.4e-7).
        let error = layer_norm_gradient_error(DType::F32);
        assert!(error < 1e-6, "f32 {error}");
        // Half types: the input is rounded to the dtype, the gradients once more on return; the
        // weight and bias sums accumulate in f32 (the composition sums in the half type). Measured
        // worst 2.3e-3 (bf16) and 3.6e-4 (f16), beside 1.2e-2 and 1.4e-3 for the composition.
        let error = layer_norm_gradient_error(DType::BF16);
        assert!(error < 1e-2, "bf16 {error}");
        let error = layer_norm_gradient_error(DType::F16);
        assert!(error < 2e-3, "f16 {error}");
    }

    #[test]
    fn layer_norm_gradients_reach_tracked_inputs_only() {
        let eps = 1e-5;
        let xs = pseudo_random(&[3, 16], 7, 1.0, 0.0);
        let weight = pseudo_random(&[16], 8, 1.0, 1.0);
        let bias = pseudo_random(&[16], 9, 1.0, 0.0);
        let probe = pseudo_random(&[3, 16], 10, 1.0, 0.0);
        // Frozen weights: the input only.
        let var = Var::from_tensor(&xs).unwrap();
        let grads = probe_loss(&layer_norm_op(var.as_tensor(), &weight, &bias, eps), &probe)
            .backward()
            .unwrap();
        assert!(grads.get(var.as_tensor()).is_some());
        assert!(grads.get(&weight).is_none() && grads.get(&bias).is_none());
        // A frozen input and trained weight: the weight only, equal to the composition's.
        let weight_var = Var::from_tensor(&weight).unwrap();
        let w = weight_var.as_tensor();
        let grads = probe_loss(&layer_norm_op(&xs, w, &bias, eps), &probe)
            .backward()
            .unwrap();
        assert!(grads.get(&xs).is_none() && grads.get(&bias).is_none());
        let reference = probe_loss(&composed_layer_norm(&xs, w, &bias, eps), &probe)
            .backward()
            .unwrap();
        let error = relative_error(grads.get(w).unwrap(), reference.get(w).unwrap());
        assert!(error < 1e-5, "{error}");
    }

    #[test]
    fn the_op_returns_the_precomputed_values() {
        let xs = Var::from_tensor(&pseudo_random(&[2, 5], 11, 1.0, 0.0)).unwrap();
        // A strided (transposed) result is made contiguous first.
        let values = pseudo_random(&[5, 2], 12, 1.0, 0.0).t().unwrap();
        let out = softmax_with_backward(xs.as_tensor(), values.clone()).unwrap();
        assert!(out.track_op());
        assert_eq!(
            out.to_vec2::<f32>().unwrap(),
            values.to_vec2::<f32>().unwrap()
        );
        let wrong = Tensor::zeros((5, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(softmax_with_backward(xs.as_tensor(), wrong).is_err());
    }
}
