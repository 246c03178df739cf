//! A COCO captions annotation file (`images` + `annotations`), its images under `data.image_root`,
//! optionally filtered by a Karpathy-style split file (`dataset_coco.json`). The id is COCO's image id.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::sniff::{self, JsonKind};
use super::{image_root, read_text, DatasetError, Item};
use crate::config::DataConfig;

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

/// The ids given to more than one entry of sorted `images`, each with its file names.
fn repeated_ids(images: &[CocoImage]) -> Vec<String> {
    images
        .chunk_by(|a, b| a.id == b.id)
        .filter(|group| group.len() > 1)
        .map(|group| {
            let files: Vec<&str> = group.iter().map(|image| image.file_name.as_str()).collect();
            format!("{} ({})", group[0].id, files.join(", "))
        })
        .collect()
}

pub(super) fn read(config: &DataConfig) -> Result<Vec<Item>, DatasetError> {
    let path = &config.path;
    let text = read_text(path, "COCO annotation file")?;
    let document: serde_json::Value =
        serde_json::from_str(&text).map_err(|err| DatasetError::Coco {
            path: path.clone(),
            message: format!("not valid JSON: {err}"),
        })?;
    if sniff::kind(&document) != Ok(JsonKind::CocoAnnotations) {
        return Err(DatasetError::WrongKind {
            path: path.clone(),
            message: sniff::mismatch(&document, JsonKind::CocoAnnotations),
        });
    }
    let coco: CocoFile = serde_json::from_value(document).map_err(|err| DatasetError::Coco {
        path: path.clone(),
        message: format!(
            "not a COCO captions file ({err}); expected {{\"images\": [{{\"id\", \"file_name\"}}], \"annotations\": [{{\"image_id\", \"caption\"}}]}}"
        ),
    })?;
    let root = image_root(config)?;
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
                    .collect::<HashSet<u64>>(),
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
    let repeated = repeated_ids(&images);
    if !repeated.is_empty() {
        return Err(DatasetError::Coco {
            path: path.clone(),
            message: format!(
                "{} image id(s) appear more than once in \"images\": {}; each would be one item with two files\n  fix: give each image entry a unique \"id\" (COCO's files have one entry per id)",
                repeated.len(),
                repeated.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                    + &match repeated.len().saturating_sub(5) {
                        0 => String::new(),
                        more => format!(" and {more} more"),
                    }
            ),
        });
    }
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
