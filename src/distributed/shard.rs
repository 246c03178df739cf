//! Which dataset items belong to rank K of N: round-robin over the dataset order (after `data.offset` and
//! `data.limit`), item i to rank i mod N.
//!
//! Round-robin rather than contiguous blocks because datasets are often ordered by something that changes
//! the cost of an image (file size, source, caption length, COCO id ~ upload date): blocks would hand one
//! rank all the expensive images and the run waits for it, while interleaving spreads any such trend
//! evenly. Both give shard sizes that differ by at most one. The assignment depends only on the dataset's
//! order and N, so a resumed rank gets the same shard (`world.json` refuses a changed dataset or N).

/// The rank that owns item `index` in a world of `world_size` (> 0) ranks.
pub fn owner(index: usize, world_size: usize) -> usize {
    index % world_size.max(1)
}

/// The dataset indices of rank `rank`'s shard, ascending.
pub fn indices(len: usize, rank: usize, world_size: usize) -> impl ExactSizeIterator<Item = usize> {
    (rank..len).step_by(world_size.max(1))
}

/// The number of items in rank `rank`'s shard.
pub fn len(len: usize, rank: usize, world_size: usize) -> usize {
    indices(len, rank, world_size).len()
}

/// Rank `rank`'s items, in dataset order.
pub fn select<T: Clone>(items: &[T], rank: usize, world_size: usize) -> Vec<T> {
    indices(items.len(), rank, world_size)
        .filter_map(|index| items.get(index).cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_in_exactly_one_shard() {
        for len in [0, 1, 2, 5, 12, 97, 1000] {
            for world in 1..=9 {
                let mut seen = vec![0u32; len];
                let mut sizes = Vec::new();
                for rank in 0..world {
                    let shard: Vec<usize> = indices(len, rank, world).collect();
                    assert_eq!(shard.len(), super::len(len, rank, world));
                    assert!(shard.windows(2).all(|w| w[0] < w[1]), "ascending");
                    for &index in &shard {
                        assert_eq!(owner(index, world), rank);
                        seen[index] += 1;
                    }
                    sizes.push(shard.len());
                }
                assert!(
                    seen.iter().all(|&n| n == 1),
                    "len {len}, world {world}: {seen:?}"
                );
                let (min, max) = (sizes.iter().min(), sizes.iter().max());
                assert!(max.unwrap() - min.unwrap() <= 1, "balanced: {sizes:?}");
            }
        }
    }

    #[test]
    fn shards_are_deterministic_and_round_robin() {
        let items: Vec<String> = (0..7).map(|i| format!("img{i}")).collect();
        assert_eq!(select(&items, 1, 3), ["img1", "img4"]);
        assert_eq!(select(&items, 1, 3), select(&items, 1, 3));
        assert_eq!(select(&items, 0, 1), items);
        assert!(select(&items, 8, 9).is_empty(), "more ranks than items");
    }
}
