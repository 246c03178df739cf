//! Logits processing as transformers 5.17 applies it during `generate`, on the device and in
//! f32: repetition penalty (`RepetitionPenaltyLogitsProcessor`), minimum length
//! (`MinLengthLogitsProcessor`), and the per-row top-k used by beam search.

use candle_core::{DType, Device, Result, Tensor, D};

/// HF `RepetitionPenaltyLogitsProcessor`: for every token already present in a row's sequence
/// (bos and prompt included), a negative score is multiplied by `penalty` and a non-negative one
/// divided by it. Keeps a `(rows, vocab)` presence mask on the device.
#[derive(Debug, Clone)]
pub struct RepetitionPenalty {
    /// The penalty as a 1-element f32 tensor (divisions use a tensor so they round like torch's).
    penalty: Tensor,
    /// `(rows, vocab)` u8: 1 where the token occurs in the row's sequence.
    seen: Tensor,
    vocab_size: usize,
}

impl RepetitionPenalty {
    /// The penalty `penalty` asks for, or `None` when it is 1.0 (off).
    pub fn if_enabled(
        penalty: f32,
        prompt: &[u32],
        rows: usize,
        vocab_size: usize,
        device: &Device,
    ) -> Result<Option<Self>> {
        if penalty == 1.0 {
            return Ok(None);
        }
        Self::new(penalty, prompt, rows, vocab_size, device).map(Some)
    }

    /// `rows` sequences that all start with `prompt`.
    pub fn new(
        penalty: f32,
        prompt: &[u32],
        rows: usize,
        vocab_size: usize,
        device: &Device,
    ) -> Result<Self> {
        let mut row = vec![0u8; vocab_size];
        for &id in prompt {
            if let Some(slot) = row.get_mut(id as usize) {
                *slot = 1;
            }
        }
        let seen = Tensor::from_vec(row, (1, vocab_size), device)?.repeat((rows, 1))?;
        Ok(Self {
            penalty: Tensor::new(&[penalty], device)?,
            seen,
            vocab_size,
        })
    }

    /// Penalizes `scores` `(rows, vocab)` f32.
    pub fn apply(&self, scores: &Tensor) -> Result<Tensor> {
        let negative = scores.lt(0f32)?;
        let multiplied = scores.broadcast_mul(&self.penalty)?;
        let divided = scores.broadcast_div(&self.penalty)?;
        let penalized = negative.where_cond(&multiplied, &divided)?;
        self.seen.where_cond(&penalized, scores)
    }

    /// Marks `tokens` (one u32 per row, `(rows,)`) as seen.
    pub fn record(&mut self, tokens: &Tensor) -> Result<()> {
        let rows = tokens.dim(0)?;
        let ones = Tensor::ones((rows, 1), DType::U8, tokens.device())?;
        self.seen = self.seen.scatter(&tokens.reshape((rows, 1))?, &ones, 1)?;
        Ok(())
    }

    /// Keeps rows `indices` (u32) in that order (beam reordering, dropping finished rows).
    pub fn select_rows(&mut self, indices: &Tensor) -> Result<()> {
        self.seen = self.seen.index_select(indices, 0)?;
        Ok(())
    }

    /// Vocabulary size the mask covers.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
}

/// HF `MinLengthLogitsProcessor`: a `(1, vocab)` f32 row that is 0 except -inf at `eos`, added to
/// the scores while the sequence is shorter than `min_length`.
pub fn eos_suppression(eos: u32, vocab_size: usize, device: &Device) -> Result<Tensor> {
    let mut row = vec![0f32; vocab_size];
    if let Some(slot) = row.get_mut(eos as usize) {
        *slot = f32::NEG_INFINITY;
    }
    Tensor::from_vec(row, (1, vocab_size), device)
}

/// Per row, the best entries' values and token ids (best first).
pub type RowCandidates = (Vec<Vec<f32>>, Vec<Vec<u32>>);

/// The `k` largest entries of every row of `scores` `(rows, vocab)` f32, largest first:
/// `(values, indices)` as host vectors of `rows` rows. Runs on the device (k argmax passes) so
/// that only `rows * k` numbers cross to the host.
pub fn top_k_rows(scores: &Tensor, k: usize) -> Result<RowCandidates> {
    let rows = scores.dim(0)?;
    let work = scores.copy()?;
    let neg_inf = Tensor::full(f32::NEG_INFINITY, (rows, 1), scores.device())?;
    let mut picked = Vec::with_capacity(k);
    for _ in 0..k {
        let idx = work.argmax_keepdim(D::Minus1)?;
        work.scatter_set(&idx, &neg_inf, 1)?;
        picked.push(idx);
    }
    let indices = Tensor::cat(&picked, 1)?;
    let values = scores.gather(&indices, 1)?;
    Ok((values.to_vec2::<f32>()?, indices.to_vec2::<u32>()?))
}
