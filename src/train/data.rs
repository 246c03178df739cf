//! Training samples: every (image, reference caption) pair of the dataset, a held-out set of
//! images for evaluation, and the deterministic order in which pairs are visited.
//!
//! The order is a stream of epochs, each a permutation of the pairs seeded by `(seed, epoch)`.
//! Micro-batches take the next `batch_size` pairs of the stream (crossing epoch boundaries, so
//! every batch is full), and the whole position is one counter, `samples_seen`: a resumed run
//! that restores it visits exactly the pairs an uninterrupted run would.

use std::path::PathBuf;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::dataset::{self, Item};

/// One training pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Id of the dataset item the image comes from.
    pub id: String,
    pub image: PathBuf,
    pub caption: String,
}

/// Why the dataset cannot be trained on.
#[derive(Debug, thiserror::Error)]
pub enum TrainDataError {
    #[error("the training set has no (image, caption) pairs: {detail}\n  fix: use a manifest or COCO file whose items have non-empty \"references\" (a folder of images has no captions)")]
    NoSamples { detail: String },
    #[error("train.eval_images = {held_out} leaves no image to train on (the dataset has {images})\n  fix: lower train.eval_images")]
    NothingLeft { held_out: usize, images: usize },
}

/// The dataset split into training pairs and held-out evaluation images.
#[derive(Debug, Clone)]
pub struct TrainData {
    pub samples: Vec<Sample>,
    /// The last `eval_images` items of the dataset (with their references), never trained on.
    pub eval_items: Vec<Item>,
    /// Training images that cannot be used before they are opened (`dataset::unusable`: a
    /// folder file whose name is not UTF-8), as given (undecodable bytes written `\xNN`), with the
    /// reason: counted as unreadable, never silently dropped.
    pub unusable: Vec<(PathBuf, String)>,
}

impl TrainData {
    /// Holds out the last `eval_images` items and turns every non-empty reference of the others
    /// into a pair. Errors before any training when nothing is left to learn from.
    pub fn split(items: Vec<Item>, eval_images: usize) -> Result<Self, TrainDataError> {
        let images = items.len();
        if eval_images >= images && eval_images > 0 {
            return Err(TrainDataError::NothingLeft {
                held_out: eval_images,
                images,
            });
        }
        let mut train_items = items;
        let eval_items = train_items.split_off(images - eval_images);
        let mut unusable = Vec::new();
        train_items.retain(|item| match dataset::unusable(item) {
            Some(reason) => {
                // The name as text (undecodable bytes as \xNN), so train-summary.json can hold it.
                unusable.push((PathBuf::from(&item.image_as_given), reason));
                false
            }
            None => true,
        });
        let samples: Vec<Sample> = train_items
            .iter()
            .flat_map(|item| {
                item.references
                    .iter()
                    .filter(|caption| !caption.trim().is_empty())
                    .map(|caption| Sample {
                        id: item.id.clone(),
                        image: item.image.clone(),
                        caption: caption.trim().to_string(),
                    })
            })
            .collect();
        if samples.is_empty() {
            let names = match unusable.len() {
                0 => String::new(),
                n => format!(" ({n} more left out: their file names are not valid UTF-8)"),
            };
            return Err(TrainDataError::NoSamples {
                detail: format!(
                    "{} training images, none with a non-empty reference caption{names}",
                    train_items.len()
                ),
            });
        }
        Ok(Self {
            samples,
            eval_items,
            unusable,
        })
    }
}

/// The visiting order of `len` samples under `seed`.
#[derive(Debug, Clone)]
pub struct SampleOrder {
    len: usize,
    /// `None`: every epoch visits the pairs in dataset order (`train.shuffle: false`).
    seed: Option<u64>,
    /// The permutation of `cached_epoch`.
    permutation: Vec<usize>,
    cached_epoch: Option<u64>,
}

impl SampleOrder {
    pub fn new(len: usize, seed: u64) -> Self {
        Self {
            len,
            seed: Some(seed),
            permutation: Vec::new(),
            cached_epoch: None,
        }
    }

    /// Every epoch in dataset order (as a PyTorch loop without a shuffling sampler).
    pub fn sequential(len: usize) -> Self {
        Self {
            len,
            seed: None,
            permutation: Vec::new(),
            cached_epoch: None,
        }
    }

    /// Sample indices of the stream positions `start..start+count`.
    pub fn take(&mut self, start: u64, count: usize) -> Vec<usize> {
        (start..start + count as u64)
            .map(|position| self.index_at(position))
            .collect()
    }

    /// The epoch a stream position falls in.
    pub fn epoch_of(&self, position: u64) -> u64 {
        position / self.len.max(1) as u64
    }

    fn index_at(&mut self, position: u64) -> usize {
        let len = self.len.max(1) as u64;
        let epoch = position / len;
        if self.cached_epoch != Some(epoch) {
            self.permutation = match self.seed {
                Some(seed) => epoch_permutation(self.len, seed, epoch),
                None => (0..self.len).collect(),
            };
            self.cached_epoch = Some(epoch);
        }
        let offset = (position % len) as usize;
        self.permutation.get(offset).copied().unwrap_or(0)
    }
}

/// A permutation of `0..len` that depends only on `(seed, epoch)`.
fn epoch_permutation(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut rng);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, refs: &[&str]) -> Item {
        Item {
            id: id.to_string(),
            image: PathBuf::from(format!("{id}.png")),
            image_as_given: format!("{id}.png"),
            references: refs.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn every_reference_is_a_pair_and_the_tail_is_held_out() {
        let items = vec![
            item("a", &["one", "two"]),
            item("b", &["three", "  "]),
            item("c", &["held out"]),
        ];
        let data = TrainData::split(items, 1).unwrap();
        let captions: Vec<&str> = data.samples.iter().map(|s| s.caption.as_str()).collect();
        assert_eq!(captions, ["one", "two", "three"]);
        assert_eq!(data.eval_items.len(), 1);
        assert_eq!(data.eval_items[0].id, "c");
    }

    #[cfg(unix)]
    #[test]
    fn an_image_whose_name_is_not_utf8_is_counted_unusable_with_its_reason() {
        use std::os::unix::ffi::OsStrExt;
        let bad = PathBuf::from(std::ffi::OsStr::from_bytes(b"dir/caf\xe9.png"));
        let mut odd = item("caf\\xE9.png", &["a caption"]);
        odd.image = bad;
        odd.image_as_given = "dir/caf\\xE9.png".to_string();
        let data = TrainData::split(vec![item("a", &["one"]), odd.clone()], 0).unwrap();
        let ids: Vec<&str> = data.samples.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a"], "no pair from the unusable image");
        assert_eq!(data.unusable.len(), 1);
        assert_eq!(data.unusable[0].0, PathBuf::from("dir/caf\\xE9.png"));
        assert!(
            data.unusable[0].1.contains("dir/caf\\xE9.png"),
            "{}",
            data.unusable[0].1
        );

        // Nothing else to train on: the refusal counts it.
        let err = TrainData::split(vec![item("b", &[]), odd], 0).unwrap_err();
        assert!(
            err.to_string()
                .contains("1 more left out: their file names are not valid UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn no_captions_or_everything_held_out_is_an_error() {
        let err = TrainData::split(vec![item("a", &[]), item("b", &[""])], 0).unwrap_err();
        assert!(matches!(err, TrainDataError::NoSamples { .. }));
        let err = TrainData::split(vec![item("a", &["x"])], 1).unwrap_err();
        assert!(matches!(err, TrainDataError::NothingLeft { .. }));
    }

    #[test]
    fn each_epoch_is_a_seeded_permutation_and_resuming_mid_stream_agrees() {
        let mut order = SampleOrder::new(10, 42);
        let stream = order.take(0, 30);
        for epoch in stream.chunks(10) {
            let mut sorted = epoch.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        }
        // Epochs differ, and a fresh order started mid-stream reads the same indices.
        assert_ne!(stream[0..10], stream[10..20]);
        let mut resumed = SampleOrder::new(10, 42);
        assert_eq!(resumed.take(17, 13), stream[17..30]);
        // Another seed gives another order.
        assert_ne!(SampleOrder::new(10, 7).take(0, 10), stream[0..10]);
        let sequential: Vec<usize> = SampleOrder::sequential(4).take(2, 5);
        assert_eq!(sequential, vec![2, 3, 0, 1, 2]);
        assert_eq!(order.epoch_of(25), 2);
    }
}
