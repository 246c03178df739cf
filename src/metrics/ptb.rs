//! Caption tokenization as pycocoevalcap 1.2 does it: Stanford CoreNLP 3.4.1's `PTBTokenizer`
//! (`-preserveLines -lowerCase`), tokens joined with single spaces, punctuation tokens dropped.
//!
//! The jar is a longest-match scanner generated from a rule table; this module re-implements that
//! scanner (same rules, same priorities, same token rewrites) over UTF-16 code units, the way Java sees
//! the text. Tokenization is case-sensitive and only the output tokens are lowercased, so `AT&T` stays
//! one token while `at&t` splits. The jar's letter and digit classes were probed from it
//! (`char_tables.rs`); characters outside the Basic Multilingual Plane (emoji) are deleted, as the jar
//! deletes both halves of their surrogate pairs. Known departures:
//! - pycocoevalcap feeds all captions to one jar run, one per line, so a few rules peek at the next
//!   caption (a one-letter acronym such as `c.` loses its period when the next caption starts with
//!   `The`, `A`, ...). Here every caption is tokenized as if followed by a neutral line.
//! - A caption holding a character the jar treats as a line break (`\r`, U+000B, U+000C, U+2028,
//!   U+2029) makes pycocoevalcap misalign every later caption; here those characters only separate tokens.
//!   (`\n` is replaced by a space first, exactly as pycocoevalcap does.)

mod actions;
mod char_tables;
mod lexer;
mod nfa;
mod pattern;
mod rules;

use lexer::{LexScratch, Lexer};

/// Tokens pycocoevalcap removes after tokenizing (compared after lowercasing, so `-lrb-` stays).
pub const PUNCTUATION: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Errors of the PTB tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum PtbError {
    /// A built-in lexer rule failed to compile: a defect in vlmrun itself.
    #[error(
        "built-in PTB lexer rule `{rule}` does not compile at byte {offset}: {reason} \
         (a bug in vlmrun's src/metrics/ptb/rules.rs; please report it)"
    )]
    Rule {
        rule: &'static str,
        offset: usize,
        reason: String,
    },
}

/// A compiled PTB tokenizer; build once and reuse for many captions.
pub struct PtbTokenizer {
    lexer: Lexer,
}

impl PtbTokenizer {
    /// Compiles the lexer rules (about a millisecond).
    pub fn new() -> Result<Self, PtbError> {
        let lexer = Lexer::new().map_err(|e| PtbError::Rule {
            rule: e.name,
            offset: e.error.offset,
            reason: e.error.reason,
        })?;
        Ok(PtbTokenizer { lexer })
    }

    /// The jar's output tokens for one caption, lowercased, punctuation still in.
    pub fn tokenize_raw(&self, caption: &str) -> Vec<String> {
        self.raw_with(caption, &mut self.lexer.scratch())
    }

    /// The caption as pycocoevalcap's `PTBTokenizer.tokenize` returns it: lowercased tokens joined by
    /// single spaces, without the [`PUNCTUATION`] tokens.
    pub fn tokenize(&self, caption: &str) -> String {
        drop_punctuation(&self.tokenize_raw(caption))
    }

    /// [`PtbTokenizer::tokenize`] for many captions (reuses buffers between them).
    pub fn tokenize_all<'a>(&self, captions: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut scratch = self.lexer.scratch();
        captions
            .into_iter()
            .map(|caption| drop_punctuation(&self.raw_with(caption, &mut scratch)))
            .collect()
    }

    fn raw_with(&self, caption: &str, scratch: &mut LexScratch) -> Vec<String> {
        let units: Vec<u16> = caption.replace('\n', " ").encode_utf16().collect();
        self.lexer
            .tokens(&units, scratch)
            .iter()
            .map(|token| java_lowercase(&String::from_utf16_lossy(token)))
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

/// Java's `String.toLowerCase(Locale.ENGLISH)`. It differs from Rust's `str::to_lowercase` only for
/// capital sigma: Java writes final `ς` when a cased letter precedes it in the same word and none
/// follows it in that word. Java 17's word breaks, as probed: letters, digits (including `²` `½`),
/// combining marks and `_` are in-word; a single `"` `'` `-` `.` or soft hyphen between them is too.
/// So `ΣΣ1ST` lowercases to `σσ1st` and `AΣ-B` to `aσ-b`, where Rust gives `σς1st` and `aς-b`.
fn java_lowercase(token: &str) -> String {
    if !token.contains('Σ') {
        return token.to_lowercase();
    }
    let chars: Vec<char> = token.chars().collect();
    let mut out = String::with_capacity(token.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == 'Σ' {
            let before = chars.get(..i).unwrap_or_default().iter().rev().copied();
            let after = chars.get(i + 1..).unwrap_or_default().iter().copied();
            let is_final = cased_in_word(before) && !cased_in_word(after);
            out.push(if is_final { 'ς' } else { 'σ' });
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Whether a cased letter occurs in `chars` (walking away from a sigma) before a word boundary.
fn cased_in_word(chars: impl Iterator<Item = char>) -> bool {
    let mut previous_was_word = true; // the sigma itself
    let mut chars = chars.peekable();
    while let Some(c) = chars.next() {
        if c.is_lowercase() || c.is_uppercase() {
            return true;
        }
        let in_word = c.is_alphanumeric() || c == '_' || is_combining_mark(c);
        let mid_letter = matches!(c, '"' | '\'' | '-' | '.' | '\u{ad}')
            && previous_was_word
            && chars.peek().is_some_and(|&n| n.is_alphanumeric());
        if !in_word && !mid_letter {
            return false;
        }
        previous_was_word = in_word;
    }
    false
}

fn is_combining_mark(c: char) -> bool {
    matches!(c, '\u{300}'..='\u{36f}' | '\u{1ab0}'..='\u{1aff}' | '\u{1dc0}'..='\u{1dff}' | '\u{20d0}'..='\u{20ff}' | '\u{fe20}'..='\u{fe2f}')
}

/// Tokenizes one caption as pycocoevalcap does (compiles the lexer each call: use [`PtbTokenizer`] for
/// many captions).
pub fn tokenize(caption: &str) -> Result<String, PtbError> {
    Ok(PtbTokenizer::new()?.tokenize(caption))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(caption: &str) -> String {
        PtbTokenizer::new()
            .map(|t| t.tokenize_raw(caption).join(" "))
            .unwrap_or_else(|e| e.to_string())
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
        let tokenizer = match PtbTokenizer::new() {
            Ok(tokenizer) => tokenizer,
            Err(e) => panic!("{e}"),
        };
        for (input, expected) in cases {
            assert_eq!(tokenizer.tokenize(input), expected, "input {input:?}");
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

    #[test]
    fn sigma_lowercases_like_java() {
        // Observed with the jar (Java 17): "ΣΣ1st" -> "σσ1st" where Rust's to_lowercase gives "σς1st".
        assert_eq!(java_lowercase("ΣΣ1st"), "σσ1st");
        assert_eq!(java_lowercase("ΣΊΣΥΦΟΣ"), "σίσυφος");
        assert_eq!(java_lowercase("Σ"), "σ");
        assert_eq!(java_lowercase("AΣ-B"), "aσ-b");
        assert_eq!(java_lowercase("AΣ--B"), "aς--b");
        assert_eq!(java_lowercase("AΣ:B"), "aς:b");
        assert_eq!(java_lowercase("A1Σ"), "a1ς");
        assert_eq!(java_lowercase("1Σ"), "1σ");
    }
}
