//! Recognisers for punctuation, quotes, brackets, emoticons, markup and character entities, each
//! written from the jar's observed output (examples in the comments are jar input -> jar output).

use super::chars::is_word;
use super::scanner::{Proposal, Scanner};

/// Bracket words the jar passes through (compared without case): `-LRB-` stays `-LRB-`.
const BRACKET_WORDS: &[&str] = &["-LRB-", "-RRB-", "-LCB-", "-RCB-", "-LSB-", "-RSB-"];

/// Symbols whose runs are one token (`***`, `@@@`, `###`, `__`); others are one token each (`$ $`).
const RUN_SYMBOLS: &[char] = &['*', '@', '#', '_', '!', '?'];

impl Scanner<'_> {
    /// `<b>`, `</b>`, `<br/>`, `<a href='x y'>` (inner spaces become no-break spaces). Attributes must
    /// be quoted: `<p class=x>` is not markup.
    pub(super) fn markup(&self, i: usize) -> Option<Proposal> {
        if self.at(i) != Some('<') {
            return None;
        }
        let mut end = i + 1;
        if self.at(end) == Some('/') {
            end += 1;
        }
        let name_end = self.run(end, |c| c.is_ascii_alphanumeric());
        if name_end == end || !self.is(end, |c| c.is_ascii_alphabetic()) {
            return None;
        }
        end = name_end;
        loop {
            let spaced = self.run(end, |c| c == ' ');
            let attr_end = self.run(spaced, |c| c.is_ascii_alphanumeric() || c == '-');
            if spaced == end || attr_end == spaced || self.at(attr_end) != Some('=') {
                break;
            }
            let quote = self.at(attr_end + 1).filter(|&c| c == '\'' || c == '"')?;
            let close = self.run(attr_end + 2, |c| c != quote && c != '>');
            if self.at(close) != Some(quote) {
                return None;
            }
            end = close + 1;
        }
        end = self.run(end, |c| c == ' ');
        if self.at(end) == Some('/') {
            end += 1;
        }
        if self.at(end) != Some('>') {
            return None;
        }
        let text = self.slice(i, end + 1).replace(' ', "\u{a0}");
        Proposal::one(end + 1 - i, text)
    }

    /// `&amp;` `&lt;` `&gt;` `&quot;` `&apos;` `&nbsp;` `&mdash;`, and numeric `&#39;` kept as written.
    pub(super) fn entity(&self, i: usize) -> Option<Proposal> {
        if self.at(i) != Some('&') {
            return None;
        }
        let named: &[(&str, &str)] = &[
            ("&amp;", "&"),
            ("&lt;", "<"),
            ("&gt;", ">"),
            ("&nbsp;", ""),
            ("&mdash;", "--"),
        ];
        for (name, text) in named {
            if self.starts_with_caseless(i, name) {
                return Proposal::one(name.chars().count(), *text);
            }
        }
        if self.starts_with_caseless(i, "&quot;") {
            return Proposal::one(6, self.double_quote(i + 6));
        }
        if self.starts_with_caseless(i, "&apos;") {
            return Proposal::one(6, self.single_quote(i + 6));
        }
        if self.at(i + 1) == Some('#') {
            let end = self.run(i + 2, |c| c.is_ascii_digit());
            if end > i + 2 && self.at(end) == Some(';') {
                return Proposal::one(end + 1 - i, self.slice(i, end + 1));
            }
        }
        None
    }

    /// `-LRB-` and friends written out in the text.
    pub(super) fn bracket_word(&self, i: usize) -> Option<Proposal> {
        BRACKET_WORDS
            .iter()
            .find(|w| self.starts_with_caseless(i, w))
            .and_then(|w| Proposal::one(w.len(), self.slice(i, i + w.len())))
    }

    /// `:)` -> `:-RRB-`, `;-)`, `:(`, `:D`, `:-P`, `:O`, `:]`, `=)`, and `^_^` `(-_-)` `o_O`.
    pub(super) fn emoticon(&self, i: usize) -> Option<Proposal> {
        let brackets = |text: String| text.replace('(', "-LRB-").replace(')', "-RRB-");
        if self.is(i, |c| matches!(c, ':' | ';' | '=')) {
            let nose = usize::from(self.at(i + 1) == Some('-'));
            let mouth = self.at(i + 1 + nose)?;
            // Not when a word follows directly: `:)a` gives `:`, `-RRB-`, `a`.
            let end = i + 2 + nose;
            if matches!(mouth, ')' | '(' | 'D' | 'd' | 'P' | 'p' | 'O' | ']')
                && !self.is(end, is_word)
            {
                return Proposal::one(end - i, brackets(self.slice(i, end)));
            }
            return None;
        }
        let eye = |c: char| matches!(c, '^' | '-' | '<' | '>' | 'o' | 'O' | 'T');
        let open = usize::from(self.at(i) == Some('('));
        let face = i + open;
        if !(self.is(face, eye) && self.at(face + 1) == Some('_') && self.is(face + 2, eye)) {
            return None;
        }
        let mut end = face + 3;
        if open == 1 {
            if self.at(end) != Some(')') {
                return None;
            }
            end += 1;
        }
        Proposal::one(end - i, brackets(self.slice(i, end)))
    }

    /// Periods: one is `.`, two are two tokens, three or more (also spaced `. . .`) are `...`.
    pub(super) fn dots(&self, i: usize) -> Option<Proposal> {
        if self.at(i) != Some('.') {
            return None;
        }
        let run = self.run(i, |c| c == '.');
        if run - i >= 3 {
            return Proposal::one(run - i, "...");
        }
        let mut end = i + 1;
        let mut count = 1;
        while self.at(end) == Some(' ') && self.at(end + 1) == Some('.') {
            end += 2;
            count += 1;
        }
        if count >= 3 {
            return Proposal::one(end - i, "...");
        }
        Proposal::one(1, ".")
    }

    /// Hyphens: `-`, two to four are `--`, five or more stay as written.
    pub(super) fn hyphens(&self, i: usize) -> Option<Proposal> {
        if self.at(i) != Some('-') {
            return None;
        }
        let run = self.run(i, |c| c == '-');
        let token = match run - i {
            1 => "-".to_string(),
            2..=4 => "--".to_string(),
            _ => self.slice(i, run),
        };
        Proposal::one(run - i, token)
    }

    /// Runs of `* @ # _ ! ?` are one token; `<<` and `>>` pair up.
    pub(super) fn repeated(&self, i: usize) -> Option<Proposal> {
        let c = self.at(i)?;
        if c == '!' || c == '?' {
            let end = self.run(i, |c| c == '!' || c == '?');
            return Proposal::one(end - i, self.slice(i, end));
        }
        if RUN_SYMBOLS.contains(&c) {
            let end = self.run(i, |d| d == c);
            return Proposal::one(end - i, self.slice(i, end));
        }
        if c == '\\' && self.at(i + 1) == Some('*') {
            return Proposal::one(2, "\\*");
        }
        if (c == '<' || c == '>') && self.at(i + 1) == Some(c) {
            return Proposal::one(2, self.slice(i, i + 2));
        }
        None
    }

    /// ASCII quotes: `"` opens (`` `` ``) before an ASCII letter or digit and closes (`''`) otherwise;
    /// `'` opens (`` ` ``) before two ASCII letters; ``` `` ``` and `''` stay as written.
    pub(super) fn quote(&self, i: usize) -> Option<Proposal> {
        match self.at(i)? {
            '"' => Proposal::one(1, self.double_quote(i + 1)),
            '\'' if self.at(i + 1) == Some('\'') => Proposal::one(2, "''"),
            '\'' => Proposal::one(1, self.single_quote(i + 1)),
            '`' if self.at(i + 1) == Some('`') => Proposal::one(2, "``"),
            _ => None,
        }
    }

    fn double_quote(&self, next: usize) -> &'static str {
        if self.is(next, |c| c.is_ascii_alphanumeric()) {
            "``"
        } else {
            "''"
        }
    }

    fn single_quote(&self, next: usize) -> &'static str {
        let letter = |c: char| c.is_ascii_alphabetic();
        if self.is(next, letter) && self.is(next + 1, letter) {
            "`"
        } else {
            "'"
        }
    }
}
