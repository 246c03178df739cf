//! Writes `task: vqa`'s `report.html` (`report::vqa_html`) from what the run wrote: every answered
//! question with its accuracy and human answers, the summary of `report.json`, and this run's
//! failures as `errors.jsonl` holds them.

use std::collections::HashMap;
use std::path::Path;

use super::answering::{AnswerFailure, AnswerRecord};
use crate::data::predictions::recover_records;
use crate::data::vqa::AnnotatedQuestion;
use crate::error::Error;
use crate::metrics::vqa::VqaAccuracy;
use crate::report::html::FailureRow;
use crate::report::output::output_error;
use crate::report::vqa_html::{self, QuestionRow, VqaHtmlReport};
use crate::report::write_atomic;

pub const HTML_FILE: &str = "report.html";

pub fn write(
    out_dir: &Path,
    report: &serde_json::Value,
    answered: &[AnswerRecord],
    scores: Option<&VqaAccuracy>,
    annotations: Option<&[AnnotatedQuestion]>,
    errors: &Path,
) -> Result<(), Error> {
    let humans: HashMap<u64, &AnnotatedQuestion> = annotations
        .unwrap_or_default()
        .iter()
        .map(|a| (a.question_id, a))
        .collect();
    let mut rows: Vec<QuestionRow> = answered
        .iter()
        .map(|r| {
            QuestionRow::new(
                r.question_id,
                r.image.clone(),
                r.question.clone(),
                r.answer.clone(),
                scores.and_then(|s| s.per_question.get(&r.question_id).copied()),
                humans
                    .get(&r.question_id)
                    .map(|a| a.answers.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    vqa_html::order_worst_first(&mut rows);
    let accuracy = match scores {
        Some(s) => std::iter::once(("overall".to_string(), format!("{:.2}", s.overall)))
            .chain(
                s.per_answer_type
                    .iter()
                    .map(|(kind, a)| (format!("answer type {kind}"), format!("{a:.2}"))),
            )
            .collect(),
        None => Vec::new(),
    };
    // A failure file that cannot be read back leaves the page without its failures, never the
    // run without its results (report.json has the count).
    let failures = recover_records::<AnswerFailure>(errors)
        .map(|(records, _)| records)
        .unwrap_or_default()
        .into_iter()
        .map(|f| FailureRow {
            id: f.question_id.to_string(),
            image: f.image,
            error: f.error,
        })
        .collect();
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let counts = &report["counts"];
    let timings = &report["timings"];
    let environment = &report["environment"];
    let summary = vec![
        (
            "model".to_string(),
            text(&report["config"]["model"]["source"]),
        ),
        ("device".to_string(), text(&environment["device"])),
        (
            "precision".to_string(),
            text(&report["config"]["precision"]),
        ),
        (
            "questions".to_string(),
            format!(
                "{} in the dataset: {} answered ({} now, {} earlier), {} failed, {} remaining",
                text(&counts["dataset"]),
                text(&counts["answered"]),
                text(&counts["done"]),
                text(&counts["skipped"]),
                text(&counts["failed"]),
                text(&counts["remaining"])
            ),
        ),
        (
            "questions/s".to_string(),
            timings["questions_per_s"]
                .as_f64()
                .map_or("-".to_string(), |q| format!("{q:.2}")),
        ),
    ];
    let page = VqaHtmlReport {
        title: format!("vlmrun vqa: {}", out_dir.display()),
        status: text(&report["status"]),
        mode: text(&report["inference"]),
        summary,
        accuracy,
        scored: scores.map_or(0, |s| s.n_questions),
        rows,
        failures,
    };
    let html = vqa_html::render(&page).map_err(|e| Error::Internal(format!("report.html: {e}")))?;
    let path = out_dir.join(HTML_FILE);
    write_atomic(&path, html.as_bytes())
        .map_err(|source| output_error("report.html", &path, source))
}
