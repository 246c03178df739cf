//! Greedy search (HF `_sample` with `do_sample=False`): argmax of the processed f32 logits each
//! step. Rows that finish leave the batch (their cache rows and image keys/values are dropped),
//! so finished captions cost nothing; the others are unaffected.

use candle_core::{Tensor, D};

use super::logits::{eos_suppression, RepetitionPenalty};
use super::{ensure_finite, index_tensor, prompt_tensor, GenerateError, GenerationConfig};
use crate::kernels::fused::FusedOps;
use crate::models::family::Decoder;

/// Greedy decoding of every image in `image_kv` from the decoder start sequence `prompt`.
pub fn greedy_search<M: Decoder>(
    model: &M,
    mut image_kv: M::Context,
    prompt: &[u32],
    cfg: &GenerationConfig,
) -> Result<Vec<Vec<u32>>, GenerateError> {
    let device = model.device().clone();
    let batch = model.context_groups(&image_kv)?;
    let vocab = model.vocab_size();
    let mut cache = model.new_cache(batch, cfg.max_length)?;
    let mut penalty =
        RepetitionPenalty::if_enabled(cfg.repetition_penalty, prompt, batch, vocab, &device)?;
    let eos_block = eos_suppression(cfg.eos, vocab, &device)?;
    let ops = model.fused_ops();

    let mut sequences: Vec<Vec<u32>> = vec![prompt.to_vec(); batch];
    // Original image index of each row still decoding.
    let mut active: Vec<usize> = (0..batch).collect();
    let mut input = prompt_tensor(prompt, batch, &device)?;
    let mut cur_len = prompt.len();
    loop {
        let scores = model.next_token_logits(&input, &image_kv, &mut cache)?;
        ensure_finite(&scores, cur_len - prompt.len())?;
        let next = greedy_tokens(
            scores,
            penalty.as_ref(),
            cur_len < cfg.min_length,
            &eos_block,
            cfg.eos,
            ops,
        )?;
        let tokens = next.to_vec1::<u32>()?;
        cur_len += 1;

        let mut keep = Vec::with_capacity(active.len());
        for (row, (&image, &token)) in active.iter().zip(&tokens).enumerate() {
            if let Some(seq) = sequences.get_mut(image) {
                seq.push(token);
            }
            if token != cfg.eos {
                keep.push(row);
            }
        }
        if cur_len >= cfg.max_length || keep.is_empty() {
            break;
        }
        let mut next = next;
        if keep.len() < active.len() {
            let rows = index_tensor(&keep, &device)?;
            cache.select_rows(&rows)?;
            image_kv = model.select_groups(&image_kv, &rows)?;
            if let Some(p) = &mut penalty {
                p.select_rows(&rows)?;
            }
            next = next.index_select(&rows, 0)?;
            active = keep
                .iter()
                .filter_map(|&row| active.get(row).copied())
                .collect();
        }
        if let Some(p) = &mut penalty {
            p.record(&next)?;
        }
        input = next.unsqueeze(1)?;
    }
    Ok(sequences)
}

/// The greedy choice for every row of the f32 logits `scores` `(rows, V)`: the repetition
/// `penalty` applied, then `eos` blocked while `below_min_length` (by the fused kernel, or by
/// adding `eos_block`, the `(1, V)` row of [`eos_suppression`]), then the argmax `(rows,)` u32.
pub(super) fn greedy_tokens(
    mut scores: Tensor,
    penalty: Option<&RepetitionPenalty>,
    below_min_length: bool,
    eos_block: &Tensor,
    eos: u32,
    ops: &FusedOps,
) -> candle_core::Result<Tensor> {
    if let Some(p) = penalty {
        scores = p.apply(&scores)?;
    }
    if below_min_length {
        if ops.enabled() {
            ops.set_column(&scores, eos as usize, f32::NEG_INFINITY)?;
        } else {
            scores = scores.broadcast_add(eos_block)?;
        }
    }
    if ops.enabled() {
        ops.argmax_rows(&scores)
    } else {
        scores.argmax(D::Minus1)
    }
}
