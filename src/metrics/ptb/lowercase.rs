//! Lower-casing of output tokens as Java's `String.toLowerCase` does it (the jar lower-cases after
//! tokenizing): Rust's `str::to_lowercase` plus Java's rule for a final capital sigma.

/// Java's `String.toLowerCase(Locale.ENGLISH)`. It differs from Rust's `str::to_lowercase` only for
/// capital sigma: Java writes final `ς` when a cased letter precedes it in the same word and none
/// follows it in that word. Java 17's word breaks, as probed: letters, digits (including `²` `½`),
/// combining marks and `_` are in-word; a single `"` `'` `-` `.` or soft hyphen between them is too.
/// So `ΣΣ1ST` lowercases to `σσ1st` and `AΣ-B` to `aσ-b`, where Rust gives `σς1st` and `aς-b`.
pub(super) fn java_lowercase(token: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::java_lowercase;

    #[test]
    fn sigma_lowercases_like_java() {
        // Observed with Java 17: "ΣΣ1st" -> "σσ1st" where Rust's to_lowercase gives "σς1st".
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
