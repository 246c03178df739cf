//! Recognisers for words, numbers, abbreviations and contractions, each written from the jar's
//! observed output (examples in the comments are jar input -> jar output).

use super::chars::{
    is_apostrophe, is_ascii_vowel, is_digit, is_ignored, is_letter, is_mark, is_soft_joiner,
    is_upper, is_word, SOFT_HYPHEN,
};
use super::lexicon::{self, Abbreviation};
use super::scanner::{Proposal, Scanner};

const NBSP: char = '\u{a0}';

/// Contraction endings split off a word: `'s 'd 'm` (one letter) and `'ll 're 've` (two letters).
const CONTRACTIONS: &[&str] = &["s", "d", "m", "ll", "re", "ve"];

impl Scanner<'_> {
    /// End of a letter-initial word starting at `i` (letters, digits, marks, joined by single
    /// `- . _ / @ ! ?` or soft hyphens), and whether it holds no joiners (`pure`).
    fn word_end(&self, i: usize) -> (usize, bool) {
        let mut end = i + 1;
        let mut pure = true;
        while let Some(c) = self.at(end) {
            if is_word(c) {
                end += 1;
                continue;
            }
            let joins = match c {
                '-' | '_' | '/' | '@' | SOFT_HYPHEN => self.is(end + 1, is_word),
                '.' | '!' | '?' => self.is(end + 1, is_letter),
                c if is_soft_joiner(c) => self.is(end + 1, is_word),
                _ => false,
            };
            if !joins {
                break;
            }
            pure = false;
            end += 1;
        }
        (end, pure)
    }

    /// Words starting with a letter or mark: `e-mail`, `a.b.c`, `hey!how`, `u.s.`, `Inc.`, `can`+`not`.
    pub(super) fn letter_word(&self, i: usize) -> Option<Proposal> {
        if !self.is(i, |c| is_letter(c) || is_mark(c)) {
            return None;
        }
        let (mut end, pure) = self.word_end(i);
        let word = self.chars(i, end);
        // `isn't` -> `is` + `n't`: a plain word gives up its final n before 't.
        if pure
            && end > i + 1
            && self.is(end, is_apostrophe)
            && self.is(end + 1, |c| c == 't' || c == 'T')
            && word.last().is_some_and(|&c| c == 'n' || c == 'N')
        {
            end -= 1;
            return Proposal::one(end - i, self.slice(i, end));
        }
        if pure && self.contraction(end).is_none() {
            if let Some(at) = lexicon::split_point(word) {
                return Some(Proposal {
                    len: end - i,
                    tokens: vec![self.slice(i, i + at), self.slice(i + at, end)],
                });
            }
        }
        if pure
            && self.at(end) == Some('-')
            && !self.is(end + 1, |c| c == '-' || is_word(c))
            && lexicon::listed(lexicon::HYPHEN_PREFIXES, word)
        {
            return Proposal::one(end + 1 - i, self.slice(i, end + 1));
        }
        if self.at(end) == Some('.') {
            if let Some(proposal) = self.with_period(i, end, pure) {
                return Some(proposal);
            }
        }
        Proposal::one(end - i, self.slice(i, end))
    }

    /// A word followed by a period that belongs to it: abbreviations and dotted acronyms.
    fn with_period(&self, i: usize, end: usize, pure: bool) -> Option<Proposal> {
        let word = self.chars(i, end);
        let with = self.slice(i, end + 1);
        if pure {
            match lexicon::abbreviation(word) {
                Some(Abbreviation::Title) => return Proposal::one(end + 1 - i, with),
                Some(Abbreviation::BeforeNumber) => {
                    let gap = usize::from(self.at(end + 1) == Some(' '));
                    if self.is(end + 1 + gap, is_digit) {
                        return Proposal::one(end + 1 - i, with);
                    }
                }
                Some(Abbreviation::SentenceEnd) => {
                    let mut tokens = vec![with];
                    let ltd = lexicon::listed(lexicon::BEFORE_LTD, word)
                        && self.starts_with_caseless(end + 2, "ltd");
                    if self.capital_follows(end + 1) && !ltd {
                        tokens.push(".".to_string());
                    }
                    return Some(Proposal {
                        len: end + 1 - i,
                        tokens,
                    });
                }
                None => {}
            }
        }
        let dotted: String = self.slice(i, end + 1).to_lowercase();
        let acronym = word
            .split(|&c| c == '.')
            .all(|part| part.len() == 1 && part.iter().all(|&c| is_letter(c)));
        if !acronym && !lexicon::DOTTED_WORDS.contains(&dotted.as_str()) {
            return None;
        }
        let starter = self.starter_follows(end + 1);
        if word.len() == 1 && starter {
            return Some(Proposal {
                len: end + 1 - i,
                tokens: vec![self.slice(i, end), ".".to_string()],
            });
        }
        let mut tokens = vec![with];
        if starter {
            tokens.push(".".to_string());
        }
        Some(Proposal {
            len: end + 1 - i,
            tokens,
        })
    }

    /// White space, then an upper-case letter or the end of the text.
    fn capital_follows(&self, i: usize) -> bool {
        let after = self.run(i, is_ignored);
        after > i && self.at(after).is_none_or(is_upper)
    }

    /// White space, then a sentence-starting word (`The`, `A`, `It`, ...) ending at white space or
    /// the end of the text.
    fn starter_follows(&self, i: usize) -> bool {
        let start = self.run(i, is_ignored);
        if start == i {
            return false;
        }
        let end = self.run(start, is_letter);
        let ends_cleanly = self.at(end).is_none_or(is_ignored);
        ends_cleanly && lexicon::is_sentence_starter(self.chars(start, end))
    }

    /// `@user`, `#hashtag`: a sign directly before a letter stays with the word.
    pub(super) fn tag_word(&self, i: usize) -> Option<Proposal> {
        if !(self.is(i, |c| c == '@' || c == '#') && self.is(i + 1, is_letter)) {
            return None;
        }
        let (end, _) = self.word_end(i + 1);
        Proposal::one(end - i, self.slice(i, end))
    }

    /// `AT&T`, `Q&A`, `S&P-500`: upper-case letters on both sides of `&` (or `&amp;`).
    pub(super) fn upper_ampersand(&self, i: usize) -> Option<Proposal> {
        let upper = |c: char| c.is_ascii_uppercase();
        let left = self.run(i, upper);
        if left == i {
            return None;
        }
        let amp_len = if self.starts_with_caseless(left, "&amp;") {
            5
        } else if self.at(left) == Some('&') {
            1
        } else {
            return None;
        };
        let right = self.run(left + amp_len, upper);
        if right == left + amp_len {
            return None;
        }
        let mut end = right;
        while self.at(end) == Some('-') && self.is(end + 1, is_word) {
            end = self.run(end + 1, is_word);
        }
        let text = format!(
            "{}&{}",
            self.slice(i, left),
            self.slice(left + amp_len, end)
        );
        Proposal::one(end - i, text)
    }

    /// `US$`, `A$`: upper-case letters directly before a dollar sign.
    pub(super) fn currency_prefix(&self, i: usize) -> Option<Proposal> {
        let end = self.run(i, |c| c.is_ascii_uppercase());
        (end > i && self.at(end) == Some('$')).then(|| Proposal {
            len: end + 1 - i,
            tokens: vec![self.slice(i, end + 1)],
        })
    }

    /// `C++`, `C#`, `F#`.
    pub(super) fn symbol_word(&self, i: usize) -> Option<Proposal> {
        lexicon::SYMBOL_WORDS
            .iter()
            .find(|w| self.starts_with_caseless(i, w))
            .and_then(|w| Proposal::one(w.len(), self.slice(i, i + w.len())))
    }

    /// Numbers: `3.14`, `1,000`, `10:30:45`, `-5`, `+1`, `.5`, `:30`.
    pub(super) fn number(&self, i: usize) -> Option<Proposal> {
        let mut start = i;
        if self.is(i, |c| c == '-' || c == '+') {
            start += 1;
        }
        let mut end = self.run(start, is_digit);
        if end == start {
            // `.5`, and `,5` `:30` after a word (`red3:30` gives `red3`, `:30`).
            let lead = |c: char| matches!(c, '.' | ',' | ':');
            if !(self.is(start, lead) && self.is(start + 1, is_digit)) {
                return None;
            }
            end = start;
        }
        while self.is(end, |c| matches!(c, '.' | ',' | ':')) && self.is(end + 1, is_digit) {
            end = self.run(end + 1, is_digit);
        }
        Proposal::one(end - i, self.slice(i, end))
    }

    /// Words starting with a digit: `1st`, `10-year-old`, `12/25/2019`, `3x3`, `1/2table`.
    pub(super) fn digit_word(&self, i: usize) -> Option<Proposal> {
        if !self.is(i, is_digit) {
            return None;
        }
        let body = |c: char| is_letter(c) || is_digit(c);
        let mut end = self.run(i, body);
        while self.is(end, |c| matches!(c, '-' | '/' | '_')) && self.is(end + 1, body) {
            end = self.run(end + 1, body);
        }
        Proposal::one(end - i, self.slice(i, end))
    }

    /// `3 1/2` is one token with a no-break space.
    pub(super) fn fraction(&self, i: usize) -> Option<Proposal> {
        let whole = self.run(i, |c| c.is_ascii_digit());
        if whole == i || self.at(whole) != Some(' ') {
            return None;
        }
        let numerator = self.run(whole + 1, |c| c.is_ascii_digit());
        if numerator == whole + 1 || self.at(numerator) != Some('/') {
            return None;
        }
        let denominator = self.run(numerator + 1, |c| c.is_ascii_digit());
        if denominator == numerator + 1 {
            return None;
        }
        let text = format!(
            "{}{NBSP}{}",
            self.slice(i, whole),
            self.slice(whole + 1, denominator)
        );
        Proposal::one(denominator - i, text)
    }

    /// Phone numbers: `(555) 123-4567`, `555 123 4567`, `+44 20 7946 0958` (spaces become no-break).
    pub(super) fn phone(&self, i: usize) -> Option<Proposal> {
        let digits = |from: usize, count: usize| {
            let end = self.run(from, |c| c.is_ascii_digit());
            (end - from == count).then_some(end)
        };
        if self.at(i) == Some('(') {
            let area = digits(i + 1, 3)?;
            if self.at(area) != Some(')') || self.at(area + 1) != Some(' ') {
                return None;
            }
            let exchange = digits(area + 2, 3)?;
            if self.at(exchange) != Some('-') {
                return None;
            }
            let line = digits(exchange + 1, 4)?;
            let text = format!(
                "-LRB-{}-RRB-{NBSP}{}",
                self.slice(i + 1, area),
                self.slice(area + 2, line)
            );
            return Proposal::one(line - i, text);
        }
        let start = if self.at(i) == Some('+') { i + 1 } else { i };
        let mut groups = Vec::new();
        let mut end = start;
        loop {
            let group_end = self.run(end, |c| c.is_ascii_digit());
            if !(2..=4).contains(&(group_end - end)) {
                break;
            }
            groups.push((end, group_end));
            if self.at(group_end) == Some(' ') && self.is(group_end + 1, |c| c.is_ascii_digit()) {
                end = group_end + 1;
            } else {
                break;
            }
        }
        if groups.len() < 3 {
            return None;
        }
        let last = groups.last()?.1;
        if self.is(last, |c| c.is_ascii_digit()) {
            return None;
        }
        let text: Vec<String> = groups.iter().map(|&(a, b)| self.slice(a, b)).collect();
        let sign = self.slice(i, start);
        Proposal::one(last - i, format!("{sign}{}", text.join(&NBSP.to_string())))
    }

    /// `http://www.flickr.com/photos/123`: everything up to white space or a bracket, without a
    /// final sentence mark.
    pub(super) fn url(&self, i: usize) -> Option<Proposal> {
        let scheme = ["http://", "https://"]
            .iter()
            .find(|s| self.starts_with_caseless(i, s))?;
        let mut end = self.run(i + scheme.len(), |c| {
            !is_ignored(c) && !matches!(c, '"' | '<' | '>' | '(' | ')' | '[' | ']' | '{' | '}')
        });
        while end > i + scheme.len() && self.is(end - 1, |c| matches!(c, '.' | ',' | '!' | '?')) {
            end -= 1;
        }
        Proposal::one(end - i, self.slice(i, end))
    }

    /// Contraction endings: `'s 'd 'm 'll 're 've`, and `n't` (apostrophe normalised to `'`).
    /// After `'` the ending must not run on into letters (`'sbus` is a quote and a word); after `’`
    /// it may (`’sin` gives `'s`, `in`).
    pub(super) fn contraction(&self, i: usize) -> Option<Proposal> {
        if self.is(i, |c| c == 'n' || c == 'N')
            && self.is(i + 1, is_apostrophe)
            && self.is(i + 2, |c| c == 't' || c == 'T')
        {
            let end = self.run(i + 3, is_letter);
            let token = if end == i + 3 {
                format!("{}'{}", self.slice(i, i + 1), self.slice(i + 2, i + 3))
            } else {
                self.slice(i, end)
            };
            return Proposal::one(end - i, token);
        }
        // `&apos;` works like `’`.
        let (mark_len, strict) = if self.starts_with_caseless(i, "&apos;") {
            (6, false)
        } else {
            let apostrophe = self.at(i).filter(|&c| is_apostrophe(c))?;
            (1, apostrophe == '\'')
        };
        let from = i + mark_len;
        CONTRACTIONS
            .iter()
            .filter(|ending| self.starts_with_caseless(from, ending))
            .filter(|ending| !strict || !self.is(from + ending.len(), is_letter))
            .map(|ending| ending.len())
            .max()
            .and_then(|len| {
                Proposal::one(mark_len + len, format!("'{}", self.slice(from, from + len)))
            })
    }

    /// Words that start with an apostrophe: `'em`, `'cause`, `'n'`, `'90s`, `'99`, and `'t` before
    /// `is`/`was` (`'tis` gives `'t`, `is`).
    pub(super) fn apostrophe_word(&self, i: usize) -> Option<Proposal> {
        if !self.is(i, is_apostrophe) {
            return None;
        }
        if self.is(i + 1, |c| c == 'n' || c == 'N') && self.is(i + 2, is_apostrophe) {
            return Proposal::one(3, self.slice(i, i + 3));
        }
        for word in lexicon::APOSTROPHE_WORDS {
            let rest = word.get(1..).unwrap_or_default();
            if self.starts_with_caseless(i + 1, rest) && !self.is(i + word.len(), is_letter) {
                return Proposal::one(word.len(), self.slice(i, i + word.len()));
            }
        }
        if self.is(i + 1, |c| c == 't' || c == 'T')
            && (self.starts_with_caseless(i + 2, "is") || self.starts_with_caseless(i + 2, "was"))
        {
            return Proposal::one(2, format!("'{}", self.slice(i + 1, i + 2)));
        }
        // `'90s` (even before letters: `'90sisn't`), and `'99` before white space or the end.
        let digits = self.run(i + 1, |c| c.is_ascii_digit());
        if digits == i + 3 {
            if self.at(i + 2) == Some('0') && self.is(i + 3, |c| c == 's' || c == 'S') {
                return Proposal::one(4, self.slice(i, i + 4));
            }
            if self.at(i + 3).is_none_or(is_ignored) {
                return Proposal::one(3, self.slice(i, i + 3));
            }
        }
        None
    }

    /// `o'clock`, `d'Angelo`, `l'amour`, `n'tdog`: d, l, o or n, an apostrophe, two or more letters.
    /// `d'`, `l'`, `y'` alone before other letters (`y'all` gives `y'`, `all`) unless a contraction
    /// ending follows.
    pub(super) fn elision(&self, i: usize) -> Option<Proposal> {
        let first = self.at(i)?.to_ascii_lowercase();
        if !self.is(i + 1, is_apostrophe) {
            return None;
        }
        if matches!(first, 'd' | 'l' | 'o' | 'n') {
            let end = self.run(i + 2, is_letter);
            let ending: String = self.slice(i + 2, end).to_ascii_lowercase();
            if end >= i + 4 && !CONTRACTIONS.contains(&ending.as_str()) {
                return Proposal::one(end - i, self.slice(i, end));
            }
        }
        if matches!(first, 'd' | 'l' | 'y') && self.is(i + 2, is_letter) {
            let blocked = ["s", "d", "m", "ll", "re", "ve"]
                .iter()
                .any(|ending| self.starts_with_caseless(i + 2, ending));
            if !blocked {
                return Proposal::one(2, self.slice(i, i + 2));
            }
        }
        None
    }

    /// `ma'am`, `xy'all`: two or more letters ending in a vowel (or y), an apostrophe, a vowel and
    /// more ASCII letters.
    pub(super) fn vowel_apostrophe_word(&self, i: usize) -> Option<Proposal> {
        let left = self.run(i, is_letter);
        if left < i + 2
            || !self.is(left - 1, |c| {
                is_ascii_vowel(c) || c.eq_ignore_ascii_case(&'y')
            })
        {
            return None;
        }
        if !(self.is(left, is_apostrophe) && self.is(left + 1, is_ascii_vowel)) {
            return None;
        }
        let end = self.run(left + 1, |c| c.is_ascii_alphabetic());
        Proposal::one(end - i, self.slice(i, end))
    }
}
