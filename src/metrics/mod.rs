//! COCO caption metrics exactly as pycocoevalcap 1.2 computes them: PTB tokenization, then corpus
//! BLEU-1..4, CIDEr-D and ROUGE-L with per-image scores.
//!
//! [`score`] takes raw captions (it tokenizes them); [`score_tokenized`] and the metric modules work on
//! captions that are already tokenized (space-separated words). [`score_captions`] is [`score`] for
//! generated captions (prompt stripped, images without references left out).

pub mod bleu;
mod captions;
pub mod cider;
mod ngrams;
pub mod ptb;
pub mod retrieval;
pub mod rouge;
pub mod vqa;

use std::collections::BTreeMap;

use serde::Serialize;

pub use captions::{score_captions, strip_prompt};
pub use ptb::{PtbError, PtbTokenizer};

/// How many missing ids an error message lists.
const IDS_SHOWN: usize = 5;

/// Errors of metric computation.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("no images to score: the hypotheses and references are both empty")]
    Empty,
    #[error(
        "{count} image id(s) have a hypothesis but no references (e.g. {examples}); \
         score only images present in the reference set"
    )]
    MissingReferences { count: usize, examples: String },
    #[error(
        "{count} image id(s) have references but no hypothesis (e.g. {examples}); \
         caption every reference image or restrict the references to the captioned images"
    )]
    MissingHypotheses { count: usize, examples: String },
    #[error("image {image:?} has an empty reference list; every image needs at least one reference caption")]
    NoReferences { image: String },
    #[error(transparent)]
    Tokenizer(#[from] PtbError),
}

/// One image's hypothesis and references, as the metric functions take them.
#[derive(Clone, Copy, Debug)]
pub struct ImageCaptions<'a> {
    pub hypothesis: &'a str,
    pub references: &'a [String],
}

/// Scores of one image (pycocoevalcap's `imgToEval` entry).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ImageScores {
    /// BLEU-1..4 of this image alone (pycocoevalcap's per-image `Bleu_n`).
    pub bleu: [f64; 4],
    pub cider: f64,
    pub rouge_l: f64,
}

/// Corpus scores (pycocoevalcap's `eval`) plus per-image scores.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scores {
    /// Corpus BLEU-1..4.
    pub bleu: [f64; 4],
    /// Corpus CIDEr-D (mean of per-image scores).
    pub cider: f64,
    /// Corpus ROUGE-L (mean of per-image scores).
    pub rouge_l: f64,
    pub per_image: BTreeMap<String, ImageScores>,
    pub n_images: usize,
}

/// Tokenizes hypotheses and references with the PTB tokenizer, then scores them.
///
/// Both maps must hold the same image ids; every image needs at least one reference.
pub fn score(
    hypotheses: &BTreeMap<String, String>,
    references: &BTreeMap<String, Vec<String>>,
) -> Result<Scores, MetricsError> {
    check_ids(hypotheses, references)?;
    let tokenizer = PtbTokenizer::new()?;
    let tokenized = tokenizer.tokenize_all(hypotheses.values().map(String::as_str));
    let hypotheses: BTreeMap<String, String> = hypotheses.keys().cloned().zip(tokenized).collect();
    let all_references = references.values().flatten().map(String::as_str);
    let mut tokenized = tokenizer.tokenize_all(all_references).into_iter();
    let references: BTreeMap<String, Vec<String>> = references
        .iter()
        .map(|(id, captions)| {
            (
                id.clone(),
                tokenized.by_ref().take(captions.len()).collect(),
            )
        })
        .collect();
    score_tokenized(&hypotheses, &references)
}

/// Scores captions that are already tokenized (no PTB step), with the same checks as [`score`].
pub fn score_tokenized(
    hypotheses: &BTreeMap<String, String>,
    references: &BTreeMap<String, Vec<String>>,
) -> Result<Scores, MetricsError> {
    check_ids(hypotheses, references)?;
    let images: Vec<ImageCaptions<'_>> = hypotheses
        .iter()
        .zip(references.values())
        .map(|((_, hypothesis), references)| ImageCaptions {
            hypothesis,
            references,
        })
        .collect();
    let bleu = bleu::bleu(&images);
    let cider = cider::cider_d(&images);
    let rouge = rouge::rouge_l(&images);
    let per_image = hypotheses
        .keys()
        .zip(
            bleu.per_image
                .iter()
                .zip(&cider.per_image)
                .zip(&rouge.per_image),
        )
        .map(|(id, ((&bleu, &cider), &rouge_l))| {
            (
                id.clone(),
                ImageScores {
                    bleu,
                    cider,
                    rouge_l,
                },
            )
        })
        .collect();
    Ok(Scores {
        bleu: bleu.corpus,
        cider: cider.corpus,
        rouge_l: rouge.corpus,
        per_image,
        n_images: images.len(),
    })
}

/// Both maps must hold exactly the same ids (then their sorted iteration orders pair up), and be
/// non-empty, and every reference list non-empty.
fn check_ids(
    hypotheses: &BTreeMap<String, String>,
    references: &BTreeMap<String, Vec<String>>,
) -> Result<(), MetricsError> {
    if hypotheses.is_empty() && references.is_empty() {
        return Err(MetricsError::Empty);
    }
    let no_refs: Vec<&String> = hypotheses
        .keys()
        .filter(|id| !references.contains_key(*id))
        .collect();
    if !no_refs.is_empty() {
        return Err(MetricsError::MissingReferences {
            count: no_refs.len(),
            examples: examples(&no_refs),
        });
    }
    let no_hyp: Vec<&String> = references
        .keys()
        .filter(|id| !hypotheses.contains_key(*id))
        .collect();
    if !no_hyp.is_empty() {
        return Err(MetricsError::MissingHypotheses {
            count: no_hyp.len(),
            examples: examples(&no_hyp),
        });
    }
    if let Some((image, _)) = references.iter().find(|(_, captions)| captions.is_empty()) {
        return Err(MetricsError::NoReferences {
            image: image.clone(),
        });
    }
    Ok(())
}

fn examples(ids: &[&String]) -> String {
    let shown: Vec<String> = ids
        .iter()
        .take(IDS_SHOWN)
        .map(|id| format!("{id:?}"))
        .collect();
    let more = ids.len().saturating_sub(IDS_SHOWN);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}
