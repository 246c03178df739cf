//! LAVIS's retrieval evaluation (`compute_sim_matrix` + `itm_eval`) on the tiny random ITM model
//! against the reference of the same formula in tests/fixtures/make_retrieval_fixtures.py
//! (transformers 5.17 modules, pinned): 4 images x 9 captions, LAVIS's pre_caption, texts
//! truncated to 12 tokens, ITM with `[ENC]` first. Token ids identical; the ITC matrix within 1e-5;
//! the re-ranked matrices (top k_test = 3, and k_test >= every row: all entries) within 1e-4 with
//! the same -100 entries; recall@1/5/10 both ways identical.

use std::path::PathBuf;

use serde::Deserialize;
use vlmrun::config::{Config, DeviceSpec, PrecisionSpec};
use vlmrun::device::{self, CudaAvailability, SystemFacts};
use vlmrun::engine::retrieval::{ItmFirstToken, RetrievalIndex};
use vlmrun::engine::Matcher;
use vlmrun::metrics::retrieval::{recall, RetrievalMetrics, OUTSIDE_TOP_K};
use vlmrun::preprocess::lavis_text::pre_caption;

#[derive(Deserialize)]
struct Annotation {
    image: String,
    caption: Vec<String>,
}

#[derive(Deserialize)]
struct Run {
    k_test: usize,
    i2t: Vec<Vec<f32>>,
    t2i: Vec<Vec<f32>>,
    metrics: RetrievalMetrics,
}

#[derive(Deserialize)]
struct Expected {
    max_text_tokens: usize,
    texts: Vec<String>,
    text_ids: Vec<Vec<u32>>,
    attention_mask: Vec<Vec<u32>>,
    txt2img: Vec<usize>,
    img2txt: Vec<Vec<usize>>,
    itc: Vec<Vec<f32>>,
    runs: Vec<Run>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn close(got: &[Vec<f32>], want: &[Vec<f32>], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what} rows");
    for (r, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what} row {r}");
        for (c, (a, b)) in g.iter().zip(w).enumerate() {
            if *b == OUTSIDE_TOP_K {
                assert_eq!(
                    *a, OUTSIDE_TOP_K,
                    "{what}[{r}][{c}] should be outside the top k"
                );
            } else {
                assert!((a - b).abs() < tol, "{what}[{r}][{c}]: {a} vs {b}");
            }
        }
    }
}

#[test]
fn retrieval_scores_and_recall_match_the_lavis_formula() {
    let root = repo();
    let dir = root.join("tests/fixtures/retrieval");
    let expected: Expected =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let annotation: Vec<Annotation> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("test.json")).unwrap()).unwrap();

    let mut config = Config::default();
    config.model.source = root.join("models/tiny-blip-itm").display().to_string();
    let active = device::activate_quietly(
        DeviceSpec::Cpu,
        PrecisionSpec::F32,
        &SystemFacts::no_driver("test"),
        &CudaAvailability::NotCompiled,
    )
    .unwrap();
    let matcher = Matcher::load(&config, &active).unwrap();

    let texts: Vec<String> = annotation
        .iter()
        .flat_map(|a| a.caption.iter().map(|c| pre_caption(c, 50)))
        .collect();
    assert_eq!(texts, expected.texts);
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| {
            matcher
                .truncated_text_ids(t, expected.max_text_tokens)
                .unwrap()
        })
        .collect();
    for (i, (got, (want, mask))) in ids
        .iter()
        .zip(expected.text_ids.iter().zip(&expected.attention_mask))
        .enumerate()
    {
        let real: Vec<u32> = want
            .iter()
            .zip(mask)
            .filter(|(_, &m)| m == 1)
            .map(|(&t, _)| t)
            .collect();
        assert_eq!(got, &real, "text {i}");
    }

    let processor = matcher.processor().clone();
    let pixels: Vec<Vec<f32>> = annotation
        .iter()
        .map(|a| {
            processor
                .process_file(&root.join("tests/fixtures/images").join(&a.image))
                .unwrap()
        })
        .collect();
    let mut index = RetrievalIndex::new();
    // Two image batches and two text batches: the order of the rows must survive batching.
    index.add_images(&matcher, &pixels[..3]).unwrap();
    index.add_images(&matcher, &pixels[3..]).unwrap();
    index.add_texts(&matcher, ids[..5].to_vec()).unwrap();
    index.add_texts(&matcher, ids[5..].to_vec()).unwrap();
    close(&index.similarity(), &expected.itc, 1e-5, "itc");

    for run in &expected.runs {
        let mut calls = 0usize;
        // ITM batch 2: rows of one image or text span several forward passes.
        let scores = index
            .scores(&matcher, run.k_test, ItmFirstToken::Enc, 2, &mut |_, _| {
                calls += 1
            })
            .unwrap();
        assert_eq!(calls, 4 + 9);
        close(
            &scores.i2t,
            &run.i2t,
            1e-4,
            &format!("i2t k={}", run.k_test),
        );
        close(
            &scores.t2i,
            &run.t2i,
            1e-4,
            &format!("t2i k={}", run.k_test),
        );
        let k = run.k_test;
        assert_eq!(scores.itm_pairs, 4 * k.min(9) + 9 * k.min(4));
        let metrics = recall(
            &scores.i2t,
            &scores.t2i,
            &expected.img2txt,
            &expected.txt2img,
        );
        assert_eq!(metrics, run.metrics, "k_test {k}");
    }
}
