//! The captioning loss: a batch of tokenized captions as decoder inputs and shifted targets, and
//! the label-smoothed cross-entropy over the caption tokens (HF `BlipTextLMHeadModel`'s loss,
//! reduction "mean", with LAVIS' masking of the prompt and the padding).

use candle_core::{DType, Device, Result, Tensor, D};

use crate::preprocess::prompt::CaptionIds;

/// Padding id of the BLIP tokenizer (`[PAD]`).
pub const PAD_ID: u32 = 0;

/// Decoder inputs and targets of one batch, right-padded to the longest caption.
#[derive(Debug, Clone)]
pub struct CaptionBatch {
    /// `(B, T)` u32: `[DEC] prompt caption [SEP] [PAD]...`.
    pub input_ids: Tensor,
    /// `(B, T-1)` u32: `input_ids` shifted left by one (position `i` predicts id `i+1`); pads are 0.
    pub targets: Tensor,
    /// `(B, T-1)` f32: 1 where the target is a caption token or the final `[SEP]`, 0 for the
    /// prompt and the padding.
    pub weights: Tensor,
    /// Number of targets with weight 1.
    pub target_tokens: usize,
}

impl CaptionBatch {
    /// Pads `captions` to the longest one and builds the targets on `device`. Errors when no
    /// caption has a token to predict (every one is prompt only).
    pub fn new(captions: &[CaptionIds], device: &Device) -> Result<Self> {
        let t = captions.iter().map(|c| c.ids.len()).max().unwrap_or(0);
        if t < 2 {
            candle_core::bail!("a caption batch needs at least one token after the bos");
        }
        let b = captions.len();
        let mut input_ids = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * (t - 1));
        let mut weights = Vec::with_capacity(b * (t - 1));
        for caption in captions {
            let padded = caption
                .ids
                .iter()
                .copied()
                .chain(std::iter::repeat(PAD_ID))
                .take(t);
            input_ids.extend(padded);
            for position in 1..t {
                let id = caption.ids.get(position).copied();
                targets.push(id.unwrap_or(PAD_ID));
                // Label `position` is masked when it is part of the prompt (LAVIS sets labels
                // [0, prompt_len) to -100) or padding.
                let counted = id.is_some() && position >= caption.prompt_len;
                weights.push(if counted { 1f32 } else { 0f32 });
            }
        }
        let target_tokens = weights.iter().filter(|w| **w > 0.0).count();
        if target_tokens == 0 {
            candle_core::bail!("no caption in the batch has a token to predict after its prompt");
        }
        Ok(Self {
            input_ids: Tensor::from_vec(input_ids, (b, t), device)?,
            targets: Tensor::from_vec(targets, (b, t - 1), device)?,
            weights: Tensor::from_vec(weights, (b, t - 1), device)?,
            target_tokens,
        })
    }
}

/// Mean label-smoothed cross-entropy of `logits` `(B, T, V)` over the batch's counted targets:
/// per target `(1 - eps) * -log p(target) + eps * mean_v(-log p(v))` (PyTorch's
/// `CrossEntropyLoss(label_smoothing=eps)`), computed in f32. Returns a scalar tensor.
pub fn caption_loss(logits: &Tensor, batch: &CaptionBatch, label_smoothing: f64) -> Result<Tensor> {
    let (_, t, _) = logits.dims3()?;
    let shifted = logits.narrow(1, 0, t - 1)?.to_dtype(DType::F32)?;
    let log_probs = candle_nn::ops::log_softmax(&shifted, D::Minus1)?;
    let target_log_probs = log_probs
        .gather(&batch.targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?;
    let per_token = if label_smoothing > 0.0 {
        let uniform = log_probs.mean(D::Minus1)?;
        ((target_log_probs * (1.0 - label_smoothing))? + (uniform * label_smoothing)?)?
    } else {
        target_log_probs
    };
    let total = (per_token * &batch.weights)?.sum_all()?;
    total.affine(-1.0 / batch.target_tokens as f64, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[u32], prompt_len: usize) -> CaptionIds {
        CaptionIds {
            ids: ids.to_vec(),
            prompt_len,
        }
    }

    #[test]
    fn batch_masks_prompt_and_padding() {
        let captions = [ids(&[30522, 7, 8, 9, 102], 2), ids(&[30522, 7, 5, 102], 2)];
        let batch = CaptionBatch::new(&captions, &Device::Cpu).unwrap();
        let input: Vec<Vec<u32>> = batch.input_ids.to_vec2().unwrap();
        assert_eq!(input[1], vec![30522, 7, 5, 102, 0]);
        let targets: Vec<Vec<u32>> = batch.targets.to_vec2().unwrap();
        assert_eq!(targets[0], vec![7, 8, 9, 102]);
        let weights: Vec<Vec<f32>> = batch.weights.to_vec2().unwrap();
        // Target 7 (position 1) is the prompt's; the pad after row 1's [SEP] is not counted.
        assert_eq!(weights[0], vec![0.0, 1.0, 1.0, 1.0]);
        assert_eq!(weights[1], vec![0.0, 1.0, 1.0, 0.0]);
        assert_eq!(batch.target_tokens, 5);
    }

    #[test]
    fn prompt_only_batch_is_an_error() {
        let captions = [ids(&[30522, 7], 2)];
        assert!(CaptionBatch::new(&captions, &Device::Cpu).is_err());
    }

    #[test]
    fn loss_matches_hand_computed_cross_entropy() {
        let dev = Device::Cpu;
        let captions = [ids(&[0, 1, 2], 1)];
        let batch = CaptionBatch::new(&captions, &dev).unwrap();
        // Vocabulary of 3; positions 0 and 1 predict ids 1 and 2.
        let rows = [[0.0f32, 2.0, 0.0], [1.0, 0.0, 3.0], [0.0, 0.0, 0.0]];
        let logits = Tensor::new(&[rows], &dev).unwrap();
        let eps = 0.1;
        let expected: f64 = [(rows[0], 1usize), (rows[1], 2usize)]
            .iter()
            .map(|(row, target)| {
                let lse = row.iter().map(|v| (*v as f64).exp()).sum::<f64>().ln();
                let nll = lse - row[*target] as f64;
                let smooth = row.iter().map(|v| lse - *v as f64).sum::<f64>() / 3.0;
                (1.0 - eps) * nll + eps * smooth
            })
            .sum::<f64>()
            / 2.0;
        let loss = caption_loss(&logits, &batch, eps)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (loss as f64 - expected).abs() < 1e-5,
            "{loss} vs {expected}"
        );
    }
}
