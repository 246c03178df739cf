//! The configuration's settings as the model code takes them: the image processor
//! (`preprocess.*`), the generation settings (`generation.*` with the model's special ids) and the
//! GGML format of `quantization` (and the projections' loader it asks for).

use candle_core::quantized::GgmlDType;

use crate::config::{Config, Quantization, ResizePassOrder};
use crate::generate::GenerationConfig;
use crate::models::blip::BlipConfig;
use crate::preprocess::{ImageProcessor, PassOrder};

/// The image processor `config.preprocess` describes, for a model with `image_size` inputs.
pub fn image_processor(config: &Config, image_size: usize) -> ImageProcessor {
    let mut processor = ImageProcessor::blip(image_size);
    processor.max_pixels = config.preprocess.max_pixels;
    processor.pass_order = match config.preprocess.resize_pass_order {
        ResizePassOrder::Pillow12 => PassOrder::HorizontalFirst,
        ResizePassOrder::Pillow13 => PassOrder::Pillow13,
        ResizePassOrder::Pillow121 => PassOrder::AlwaysHorizontal,
    };
    processor
}

/// The generation settings of `config.generation` with the model's special ids.
pub fn generation_config(config: &Config, model: &BlipConfig) -> GenerationConfig {
    let settings = &config.generation;
    let text_config = &model.text_config;
    // BLIP captioning stops on [SEP] (sep_token_id), not on the config's eos_token_id (2).
    GenerationConfig {
        max_length: settings.max_length,
        min_length: settings.min_length,
        num_beams: settings.num_beams,
        length_penalty: settings.length_penalty,
        repetition_penalty: settings.repetition_penalty,
        bos: text_config.bos_token_id,
        eos: text_config.sep_token_id,
        pad: text_config.pad_token_id,
    }
}

/// The lengths the model and the prompt allow: `generation.max_length` within the text decoder's
/// positions, and room under it for at least one generated token after bos and the prompt. Returns
/// the key at fault and what it must be (a configuration error, exit 2).
pub fn check_lengths(
    config: &Config,
    model: &BlipConfig,
    prompt_tokens: usize,
) -> Result<(), (&'static str, String)> {
    let max_length = config.generation.max_length;
    let positions = model.text_config.max_position_embeddings;
    if max_length > positions {
        return Err((
            "generation.max_length",
            format!("is {max_length}; this model's text decoder has {positions} positions, so it must be 2 to {positions}"),
        ));
    }
    if 1 + prompt_tokens >= max_length {
        return Err((
            "generation.prompt",
            format!(
                "is {prompt_tokens} tokens; with bos that leaves no room to generate under generation.max_length={max_length} (shorten the prompt, or raise generation.max_length above {})",
                1 + prompt_tokens
            ),
        ));
    }
    Ok(())
}

/// The GGML format a `quantization` setting asks for, `None` for dense weights.
pub fn quantization_format(quantization: Quantization) -> Option<GgmlDType> {
    match quantization {
        Quantization::None => None,
        Quantization::Q8_0 => Some(GgmlDType::Q8_0),
        Quantization::Q4_0 => Some(GgmlDType::Q4_0),
        Quantization::Q4k => Some(GgmlDType::Q4K),
        Quantization::Q6k => Some(GgmlDType::Q6K),
    }
}

/// The projections' loader for `config.quantization` over the checkpoint `vb`: dense, or quantized
/// at load (read on the CPU in f32, quantized there, placed on the device quantized) as the
/// captioner's weights are (`BlipWeights::load_with`).
pub fn projection_loader<'a>(
    config: &Config,
    vb: &candle_nn::VarBuilder<'a>,
) -> crate::models::projections::ProjectionLoader<'a> {
    use crate::models::projections::ProjectionLoader;
    match quantization_format(config.quantization) {
        None => ProjectionLoader::dense(),
        Some(target) => ProjectionLoader::quantizing(
            target,
            vb.clone()
                .set_device(candle_core::Device::Cpu)
                .set_dtype(candle_core::DType::F32),
        ),
    }
}

/// Logs what quantizing did (nothing for dense weights).
pub fn log_quantization(
    config: &Config,
    what: &str,
    projections: &crate::models::projections::ProjectionLoader,
) {
    if config.quantization == Quantization::None {
        return;
    }
    let summary = projections.summary();
    tracing::info!(
        "{what}: quantized {} projections to {}: weights {} -> {} bytes ({} in a fallback format, {} kept dense)",
        summary.quantized_layers,
        config.quantization,
        summary.dense_bytes,
        summary.quantized_bytes,
        summary.fallbacks.len(),
        summary.kept_dense.len()
    );
}
