//! Word lists observed from the jar by probing it as a black box (every alphabetic string of one to four
//! letters in lower, capitalised and upper case followed by `. x` and `. The`, plus longer candidates):
//! which words keep a following period, and which capitalised words count as a sentence start.
//!
//! Spelling convention for the abbreviation lists: letters match either case, except that `^` makes
//! the next letter upper case only and `~` makes it lower case only (as observed: `Ill.` and `ILL.` are
//! abbreviations but `ill.` is not; `Pty.` is but `PTY.` is not).

/// Abbreviations that keep their period and never end a sentence (`Mr. The` stays `mr. the`).
const TITLE_ABBREVIATIONS: &[&str] = &[
    "adj", "adm", "adv", "alex", "asst", "atty", "ave", "brig", "capt", "cf", "cie", "cmdr", "col",
    "cpl", "dept", "det", "dr", "drs", "elec", "ens", "ft", "gen", "gov", "govs", "hon", "insp",
    "invt", "jos", "lt", "maj", "m~fg", "mlle", "mme", "mr", "mrs", "ms", "msgr", "mt", "m~tg",
    "natl", "pfc", "ph", "pres", "prof", "pvt", "rep", "reps", "rev", "sen", "sens", "sfc", "sgt",
    "spc", "st", "ste", "supt", "vs", "wm", "messrs", "assoc", "comdr", "lieut", "treas",
];

/// Abbreviations that keep their period and, before an upper-case letter (or white space at the end
/// of the line), are followed by an extra `.` token: `Inc. The` gives `inc. . the`.
const SENTENCE_ABBREVIATIONS: &[&str] = &[
    "al", "ala", "apr", "ariz", "^ark", "assn", "aug", "^az", "bhd", "bldg", "blvd", "bros", "co",
    "colo", "conn", "corp", "cos", "ct", "dak", "dec", "^del", "esq", "est", "etc", "ext", "feb",
    "fla", "fri", "ga", "^ill", "inc", "ind", "intl", "jan", "jr", "jul", "jun", "kan", "kans",
    "ky", "^la", "ltd", "mar", "^mass", "md", "mich", "minn", "^miss", "mo", "mon", "mont", "neb",
    "nev", "nov", "oct", "okla", "^ore", "^pa", "penn", "plc", "ppt~e", "ppt~y", "pt~e", "pt~es",
    "pt~y", "pt~ys", "rd", "rt", "sep", "sept", "seq", "sq", "sr", "sys", "tel", "tenn", "^tex",
    "univ", "va", "vt", "^wash", "wed", "wis", "wisc", "wyo", "calif", "thurs", "thu", "tue",
    "tues",
];

/// Abbreviations that keep their period only before a number (`No. 5`, `fig.3`; but `no .` alone).
const NUMBER_ABBREVIATIONS: &[&str] =
    &["ca", "no", "op", "pp", "art", "fig", "nos", "figs", "prop"];

/// Company abbreviations after which `Ltd` does not start a sentence (`Co. Ltd` stays `co. ltd`).
pub(super) const BEFORE_LTD: &[&str] = &["co", "pte", "pty"];

/// Words that keep a final hyphen (`pro- and anti-`).
pub(super) const HYPHEN_PREFIXES: &[&str] = &["pro", "anti"];

/// Capitalised (or all upper-case) words after which a one-letter or dotted acronym's period is a
/// sentence end.
const SENTENCE_STARTERS: &[&str] = &[
    "a", "an", "as", "at", "he", "if", "in", "it", "so", "we", "but", "her", "now", "one", "our",
    "she", "the", "yet", "you", "here", "last", "many", "more", "once", "some", "such", "that",
    "then", "they", "this", "what", "when", "there", "these", "their", "while", "however", "since",
    "after", "other", "earlier", "about",
];

/// Words the jar splits in two when they stand alone: (word, length of the first part).
const SPLIT_WORDS: &[(&str, usize)] = &[
    ("cannot", 3),
    ("gonna", 3),
    ("gotta", 3),
    ("wanna", 3),
    ("lemme", 3),
    ("gimme", 3),
];

/// Words with a leading apostrophe that stay whole (compared in lower case).
pub(super) const APOSTROPHE_WORDS: &[&str] = &["'em", "'cause", "'till", "'n"];

/// Programming-language names written with symbols (compared in lower case).
pub(super) const SYMBOL_WORDS: &[&str] = &["c++", "c#", "f#"];

/// Dotted words that are one abbreviation although their parts are not single letters.
pub(super) const DOTTED_WORDS: &[&str] = &["ph.d."];

fn spelled(pattern: &str, word: &[char]) -> bool {
    let mut letters = word.iter();
    let mut constraint = None;
    for p in pattern.chars() {
        if p == '^' || p == '~' {
            constraint = Some(p);
            continue;
        }
        let Some(&c) = letters.next() else {
            return false;
        };
        if c.to_ascii_lowercase() != p {
            return false;
        }
        match constraint.take() {
            Some('^') if !c.is_ascii_uppercase() => return false,
            Some('~') if !c.is_ascii_lowercase() => return false,
            _ => {}
        }
    }
    letters.next().is_none()
}

/// Which kind of abbreviation `word` (without its period) is, if any.
pub(super) fn abbreviation(word: &[char]) -> Option<Abbreviation> {
    if TITLE_ABBREVIATIONS.iter().any(|p| spelled(p, word)) {
        Some(Abbreviation::Title)
    } else if SENTENCE_ABBREVIATIONS.iter().any(|p| spelled(p, word)) {
        Some(Abbreviation::SentenceEnd)
    } else if NUMBER_ABBREVIATIONS.iter().any(|p| spelled(p, word)) {
        Some(Abbreviation::BeforeNumber)
    } else {
        None
    }
}

/// Whether `word` is in `list` (ASCII case-insensitive).
pub(super) fn listed(list: &[&str], word: &[char]) -> bool {
    list.iter().any(|p| spelled(p, word))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Abbreviation {
    Title,
    SentenceEnd,
    BeforeNumber,
}

/// Whether `word` is a sentence starter as written (capitalised or all upper case).
pub(super) fn is_sentence_starter(word: &[char]) -> bool {
    let Some((first, rest)) = word.split_first() else {
        return false;
    };
    if !first.is_ascii_uppercase() {
        return false;
    }
    let all_lower = rest.iter().all(|c| c.is_ascii_lowercase());
    let all_upper = rest.iter().all(|c| c.is_ascii_uppercase());
    if !(all_lower || all_upper) {
        return false;
    }
    let lower: String = word.iter().map(|c| c.to_ascii_lowercase()).collect();
    SENTENCE_STARTERS.contains(&lower.as_str())
}

/// Where to split `word` if it is one of [`SPLIT_WORDS`] (case-insensitive).
pub(super) fn split_point(word: &[char]) -> Option<usize> {
    let lower: String = word.iter().map(|c| c.to_ascii_lowercase()).collect();
    SPLIT_WORDS
        .iter()
        .find(|(w, _)| *w == lower)
        .map(|&(_, at)| at)
}
