//! `vlmrun vqa --question TEXT IMAGE...`: answers one question about each image given. Exactly one
//! stdout line per image, in the order given: text mode prints the answer, or `error: IMAGE:
//! reason` for an image that failed; `--json` prints `{"image", "question", "answer",
//! "token_ids"}` or `{"image", "question", "error"}`. The others are still answered (exit 3 when
//! some failed, 5 when all failed). A checkpoint that is not a `BlipForQuestionAnswering` (by
//! config.json `architectures`) is refused with exit 4; a question longer than the model's
//! positions with exit 2.

use rayon::prelude::*;

use super::{print_stdout, Context};
use crate::device::{self, probe_system};
use crate::engine::Answerer;
use crate::error::Error;
use crate::exit::Exit;

pub fn run(
    context: &Context,
    images: &[String],
    question: &str,
    json: bool,
) -> Result<Exit, Error> {
    let config = &context.config.config;
    if images.is_empty() {
        return Err(Error::Usage(
            "no images given\n  fix: vlmrun vqa --question TEXT IMAGE [IMAGE...]".to_string(),
        ));
    }
    if question.trim().is_empty() {
        return Err(Error::Usage(
            "the question is empty\n  fix: vlmrun vqa --question \"what is in the picture?\" IMAGE"
                .to_string(),
        ));
    }
    let facts = probe_system();
    let active = device::activate(config.device, config.precision, &facts, &context.cuda)?;
    let answerer = Answerer::load(config, &active)?;
    let question_ids = answerer.question_ids(question)?;
    let processor = answerer.processor().clone();
    let stdout_is_terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut failed = 0usize;
    for chunk in images.chunks(config.generation.batch_size.max(1)) {
        let processed: Vec<_> = chunk
            .par_iter()
            .map(|image| processor.process_file(std::path::Path::new(image)))
            .collect();
        let mut ok_pixels = Vec::new();
        let mut lines: Vec<Option<String>> = Vec::with_capacity(chunk.len());
        for (image, result) in chunk.iter().zip(processed) {
            match result {
                Ok(values) => {
                    ok_pixels.push(values);
                    lines.push(None);
                }
                Err(err) => {
                    failed += 1;
                    let reason = err.to_string();
                    if !stdout_is_terminal {
                        eprintln!("error: {reason}");
                    }
                    lines.push(Some(failure_line(image, question, &reason, json)));
                }
            }
        }
        let questions = vec![question_ids.clone(); ok_pixels.len()];
        let mut answers = answerer.answer_pixels(&ok_pixels, &questions)?.into_iter();
        let mut out = String::new();
        for (image, line) in chunk.iter().zip(lines) {
            let line = match line {
                Some(line) => line,
                None => {
                    let answer = answers
                        .next()
                        .ok_or_else(|| Error::Internal("fewer answers than images".to_string()))?;
                    if json {
                        serde_json::json!({
                            "image": image,
                            "question": question,
                            "answer": answer.text,
                            "token_ids": answer.token_ids,
                        })
                        .to_string()
                    } else {
                        answer.text
                    }
                }
            };
            out.push_str(&line);
            out.push('\n');
        }
        print_stdout(&out)?;
    }
    Ok(match failed {
        0 => Exit::Success,
        n if n == images.len() => Exit::Input,
        _ => Exit::CompletedWithFailures,
    })
}

/// The stdout line of an image that failed: its first message line.
fn failure_line(image: &str, question: &str, reason: &str, json: bool) -> String {
    let first = reason.lines().next().unwrap_or(reason);
    if json {
        serde_json::json!({ "image": image, "question": question, "error": reason }).to_string()
    } else if first.contains(image) {
        format!("error: {first}")
    } else {
        format!("error: {image}: {first}")
    }
}
