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

use super::ngrams::{numpy_mean, order, IdMap, Ngram, NgramCounts, Vocab, MAX_ORDER};
use super::ImageCaptions;

const SIGMA: f64 = 6.0;

/// CIDEr-D for the corpus and for each image.
#[derive(Clone, Debug, PartialEq)]
pub struct CiderScores {
    pub corpus: f64,
    pub per_image: Vec<f64>,
}

/// A sentence's tf-idf vectors: for each n-gram (first-occurrence order), its order index and weight.
struct Vector {
    weights: Vec<(Ngram, usize, f64)>,
    lookup: IdMap<Ngram, f64>,
    norms: [f64; MAX_ORDER],
    /// Number of bigrams (pycocoevalcap's sentence length for the penalty).
    length: u32,
}

/// CIDEr-D over already-tokenized captions. An image without references scores 0.
pub fn cider_d(images: &[ImageCaptions<'_>]) -> CiderScores {
    let mut vocab = Vocab::default();
    let counted: Vec<(NgramCounts, Vec<NgramCounts>)> = images
        .iter()
        .map(|image| {
            let references = image
                .references
                .iter()
                .map(|reference| NgramCounts::new(&vocab.words(reference), MAX_ORDER))
                .collect();
            (
                NgramCounts::new(&vocab.words(image.hypothesis), MAX_ORDER),
                references,
            )
        })
        .collect();

    let mut document_frequency: IdMap<Ngram, u32> = IdMap::default();
    let mut seen_in_image: IdMap<Ngram, usize> = IdMap::default();
    for (image, (_, references)) in counted.iter().enumerate() {
        for reference in references {
            for (ngram, _) in &reference.entries {
                if seen_in_image.insert(*ngram, image) != Some(image) {
                    *document_frequency.entry(*ngram).or_insert(0) += 1;
                }
            }
        }
    }
    let ref_len = (images.len() as f64).ln();
    let vectorize = |counts: &NgramCounts| to_vector(counts, &document_frequency, ref_len);

    let per_image: Vec<f64> = counted
        .iter()
        .map(|(hypothesis, references)| {
            if references.is_empty() {
                return 0.0;
            }
            let hyp = vectorize(hypothesis);
            let mut sums = [0.0f64; MAX_ORDER];
            for reference in references {
                let similarity = similarity(&hyp, &vectorize(reference));
                for (sum, value) in sums.iter_mut().zip(similarity) {
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

fn to_vector(counts: &NgramCounts, document_frequency: &IdMap<Ngram, u32>, ref_len: f64) -> Vector {
    let mut weights = Vec::with_capacity(counts.entries.len());
    let mut lookup = IdMap::default();
    let mut squares = [0.0f64; MAX_ORDER];
    let mut length = 0;
    for &(ngram, term_frequency) in &counts.entries {
        let df = f64::from(document_frequency.get(&ngram).copied().unwrap_or(0))
            .max(1.0)
            .ln();
        let n = order(&ngram).saturating_sub(1);
        let weight = f64::from(term_frequency) * (ref_len - df);
        if let Some(square) = squares.get_mut(n) {
            *square += weight * weight;
        }
        if n == 1 {
            length += term_frequency;
        }
        weights.push((ngram, n, weight));
        lookup.insert(ngram, weight);
    }
    Vector {
        weights,
        lookup,
        norms: squares.map(f64::sqrt),
        length,
    }
}

/// Clipped, length-penalised cosine similarity per order.
fn similarity(hyp: &Vector, reference: &Vector) -> [f64; MAX_ORDER] {
    let delta = f64::from(hyp.length) - f64::from(reference.length);
    let penalty = std::f64::consts::E.powf(-(delta * delta) / (2.0 * SIGMA * SIGMA));
    let mut values = [0.0f64; MAX_ORDER];
    for &(ngram, n, weight) in &hyp.weights {
        if let (Some(&ref_weight), Some(value)) = (reference.lookup.get(&ngram), values.get_mut(n))
        {
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
