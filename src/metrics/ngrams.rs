//! Word interning and n-gram counting shared by BLEU and CIDEr-D, with Python's splitting rules.
//!
//! pycocoevalcap keys n-grams by tuples of strings and keeps them in insertion-ordered dicts; here
//! words and n-grams become dense `u32` ids (an n-gram is interned as its (n-1)-gram prefix plus one
//! word), and counts keep first-occurrence order so floating-point sums run in pycocoevalcap's order.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Largest n-gram order any metric here uses.
pub const MAX_ORDER: usize = 4;

/// Multiplicative hasher for small keys (word and n-gram ids, short strings): SipHash is needlessly
/// slow here.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        if !rest.is_empty() {
            if let Some(head) = tail.get_mut(..rest.len()) {
                head.copy_from_slice(rest);
            }
            self.write_u64(u64::from_le_bytes(tail) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.write_u64(u64::from(value));
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

/// Hash map with [`IdHasher`].
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Python's `str.isspace` for one character (Rust's `char::is_whitespace` plus U+001C..U+001F).
pub fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `s.split()`: words separated by runs of whitespace, no empty words.
pub fn python_split(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_python_space).filter(|word| !word.is_empty())
}

/// One sentence's n-gram counts.
pub struct Sentence {
    /// Number of words.
    pub words: usize,
    /// (n-gram id, count) for every 1..=4-gram, in pycocoevalcap's dict insertion order: all
    /// unigrams by first occurrence, then all bigrams, and so on.
    pub grams: Vec<(u32, u32)>,
}

/// Interns words and n-grams of a corpus to dense ids, so metrics can keep per-n-gram state in
/// plain vectors indexed by id.
#[derive(Default)]
pub struct GramInterner<'a> {
    words: IdMap<&'a str, u32>,
    /// (id of the n-gram minus its last word, or `u32::MAX` for unigrams; last word id) -> n-gram id.
    grams: IdMap<(u32, u32), u32>,
    /// Order (1..=4) of each n-gram id.
    orders: Vec<u8>,
    /// Per n-gram id: the sentence that last counted it and where, for counting without a map.
    last_sentence: Vec<u32>,
    slot: Vec<u32>,
    sentences: u32,
}

impl<'a> GramInterner<'a> {
    /// Number of distinct n-grams seen so far (ids are `0..len`).
    pub fn len(&self) -> usize {
        self.orders.len()
    }

    /// Order (1..=4) of an n-gram id.
    pub fn order(&self, gram: u32) -> usize {
        self.orders
            .get(gram as usize)
            .map_or(0, |&n| usize::from(n))
    }

    /// Counts the 1..=4-grams of `text`, split as Python's `str.split()`.
    pub fn sentence(&mut self, text: &'a str) -> Sentence {
        let words: Vec<u32> = python_split(text)
            .map(|word| {
                let next = self.words.len() as u32;
                *self.words.entry(word).or_insert(next)
            })
            .collect();
        self.sentences = self.sentences.wrapping_add(1);
        let stamp = self.sentences;
        let mut grams: Vec<(u32, u32)> = Vec::with_capacity(words.len() * MAX_ORDER);
        // prefix[i]: id of the (n-1)-gram starting at word i.
        let mut prefix: Vec<u32> = vec![u32::MAX; words.len()];
        for n in 1..=MAX_ORDER {
            let starts = (words.len() + 1).saturating_sub(n);
            for i in 0..starts {
                let (Some(&parent), Some(&last)) = (prefix.get(i), words.get(i + n - 1)) else {
                    continue;
                };
                let gram = self.intern(parent, last, n);
                if let Some(p) = prefix.get_mut(i) {
                    *p = gram;
                }
                let g = gram as usize;
                if self.last_sentence.get(g) == Some(&stamp) {
                    if let Some((_, count)) =
                        self.slot.get(g).and_then(|&at| grams.get_mut(at as usize))
                    {
                        *count += 1;
                    }
                } else {
                    if let (Some(seen), Some(at)) =
                        (self.last_sentence.get_mut(g), self.slot.get_mut(g))
                    {
                        *seen = stamp;
                        *at = grams.len() as u32;
                    }
                    grams.push((gram, 1));
                }
            }
        }
        Sentence {
            words: words.len(),
            grams,
        }
    }

    fn intern(&mut self, parent: u32, last: u32, order: usize) -> u32 {
        let next = self.orders.len() as u32;
        let gram = *self.grams.entry((parent, last)).or_insert(next);
        if gram == next {
            self.orders.push(order as u8);
            self.last_sentence.push(0);
            self.slot.push(0);
        }
        gram
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
    fn sentence_counts_keep_first_occurrence_order() {
        let mut interner = GramInterner::default();
        let sentence = interner.sentence("x y x y");
        let grams: Vec<(usize, u32)> = sentence
            .grams
            .iter()
            .map(|&(g, c)| (interner.order(g), c))
            .collect();
        // x, y, "x y" (twice), "y x", "x y x", "y x y", "x y x y"
        assert_eq!(
            grams,
            [(1, 2), (1, 2), (2, 2), (2, 1), (3, 1), (3, 1), (4, 1)]
        );
        let again = interner.sentence("y x");
        assert_eq!(again.words, 2);
        assert_eq!(again.grams.len(), 3);
        assert_eq!(interner.len(), 7);
        // Ids are shared across sentences: "y x" is the same bigram as before.
        assert_eq!(
            again.grams.get(2).map(|g| g.0),
            sentence.grams.get(3).map(|g| g.0)
        );
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
