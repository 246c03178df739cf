//! `vlmrun score --predictions P --references R`: COCO caption metrics for an existing predictions file.
//! References: a JSONL manifest with `id` + `references`, or a COCO captions annotation file.

use std::collections::BTreeMap;
use std::path::Path;

use super::{print_stdout, Context};
use crate::config::{DataConfig, DataSource};
use crate::data::dataset;
use crate::error::Error;
use crate::exit::Exit;
use crate::metrics;

pub fn run(
    context: &Context,
    predictions: &Path,
    references: &Path,
    json: bool,
) -> Result<Exit, Error> {
    let source = if looks_like_coco(references) {
        DataSource::Coco
    } else {
        DataSource::Manifest
    };
    let data = DataConfig {
        source,
        path: references.to_path_buf(),
        image_root: references.parent().map(Path::to_path_buf),
        ..DataConfig::default()
    };
    let items = dataset::load(&data).map_err(|err| Error::Input(err.to_string()))?;
    let refs = dataset::references(&items);
    let text = std::fs::read_to_string(predictions).map_err(|err| {
        Error::Input(format!(
            "cannot read predictions {}: {err}",
            predictions.display()
        ))
    })?;
    let prompt = &context.config.config.generation.prompt;
    let mut captions: BTreeMap<String, String> = BTreeMap::new();
    for (index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|err| {
            Error::Input(format!(
                "{}:{}: not valid JSON: {err}",
                predictions.display(),
                index + 1
            ))
        })?;
        let (Some(id), Some(caption)) = (value.get("id"), value["caption"].as_str()) else {
            return Err(Error::Input(format!(
                "{}:{}: needs \"id\" and \"caption\"",
                predictions.display(),
                index + 1
            )));
        };
        let id = match id {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        captions.insert(id, caption.to_string());
    }
    let missing: Vec<&String> = captions
        .keys()
        .filter(|id| !refs.contains_key(*id))
        .take(3)
        .collect();
    if !missing.is_empty() {
        return Err(Error::Input(format!(
            "predictions without references in {}: {:?}\n  fix: score against the dataset the predictions came from",
            references.display(),
            missing
        )));
    }
    let captions = captions
        .iter()
        .map(|(id, caption)| (id.as_str(), caption.as_str()));
    let scores = metrics::score_captions(captions, &refs, prompt)
        .map_err(|err| Error::Input(err.to_string()))?;
    let out = if json {
        let mut s =
            serde_json::to_string_pretty(&scores).map_err(|e| Error::Internal(e.to_string()))?;
        s.push('\n');
        s
    } else {
        format!(
            "images   {}\nBLEU-1   {:.6}\nBLEU-2   {:.6}\nBLEU-3   {:.6}\nBLEU-4   {:.6}\nCIDEr    {:.6}\nROUGE-L  {:.6}\n",
            scores.n_images, scores.bleu[0], scores.bleu[1], scores.bleu[2], scores.bleu[3], scores.cider, scores.rouge_l
        )
    };
    print_stdout(&out)?;
    Ok(Exit::Success)
}

fn looks_like_coco(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "json")
}
