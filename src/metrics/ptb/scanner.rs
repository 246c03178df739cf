//! The scanning loop: at each position every recogniser proposes a token (or a few tokens) and the
//! longest proposal wins, the earlier recogniser on a tie. That is how the jar behaves as observed
//! (`1..2` gives `1`, `.`, `.2`; `AT&Ton` gives `AT&T`, `on`); the recognisers themselves live in
//! `words.rs` (words, numbers, abbreviations, contractions) and `marks.rs` (punctuation, quotes,
//! brackets, emoticons, markup).

use super::chars::{is_ignored, single_token};

/// A proposal: how many characters it consumes and the tokens it writes (original case).
pub(super) struct Proposal {
    pub(super) len: usize,
    pub(super) tokens: Vec<String>,
}

impl Proposal {
    pub(super) fn one(len: usize, token: impl Into<String>) -> Option<Proposal> {
        Some(Proposal {
            len,
            tokens: vec![token.into()],
        })
    }
}

/// The text being tokenized, as characters.
pub(super) struct Scanner<'a> {
    pub(super) text: &'a [char],
}

impl<'a> Scanner<'a> {
    pub(super) fn at(&self, i: usize) -> Option<char> {
        self.text.get(i).copied()
    }

    /// Whether the character at `i` exists and satisfies `test`.
    pub(super) fn is(&self, i: usize, test: impl Fn(char) -> bool) -> bool {
        self.at(i).is_some_and(test)
    }

    /// The end of the run of characters satisfying `test` starting at `i`.
    pub(super) fn run(&self, i: usize, test: impl Fn(char) -> bool) -> usize {
        let mut end = i;
        while self.is(end, &test) {
            end += 1;
        }
        end
    }

    /// The characters `from..to` as a string, soft hyphens removed.
    pub(super) fn slice(&self, from: usize, to: usize) -> String {
        self.text
            .get(from..to)
            .unwrap_or_default()
            .iter()
            .filter(|&&c| c != super::chars::SOFT_HYPHEN)
            .collect()
    }

    pub(super) fn chars(&self, from: usize, to: usize) -> &'a [char] {
        self.text.get(from..to).unwrap_or_default()
    }

    /// Whether the text at `i` starts with `literal`, ASCII letters compared without case.
    pub(super) fn starts_with_caseless(&self, i: usize, literal: &str) -> bool {
        literal
            .chars()
            .enumerate()
            .all(|(k, l)| self.is(i + k, |c| c.eq_ignore_ascii_case(&l)))
    }

    /// Every token of the text, in original case.
    pub(super) fn tokens(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(c) = self.at(i) {
            if is_ignored(c) {
                i += 1;
                continue;
            }
            match self.best(i) {
                Some(proposal) if proposal.len > 0 => {
                    out.extend(proposal.tokens);
                    i += proposal.len;
                }
                _ => {
                    out.push(single_token(c));
                    i += 1;
                }
            }
        }
        out.retain(|token| !token.is_empty());
        out
    }

    fn best(&self, i: usize) -> Option<Proposal> {
        let proposals = [
            self.markup(i),
            self.entity(i),
            self.url(i),
            self.phone(i),
            self.fraction(i),
            self.apostrophe_word(i),
            self.contraction(i),
            self.elision(i),
            self.vowel_apostrophe_word(i),
            self.upper_ampersand(i),
            self.currency_prefix(i),
            self.symbol_word(i),
            self.tag_word(i),
            self.letter_word(i),
            self.number(i),
            self.digit_word(i),
            self.bracket_word(i),
            self.emoticon(i),
            self.dots(i),
            self.hyphens(i),
            self.repeated(i),
            self.quote(i),
        ];
        let mut best: Option<Proposal> = None;
        for proposal in proposals.into_iter().flatten() {
            if best.as_ref().is_none_or(|b| proposal.len > b.len) {
                best = Some(proposal);
            }
        }
        best
    }
}
