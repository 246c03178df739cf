//! Corpus BLEU-1..4 as pycocoevalcap 1.2's `Bleu(4)` computes it (`BleuScorer`, option "closest").
//!
//! Per image: hypothesis n-gram counts clipped by the largest count of that n-gram in any single
//! reference; `guess[n] = max(0, len - n + 1)`; the reference length closest to the hypothesis length
//! (ties go to the shorter). Corpus: sums of those, then
//! `BLEU_n = (prod_{k<=n} (correct_k + 1e-15) / (guess_k + 1e-9))^(1/n)`, times the brevity penalty
//! `exp(1 - 1/ratio)` when `ratio = (testlen + 1e-15) / (reflen + 1e-9) < 1`. Words are split as
//! Python's `str.split()`.

use super::ngrams::{order, IdMap, Ngram, NgramCounts, Vocab, MAX_ORDER};
use super::ImageCaptions;

/// Added to the clipped match counts ("tiny" in pycocoevalcap).
const TINY: f64 = 1e-15;
/// Added to the guess counts and reference length ("small").
const SMALL: f64 = 1e-9;

/// BLEU-1..4 for the corpus and for each image (pycocoevalcap's per-image `bleu_list`).
#[derive(Clone, Debug, PartialEq)]
pub struct BleuScores {
    pub corpus: [f64; MAX_ORDER],
    pub per_image: Vec<[f64; MAX_ORDER]>,
}

/// Sufficient statistics of one image.
struct Cooked {
    testlen: usize,
    reflen: usize,
    guess: [usize; MAX_ORDER],
    correct: [usize; MAX_ORDER],
}

/// BLEU over already-tokenized captions. An image without references counts reference length 0.
pub fn bleu(images: &[ImageCaptions<'_>]) -> BleuScores {
    let mut vocab = Vocab::default();
    let mut total = Cooked {
        testlen: 0,
        reflen: 0,
        guess: [0; MAX_ORDER],
        correct: [0; MAX_ORDER],
    };
    let mut per_image = Vec::with_capacity(images.len());
    for image in images {
        let cooked = cook(image, &mut vocab);
        total.testlen += cooked.testlen;
        total.reflen += cooked.reflen;
        for k in 0..MAX_ORDER {
            total.guess[k] += cooked.guess[k];
            total.correct[k] += cooked.correct[k];
        }
        per_image.push(scores(&cooked));
    }
    BleuScores {
        corpus: scores(&total),
        per_image,
    }
}

fn cook<'a>(image: &ImageCaptions<'a>, vocab: &mut Vocab<'a>) -> Cooked {
    let mut reflens = Vec::with_capacity(image.references.len());
    let mut max_counts: IdMap<Ngram, u32> = IdMap::default();
    for reference in image.references {
        let words = vocab.words(reference);
        reflens.push(words.len());
        for (ngram, count) in NgramCounts::new(&words, MAX_ORDER).entries {
            let slot = max_counts.entry(ngram).or_insert(0);
            *slot = (*slot).max(count);
        }
    }
    let words = vocab.words(image.hypothesis);
    let testlen = words.len();
    // "closest": min over (|reflen - testlen|, reflen), so ties go to the shorter reference.
    let reflen = reflens
        .iter()
        .map(|&l| (l.abs_diff(testlen), l))
        .min()
        .map_or(0, |(_, l)| l);
    let mut guess = [0; MAX_ORDER];
    for (k, slot) in guess.iter_mut().enumerate() {
        *slot = (testlen + 1).saturating_sub(k + 1);
    }
    let mut correct = [0; MAX_ORDER];
    for (ngram, count) in NgramCounts::new(&words, MAX_ORDER).entries {
        let clipped = count.min(max_counts.get(&ngram).copied().unwrap_or(0));
        if let Some(slot) = correct.get_mut(order(&ngram).saturating_sub(1)) {
            *slot += clipped as usize;
        }
    }
    Cooked {
        testlen,
        reflen,
        guess,
        correct,
    }
}

/// BLEU-1..4 from (summed) statistics, in pycocoevalcap's operation order.
fn scores(stats: &Cooked) -> [f64; MAX_ORDER] {
    let mut out = [0.0; MAX_ORDER];
    let mut product = 1.0f64;
    for k in 0..MAX_ORDER {
        product *= (stats.correct[k] as f64 + TINY) / (stats.guess[k] as f64 + SMALL);
        out[k] = product.powf(1.0 / (k + 1) as f64);
    }
    let ratio = (stats.testlen as f64 + TINY) / (stats.reflen as f64 + SMALL);
    if ratio < 1.0 {
        let penalty = (1.0 - 1.0 / ratio).exp();
        for value in &mut out {
            *value *= penalty;
        }
    }
    out
}
