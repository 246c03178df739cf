//! `task: vqa`: answers every question of `data.path` (a VQAv2 questions file, or a LAVIS VQA JSON
//! list; images under `data.image_root`, default the file's folder) with a
//! `BlipForQuestionAnswering` checkpoint, in `generate` mode (the `generation.*` settings, batches
//! of `generation.batch_size`) or LAVIS's `rank` mode over `vqa.answer_list` (batches of
//! `generation.batch_size` questions, `vqa.num_ans_candidates` candidates each). Outputs: `answers.jsonl` (appended after every batch),
//! `errors.jsonl` (questions that failed, with the reason), `submission.json` (the official
//! `[{"question_id", "answer"}]`), `report.json` (schema `vlmrun.vqa/1`, the VQA accuracy of the
//! official evaluation when there are answers: `vqa.annotations` or the LAVIS file's own),
//! `report.html` (every question with its answer and accuracy, worst first: `html`) and
//! `settings.json`.
//!
//! Resume as the caption baseline: a rerun skips questions already in `answers.jsonl` (a torn
//! last line is dropped and redone) when the settings that decide an answer are the same (exit 2
//! naming the changed keys otherwise) and their image did not change. Input mistakes are refused
//! before the model loads (annotations of another split, a missing or empty answer list: exit 5;
//! rank mode without `vqa.answer_list`: exit 2); a question longer than the model's positions or
//! whose image cannot be read is recorded in `errors.jsonl` and the rest answered (exit 3).

pub mod answering;
mod html;
pub mod inputs;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::json;

use super::{resume, RunOptions};
use crate::config::{ResolvedConfig, VqaGroundTruth};
use crate::data::predictions::{image_stamp, recover_records, rewrite};
use crate::data::vqa::{SubmissionEntry, VqaQuestion};
use crate::device::{self, CudaAvailability, SystemFacts};
use crate::engine::Answerer;
use crate::error::Error;
use crate::exit::Exit;
use crate::metrics::vqa::{vqa_accuracy, GroundTruth};
use crate::report::output::{lock_output_dir, output_error, prepare_output_dir};
use crate::report::{write_json_atomic, Percentiles};
use answering::{answer_all, as_output, AnswerRecord, Outcome, Paths};
use inputs::{read_inputs, settings};

pub const SCHEMA: &str = "vlmrun.vqa/1";
pub const ANSWERS_FILE: &str = "answers.jsonl";
pub const SUBMISSION_FILE: &str = "submission.json";

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
            html::HTML_FILE,
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
    let answered: Vec<AnswerRecord> = inputs
        .questions
        .iter()
        .filter_map(|q| answers.remove(&q.question_id))
        .collect();
    let submission: Vec<SubmissionEntry> = answered
        .iter()
        .map(|r| SubmissionEntry {
            question_id: r.question_id,
            answer: r.answer.clone(),
        })
        .collect();
    let submission_path = out_dir.join(SUBMISSION_FILE);
    write_json_atomic(&submission_path, &submission)
        .map_err(|source| output_error("the VQA submission", &submission_path, source))?;
    let mut scores = None;
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
            let summary = json!({
                "overall": a.overall,
                "per_answer_type": a.per_answer_type,
                "per_question_type": a.per_question_type,
                "ground_truth": a.ground_truth,
                "questions": a.n_questions,
            });
            scores = Some(a);
            Some(summary)
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
    html::write(
        &out_dir,
        &report,
        &answered,
        scores.as_ref(),
        inputs.annotations.as_deref(),
        &paths.errors,
    )?;
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
