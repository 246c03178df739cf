//! BLIP image captioning (HF `BlipForConditionalGeneration`): the ViT vision tower and the BERT
//! text decoder with cross-attention, loaded from Hugging Face weights; and BLIP visual question
//! answering ([`vqa`]) from the same blocks plus the bidirectional question encoder
//! ([`text_encoder`]).

pub mod backprop;
pub mod config;
pub mod decoder;
pub mod gguf;
pub mod interpolate;
pub mod itm;
pub mod load;
pub mod load_error;
pub mod pth;
pub mod text;
pub mod text_attention;
pub mod text_encoder;
pub mod verify;
pub mod vision;
pub mod vqa;
pub mod weights;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

pub use config::{BlipConfig, BlipTextConfig, BlipVisionConfig};
pub use itm::BlipForImageTextRetrieval;
pub use load::{load_model, load_model_with};
pub use text::BlipTextLMHeadModel;
pub use text_attention::CrossAttentionKv;
pub use vision::BlipVisionModel;
pub use vqa::BlipForQuestionAnswering;
pub use weights::{BlipWeights, LoadError};

use crate::kernels::fused::FusedOps;
use crate::models::kv_cache::{KvCache, KvCacheShape};
use crate::models::linear::{Linear, QuantizedMatmul};
use crate::models::projections::ProjectionLoader;
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
    /// Builds the model with dense weights from `vb` (root of the HF checkpoint); the
    /// activation dtype is `vb`'s.
    pub fn new(cfg: &BlipConfig, vb: VarBuilder) -> Result<Self> {
        Self::new_with_projections(cfg, vb, &mut ProjectionLoader::dense())
    }

    /// Builds the model for training: dense projections and composed candle ops only (the fused
    /// CUDA kernels have no backward pass), so that gradients reach every weight `vb` hands out
    /// as (or computed from) a `Var`.
    pub fn new_differentiable(cfg: &BlipConfig, vb: VarBuilder) -> Result<Self> {
        Self::new_trainable(cfg, vb, FusedOps::disabled())
    }

    /// As [`Self::new_differentiable`], with the kernels of `ops` that have a backward pass
    /// (see [`FusedOps::for_training`]); `ops` is loaded once per run, not per model build.
    pub fn new_trainable(cfg: &BlipConfig, vb: VarBuilder, ops: FusedOps) -> Result<Self> {
        Self::build(cfg, vb, &mut ProjectionLoader::dense(), ops)
    }

    /// Builds the model from `vb`, its projections through `projections` (dense, quantized at
    /// load, or read from a GGUF file), with the fused kernels on a CUDA device.
    pub fn new_with_projections(
        cfg: &BlipConfig,
        vb: VarBuilder,
        projections: &mut ProjectionLoader,
    ) -> Result<Self> {
        let ops = FusedOps::for_device(vb.device())?;
        Self::build(cfg, vb, projections, ops)
    }

    fn build(
        cfg: &BlipConfig,
        vb: VarBuilder,
        projections: &mut ProjectionLoader,
        ops: FusedOps,
    ) -> Result<Self> {
        let quantized = projections.target();
        Ok(Self {
            vision_model: BlipVisionModel::new_with_ops(
                &cfg.vision_config,
                vb.pp("vision_model"),
                ops.clone(),
                projections,
            )?,
            text_decoder: BlipTextLMHeadModel::new_with_ops(
                &cfg.text_config,
                vb.pp("text_decoder"),
                ops,
                projections,
            )?,
            config: cfg.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
            quantized,
        })
    }

    /// Calls `visit` with every projection of the vision tower and the text decoder (the
    /// layers [`BlipForConditionalGeneration::quantize`] quantizes), by full name.
    pub fn for_each_projection(
        &mut self,
        visit: &mut dyn FnMut(&str, &mut Linear) -> Result<()>,
    ) -> Result<()> {
        self.vision_model.for_each_projection(visit)?;
        self.text_decoder.for_each_projection(visit)
    }

    /// Sets how every quantized projection multiplies (see [`QuantizedMatmul`]).
    pub fn set_quantized_matmul(&mut self, policy: QuantizedMatmul) -> Result<()> {
        self.for_each_projection(&mut |_, linear| {
            linear.set_quantized_matmul(policy);
            Ok(())
        })
    }

    /// Elements and bytes of the projections' weight matrices (biases not included; the
    /// quantized storage size for quantized ones).
    pub fn projection_weights(&mut self) -> Result<(usize, usize)> {
        let (mut elements, mut bytes) = (0usize, 0usize);
        self.for_each_projection(&mut |_, linear| {
            elements += linear.in_features()? * linear.out_features()?;
            bytes += linear.weight_bytes();
            Ok(())
        })?;
        Ok((elements, bytes))
    }

    /// Quantizes the vision and text projections in place to `target` (see
    /// [`Quantizer::format_for`] for the per-layer fallback).
    pub fn quantize(&mut self, target: GgmlDType) -> Result<QuantizationSummary> {
        if self.quantized.is_some() {
            candle_core::bail!("the model is already quantized");
        }
        let mut quantizer = Quantizer::new(target);
        self.for_each_projection(&mut |name, linear| quantizer.apply(name, linear))?;
        self.quantized = Some(target);
        Ok(quantizer.into_summary())
    }

    /// The target format the projections were quantized to, if any.
    pub fn quantized(&self) -> Option<GgmlDType> {
        self.quantized
    }

    /// Uses the fused CUDA kernels for decoding (`true`, the default on a CUDA device) or the
    /// composed candle ops everywhere (for comparisons). A no-op on CPU. On a quantized model
    /// the fused kernels read the quantized weights (see [`Linear::forward_fused`]).
    pub fn set_fused(&mut self, enabled: bool) -> Result<()> {
        let ops = if enabled {
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
