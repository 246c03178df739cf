//! Softmax over the last dimension with f32 accumulation for f16/bf16 on every device. candle's
//! CUDA kernel already accumulates in f32; its CPU kernel sums the exponentials in the input
//! dtype (8 significant bits for bf16), which on a 512-wide random-weight BLIP cost about half
//! of bf16's agreement with f32 (docs/precision.md). PyTorch accumulates in f32 on both.

use candle_core::{DType, Result, Tensor};

/// `softmax(xs)` over the last dimension, in `xs`'s dtype.
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    match xs.dtype() {
        DType::F16 | DType::BF16 if xs.device().is_cpu() => {
            candle_nn::ops::softmax_last_dim(&xs.to_dtype(DType::F32)?)?.to_dtype(xs.dtype())
        }
        _ => candle_nn::ops::softmax_last_dim(xs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// 600 equal scores: each probability is 1/600. Summed in bf16 the total stalls far below
    /// 600 (adding 1 to 256 rounds away), so candle's CPU kernel overestimates every probability.
    #[test]
    fn bf16_rows_sum_to_one() {
        let xs = Tensor::zeros((1, 600), DType::BF16, &Device::Cpu).unwrap();
        let total = |p: Tensor| {
            p.to_dtype(DType::F32)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let ours = total(softmax_last_dim(&xs).unwrap());
        assert!((ours - 1.0).abs() < 1e-2, "{ours}");
        let candle = total(candle_nn::ops::softmax_last_dim(&xs).unwrap());
        assert!(
            (candle - 1.0).abs() > 0.5,
            "candle's CPU bf16 softmax was fixed: {candle}"
        );
    }
}
