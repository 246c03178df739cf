//! A JSONL manifest: one `{"id"?, "image", "references"?}` object per line, image paths relative to
//! the manifest. `"caption"` (a string, or a list) is accepted in place of `"references"`; other keys
//! are ignored with one warning naming them (a misspelt key is not a silent "no references"). A file
//! that is one JSON document (a COCO or LAVIS annotation file) is named as such.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Deserialize;

use super::{folder_of, id_text, read_text, sniff, DatasetError, Item};

/// One caption or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum Captions {
    One(String),
    Many(Vec<String>),
}

impl Captions {
    fn into_vec(self) -> Vec<String> {
        match self {
            Captions::One(caption) => vec![caption],
            Captions::Many(captions) => captions,
        }
    }
}

#[derive(Deserialize)]
struct ManifestLine {
    id: Option<serde_json::Value>,
    image: Option<String>,
    references: Option<Captions>,
    caption: Option<Captions>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

pub(super) fn read(path: &Path) -> Result<Vec<Item>, DatasetError> {
    let text = read_text(path, "manifest")?;
    let base = folder_of(path);
    let mut items = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut ignored: BTreeSet<String> = BTreeSet::new();
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
        let parsed: ManifestLine = match serde_json::from_str(line) {
            Ok(parsed) => parsed,
            Err(err) => {
                return Err(whole_document(path, &text).unwrap_or_else(|| bad(line_error(err))))
            }
        };
        let image = parsed
            .image
            .filter(|image| !image.trim().is_empty())
            .ok_or_else(|| bad("missing \"image\"".to_string()))?;
        let id = match parsed.id {
            None | Some(serde_json::Value::Null) => image.clone(),
            Some(value) => id_text(&value)
                .ok_or_else(|| bad(format!("\"id\" must be a string or number, got {value}")))?,
        };
        let references = match (parsed.references, parsed.caption) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "has both \"references\" and \"caption\"; give one of them".to_string(),
                ))
            }
            (Some(captions), None) | (None, Some(captions)) => captions.into_vec(),
            (None, None) => Vec::new(),
        };
        ignored.extend(parsed.other.into_keys());
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
            references,
        });
    }
    if !ignored.is_empty() {
        let keys: Vec<&str> = ignored.iter().map(String::as_str).collect();
        tracing::warn!(
            "{}: ignored key(s) {keys:?}; a manifest line reads \"id\", \"image\" and \"references\" (a list) or \"caption\" (a string)",
            path.display()
        );
    }
    Ok(items)
}

/// A serde message for a line that is JSON but not a manifest object, in the manifest's words.
fn line_error(err: serde_json::Error) -> String {
    if err.is_data() {
        format!("not a manifest line: {err}")
    } else {
        format!("not valid JSON: {err}")
    }
}

/// When the whole file is one JSON document (not JSONL), the error that says what it is.
fn whole_document(path: &Path, text: &str) -> Option<DatasetError> {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('[') || trimmed.starts_with('{')) {
        return None;
    }
    let document: serde_json::Value = serde_json::from_str(text).ok()?;
    if document.is_object() && text.trim().lines().count() == 1 {
        // A one-line object that is not a manifest line: the line error says why.
        return None;
    }
    let message = match sniff::kind(&document) {
        Ok(found) => format!(
            "this is {}, not a JSONL manifest (one JSON object per line)\n  fix: set data.source to match the file",
            found.describe()
        ),
        Err(what) => format!(
            "this file is one JSON document ({what}), not a JSONL manifest (one JSON object per line)\n  fix: write one {{\"id\", \"image\", \"references\"}} object per line"
        ),
    };
    Some(DatasetError::WrongKind {
        path: path.to_path_buf(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.jsonl");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_caption_string_or_list_is_read_as_the_references() {
        let (_dir, path) = manifest(concat!(
            "{\"id\": 1, \"image\": \"a.png\", \"caption\": \"a cat\"}\n",
            "{\"image\": \"b.png\", \"caption\": [\"a dog\", \"a puppy\"]}\n",
            "{\"image\": \"c.png\", \"references\": \"one string\"}\n",
            "{\"image\": \"d.png\", \"captions\": [\"misspelt\"]}\n",
        ));
        let items = read(&path).unwrap();
        assert_eq!(items[0].id, "1");
        assert_eq!(items[0].references, ["a cat"]);
        assert_eq!(items[1].id, "b.png");
        assert_eq!(items[1].references, ["a dog", "a puppy"]);
        assert_eq!(items[2].references, ["one string"]);
        assert!(items[3].references.is_empty());
    }

    #[test]
    fn both_keys_on_one_line_is_an_error_naming_the_line() {
        let (_dir, path) = manifest(
            "{\"image\": \"a.png\"}\n{\"image\": \"b.png\", \"caption\": \"x\", \"references\": [\"y\"]}\n",
        );
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains(":2: has both"), "{err}");
    }

    #[test]
    fn a_lavis_or_coco_document_is_named_instead_of_a_parse_error() {
        let (_dir, path) = manifest("[\n  {\"image\": \"a.jpg\", \"caption\": [\"x\"]}\n]\n");
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("LAVIS annotation file"), "{err}");
        assert!(err.contains("data.source: lavis"), "{err}");

        let (_dir, path) = manifest("{\"images\": [],\n \"annotations\": []}\n");
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("data.source: coco"), "{err}");

        let (_dir, path) = manifest("{\"image\": 3}\n");
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains(":1: not a manifest line"), "{err}");
    }
}
