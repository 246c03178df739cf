//! Greedy search with recorded decode steps (CUDA graphs). A one-token step of the decoder is
//! ~130 small kernel launches; recorded once per (rows, cache length) and replayed with one
//! launch, the host no longer paces the GPU (H200, BLIP-base, bf16: 1.57x the bench at batch 1,
//! 1.14x at 64; docs/performance.md).
//!
//! A recorded step reads and writes fixed buffers, so each row count has a [`StepPool`]: the
//! token ids `(rows, 1)`, the self-attention cache, a copy of the context (the image's
//! cross-attention keys/values, overwritten by each batch's) and the f32 logits `(rows, V)`. Every
//! cache length is run eagerly once (so the small uploads it makes are cached on the device),
//! recorded on its second use and replayed from then on. If a step cannot be recorded the pool runs
//! eagerly from then on, with one warning.
//!
//! Rows that finish stay in the batch (a recorded step has a fixed shape) and their tokens are
//! ignored; each row depends only on its own image, so the other rows are unaffected. Greedy
//! search without graphs drops finished rows instead; the token ids are the same (tested).

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Tensor};

use super::greedy::greedy_tokens;
use super::logits::{eos_suppression, RepetitionPenalty};
use super::{prompt_tensor, GenerateError, GenerationConfig};
use crate::device::graph::{capture, with_upload_cache, Graph};
use crate::models::family::Decoder;
use crate::models::kv_cache::KvCache;

/// Pools kept at once (each holds a batch's context keys/values: ~1.3 GB at batch 64 in bf16 for
/// BLIP-base); a run uses one row count, plus one for its last, smaller batch.
const MAX_POOLS: usize = 3;

/// The recorded decode steps of a model, by row count. Owned by whoever runs `generate` for one
/// model (the captioner, the bench engine) and passed to it explicitly.
pub struct StepGraphs<C> {
    enabled: bool,
    /// Whether steps are recorded; without, the pools run every step eagerly, rows kept.
    record: bool,
    pools: Mutex<Vec<StepPool<C>>>,
}

impl<C> StepGraphs<C> {
    /// Graphs for greedy search on a CUDA device with the fused kernels when `enabled`; `false`
    /// (or the CPU) runs every step eagerly.
    pub fn new(enabled: bool) -> Self {
        StepGraphs {
            enabled,
            record: true,
            pools: Mutex::new(Vec::new()),
        }
    }

    /// The same search over the same fixed buffers with every step run eagerly (finished rows
    /// kept): what the recorded steps must reproduce exactly, kernel for kernel.
    pub fn unrecorded() -> Self {
        StepGraphs {
            enabled: true,
            record: false,
            pools: Mutex::new(Vec::new()),
        }
    }

    /// Drops every recorded step and pool (after the model changed how it computes), keeping
    /// the settings.
    pub fn clear(&mut self) {
        self.pools = Mutex::new(Vec::new());
    }

    /// Whether greedy search over `model` with `cfg` goes through recorded steps.
    pub fn applies<M: Decoder<Context = C>>(&self, model: &M, cfg: &GenerationConfig) -> bool {
        self.enabled
            && cfg.num_beams == 1
            && model.device().is_cuda()
            && model.fused_ops().enabled()
    }

    /// Steps recorded so far, over all pools (for logs and tests).
    pub fn recorded(&self) -> usize {
        self.pools.lock().map_or(0, |pools| {
            pools
                .iter()
                .map(|pool| {
                    pool.steps
                        .values()
                        .filter(|s| matches!(s, Step::Recorded(_)))
                        .count()
                })
                .sum()
        })
    }
}

/// What is known of one cache length in a pool.
enum Step {
    /// Ran eagerly once: its uploads are cached; recorded on the next use.
    Warm,
    Recorded(Graph),
}

/// Fixed buffers for one shape of decode step.
struct StepPool<C> {
    rows: usize,
    capacity: usize,
    context_dims: Vec<usize>,
    /// `(rows, 1)` u32: the tokens the next step reads.
    ids: Tensor,
    cache: KvCache,
    context: C,
    /// `(rows, V)` f32: what a recorded step writes.
    logits: Tensor,
    steps: HashMap<usize, Step>,
    /// A capture failed: every step runs eagerly.
    eager_only: bool,
}

impl<C> StepPool<C> {
    fn new<M: Decoder<Context = C>>(
        model: &M,
        context: C,
        capacity: usize,
    ) -> candle_core::Result<Self> {
        let rows = model.context_groups(&context)?;
        let device = model.device();
        Ok(StepPool {
            rows,
            capacity,
            context_dims: model.context_dims(&context),
            ids: Tensor::zeros((rows, 1), DType::U32, device)?,
            cache: model.new_cache(rows, capacity)?,
            context,
            logits: Tensor::zeros((rows, model.vocab_size()), DType::F32, device)?,
            steps: HashMap::new(),
            eager_only: false,
        })
    }

    /// Runs one one-token step over `self.ids` at the cache's length and returns the f32 logits
    /// `(rows, V)` (valid until the next step).
    fn step<M: Decoder<Context = C>>(&mut self, model: &M) -> candle_core::Result<Tensor> {
        let len = self.cache.len();
        self.cache.check_room(1)?;
        match self.steps.get(&len) {
            Some(Step::Recorded(graph)) => {
                graph.launch()?;
                self.cache.advance(1);
                return Ok(self.logits.clone());
            }
            Some(Step::Warm) if !self.eager_only => {
                let (ids, context, logits, cache) =
                    (&self.ids, &self.context, &self.logits, &mut self.cache);
                let recorded = capture(model.device(), || {
                    let step = model.next_token_logits(ids, context, cache)?;
                    logits.slice_set(&step, 0, 0)
                });
                match recorded {
                    Ok((graph, ())) => {
                        graph.launch()?;
                        self.steps.insert(len, Step::Recorded(graph));
                        return Ok(self.logits.clone());
                    }
                    Err(err) => {
                        tracing::warn!(
                            "decode steps of {} rows cannot be recorded as a CUDA graph ({err}); running them eagerly",
                            self.rows
                        );
                        self.eager_only = true;
                        // Nothing recorded ran: the cache is where it was.
                        self.cache.rewind(len);
                    }
                }
            }
            _ => {}
        }
        let step = model.next_token_logits(&self.ids, &self.context, &mut self.cache)?;
        self.logits.slice_set(&step, 0, 0)?;
        self.steps.entry(len).or_insert(Step::Warm);
        Ok(self.logits.clone())
    }
}

impl<C> StepGraphs<C> {
    /// Greedy search as [`super::greedy::greedy_search`] does it, through recorded steps.
    pub(super) fn greedy_search<M: Decoder<Context = C>>(
        &self,
        model: &M,
        context: C,
        prompt: &[u32],
        cfg: &GenerationConfig,
    ) -> Result<Vec<Vec<u32>>, GenerateError> {
        let mut pools = self.pools.lock().map_err(|_| {
            candle_core::Error::Msg("the decode-step pools were poisoned by a panic".into())
        })?;
        let rows = model.context_groups(&context)?;
        let dims = model.context_dims(&context);
        let found = pools
            .iter()
            .position(|p| p.rows == rows && p.capacity == cfg.max_length && p.context_dims == dims);
        let index = match found {
            Some(index) => {
                let pool = &pools[index];
                model.copy_context(&pool.context, &context)?;
                index
            }
            None => {
                if pools.len() >= MAX_POOLS {
                    pools.remove(0);
                }
                let mut pool = StepPool::new(model, context, cfg.max_length)?;
                pool.eager_only = !self.record;
                pools.push(pool);
                pools.len() - 1
            }
        };
        let pool = &mut pools[index];
        pool.cache.reset();
        with_upload_cache(model.device(), || search(model, pool, prompt, cfg))
    }
}

fn search<M: Decoder>(
    model: &M,
    pool: &mut StepPool<M::Context>,
    prompt: &[u32],
    cfg: &GenerationConfig,
) -> Result<Vec<Vec<u32>>, GenerateError> {
    let device = model.device().clone();
    let rows = pool.rows;
    let vocab = model.vocab_size();
    let mut penalty =
        RepetitionPenalty::if_enabled(cfg.repetition_penalty, prompt, rows, vocab, &device)?;
    let eos_block = eos_suppression(cfg.eos, vocab, &device)?;
    let ops = model.fused_ops();

    let mut sequences: Vec<Vec<u32>> = vec![prompt.to_vec(); rows];
    let mut finished = vec![false; rows];
    let start = prompt_tensor(prompt, rows, &device)?;
    let mut prefill = if prompt.len() == 1 {
        pool.ids.slice_set(&start, 0, 0)?;
        None
    } else {
        Some(start)
    };
    let mut cur_len = prompt.len();
    loop {
        let scores = match prefill.take() {
            Some(ids) => model.next_token_logits(&ids, &pool.context, &mut pool.cache)?,
            None => pool.step(model)?,
        };
        // 0 * x is 0 for every finite x and NaN for NaN and +-inf: a row's sum is finite iff
        // all its logits are. Read back with the tokens, in one copy.
        let probes = scores.affine(0.0, 0.0)?.sum(1)?;
        let next = greedy_tokens(
            scores,
            penalty.as_ref(),
            cur_len < cfg.min_length,
            &eos_block,
            cfg.eos,
            ops,
        )?;
        let rows_back =
            Tensor::cat(&[&next.to_dtype(DType::F32)?, &probes], 0)?.to_vec1::<f32>()?;
        let (tokens, probes) = rows_back.split_at(rows);
        if probes
            .iter()
            .zip(&finished)
            .any(|(probe, &done)| !done && !probe.is_finite())
        {
            return Err(GenerateError::NonFiniteLogits {
                step: cur_len - prompt.len(),
            });
        }
        // Token ids are below 2^24: exact in f32.
        let tokens: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
        cur_len += 1;
        for ((seq, done), &token) in sequences.iter_mut().zip(&mut finished).zip(&tokens) {
            if !*done {
                seq.push(token);
                *done = token == cfg.eos;
            }
        }
        if cur_len >= cfg.max_length || finished.iter().all(|&done| done) {
            break;
        }
        if let Some(p) = &mut penalty {
            p.record(&next)?;
        }
        pool.ids.slice_set(&next.unsqueeze(1)?, 0, 0)?;
    }
    Ok(sequences)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::generate::greedy::greedy_search;
    use crate::models::blip::load::load_model;

    /// The pool's search (rows kept, finished rows ignored, fixed buffers reused across batches
    /// and lengths) gives greedy search's ids. On the CPU nothing is recorded: the second use of a
    /// length tries a capture, is refused, and the pool runs eagerly, as on a GPU whose capture
    /// fails.
    #[test]
    fn pooled_steps_give_the_token_ids_of_greedy_search() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo-blip");
        let model = load_model(&dir, DType::F32, &Device::Cpu).unwrap();
        let size = model.config().vision_config.image_size;
        let graphs = StepGraphs::new(true);
        let settings = [
            (vec![], GenerationConfig::default()),
            (
                vec![30522, 1037, 3861],
                GenerationConfig {
                    max_length: 12,
                    min_length: 6,
                    repetition_penalty: 1.3,
                    ..GenerationConfig::default()
                },
            ),
        ];
        let (mut compared, mut uneven) = (0, 0);
        for seed in 0..3u64 {
            let n = 3 * 3 * size * size;
            let values: Vec<f32> = (0..n as u64)
                .map(|i| ((i * 2_654_435_761 + seed * 97) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let pixels = Tensor::from_vec(values, (3, 3, size, size), &Device::Cpu).unwrap();
            let embeds = model.image_embeds(&pixels).unwrap();
            for (prompt, cfg) in &settings {
                let kv = || model.text_decoder().image_kv(&embeds).unwrap();
                let expected = greedy_search(&model, kv(), prompt_or_bos(prompt), cfg).unwrap();
                let got = graphs
                    .greedy_search(&model, kv(), prompt_or_bos(prompt), cfg)
                    .unwrap();
                assert_eq!(got, expected, "seed {seed}, prompt {prompt:?}");
                let lengths: Vec<usize> = got.iter().map(Vec::len).collect();
                // Rows that finish early while others decode on are what the pool handles apart.
                uneven += usize::from(lengths.iter().any(|&l| l != lengths[0]));
                compared += 1;
            }
        }
        assert_eq!(compared, 6);
        assert!(
            uneven >= 3,
            "only {uneven} of the batches had rows finishing apart"
        );
        assert_eq!(graphs.recorded(), 0, "nothing can be recorded on the CPU");
    }

    fn prompt_or_bos(prompt: &[u32]) -> &[u32] {
        if prompt.is_empty() {
            &[30522]
        } else {
            prompt
        }
    }
}
