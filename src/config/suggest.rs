//! "Did you mean" hints for misspelled configuration keys.

/// The candidate closest to `unknown` by Jaro-Winkler similarity, when it is close enough to be a typo.
pub fn closest<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(unknown, candidate), candidate))
        .filter(|(similarity, _)| *similarity >= 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// Pulls the unknown key and the accepted keys out of serde's `unknown field `x`, expected one of `a`, `b``
/// message, and turns them into a `fix:` line.
pub fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let unknown = rest.split('`').next()?;
    let listed = rest.split("expected one of ").nth(1)?.lines().next()?;
    let expected: Vec<&str> = listed
        .split(", ")
        .map(|key| key.trim().trim_matches('`'))
        .filter(|key| !key.is_empty())
        .collect();
    let fix = match closest(unknown, expected.iter().copied()) {
        Some(best) => format!("did you mean `{best}`?"),
        None => format!("valid keys here: {}", expected.join(", ")),
    };
    Some(format!("\n  fix: {fix}"))
}

/// A parser's message in the words of this tool: a duplicated YAML key without the parser's option
/// name ("set DuplicateKeyPolicy in Options"), Rust type names as the kind of value expected.
pub fn plain_words(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        return format!("key {key} is given twice in one mapping");
    }
    let mut out = message.to_string();
    for (rust, plain) in [
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected u32", "expected a whole number, 0 or more"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("invalid usize", "not a whole number, 0 or more"),
        ("invalid u64", "not a whole number, 0 or more"),
        ("invalid u32", "not a whole number, 0 or more"),
        ("invalid i64", "not a whole number"),
        ("invalid f64", "not a number"),
        ("expected a boolean", "expected true or false"),
    ] {
        out = out.replace(rust, plain);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_wording_is_replaced() {
        assert_eq!(
            plain_words(
                "duplicate mapping key: seed, set DuplicateKeyPolicy in Options if acceptable"
            ),
            "key seed is given twice in one mapping"
        );
        assert_eq!(
            plain_words("invalid type: string \"abc\", expected usize"),
            "invalid type: string \"abc\", expected a whole number, 0 or more"
        );
        assert_eq!(plain_words("invalid u64"), "not a whole number, 0 or more");
    }

    #[test]
    fn suggests_the_nearest_key() {
        assert_eq!(
            closest("devce", ["device", "precision", "seed"]),
            Some("device")
        );
        assert_eq!(closest("zzzz", ["device", "precision"]), None);
    }

    #[test]
    fn parses_serde_unknown_field_messages() {
        let hint = unknown_field_hint(
            "unknown field `num_beam`, expected one of `prompt`, `num_beams`, `max_length`",
        );
        assert_eq!(hint.as_deref(), Some("\n  fix: did you mean `num_beams`?"));
    }
}
