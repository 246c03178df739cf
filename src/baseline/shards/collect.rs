//! Collects the shards: reads every rank's `predictions.rank-K.jsonl` and `errors.rank-K.jsonl`
//! (read-only: a torn last line is skipped, never truncated, so a merge can run beside a live rank),
//! keeps from rank K's files only items of rank K's shard, de-duplicates by id (first wins), puts the
//! result in dataset order, and lists every shard that is not complete. Writing the outputs and scoring
//! is `merged`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::baseline::report::MissingShard;
use crate::data::dataset::Item;
use crate::data::predictions::{read_jsonl, Failure, Prediction, PredictionsError};
use crate::distributed::files::RankFiles;
use crate::distributed::{shard, DistributedError};

/// The shards put together.
#[derive(Debug, Default)]
pub struct Collected {
    /// One per dataset item that has one, in dataset order.
    pub predictions: Vec<Prediction>,
    /// Items that failed and have no prediction, in dataset order.
    pub failures: Vec<Failure>,
    pub missing: Vec<MissingShard>,
    /// Lines for an id already taken (ignored).
    pub duplicates: usize,
    /// Lines for an id outside the writing rank's shard or outside the dataset (ignored).
    pub foreign: usize,
    /// Bytes of unfinished last lines (a rank still writing, or killed mid-write).
    pub torn_bytes: usize,
}

impl Collected {
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Reads the shards of a `world_size`-rank run over `items` in `dir`. `reasons` says, per rank, why it
/// may be incomplete (from its done file); ranks not in it get "no done file".
pub fn collect(
    dir: &Path,
    items: &[Item],
    world_size: usize,
    reasons: &BTreeMap<usize, String>,
) -> Result<Collected, DistributedError> {
    let index_of: HashMap<&str, usize> = items
        .iter()
        .enumerate()
        .map(|(index, item)| (item.id.as_str(), index))
        .collect();
    let mut predicted: Vec<Option<Prediction>> = vec![None; items.len()];
    let mut failed: Vec<Option<Failure>> = vec![None; items.len()];
    let mut collected = Collected::default();
    for rank in 0..world_size {
        let files = RankFiles::in_dir(dir, rank);
        let unreadable = |err: PredictionsError| match err {
            PredictionsError::Io { path, source } => DistributedError::Io { path, source },
            PredictionsError::Corrupt {
                path,
                line,
                message,
            } => DistributedError::BadFile {
                path,
                message: format!("line {line} is not a record ({message})"),
                fix: format!("rerun rank {rank} with --fresh to redo its shard"),
            },
        };
        let predictions = read_jsonl::<Prediction>(&files.predictions).map_err(unreadable)?;
        let failures = read_jsonl::<Failure>(&files.errors).map_err(unreadable)?;
        collected.torn_bytes += predictions.torn_bytes;
        for prediction in predictions.records {
            match slot_of(&index_of, &prediction.id, rank, world_size) {
                None => collected.foreign += 1,
                Some(index) => match predicted.get_mut(index) {
                    Some(slot @ None) => *slot = Some(prediction),
                    _ => collected.duplicates += 1,
                },
            }
        }
        for failure in failures.records {
            match slot_of(&index_of, &failure.id, rank, world_size) {
                None => collected.foreign += 1,
                Some(index) => {
                    if let Some(slot @ None) = failed.get_mut(index) {
                        *slot = Some(failure);
                    }
                }
            }
        }
    }
    let mut missing_per_rank = vec![0usize; world_size];
    for (index, (prediction, failure)) in predicted.into_iter().zip(failed).enumerate() {
        match (prediction, failure) {
            (Some(prediction), _) => collected.predictions.push(prediction),
            (None, Some(failure)) => collected.failures.push(failure),
            (None, None) => {
                if let Some(count) = missing_per_rank.get_mut(shard::owner(index, world_size)) {
                    *count += 1;
                }
            }
        }
    }
    collected.missing = missing_per_rank
        .into_iter()
        .enumerate()
        .filter(|(_, missing)| *missing > 0)
        .map(|(rank, missing)| MissingShard {
            rank,
            missing,
            shard: shard::len(items.len(), rank, world_size),
            reason: reasons
                .get(&rank)
                .cloned()
                .unwrap_or_else(|| format!("no rank-{rank}.done.json")),
        })
        .collect();
    Ok(collected)
}

/// The dataset index of `id` when it belongs to `rank`'s shard.
fn slot_of(
    index_of: &HashMap<&str, usize>,
    id: &str,
    rank: usize,
    world_size: usize,
) -> Option<usize> {
    index_of
        .get(id)
        .copied()
        .filter(|&index| shard::owner(index, world_size) == rank)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::predictions::JsonlAppender;

    fn items(count: usize) -> Vec<Item> {
        (0..count)
            .map(|i| Item {
                id: format!("img{i}"),
                image: format!("img{i}.png").into(),
                image_as_given: format!("img{i}.png"),
                references: Vec::new(),
            })
            .collect()
    }

    fn prediction(id: &str, caption: &str) -> Prediction {
        Prediction {
            id: id.into(),
            image: format!("{id}.png"),
            caption: caption.into(),
            token_ids: vec![30522, 102],
            batch: 0,
            latency_ms: 1.0,
            image_stamp: None,
            prompt: None,
        }
    }

    fn append(path: &Path, records: &[Prediction]) {
        JsonlAppender::open(path).unwrap().append(records).unwrap();
    }

    #[test]
    fn shards_merge_in_dataset_order_with_duplicates_and_strays_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let data = items(5);
        // world 2: rank 0 owns img0, img2, img4; rank 1 owns img1, img3.
        let rank0 = RankFiles::in_dir(dir.path(), 0);
        let rank1 = RankFiles::in_dir(dir.path(), 1);
        append(
            &rank0.predictions,
            &[
                prediction("img4", "four"),
                prediction("img0", "zero"),
                prediction("img0", "zero again"),
                prediction("img1", "not rank 0's"),
                prediction("other", "not in the dataset"),
            ],
        );
        JsonlAppender::open(&rank0.errors)
            .unwrap()
            .append(&[Failure {
                id: "img2".into(),
                image: "img2.png".into(),
                error: "broken".into(),
            }])
            .unwrap();
        append(
            &rank1.predictions,
            &[prediction("img3", "three"), prediction("img1", "one")],
        );
        let merged = collect(dir.path(), &data, 2, &BTreeMap::new()).unwrap();
        let captions: Vec<&str> = merged
            .predictions
            .iter()
            .map(|p| p.caption.as_str())
            .collect();
        assert_eq!(captions, ["zero", "one", "three", "four"]);
        assert_eq!(merged.failures.len(), 1);
        assert_eq!(merged.duplicates, 1);
        assert_eq!(merged.foreign, 2);
        assert!(merged.is_complete());
    }

    #[test]
    fn an_incomplete_shard_is_named_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let data = items(7);
        let rank1 = RankFiles::in_dir(dir.path(), 1);
        append(&rank1.predictions, &[prediction("img1", "one")]);
        std::fs::write(&rank1.predictions, {
            let mut bytes = std::fs::read(&rank1.predictions).unwrap();
            bytes.extend_from_slice(br#"{"id":"img4","cap"#);
            bytes
        })
        .unwrap();
        let reasons = BTreeMap::from([(1, "interrupted".to_string())]);
        let merged = collect(dir.path(), &data, 3, &reasons).unwrap();
        assert_eq!(
            merged.missing,
            [
                MissingShard {
                    rank: 0,
                    missing: 3,
                    shard: 3,
                    reason: "no rank-0.done.json".into()
                },
                MissingShard {
                    rank: 1,
                    missing: 1,
                    shard: 2,
                    reason: "interrupted".into()
                },
                MissingShard {
                    rank: 2,
                    missing: 2,
                    shard: 2,
                    reason: "no rank-2.done.json".into()
                },
            ]
        );
        assert!(merged.torn_bytes > 0);
    }
}
