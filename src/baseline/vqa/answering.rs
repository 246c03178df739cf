//! `task: vqa`'s answering loop: batches of questions (decoded and tokenized on worker threads)
//! answered in generate or rank mode, appended to `answers.jsonl` / `errors.jsonl` after each
//! batch, with progress and the interrupt flag checked between batches.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::inputs::Inputs;
use crate::baseline::RunOptions;
use crate::config::{Config, FirstToken};
use crate::data::predictions::{image_stamp, JsonlAppender, PredictionsError};
use crate::data::vqa::VqaQuestion;
use crate::engine::Answerer;
use crate::error::Error;
use crate::report::progress::Progress;

/// One line of `answers.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerRecord {
    pub question_id: u64,
    pub image: String,
    pub question: String,
    pub answer: String,
    /// `generate` mode: `[DEC]`, the answer's ids, `[SEP]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_ids: Vec<u32>,
    /// `rank` mode: the winning candidate's score (minus its label-smoothed summed cross-entropy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    pub batch: usize,
    pub latency_ms: f64,
    /// The image file when it was read (size and modification time): redone when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_stamp: Option<String>,
}

/// One line of `errors.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerFailure {
    pub question_id: u64,
    pub image: String,
    pub error: String,
}

/// Where one run appends.
pub struct Paths {
    pub answers: PathBuf,
    pub errors: PathBuf,
    pub settings: PathBuf,
}

/// The output error of a JSONL file at `path`.
pub fn as_output(path: &Path) -> impl Fn(PredictionsError) -> Error {
    let path = path.to_path_buf();
    move |err| Error::Output {
        what: "VQA answers",
        path: path.clone(),
        source: std::io::Error::other(err.to_string()),
    }
}

/// What answering the pending questions left.
#[derive(Default)]
pub struct Outcome {
    pub records: Vec<AnswerRecord>,
    pub failed: usize,
    pub interrupted: bool,
    pub run_s: f64,
    pub batch_latency_ms: Vec<f64>,
}

/// Answers `pending` in batches, appending to `answers.jsonl` / `errors.jsonl` after each.
pub fn answer_all(
    answerer: &Answerer,
    config: &Config,
    pending: &[&VqaQuestion],
    candidates: Option<&[Vec<u32>]>,
    inputs: &Inputs,
    paths: &Paths,
    options: &RunOptions,
) -> Result<Outcome, Error> {
    let mut answers_log = JsonlAppender::open(&paths.answers).map_err(as_output(&paths.answers))?;
    // errors.jsonl describes the latest run: questions that failed before are retried.
    let _ = std::fs::remove_file(&paths.errors);
    let mut errors_log = JsonlAppender::open(&paths.errors).map_err(as_output(&paths.errors))?;
    let processor = answerer.processor().clone();
    let enc_first = config.vqa.question_first_token == FirstToken::Enc;
    let k = config.vqa.num_ans_candidates;
    let total = pending.len();
    let progress = Progress::new(
        total as u64,
        0,
        options.quiet,
        None,
        "questions",
        "{wide_bar} {pos}/{len} questions  {msg}  elapsed {elapsed}  ETA {eta}",
        &options.console,
    );
    let started = Instant::now();
    let mut outcome = Outcome::default();
    let mut handled = 0usize;
    for (index, chunk) in pending
        .chunks(config.generation.batch_size.max(1))
        .enumerate()
    {
        let prepared: Vec<_> = chunk
            .par_iter()
            .map(|q| {
                let stamp = image_stamp(&q.image);
                let ids = answerer.question_ids(&q.question)?;
                let ids = if enc_first {
                    answerer.with_enc_first(ids)?
                } else {
                    ids
                };
                let pixels = processor.process_file(&q.image).map_err(Error::input)?;
                Ok::<_, Error>((pixels, ids, stamp))
            })
            .collect();
        let mut ok = Vec::with_capacity(chunk.len());
        let mut failures = Vec::new();
        for (q, item) in chunk.iter().zip(prepared) {
            match item {
                Ok(parts) => ok.push((*q, parts)),
                Err(err) => failures.push(AnswerFailure {
                    question_id: q.question_id,
                    image: q.image.display().to_string(),
                    error: format!("question {}: {err}", q.question_id),
                }),
            }
        }
        for f in &failures {
            tracing::warn!("{}", f.error);
        }
        errors_log
            .append(&failures)
            .map_err(as_output(&paths.errors))?;
        outcome.failed += failures.len();
        if !ok.is_empty() {
            let batch_started = Instant::now();
            let answered: Vec<(String, Vec<u32>, Option<f32>)> = match candidates {
                None => {
                    let pixels: Vec<Vec<f32>> = ok.iter().map(|(_, (p, _, _))| p.clone()).collect();
                    let ids: Vec<Vec<u32>> = ok.iter().map(|(_, (_, i, _))| i.clone()).collect();
                    answerer
                        .answer_pixels(&pixels, &ids)?
                        .into_iter()
                        .map(|a| (a.text, a.token_ids, None))
                        .collect()
                }
                Some(candidates) => {
                    let list = inputs.answer_list.as_deref().unwrap_or_default();
                    let pixels: Vec<Vec<f32>> = ok.iter().map(|(_, (p, _, _))| p.clone()).collect();
                    let ids: Vec<Vec<u32>> = ok.iter().map(|(_, (_, i, _))| i.clone()).collect();
                    answerer
                        .rank_pixels(&pixels, &ids, candidates, k)?
                        .into_iter()
                        .map(|best| {
                            let answer = list.get(best.index).cloned().unwrap_or_default();
                            (answer, Vec::new(), Some(best.score))
                        })
                        .collect()
                }
            };
            let latency_ms = batch_started.elapsed().as_secs_f64() * 1e3;
            let records: Vec<AnswerRecord> = ok
                .iter()
                .zip(answered)
                .map(
                    |((q, (_, _, stamp)), (answer, token_ids, score))| AnswerRecord {
                        question_id: q.question_id,
                        image: q.image.display().to_string(),
                        question: q.question.clone(),
                        answer,
                        token_ids,
                        score,
                        batch: index,
                        latency_ms,
                        image_stamp: stamp.clone(),
                    },
                )
                .collect();
            answers_log
                .append(&records)
                .map_err(as_output(&paths.answers))?;
            outcome.batch_latency_ms.push(latency_ms);
            outcome.records.extend(records);
        }
        handled += chunk.len();
        progress.update(handled as u64, "");
        if options.interrupted.load(Ordering::Relaxed) {
            outcome.interrupted = handled < total;
            break;
        }
    }
    progress.finish();
    outcome.run_s = started.elapsed().as_secs_f64();
    Ok(outcome)
}
