//! One forward pass of the tiny random-weight BLIP (models/tiny-blip) on the CPU in f32: the vision
//! encoder on one 64x64 image plus one decoder step over [bos] to logits (HF `model(pixel_values,
//! input_ids)`), and the vision encoder alone.

use std::hint::black_box;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};

use vlmrun::bench::synthetic;
use vlmrun::models::blip::load_model;
use vlmrun::preprocess::{batch_tensor, ImageProcessor};

fn tiny_forward(c: &mut Criterion) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tiny-blip");
    let device = Device::Cpu;
    let model =
        load_model(std::path::Path::new(dir), DType::F32, &device).expect("models/tiny-blip");
    let size = model.config().vision_config.image_size;
    let processor = ImageProcessor::blip(size);
    let jpeg = synthetic::synthetic_jpeg().expect("synthetic JPEG");
    let pixels = synthetic::preprocess_once(&processor, &jpeg).expect("preprocess");
    let batch = batch_tensor(&[pixels], size, &device).expect("pixel batch");
    let bos = model.config().text_config.bos_token_id;
    let input_ids = Tensor::new(&[[bos]], &device).expect("input ids");

    let mut group = c.benchmark_group("tiny BLIP forward, CPU f32, batch 1");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("vision encoder", |b| {
        b.iter(|| model.image_embeds(black_box(&batch)).expect("vision"))
    });
    group.bench_function("vision + one decode step (logits)", |b| {
        b.iter(|| {
            model
                .forward(black_box(&batch), black_box(&input_ids))
                .expect("forward")
        })
    });
    group.finish();
}

criterion_group!(benches, tiny_forward);
criterion_main!(benches);
