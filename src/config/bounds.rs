//! Upper bounds on the settings that size threads and memory, checked when the configuration is
//! resolved, before anything is spawned or allocated: a value past them used to hang the machine
//! (`preprocess.workers: 100000` spawned that many threads) or abort in an allocation. The bounds
//! that need the model (`generation.max_length` against its positions, the prompt against
//! `max_length`) are checked when the model is assembled (`engine::settings::check_lengths`).

use super::Config;

/// Preprocessing threads per core at most (decode and resize are CPU-bound: more only costs memory).
pub const WORKERS_PER_CORE: usize = 4;
/// Beams per image at most (transformers' users run 1-10; each beam is a row of every decode step).
pub const MAX_BEAMS: usize = 64;
/// Images per forward pass at most.
pub const MAX_BATCH: usize = 4096;
/// Rows of one decoding step at most (`generation.batch_size` x `generation.num_beams`): each holds a
/// vocabulary of logits and a KV cache of `max_length` positions.
pub const MAX_ROWS: usize = 4096;
/// Sequence length at most, whatever the model (BLIP's text decoder has 512 positions).
pub const MAX_LENGTH: usize = 4096;

/// The first setting past its bound, as (key, what it must be), on a machine with `cores` cores.
pub fn problem(config: &Config, cores: usize) -> Option<(&'static str, String)> {
    let generation = &config.generation;
    if config.retrieval.k_test == 0 {
        return Some(("retrieval.k_test", "is 0; must be at least 1".to_string()));
    }
    if config.retrieval.max_text_tokens < 2 {
        return Some((
            "retrieval.max_text_tokens",
            format!(
                "is {}; must be at least 2 ([CLS] and [SEP]) and within the model's positions",
                config.retrieval.max_text_tokens
            ),
        ));
    }
    if config.vqa.num_ans_candidates == 0 {
        return Some((
            "vqa.num_ans_candidates",
            "is 0; must be at least 1".to_string(),
        ));
    }
    let max_workers = cores.max(1) * WORKERS_PER_CORE;
    if config.preprocess.workers > max_workers {
        Some((
            "preprocess.workers",
            format!(
                "is {}; must be 0 (one per core) to {max_workers} ({WORKERS_PER_CORE} per core on this machine's {cores} cores)",
                config.preprocess.workers
            ),
        ))
    } else if generation.num_beams > MAX_BEAMS {
        Some((
            "generation.num_beams",
            format!("is {}; must be 1 to {MAX_BEAMS}", generation.num_beams),
        ))
    } else if generation.batch_size > MAX_BATCH {
        Some((
            "generation.batch_size",
            format!("is {}; must be 1 to {MAX_BATCH}", generation.batch_size),
        ))
    } else if generation.batch_size * generation.num_beams > MAX_ROWS {
        Some((
            "generation.batch_size",
            format!(
                "x generation.num_beams is {} x {} = {} rows per decoding step; must be at most {MAX_ROWS} (lower either)",
                generation.batch_size,
                generation.num_beams,
                generation.batch_size * generation.num_beams
            ),
        ))
    } else if generation.max_length > MAX_LENGTH {
        Some((
            "generation.max_length",
            format!(
                "is {}; must be 2 to {MAX_LENGTH} (and within the model's positions)",
                generation.max_length
            ),
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_each_bound_names_its_key() {
        let base = Config::default();
        assert_eq!(problem(&base, 2), None);
        type Case = (&'static str, fn(&mut Config));
        let cases: [Case; 5] = [
            ("preprocess.workers", |c| c.preprocess.workers = 100_000),
            ("generation.num_beams", |c| {
                c.generation.num_beams = 1_000_000
            }),
            ("generation.batch_size", |c| {
                c.generation.batch_size = 100_000
            }),
            ("generation.batch_size", |c| {
                c.generation.batch_size = 512;
                c.generation.num_beams = 16;
            }),
            ("generation.max_length", |c| {
                c.generation.max_length = 1 << 40
            }),
        ];
        for (key, change) in cases {
            let mut config = base.clone();
            change(&mut config);
            let found = problem(&config, 2);
            assert_eq!(found.as_ref().map(|p| p.0), Some(key), "{found:?}");
        }
        let mut config = base.clone();
        config.preprocess.workers = 8;
        assert_eq!(problem(&config, 2), None, "4 per core is allowed");
        config.preprocess.workers = 9;
        assert!(problem(&config, 2)
            .unwrap()
            .1
            .contains("0 (one per core) to 8"));
    }
}
