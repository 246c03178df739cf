//! Character classes the tokenizer reasons with, from the probed tables in `char_tables.rs` plus the few
//! ASCII and Latin-1 characters whose treatment was observed one by one.

use super::char_tables::{DIGIT_RANGES, IGNORED_RANGES, LETTER_RANGES, MARK_RANGES};

fn in_ranges(c: char, ranges: &[(u16, u16)]) -> bool {
    let Ok(unit) = u16::try_from(u32::from(c)) else {
        return false;
    };
    ranges
        .binary_search_by(|&(low, high)| {
            if high < unit {
                std::cmp::Ordering::Less
            } else if low > unit {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// A letter (continues number-initial words too).
pub(super) fn is_letter(c: char) -> bool {
    in_ranges(c, LETTER_RANGES)
}

/// A digit of any script the jar knows.
pub(super) fn is_digit(c: char) -> bool {
    in_ranges(c, DIGIT_RANGES)
}

/// A combining mark or similar: extends letter-initial words only.
pub(super) fn is_mark(c: char) -> bool {
    in_ranges(c, MARK_RANGES)
}

/// Letter, digit or mark: the body of a word.
pub(super) fn is_word(c: char) -> bool {
    is_letter(c) || is_digit(c) || is_mark(c)
}

/// Dropped like white space: spaces, controls, unassigned and private-use code units, every character
/// outside the Basic Multilingual Plane (emoji), which the jar sees as two dropped halves, and the line
/// breaks other than U+0085 (not probed: the jar ends a line there; here they only separate tokens).
pub(super) fn is_ignored(c: char) -> bool {
    u32::from(c) > 0xFFFF
        || matches!(c, '\n' | '\r' | '\u{b}' | '\u{c}' | '\u{2028}' | '\u{2029}')
        || in_ranges(c, IGNORED_RANGES)
}

/// Hyphens that are kept inside a word and dropped at its edges.
pub(super) fn is_soft_joiner(c: char) -> bool {
    matches!(c, '\u{58a}' | '\u{2010}' | '\u{2011}')
}

/// The soft hyphen: deleted inside a word, a `-` token on its own.
pub(super) const SOFT_HYPHEN: char = '\u{ad}';

pub(super) fn is_ascii_vowel(c: char) -> bool {
    matches!(c.to_ascii_lowercase(), 'a' | 'e' | 'i' | 'o' | 'u')
}

/// Apostrophes that work in contractions (`'` and the right single quotation mark).
pub(super) fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '\u{2019}')
}

/// Upper case as the jar's sentence-start checks see it.
pub(super) fn is_upper(c: char) -> bool {
    c.is_uppercase() && is_letter(c)
}

/// How a character that is a token by itself is written out.
pub(super) fn single_token(c: char) -> String {
    let text = match c {
        '(' => "-LRB-",
        ')' => "-RRB-",
        '[' => "-LSB-",
        ']' => "-RSB-",
        '{' => "-LCB-",
        '}' => "-RCB-",
        '\u{80}' | '\u{a4}' | '\u{20a0}' | '\u{20ac}' => "$",
        '\u{a3}' => "#",
        '\u{a2}' => "cents",
        '\u{91}' | '\u{2018}' | '\u{201b}' | '\u{2039}' => "`",
        '\u{92}' | '\u{2019}' | '\u{203a}' => "'",
        '\u{93}' | '\u{201c}' | '\u{ab}' => "``",
        '\u{94}' | '\u{201d}' | '\u{bb}' => "''",
        '\u{96}' | '\u{97}' | '\u{2013}' | '\u{2014}' | '\u{2015}' => "--",
        '\u{85}' | '\u{2026}' => "...",
        '\u{bc}' => "1/4",
        '\u{bd}' => "1/2",
        '\u{be}' => "3/4",
        '\u{2153}' => "1/3",
        '\u{2154}' => "2/3",
        SOFT_HYPHEN => "-",
        _ => return c.to_string(),
    };
    text.to_string()
}
