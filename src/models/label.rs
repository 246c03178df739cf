//! What a model directory says about itself: `vlmrun-model.json`, an optional file beside
//! `config.json` that labels a model known not to be a real captioner, so that runs can say so.
//!
//! ```json
//! {"kind": "demo", "description": "demo model: ... memorised ..."}
//! ```
//!
//! `kind` is `random` (random weights: captions are gibberish by design; `models/tiny-blip`, the
//! parity tests' model) or `demo` (trained on the data it is shown on; `models/demo-blip`, the
//! built-in default, made by `scripts/make-demo-model.sh`). `description` is one sentence for
//! people. Other keys (how the model was made) are ignored. Models without the file (a hub
//! checkpoint, a `train` checkpoint) are unlabelled. Only the repository's own models carry it.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The label file's name in a model directory.
pub const LABEL_FILE: &str = "vlmrun-model.json";

/// What kind of model a label declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Random weights: the pipeline runs, the captions mean nothing.
    Random,
    /// A small model trained on the data it is demonstrated on.
    Demo,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Random => "random",
            ModelKind::Demo => "demo",
        }
    }
}

/// A model directory's label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelLabel {
    pub kind: ModelKind,
    #[serde(default)]
    pub description: Option<String>,
}

/// A label file that exists but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{} is not a model label ({message}); the model is treated as unlabelled\n  fix: write {{\"kind\": \"random\"|\"demo\", \"description\": \"...\"}} or delete the file", path.display())]
pub struct LabelError {
    path: std::path::PathBuf,
    message: String,
}

/// Reads `dir/vlmrun-model.json`: `Ok(None)` when `dir` is not a directory or has no label file.
pub fn read(dir: &Path) -> Result<Option<ModelLabel>, LabelError> {
    let path = dir.join(LABEL_FILE);
    if !dir.is_dir() || !path.is_file() {
        return Ok(None);
    }
    let error = |message: String| LabelError {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| error(e.to_string()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| error(e.to_string()))
}

/// How a run's `model:` line names a model's kind: the label's kind, or `trained` for an
/// unlabelled model (a hub or `train` checkpoint, taken for a real captioner).
pub fn kind_name(kind: Option<ModelKind>) -> &'static str {
    kind.map_or("trained", ModelKind::as_str)
}

/// The one line `caption` and `bench` print on stderr about the model they loaded: `source`, the
/// directory or file `loaded`, the kind, and the label's description (or, unlabelled, that no
/// label file says otherwise). A label file that cannot be read counts as no label, and is said.
pub fn model_line(source: &str, loaded: &Path) -> String {
    let (kind, about) = match read(loaded) {
        Ok(Some(label)) => (
            Some(label.kind),
            label
                .description
                .unwrap_or_else(|| "no description".to_string()),
        ),
        Ok(None) => (None, format!("unlabelled: no {LABEL_FILE}")),
        Err(err) => (
            None,
            err.to_string().lines().next().unwrap_or("").to_string(),
        ),
    };
    let at = if Path::new(source) == loaded {
        String::new()
    } else {
        format!(" at {}", loaded.display())
    };
    format!("model: {source}{at} (kind {}: {about})", kind_name(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_label_and_ignores_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LABEL_FILE),
            r#"{"kind": "demo", "description": "memorised", "made_by": "x.sh", "steps": 3}"#,
        )
        .unwrap();
        let label = read(dir.path()).unwrap().unwrap();
        assert_eq!(label.kind, ModelKind::Demo);
        assert_eq!(label.description.as_deref(), Some("memorised"));
    }

    #[test]
    fn no_file_or_no_directory_is_unlabelled() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        assert_eq!(read(&dir.path().join("model.gguf")).unwrap(), None);
    }

    #[test]
    fn an_unknown_kind_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LABEL_FILE), r#"{"kind": "great"}"#).unwrap();
        let message = read(dir.path()).unwrap_err().to_string();
        assert!(message.contains(LABEL_FILE), "{message}");
        assert!(message.contains("unknown variant"), "{message}");
    }

    #[test]
    fn the_model_line_names_source_directory_and_kind() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let demo = model_line("models/demo-blip", &root.join("models/demo-blip"));
        assert!(demo.starts_with("model: models/demo-blip at "), "{demo}");
        assert!(demo.contains("(kind demo: demo model:"), "{demo}");
        let tiny = root.join("models/tiny-blip");
        let random = model_line(&tiny.display().to_string(), &tiny);
        assert!(!random.contains(" at "), "{random}");
        assert!(random.contains("(kind random: random weights"), "{random}");
        let dir = tempfile::tempdir().unwrap();
        let trained = model_line("org/name", dir.path());
        assert!(
            trained.ends_with("(kind trained: unlabelled: no vlmrun-model.json)"),
            "{trained}"
        );
    }

    #[test]
    fn the_repository_models_are_labelled() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let tiny = read(&root.join("models/tiny-blip")).unwrap().unwrap();
        assert_eq!(tiny.kind, ModelKind::Random);
        let demo = read(&root.join("models/demo-blip")).unwrap().unwrap();
        assert_eq!(demo.kind, ModelKind::Demo);
        assert!(demo.description.is_some_and(|d| d.contains("memorised")));
    }
}
