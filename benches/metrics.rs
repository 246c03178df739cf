//! COCO caption metrics (PTB tokenization, BLEU-1..4, CIDEr-D, ROUGE-L) on 5000 captions with 5
//! references each, made up deterministically from a small vocabulary (a Karpathy test split's size).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};

const WORDS: [&str; 40] = [
    "a", "man", "woman", "dog", "cat", "riding", "sitting", "on", "in", "the", "with", "of",
    "bike", "horse", "table", "red", "blue", "large", "small", "street", "park", "next", "to",
    "holding", "plate", "food", "two", "people", "standing", "field", "grass", "white", "black",
    "train", "water", "boat", "near", "building", "tall", "young",
];

/// A caption of 8 to 15 words chosen by a linear congruential sequence from `seed`.
fn caption(seed: u64) -> String {
    let mut state = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    let length = 8 + next() % 8;
    let mut text: Vec<&str> = (0..length).map(|_| WORDS[next() % WORDS.len()]).collect();
    if next() % 3 == 0 {
        text.push(".");
    }
    text.join(" ")
}

fn metrics(c: &mut Criterion) {
    let images = 5000u64;
    let hypotheses: BTreeMap<String, String> = (0..images)
        .map(|i| (format!("{i:05}"), caption(i * 7 + 1)))
        .collect();
    let references: BTreeMap<String, Vec<String>> = (0..images)
        .map(|i| {
            (
                format!("{i:05}"),
                (0..5).map(|r| caption(i * 7 + 2 + r)).collect(),
            )
        })
        .collect();
    let mut group = c.benchmark_group("metrics 5000 captions x 5 references");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("score (PTB + BLEU + CIDEr-D + ROUGE-L)", |b| {
        b.iter(|| {
            vlmrun::metrics::score(black_box(&hypotheses), black_box(&references)).expect("score")
        })
    });
    group.finish();
}

criterion_group!(benches, metrics);
criterion_main!(benches);
