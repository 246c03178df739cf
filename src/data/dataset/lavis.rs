//! A LAVIS annotation file (`coco_karpathy_*.json`, `flickr30k_*.json`, their retrieval files): a JSON
//! list of `{"image": "val2014/x.jpg", "caption": "a caption" | ["a caption", ...], "image_id"?: ...}`,
//! image paths under `data.image_root`. Training files hold one entry per caption (the entries of one
//! image share `image_id`); evaluation files one entry per image with a list of captions and often no
//! `image_id`. The id is `image_id` when present, else the image path; entries with the same id are one
//! item whose references are all their captions, in file order.

use std::collections::HashMap;

use serde_json::Value;

use super::sniff::{self, JsonKind};
use super::{id_text, image_root, read_text, DatasetError, Item};
use crate::config::DataConfig;

pub(super) fn read(config: &DataConfig) -> Result<Vec<Item>, DatasetError> {
    let path = &config.path;
    let text = read_text(path, "LAVIS annotation file")?;
    let bad = |message: String| DatasetError::Lavis {
        path: path.clone(),
        message,
    };
    let document: Value =
        serde_json::from_str(&text).map_err(|err| bad(format!("not valid JSON: {err}")))?;
    if sniff::kind(&document) != Ok(JsonKind::Lavis) {
        return Err(DatasetError::WrongKind {
            path: path.clone(),
            message: sniff::mismatch(&document, JsonKind::Lavis),
        });
    }
    let root = image_root(config)?;
    let Value::Array(entries) = document else {
        return Err(bad("not a JSON list".to_string()));
    };
    let mut items: Vec<Item> = Vec::new();
    let mut index_of: HashMap<String, usize> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let at = |message: &str| bad(format!("entry {index}: {message}"));
        let image = entry
            .get("image")
            .and_then(Value::as_str)
            .filter(|image| !image.trim().is_empty())
            .ok_or_else(|| at("needs \"image\" (a path string)"))?;
        let captions: Vec<String> = match entry.get("caption") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(caption)) => vec![caption.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|caption| caption.as_str().map(str::to_string))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| at("\"caption\" must be a string or a list of strings"))?,
            Some(_) => return Err(at("\"caption\" must be a string or a list of strings")),
        };
        let id = match entry.get("image_id") {
            None | Some(Value::Null) => image.to_string(),
            Some(value) => {
                id_text(value).ok_or_else(|| at("\"image_id\" must be a string or a number"))?
            }
        };
        match index_of.get(&id) {
            Some(&existing) => {
                let item = &mut items[existing];
                if item.image_as_given != image {
                    return Err(at(&format!(
                        "image_id {id:?} names {image:?} here but {:?} earlier",
                        item.image_as_given
                    )));
                }
                item.references.extend(captions);
            }
            None => {
                index_of.insert(id.clone(), items.len());
                items.push(Item {
                    id,
                    image: root.join(image),
                    image_as_given: image.to_string(),
                    references: captions,
                });
            }
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataSource;

    fn config(text: &str) -> (tempfile::TempDir, DataConfig) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ann.json");
        std::fs::write(&path, text).unwrap();
        let config = DataConfig {
            source: DataSource::Lavis,
            path,
            ..DataConfig::default()
        };
        (dir, config)
    }

    #[test]
    fn training_entries_of_one_image_merge_and_evaluation_lists_are_kept() {
        let (_dir, config) = config(
            r#"[
              {"caption": "a woman eating", "image": "val2014/COCO_val2014_000000328757.jpg", "image_id": "coco_328757"},
              {"caption": "a bowl of food", "image": "val2014/COCO_val2014_000000328757.jpg", "image_id": "coco_328757"},
              {"image": "val2014/COCO_val2014_000000391895.jpg", "caption": ["a man on a bike", "a cyclist"]},
              {"image": "b.jpg", "caption": "one", "image_id": 7}
            ]"#,
        );
        let items = read(&config).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].id, "coco_328757");
        assert_eq!(items[0].references, ["a woman eating", "a bowl of food"]);
        assert_eq!(
            items[0].image,
            config
                .path
                .parent()
                .unwrap()
                .join("val2014/COCO_val2014_000000328757.jpg")
        );
        assert_eq!(items[1].id, "val2014/COCO_val2014_000000391895.jpg");
        assert_eq!(items[1].references, ["a man on a bike", "a cyclist"]);
        assert_eq!(items[2].id, "7");
    }

    #[test]
    fn bad_entries_and_other_kinds_are_named() {
        let (_dir, bad) = config(r#"[{"image": "a.jpg", "caption": 3}]"#);
        let err = read(&bad).unwrap_err().to_string();
        assert!(err.contains("entry 0: \"caption\" must be"), "{err}");

        let (_dir, conflict) =
            config(r#"[{"image": "a.jpg", "image_id": 1}, {"image": "b.jpg", "image_id": 1}]"#);
        let err = read(&conflict).unwrap_err().to_string();
        assert!(
            err.contains("entry 1: image_id \"1\" names \"b.jpg\""),
            "{err}"
        );

        let (_dir, coco) = config(r#"{"images": [], "annotations": []}"#);
        let err = read(&coco).unwrap_err().to_string();
        assert!(err.contains("data.source: coco"), "{err}");
        assert!(!err.contains("invalid type"), "no serde message: {err}");

        let (_dir, other) = config(r#"{"questions": []}"#);
        let err = read(&other).unwrap_err().to_string();
        assert!(err.contains("not a caption dataset"), "{err}");
    }
}
