//! `vlmrun embed [--text TEXT]... [--texts FILE] [IMAGE...] --out FILE.safetensors`: the ITC
//! embeddings of a `BlipForImageTextRetrieval` checkpoint for people's own retrieval. The file holds
//! `image_embeds` `(images, E)` and `text_embeds` `(texts, E)` (f32, L2-normalised: the dot product
//! of a row of each is `match`'s `itc_score`), and in its metadata `images` and `texts` (JSON lists,
//! in row order), `model` and `schema`. Texts are tokenized `[CLS] text [SEP]` (ITC's input in
//! transformers and LAVIS); one longer than the model's positions is refused with exit 2 before any
//! work. An image that cannot be read is named on stderr and left out (exit 3; 5 when none could be
//! embedded); stdout gets one JSON line `{"out", "images", "texts", "dim", "failed"}`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::{print_stdout, Context};
use crate::device::{self, probe_system};
use crate::engine::Matcher;
use crate::error::Error;
use crate::exit::Exit;

pub const SCHEMA: &str = "vlmrun.embeddings/1";

/// What to embed and where the file goes.
pub struct EmbedRequest<'a> {
    pub images: &'a [String],
    pub texts: Vec<String>,
    pub out: &'a Path,
}

/// The texts of `--text` flags, then the non-empty lines of `--texts FILE`.
pub fn collect_texts(flags: &[String], file: Option<&Path>) -> Result<Vec<String>, Error> {
    let mut texts = flags.to_vec();
    if let Some(path) = file {
        let content = std::fs::read_to_string(path).map_err(|e| {
            Error::Input(format!(
                "{}: cannot read the texts file: {e}\n  fix: pass a UTF-8 text file, one text per line",
                path.display()
            ))
        })?;
        texts.extend(
            content
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    Ok(texts)
}

pub fn run(context: &Context, request: &EmbedRequest<'_>) -> Result<Exit, Error> {
    let config = &context.config.config;
    if request.images.is_empty() && request.texts.is_empty() {
        return Err(Error::Usage(
            "nothing to embed\n  fix: vlmrun embed --out F.safetensors [--text TEXT]... [--texts FILE] [IMAGE...]"
                .to_string(),
        ));
    }
    if request.out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return Err(Error::Usage(format!(
            "--out {}: the embeddings are written as safetensors\n  fix: name the file *.safetensors",
            request.out.display()
        )));
    }
    let facts = probe_system();
    let active = device::activate(config.device, config.precision, &facts, &context.cuda)?;
    let matcher = Matcher::load(config, &active)?;
    // Every text is checked before any image is read.
    let text_ids = request
        .texts
        .iter()
        .map(|t| {
            matcher
                .text_ids(t)
                .map_err(|e| Error::Usage(format!("text {t:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let batch = config.generation.batch_size.max(1);
    let mut text_rows = Vec::with_capacity(text_ids.len());
    for chunk in text_ids.chunks(batch) {
        text_rows.extend(matcher.embed_texts(chunk)?);
    }
    let processor = matcher.processor().clone();
    let mut image_rows = Vec::with_capacity(request.images.len());
    let mut embedded = Vec::with_capacity(request.images.len());
    let mut failed = 0usize;
    for chunk in request.images.chunks(batch) {
        let processed: Vec<_> = chunk
            .par_iter()
            .map(|image| processor.process_file(Path::new(image)))
            .collect();
        let mut pixels = Vec::with_capacity(chunk.len());
        for (image, result) in chunk.iter().zip(processed) {
            match result {
                Ok(values) => {
                    pixels.push(values);
                    embedded.push(image.clone());
                }
                Err(err) => {
                    failed += 1;
                    eprintln!("error: {image}: {err}");
                }
            }
        }
        if !pixels.is_empty() {
            image_rows.extend(matcher.embed_images(&pixels)?.1);
        }
    }
    let dim = image_rows.first().or(text_rows.first()).map_or(0, Vec::len);
    write(
        request.out,
        &image_rows,
        &text_rows,
        &embedded,
        &request.texts,
        &config.model.source,
    )?;
    let summary = serde_json::json!({
        "out": request.out,
        "images": embedded.len(),
        "texts": text_rows.len(),
        "dim": dim,
        "failed": failed,
    });
    print_stdout(&format!("{summary}\n"))?;
    Ok(match failed {
        0 => Exit::Success,
        n if n == request.images.len() && text_rows.is_empty() => Exit::Input,
        _ => Exit::CompletedWithFailures,
    })
}

fn matrix(rows: &[Vec<f32>]) -> Result<Tensor, Error> {
    let dim = rows.first().map_or(0, Vec::len);
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), dim), &Device::Cpu)
        .map_err(|e| Error::Internal(format!("embeddings tensor: {e}")))
}

fn write(
    out: &Path,
    images: &[Vec<f32>],
    texts: &[Vec<f32>],
    image_names: &[String],
    text_values: &[String],
    model: &str,
) -> Result<(), Error> {
    let mut tensors = BTreeMap::new();
    if !images.is_empty() {
        tensors.insert("image_embeds".to_string(), matrix(images)?);
    }
    if !texts.is_empty() {
        tensors.insert("text_embeds".to_string(), matrix(texts)?);
    }
    let json = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".to_string());
    let metadata = HashMap::from([
        ("schema".to_string(), SCHEMA.to_string()),
        ("model".to_string(), model.to_string()),
        ("images".to_string(), json(image_names)),
        ("texts".to_string(), json(text_values)),
    ]);
    let bytes = safetensors::serialize(&tensors, Some(metadata))
        .map_err(|e| Error::Internal(format!("serialising the embeddings: {e}")))?;
    crate::report::write_atomic(out, &bytes).map_err(|source| Error::Output {
        what: "the embeddings",
        path: out.to_path_buf(),
        source,
    })
}
