//! The CPU side of a run: decoding and resizing on worker threads, a few batches ahead of the device, so
//! the GPU never waits on JPEG decoding or Pillow-exact resizing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use rayon::prelude::*;

use crate::data::dataset::{unusable, Item};
use crate::data::predictions::{image_stamp, Failure};
use crate::preprocess::ImageProcessor;

/// Batches prepared ahead of the device.
const PREFETCH_BATCHES: usize = 2;

/// A batch ready for the device: the images that decoded, their pixels, and the ones that failed.
pub struct PreparedBatch {
    pub index: usize,
    pub items: Vec<Item>,
    /// Each item's image stamp (`predictions::image_stamp`), taken just before the file was read.
    pub stamps: Vec<Option<String>>,
    pub pixels: Vec<Vec<f32>>,
    pub failures: Vec<Failure>,
    /// Wall time the workers spent on this batch.
    pub preprocess_ms: f64,
}

/// Starts the preprocessing thread. It stops early when `stop` is set (Ctrl-C) or the receiver is dropped.
pub fn spawn(
    items: Vec<Item>,
    batch_size: usize,
    processor: ImageProcessor,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(Receiver<PreparedBatch>, JoinHandle<()>)> {
    let (sender, receiver) = sync_channel(PREFETCH_BATCHES);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .thread_name(|i| format!("preprocess-{i}"))
        .build()
        .map_err(std::io::Error::other)?;
    let handle = std::thread::Builder::new()
        .name("preprocess".into())
        .spawn(move || {
            for (index, chunk) in items.chunks(batch_size.max(1)).enumerate() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let started = Instant::now();
                let results: Vec<_> = pool.install(|| {
                    chunk
                        .par_iter()
                        .map(|item| {
                            if let Some(reason) = unusable(item) {
                                return (None, Err(reason));
                            }
                            let stamp = image_stamp(&item.image);
                            let pixels = processor
                                .process_file(&item.image)
                                .map_err(|err| err.to_string());
                            (stamp, pixels)
                        })
                        .collect()
                });
                let mut batch = PreparedBatch {
                    index,
                    items: Vec::with_capacity(chunk.len()),
                    stamps: Vec::with_capacity(chunk.len()),
                    pixels: Vec::with_capacity(chunk.len()),
                    failures: Vec::new(),
                    preprocess_ms: 0.0,
                };
                for (item, (stamp, result)) in chunk.iter().zip(results) {
                    match result {
                        Ok(pixels) => {
                            batch.items.push(item.clone());
                            batch.stamps.push(stamp);
                            batch.pixels.push(pixels);
                        }
                        Err(err) => batch.failures.push(Failure {
                            id: item.id.clone(),
                            image: item.image_as_given.clone(),
                            error: err,
                        }),
                    }
                }
                batch.preprocess_ms = started.elapsed().as_secs_f64() * 1e3;
                if sender.send(batch).is_err() {
                    break;
                }
            }
        })?;
    Ok((receiver, handle))
}
