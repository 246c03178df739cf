//! Corpus and per-image BLEU-1..4, CIDEr-D and ROUGE-L against pycocoevalcap 1.2.
//!
//! Tolerance 1e-6 absolute: the implementation follows pycocoevalcap's operation order, so differences
//! are a few ULP (numpy's SIMD `log` vs libm); 1e-6 is the precision metrics.md states its numbers to.

use std::collections::BTreeMap;

use serde::Deserialize;
use vlmrun::metrics::{score, score_tokenized, MetricsError, Scores};

const TOLERANCE: f64 = 1e-6;

fn map_refs(refs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    refs.iter()
        .map(|(id, rs)| (id.to_string(), rs.iter().map(|r| r.to_string()).collect()))
        .collect()
}

fn map_hyps(hyps: &[(&str, &str)]) -> BTreeMap<String, String> {
    hyps.iter()
        .map(|(id, h)| (id.to_string(), h.to_string()))
        .collect()
}

/// Reports the largest deviation of `got` from `expected` under `label`.
struct MaxError {
    label: &'static str,
    worst: f64,
    at: String,
}

impl MaxError {
    fn new(label: &'static str) -> Self {
        MaxError {
            label,
            worst: 0.0,
            at: String::new(),
        }
    }

    fn check(&mut self, got: f64, expected: f64, at: impl Into<String>) {
        let error = (got - expected).abs();
        if error > self.worst || error.is_nan() {
            self.worst = error;
            self.at = format!("{} (got {got}, expected {expected})", at.into());
        }
    }

    fn assert_within(&self, tolerance: f64) {
        println!(
            "{}: max abs error {:e} at {}",
            self.label, self.worst, self.at
        );
        assert!(
            self.worst <= tolerance,
            "{}: max abs error {:e} at {}",
            self.label,
            self.worst,
            self.at
        );
    }
}

#[test]
fn metrics_md_test_vector() {
    let refs = map_refs(&[
        (
            "1",
            &[
                "a man riding a wave on top of a surfboard",
                "a surfer riding a large wave in the ocean",
                "a person on a surfboard riding a wave",
            ],
        ),
        (
            "2",
            &[
                "a cat sitting on a laptop keyboard",
                "a cat laying on top of a laptop computer",
                "a kitten is sitting on a keyboard",
            ],
        ),
        (
            "3",
            &[
                "two dogs playing with a frisbee in a park",
                "a couple of dogs running on the grass",
                "dogs chase a frisbee on a green field",
            ],
        ),
    ]);
    let hyps = map_hyps(&[
        ("1", "a man riding a wave on a surfboard"),
        ("2", "a cat sitting on a laptop"),
        ("3", "a dog running in the grass"),
    ]);
    let scores = score_tokenized(&hyps, &refs).unwrap_or_else(|e| panic!("{e}"));
    let mut err = MaxError::new("metrics.md vector");
    for (k, expected) in [0.817673, 0.733609, 0.667780, 0.611475]
        .into_iter()
        .enumerate()
    {
        err.check(scores.bleu[k], expected, format!("BLEU-{}", k + 1));
    }
    err.check(scores.cider, 3.040124, "CIDEr");
    err.check(scores.rouge_l, 0.779651, "ROUGE-L");
    for (id, expected) in [("1", 4.274891), ("2", 4.232161), ("3", 0.613321)] {
        err.check(
            scores.per_image[id].cider,
            expected,
            format!("CIDEr image {id}"),
        );
    }
    // metrics.md rounds to 6 decimals (up to 5e-7 of rounding), inside the 1e-6 tolerance.
    err.assert_within(TOLERANCE);
    assert_eq!(scores.n_images, 3);
    // Already-tokenized captions pass through the PTB step unchanged.
    let retokenized = score(&hyps, &refs).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(retokenized, scores);
}

#[derive(Deserialize)]
struct Vector {
    corpus: Corpus,
    images: Vec<Image>,
}

#[derive(Deserialize)]
struct Corpus {
    bleu: [f64; 4],
    cider: f64,
    rouge_l: f64,
}

#[derive(Deserialize)]
struct Image {
    id: String,
    hypothesis: String,
    references: Vec<String>,
    hypothesis_tokenized: String,
    references_tokenized: Vec<String>,
    bleu: [f64; 4],
    cider: f64,
    rouge_l: f64,
}

fn coco_vector() -> Vector {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/metrics/coco_vector.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn check_against(vector: &Vector, scores: &Scores) {
    let mut corpus = MaxError::new("corpus");
    for k in 0..4 {
        corpus.check(
            scores.bleu[k],
            vector.corpus.bleu[k],
            format!("BLEU-{}", k + 1),
        );
    }
    corpus.check(scores.cider, vector.corpus.cider, "CIDEr");
    corpus.check(scores.rouge_l, vector.corpus.rouge_l, "ROUGE-L");
    corpus.assert_within(TOLERANCE);

    let mut cider = MaxError::new("per-image CIDEr");
    let mut rouge = MaxError::new("per-image ROUGE-L");
    let mut bleu = MaxError::new("per-image BLEU");
    for image in &vector.images {
        let got = &scores.per_image[&image.id];
        cider.check(got.cider, image.cider, &image.id);
        rouge.check(got.rouge_l, image.rouge_l, &image.id);
        for k in 0..4 {
            bleu.check(
                got.bleu[k],
                image.bleu[k],
                format!("{} BLEU-{}", image.id, k + 1),
            );
        }
    }
    cider.assert_within(TOLERANCE);
    rouge.assert_within(TOLERANCE);
    bleu.assert_within(TOLERANCE);
    assert_eq!(scores.n_images, vector.images.len());
}

#[test]
fn coco_vector_from_raw_captions() {
    let vector = coco_vector();
    let hyps = vector
        .images
        .iter()
        .map(|i| (i.id.clone(), i.hypothesis.clone()))
        .collect();
    let refs = vector
        .images
        .iter()
        .map(|i| (i.id.clone(), i.references.clone()))
        .collect();
    let scores = score(&hyps, &refs).unwrap_or_else(|e| panic!("{e}"));
    check_against(&vector, &scores);
}

#[test]
fn coco_vector_from_pycocoevalcap_tokens() {
    let vector = coco_vector();
    let hyps = vector
        .images
        .iter()
        .map(|i| (i.id.clone(), i.hypothesis_tokenized.clone()))
        .collect();
    let refs = vector
        .images
        .iter()
        .map(|i| (i.id.clone(), i.references_tokenized.clone()))
        .collect();
    let scores = score_tokenized(&hyps, &refs).unwrap_or_else(|e| panic!("{e}"));
    check_against(&vector, &scores);
}

#[test]
fn empty_and_single_word_hypotheses() {
    let refs = map_refs(&[
        ("a", &["a dog on a bed", "a dog sleeping"]),
        ("b", &["two cats", "cats on a sofa"]),
    ]);
    let scores =
        score(&map_hyps(&[("a", ""), ("b", "cats")]), &refs).unwrap_or_else(|e| panic!("{e}"));
    let a = &scores.per_image["a"];
    assert_eq!((a.cider, a.rouge_l), (0.0, 0.0));
    assert!(a.bleu.iter().all(|&b| b == 0.0), "{:?}", a.bleu);
    let b = &scores.per_image["b"];
    assert!(b.cider > 0.0 && b.rouge_l > 0.0);
    // One word: a unigram match, no higher-order n-grams to guess.
    assert!(b.bleu[0] > 0.0 && b.bleu[3] < 1e-3, "{:?}", b.bleu);
    assert!(scores.bleu.iter().all(|b| b.is_finite()));
}

#[test]
fn id_mismatches_are_errors_naming_ids() {
    let refs = map_refs(&[("1", &["a dog"]), ("2", &["a cat"])]);
    let err = score(&map_hyps(&[("1", "a dog"), ("9", "x")]), &refs).err();
    match err {
        Some(MetricsError::MissingReferences {
            count: 1,
            ref examples,
        }) => assert!(examples.contains("\"9\"")),
        other => panic!("{other:?}"),
    }
    let err = score(&map_hyps(&[("1", "a dog")]), &refs).err();
    match err {
        Some(MetricsError::MissingHypotheses {
            count: 1,
            ref examples,
        }) => assert!(examples.contains("\"2\"")),
        other => panic!("{other:?}"),
    }
    let many: Vec<(String, String)> = (0..8).map(|i| (format!("h{i}"), "x".to_string())).collect();
    let err = score(&many.into_iter().collect(), &BTreeMap::new())
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|m| m.starts_with("8 image id(s)") && m.contains("and 3 more")),
        "{err:?}"
    );
}

#[test]
fn empty_sets_and_empty_reference_lists_are_errors() {
    assert!(matches!(
        score(&BTreeMap::new(), &BTreeMap::new()),
        Err(MetricsError::Empty)
    ));
    let refs = map_refs(&[("1", &[])]);
    assert!(matches!(
        score(&map_hyps(&[("1", "a dog")]), &refs),
        Err(MetricsError::NoReferences { .. })
    ));
}

#[test]
fn scores_serialize() {
    let refs = map_refs(&[("1", &["a dog"])]);
    let scores = score(&map_hyps(&[("1", "a dog")]), &refs).unwrap_or_else(|e| panic!("{e}"));
    let json = serde_json::to_value(&scores).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["n_images"], 1);
    assert!(json["per_image"]["1"]["cider"].is_number());
}
