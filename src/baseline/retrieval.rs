//! `task: retrieval`: LAVIS's image-text retrieval evaluation of a `BlipForImageTextRetrieval`
//! checkpoint over the dataset's images and their captions (a LAVIS retrieval file such as
//! `coco_karpathy_test.json` / `flickr30k_test.json` with `data.source: lavis`, or any reader whose
//! items have references), one pass: recall@1/5/10 both ways in `report.json` (schema
//! `vlmrun.retrieval/1`) and each image's and text's rank and top 10 in `retrieval_ranks.json`.
//!
//! Order of work, every input mistake before the model: dataset (every item needs a caption, every
//! image must exist: exit 5 naming them) -> device -> output directory -> model (a retrieval
//! checkpoint, exit 4; `retrieval.max_text_tokens` within its positions, exit 2) -> image
//! embeddings -> text embeddings -> re-ranking -> report. Ctrl-C stops between phases (exit 130,
//! `status: interrupted`, no metrics); a rerun starts over.

use std::sync::atomic::Ordering;
use std::time::Instant;

use rayon::prelude::*;
use serde_json::json;

use super::RunOptions;
use crate::config::{FirstToken, ResolvedConfig};
use crate::data::dataset::{self, Item};
use crate::device::{self, CudaAvailability, SystemFacts};
use crate::engine::retrieval::{ItmFirstToken, RetrievalIndex};
use crate::engine::Matcher;
use crate::error::Error;
use crate::exit::Exit;
use crate::metrics::retrieval::{ranks, recall, top_k};
use crate::preprocess::lavis_text::pre_caption;
use crate::report::output::{lock_output_dir, output_error, prepare_output_dir};
use crate::report::progress::Progress;
use crate::report::write_json_atomic;

pub const SCHEMA: &str = "vlmrun.retrieval/1";
pub const RANKS_FILE: &str = "retrieval_ranks.json";
/// LAVIS's `max_words` of the `blip_caption` processor.
const MAX_WORDS: usize = 50;
/// How many missing images an error names.
const SHOWN: usize = 5;

/// The dataset's captions, flattened as LAVIS's `RetrievalEvalDataset` does.
struct Texts {
    texts: Vec<String>,
    txt2img: Vec<usize>,
    img2txt: Vec<Vec<usize>>,
}

fn flatten(items: &[Item], lavis_text: bool) -> Texts {
    let mut out = Texts {
        texts: Vec::new(),
        txt2img: Vec::new(),
        img2txt: Vec::with_capacity(items.len()),
    };
    for (i, item) in items.iter().enumerate() {
        let mut own = Vec::with_capacity(item.references.len());
        for caption in &item.references {
            own.push(out.texts.len());
            out.txt2img.push(i);
            out.texts.push(if lavis_text {
                pre_caption(caption, MAX_WORDS)
            } else {
                caption.clone()
            });
        }
        out.img2txt.push(own);
    }
    out
}

/// Every item has a caption and an image file; else the input error naming them.
fn check_items(items: &[Item], data_path: &std::path::Path) -> Result<(), Error> {
    if items.is_empty() {
        return Err(Error::Input(format!(
            "{}: no images\n  fix: point data.path at a retrieval annotation file with images",
            data_path.display()
        )));
    }
    let uncaptioned: Vec<&str> = items
        .iter()
        .filter(|i| i.references.is_empty())
        .map(|i| i.id.as_str())
        .collect();
    if !uncaptioned.is_empty() {
        return Err(Error::Input(format!(
            "{} image(s) of {} have no caption (e.g. {}): retrieval ranks every image's captions\n  fix: use the split's annotation file with its captions (LAVIS: coco_karpathy_test.json, flickr30k_test.json)",
            uncaptioned.len(),
            data_path.display(),
            uncaptioned[..uncaptioned.len().min(SHOWN)].join(", ")
        )));
    }
    let missing: Vec<String> = items
        .iter()
        .filter(|i| !i.image.is_file())
        .map(|i| i.image.display().to_string())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Input(format!(
            "{} of {} image(s) not found (e.g. {}): retrieval ranks against every image, so none may be missing; nothing was written\n  fix: set data.image_root to the folder the annotation file's image paths are relative to",
            missing.len(),
            items.len(),
            missing[..missing.len().min(SHOWN)].join(", ")
        )));
    }
    Ok(())
}

pub fn run(
    resolved: &ResolvedConfig,
    facts: &SystemFacts,
    cuda: &CudaAvailability,
    options: &RunOptions,
) -> Result<Exit, Error> {
    let started = Instant::now();
    let config = &resolved.config;
    let settings = &config.retrieval;
    let items = dataset::load(&config.data).map_err(Error::input)?;
    check_items(&items, &config.data.path)?;
    let texts = flatten(&items, settings.pre_caption);
    let active = device::activate(config.device, config.precision, facts, cuda)?;
    let _lock = lock_output_dir(&config.output.dir)?;
    let out_dir = prepare_output_dir(
        &config.output.dir,
        options.fresh,
        &[super::REPORT_FILE, RANKS_FILE],
    )?;
    resolved
        .write_next_to(&out_dir)
        .map_err(|source| output_error("the resolved config", &out_dir, source))?;

    let load_started = Instant::now();
    let matcher = Matcher::load(config, &active)?;
    let model_load_s = load_started.elapsed().as_secs_f64();
    if settings.max_text_tokens > matcher.max_positions() {
        return Err(Error::Usage(format!(
            "retrieval.max_text_tokens is {} but the model's text encoder has {} positions (max_position_embeddings)\n  fix: set retrieval.max_text_tokens to at most {} (LAVIS: 35)",
            settings.max_text_tokens,
            matcher.max_positions(),
            matcher.max_positions()
        )));
    }
    let ids = texts
        .texts
        .iter()
        .map(|t| matcher.truncated_text_ids(t, settings.max_text_tokens))
        .collect::<Result<Vec<_>, _>>()?;
    let batch = config.generation.batch_size.max(1);
    let stop = || options.interrupted.load(Ordering::Relaxed);
    let mut index = RetrievalIndex::new();

    let images_started = Instant::now();
    let progress = Progress::new(
        items.len() as u64,
        0,
        options.quiet,
        None,
        "images",
        "{wide_bar} {pos}/{len} images embedded  {msg}  elapsed {elapsed}  ETA {eta}",
        &options.console,
    );
    let processor = matcher.processor().clone();
    for (b, chunk) in items.chunks(batch).enumerate() {
        if stop() {
            break;
        }
        let pixels = chunk
            .par_iter()
            .map(|item| processor.process_file(&item.image))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                Error::Input(format!(
                    "{e}\n  fix: retrieval ranks against every image: replace or remove the unreadable one"
                ))
            })?;
        index.add_images(&matcher, &pixels)?;
        progress.update(((b + 1) * batch).min(items.len()) as u64, "");
    }
    progress.finish();
    let images_s = images_started.elapsed().as_secs_f64();

    let texts_started = Instant::now();
    if !stop() {
        for chunk in ids.chunks(batch) {
            index.add_texts(&matcher, chunk.to_vec())?;
        }
    }
    let texts_s = texts_started.elapsed().as_secs_f64();

    let mut report = json!({
        "schema": SCHEMA,
        "task": "retrieval",
        "status": "interrupted",
        "environment": crate::report::describe_environment(&active, facts, cuda, config, Some(config.model.source.clone())),
        "counts": {
            "images": items.len(),
            "texts": texts.texts.len(),
            "k_test": settings.k_test,
            "itm_pairs": 0,
        },
        "metrics": null,
        "config": serde_json::to_value(config).map_err(|e| Error::Internal(e.to_string()))?,
    });
    let report_path = out_dir.join(super::REPORT_FILE);
    let interrupted = stop() || index.images() < items.len();
    if !interrupted {
        let rerank_started = Instant::now();
        let rows = items.len() + texts.texts.len();
        let progress = Progress::new(
            rows as u64,
            0,
            options.quiet,
            None,
            "rows",
            "{wide_bar} {pos}/{len} images + texts re-ranked  {msg}  elapsed {elapsed}  ETA {eta}",
            &options.console,
        );
        let first = match settings.itm_first_token {
            FirstToken::Enc => ItmFirstToken::Enc,
            FirstToken::Cls => ItmFirstToken::Cls,
        };
        let scores = index.scores(&matcher, settings.k_test, first, batch, &mut |done, _| {
            progress.update(done as u64, "")
        })?;
        progress.finish();
        let rerank_s = rerank_started.elapsed().as_secs_f64();
        let metrics = recall(&scores.i2t, &scores.t2i, &texts.img2txt, &texts.txt2img);
        let (image_ranks, text_ranks) =
            ranks(&scores.i2t, &scores.t2i, &texts.img2txt, &texts.txt2img);
        let per_image: Vec<_> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                json!({
                    "id": item.id,
                    "image": item.image_as_given,
                    "rank": image_ranks[i],
                    "captions": texts.img2txt[i],
                    "top_texts": top_k(&scores.i2t[i], 10),
                })
            })
            .collect();
        let per_text: Vec<_> = texts
            .texts
            .iter()
            .enumerate()
            .map(|(t, text)| {
                json!({
                    "text": text,
                    "image": texts.txt2img[t],
                    "rank": text_ranks[t],
                    "top_images": top_k(&scores.t2i[t], 10),
                })
            })
            .collect();
        let ranks_path = out_dir.join(RANKS_FILE);
        write_json_atomic(
            &ranks_path,
            &json!({"images": per_image, "texts": per_text}),
        )
        .map_err(|source| output_error("the retrieval ranks", &ranks_path, source))?;
        report["status"] = json!("complete");
        report["counts"]["itm_pairs"] = json!(scores.itm_pairs);
        report["metrics"] =
            serde_json::to_value(&metrics).map_err(|e| Error::Internal(e.to_string()))?;
        report["timings"] = json!({
            "model_load_s": model_load_s,
            "images_s": images_s,
            "texts_s": texts_s,
            "rerank_s": rerank_s,
            "total_s": started.elapsed().as_secs_f64(),
            "images_per_s": items.len() as f64 / images_s.max(1e-9),
            "itm_pairs_per_s": scores.itm_pairs as f64 / rerank_s.max(1e-9),
        });
        if !options.quiet {
            eprintln!(
                "retrieval: {} images, {} texts, k_test {}\n  image->text R@1/5/10 {:.2} / {:.2} / {:.2}\n  text->image R@1/5/10 {:.2} / {:.2} / {:.2}\n  results in {}",
                items.len(),
                texts.texts.len(),
                settings.k_test,
                metrics.txt_r1,
                metrics.txt_r5,
                metrics.txt_r10,
                metrics.img_r1,
                metrics.img_r5,
                metrics.img_r10,
                out_dir.display()
            );
        }
    } else {
        report["timings"] = json!({
            "model_load_s": model_load_s,
            "total_s": started.elapsed().as_secs_f64(),
        });
        if !options.quiet {
            eprintln!("interrupted: retrieval is one pass; rerun the same command to start over");
        }
    }
    write_json_atomic(&report_path, &report)
        .map_err(|source| output_error("the report", &report_path, source))?;
    Ok(if interrupted {
        Exit::Interrupted
    } else {
        Exit::Success
    })
}
