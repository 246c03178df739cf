//! Agreement of a variant's outputs with the reference's: whole generated sequences, tokens
//! position by position, and the logits of the first decoding step.

use serde::{Deserialize, Serialize};

/// How a variant's captions agree with the reference's for one decoding setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceAgreement {
    pub images: usize,
    /// Images whose whole sequence equals the reference's.
    pub exact_sequences: usize,
    pub exact_sequence_pct: f64,
    /// Generated tokens of the reference (after the decoder start), summed over images.
    pub reference_tokens: usize,
    /// Of those, the positions where the variant has the same token.
    pub agreeing_tokens: usize,
    pub token_agreement_pct: f64,
    /// Ids of the images whose sequence differs.
    pub differing_images: Vec<String>,
}

/// Compares sequences image by image. `start_len` tokens (bos and prompt) open every sequence
/// and are not counted; a position the variant does not reach disagrees.
pub fn sequences(
    reference: &[Vec<u32>],
    variant: &[Vec<u32>],
    start_len: usize,
    ids: &[String],
) -> SequenceAgreement {
    let mut agreement = SequenceAgreement {
        images: reference.len(),
        exact_sequences: 0,
        exact_sequence_pct: 0.0,
        reference_tokens: 0,
        agreeing_tokens: 0,
        token_agreement_pct: 0.0,
        differing_images: Vec::new(),
    };
    for (i, want) in reference.iter().enumerate() {
        let got = variant.get(i).map(Vec::as_slice).unwrap_or(&[]);
        if want.as_slice() == got {
            agreement.exact_sequences += 1;
        } else {
            agreement
                .differing_images
                .push(ids.get(i).cloned().unwrap_or_else(|| i.to_string()));
        }
        let generated = want.get(start_len..).unwrap_or(&[]);
        agreement.reference_tokens += generated.len();
        agreement.agreeing_tokens += generated
            .iter()
            .enumerate()
            .filter(|(k, token)| got.get(start_len + k) == Some(token))
            .count();
    }
    agreement.exact_sequence_pct = percent(agreement.exact_sequences, agreement.images);
    agreement.token_agreement_pct = percent(agreement.agreeing_tokens, agreement.reference_tokens);
    agreement
}

/// How far a variant's first-step logits are from the reference's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogitError {
    /// Max |variant - reference| over images and vocabulary (`None` when no image has finite logits).
    pub max_abs_error: Option<f64>,
    /// Mean |variant - reference| over images and vocabulary.
    pub mean_abs_error: Option<f64>,
    /// Max |reference logit| (the scale the errors compare to).
    pub reference_max_abs: f64,
    /// Images whose highest logit is at the same token.
    pub top1_agreement: usize,
    /// Images whose variant logits hold a NaN or an infinity (left out of the errors).
    pub non_finite_images: usize,
}

/// Compares per-image logit vectors (the vocabulary in each).
pub fn step1_logits(reference: &[Vec<f32>], variant: &[Vec<f32>]) -> LogitError {
    let (mut max, mut sum, mut count) = (0f64, 0f64, 0usize);
    let mut reference_max_abs = 0f64;
    let (mut top1, mut non_finite) = (0usize, 0usize);
    for (want, got) in reference.iter().zip(variant) {
        if want.len() != got.len() || got.iter().any(|v| !v.is_finite()) {
            non_finite += 1;
            continue;
        }
        for (a, b) in want.iter().zip(got) {
            let err = f64::from((a - b).abs());
            max = max.max(err);
            sum += err;
            reference_max_abs = reference_max_abs.max(f64::from(a.abs()));
        }
        count += want.len();
        if argmax(want) == argmax(got) {
            top1 += 1;
        }
    }
    let measured = count > 0;
    LogitError {
        max_abs_error: measured.then_some(max),
        mean_abs_error: measured.then(|| sum / count as f64),
        reference_max_abs,
        top1_agreement: top1,
        non_finite_images: non_finite,
    }
}

fn argmax(values: &[f32]) -> Option<usize> {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        100.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_agreement_counts_generated_positions() {
        let reference = vec![vec![9, 1, 2, 3], vec![9, 4, 5]];
        let variant = vec![vec![9, 1, 2, 3], vec![9, 4, 6, 7]];
        let ids = vec!["a".to_string(), "b".to_string()];
        let a = sequences(&reference, &variant, 1, &ids);
        assert_eq!((a.exact_sequences, a.images), (1, 2));
        assert_eq!((a.agreeing_tokens, a.reference_tokens), (4, 5));
        assert_eq!(a.differing_images, vec!["b".to_string()]);
        assert!((a.token_agreement_pct - 80.0).abs() < 1e-9);
    }

    #[test]
    fn logit_errors_skip_non_finite_images() {
        let reference = vec![vec![1.0, 3.0], vec![0.0, 1.0]];
        let variant = vec![vec![1.5, 2.0], vec![f32::NAN, 1.0]];
        let e = step1_logits(&reference, &variant);
        assert_eq!(e.max_abs_error, Some(1.0));
        assert_eq!(e.mean_abs_error, Some(0.75));
        assert_eq!((e.top1_agreement, e.non_finite_images), (1, 1));
    }
}
