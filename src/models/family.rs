//! The seam between a model and `generate/`: what greedy and beam search need of a decoder, in
//! the manner of transformers' `generate` (a decoder step over a KV cache, plus whatever the
//! decoder attends to besides its own tokens, which search expands, reorders and drops by row).
//!
//! Implemented by BLIP captioning (the context is the image's cross-attention keys/values) and
//! BLIP question answering (the context is the encoded question's cross-attention keys/values);
//! `generate` does not know which.

use candle_core::{Device, Result, Tensor};

use crate::kernels::fused::FusedOps;
use crate::models::kv_cache::KvCache;

/// A text decoder that `generate` can drive.
pub trait Decoder {
    /// What the decoder attends to besides its own tokens, for a batch of groups (one group =
    /// the consecutive rows, e.g. beams, of one input).
    type Context;

    /// Vocabulary size of the logits [`Decoder::next_token_logits`] returns.
    fn vocab_size(&self) -> usize;

    /// Positions the decoder can take (the longest sequence).
    fn max_positions(&self) -> usize;

    /// The device the decoder runs on.
    fn device(&self) -> &Device;

    /// The kernel handle for the search ops (argmax, top-k) on the decoder's logits.
    fn fused_ops(&self) -> &FusedOps;

    /// An empty self-attention cache for `rows` sequences of at most `capacity` tokens.
    fn new_cache(&self, rows: usize, capacity: usize) -> Result<KvCache>;

    /// Number of groups in `context`.
    fn context_groups(&self, context: &Self::Context) -> Result<usize>;

    /// Keeps groups `indices` (u32 on the decoder's device) of `context`, in that order.
    fn select_groups(&self, context: &Self::Context, indices: &Tensor) -> Result<Self::Context>;

    /// The shape of `context` (what a recorded decoder step depends on besides the rows and the
    /// cache length): two contexts of equal dims can share one recorded step.
    fn context_dims(&self, context: &Self::Context) -> Vec<usize>;

    /// Overwrites `dst` in place with `src`, of equal [`Decoder::context_dims`].
    fn copy_context(&self, dst: &Self::Context, src: &Self::Context) -> Result<()>;

    /// Runs `input_ids` `(R, T)` (u32, at positions `cache.len()..`) and returns the f32 logits
    /// of the last position `(R, V)`; `R` is a multiple of the groups in `context`. Advances
    /// `cache` by `T`.
    fn next_token_logits(
        &self,
        input_ids: &Tensor,
        context: &Self::Context,
        cache: &mut KvCache,
    ) -> Result<Tensor>;
}
