//! Timing one (batch size, beams) record: warm-up, then the vision encoder alone, the prefill and
//! every decode step, and whole batches end to end. Every clock is read after `synchronize`, so GPU
//! times are the device's, not the launch queue's.
//!
//! The prefill and decode-step timings drive the decoder through the model seam
//! (`models::family::Decoder::next_token_logits` over the KV cache), as one step of `generate`
//! does (eagerly: `generate` replays recorded steps on CUDA, see `generate::graphed`); the search's own
//! bookkeeping (beam ranking, finished-row removal) is not in them, but it is in
//! `decode_step_in_generate_ms`, derived from the whole `generate` time.

use std::time::Instant;

use candle_core::{Tensor, D};

use super::document::{Record, Summary};
use super::engine::BenchModel;
use super::BenchError;
use crate::device::Target;
use crate::models::blip::{BlipForConditionalGeneration, CrossAttentionKv};
use crate::models::family::Decoder;
use crate::models::kv_cache::KvCache;
use crate::report::memory::GpuMemoryMonitor;

/// How many untimed and timed repetitions each phase gets.
#[derive(Debug, Clone, Copy)]
pub struct Repetitions {
    pub warmup: usize,
    pub iterations: usize,
}

/// Measures one record on a batch of `pixels` (preprocessed CHW images, one per batch element).
pub fn measure_record(
    bench: &BenchModel,
    pixels: &[Vec<f32>],
    num_beams: usize,
    reps: Repetitions,
) -> Result<Record, BenchError> {
    let batch_size = pixels.len();
    let iterations = reps.iterations.max(1);
    let monitor = match &bench.active().plan.target {
        Target::Cuda { index, .. } => Some(GpuMemoryMonitor::start(*index)),
        Target::Cpu => None,
    };

    for _ in 0..reps.warmup {
        end_to_end(bench, pixels, num_beams)?;
    }

    let on_device = bench.upload(pixels)?;
    let mut vision_ms = Vec::with_capacity(iterations);
    let mut embeds = None;
    for _ in 0..iterations {
        let (ms, value) = timed(bench, || {
            bench
                .model()
                .image_embeds(&on_device)
                .map_err(BenchError::compute("the vision encoder"))
        })?;
        vision_ms.push(ms);
        embeds = Some(value);
    }
    let embeds = embeds.ok_or_else(|| BenchError::Internal("no vision run".into()))?;

    let mut prefill_ms = Vec::with_capacity(iterations);
    let mut step_ms = Vec::new();
    for _ in 0..iterations {
        let (prefill, steps) = prefill_and_steps(bench, &embeds, num_beams)?;
        prefill_ms.push(prefill);
        step_ms.extend(steps);
    }

    let mut generate_ms = Vec::with_capacity(iterations);
    let mut latency_ms = Vec::with_capacity(iterations);
    let mut upload_ms = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let timing = end_to_end(bench, pixels, num_beams)?;
        generate_ms.push(timing.generate_ms);
        latency_ms.push(timing.total_ms);
        upload_ms.push(timing.upload_ms);
    }
    let peak_gpu_bytes = monitor.and_then(GpuMemoryMonitor::finish);

    let median = |values: &[f64]| Summary::of(values).map(|s| s.p50);
    let vision = median(&vision_ms);
    let prefill = median(&prefill_ms);
    let generate = Summary::of(&generate_ms);
    let latency = Summary::of(&latency_ms)
        .ok_or_else(|| BenchError::Internal("no end-to-end sample".into()))?;
    let tokens = bench.generated_tokens();
    let decode_step_in_generate_ms = match (generate, vision, prefill) {
        (Some(generate), Some(vision), Some(prefill)) if tokens > 1 => {
            Some(((generate.p50 - vision - prefill) / (tokens - 1) as f64).max(0.0))
        }
        _ => None,
    };
    let per_second = |count: f64, ms: f64| if ms > 0.0 { count * 1e3 / ms } else { 0.0 };
    Ok(Record {
        batch_size,
        num_beams,
        generated_tokens: tokens,
        vision_ms: vision,
        vision_images_per_s: vision.map(|ms| per_second(batch_size as f64, ms)),
        prefill_ms: prefill,
        decode_step_ms: median(&step_ms),
        decode_step_in_generate_ms,
        generate_ms: generate,
        upload_ms: median(&upload_ms),
        images_per_s: per_second(batch_size as f64, latency.p50),
        generated_tokens_per_s: per_second((batch_size * tokens) as f64, latency.p50),
        latency_ms: latency,
        peak_gpu_bytes,
    })
}

/// Runs `work` between two synchronisations; its milliseconds and result.
fn timed<T>(
    bench: &BenchModel,
    work: impl FnOnce() -> Result<T, BenchError>,
) -> Result<(f64, T), BenchError> {
    bench.synchronize()?;
    let started = Instant::now();
    let value = work()?;
    bench.synchronize()?;
    Ok((started.elapsed().as_secs_f64() * 1e3, value))
}

struct EndToEnd {
    upload_ms: f64,
    generate_ms: f64,
    total_ms: f64,
}

/// Host pixels -> upload -> forced-length generate -> caption text.
fn end_to_end(
    bench: &BenchModel,
    pixels: &[Vec<f32>],
    num_beams: usize,
) -> Result<EndToEnd, BenchError> {
    bench.synchronize()?;
    let started = Instant::now();
    let batch = bench.upload(pixels)?;
    bench.synchronize()?;
    let upload_ms = started.elapsed().as_secs_f64() * 1e3;
    let generate_started = Instant::now();
    let sequences = bench.generate_forced(&batch, num_beams)?;
    bench.synchronize()?;
    let generate_ms = generate_started.elapsed().as_secs_f64() * 1e3;
    let captions = bench.decode(&sequences)?;
    std::hint::black_box(captions);
    Ok(EndToEnd {
        upload_ms,
        generate_ms,
        total_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// One prefill over the prompt for every image, then `generated_tokens - 1` single-token steps over
/// `images x num_beams` rows, each timed. Returns (prefill ms, step ms).
fn prefill_and_steps(
    bench: &BenchModel,
    embeds: &Tensor,
    num_beams: usize,
) -> Result<(f64, Vec<f64>), BenchError> {
    let model = bench.model();
    let device = model.device();
    let prompt = bench.prompt();
    let images = embeds
        .dim(0)
        .map_err(BenchError::compute("reading the batch size"))?;

    let (prefill_ms, (image_kv, mut cache, first)) = timed(bench, || {
        prefill(model, embeds, prompt, bench.forced_length())
            .map_err(BenchError::compute("the prefill"))
    })?;

    // Beam search continues from num_beams copies of each image's row.
    let expand: Vec<u32> = (0..images as u32)
        .flat_map(|i| std::iter::repeat_n(i, num_beams))
        .collect();
    let expand = Tensor::new(expand.as_slice(), device).map_err(BenchError::compute("beams"))?;
    cache
        .select_rows(&expand)
        .map_err(BenchError::compute("expanding the cache to the beams"))?;
    let mut next = first
        .index_select(&expand, 0)
        .map_err(BenchError::compute("expanding the tokens to the beams"))?;

    let steps = bench.generated_tokens().saturating_sub(1);
    let mut step_ms = Vec::with_capacity(steps);
    for _ in 0..steps {
        let (ms, token) = timed(bench, || {
            decode_step(model, &next, &image_kv, &mut cache)
                .map_err(BenchError::compute("a decode step"))
        })?;
        step_ms.push(ms);
        next = token;
    }
    Ok((prefill_ms, step_ms))
}

/// Cross-attention keys/values, an empty cache, the decoder over the prompt on every image's row, and
/// the first token (argmax of f32 logits, read back to the host as `generate` does).
fn prefill(
    model: &BlipForConditionalGeneration,
    embeds: &Tensor,
    prompt: &[u32],
    capacity: usize,
) -> candle_core::Result<(CrossAttentionKv, KvCache, Tensor)> {
    let images = embeds.dim(0)?;
    let image_kv = model.text_decoder().image_kv(embeds)?;
    let mut cache = model.new_cache(images, capacity)?;
    let input = Tensor::new(prompt, model.device())?
        .unsqueeze(0)?
        .repeat((images, 1))?;
    let next = read_back_argmax(&model.next_token_logits(&input, &image_kv, &mut cache)?)?;
    Ok((image_kv, cache, next))
}

/// One token for every row through the model seam (the step `generate` takes): decoder with the
/// cache, f32 logits, argmax read back. Returns the tokens.
fn decode_step<M: Decoder>(
    model: &M,
    tokens: &Tensor,
    context: &M::Context,
    cache: &mut KvCache,
) -> candle_core::Result<Tensor> {
    read_back_argmax(&model.next_token_logits(&tokens.unsqueeze(1)?, context, cache)?)
}

/// The argmax of each row of f32 `logits`, also read back to the host (as search does each step).
fn read_back_argmax(logits: &Tensor) -> candle_core::Result<Tensor> {
    let next = logits.argmax(D::Minus1)?;
    std::hint::black_box(next.to_vec1::<u32>()?);
    Ok(next)
}
