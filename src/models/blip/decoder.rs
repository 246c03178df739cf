//! BLIP captioning as a [`Decoder`]: the text decoder over a KV cache, cross-attending to the
//! image's keys/values ([`CrossAttentionKv`], one group per image).

use candle_core::{Device, Result, Tensor};

use super::{BlipForConditionalGeneration, CrossAttentionKv};
use crate::kernels::fused::FusedOps;
use crate::models::family::Decoder;
use crate::models::kv_cache::KvCache;

impl Decoder for BlipForConditionalGeneration {
    type Context = CrossAttentionKv;

    fn vocab_size(&self) -> usize {
        self.config().text_config.vocab_size
    }

    fn max_positions(&self) -> usize {
        self.config().text_config.max_position_embeddings
    }

    fn device(&self) -> &Device {
        BlipForConditionalGeneration::device(self)
    }

    fn fused_ops(&self) -> &FusedOps {
        self.text_decoder().fused_ops()
    }

    fn new_cache(&self, rows: usize, capacity: usize) -> Result<KvCache> {
        BlipForConditionalGeneration::new_cache(self, rows, capacity)
    }

    fn context_groups(&self, context: &CrossAttentionKv) -> Result<usize> {
        context.images()
    }

    fn select_groups(&self, context: &CrossAttentionKv, indices: &Tensor) -> Result<Self::Context> {
        context.select_images(indices)
    }

    fn context_dims(&self, context: &CrossAttentionKv) -> Vec<usize> {
        context.dims()
    }

    fn copy_context(&self, dst: &CrossAttentionKv, src: &CrossAttentionKv) -> Result<()> {
        dst.copy_from(src)
    }

    fn next_token_logits(
        &self,
        input_ids: &Tensor,
        context: &CrossAttentionKv,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        last_position_logits(self.text_decoder(), input_ids, context, cache)
    }
}

/// The f32 logits `(R, V)` of the last position of `input_ids` `(R, T)` through `decoder`.
pub(crate) fn last_position_logits(
    decoder: &super::BlipTextLMHeadModel,
    input_ids: &Tensor,
    context: &CrossAttentionKv,
    cache: &mut KvCache,
) -> Result<Tensor> {
    let t = input_ids.dim(1)?;
    let hidden = decoder.forward_hidden(input_ids, context, cache)?;
    let last = hidden.narrow(1, t - 1, 1)?.squeeze(1)?;
    decoder.logits(&last)
}
