//! The PTB tokenizer against the real CoreNLP 3.4.1 jar: tests/fixtures/metrics/ptb_cases.jsonl holds
//! caption-like strings with the jar's raw output and pycocoevalcap's tokenized caption
//! (tests/fixtures/make_metrics_fixtures.py). Every case must match exactly.

use serde::Deserialize;
use vlmrun::metrics::PtbTokenizer;

#[derive(Deserialize)]
struct Case {
    input: String,
    /// The jar's `-preserveLines -lowerCase` output line.
    raw: String,
    /// pycocoevalcap's `PTBTokenizer.tokenize` result.
    tokenized: String,
}

fn cases() -> Vec<Case> {
    load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/metrics/ptb_cases.jsonl"
    ))
}

fn load(path: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{path}:{}: {e}", i + 1))
        })
        .collect()
}

fn tokenizer() -> PtbTokenizer {
    PtbTokenizer::new().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_case_tokenizes_like_pycocoevalcap() {
    let cases = cases();
    assert!(cases.len() > 300, "fixture too small: {}", cases.len());
    let tokenizer = tokenizer();
    let mismatches: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let got = tokenizer.tokenize(&case.input);
            (got != case.tokenized).then(|| {
                format!(
                    "input {:?}\n  expected {:?}\n  got      {:?}",
                    case.input, case.tokenized, got
                )
            })
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

#[test]
fn every_case_matches_the_raw_jar_tokens() {
    let tokenizer = tokenizer();
    let mismatches: Vec<String> = cases()
        .iter()
        .filter_map(|case| {
            let got = tokenizer.tokenize_raw(&case.input).join(" ");
            (got != case.raw).then(|| {
                format!(
                    "input {:?}\n  expected {:?}\n  got      {:?}",
                    case.input, case.raw, got
                )
            })
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} raw outputs differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn free_function_agrees_with_the_tokenizer() {
    let caption = "A dog's \"ball\" (red)...";
    assert_eq!(
        vlmrun::metrics::ptb::tokenize(caption).ok().as_deref(),
        Some("a dog 's ball -lrb- red -rrb-")
    );
}

#[test]
fn newline_inside_a_caption_is_a_space() {
    // pycocoevalcap replaces '\n' by ' ' before writing captions one per line.
    let tokenizer = tokenizer();
    assert_eq!(tokenizer.tokenize("a dog\non a\nbed."), "a dog on a bed");
    // Other line breaks would shift pycocoevalcap's lines; here they only separate tokens.
    assert_eq!(
        tokenizer.tokenize("a dog\r\non a\u{2028}bed"),
        "a dog on a bed"
    );
}

/// Same check on a larger, uncommitted case file (for example a fuzz corpus written by
/// make_metrics_fixtures.py's helpers): `PTB_CASES_FILE=/tmp/cases.jsonl cargo test --test metrics_ptb -- --ignored`.
#[test]
#[ignore = "needs PTB_CASES_FILE"]
fn external_case_file() {
    let path = std::env::var("PTB_CASES_FILE").unwrap_or_else(|_| panic!("set PTB_CASES_FILE"));
    let cases = load(&path);
    let tokenizer = tokenizer();
    let mismatches: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let got = tokenizer.tokenize_raw(&case.input).join(" ");
            (got != case.raw).then(|| {
                format!(
                    "input {:?}\n  expected {:?}\n  got      {:?}",
                    case.input, case.raw, got
                )
            })
        })
        .collect();
    let shown: Vec<&String> = mismatches.iter().take(60).collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} raw outputs differ:\n{}",
        mismatches.len(),
        cases.len(),
        shown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
