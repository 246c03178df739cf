//! Model inputs for training batches: tokenized captions (once, at start) and preprocessed
//! pixels (kept in memory when the image set is small, otherwise decoded per batch), on the
//! device in the compute dtype.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::data::Sample;
use super::loss::CaptionBatch;
use crate::preprocess::prompt::{CaptionIds, PromptTokenizer};
use crate::preprocess::upload::BatchUploader;
use crate::preprocess::ImageProcessor;

/// Preprocessed images are kept in memory when all of them fit in this many bytes.
const PIXEL_CACHE_BYTES: usize = 1 << 30;

/// Why inputs could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("tokenizing the caption {caption:?} of {id}: {detail}")]
    Tokenize {
        id: String,
        caption: String,
        detail: String,
    },
    #[error("image {}: {detail}\n  fix: remove or replace the file (the last checkpoint is kept; rerun with --resume)", path.display())]
    Image { path: PathBuf, detail: String },
    #[error("building the batch: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Everything needed to turn sample indices into model inputs.
pub struct InputBuilder {
    samples: Vec<Sample>,
    captions: Vec<CaptionIds>,
    processor: ImageProcessor,
    uploader: BatchUploader,
    /// Preprocessed pixels by image path, when the whole set fits [`PIXEL_CACHE_BYTES`].
    cache: Option<HashMap<PathBuf, Arc<Vec<f32>>>>,
}

/// Images that could not be decoded while filling the cache, with the reason.
pub type Unreadable = Vec<(PathBuf, String)>;

impl InputBuilder {
    /// Tokenizes every caption (`prompt` + caption, at most `max_tokens` ids) and, for a small
    /// image set, preprocesses every image now. Samples whose image cannot be read are dropped
    /// and returned, so the caller can report them (and refuse a run left with none).
    pub fn new(
        samples: Vec<Sample>,
        tokenizer: &PromptTokenizer,
        prompt: &str,
        max_tokens: usize,
        processor: ImageProcessor,
    ) -> Result<(Self, Unreadable), InputError> {
        let mut distinct: Vec<&Path> = samples.iter().map(|s| s.image.as_path()).collect();
        distinct.sort();
        distinct.dedup();
        let pixel_bytes = 3 * processor.size * processor.size * std::mem::size_of::<f32>();
        let (cache, unreadable) = if distinct.len().saturating_mul(pixel_bytes) <= PIXEL_CACHE_BYTES
        {
            let processed: Vec<(PathBuf, Result<Vec<f32>, String>)> = distinct
                .par_iter()
                .map(|path| {
                    let pixels = processor.process_file(path).map_err(|e| e.to_string());
                    (path.to_path_buf(), pixels)
                })
                .collect();
            let mut cache = HashMap::new();
            let mut unreadable = Vec::new();
            for (path, pixels) in processed {
                match pixels {
                    Ok(pixels) => {
                        cache.insert(path, Arc::new(pixels));
                    }
                    Err(detail) => unreadable.push((path, detail)),
                }
            }
            (Some(cache), unreadable)
        } else {
            (None, Vec::new())
        };
        let samples: Vec<Sample> = match &cache {
            Some(cache) => samples
                .into_iter()
                .filter(|s| cache.contains_key(&s.image))
                .collect(),
            None => samples,
        };
        let captions = samples
            .iter()
            .map(|s| {
                tokenizer
                    .caption_ids(prompt, &s.caption, max_tokens)
                    .map_err(|err| InputError::Tokenize {
                        id: s.id.clone(),
                        caption: s.caption.clone(),
                        detail: err.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            Self {
                samples,
                captions,
                processor,
                uploader: BatchUploader::new(),
                cache,
            },
            unreadable,
        ))
    }

    /// Number of usable samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Pixels `(B, 3, S, S)` in `dtype` on `device` and the caption batch of samples `indices`.
    pub fn batch(
        &self,
        indices: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, CaptionBatch), InputError> {
        let picked: Vec<&Sample> = indices
            .iter()
            .filter_map(|i| self.samples.get(*i))
            .collect();
        let pixels: Vec<Arc<Vec<f32>>> = picked
            .par_iter()
            .map(|s| self.pixels(&s.image))
            .collect::<Result<_, _>>()?;
        let slices: Vec<&[f32]> = pixels.iter().map(|p| p.as_slice()).collect();
        let images = self
            .uploader
            .upload(&slices, self.processor.size, device, dtype)?;
        let captions: Vec<CaptionIds> = indices
            .iter()
            .filter_map(|i| self.captions.get(*i).cloned())
            .collect();
        Ok((images, CaptionBatch::new(&captions, device)?))
    }

    fn pixels(&self, path: &Path) -> Result<Arc<Vec<f32>>, InputError> {
        if let Some(pixels) = self.cache.as_ref().and_then(|c| c.get(path)) {
            return Ok(pixels.clone());
        }
        self.processor
            .process_file(path)
            .map(Arc::new)
            .map_err(|err| InputError::Image {
                path: path.to_path_buf(),
                detail: err.to_string(),
            })
    }
}
