//! Generated captions scored the way LAVIS scores them: the prompt is stripped from each decoded
//! caption (`caption[len(prompt):]`) and only images with references count. The one scoring path of
//! `baseline`, `train`'s evaluation and `score`.

use std::collections::BTreeMap;

use super::{score, MetricsError, Scores};

/// The caption without the prompt text it starts with (decoded text is lowercased by the tokenizer).
pub fn strip_prompt(caption: &str, prompt: &str) -> String {
    let prompt = prompt.trim().to_lowercase();
    if prompt.is_empty() {
        return caption.trim().to_string();
    }
    match caption.trim().strip_prefix(&prompt) {
        Some(rest) => rest.trim().to_string(),
        None => caption.trim().to_string(),
    }
}

/// COCO metrics of `captions` (image id, decoded caption) against `references`. The prompt is
/// stripped from every caption; captions of images without references are left out (a later caption
/// for an id replaces an earlier one) and the references are restricted to the captioned images.
/// [`MetricsError::Empty`] when no caption has references.
pub fn score_captions<'a>(
    captions: impl IntoIterator<Item = (&'a str, &'a str)>,
    references: &BTreeMap<String, Vec<String>>,
    prompt: &str,
) -> Result<Scores, MetricsError> {
    let hypotheses: BTreeMap<String, String> = captions
        .into_iter()
        .filter(|(id, _)| references.get(*id).is_some_and(|refs| !refs.is_empty()))
        .map(|(id, caption)| (id.to_string(), strip_prompt(caption, prompt)))
        .collect();
    let references: BTreeMap<String, Vec<String>> = references
        .iter()
        .filter(|(id, _)| hypotheses.contains_key(*id))
        .map(|(id, refs)| (id.clone(), refs.clone()))
        .collect();
    score(&hypotheses, &references)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_is_stripped_case_insensitively() {
        assert_eq!(strip_prompt("a picture of a cat ", "A picture of"), "a cat");
        assert_eq!(strip_prompt(" a cat", ""), "a cat");
        assert_eq!(strip_prompt("a cat", "a picture of"), "a cat");
    }

    #[test]
    fn captions_without_references_are_left_out() {
        let references: BTreeMap<String, Vec<String>> = [
            ("1".to_string(), vec!["a cat on a mat".to_string()]),
            ("2".to_string(), vec!["a dog".to_string()]),
            ("3".to_string(), Vec::new()),
        ]
        .into();
        let captions = [
            ("1", "a picture of a cat on a mat"),
            ("3", "a picture of nothing"),
            ("9", "a picture of a bird"),
        ];
        let scores = score_captions(captions, &references, "a picture of").unwrap();
        assert_eq!(scores.n_images, 1);
        assert!(matches!(
            score_captions([("9", "x")], &references, ""),
            Err(MetricsError::Empty)
        ));
    }
}
