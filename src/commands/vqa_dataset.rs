//! `vlmrun vqa --questions FILE [--annotations FILE] --images DIR --out FILE`: answers every
//! question of a VQAv2 questions file (batches of `generation.batch_size`, each question padded as
//! transformers pads a batch), writes the official submission `[{"question_id", "answer"}]` to
//! `--out` and, with the annotations, prints the VQA accuracy of the official evaluation as one
//! JSON object on stdout (overall, per answer type, per question type). A question whose image
//! cannot be read is left out of the submission and named on stderr (exit 3; 5 when none could be
//! answered); annotations that do not cover the questions are refused before any work (exit 5).

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;

use super::{print_stdout, Context};
use crate::data::vqa::{read_annotations, read_questions, SubmissionEntry};
use crate::device::{self, probe_system};
use crate::engine::Answerer;
use crate::error::Error;
use crate::exit::Exit;
use crate::metrics::vqa::{vqa_accuracy, GroundTruth};

/// The files of a dataset run.
pub struct DatasetRun<'a> {
    pub questions: &'a Path,
    pub annotations: Option<&'a Path>,
    pub images: &'a Path,
    pub out: &'a Path,
    pub ground_truth: GroundTruth,
    pub limit: Option<usize>,
}

pub fn run(context: &Context, files: &DatasetRun<'_>) -> Result<Exit, Error> {
    let config = &context.config.config;
    let input = |e: crate::data::vqa::VqaDataError| Error::input(e);
    let mut questions = read_questions(files.questions, files.images).map_err(input)?;
    if let Some(limit) = files.limit {
        questions.truncate(limit);
    }
    if questions.is_empty() {
        return Err(Error::Input(format!(
            "{}: no questions\n  fix: pass a VQAv2 questions file with a non-empty \"questions\" list",
            files.questions.display()
        )));
    }
    let annotations = files
        .annotations
        .map(|path| read_annotations(path, &questions))
        .transpose()
        .map_err(input)?;

    let facts = probe_system();
    let active = device::activate(config.device, config.precision, &facts, &context.cuda)?;
    let answerer = Answerer::load(config, &active)?;
    let processor = answerer.processor().clone();
    let mut submission = Vec::with_capacity(questions.len());
    let mut failed = 0usize;
    for chunk in questions.chunks(config.generation.batch_size.max(1)) {
        let prepared: Vec<_> = chunk
            .par_iter()
            .map(|q| {
                let pixels = processor
                    .process_file(&q.image)
                    .map_err(|e| format!("question {}: {e}", q.question_id))?;
                let ids = answerer
                    .question_ids(&q.question)
                    .map_err(|e| format!("question {}: {e}", q.question_id))?;
                Ok::<_, String>((q.question_id, pixels, ids))
            })
            .collect();
        let mut ids = Vec::new();
        let mut pixels = Vec::new();
        let mut tokens = Vec::new();
        for item in prepared {
            match item {
                Ok((id, p, t)) => {
                    ids.push(id);
                    pixels.push(p);
                    tokens.push(t);
                }
                Err(reason) => {
                    failed += 1;
                    eprintln!("error: {reason}");
                }
            }
        }
        let answers = answerer.answer_pixels(&pixels, &tokens)?;
        submission.extend(
            ids.into_iter()
                .zip(answers)
                .map(|(question_id, a)| SubmissionEntry {
                    question_id,
                    answer: a.text,
                }),
        );
    }
    crate::report::write_json_atomic(files.out, &submission).map_err(|source| Error::Output {
        what: "the VQA submission",
        path: files.out.to_path_buf(),
        source,
    })?;
    let mut summary = serde_json::json!({
        "submission": files.out,
        "questions": questions.len(),
        "answered": submission.len(),
    });
    if let Some(annotations) = annotations.filter(|_| !submission.is_empty()) {
        let predictions: BTreeMap<u64, String> = submission
            .iter()
            .map(|e| (e.question_id, e.answer.clone()))
            .collect();
        let accuracy =
            vqa_accuracy(&predictions, &annotations, files.ground_truth).map_err(Error::input)?;
        summary["accuracy"] = serde_json::json!({
            "overall": accuracy.overall,
            "per_answer_type": accuracy.per_answer_type,
            "per_question_type": accuracy.per_question_type,
            "ground_truth": accuracy.ground_truth,
        });
    }
    print_stdout(&format!("{summary}\n"))?;
    Ok(match failed {
        0 => Exit::Success,
        n if n == questions.len() => Exit::Input,
        _ => Exit::CompletedWithFailures,
    })
}
