//! ROUGE-L as pycocoevalcap 1.2's `Rouge` computes it.
//!
//! Per image: longest common subsequence between the hypothesis and each reference (tokens from
//! splitting on single spaces, as Python's `split(" ")`, so an empty caption is one empty token);
//! precision `lcs / |hyp|` and recall `lcs / |ref|`, each maximised over the references separately;
//! `F = (1 + b^2) P R / (R + b^2 P)` with `b = 1.2`, 0 when either maximum is 0. Corpus: numpy mean.

use super::ngrams::numpy_mean;
use super::ImageCaptions;

const BETA: f64 = 1.2;

/// ROUGE-L for the corpus and for each image.
#[derive(Clone, Debug, PartialEq)]
pub struct RougeScores {
    pub corpus: f64,
    pub per_image: Vec<f64>,
}

/// ROUGE-L over already-tokenized captions. An image without references scores 0.
pub fn rouge_l(images: &[ImageCaptions<'_>]) -> RougeScores {
    let per_image: Vec<f64> = images
        .iter()
        .map(|image| image_score(image.hypothesis, image.references))
        .collect();
    RougeScores {
        corpus: numpy_mean(&per_image),
        per_image,
    }
}

/// ROUGE-L of one hypothesis against its references.
pub fn image_score(hypothesis: &str, references: &[String]) -> f64 {
    let candidate: Vec<&str> = hypothesis.split(' ').collect();
    let mut precision_max = f64::NEG_INFINITY;
    let mut recall_max = f64::NEG_INFINITY;
    let mut row = Vec::new();
    for reference in references {
        let reference: Vec<&str> = reference.split(' ').collect();
        let lcs = lcs_len(&reference, &candidate, &mut row) as f64;
        precision_max = precision_max.max(lcs / candidate.len() as f64);
        recall_max = recall_max.max(lcs / reference.len() as f64);
    }
    if precision_max > 0.0 && recall_max > 0.0 {
        let beta2 = BETA.powf(2.0);
        ((1.0 + beta2) * precision_max * recall_max) / (recall_max + beta2 * precision_max)
    } else {
        0.0
    }
}

/// Length of the longest common subsequence (one rolling row of the DP table).
fn lcs_len(a: &[&str], b: &[&str], row: &mut Vec<usize>) -> usize {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    row.clear();
    row.resize(short.len() + 1, 0);
    for item in long {
        let mut diagonal = 0; // table[i-1][j-1]
        for (j, other) in short.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or(0); // table[i-1][j]
            let left = row.get(j).copied().unwrap_or(0); // table[i][j-1]
            let value = if item == other {
                diagonal + 1
            } else {
                above.max(left)
            };
            diagonal = above;
            if let Some(slot) = row.get_mut(j + 1) {
                *slot = value;
            }
        }
    }
    row.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcs_of_small_sequences() {
        let mut row = Vec::new();
        assert_eq!(lcs_len(&["a", "b", "c", "d"], &["b", "d"], &mut row), 2);
        assert_eq!(lcs_len(&["x"], &["a", "b"], &mut row), 0);
        assert_eq!(lcs_len(&["a", "b", "a"], &["b", "a", "b"], &mut row), 2);
    }

    #[test]
    fn empty_hypothesis_is_one_empty_token() {
        assert_eq!(image_score("", &["a dog".to_string()]), 0.0);
        // Python: "".split(" ") == [""], which matches an empty reference.
        assert_eq!(image_score("", &[String::new()]), 1.0);
    }
}
