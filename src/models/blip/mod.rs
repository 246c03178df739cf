//! BLIP image captioning (HF `BlipForConditionalGeneration`): the ViT vision tower and the BERT
//! text decoder with cross-attention, loaded from Hugging Face weights.

pub mod config;
pub mod load;
pub mod text;
pub mod text_attention;
pub mod vision;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

pub use config::{BlipConfig, BlipTextConfig, BlipVisionConfig};
pub use load::{load_model, load_model_with, BlipWeights, LoadError};
pub use text::BlipTextLMHeadModel;
pub use text_attention::CrossAttentionKv;
pub use vision::BlipVisionModel;

use crate::generate::kv_cache::{KvCache, KvCacheShape};
use crate::models::fused::FusedOps;
use crate::models::quantize::{QuantizationSummary, Quantizer};

/// `vision_model` + `text_decoder`.
#[derive(Debug, Clone)]
pub struct BlipForConditionalGeneration {
    vision_model: BlipVisionModel,
    text_decoder: BlipTextLMHeadModel,
    config: BlipConfig,
    dtype: DType,
    device: Device,
    /// Target format of the quantized projections, `None` when every weight is dense.
    quantized: Option<GgmlDType>,
}

impl BlipForConditionalGeneration {
    /// Builds the model from `vb` (root of the HF checkpoint); the activation dtype is `vb`'s.
    pub fn new(cfg: &BlipConfig, vb: VarBuilder) -> Result<Self> {
        let ops = FusedOps::for_device(vb.device())?;
        Self::new_with_ops(cfg, vb, ops)
    }

    /// Builds the model for training: composed candle ops only (the fused CUDA kernels have no
    /// backward pass), so that gradients reach every weight `vb` hands out as (or computed
    /// from) a `Var`.
    pub fn new_differentiable(cfg: &BlipConfig, vb: VarBuilder) -> Result<Self> {
        Self::new_with_ops(cfg, vb, FusedOps::disabled())
    }

    fn new_with_ops(cfg: &BlipConfig, vb: VarBuilder, ops: FusedOps) -> Result<Self> {
        Ok(Self {
            vision_model: BlipVisionModel::new_with_ops(
                &cfg.vision_config,
                vb.pp("vision_model"),
                ops.clone(),
            )?,
            text_decoder: BlipTextLMHeadModel::new_with_ops(
                &cfg.text_config,
                vb.pp("text_decoder"),
                ops,
            )?,
            config: cfg.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
            quantized: None,
        })
    }

    /// Quantizes the vision and text projections in place to `target` (see
    /// [`Quantizer::format_for`] for the per-layer fallback) and switches the model to the
    /// composed ops: the fused CUDA kernels read dense weights only.
    pub fn quantize(&mut self, target: GgmlDType) -> Result<QuantizationSummary> {
        if self.quantized.is_some() {
            candle_core::bail!("the model is already quantized");
        }
        let mut quantizer = Quantizer::new(target);
        self.vision_model.quantize_linears(&mut quantizer)?;
        self.text_decoder.quantize_linears(&mut quantizer)?;
        self.quantized = Some(target);
        self.set_fused(false)?;
        Ok(quantizer.into_summary())
    }

    /// The target format the projections were quantized to, if any.
    pub fn quantized(&self) -> Option<GgmlDType> {
        self.quantized
    }

    /// Uses the fused CUDA kernels for decoding (`true`, the default on a CUDA device) or the
    /// composed candle ops everywhere (for comparisons). A no-op on CPU, and on a quantized
    /// model, which always takes the composed ops.
    pub fn set_fused(&mut self, enabled: bool) -> Result<()> {
        let ops = if enabled && self.quantized.is_none() {
            FusedOps::for_device(&self.device)?
        } else {
            FusedOps::disabled()
        };
        self.vision_model.set_ops(ops.clone());
        self.text_decoder.set_ops(ops);
        Ok(())
    }

    pub fn config(&self) -> &BlipConfig {
        &self.config
    }

    /// Activation dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn vision_model(&self) -> &BlipVisionModel {
        &self.vision_model
    }

    pub fn text_decoder(&self) -> &BlipTextLMHeadModel {
        &self.text_decoder
    }

    /// `(B, 3, S, S)` pixels (f32 or the model dtype) -> image embeds `(B, 1 + (S/p)^2, D_v)`.
    pub fn image_embeds(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.vision_model.forward(pixel_values)
    }

    /// An empty self-attention cache for `rows` sequences of at most `capacity` tokens.
    pub fn new_cache(&self, rows: usize, capacity: usize) -> Result<KvCache> {
        let t = &self.config.text_config;
        let shape = KvCacheShape {
            num_layers: self.text_decoder.num_layers(),
            rows,
            num_heads: t.num_attention_heads,
            capacity,
            head_dim: t.head_dim(),
        };
        KvCache::new(shape, self.dtype, &self.device)
    }

    /// Teacher-forced logits `(B, T, V)` (f32) for `input_ids` `(B, T)` (u32), as HF
    /// `model(pixel_values, input_ids).logits`. Right padding needs no attention mask: the
    /// causal mask already keeps every real token from seeing the pads after it. Differentiable
    /// on a model built with [`Self::new_differentiable`].
    pub fn forward(&self, pixel_values: &Tensor, input_ids: &Tensor) -> Result<Tensor> {
        let image_kv = self
            .text_decoder
            .image_kv(&self.image_embeds(pixel_values)?)?;
        let hidden = self
            .text_decoder
            .forward_hidden_uncached(input_ids, &image_kv)?;
        self.text_decoder.logits(&hidden)
    }
}
