//! Beam search (HF `_beam_search`, transformers 5.17): per step, f32 log-softmax of the logits,
//! logits processors on the log-probs, accumulated beam scores, the best `2 * num_beams`
//! continuations per image (found on the device, ranked on the host by [`BeamState`]).
//! Images whose result is final leave the batch.

use candle_core::{Tensor, D};

use super::beam_state::{merge_beam_candidates, BeamState};
use super::logits::{eos_suppression, top_k_rows, RepetitionPenalty, RowCandidates};
use super::{ensure_finite, index_tensor, prompt_tensor, GenerateError, GenerationConfig};
use crate::kernels::fused::FusedOps;
use crate::models::family::Decoder;

/// Beam search for every image in `image_kv` from the decoder start sequence `prompt`.
pub fn beam_search<M: Decoder>(
    model: &M,
    mut image_kv: M::Context,
    prompt: &[u32],
    cfg: &GenerationConfig,
) -> Result<Vec<Vec<u32>>, GenerateError> {
    let device = model.device().clone();
    let batch = model.context_groups(&image_kv)?;
    let vocab = model.vocab_size();
    let k = cfg.num_beams;
    let ops = model.fused_ops();
    let eos_block = eos_suppression(cfg.eos, vocab, &device)?;

    let mut states: Vec<BeamState> = (0..batch)
        .map(|_| BeamState::new(prompt, k, cfg.length_penalty))
        .collect();
    let mut results: Vec<Vec<u32>> = vec![Vec::new(); batch];
    // Original image index of each image still searching; its beams are rows i*k..(i+1)*k.
    let mut active: Vec<usize> = (0..batch).collect();

    // Prefill once per image, then give each image `k` identical beams (HF starts from `k` copies).
    let mut cache = model.new_cache(batch, cfg.max_length)?;
    let mut penalty =
        RepetitionPenalty::if_enabled(cfg.repetition_penalty, prompt, batch, vocab, &device)?;
    let logits = model.next_token_logits(
        &prompt_tensor(prompt, batch, &device)?,
        &image_kv,
        &mut cache,
    )?;
    ensure_finite(&logits, 0)?;
    let expand: Vec<usize> = (0..batch).flat_map(|i| std::iter::repeat_n(i, k)).collect();
    let expand = index_tensor(&expand, &device)?;
    cache.select_rows(&expand)?;
    if let Some(p) = &mut penalty {
        p.select_rows(&expand)?;
    }
    let mut logits = logits.index_select(&expand, 0)?;
    let mut cur_len = prompt.len();

    loop {
        let rows = active.len() * k;
        let running: Vec<f32> = active
            .iter()
            .filter_map(|&image| states.get(image))
            .flat_map(|s| s.running_scores().iter().copied())
            .collect();
        let running = Tensor::from_vec(running, rows, &device)?;
        let blocked = (cur_len < cfg.min_length).then_some(cfg.eos);
        let (values, tokens) = match (&penalty, ops.enabled()) {
            (None, true) => fused_candidates(ops, &logits, &running, blocked, 2 * k)?,
            _ => {
                let mut scores = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
                if let Some(p) = &penalty {
                    scores = p.apply(&scores)?;
                }
                if blocked.is_some() {
                    scores = scores.broadcast_add(&eos_block)?;
                }
                top_k_rows(&scores.broadcast_add(&running.unsqueeze(1)?)?, 2 * k)?
            }
        };

        let mut reorder = Vec::with_capacity(rows);
        let mut kept_images = Vec::with_capacity(active.len());
        let mut still_active = Vec::with_capacity(active.len());
        for (pos, &image) in active.iter().enumerate() {
            let (Some(vals), Some(toks), Some(state)) = (
                values.get(pos * k..(pos + 1) * k),
                tokens.get(pos * k..(pos + 1) * k),
                states.get_mut(image),
            ) else {
                continue;
            };
            let candidates = merge_beam_candidates(vals, toks, vocab, 2 * k);
            let sources = state.step(&candidates, cfg.eos, cfg.max_length);
            if state.is_improvable() && cur_len + 1 < cfg.max_length {
                reorder.extend(sources.iter().map(|&beam| pos * k + beam));
                kept_images.push(pos);
                still_active.push(image);
            } else if let Some(slot) = results.get_mut(image) {
                *slot = state.best().to_vec();
            }
        }
        cur_len += 1;
        if still_active.is_empty() {
            break;
        }
        if kept_images.len() < active.len() {
            image_kv = model.select_groups(&image_kv, &index_tensor(&kept_images, &device)?)?;
        }
        let reorder = index_tensor(&reorder, &device)?;
        cache.select_rows(&reorder)?;
        active = still_active;

        let next: Vec<u32> = active
            .iter()
            .filter_map(|&image| states.get(image))
            .flat_map(|s| s.last_tokens())
            .collect();
        let next = Tensor::from_vec(next, active.len() * k, &device)?;
        if let Some(p) = &mut penalty {
            p.select_rows(&reorder)?;
            p.record(&next)?;
        }
        logits = model.next_token_logits(&next.unsqueeze(1)?, &image_kv, &mut cache)?;
        ensure_finite(&logits, cur_len - prompt.len())?;
    }
    Ok(results)
}

/// Per-row best `count` accumulated scores through the fused kernels (log-softmax + running
/// score + top-k on the device; only `rows * count` pairs are copied back).
fn fused_candidates(
    ops: &FusedOps,
    logits: &Tensor,
    running: &Tensor,
    blocked: Option<u32>,
    count: usize,
) -> candle_core::Result<RowCandidates> {
    let scores = ops.beam_scores(logits, running, blocked)?;
    let Some(top) = ops.top_k_rows(&scores, count)? else {
        return top_k_rows(&scores, count);
    };
    let rows = top.to_vec3::<f32>()?;
    let mut values = Vec::with_capacity(rows.len());
    let mut tokens = Vec::with_capacity(rows.len());
    for row in rows {
        let mut parts = row.into_iter();
        let (Some(v), Some(t)) = (parts.next(), parts.next()) else {
            candle_core::bail!("top-k kernel returned a malformed row");
        };
        values.push(v);
        // Indices are below 2^24, so the f32 round trip is exact.
        tokens.push(t.into_iter().map(|x| x as u32).collect());
    }
    Ok((values, tokens))
}
