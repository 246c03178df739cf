//! Word interning and n-gram counting shared by BLEU and CIDEr-D, with Python's splitting rules.
//!
//! pycocoevalcap keys n-grams by tuples of strings and keeps them in insertion-ordered dicts; here
//! words become `u32` ids, n-grams fixed-size id arrays, and counts keep first-occurrence order so
//! floating-point sums run in the same order as pycocoevalcap's.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Largest n-gram order any metric here uses.
pub const MAX_ORDER: usize = 4;

/// An n-gram of interned words; unused trailing slots hold [`Ngram::PAD`].
pub type Ngram = [u32; MAX_ORDER];

trait NgramPad {
    const PAD: u32;
}

impl NgramPad for Ngram {
    const PAD: u32 = u32::MAX;
}

/// Order of an n-gram (1..=4).
pub fn order(ngram: &Ngram) -> usize {
    ngram.iter().take_while(|&&id| id != Ngram::PAD).count()
}

/// Multiplicative hasher for small integer keys (n-grams, word ids): SipHash is needlessly slow here.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }
}

/// Hash map keyed by ids or n-grams.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Python's `str.isspace` for one character (Rust's `char::is_whitespace` plus U+001C..U+001F).
pub fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `s.split()`: words separated by runs of whitespace, no empty words.
pub fn python_split(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_python_space).filter(|word| !word.is_empty())
}

/// Maps words to dense ids.
#[derive(Default)]
pub struct Vocab<'a> {
    ids: HashMap<&'a str, u32>,
}

impl<'a> Vocab<'a> {
    /// Ids of `text` split as Python's `str.split()`.
    pub fn words(&mut self, text: &'a str) -> Vec<u32> {
        python_split(text)
            .map(|word| {
                let next = self.ids.len() as u32;
                *self.ids.entry(word).or_insert(next)
            })
            .collect()
    }
}

/// Counts of every 1..=max_order-gram of a sentence, in pycocoevalcap's insertion order
/// (all unigrams by first occurrence, then all bigrams, ...).
pub struct NgramCounts {
    /// (n-gram, count) in first-occurrence order.
    pub entries: Vec<(Ngram, u32)>,
    /// Position of each n-gram in `entries`.
    pub index: IdMap<Ngram, usize>,
}

impl NgramCounts {
    pub fn new(words: &[u32], max_order: usize) -> Self {
        let mut entries: Vec<(Ngram, u32)> = Vec::new();
        let mut index: IdMap<Ngram, usize> = IdMap::default();
        for n in 1..=max_order.min(MAX_ORDER) {
            for window in words.windows(n) {
                let mut ngram: Ngram = [Ngram::PAD; MAX_ORDER];
                for (slot, &id) in ngram.iter_mut().zip(window) {
                    *slot = id;
                }
                match index.get(&ngram).and_then(|&i| entries.get_mut(i)) {
                    Some((_, count)) => *count += 1,
                    None => {
                        index.insert(ngram, entries.len());
                        entries.push((ngram, 1));
                    }
                }
            }
        }
        NgramCounts { entries, index }
    }

    pub fn get(&self, ngram: &Ngram) -> u32 {
        self.index
            .get(ngram)
            .and_then(|&i| self.entries.get(i))
            .map_or(0, |&(_, count)| count)
    }
}

/// numpy's `np.mean` of a 1-D float64 array: pairwise summation (numpy's blocked scheme) divided by
/// the length; NaN for an empty slice, as numpy returns.
pub fn numpy_mean(values: &[f64]) -> f64 {
    numpy_sum(values) / values.len() as f64
}

/// numpy's pairwise sum for contiguous float64 data (8-way unrolled blocks of up to 128 values).
pub fn numpy_sum(values: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = values.len();
    if n < 8 {
        return values.iter().fold(0.0, |acc, &v| acc + v);
    }
    if n <= BLOCK {
        let mut lanes = [0.0f64; 8];
        lanes.copy_from_slice(values.get(..8).unwrap_or(&[0.0; 8]));
        let full = n - n % 8;
        for chunk in values.get(8..full).unwrap_or_default().chunks_exact(8) {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane += v;
            }
        }
        let [a, b, c, d, e, f, g, h] = lanes;
        let mut sum = ((a + b) + (c + d)) + ((e + f) + (g + h));
        for &v in values.get(full..).unwrap_or_default() {
            sum += v;
        }
        return sum;
    }
    let mut half = n / 2;
    half -= half % 8;
    let (left, right) = values.split_at(half);
    numpy_sum(left) + numpy_sum(right)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_matches_python() {
        let words: Vec<&str> = python_split("  a\u{a0}b\tc\u{1f}d  ").collect();
        assert_eq!(words, ["a", "b", "c", "d"]);
        assert_eq!(python_split("").count(), 0);
    }

    #[test]
    fn ngram_counts_keep_first_occurrence_order() {
        let counts = NgramCounts::new(&[1, 2, 1, 2], 2);
        let grams: Vec<(usize, u32)> = counts.entries.iter().map(|(g, c)| (order(g), *c)).collect();
        assert_eq!(grams, [(1, 2), (1, 2), (2, 2), (2, 1)]);
        assert_eq!(counts.get(&[1, 2, u32::MAX, u32::MAX]), 2);
    }

    #[test]
    fn numpy_sum_is_pairwise() {
        // Sequential summation gives 1e16 for both; the expected values are numpy 2.4's np.add.reduce.
        let mut values = vec![1.0; 16];
        values[0] = 1e16;
        assert_eq!(numpy_sum(&values), 1.0000000000000014e16);
        let mut values = vec![1.0; 301];
        values[0] = 1e16;
        assert_eq!(numpy_sum(&values), 1.0000000000000292e16);
        assert!(numpy_mean(&[]).is_nan());
    }
}
