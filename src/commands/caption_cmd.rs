//! `vlmrun caption IMAGE...`: captions images given on the command line. Text mode prints one caption per
//! image; `--json` one object per line (`image`, `caption`, `token_ids`). A bad image is reported on stderr
//! and the others are still captioned (exit 3 when some failed, 5 when all failed).

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
    let processor = captioner.processor().clone();
    let mut failed = 0usize;
    for chunk in images.chunks(config.generation.batch_size.max(1)) {
        let processed: Vec<_> = chunk
            .par_iter()
            .map(|image| (image, processor.process_file(std::path::Path::new(image))))
            .collect();
        let mut ok_images = Vec::new();
        let mut pixels = Vec::new();
        for (image, result) in processed {
            match result {
                Ok(values) => {
                    ok_images.push(image);
                    pixels.push(values);
                }
                Err(err) => {
                    failed += 1;
                    eprintln!("error: {err}");
                }
            }
        }
        let captions = captioner.caption_pixels(&pixels)?;
        let mut out = String::new();
        for (image, caption) in ok_images.iter().zip(captions) {
            if json {
                let line = serde_json::json!({
                    "image": image,
                    "caption": caption.text,
                    "token_ids": caption.token_ids,
                });
                out.push_str(&line.to_string());
            } else {
                out.push_str(&caption.text);
            }
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
