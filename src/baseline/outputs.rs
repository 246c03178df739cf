//! The files a baseline run writes beside `report.json` for other tools and for people:
//! `results.json`, the COCO results file (`data::results`: what pycocoevalcap's `loadRes` reads,
//! captions with the prompt stripped as they are scored), and `report.html` (`report::html`: the
//! captions to look at, each image as an embedded 96 px JPEG thumbnail).

use std::collections::HashMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use image::codecs::jpeg::JpegEncoder;
use rayon::prelude::*;

use super::report::BaselineReport;
use crate::data::dataset::Item;
use crate::data::predictions::{Failure, Prediction};
use crate::data::results;
use crate::error::Error;
use crate::metrics::strip_prompt;
use crate::preprocess::decode;
use crate::report::html::{self, FailureRow, HtmlReport, ImageRow, RowScores};
use crate::report::output::output_error;
use crate::report::write_atomic;

pub const RESULTS_FILE: &str = "results.json";

/// Writes `results.json` in `dir`: one entry per prediction, in the given order, each caption
/// without the prompt its line records (else `prompt`).
pub fn write_results(dir: &Path, predictions: &[Prediction], prompt: &str) -> Result<(), Error> {
    let captions = predictions.iter().map(|p| {
        let prompt = p.prompt.as_deref().unwrap_or(prompt);
        (p.id.as_str(), strip_prompt(&p.caption, prompt))
    });
    let bytes = results::to_json(captions).map_err(|e| Error::Internal(e.to_string()))?;
    let path = dir.join(RESULTS_FILE);
    write_atomic(&path, &bytes)
        .map_err(|source| output_error("the COCO results file", &path, source))
}

pub const HTML_FILE: &str = "report.html";

/// Longest side of a report.html thumbnail, pixels.
const THUMBNAIL_SIDE: u32 = 96;
/// JPEG quality of the thumbnails (a 96 px thumbnail is ~2-4 KB).
const THUMBNAIL_QUALITY: u8 = 75;

/// What report.html shows besides the report itself.
pub struct HtmlInputs<'a> {
    pub dir: &'a Path,
    pub items: &'a [Item],
    pub predictions: &'a [Prediction],
    pub failures: &'a [Failure],
    pub prompt: &'a str,
    pub max_pixels: u64,
}

/// Writes `report.html` in `inputs.dir` (`report::html`): the report's summary and metrics, then
/// every captioned image worst first with a thumbnail (read again from its file, in parallel; an
/// image that cannot be read has none), then the failures.
pub fn write_html(report: &BaselineReport, inputs: &HtmlInputs<'_>) -> Result<(), Error> {
    let references: HashMap<&str, &Item> = inputs
        .items
        .iter()
        .map(|item| (item.id.as_str(), item))
        .collect();
    let per_image = report.metrics.as_ref().map(|scores| &scores.per_image);
    let mut rows: Vec<ImageRow> = inputs
        .predictions
        .par_iter()
        .map(|prediction| {
            let item = references.get(prediction.id.as_str());
            let prompt = prediction.prompt.as_deref().unwrap_or(inputs.prompt);
            ImageRow {
                id: prediction.id.clone(),
                image: prediction.image.clone(),
                thumbnail: item.and_then(|item| thumbnail(&item.image, inputs.max_pixels)),
                caption: strip_prompt(&prediction.caption, prompt),
                references: item.map(|item| item.references.clone()).unwrap_or_default(),
                scores: per_image
                    .and_then(|scores| scores.get(&prediction.id))
                    .map(|s| RowScores::new(s.cider, s.bleu[0], s.bleu[3], s.rouge_l)),
            }
        })
        .collect();
    html::order_worst_first(&mut rows);
    let (metrics, metrics_images) = match &report.metrics {
        Some(scores) => (
            vec![
                ("BLEU-1".to_string(), format!("{:.4}", scores.bleu[0])),
                ("BLEU-2".to_string(), format!("{:.4}", scores.bleu[1])),
                ("BLEU-3".to_string(), format!("{:.4}", scores.bleu[2])),
                ("BLEU-4".to_string(), format!("{:.4}", scores.bleu[3])),
                ("CIDEr".to_string(), format!("{:.4}", scores.cider)),
                ("ROUGE-L".to_string(), format!("{:.4}", scores.rouge_l)),
            ],
            scores.n_images,
        ),
        None => (Vec::new(), 0),
    };
    let page = HtmlReport {
        title: format!("vlmrun baseline: {}", inputs.dir.display()),
        status: report.status.clone(),
        prompt: inputs.prompt.trim().to_string(),
        model_caveat: report.model.caveat(),
        summary: report.summary_rows(),
        metrics,
        metrics_images,
        rows,
        failures: inputs
            .failures
            .iter()
            .map(|failure| FailureRow {
                id: failure.id.clone(),
                image: failure.image.clone(),
                error: failure.error.clone(),
            })
            .collect(),
    };
    let text = html::render(&page).map_err(|e| Error::Internal(format!("report.html: {e}")))?;
    let path = inputs.dir.join(HTML_FILE);
    write_atomic(&path, text.as_bytes())
        .map_err(|source| output_error("report.html", &path, source))
}

/// A small JPEG of the image as a data URI, or `None` when it cannot be read.
fn thumbnail(path: &Path, max_pixels: u64) -> Option<String> {
    let image = decode::load_rgb(path, max_pixels).ok()?;
    let (width, height) = fit(image.width(), image.height(), THUMBNAIL_SIDE);
    let small = image::imageops::thumbnail(&image, width, height);
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, THUMBNAIL_QUALITY)
        .encode_image(&small)
        .ok()?;
    Some(format!("data:image/jpeg;base64,{}", BASE64.encode(bytes)))
}

/// The size that fits `(width, height)` into `side` x `side` keeping the aspect ratio (never larger
/// than the image, at least 1 pixel).
fn fit(width: u32, height: u32, side: u32) -> (u32, u32) {
    let longest = width.max(height).max(1);
    if longest <= side {
        return (width.max(1), height.max(1));
    }
    let scale = |v: u32| {
        ((u64::from(v) * u64::from(side) + u64::from(longest) / 2) / u64::from(longest)).max(1)
            as u32
    };
    (scale(width), scale(height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_keep_the_aspect_ratio_within_the_side() {
        assert_eq!(fit(300, 41, 96), (96, 13));
        assert_eq!(fit(37, 211, 96), (17, 96));
        assert_eq!(fit(5, 3, 96), (5, 3));
        assert_eq!(fit(1000, 1, 96), (96, 1));
    }
}
