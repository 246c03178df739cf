//! Runs one variant over the fidelity images: loads it through the captioner (so f16 overflow
//! recomputation and quantization behave as in `caption`), records the first-step logits and the
//! sequences of every decoding setting, its weight bytes and its peak GPU memory.

use std::time::Instant;

use candle_core::{DType, Tensor};

use super::variant::Variant;
use crate::config::Config;
use crate::device::{ActiveDevice, Target};
use crate::engine::Captioner;
use crate::error::Error;
use crate::preprocess::batch_tensor_as;
use crate::report::memory::GpuMemoryMonitor;

/// What one variant produced.
#[derive(Debug, Clone)]
pub struct VariantOutputs {
    /// Per decoding setting (in the order asked), per image: the whole sequence.
    pub sequences: Vec<Vec<Vec<u32>>>,
    /// Per image: f32 logits of the first generated token (decoder input: bos + prompt).
    pub step1_logits: Vec<Vec<f32>>,
    /// The decoder start length (bos + prompt).
    pub start_len: usize,
    /// Projection weights as stored plus every other checkpoint tensor in the activation dtype.
    pub weight_bytes: u64,
    /// Peak GPU memory of the process while this variant ran (CUDA, NVML), bytes.
    pub peak_gpu_bytes: Option<u64>,
    pub gpu_bytes_before_load: Option<u64>,
    pub load_seconds: f64,
    pub run_seconds: f64,
}

/// Runs `variant` on `images` (preprocessed CHW f32) in batches of `batch_size`, decoding with
/// each of `beams`. `checkpoint_elements`: parameters in the model's checkpoint.
pub fn run_variant(
    config: &Config,
    active: &ActiveDevice,
    variant: &Variant,
    images: &[Vec<f32>],
    beams: &[usize],
    batch_size: usize,
    checkpoint_elements: usize,
) -> Result<VariantOutputs, Error> {
    // The stream-ordered pool hands what the previous variant freed back to the driver at a
    // synchronisation: do one, so that the memory before this variant is its baseline alone.
    active
        .device
        .synchronize()
        .map_err(|err| Error::Internal(format!("device synchronise: {err}")))?;
    let monitor = match &active.plan.target {
        Target::Cuda { index, .. } => Some(GpuMemoryMonitor::start(*index)),
        Target::Cpu => None,
    };
    let mut config = config.clone();
    config.quantization = variant.quantization;
    let mut active = active.clone();
    active.precision.dtype = variant.dtype;
    active.precision.reason = format!("fidelity variant {}", variant.label);

    let started = Instant::now();
    let mut captioner = Captioner::load(&config, &active)?;
    let compute = |what: &str| {
        let label = variant.label.clone();
        let what = what.to_string();
        move |err: candle_core::Error| Error::Internal(format!("{label}: {what}: {err}"))
    };
    if let Some(policy) = variant.matmul {
        captioner
            .model_mut()
            .set_quantized_matmul(policy)
            .map_err(compute("setting the quantized matmul"))?;
    }
    let (projection_elements, projection_bytes) = captioner
        .model_mut()
        .projection_weights()
        .map_err(compute("counting weights"))?;
    let other_elements = checkpoint_elements.saturating_sub(projection_elements);
    let weight_bytes = (projection_bytes + other_elements * variant.dtype.size_in_bytes()) as u64;
    let load_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let batch_size = batch_size.max(1);
    let start = captioner.decoder_start();
    let mut step1_logits = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch_size) {
        let logits =
            first_step_logits(&captioner, chunk, &start).map_err(compute("first-step logits"))?;
        step1_logits.extend(logits);
    }
    let mut sequences = Vec::with_capacity(beams.len());
    for &num_beams in beams {
        captioner.set_num_beams(num_beams);
        let mut per_image = Vec::with_capacity(images.len());
        for (k, chunk) in images.chunks(batch_size).enumerate() {
            let label = format!("{} of variant {}", k + 1, variant.label);
            let captions = captioner.caption_batch(chunk, &label)?;
            per_image.extend(captions.into_iter().map(|c| c.token_ids));
        }
        sequences.push(per_image);
    }
    active
        .device
        .synchronize()
        .map_err(compute("device synchronise"))?;
    Ok(VariantOutputs {
        sequences,
        step1_logits,
        start_len: start.len(),
        weight_bytes,
        gpu_bytes_before_load: monitor.as_ref().and_then(GpuMemoryMonitor::start_bytes),
        peak_gpu_bytes: monitor.and_then(GpuMemoryMonitor::finish),
        load_seconds,
        run_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Teacher-forced logits of the last decoder-start position for each image, f32 `(B, V)` rows.
fn first_step_logits(
    captioner: &Captioner,
    pixels: &[Vec<f32>],
    start: &[u32],
) -> candle_core::Result<Vec<Vec<f32>>> {
    let model = captioner.model();
    let device = model.device();
    let batch = batch_tensor_as(pixels, captioner.image_size(), device, model.dtype())?;
    let rows: Vec<u32> = start
        .iter()
        .copied()
        .cycle()
        .take(start.len() * pixels.len())
        .collect();
    let ids = Tensor::from_vec(rows, (pixels.len(), start.len()), device)?;
    let logits = model.forward(&batch, &ids)?;
    logits
        .narrow(1, start.len().saturating_sub(1), 1)?
        .squeeze(1)?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()
}
