//! `vlmrun caption IMAGE...`: captions images given on the command line. Exactly one stdout line per
//! image, in the order given: text mode prints the caption, or `error: IMAGE: reason` for an image
//! that failed; `--json` prints `{"image", "caption", "token_ids"}` or `{"image", "error"}`. The others
//! are still captioned (exit 3 when some failed, 5 when all failed). When stdout is not a terminal, a
//! failure is also said on stderr, so a redirected run still shows it.

use rayon::prelude::*;

use super::{print_stdout, Context};
use crate::device::{self, probe_system};
use crate::engine::Captioner;
use crate::error::Error;
use crate::exit::Exit;

pub fn run(context: &Context, images: &[String], json: bool) -> Result<Exit, Error> {
    let config = &context.config.config;
    if images.is_empty() {
        return Err(Error::Usage(
            "no images given\n  fix: vlmrun caption IMAGE [IMAGE...]".to_string(),
        ));
    }
    let facts = probe_system();
    let active = device::activate(config.device, config.precision, &facts, &context.cuda)?;
    let captioner = Captioner::load(config, &active)?;
    if !context.quiet {
        eprintln!(
            "{}",
            crate::models::label::model_line(&config.model.source, captioner.model_dir())
        );
    }
    let processor = captioner.processor().clone();
    let mut failed = 0usize;
    let stdout_is_terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    for chunk in images.chunks(config.generation.batch_size.max(1)) {
        let processed: Vec<_> = chunk
            .par_iter()
            .map(|image| (image, processor.process_file(std::path::Path::new(image))))
            .collect();
        let mut ok_pixels = Vec::new();
        let mut ok_images: Vec<&str> = Vec::new();
        let mut lines: Vec<Option<String>> = Vec::with_capacity(chunk.len());
        for (image, result) in processed {
            match result {
                Ok(values) => {
                    ok_pixels.push(values);
                    ok_images.push(image.as_str());
                    lines.push(None);
                }
                Err(err) => {
                    failed += 1;
                    let reason = err.to_string();
                    if !stdout_is_terminal {
                        eprintln!("error: {reason}");
                    }
                    lines.push(Some(failure_line(image, &reason, json)));
                }
            }
        }
        let captions =
            captioner.caption_batch(&ok_pixels, &format!("of {}", ok_images.join(", ")))?;
        let mut captions = captions.into_iter();
        let mut out = String::new();
        for (image, line) in chunk.iter().zip(lines) {
            let line = match line {
                Some(line) => line,
                None => {
                    let caption = captions
                        .next()
                        .ok_or_else(|| Error::Internal("fewer captions than images".to_string()))?;
                    if json {
                        serde_json::json!({
                            "image": image,
                            "caption": caption.text,
                            "token_ids": caption.token_ids,
                        })
                        .to_string()
                    } else {
                        caption.text
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

/// The stdout line of an image that failed: its first message line (the fix, if any, is on stderr).
fn failure_line(image: &str, reason: &str, json: bool) -> String {
    let first = reason.lines().next().unwrap_or(reason);
    if json {
        serde_json::json!({ "image": image, "error": reason }).to_string()
    } else if first.contains(image) {
        format!("error: {first}")
    } else {
        format!("error: {image}: {first}")
    }
}
