//! CIDEr-D as pycocoevalcap 1.2's `Cider()` computes it (n = 4, sigma = 6).
//!
//! - Document frequency `df(g)`: number of images whose references contain n-gram `g`, over the
//!   evaluated set only; `ref_len = ln(number of images)`.
//! - Each sentence becomes, per order n, a vector `tf(g) * (ref_len - ln(max(1, df(g))))` with its L2
//!   norm; its "length" is its bigram count.
//! - Hypothesis vs reference, per n: `sum_g min(v_hyp[g], v_ref[g]) * v_ref[g]` over the hypothesis
//!   n-grams, divided by both norms when both are non-zero, times `e^(-(len_hyp - len_ref)^2 / (2 sigma^2))`.
//! - Image score: per-n sums over references, their mean over n, divided by the number of
//!   references, times 10. Corpus: numpy mean over images.
//!
//! Sums run in pycocoevalcap's order (n-grams in first-occurrence order) so results agree to a few ULP.

use super::ngrams::{numpy_mean, GramInterner, Sentence, MAX_ORDER};
use super::ImageCaptions;

const SIGMA: f64 = 6.0;

/// CIDEr-D for the corpus and for each image.
#[derive(Clone, Debug, PartialEq)]
pub struct CiderScores {
    pub corpus: f64,
    pub per_image: Vec<f64>,
}

/// A sentence's tf-idf vectors: (n-gram id, order index, weight) in first-occurrence order.
struct Vector {
    weights: Vec<(u32, usize, f64)>,
    norms: [f64; MAX_ORDER],
    /// Number of bigrams (pycocoevalcap's sentence length for the penalty).
    length: u32,
}

/// CIDEr-D over already-tokenized captions. An image without references scores 0.
pub fn cider_d(images: &[ImageCaptions<'_>]) -> CiderScores {
    let mut interner = GramInterner::default();
    let counted: Vec<(Sentence, Vec<Sentence>)> = images
        .iter()
        .map(|image| {
            let references = image
                .references
                .iter()
                .map(|r| interner.sentence(r))
                .collect();
            (interner.sentence(image.hypothesis), references)
        })
        .collect();

    // Document frequency over the references, then each n-gram's idf term `ref_len - ln(max(1, df))`.
    let mut document_frequency = vec![0u32; interner.len()];
    let mut counted_in = vec![usize::MAX; interner.len()];
    for (image, (_, references)) in counted.iter().enumerate() {
        for &(gram, _) in references.iter().flat_map(|r| &r.grams) {
            let g = gram as usize;
            if let (Some(seen), Some(df)) = (counted_in.get_mut(g), document_frequency.get_mut(g)) {
                if *seen != image {
                    *seen = image;
                    *df += 1;
                }
            }
        }
    }
    let ref_len = (images.len() as f64).ln();
    let idf: Vec<f64> = document_frequency
        .iter()
        .map(|&df| ref_len - f64::from(df).max(1.0).ln())
        .collect();
    let order = |gram: u32| interner.order(gram).saturating_sub(1);

    // Reference weights of the current reference, indexed by n-gram id (valid where `owner` matches).
    let mut ref_weight = vec![0.0f64; interner.len()];
    let mut owner = vec![u32::MAX; interner.len()];
    let mut reference_number = 0u32;
    let per_image: Vec<f64> = counted
        .iter()
        .map(|(hypothesis, references)| {
            if references.is_empty() {
                return 0.0;
            }
            let hyp = to_vector(hypothesis, &idf, order);
            let mut sums = [0.0f64; MAX_ORDER];
            for reference in references {
                let reference = to_vector(reference, &idf, order);
                reference_number = reference_number.wrapping_add(1);
                for &(gram, _, weight) in &reference.weights {
                    let g = gram as usize;
                    if let (Some(slot), Some(who)) = (ref_weight.get_mut(g), owner.get_mut(g)) {
                        *slot = weight;
                        *who = reference_number;
                    }
                }
                let lookup = |gram: u32| {
                    let g = gram as usize;
                    (owner.get(g) == Some(&reference_number))
                        .then(|| ref_weight.get(g).copied())
                        .flatten()
                };
                for (sum, value) in sums.iter_mut().zip(similarity(&hyp, &reference, lookup)) {
                    *sum += value;
                }
            }
            // np.mean over the four orders (sequential below 8 elements), then / #refs, * 10.
            let mean = sums.iter().fold(0.0, |acc, &v| acc + v) / MAX_ORDER as f64;
            mean / references.len() as f64 * 10.0
        })
        .collect();
    CiderScores {
        corpus: numpy_mean(&per_image),
        per_image,
    }
}

fn to_vector(sentence: &Sentence, idf: &[f64], order: impl Fn(u32) -> usize) -> Vector {
    let mut weights = Vec::with_capacity(sentence.grams.len());
    let mut squares = [0.0f64; MAX_ORDER];
    let mut length = 0;
    for &(gram, term_frequency) in &sentence.grams {
        let n = order(gram);
        let weight = f64::from(term_frequency) * idf.get(gram as usize).copied().unwrap_or(0.0);
        if let Some(square) = squares.get_mut(n) {
            *square += weight * weight;
        }
        if n == 1 {
            length += term_frequency;
        }
        weights.push((gram, n, weight));
    }
    Vector {
        weights,
        norms: squares.map(f64::sqrt),
        length,
    }
}

/// Clipped, length-penalised cosine similarity per order; `reference_weight` looks up the
/// reference's weight of a hypothesis n-gram (None when the reference lacks it).
fn similarity(
    hyp: &Vector,
    reference: &Vector,
    reference_weight: impl Fn(u32) -> Option<f64>,
) -> [f64; MAX_ORDER] {
    let delta = f64::from(hyp.length) - f64::from(reference.length);
    let penalty = std::f64::consts::E.powf(-(delta * delta) / (2.0 * SIGMA * SIGMA));
    let mut values = [0.0f64; MAX_ORDER];
    for &(gram, n, weight) in &hyp.weights {
        if let (Some(ref_weight), Some(value)) = (reference_weight(gram), values.get_mut(n)) {
            *value += weight.min(ref_weight) * ref_weight;
        }
    }
    for ((value, &norm_hyp), &norm_ref) in values.iter_mut().zip(&hyp.norms).zip(&reference.norms) {
        if norm_hyp != 0.0 && norm_ref != 0.0 {
            *value /= norm_hyp * norm_ref;
        }
        *value *= penalty;
    }
    values
}
