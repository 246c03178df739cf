//! The COCO results file (`results.json`): `[{"image_id": ..., "caption": "..."}]`, what
//! pycocoevalcap's `COCO.loadRes` takes and what LAVIS writes after an evaluation. `baseline` writes
//! one beside its predictions (captions with the prompt stripped, as they are scored); `score` reads
//! one. An id that is a plain decimal number (COCO's image ids) is written as a JSON number, so
//! `loadRes` matches it against a COCO annotation file's integer ids; other ids stay strings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One result line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoResult {
    pub image_id: Value,
    pub caption: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}\n  fix: a COCO results file is a JSON list of {{\"image_id\": 391895, \"caption\": \"a caption\"}}, one entry per image", path.display())]
    Format { path: PathBuf, message: String },
}

/// The JSON value for an id: a number when the id is a plain decimal integer (no sign, no leading
/// zero), else the string.
pub fn image_id_value(id: &str) -> Value {
    match id.parse::<u64>() {
        Ok(number) if number.to_string() == id => Value::from(number),
        _ => Value::from(id),
    }
}

/// The results file's bytes for `(id, caption)` pairs, in the given order.
pub fn to_json<'a>(
    captions: impl IntoIterator<Item = (&'a str, String)>,
) -> Result<Vec<u8>, serde_json::Error> {
    let results: Vec<CocoResult> = captions
        .into_iter()
        .map(|(id, caption)| CocoResult {
            image_id: image_id_value(id),
            caption,
        })
        .collect();
    let mut bytes = serde_json::to_vec_pretty(&results)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Reads a results file: `(id, caption)` pairs in file order, the id as text. An entry without an
/// `image_id` or `caption`, or an id given twice (pycocoevalcap would score it with two
/// hypotheses and fail), is an error naming the entry.
pub fn read(path: &Path) -> Result<Vec<(String, String)>, ResultsError> {
    let text = std::fs::read_to_string(path).map_err(|source| ResultsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// [`read`] on text already in memory (`path` names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<Vec<(String, String)>, ResultsError> {
    let bad = |message: String| ResultsError::Format {
        path: path.to_path_buf(),
        message,
    };
    let document: Value =
        serde_json::from_str(text).map_err(|err| bad(format!("not valid JSON: {err}")))?;
    let Value::Array(entries) = document else {
        return Err(bad("not a JSON list".to_string()));
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let id = match entry.get("image_id") {
            Some(Value::String(id)) => id.clone(),
            Some(Value::Number(id)) => id.to_string(),
            _ => {
                return Err(bad(format!(
                    "entry {index}: needs \"image_id\" (a number or a string)"
                )))
            }
        };
        let caption = entry
            .get("caption")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("entry {index}: needs \"caption\" (a string)")))?;
        if let Some(first) = seen.insert(id.clone(), index) {
            return Err(bad(format!(
                "image_id {id} appears twice (entries {first} and {index})"
            )));
        }
        out.push((id, caption.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ids_become_numbers_and_read_back_as_the_same_text() {
        let bytes = to_json([
            ("391895", "a man on a bike".to_string()),
            ("007", "zero-padded stays a string".to_string()),
            ("astronaut", "a person in a suit".to_string()),
        ])
        .unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value[0]["image_id"], Value::from(391895u64));
        assert_eq!(value[1]["image_id"], Value::from("007"));
        assert_eq!(value[2]["image_id"], Value::from("astronaut"));
        let back = parse(Path::new("r.json"), std::str::from_utf8(&bytes).unwrap()).unwrap();
        assert_eq!(
            back[0],
            ("391895".to_string(), "a man on a bike".to_string())
        );
        assert_eq!(back[1].0, "007");
        assert_eq!(back.len(), 3);
    }

    #[test]
    fn missing_keys_and_duplicates_are_errors_naming_the_entry() {
        let path = Path::new("r.json");
        let err = parse(
            path,
            r#"[{"image_id": 1, "caption": "a"}, {"image_id": 2}]"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("entry 1: needs \"caption\""),
            "{err}"
        );
        let err = parse(
            path,
            r#"[{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}]"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("appears twice (entries 0 and 1)"),
            "{err}"
        );
        assert!(parse(path, r#"{"image_id": 1}"#).is_err());
    }
}
