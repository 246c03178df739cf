//! `task: vqa`: answers every question of `data.path` (a VQAv2 questions file, or a LAVIS VQA JSON
//! list; images under `data.image_root`, default the file's folder) with a
//! `BlipForQuestionAnswering` checkpoint, in `generate` mode (the `generation.*` settings, batches
//! of `generation.batch_size`) or LAVIS's `rank` mode over `vqa.answer_list` (one question at a
//! time, `vqa.num_ans_candidates`). Outputs: `answers.jsonl` (appended after every batch),
//! `errors.jsonl` (questions that failed, with the reason), `submission.json` (the official
//! `[{"question_id", "answer"}]`), `report.json` (schema `vlmrun.vqa/1`, the VQA accuracy of the
//! official evaluation when there are answers: `vqa.annotations` or the LAVIS file's own), and
//! `settings.json`.
//!
//! Resume as the caption baseline: a rerun skips questions already in `answers.jsonl` (a torn
//! last line is dropped and redone) when the settings that decide an answer are the same (exit 2
//! naming the changed keys otherwise) and their image did not change. Input mistakes are refused
//! before the model loads (annotations of another split, a missing or empty answer list: exit 5;
//! rank mode without `vqa.answer_list`: exit 2); a question longer than the model's positions or
//! whose image cannot be read is recorded in `errors.jsonl` and the rest answered (exit 3).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{resume, RunOptions};
use crate::config::{Config, FirstToken, ResolvedConfig, VqaGroundTruth, VqaInference};
use crate::data::predictions::{image_stamp, recover_records, rewrite, JsonlAppender};
use crate::data::vqa::{
    read_annotations, read_answer_list, read_any_questions, AnnotatedQuestion, SubmissionEntry,
    VqaQuestion,
};
use crate::device::{self, ActiveDevice, CudaAvailability, SystemFacts};
use crate::distributed::fingerprint;
use crate::engine::Answerer;
use crate::error::Error;
use crate::exit::Exit;
use crate::metrics::vqa::{vqa_accuracy, GroundTruth};
use crate::report::output::{lock_output_dir, output_error, prepare_output_dir};
use crate::report::progress::Progress;
use crate::report::{write_json_atomic, Percentiles};

pub const SCHEMA: &str = "vlmrun.vqa/1";
pub const ANSWERS_FILE: &str = "answers.jsonl";
pub const SUBMISSION_FILE: &str = "submission.json";

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

/// The questions, their answers where known, and the answer list of rank mode: everything read
/// before the device opens.
struct Inputs {
    questions: Vec<VqaQuestion>,
    annotations: Option<Vec<AnnotatedQuestion>>,
    answer_list: Option<Vec<String>>,
}

fn read_inputs(config: &Config) -> Result<Inputs, Error> {
    let input = |e: crate::data::vqa::VqaDataError| Error::Input(e.to_string());
    let path = &config.data.path;
    let image_root = config
        .data
        .image_root
        .clone()
        .unwrap_or_else(|| path.parent().map(Path::to_path_buf).unwrap_or_default());
    let (mut questions, inline) = read_any_questions(path, &image_root).map_err(input)?;
    questions.drain(..config.data.offset.min(questions.len()));
    if let Some(limit) = config.data.limit {
        questions.truncate(limit);
    }
    if questions.is_empty() {
        return Err(Error::Input(format!(
            "{}: no questions (after data.offset/data.limit)\n  fix: point data.path at a VQAv2 questions file or a LAVIS VQA JSON list",
            path.display()
        )));
    }
    let annotations = match &config.vqa.annotations {
        Some(file) => Some(read_annotations(file, &questions).map_err(input)?),
        None => inline,
    };
    let answer_list = match (config.vqa.inference, &config.vqa.answer_list) {
        (VqaInference::Rank, None) => {
            return Err(Error::Usage(
                "vqa.inference is rank but vqa.answer_list is not set: rank mode chooses each answer from a list\n  fix: --set vqa.answer_list=answer_list.json (LAVIS's), or --set vqa.inference=generate"
                    .to_string(),
            ))
        }
        (VqaInference::Rank, Some(file)) => Some(read_answer_list(file).map_err(input)?),
        (VqaInference::Generate, _) => None,
    };
    Ok(Inputs {
        questions,
        annotations,
        answer_list,
    })
}

/// The settings that decide an answer: the caption baseline's (model files, precision,
/// preprocessing, generation) and the VQA ones.
fn settings(
    config: &Config,
    active: &ActiveDevice,
) -> Result<BTreeMap<String, serde_json::Value>, Error> {
    let mut settings = resume::current_settings(config, active)?;
    let vqa = &config.vqa;
    settings.insert("task".to_string(), json!("vqa"));
    settings.insert("vqa.inference".to_string(), json!(vqa.inference));
    settings.insert(
        "vqa.question_first_token".to_string(),
        json!(vqa.question_first_token),
    );
    if vqa.inference == VqaInference::Rank {
        settings.insert(
            "vqa.num_ans_candidates".to_string(),
            json!(vqa.num_ans_candidates),
        );
        if let Some(list) = &vqa.answer_list {
            let identity = fingerprint::files_identity(list)
                .map_err(|e| Error::Input(format!("{}: cannot read: {e}", list.display())))?;
            settings.insert("vqa.answer_list".to_string(), json!(identity));
        }
    }
    Ok(settings)
}

struct Paths {
    answers: PathBuf,
    errors: PathBuf,
    settings: PathBuf,
}

pub fn run(
    resolved: &ResolvedConfig,
    facts: &SystemFacts,
    cuda: &CudaAvailability,
    options: &RunOptions,
) -> Result<Exit, Error> {
    let started = Instant::now();
    let config = &resolved.config;
    let inputs = read_inputs(config)?;
    let active = device::activate(config.device, config.precision, facts, cuda)?;
    let _lock = lock_output_dir(&config.output.dir)?;
    let out_dir = prepare_output_dir(
        &config.output.dir,
        options.fresh,
        &[
            ANSWERS_FILE,
            super::ERRORS_FILE,
            super::REPORT_FILE,
            super::SETTINGS_FILE,
            SUBMISSION_FILE,
        ],
    )?;
    resolved
        .write_next_to(&out_dir)
        .map_err(|source| output_error("the resolved config", &out_dir, source))?;
    let paths = Paths {
        answers: out_dir.join(ANSWERS_FILE),
        errors: out_dir.join(super::ERRORS_FILE),
        settings: out_dir.join(super::SETTINGS_FILE),
    };
    let as_output = |path: &Path| {
        let path = path.to_path_buf();
        move |err: crate::data::predictions::PredictionsError| Error::Output {
            what: "VQA answers",
            path: path.clone(),
            source: std::io::Error::other(err.to_string()),
        }
    };

    // Resume: earlier answers of the same settings whose image did not change.
    let (records, torn) =
        recover_records::<AnswerRecord>(&paths.answers).map_err(as_output(&paths.answers))?;
    if torn > 0 {
        tracing::warn!(
            "dropped a torn last line ({torn} bytes) from {}: that question is answered again",
            paths.answers.display()
        );
    }
    let mut seen = HashSet::new();
    let mut earlier: Vec<AnswerRecord> = records
        .into_iter()
        .filter(|r| seen.insert(r.question_id))
        .collect();
    resume::check_settings(
        &paths.settings,
        &paths.answers,
        earlier.len(),
        &settings(config, &active)?,
    )?;
    let by_id: HashMap<u64, &VqaQuestion> = inputs
        .questions
        .iter()
        .map(|q| (q.question_id, q))
        .collect();
    let before = earlier.len();
    earlier.retain(|r| match by_id.get(&r.question_id) {
        None => true,
        Some(q) => {
            r.image == q.image.display().to_string()
                && r.image_stamp.is_some()
                && r.image_stamp == image_stamp(&q.image)
        }
    });
    if earlier.len() < before {
        tracing::warn!(
            "{} question(s) whose image changed since they were answered: answered again",
            before - earlier.len()
        );
        rewrite(&paths.answers, &earlier).map_err(as_output(&paths.answers))?;
    }
    let done: HashSet<u64> = earlier.iter().map(|r| r.question_id).collect();
    let pending: Vec<&VqaQuestion> = inputs
        .questions
        .iter()
        .filter(|q| !done.contains(&q.question_id))
        .collect();
    let skipped = inputs.questions.len() - pending.len();
    if skipped > 0 && !options.quiet {
        eprintln!(
            "resuming: {skipped} of {} questions already in {}",
            inputs.questions.len(),
            paths.answers.display()
        );
    }

    let mut outcome = Outcome::default();
    let mut model_load_s = None;
    if !pending.is_empty() && !options.interrupted.load(Ordering::Relaxed) {
        let load_started = Instant::now();
        let answerer = Answerer::load(config, &active)?;
        model_load_s = Some(load_started.elapsed().as_secs_f64());
        let candidates = inputs
            .answer_list
            .as_ref()
            .map(|list| answerer.answer_candidates(list))
            .transpose()?;
        outcome = answer_all(
            &answerer,
            config,
            &pending,
            candidates.as_deref(),
            &inputs,
            &paths,
            options,
        )?;
    } else if !pending.is_empty() {
        outcome.interrupted = true;
    }
    let remaining = pending.len() - outcome.records.len() - outcome.failed;

    // Submission and accuracy over every answer (earlier runs' and this one's), in file order.
    let mut answers: BTreeMap<u64, AnswerRecord> = earlier
        .into_iter()
        .chain(outcome.records.iter().cloned())
        .map(|r| (r.question_id, r))
        .collect();
    let submission: Vec<SubmissionEntry> = inputs
        .questions
        .iter()
        .filter_map(|q| answers.remove(&q.question_id))
        .map(|r| SubmissionEntry {
            question_id: r.question_id,
            answer: r.answer,
        })
        .collect();
    let submission_path = out_dir.join(SUBMISSION_FILE);
    write_json_atomic(&submission_path, &submission)
        .map_err(|source| output_error("the VQA submission", &submission_path, source))?;
    let accuracy = match &inputs.annotations {
        Some(annotations) if !submission.is_empty() => {
            let predictions: BTreeMap<u64, String> = submission
                .iter()
                .map(|e| (e.question_id, e.answer.clone()))
                .collect();
            let mode = match config.vqa.ground_truth {
                VqaGroundTruth::Official => GroundTruth::Official,
                VqaGroundTruth::Full => GroundTruth::Full,
            };
            let a = vqa_accuracy(&predictions, annotations, mode)
                .map_err(|e| Error::Internal(format!("VQA accuracy: {e}")))?;
            Some(json!({
                "overall": a.overall,
                "per_answer_type": a.per_answer_type,
                "per_question_type": a.per_question_type,
                "ground_truth": a.ground_truth,
                "questions": a.n_questions,
            }))
        }
        _ => None,
    };
    let interrupted = outcome.interrupted || remaining > 0;
    let status = if interrupted {
        "interrupted"
    } else if outcome.failed > 0 {
        "complete_with_failures"
    } else {
        "complete"
    };
    let done_now = outcome.records.len();
    let report = json!({
        "schema": SCHEMA,
        "task": "vqa",
        "status": status,
        "environment": crate::report::describe_environment(&active, facts, cuda, config, Some(config.model.source.clone())),
        "timings": {
            "model_load_s": model_load_s,
            "run_s": outcome.run_s,
            "total_s": started.elapsed().as_secs_f64(),
            "questions_per_s": if outcome.run_s > 0.0 { done_now as f64 / outcome.run_s } else { 0.0 },
            "batch_latency_ms": Percentiles::of(&outcome.batch_latency_ms),
        },
        "counts": {
            "dataset": inputs.questions.len(),
            "skipped": skipped,
            "done": done_now,
            "failed": outcome.failed,
            "remaining": remaining,
            "answered": submission.len(),
        },
        "metrics": accuracy.map(|a| json!({ "vqa_accuracy": a })),
        "inference": config.vqa.inference,
        "config": serde_json::to_value(config).map_err(|e| Error::Internal(e.to_string()))?,
    });
    let report_path = out_dir.join(super::REPORT_FILE);
    write_json_atomic(&report_path, &report)
        .map_err(|source| output_error("the report", &report_path, source))?;
    if !options.quiet {
        let accuracy = report["metrics"]["vqa_accuracy"]["overall"]
            .as_f64()
            .map_or("no answers to score against".to_string(), |a| {
                format!("{a:.2}")
            });
        eprintln!(
            "vqa: {} questions, {} answered ({} now, {} skipped), {} failed, {} remaining; accuracy {accuracy}\n  results in {}",
            inputs.questions.len(),
            submission.len(),
            done_now,
            skipped,
            outcome.failed,
            remaining,
            out_dir.display()
        );
        if interrupted {
            eprintln!("interrupted: answers so far are saved; rerun the same command to resume");
        }
    }
    Ok(if interrupted {
        Exit::Interrupted
    } else if outcome.failed > 0 {
        Exit::CompletedWithFailures
    } else {
        Exit::Success
    })
}

#[derive(Default)]
struct Outcome {
    records: Vec<AnswerRecord>,
    failed: usize,
    interrupted: bool,
    run_s: f64,
    batch_latency_ms: Vec<f64>,
}

/// Answers `pending` in batches, appending to `answers.jsonl` / `errors.jsonl` after each.
fn answer_all(
    answerer: &Answerer,
    config: &Config,
    pending: &[&VqaQuestion],
    candidates: Option<&[Vec<u32>]>,
    inputs: &Inputs,
    paths: &Paths,
    options: &RunOptions,
) -> Result<Outcome, Error> {
    let as_output = |path: &Path| {
        let path = path.to_path_buf();
        move |err: crate::data::predictions::PredictionsError| Error::Output {
            what: "VQA answers",
            path: path.clone(),
            source: std::io::Error::other(err.to_string()),
        }
    };
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
        "{bar:40} {pos}/{len} questions  {msg}",
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
                let pixels = processor
                    .process_file(&q.image)
                    .map_err(|e| Error::Input(e.to_string()))?;
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
                    ok.iter()
                        .map(|(_, (pixels, ids, _))| {
                            let best = answerer.rank_pixels(pixels, ids, candidates, k)?;
                            let answer = list.get(best.index).cloned().unwrap_or_default();
                            Ok((answer, Vec::new(), Some(best.score)))
                        })
                        .collect::<Result<_, Error>>()?
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
        let rate = handled as f64 / started.elapsed().as_secs_f64().max(1e-9);
        progress.update(handled as u64, &format!("{rate:.1} questions/s"));
        if options.interrupted.load(Ordering::Relaxed) {
            outcome.interrupted = handled < total;
            break;
        }
    }
    progress.finish();
    outcome.run_s = started.elapsed().as_secs_f64();
    Ok(outcome)
}
