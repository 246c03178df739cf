//! Dataset readers for every job (`baseline`, `train`, `fidelity`, `score`): a folder of images
//! (`folder`), a JSONL manifest (`manifest`), a COCO captions annotation file optionally filtered by a
//! Karpathy-style split file (`coco`), a LAVIS annotation file (`lavis`), or Hugging Face datasets'
//! parquet files (`parquet`). Every problem is found
//! here, before a model is loaded, and named with its file (and line or entry); a JSON file of the
//! other kind is recognised (`sniff`) and the error names the `data.source` that reads it.

mod coco;
mod folder;
mod lavis;
mod manifest;
#[cfg(feature = "parquet")]
mod parquet;
#[cfg(feature = "parquet")]
mod parquet_pages;
pub mod sniff;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{DataConfig, DataSource};

pub use folder::DECODED_EXTENSIONS;

/// One image to caption, with its reference captions when the dataset has them.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Unique key in predictions.jsonl.
    pub id: String,
    /// The path to open.
    pub image: PathBuf,
    /// The path as the dataset wrote it (reported back in outputs).
    pub image_as_given: String,
    pub references: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("dataset {what} {} not found\n  fix: check data.path / data.image_root in the config (relative paths are relative to the working directory)", path.display())]
    NotFound { what: &'static str, path: PathBuf },

    #[error("dataset {what} {} is {kind}, not a {expected}\n  fix: point data.path (or data.image_root / data.split_file) at the {expected} itself", path.display())]
    NotThatKind {
        what: &'static str,
        path: PathBuf,
        kind: &'static str,
        expected: &'static str,
    },

    #[error("cannot read {}: {source}\n  fix: check that the file is readable and is UTF-8 text", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}:{line}: {message}\n  fix: each manifest line is a JSON object like {{\"id\": \"x\", \"image\": \"img.png\", \"references\": [\"a caption\"]}} (or \"caption\": \"a caption\")", path.display())]
    ManifestLine {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("{}: {message}", path.display())]
    Coco { path: PathBuf, message: String },

    #[error("{}: {message}\n  fix: a LAVIS annotation file is a JSON list of {{\"image\": \"dir/x.jpg\", \"caption\": \"a caption\" or [\"a caption\", ...], \"image_id\"?: ...}}", path.display())]
    Lavis { path: PathBuf, message: String },

    #[error("{}: {message}", path.display())]
    Parquet { path: PathBuf, message: String },

    /// The file is valid JSON of another dataset kind, or of none (`sniff`).
    #[error("{}: {message}", path.display())]
    WrongKind { path: PathBuf, message: String },

    #[error("{}: id {id:?} appears twice (lines {first} and {second})\n  fix: give each manifest line a unique \"id\"", path.display())]
    DuplicateId {
        path: PathBuf,
        id: String,
        first: usize,
        second: usize,
    },

    #[error("{}: {count} id(s) appear more than once: {ids}; their results would overwrite each other\n  fix: give each item a unique id (for parquet: the id column, image_id, img_id, id or cocoid)", path.display())]
    DuplicateIds {
        path: PathBuf,
        count: usize,
        ids: String,
    },

    #[error("data.split_file is set but data.split is not\n  fix: set data.split to the split to run (e.g. test)")]
    SplitNameMissing,

    #[error("the dataset {} has no images{detail}\n  fix: check data.path, data.split, data.offset and data.limit", path.display())]
    Empty { path: PathBuf, detail: String },
}

/// The reference captions by image id, for the items that have any.
pub fn references(items: &[Item]) -> BTreeMap<String, Vec<String>> {
    items
        .iter()
        .filter(|item| !item.references.is_empty())
        .map(|item| (item.id.clone(), item.references.clone()))
        .collect()
}

/// Reads the configured dataset, applies offset and limit, and refuses an empty result.
pub fn load(config: &DataConfig) -> Result<Vec<Item>, DatasetError> {
    let items = match config.source {
        DataSource::Folder => folder::read(&config.path)?,
        DataSource::Manifest => manifest::read(&config.path)?,
        DataSource::Coco => coco::read(config)?,
        DataSource::Lavis => lavis::read(config)?,
        #[cfg(feature = "parquet")]
        DataSource::Parquet => parquet::read(&config.path)?,
        #[cfg(not(feature = "parquet"))]
        DataSource::Parquet => {
            return Err(DatasetError::Parquet {
                path: config.path.clone(),
                message: "this build has no parquet reader\n  fix: build with `cargo install --path . --features parquet`, or convert the dataset to a JSONL manifest".to_string(),
            })
        }
    };
    refuse_duplicate_ids(&config.path, &items)?;
    let total = items.len();
    let selected: Vec<Item> = items
        .into_iter()
        .skip(config.offset)
        .take(config.limit.unwrap_or(usize::MAX))
        .collect();
    if selected.is_empty() {
        let detail = if total == 0 {
            String::new()
        } else {
            format!(
                " after offset {} / limit {:?} ({total} before)",
                config.offset, config.limit
            )
        };
        return Err(DatasetError::Empty {
            path: config.path.clone(),
            detail,
        });
    }
    Ok(selected)
}

/// Every reader's ids must be distinct (the manifest, COCO and LAVIS readers say so earlier with
/// their lines or entries; this catches the others, e.g. a parquet id column with repeats).
fn refuse_duplicate_ids(path: &Path, items: &[Item]) -> Result<(), DatasetError> {
    let mut seen = std::collections::HashMap::new();
    let mut repeated: Vec<&str> = Vec::new();
    for item in items {
        let count = seen.entry(item.id.as_str()).or_insert(0usize);
        *count += 1;
        if *count == 2 {
            repeated.push(&item.id);
        }
    }
    if repeated.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = repeated
        .iter()
        .take(5)
        .map(|id| format!("{id:?} ({} times)", seen[id]))
        .collect();
    let more = match repeated.len().saturating_sub(5) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    Err(DatasetError::DuplicateIds {
        path: path.to_path_buf(),
        count: repeated.len(),
        ids: format!("{}{more}", shown.join(", ")),
    })
}

/// Why an item cannot be captioned before its image is even opened, if it cannot: an image path
/// that is not UTF-8 (a folder file so named) could not be written faithfully into
/// predictions.jsonl or the report, so the item gets an errors.jsonl line instead.
pub fn unusable(item: &Item) -> Option<String> {
    if item.image.to_str().is_some() {
        return None;
    }
    Some(format!(
        "{}: the file name is not valid UTF-8 (undecodable bytes shown as \\xNN), so it cannot be an id or a line of predictions.jsonl\n  fix: rename the file to a UTF-8 name, or list the images in a JSONL manifest",
        item.image_as_given
    ))
}

/// The text of a dataset file (`what` names it in the error when it is missing).
fn read_text(path: &Path, what: &'static str) -> Result<String, DatasetError> {
    if let Some(kind) = crate::paths::not_a_file(path) {
        return Err(DatasetError::NotThatKind {
            what,
            path: path.to_path_buf(),
            kind,
            expected: "file",
        });
    }
    if !path.is_file() {
        return Err(DatasetError::NotFound {
            what,
            path: path.to_path_buf(),
        });
    }
    std::fs::read_to_string(path).map_err(|source| DatasetError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The folder image paths are relative to: `data.image_root`, else the annotation file's folder.
fn image_root(config: &DataConfig) -> Result<PathBuf, DatasetError> {
    let root = match &config.image_root {
        Some(root) => root.clone(),
        None => folder_of(&config.path),
    };
    if let Some(kind) = crate::paths::not_a_dir(&root) {
        return Err(DatasetError::NotThatKind {
            what: "image root",
            path: root,
            kind,
            expected: "folder",
        });
    }
    if !root.is_dir() {
        return Err(DatasetError::NotFound {
            what: "image root",
            path: root,
        });
    }
    Ok(root)
}

/// The folder a file is in (`.` for a bare file name).
fn folder_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// An id as datasets write it: a string, or a number (kept as its decimal text).
fn id_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(id) => Some(id.clone()),
        serde_json::Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str) -> Item {
        Item {
            id: id.to_string(),
            image: PathBuf::from(format!("{id}.png")),
            image_as_given: format!("{id}.png"),
            references: Vec::new(),
        }
    }

    #[test]
    fn repeated_ids_from_any_reader_are_refused_naming_them() {
        let path = Path::new("data.parquet");
        assert!(refuse_duplicate_ids(path, &[item("a"), item("b")]).is_ok());
        let err = refuse_duplicate_ids(path, &[item("a"), item("b"), item("a"), item("a")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("data.parquet: 1 id(s) appear more than once"),
            "{err}"
        );
        assert!(err.contains("\"a\" (3 times)"), "{err}");
        assert!(!err.contains("\"b\""), "{err}");
        assert_eq!(err.matches("fix:").count(), 1, "{err}");
    }
}
