//! VQA accuracy exactly as the official VQA evaluation computes it (`vqaEval.py`, also shipped
//! by LAVIS as `lavis/common/vqa_tools/vqa_eval.py`), quirks included:
//!
//! - the prediction: `\n` and `\t` become spaces, then strip, then [`process_punctuation`], then
//!   [`process_digit_article`] (lowercase, number words zero..ten and "none" to digits, articles
//!   dropped, contractions restored);
//! - the ground-truth answers get [`process_punctuation`] only, and only when the question's
//!   answers are not all identical ([`GroundTruth::Official`]); lmms-eval normalises every
//!   ground-truth answer like the prediction ([`GroundTruth::Full`]), which gives a different
//!   number;
//! - a question's accuracy is the mean over its answers `i` of `min(1, #{j != i : gt_j == pred}
//!   / 3)` (for 10 answers: the average over the 10 subsets of 9);
//! - the overall accuracy is the mean over questions, in percent; likewise per answer type and
//!   per question type. (The official code also prints them rounded to 2 decimals; these are
//!   unrounded.)
//!
//! Digits are the ASCII ones (Python's `\d` also matches other Unicode decimal digits).

use std::collections::BTreeMap;

use serde::Serialize;

pub use crate::data::vqa::AnnotatedQuestion;

/// The punctuation the official evaluation removes or turns into spaces, in its order.
const PUNCT: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

/// `re.sub(periodStrip, "", text, re.UNICODE)`: `re.UNICODE` (32) lands in the COUNT argument,
/// so at most this many periods are removed.
const PERIOD_STRIP_COUNT: usize = 32;

/// Number words the official evaluation maps to digits (`manualMap`).
const NUMBERS: [(&str, &str); 12] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];

const ARTICLES: [&str; 3] = ["a", "an", "the"];

/// The official `contractions` table (as published, including its odd entries such as
/// "somebody'd" -> "somebodyd" and the capitalised keys, which never match lowercased words).
const CONTRACTIONS: [(&str, &str); 120] = [
    ("aint", "ain't"),
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldve", "could've"),
    ("couldnt", "couldn't"),
    ("couldn'tve", "couldn't've"),
    ("couldnt've", "couldn't've"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hadnt", "hadn't"),
    ("hadnt've", "hadn't've"),
    ("hadn'tve", "hadn't've"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("hed", "he'd"),
    ("hed've", "he'd've"),
    ("he'dve", "he'd've"),
    ("hes", "he's"),
    ("howd", "how'd"),
    ("howll", "how'll"),
    ("hows", "how's"),
    ("Id've", "I'd've"),
    ("I'dve", "I'd've"),
    ("Im", "I'm"),
    ("Ive", "I've"),
    ("isnt", "isn't"),
    ("itd", "it'd"),
    ("itd've", "it'd've"),
    ("it'dve", "it'd've"),
    ("itll", "it'll"),
    ("let's", "let's"),
    ("maam", "ma'am"),
    ("mightnt", "mightn't"),
    ("mightnt've", "mightn't've"),
    ("mightn'tve", "mightn't've"),
    ("mightve", "might've"),
    ("mustnt", "mustn't"),
    ("mustve", "must've"),
    ("neednt", "needn't"),
    ("notve", "not've"),
    ("oclock", "o'clock"),
    ("oughtnt", "oughtn't"),
    ("ow's'at", "'ow's'at"),
    ("'ows'at", "'ow's'at"),
    ("'ow'sat", "'ow's'at"),
    ("shant", "shan't"),
    ("shed've", "she'd've"),
    ("she'dve", "she'd've"),
    ("she's", "she's"),
    ("shouldve", "should've"),
    ("shouldnt", "shouldn't"),
    ("shouldnt've", "shouldn't've"),
    ("shouldn'tve", "shouldn't've"),
    ("somebody'd", "somebodyd"),
    ("somebodyd've", "somebody'd've"),
    ("somebody'dve", "somebody'd've"),
    ("somebodyll", "somebody'll"),
    ("somebodys", "somebody's"),
    ("someoned", "someone'd"),
    ("someoned've", "someone'd've"),
    ("someone'dve", "someone'd've"),
    ("someonell", "someone'll"),
    ("someones", "someone's"),
    ("somethingd", "something'd"),
    ("somethingd've", "something'd've"),
    ("something'dve", "something'd've"),
    ("somethingll", "something'll"),
    ("thats", "that's"),
    ("thered", "there'd"),
    ("thered've", "there'd've"),
    ("there'dve", "there'd've"),
    ("therere", "there're"),
    ("theres", "there's"),
    ("theyd", "they'd"),
    ("theyd've", "they'd've"),
    ("they'dve", "they'd've"),
    ("theyll", "they'll"),
    ("theyre", "they're"),
    ("theyve", "they've"),
    ("twas", "'twas"),
    ("wasnt", "wasn't"),
    ("wed've", "we'd've"),
    ("we'dve", "we'd've"),
    ("weve", "we've"),
    ("werent", "weren't"),
    ("whatll", "what'll"),
    ("whatre", "what're"),
    ("whats", "what's"),
    ("whatve", "what've"),
    ("whens", "when's"),
    ("whered", "where'd"),
    ("wheres", "where's"),
    ("whereve", "where've"),
    ("whod", "who'd"),
    ("whod've", "who'd've"),
    ("who'dve", "who'd've"),
    ("wholl", "who'll"),
    ("whos", "who's"),
    ("whove", "who've"),
    ("whyll", "why'll"),
    ("whyre", "why're"),
    ("whys", "why's"),
    ("wont", "won't"),
    ("wouldve", "would've"),
    ("wouldnt", "wouldn't"),
    ("wouldnt've", "wouldn't've"),
    ("wouldn'tve", "wouldn't've"),
    ("yall", "y'all"),
    ("yall'll", "y'all'll"),
    ("y'allll", "y'all'll"),
    ("yall'd've", "y'all'd've"),
    ("y'alld've", "y'all'd've"),
    ("y'all'dve", "y'all'd've"),
    ("youd", "you'd"),
    ("youd've", "you'd've"),
    ("you'dve", "you'd've"),
    ("youll", "you'll"),
    ("youre", "you're"),
    ("youve", "you've"),
];

/// How the ground-truth answers are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroundTruth {
    /// The official evaluation (and LAVIS): punctuation only, and only when the answers differ.
    #[default]
    Official,
    /// lmms-eval's variant: every answer normalised like the prediction.
    Full,
}

/// `commaStrip` (`(\d)(\,)(\d)`) found anywhere in `text`.
fn has_digit_comma_digit(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    chars
        .windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == ',' && w[2].is_ascii_digit())
}

/// The official `processPunctuation`: each mark in [`PUNCT`] is deleted when the ORIGINAL text
/// has it next to a space (or has a digit-comma-digit anywhere), else replaced by a space; then
/// up to 32 periods not followed by a digit are deleted.
pub fn process_punctuation(text: &str) -> String {
    let comma_digits = has_digit_comma_digit(text);
    let mut out = text.to_string();
    for p in PUNCT {
        let spaced = text.contains(&format!("{p} ")) || text.contains(&format!(" {p}"));
        let replacement = if spaced || comma_digits { "" } else { " " };
        out = out.replace(p, replacement);
    }
    let chars: Vec<char> = out.chars().collect();
    let mut stripped = String::with_capacity(out.len());
    let mut removed = 0;
    for (i, &c) in chars.iter().enumerate() {
        let next_is_digit = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if c == '.' && !next_is_digit && removed < PERIOD_STRIP_COUNT {
            removed += 1;
            continue;
        }
        stripped.push(c);
    }
    stripped
}

/// The official `processDigitArticle`: lowercase, split on whitespace, number words to digits,
/// articles dropped, contractions restored, joined by single spaces.
pub fn process_digit_article(text: &str) -> String {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split_whitespace()
        .map(|w| {
            NUMBERS
                .iter()
                .find(|(word, _)| *word == w)
                .map_or(w, |(_, digit)| digit)
        })
        .filter(|w| !ARTICLES.contains(w))
        .map(|w| {
            CONTRACTIONS
                .iter()
                .find(|(short, _)| *short == w)
                .map_or(w, |(_, full)| full)
        })
        .collect();
    words.join(" ")
}

/// `\n`/`\t` to spaces and surrounding whitespace stripped (Python's `strip()`).
fn clean(text: &str) -> String {
    text.replace(['\n', '\t'], " ").trim().to_string()
}

/// A prediction as the official evaluation normalises it.
pub fn normalize_prediction(answer: &str) -> String {
    process_digit_article(&process_punctuation(&clean(answer)))
}

/// The ground-truth answers of one question as `mode` normalises them.
pub fn normalize_ground_truth(answers: &[String], mode: GroundTruth) -> Vec<String> {
    match mode {
        GroundTruth::Official => {
            let first = answers.first();
            let all_same = answers.iter().all(|a| Some(a) == first);
            if all_same {
                answers.to_vec()
            } else {
                answers.iter().map(|a| process_punctuation(a)).collect()
            }
        }
        GroundTruth::Full => answers.iter().map(|a| normalize_prediction(a)).collect(),
    }
}

/// One question's accuracy in `0..=1`: the mean over its answers `i` of
/// `min(1, #{j != i : gt_j == pred} / 3)`, after normalisation. 0 for a question without answers.
pub fn question_accuracy(prediction: &str, answers: &[String], mode: GroundTruth) -> f64 {
    if answers.is_empty() {
        return 0.0;
    }
    let pred = normalize_prediction(prediction);
    let gts = normalize_ground_truth(answers, mode);
    let matches = gts.iter().filter(|gt| **gt == pred).count();
    let total: f64 = gts
        .iter()
        .map(|gt| {
            let others = matches - usize::from(*gt == pred);
            (others as f64 / 3.0).min(1.0)
        })
        .sum();
    total / gts.len() as f64
}

/// VQA accuracy of a run, in percent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VqaAccuracy {
    pub overall: f64,
    pub per_answer_type: BTreeMap<String, f64>,
    pub per_question_type: BTreeMap<String, f64>,
    /// Per question id, in percent.
    pub per_question: BTreeMap<u64, f64>,
    pub n_questions: usize,
    pub ground_truth: GroundTruth,
}

/// Why accuracy could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum VqaMetricError {
    #[error("no questions to score")]
    Empty,
    #[error("question {0} has a prediction but no annotation: score against the annotations of the same split")]
    NotAnnotated(u64),
}

/// Accuracy of `predictions` (question id -> answer) against `annotations` (those with a
/// prediction are scored; every prediction must have an annotation).
pub fn vqa_accuracy(
    predictions: &BTreeMap<u64, String>,
    annotations: &[AnnotatedQuestion],
    mode: GroundTruth,
) -> Result<VqaAccuracy, VqaMetricError> {
    let by_id: BTreeMap<u64, &AnnotatedQuestion> =
        annotations.iter().map(|a| (a.question_id, a)).collect();
    if let Some(id) = predictions.keys().find(|id| !by_id.contains_key(id)) {
        return Err(VqaMetricError::NotAnnotated(*id));
    }
    if predictions.is_empty() {
        return Err(VqaMetricError::Empty);
    }
    let mut per_question = BTreeMap::new();
    let mut answer_types: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut question_types: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut sum = 0.0;
    for (id, prediction) in predictions {
        let Some(annotation) = by_id.get(id) else {
            return Err(VqaMetricError::NotAnnotated(*id));
        };
        let acc = question_accuracy(prediction, &annotation.answers, mode);
        sum += acc;
        per_question.insert(*id, 100.0 * acc);
        answer_types
            .entry(annotation.answer_type.clone())
            .or_default()
            .push(acc);
        question_types
            .entry(annotation.question_type.clone())
            .or_default()
            .push(acc);
    }
    let mean = |v: Vec<f64>| 100.0 * v.iter().sum::<f64>() / v.len() as f64;
    Ok(VqaAccuracy {
        overall: 100.0 * sum / predictions.len() as f64,
        per_answer_type: answer_types
            .into_iter()
            .map(|(k, v)| (k, mean(v)))
            .collect(),
        per_question_type: question_types
            .into_iter()
            .map(|(k, v)| (k, mean(v)))
            .collect(),
        per_question,
        n_questions: predictions.len(),
        ground_truth: mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn punctuation_follows_the_official_rules() {
        // Not space-adjacent: replaced by a space ("yes/no" -> "yes no").
        assert_eq!(process_punctuation("yes/no"), "yes no");
        // Space-adjacent somewhere in the ORIGINAL text: every occurrence deleted.
        assert_eq!(process_punctuation("left - right-ish"), "left  rightish");
        // A digit-comma-digit anywhere deletes every mark, commas included.
        assert_eq!(process_punctuation("1,000 (approx)"), "1000 approx");
        // Periods not followed by a digit go; "2.5" keeps its period.
        assert_eq!(process_punctuation("2.5 ft."), "2.5 ft");
        assert_eq!(process_punctuation("u.s.a."), "usa");
    }

    #[test]
    fn period_strip_removes_at_most_32_periods() {
        let dots = ".".repeat(40);
        assert_eq!(process_punctuation(&dots), ".".repeat(8));
    }

    #[test]
    fn digits_articles_and_contractions() {
        assert_eq!(process_digit_article("Two Dogs"), "2 dogs");
        assert_eq!(process_digit_article("none"), "0");
        assert_eq!(
            process_digit_article("a  man on the   beach"),
            "man on beach"
        );
        assert_eq!(process_digit_article("dont know"), "don't know");
        // Capitalised keys never match after lowercasing: "Im" stays "im".
        assert_eq!(process_digit_article("Im"), "im");
        assert_eq!(process_digit_article("eleven"), "eleven");
        assert_eq!(normalize_prediction("\tThe Two!\n"), "2");
    }

    #[test]
    fn accuracy_is_the_mean_over_leave_one_out_subsets() {
        // 2 of 10 humans said "2": the 8 subsets without a "2"-sayer hold 2 matches (2/3), the
        // 2 subsets without one of them hold 1 (1/3): (8 * 2/3 + 2 * 1/3) / 10 = 0.6.
        let gt = answers(&["2", "2", "3", "3", "3", "3", "3", "3", "3", "3"]);
        let acc = question_accuracy("two", &gt, GroundTruth::Official);
        assert!((acc - 0.6).abs() < 1e-12, "{acc}");
        // 3 humans: 7 subsets hold 3 (1.0), 3 hold 2 (2/3): 0.9.
        let gt = answers(&["2", "2", "2", "3", "3", "3", "3", "3", "3", "3"]);
        let acc = question_accuracy("2", &gt, GroundTruth::Official);
        assert!((acc - 0.9).abs() < 1e-12, "{acc}");
        // 4 or more: 1.0; none: 0.
        let gt = answers(&[
            "yes", "yes", "yes", "yes", "no", "no", "no", "no", "no", "no",
        ]);
        assert_eq!(question_accuracy("Yes.", &gt, GroundTruth::Official), 1.0);
        assert_eq!(question_accuracy("maybe", &gt, GroundTruth::Official), 0.0);
        // 1 human: 9 subsets hold 1 (1/3), one holds 0: 0.3.
        let gt = answers(&[
            "red", "blue", "blue", "blue", "blue", "blue", "blue", "blue", "blue", "blue",
        ]);
        let acc = question_accuracy("red", &gt, GroundTruth::Official);
        assert!((acc - 0.3).abs() < 1e-12, "{acc}");
    }

    #[test]
    fn ground_truth_gets_punctuation_only_and_only_when_answers_differ() {
        // The answers differ: punctuation is applied to them, but not the article rule, so "the
        // dog" never matches the prediction's "dog".
        let gt = answers(&[
            "the dog", "the dog", "the dog", "the dog", "dog!", "cat", "cat", "cat", "cat", "cat",
        ]);
        let official = question_accuracy("the dog", &gt, GroundTruth::Official);
        // "dog!" -> "dog " ("!" is not space-adjacent, so it becomes a space), which does not
        // equal "dog" either: 0 matches.
        assert_eq!(official, 0.0);
        // lmms-eval's full normalisation: 5 answers become "dog": 1.0.
        assert_eq!(question_accuracy("the dog", &gt, GroundTruth::Full), 1.0);
        // All identical: untouched, so "dog." never equals the prediction "dog".
        let same = answers(&["dog."; 10]);
        assert_eq!(question_accuracy("dog", &same, GroundTruth::Official), 0.0);
        // Differing: "dog." -> "dog" (the period rule), 9 matches -> 1.0.
        let mut differ = answers(&["dog."; 9]);
        differ.push("cat".to_string());
        assert_eq!(
            question_accuracy("dog", &differ, GroundTruth::Official),
            1.0
        );
    }

    #[test]
    fn run_accuracy_per_type_and_unknown_ids() {
        let annotations = vec![
            AnnotatedQuestion {
                question_id: 1,
                answers: answers(&["yes"; 10]),
                answer_type: "yes/no".into(),
                question_type: "is the".into(),
            },
            AnnotatedQuestion {
                question_id: 2,
                answers: answers(&["2", "2", "3", "3", "3", "3", "3", "3", "3", "3"]),
                answer_type: "number".into(),
                question_type: "how many".into(),
            },
        ];
        let predictions: BTreeMap<u64, String> =
            [(1, "yes".to_string()), (2, "2".to_string())].into();
        let acc = vqa_accuracy(&predictions, &annotations, GroundTruth::Official).unwrap();
        assert!((acc.overall - 80.0).abs() < 1e-9, "{}", acc.overall);
        assert!((acc.per_answer_type["number"] - 60.0).abs() < 1e-9);
        assert_eq!(acc.per_answer_type["yes/no"], 100.0);
        let unknown: BTreeMap<u64, String> = [(9, "yes".to_string())].into();
        assert!(matches!(
            vqa_accuracy(&unknown, &annotations, GroundTruth::Official),
            Err(VqaMetricError::NotAnnotated(9))
        ));
    }
}
