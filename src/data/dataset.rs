//! Dataset readers for every job (`baseline`, `train`, `fidelity`, `score`): a folder of images, a
//! JSONL manifest, or a COCO captions annotation file (optionally filtered by a Karpathy-style split
//! file). Every problem is found here, before a model is loaded, and named with its file (and line).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{DataConfig, DataSource};

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

    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}:{line}: {message}\n  fix: each manifest line is a JSON object like {{\"id\": \"x\", \"image\": \"img.png\", \"references\": [\"a caption\"]}}", path.display())]
    ManifestLine {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("{}: {message}", path.display())]
    Coco { path: PathBuf, message: String },

    #[error("{}: id {id:?} appears twice (lines {first} and {second})\n  fix: give each manifest line a unique \"id\"", path.display())]
    DuplicateId {
        path: PathBuf,
        id: String,
        first: usize,
        second: usize,
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

/// File extensions a folder dataset picks up.
const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tiff"];

/// Reads the configured dataset, applies offset and limit, and refuses an empty result.
pub fn load(config: &DataConfig) -> Result<Vec<Item>, DatasetError> {
    let items = match config.source {
        DataSource::Folder => read_folder(&config.path)?,
        DataSource::Manifest => read_manifest(&config.path)?,
        DataSource::Coco => read_coco(config)?,
    };
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

fn read_folder(dir: &Path) -> Result<Vec<Item>, DatasetError> {
    if !dir.is_dir() {
        return Err(DatasetError::NotFound {
            what: "folder",
            path: dir.to_path_buf(),
        });
    }
    let entries = std::fs::read_dir(dir).map_err(|source| DatasetError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| {
            Path::new(name)
                .extension()
                .and_then(|ext| ext.to_str())
                .is_some_and(|ext| IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
        })
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| Item {
            image: dir.join(&name),
            image_as_given: dir.join(&name).display().to_string(),
            id: name,
            references: Vec::new(),
        })
        .collect())
}

#[derive(Deserialize)]
struct ManifestLine {
    id: Option<serde_json::Value>,
    image: Option<String>,
    #[serde(default)]
    references: Vec<String>,
}

fn read_text(path: &Path, what: &'static str) -> Result<String, DatasetError> {
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

fn read_manifest(path: &Path) -> Result<Vec<Item>, DatasetError> {
    let text = read_text(path, "manifest")?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut items = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| DatasetError::ManifestLine {
            path: path.to_path_buf(),
            line: number,
            message,
        };
        let parsed: ManifestLine =
            serde_json::from_str(line).map_err(|err| bad(format!("not valid JSON: {err}")))?;
        let image = parsed
            .image
            .filter(|image| !image.trim().is_empty())
            .ok_or_else(|| bad("missing \"image\"".to_string()))?;
        let id = match parsed.id {
            None | Some(serde_json::Value::Null) => image.clone(),
            Some(serde_json::Value::String(id)) => id,
            Some(serde_json::Value::Number(id)) => id.to_string(),
            Some(other) => {
                return Err(bad(format!(
                    "\"id\" must be a string or number, got {other}"
                )))
            }
        };
        if let Some(first) = seen.insert(id.clone(), number) {
            return Err(DatasetError::DuplicateId {
                path: path.to_path_buf(),
                id,
                first,
                second: number,
            });
        }
        items.push(Item {
            id,
            image: base.join(&image),
            image_as_given: image,
            references: parsed.references,
        });
    }
    Ok(items)
}

#[derive(Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<CocoAnnotation>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    image_id: u64,
    caption: String,
}

#[derive(Deserialize)]
struct KarpathyFile {
    images: Vec<KarpathyImage>,
}

#[derive(Deserialize)]
struct KarpathyImage {
    split: String,
    #[serde(default)]
    cocoid: Option<u64>,
    #[serde(default)]
    imgid: Option<u64>,
}

fn read_coco(config: &DataConfig) -> Result<Vec<Item>, DatasetError> {
    let path = &config.path;
    let text = read_text(path, "COCO annotation file")?;
    let coco: CocoFile = serde_json::from_str(&text).map_err(|err| DatasetError::Coco {
        path: path.clone(),
        message: format!(
            "not a COCO captions file ({err}); expected {{\"images\": [{{\"id\", \"file_name\"}}], \"annotations\": [{{\"image_id\", \"caption\"}}]}}"
        ),
    })?;
    let root = match &config.image_root {
        Some(root) => root.clone(),
        None => path.parent().unwrap_or(Path::new(".")).to_path_buf(),
    };
    if !root.is_dir() {
        return Err(DatasetError::NotFound {
            what: "image root",
            path: root,
        });
    }
    let keep = match &config.split_file {
        None => None,
        Some(split_path) => {
            let split = config
                .split
                .as_deref()
                .ok_or(DatasetError::SplitNameMissing)?;
            let split_text = read_text(split_path, "split file")?;
            let karpathy: KarpathyFile =
                serde_json::from_str(&split_text).map_err(|err| DatasetError::Coco {
                    path: split_path.clone(),
                    message: format!("not a Karpathy split file ({err}); expected {{\"images\": [{{\"cocoid\", \"split\"}}]}}"),
                })?;
            Some(
                karpathy
                    .images
                    .into_iter()
                    .filter(|image| image.split == split)
                    .filter_map(|image| image.cocoid.or(image.imgid))
                    .collect::<std::collections::HashSet<u64>>(),
            )
        }
    };
    let mut references: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for annotation in coco.annotations {
        references
            .entry(annotation.image_id)
            .or_default()
            .push(annotation.caption);
    }
    let mut images = coco.images;
    images.sort_by_key(|image| image.id);
    images.dedup_by_key(|image| image.id);
    Ok(images
        .into_iter()
        .filter(|image| keep.as_ref().is_none_or(|keep| keep.contains(&image.id)))
        .map(|image| Item {
            id: image.id.to_string(),
            image: root.join(&image.file_name),
            image_as_given: image.file_name,
            references: references.remove(&image.id).unwrap_or_default(),
        })
        .collect())
}
