//! LAVIS's caption text processor (`BlipCaptionProcessor.pre_caption`, the `blip_caption` eval
//! processor its retrieval datasets apply to every caption): lowercase; each of `. ! " ( ) * # : ;
//! ~` becomes a space; runs of two or more whitespace characters become one space; strip spaces
//! (and a trailing newline); keep at most `max_words` space-separated words (LAVIS default 50).

/// The characters LAVIS replaces by a space.
const REPLACED: &[char] = &['.', '!', '"', '(', ')', '*', '#', ':', ';', '~'];

/// `pre_caption(caption)` with LAVIS's `max_words`.
pub fn pre_caption(caption: &str, max_words: usize) -> String {
    let lowered: String = caption
        .to_lowercase()
        .chars()
        .map(|c| if REPLACED.contains(&c) { ' ' } else { c })
        .collect();
    // re.sub(r"\s{2,}", " ", ...): a run of 2+ whitespace characters becomes one space; a single
    // whitespace character (a tab, say) stays as it is.
    let mut collapsed = String::with_capacity(lowered.len());
    let mut run = String::new();
    for c in lowered.chars() {
        if c.is_whitespace() {
            run.push(c);
            continue;
        }
        flush_run(&mut collapsed, &mut run);
        collapsed.push(c);
    }
    flush_run(&mut collapsed, &mut run);
    let stripped = collapsed.trim_end_matches('\n').trim_matches(' ');
    let words: Vec<&str> = stripped.split(' ').collect();
    if words.len() > max_words {
        words[..max_words].join(" ")
    } else {
        stripped.to_string()
    }
}

fn flush_run(out: &mut String, run: &mut String) {
    match run.chars().count() {
        0 => {}
        1 => out.push_str(run),
        _ => out.push(' '),
    }
    run.clear();
}

#[cfg(test)]
mod tests {
    use super::pre_caption;

    #[test]
    fn lowercases_replaces_punctuation_and_collapses_spaces() {
        assert_eq!(
            pre_caption("A man (in a RED hat)... rides!", 50),
            "a man in a red hat rides"
        );
        assert_eq!(pre_caption("two dogs, one cat", 50), "two dogs, one cat");
        assert_eq!(pre_caption("  tabs\tstay  ", 50), "tabs\tstay");
    }

    #[test]
    fn keeps_at_most_max_words() {
        assert_eq!(pre_caption("one two three four", 2), "one two");
    }
}
