//! `vlmrun match --text TEXT IMAGE...`: how well one text matches each image, with a
//! `BlipForImageTextRetrieval` checkpoint. Exactly one stdout line per image, in order: text mode
//! prints `itm_score itc_score`, `--json` prints `{"image", "text", "itm_score", "itm_logit",
//! "itc_score"}` (or `{"image", "text", "error"}`); the others are still scored (exit 3 when some
//! failed, 5 when all failed). `--enc` puts LAVIS's `[ENC]` first in the ITM input instead of
//! transformers' `[CLS]` (ITC always uses `[CLS]`). A checkpoint of another family: exit 4.

use rayon::prelude::*;

use super::{print_stdout, Context};
use crate::device::{self, probe_system};
use crate::engine::Matcher;
use crate::error::Error;
use crate::exit::Exit;

pub fn run(
    context: &Context,
    images: &[String],
    text: &str,
    enc_first: bool,
    json: bool,
) -> Result<Exit, Error> {
    let config = &context.config.config;
    if images.is_empty() {
        return Err(Error::Usage(
            "no images given\n  fix: vlmrun match --text TEXT IMAGE [IMAGE...]".to_string(),
        ));
    }
    let facts = probe_system();
    let active = device::activate(config.device, config.precision, &facts, &context.cuda)?;
    let matcher = Matcher::load(config, &active)?;
    let itc_ids = matcher.text_ids(text)?;
    let itm_ids = if enc_first {
        matcher.with_enc_first(&itc_ids)?
    } else {
        itc_ids.clone()
    };
    let processor = matcher.processor().clone();
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
                    let first = reason.lines().next().unwrap_or(&reason).to_string();
                    lines.push(Some(if json {
                        serde_json::json!({"image": image, "text": text, "error": reason})
                            .to_string()
                    } else if first.contains(image.as_str()) {
                        format!("error: {first}")
                    } else {
                        format!("error: {image}: {first}")
                    }));
                }
            }
        }
        let mut scores = matcher
            .score_pixels(&ok_pixels, &itc_ids, &itm_ids)?
            .into_iter();
        let mut out = String::new();
        for (image, line) in chunk.iter().zip(lines) {
            let line = match line {
                Some(line) => line,
                None => {
                    let s = scores
                        .next()
                        .ok_or_else(|| Error::Internal("fewer scores than images".to_string()))?;
                    if json {
                        serde_json::json!({
                            "image": image,
                            "text": text,
                            "itm_score": s.itm_score,
                            "itm_logit": s.itm_logit,
                            "itc_score": s.itc_score,
                        })
                        .to_string()
                    } else {
                        format!("{:.6} {:.6}", s.itm_score, s.itc_score)
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
