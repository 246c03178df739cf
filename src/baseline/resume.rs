//! What a resumed run may keep: only predictions the same settings made, of images that did not
//! change. Every predictions file (a single run's `predictions.jsonl`, a rank's
//! `predictions.rank-K.jsonl`) has a settings file beside it (`settings.json`, `settings.rank-K.json`:
//! `distributed::fingerprint::settings`, the values that decide a caption, by key), and every line
//! the image's stamp (`data::predictions::image_stamp`: size and modification time when it was read).
//!
//! On resume: other settings -> refused (configuration error, exit 2) naming each key that changed and
//! the fixes; an image whose stamp differs now (or whose id now names another file) -> its line is
//! dropped from the file and the image captioned again, with a warning.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::data::dataset::Item;
use crate::data::predictions::{self, image_stamp, Prediction, Resumed};
use crate::device::ActiveDevice;
use crate::distributed::fingerprint;
use crate::error::Error;
use crate::models::blip::load::resolve_model_files;

pub const SCHEMA: &str = "vlmrun.settings/1";

/// The settings file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingsRecord {
    pub schema: String,
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// The settings this run captions with: the configuration's, the precision `active` uses, and the
/// identity of the files `model.source` resolves to (no network, no tensor read).
pub fn current_settings(
    config: &Config,
    active: &ActiveDevice,
) -> Result<BTreeMap<String, serde_json::Value>, Error> {
    let files = resolve_model_files(&config.model.source, &config.model.revision)
        .map_err(crate::engine::EngineError::from)?;
    let identity = |path: &Path| {
        fingerprint::files_identity(path).map_err(|err| {
            Error::Model(format!(
                "{}: cannot read: {err}\n  fix: check model.source",
                path.display()
            ))
        })
    };
    let mut model_files = identity(&files.weights)?;
    if files.tokenizer.parent() != Some(files.weights.as_path()) {
        model_files = format!("{model_files}+{}", identity(&files.tokenizer)?);
    }
    Ok(fingerprint::settings(
        config,
        &format!("{:?}", active.precision.dtype).to_lowercase(),
        &model_files,
    ))
}

/// Checks the earlier results against `settings` and records `settings` beside them. An empty
/// predictions file takes the new settings; results without a settings file (an older vlmrun, or
/// another tool) or with other settings are refused.
pub fn check_settings(
    settings_path: &Path,
    predictions_path: &Path,
    existing: usize,
    settings: &BTreeMap<String, serde_json::Value>,
) -> Result<(), Error> {
    let has_results = existing > 0;
    let found = read(settings_path)?;
    let fixes = "  fix: rerun with the settings of that run to resume it, pass --fresh to delete its results and start over, or choose another output.dir";
    match (&found, has_results) {
        (Some(found), true) => {
            let changed = fingerprint::differences(&found.settings, settings);
            if !changed.is_empty() {
                return Err(Error::Usage(format!(
                    "{} holds {} predictions made with other settings ({}):\n    {}\n{fixes}",
                    predictions_path.display(),
                    existing,
                    settings_path.display(),
                    changed.join("\n    ")
                )));
            }
            return Ok(());
        }
        (None, true) => {
            return Err(Error::Usage(format!(
                "{} holds {} predictions but no record of the settings that made them ({} is missing: written by an older vlmrun or another tool), so resuming could mix runs\n{fixes}",
                predictions_path.display(),
                existing,
                settings_path.display(),
            )))
        }
        _ => {}
    }
    let record = SettingsRecord {
        schema: SCHEMA.to_string(),
        settings: settings.clone(),
    };
    crate::report::write_json_atomic(settings_path, &record).map_err(|source| Error::Output {
        what: "the settings record",
        path: settings_path.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<Option<SettingsRecord>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Output {
                what: "(reading) the settings record",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|err| {
        Error::Input(format!(
            "{}: not a {SCHEMA} record ({err})\n  fix: it was edited or belongs to something else; pass --fresh to start over, or choose another output.dir",
            path.display()
        ))
    })
}

/// Drops from `resumed` (and from the file at `predictions_path`) every prediction of an item in
/// `items` whose image changed since it was captioned: another file, or another stamp. Returns how
/// many were dropped.
pub fn drop_changed_images(
    items: &[Item],
    resumed: &mut Resumed,
    predictions_path: &Path,
) -> Result<usize, Error> {
    let by_id: HashMap<&str, &Item> = items.iter().map(|item| (item.id.as_str(), item)).collect();
    let unchanged = |prediction: &Prediction| match by_id.get(prediction.id.as_str()) {
        None => true, // not in this run's items (e.g. a smaller data.limit): kept as it is
        Some(item) => {
            prediction.image == item.image_as_given
                && prediction.image_stamp.is_some()
                && prediction.image_stamp == image_stamp(&item.image)
        }
    };
    let before = resumed.predictions.len();
    resumed.predictions.retain(unchanged);
    let dropped = before - resumed.predictions.len();
    if dropped > 0 {
        predictions::rewrite(predictions_path, &resumed.predictions).map_err(|err| {
            Error::Output {
                what: "predictions",
                path: predictions_path.to_path_buf(),
                source: std::io::Error::other(err.to_string()),
            }
        })?;
    }
    Ok(dropped)
}
