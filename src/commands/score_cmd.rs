//! `vlmrun score --predictions P --references R`: COCO caption metrics for existing captions.
//! Predictions: a `predictions.jsonl` (each line's recorded prompt is stripped, as the run that wrote
//! it did, so the numbers equal its report.json) or a COCO results file (`[{"image_id", "caption"}]`,
//! captions used as they are). References: a JSONL manifest, a COCO captions annotation file or a
//! LAVIS annotation file, recognised from the content.

use std::collections::BTreeMap;
use std::path::Path;

use super::{print_stdout, Context};
use crate::config::{DataConfig, DataSource};
use crate::data::dataset::{self, sniff};
use crate::data::results;
use crate::error::Error;
use crate::exit::Exit;
use crate::metrics;

pub fn run(
    context: &Context,
    predictions: &Path,
    references: &Path,
    json: bool,
) -> Result<Exit, Error> {
    let data = DataConfig {
        source: reference_source(references)?,
        path: references.to_path_buf(),
        image_root: references
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .map(Path::to_path_buf),
        ..DataConfig::default()
    };
    let items = dataset::load(&data).map_err(Error::input)?;
    let refs = dataset::references(&items);
    if refs.is_empty() {
        return Err(Error::Input(format!(
            "references {} holds no reference captions ({} item(s), none with a caption)\n  fix: pass the dataset's annotations (a manifest with \"references\", a COCO captions or LAVIS file)",
            references.display(),
            items.len()
        )));
    }
    let captions = read_captions(predictions, &context.config.config.generation.prompt)?;
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
    // The prompts are already stripped (`read_captions`).
    let scores = metrics::score_captions(captions, &refs, "").map_err(Error::input)?;
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

/// The reader for a references file, from its content: a COCO or LAVIS annotation file (one JSON
/// document), else a JSONL manifest. A results file or any other JSON document is refused by name.
fn reference_source(path: &Path) -> Result<DataSource, Error> {
    if let Some(kind) = crate::paths::not_a_file(path) {
        return Err(Error::Input(format!(
            "references {} is {kind}, not a file\n  fix: pass a JSONL manifest, a COCO captions annotation file or a LAVIS annotation file to --references",
            path.display()
        )));
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        // Missing or unreadable: the manifest reader names it.
        return Ok(DataSource::Manifest);
    };
    let trimmed = text.trim_start();
    let document = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(document) if trimmed.starts_with('[') || document.get("images").is_some() => document,
        _ => return Ok(DataSource::Manifest),
    };
    match sniff::kind(&document) {
        Ok(sniff::JsonKind::CocoAnnotations) => Ok(DataSource::Coco),
        Ok(sniff::JsonKind::Lavis) => Ok(DataSource::Lavis),
        Ok(sniff::JsonKind::CocoResults) => Err(Error::Input(format!(
            "{}: this is a COCO results file (generated captions), not references\n  fix: pass it as --predictions, and the dataset's annotations as --references",
            path.display()
        ))),
        Err(what) => Err(Error::Input(format!(
            "{}: not a references file: {what}\n  fix: --references takes a JSONL manifest, a COCO captions annotation file or a LAVIS annotation file",
            path.display()
        ))),
    }
}

/// The captions to score by id, prompt stripped: a COCO results file (a JSON list) as it is, or a
/// predictions JSONL whose lines' recorded prompt (else `fallback_prompt`, for files from before the
/// prompt was recorded) is stripped. An id on two lines, or a file without any caption, is refused:
/// one of two captions would be scored silently, or nothing at all.
fn read_captions(path: &Path, fallback_prompt: &str) -> Result<BTreeMap<String, String>, Error> {
    if let Some(kind) = crate::paths::not_a_file(path) {
        return Err(Error::Input(format!(
            "predictions {} is {kind}, not a file\n  fix: pass a predictions.jsonl or a COCO results file to --predictions",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|err| {
        Error::Input(format!("cannot read predictions {}: {err}", path.display()))
    })?;
    let captions = read_caption_text(path, &text, fallback_prompt)?;
    if captions.is_empty() {
        return Err(Error::Input(format!(
            "predictions {} holds no captions\n  fix: pass the predictions.jsonl or results.json of a run that captioned images",
            path.display()
        )));
    }
    Ok(captions)
}

fn read_caption_text(
    path: &Path,
    text: &str,
    fallback_prompt: &str,
) -> Result<BTreeMap<String, String>, Error> {
    if text.trim_start().starts_with('[') {
        let entries = results::parse(path, text).map_err(Error::input)?;
        return Ok(entries.into_iter().collect());
    }
    let mut captions = BTreeMap::new();
    let mut first_line: BTreeMap<String, usize> = BTreeMap::new();
    let mut repeated: Vec<String> = Vec::new();
    for (index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at =
            |message: String| Error::Input(format!("{}:{}: {message}", path.display(), index + 1));
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|err| at(format!("not valid JSON: {err}")))?;
        let (Some(id), Some(caption)) = (value.get("id"), value["caption"].as_str()) else {
            return Err(at(
                "needs \"id\" and \"caption\" (a predictions.jsonl line), or give a COCO results file ([{\"image_id\", \"caption\"}])".to_string(),
            ));
        };
        let id = match id {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let prompt = value["prompt"].as_str().unwrap_or(fallback_prompt);
        match first_line.get(&id) {
            Some(first) => repeated.push(format!("{id:?} (lines {first} and {})", index + 1)),
            None => {
                first_line.insert(id.clone(), index + 1);
            }
        }
        captions.insert(id, metrics::strip_prompt(caption, prompt));
    }
    if !repeated.is_empty() {
        let shown = repeated
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let more = repeated.len().saturating_sub(5);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        return Err(Error::Input(format!(
            "{}: {} id(s) have more than one caption: {shown}{more}; which one to score is not known\n  fix: keep one line per id (a run's predictions.jsonl has one; merged or concatenated files may not)",
            path.display(),
            repeated.len()
        )));
    }
    Ok(captions)
}
