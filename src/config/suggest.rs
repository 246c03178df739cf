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

#[cfg(test)]
mod tests {
    use super::*;

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
