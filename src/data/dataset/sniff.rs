//! Which kind of caption file a JSON document is, from its shape: a COCO annotation file (an object
//! with `images`), a LAVIS annotation file (a list of objects with `image`), or a COCO results file
//! (a list of objects with `image_id` and `caption`, no `image`). Lets every reader say "this is a
//! LAVIS file: set data.source: lavis" instead of a parser's message, and `score` take any of them.

use serde_json::Value;

/// The kinds of JSON caption files vlmrun reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    /// `{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}`.
    CocoAnnotations,
    /// `[{"image", "caption", "image_id"?}]`.
    Lavis,
    /// `[{"image_id", "caption"}]` (pycocoevalcap's `loadRes`, what `baseline` writes as results.json).
    CocoResults,
}

impl JsonKind {
    /// What to call it in a message, with the setting or flag that reads it.
    pub fn describe(self) -> &'static str {
        match self {
            JsonKind::CocoAnnotations => {
                "a COCO captions annotation file (read with data.source: coco)"
            }
            JsonKind::Lavis => "a LAVIS annotation file (read with data.source: lavis)",
            JsonKind::CocoResults => {
                "a COCO results file of captions (score it: vlmrun score --predictions FILE)"
            }
        }
    }
}

/// The kind of `document`, or `None` when it is none of them (the message then says what it is).
pub fn kind(document: &Value) -> Result<JsonKind, String> {
    match document {
        Value::Object(map) if map.contains_key("images") => Ok(JsonKind::CocoAnnotations),
        Value::Object(map) => {
            let keys: Vec<&str> = map.keys().take(5).map(String::as_str).collect();
            Err(format!(
                "a JSON object with keys {keys:?} but no \"images\" list"
            ))
        }
        Value::Array(entries) => match entries.first() {
            None => Err("an empty JSON list".to_string()),
            Some(Value::Object(first)) if first.contains_key("image") => Ok(JsonKind::Lavis),
            Some(Value::Object(first))
                if first.contains_key("image_id") && first.contains_key("caption") =>
            {
                Ok(JsonKind::CocoResults)
            }
            Some(Value::Object(first)) => {
                let keys: Vec<&str> = first.keys().take(5).map(String::as_str).collect();
                Err(format!(
                    "a JSON list whose first entry has keys {keys:?} (neither \"image\" nor \"image_id\" + \"caption\")"
                ))
            }
            Some(_) => Err("a JSON list of something other than objects".to_string()),
        },
        _ => Err("a single JSON value, not an object or a list".to_string()),
    }
}

/// The error text for a file that is not what `expected` reads: what it is instead, and how to read it.
pub fn mismatch(document: &Value, expected: JsonKind) -> String {
    let formats = "vlmrun reads COCO captions annotations ({\"images\": [{\"id\", \"file_name\"}], \"annotations\": [{\"image_id\", \"caption\"}]}, data.source: coco), LAVIS annotations ([{\"image\", \"caption\", \"image_id\"?}], data.source: lavis) and JSONL manifests (data.source: manifest)";
    match kind(document) {
        Ok(found) => format!(
            "this is {}, not {}\n  fix: set data.source to match the file",
            found.describe(),
            expected.describe()
        ),
        Err(what) => format!("not a caption dataset: the file is {what}\n  fix: {formats}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_shape_is_recognised_and_others_are_described() {
        assert_eq!(
            kind(&json!({"images": [], "annotations": []})),
            Ok(JsonKind::CocoAnnotations)
        );
        assert_eq!(
            kind(&json!([{"image": "a.jpg", "caption": ["x"]}])),
            Ok(JsonKind::Lavis)
        );
        assert_eq!(
            kind(&json!([{"image_id": 1, "caption": "x"}])),
            Ok(JsonKind::CocoResults)
        );
        let other = kind(&json!({"questions": []})).unwrap_err();
        assert!(other.contains("questions"), "{other}");
        let message = mismatch(
            &json!([{"image": "a.jpg", "caption": "x"}]),
            JsonKind::CocoAnnotations,
        );
        assert!(message.contains("data.source: lavis"), "{message}");
        assert!(mismatch(&json!(3), JsonKind::Lavis).contains("not a caption dataset"));
    }
}
