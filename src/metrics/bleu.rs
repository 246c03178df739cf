//! Corpus BLEU-1..4 as pycocoevalcap 1.2's `Bleu(4)` computes it (`BleuScorer`, option "closest").
//!
//! Per image: hypothesis n-gram counts clipped by the largest count of that n-gram in any single
//! reference; `guess[n] = max(0, len - n + 1)`; the reference length closest to the hypothesis length
//! (ties go to the shorter). Corpus: sums of those, then
//! `BLEU_n = (prod_{k<=n} (correct_k + 1e-15) / (guess_k + 1e-9))^(1/n)`, times the brevity penalty
//! `exp(1 - 1/ratio)` when `ratio = (testlen + 1e-15) / (reflen + 1e-9) < 1`. Words are split as
//! Python's `str.split()`.

use super::ngrams::{GramInterner, MAX_ORDER};
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
    let mut cook = Cook::default();
    let mut total = Cooked {
        testlen: 0,
        reflen: 0,
        guess: [0; MAX_ORDER],
        correct: [0; MAX_ORDER],
    };
    let mut per_image = Vec::with_capacity(images.len());
    for (index, image) in images.iter().enumerate() {
        let cooked = cook.image(image, index as u32 + 1);
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

/// Interned n-grams plus, per n-gram id, the largest count in one reference of the current image.
#[derive(Default)]
struct Cook<'a> {
    interner: GramInterner<'a>,
    max_count: Vec<u32>,
    /// Image (1-based) that `max_count` of each n-gram belongs to.
    owner: Vec<u32>,
}

impl<'a> Cook<'a> {
    fn image(&mut self, image: &ImageCaptions<'a>, stamp: u32) -> Cooked {
        let mut reflens = Vec::with_capacity(image.references.len());
        for reference in image.references {
            let sentence = self.interner.sentence(reference);
            reflens.push(sentence.words);
            self.max_count.resize(self.interner.len(), 0);
            self.owner.resize(self.interner.len(), 0);
            for (gram, count) in sentence.grams {
                let g = gram as usize;
                if let (Some(owner), Some(max)) = (self.owner.get_mut(g), self.max_count.get_mut(g))
                {
                    if *owner != stamp {
                        *owner = stamp;
                        *max = 0;
                    }
                    *max = (*max).max(count);
                }
            }
        }
        let sentence = self.interner.sentence(image.hypothesis);
        let testlen = sentence.words;
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
        for (gram, count) in sentence.grams {
            let g = gram as usize;
            let in_refs = match (self.owner.get(g), self.max_count.get(g)) {
                (Some(&owner), Some(&max)) if owner == stamp => max,
                _ => 0,
            };
            if let Some(slot) = correct.get_mut(self.interner.order(gram).saturating_sub(1)) {
                *slot += count.min(in_refs) as usize;
            }
        }
        Cooked {
            testlen,
            reflen,
            guess,
            correct,
        }
    }
}

/// BLEU-1..4 from (summed) statistics, in pycocoevalcap's operation order.
fn scores(stats: &Cooked) -> [f64; MAX_ORDER] {
    let mut out = [0.0; MAX_ORDER];
    let mut product = 1.0f64;
    let counts = stats.correct.iter().zip(&stats.guess);
    for (k, (slot, (&correct, &guess))) in out.iter_mut().zip(counts).enumerate() {
        product *= (correct as f64 + TINY) / (guess as f64 + SMALL);
        *slot = product.powf(1.0 / (k + 1) as f64);
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
