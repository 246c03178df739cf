//! Caption tokenization as pycocoevalcap 1.2 does it: Stanford CoreNLP 3.4.1's `PTBTokenizer`
//! (`-preserveLines -lowerCase`), tokens joined with single spaces, punctuation tokens dropped.
//!
//! Provenance: this tokenizer was written from the jar's observed behaviour only. The jar was run as
//! a black box on probe strings (tests/fixtures/make_metrics_fixtures.py writes the committed cases
//! and the character tables); no CoreNLP source code was read or used. The word lists in `lexicon.rs`
//! and the character classes in `char_tables.rs` are facts measured that way.
//!
//! How it works: the text is scanned left to right; at each position every recogniser (`words.rs`,
//! `marks.rs`) proposes a token and the longest proposal wins (`scanner.rs`). The text is the
//! original-case caption; only the output tokens are lower-cased, the way Java does it
//! (`lowercase.rs`), so `AT&T` stays one token while `at&t` splits. Characters outside the Basic
//! Multilingual Plane (emoji) are dropped, as the jar drops both halves of their surrogate pairs.
//!
//! Known departures:
//! - pycocoevalcap feeds all captions to one jar run, one per line, so a few decisions peek at the
//!   next caption (`Vitamin C.` loses its period to a separate token when the next caption starts with
//!   `The`, `A`, ...). Here every caption is tokenized as if followed by a neutral line.
//! - A caption holding a character the jar treats as a line break (`\r`, U+000B, U+000C, U+2028,
//!   U+2029) makes pycocoevalcap misalign every later caption; here those characters only separate
//!   tokens. (`\n` is replaced by a space first, exactly as pycocoevalcap does.)
//! - Coverage: every case in tests/fixtures/metrics/ptb_cases.jsonl (caption-like text) matches the
//!   jar exactly. Uncommitted fuzz corpora still differ in places: about 1.4% of 6,000 caption-word
//!   soups (make_metrics_fixtures.py's `generated_cases`, another seed) and 12% of 20,000 character
//!   soups (`--fuzz`): e-mail-like runs glued to other words (`a@b.orgwanna!`), dotted acronyms glued
//!   after hyphenated words, apostrophes inside random letter runs, and the like.

mod char_tables;
mod chars;
mod lexicon;
mod lowercase;
mod marks;
mod scanner;
mod words;

use lowercase::java_lowercase;
use scanner::Scanner;

/// Tokens pycocoevalcap removes after tokenizing (compared after lowercasing, so `-lrb-` stays).
pub const PUNCTUATION: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Errors of the PTB tokenizer. Tokenizing cannot fail; the type stays so that callers can keep
/// propagating it should construction ever need to report something.
#[derive(Debug, thiserror::Error)]
pub enum PtbError {}

/// The PTB tokenizer (stateless; cheap to build).
#[derive(Clone, Copy, Debug, Default)]
pub struct PtbTokenizer;

impl PtbTokenizer {
    pub fn new() -> Result<Self, PtbError> {
        Ok(PtbTokenizer)
    }

    /// The jar's output tokens for one caption, lowercased, punctuation still in.
    pub fn tokenize_raw(&self, caption: &str) -> Vec<String> {
        let text: Vec<char> = caption.replace('\n', " ").chars().collect();
        Scanner { text: &text }
            .tokens()
            .iter()
            .map(|token| java_lowercase(token))
            .collect()
    }

    /// The caption as pycocoevalcap's `PTBTokenizer.tokenize` returns it: lowercased tokens joined by
    /// single spaces, without the [`PUNCTUATION`] tokens.
    pub fn tokenize(&self, caption: &str) -> String {
        drop_punctuation(&self.tokenize_raw(caption))
    }

    /// [`PtbTokenizer::tokenize`] for many captions.
    pub fn tokenize_all<'a>(&self, captions: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        captions
            .into_iter()
            .map(|caption| self.tokenize(caption))
            .collect()
    }
}

fn drop_punctuation(tokens: &[String]) -> String {
    let kept: Vec<&str> = tokens
        .iter()
        .map(String::as_str)
        .filter(|token| !PUNCTUATION.contains(token))
        .collect();
    kept.join(" ")
}

/// Tokenizes one caption as pycocoevalcap does.
pub fn tokenize(caption: &str) -> Result<String, PtbError> {
    Ok(PtbTokenizer::new()?.tokenize(caption))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(caption: &str) -> String {
        PtbTokenizer.tokenize_raw(caption).join(" ")
    }

    #[test]
    fn metrics_md_table() {
        let cases = [
            ("A man's dog runs.", "a man 's dog runs"),
            (
                "Two black-and-white dogs, playing!",
                "two black-and-white dogs playing",
            ),
            (
                "A \"big\" (red) bus at 3:30 p.m.",
                "a big -lrb- red -rrb- bus at 3:30 p.m.",
            ),
            ("It's a cat... isn't it?", "it 's a cat is n't it"),
            (
                "A U.S. flag; 2.5 inches {wide}",
                "a u.s. flag 2.5 inches -lcb- wide -rcb-",
            ),
            (
                "The cats' toys -- on the table.",
                "the cats toys on the table",
            ),
            ("don't can't won't gonna", "do n't ca n't wo n't gon na"),
            (
                "e-mail @ home & co. #1 $5 50%",
                "e-mail @ home & co. # 1 $ 5 50 %",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(PtbTokenizer.tokenize(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn raw_tokens_keep_punctuation() {
        assert_eq!(
            raw("It's a cat... isn't it?"),
            "it 's a cat ... is n't it ?"
        );
        assert_eq!(raw("etc."), "etc.");
        assert_eq!(raw("AT&T at&t"), "at&t at & t");
    }
}
