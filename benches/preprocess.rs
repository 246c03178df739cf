//! CPU preprocessing of one 640x480 image: Pillow-exact bicubic resize + normalize to 384x384 (BLIP's
//! input), and JPEG decode + resize + normalize. The image is the bench's deterministic synthetic one.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;

use vlmrun::bench::synthetic;
use vlmrun::preprocess::ImageProcessor;

fn preprocess(c: &mut Criterion) {
    let processor = ImageProcessor::blip(384);
    let image = synthetic::synthetic_image();
    let jpeg = synthetic::synthetic_jpeg().expect("encoding the synthetic JPEG");
    let mut group = c.benchmark_group("preprocess 640x480 -> 384x384");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("resize + normalize", |b| {
        b.iter(|| processor.process_rgb(black_box(&image)))
    });
    group.bench_function("JPEG decode + resize + normalize", |b| {
        b.iter(|| synthetic::preprocess_once(&processor, black_box(&jpeg)).expect("preprocess"))
    });
    group.finish();
}

criterion_group!(benches, preprocess);
criterion_main!(benches);
