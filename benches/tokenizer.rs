//! The BLIP tokenizer (models/tokenizer/tokenizer.json): prompt ids of the LAVIS prompt, and decoding a
//! 20-token caption with special tokens skipped.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;

use vlmrun::preprocess::prompt::PromptTokenizer;

fn tokenizer(c: &mut Criterion) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/tokenizer/tokenizer.json"
    );
    let tokenizer = PromptTokenizer::from_file(path).expect("models/tokenizer/tokenizer.json");
    let prompt = "a picture of ";
    let mut caption = tokenizer.prompt_ids(prompt).expect("prompt ids");
    // bos, the prompt, then ordinary word pieces up to 20 tokens, then [SEP].
    caption.extend(
        (2000u32..)
            .step_by(37)
            .take(20usize.saturating_sub(caption.len())),
    );
    caption.push(102);
    let mut group = c.benchmark_group("tokenizer");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("prompt ids", |b| {
        b.iter(|| tokenizer.prompt_ids(black_box(prompt)).expect("prompt ids"))
    });
    group.bench_function("decode 21 ids", |b| {
        b.iter(|| tokenizer.decode(black_box(&caption)).expect("decode"))
    });
    group.finish();
}

criterion_group!(benches, tokenizer);
criterion_main!(benches);
