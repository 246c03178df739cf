//! Evaluation during training: caption the held-out images with the current weights (inference
//! path, fused kernels on CUDA) and score them as `baseline` does (`metrics::score_captions`).

use std::collections::BTreeMap;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::params::TrainParams;
use crate::data::dataset::Item;
use crate::error::Error;
use crate::generate::{generate, GenerationConfig};
use crate::metrics::{score_captions, strip_prompt};
use crate::models::blip::{BlipConfig, BlipForConditionalGeneration};
use crate::preprocess::prompt::PromptTokenizer;
use crate::preprocess::{batch_tensor_as, ImageProcessor};

/// The held-out images, preprocessed once, and how to caption them.
pub struct Evaluator {
    ids: Vec<String>,
    pixels: Vec<Vec<f32>>,
    references: BTreeMap<String, Vec<String>>,
    image_size: usize,
    prompt: String,
    prompt_ids: Vec<u32>,
    generation: GenerationConfig,
    batch_size: usize,
}

/// What one evaluation found.
pub struct Evaluation {
    /// `BLEU-4`, `CIDEr`, `ROUGE-L`.
    pub metrics: BTreeMap<String, f64>,
    /// Caption (prompt stripped) by image id.
    pub captions: BTreeMap<String, String>,
}

/// The metric that decides the best checkpoint.
pub const BEST_METRIC: &str = "CIDEr";

impl Evaluator {
    /// Preprocesses `items` (an unreadable held-out image is an input error: the evaluation
    /// would silently change otherwise).
    pub fn new(
        items: &[Item],
        processor: &ImageProcessor,
        tokenizer: &PromptTokenizer,
        prompt: &str,
        generation: GenerationConfig,
        batch_size: usize,
    ) -> Result<Self, Error> {
        let mut ids = Vec::with_capacity(items.len());
        let mut pixels = Vec::with_capacity(items.len());
        let mut references = BTreeMap::new();
        for item in items.iter().filter(|i| !i.references.is_empty()) {
            let image = processor.process_file(&item.image).map_err(|err| {
                Error::Input(format!(
                    "held-out image {}: {err}\n  fix: replace it, or lower train.eval_images",
                    item.image.display()
                ))
            })?;
            ids.push(item.id.clone());
            pixels.push(image);
            references.insert(item.id.clone(), item.references.clone());
        }
        if ids.is_empty() {
            return Err(Error::Input(
                "the held-out images (train.eval_images) have no reference captions to score against\n  fix: use a dataset with references, or set train.eval_images: 0".into(),
            ));
        }
        let prompt_ids = tokenizer
            .prompt_ids(prompt)
            .map_err(|err| Error::Usage(format!("train.prompt: {err}")))?;
        Ok(Self {
            ids,
            pixels,
            references,
            image_size: processor.size,
            prompt: prompt.to_string(),
            prompt_ids,
            generation,
            batch_size: batch_size.max(1),
        })
    }

    pub fn images(&self) -> usize {
        self.ids.len()
    }

    /// Captions every held-out image with `params` in `dtype` and scores the captions.
    pub fn evaluate(
        &self,
        params: &TrainParams,
        config: &BlipConfig,
        dtype: DType,
        device: &Device,
        tokenizer: &PromptTokenizer,
    ) -> Result<Evaluation, Error> {
        let internal = |what: &str| {
            let what = what.to_string();
            move |err: candle_core::Error| Error::Internal(format!("evaluation, {what}: {err}"))
        };
        let detached = params
            .model_tensors()
            .into_iter()
            .map(|(name, tensor)| (name, tensor.detach()))
            .collect();
        let vb = VarBuilder::from_tensors(detached, dtype, device);
        let model = BlipForConditionalGeneration::new(config, vb)
            .map_err(internal("building the model"))?;
        let mut decoded = Vec::with_capacity(self.ids.len());
        for (ids, pixels) in self
            .ids
            .chunks(self.batch_size)
            .zip(self.pixels.chunks(self.batch_size))
        {
            let batch = batch_tensor_as(pixels, self.image_size, device, dtype)
                .map_err(internal("uploading images"))?;
            let sequences = generate(&model, &batch, &self.prompt_ids, &self.generation)
                .map_err(|err| Error::Internal(format!("evaluation, generating: {err}")))?;
            for (id, tokens) in ids.iter().zip(sequences) {
                let text = tokenizer
                    .decode(&tokens)
                    .map_err(|err| Error::Internal(format!("evaluation, decoding: {err}")))?;
                decoded.push((id.clone(), text));
            }
        }
        let captions = decoded
            .iter()
            .map(|(id, text)| (id.as_str(), text.as_str()));
        let scores = score_captions(captions, &self.references, &self.prompt)
            .map_err(|err| Error::Internal(format!("evaluation, scoring: {err}")))?;
        let hypotheses = decoded
            .iter()
            .map(|(id, text)| (id.clone(), strip_prompt(text, &self.prompt)))
            .collect();
        let mut values = BTreeMap::new();
        values.insert("BLEU-4".to_string(), scores.bleu[3]);
        values.insert(BEST_METRIC.to_string(), scores.cider);
        values.insert("ROUGE-L".to_string(), scores.rouge_l);
        Ok(Evaluation {
            metrics: values,
            captions: hypotheses,
        })
    }
}
