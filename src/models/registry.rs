//! Which model family a checkpoint is: `config.json`'s `architectures` (as transformers'
//! `AutoModel` reads it) -> [`Architecture`]. A config without `architectures` is taken for
//! captioning (what vlmrun has always loaded).

use serde::Deserialize;

/// The BLIP heads vlmrun knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `BlipForConditionalGeneration` (`Salesforce/blip-image-captioning-*`).
    Captioning,
    /// `BlipForQuestionAnswering` (`Salesforce/blip-vqa-base`, `blip-vqa-capfilt-large`).
    QuestionAnswering,
    /// `BlipForImageTextRetrieval` (`Salesforce/blip-itm-*`).
    ImageTextRetrieval,
}

impl Architecture {
    /// The transformers class name.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Captioning => "BlipForConditionalGeneration",
            Self::QuestionAnswering => "BlipForQuestionAnswering",
            Self::ImageTextRetrieval => "BlipForImageTextRetrieval",
        }
    }

    /// The vlmrun command that runs it, and an example checkpoint.
    pub fn command_and_example(self) -> (&'static str, &'static str) {
        match self {
            Self::Captioning => ("caption", "Salesforce/blip-image-captioning-base"),
            Self::QuestionAnswering => ("vqa", "Salesforce/blip-vqa-base"),
            Self::ImageTextRetrieval => ("match", "Salesforce/blip-itm-base-coco"),
        }
    }

    fn from_class_name(name: &str) -> Option<Self> {
        [
            Self::Captioning,
            Self::QuestionAnswering,
            Self::ImageTextRetrieval,
        ]
        .into_iter()
        .find(|a| a.class_name() == name)
    }
}

#[derive(Deserialize)]
struct RawArchitectures {
    architectures: Option<Vec<String>>,
}

/// Why the architecture could not be told.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("config.json is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("config.json names architectures {0:?}, none of which vlmrun runs (BlipForConditionalGeneration, BlipForQuestionAnswering, BlipForImageTextRetrieval)")]
    Unknown(Vec<String>),
}

/// The architecture `config.json` (its text) declares: the first known name of `architectures`.
pub fn architecture(config_json: &str) -> Result<Architecture, RegistryError> {
    let raw: RawArchitectures = serde_json::from_str(config_json)?;
    match raw.architectures {
        None => Ok(Architecture::Captioning),
        Some(names) if names.is_empty() => Ok(Architecture::Captioning),
        Some(names) => names
            .iter()
            .find_map(|n| Architecture::from_class_name(n))
            .ok_or(RegistryError::Unknown(names)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_architecture_from_config_json() {
        let vqa = r#"{"architectures": ["BlipForQuestionAnswering"], "text_config": {}}"#;
        assert_eq!(architecture(vqa).unwrap(), Architecture::QuestionAnswering);
        let itm = r#"{"architectures": ["BlipForImageTextRetrieval"]}"#;
        assert_eq!(architecture(itm).unwrap(), Architecture::ImageTextRetrieval);
        assert_eq!(architecture("{}").unwrap(), Architecture::Captioning);
        let err =
            architecture(r#"{"architectures": ["LlavaForConditionalGeneration"]}"#).unwrap_err();
        assert!(
            err.to_string().contains("LlavaForConditionalGeneration"),
            "{err}"
        );
    }
}
