//! Prompt tokenization and caption decoding for BLIP, as transformers does it.
//!
//! `BlipForConditionalGeneration.generate` tokenizes the prompt with special tokens
//! (`[CLS] ... [SEP]`), overwrites the first id with the decoder's bos `[DEC]` (30522) and
//! drops the last id (the `[SEP]`). An empty prompt therefore gives `[30522]`.
//! Decoding is `tokenizer.decode(ids, skip_special_tokens=True)` with transformers 5's default
//! `clean_up_tokenization_spaces=False` ("a woman ' s dog."). transformers 4 defaulted to `True`
//! for BERT tokenizers, so a LAVIS-era baseline writes "a woman's dog.": choose that with
//! [`PromptTokenizer::with_clean_up_tokenization_spaces`].

use std::path::{Path, PathBuf};

/// BLIP's decoder start token `[DEC]`, which replaces `[CLS]` at position 0.
pub const DECODER_BOS_ID: u32 = 30522;

/// Why a tokenizer could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// tokenizer.json is missing or not a valid `tokenizers` file.
    #[error("cannot load tokenizer {path}: {detail}; point to the model's tokenizer.json (tokenizers format)")]
    Load { path: PathBuf, detail: String },

    /// The tokenizer lacks BERT's post-processor, so `[CLS]`/`[SEP]` are not added.
    #[error(
        "tokenizer {path} does not wrap text in [CLS] ... [SEP] (got ids {ids:?} for {prompt:?}): \
         use the BLIP/BERT tokenizer.json with its TemplateProcessing post-processor"
    )]
    MissingSpecialTokens {
        path: PathBuf,
        prompt: String,
        ids: Vec<u32>,
    },

    /// Encoding the prompt failed.
    #[error("cannot tokenize prompt {prompt:?} with {path}: {detail}")]
    Encode {
        path: PathBuf,
        prompt: String,
        detail: String,
    },

    /// Decoding ids failed (e.g. an id outside the vocabulary).
    #[error("cannot decode ids with tokenizer {path}: {detail}; are the ids from this model's vocabulary?")]
    Decode { path: PathBuf, detail: String },
}

/// A tokenized training caption (see [`PromptTokenizer::caption_ids`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionIds {
    /// `[30522, prompt and caption tokens..., 102]`.
    pub ids: Vec<u32>,
    /// Leading ids that are the prompt (`[DEC]` included): not predicted, not in the loss.
    pub prompt_len: usize,
}

/// A BLIP (BERT WordPiece) tokenizer for prompts and captions.
pub struct PromptTokenizer {
    tokenizer: tokenizers::Tokenizer,
    path: PathBuf,
    cls_id: u32,
    sep_id: u32,
    clean_up_tokenization_spaces: bool,
}

impl PromptTokenizer {
    /// Loads a `tokenizer.json` (the BERT tokenizer with `[DEC]`/`[ENC]` added).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PromptError> {
        let path = path.as_ref().to_path_buf();
        let load_error = |detail: String| PromptError::Load {
            path: path.clone(),
            detail,
        };
        let tokenizer =
            tokenizers::Tokenizer::from_file(&path).map_err(|err| load_error(err.to_string()))?;
        let cls_id = tokenizer
            .token_to_id("[CLS]")
            .ok_or_else(|| load_error("no [CLS] token in the vocabulary".to_string()))?;
        let sep_id = tokenizer
            .token_to_id("[SEP]")
            .ok_or_else(|| load_error("no [SEP] token in the vocabulary".to_string()))?;
        Ok(PromptTokenizer {
            tokenizer,
            path,
            cls_id,
            sep_id,
            clean_up_tokenization_spaces: false,
        })
    }

    /// Sets transformers' `clean_up_tokenization_spaces` for [`Self::decode`]: `false`
    /// (transformers 5, the default here) or `true` (transformers 4's BERT default).
    pub fn with_clean_up_tokenization_spaces(mut self, clean_up: bool) -> Self {
        self.clean_up_tokenization_spaces = clean_up;
        self
    }

    /// Decoder input ids for `prompt`: `[30522, prompt tokens...]` (no `[SEP]`);
    /// the empty prompt gives `[30522]`.
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<u32>, PromptError> {
        let encoding = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|err| PromptError::Encode {
                path: self.path.clone(),
                prompt: prompt.to_string(),
                detail: err.to_string(),
            })?;
        let ids = encoding.get_ids();
        match ids {
            [first, middle @ .., last] if *first == self.cls_id && *last == self.sep_id => {
                Ok(std::iter::once(DECODER_BOS_ID)
                    .chain(middle.iter().copied())
                    .collect())
            }
            _ => Err(PromptError::MissingSpecialTokens {
                path: self.path.clone(),
                prompt: prompt.to_string(),
                ids: ids.to_vec(),
            }),
        }
    }

    /// The id of `token` in the vocabulary (e.g. `[ENC]`), if present.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Encoder input ids for `text` as the BLIP processor tokenizes a question or a caption:
    /// `[CLS] tokens... [SEP]`.
    pub fn text_ids(&self, text: &str) -> Result<Vec<u32>, PromptError> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|err| PromptError::Encode {
                path: self.path.clone(),
                prompt: text.to_string(),
                detail: err.to_string(),
            })?;
        let ids = encoding.get_ids();
        match ids {
            [first, .., last] if *first == self.cls_id && *last == self.sep_id => Ok(ids.to_vec()),
            _ => Err(PromptError::MissingSpecialTokens {
                path: self.path.clone(),
                prompt: text.to_string(),
                ids: ids.to_vec(),
            }),
        }
    }

    /// Training sequence for `prompt` + `caption` as LAVIS builds it: `[30522, tokens..., [SEP]]`,
    /// truncated to `max_tokens` ids (the `[SEP]` kept), and the number of leading ids that belong
    /// to the prompt (`[DEC]` included), which the loss ignores.
    pub fn caption_ids(
        &self,
        prompt: &str,
        caption: &str,
        max_tokens: usize,
    ) -> Result<CaptionIds, PromptError> {
        let text = format!("{prompt}{caption}");
        let mut ids = self.prompt_ids(&text)?;
        ids.truncate(max_tokens.saturating_sub(1).max(1));
        ids.push(self.sep_id);
        let prompt_len = self.prompt_ids(prompt)?.len().min(ids.len());
        Ok(CaptionIds { ids, prompt_len })
    }

    /// Caption text of `ids`, skipping special tokens (`[DEC]`, `[SEP]`, `[PAD]`, ...).
    pub fn decode(&self, ids: &[u32]) -> Result<String, PromptError> {
        let text = self
            .tokenizer
            .decode(ids, true)
            .map_err(|err| PromptError::Decode {
                path: self.path.clone(),
                detail: err.to_string(),
            })?;
        Ok(if self.clean_up_tokenization_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }
}

/// transformers' `clean_up_tokenization`: removes the spaces WordPiece decoding leaves before
/// punctuation and English contractions, in transformers' order.
fn clean_up_tokenization(text: &str) -> String {
    [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]
    .iter()
    .fold(text.to_string(), |acc, (from, to)| acc.replace(from, to))
}
