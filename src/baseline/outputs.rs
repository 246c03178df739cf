//! The files a baseline run writes beside `report.json` for other tools and for people:
//! `results.json`, the COCO results file (`data::results`: what pycocoevalcap's `loadRes` reads,
//! captions with the prompt stripped as they are scored).

use std::path::Path;

use crate::data::predictions::Prediction;
use crate::data::results;
use crate::error::Error;
use crate::metrics::strip_prompt;
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
