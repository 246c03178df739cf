//! BLIP configuration: deserializes a Hugging Face `config.json` (`BlipConfig` with nested
//! `text_config` / `vision_config`) and resolves absent fields with the transformers 5.17 class
//! defaults (`configuration_blip.py`). Unknown keys are ignored, as HF configs carry many.

use serde::Deserialize;

/// Activation function named by `hidden_act` in an HF config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: exact GELU, `x * 0.5 * (1 + erf(x / sqrt(2)))` (transformers' `GELUActivation`).
    GeluErf,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `quick_gelu`: `x * sigmoid(1.702 x)`.
    QuickGelu,
    /// `relu`.
    Relu,
}

impl Activation {
    /// Parses an HF `hidden_act` name; `None` when the name is not supported.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "quick_gelu" => Some(Self::QuickGelu),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }

    /// Applies the activation elementwise.
    pub fn forward(&self, xs: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        match self {
            Self::GeluErf => xs.gelu_erf(),
            Self::GeluTanh => xs.gelu(),
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Self::Relu => xs.relu(),
        }
    }
}

/// Why a config could not be resolved (the file name is added by the loader).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The JSON did not parse or a field had the wrong type.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// `hidden_act` names an activation this crate does not implement.
    #[error("{section}.hidden_act = {name:?} is not supported (use gelu, gelu_new, gelu_pytorch_tanh, quick_gelu or relu)")]
    UnsupportedActivation { section: &'static str, name: String },
    /// A size that must divide another does not.
    #[error("{section}: {what}")]
    Inconsistent { section: &'static str, what: String },
}

/// `BlipVisionConfig` as written in config.json (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
struct RawVisionConfig {
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    image_size: Option<usize>,
    patch_size: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
}

/// `BlipTextConfig` as written in config.json (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
struct RawTextConfig {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    max_position_embeddings: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<u32>,
    sep_token_id: Option<u32>,
    pad_token_id: Option<u32>,
}

/// `BlipConfig` as written in config.json.
#[derive(Debug, Clone, Default, Deserialize)]
struct RawBlipConfig {
    text_config: Option<RawTextConfig>,
    vision_config: Option<RawVisionConfig>,
}

/// Resolved vision tower configuration (ViT).
#[derive(Debug, Clone, PartialEq)]
pub struct BlipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for BlipVisionConfig {
    /// transformers 5.17 `BlipVisionConfig()` defaults.
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            image_size: 384,
            patch_size: 16,
            hidden_act: Activation::GeluErf,
            layer_norm_eps: 1e-5,
        }
    }
}

impl BlipVisionConfig {
    /// Patches per side of the (square) input image.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Sequence length of the vision encoder: one class token plus one token per patch.
    pub fn num_positions(&self) -> usize {
        self.grid_size() * self.grid_size() + 1
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Resolved text decoder configuration (BERT with cross-attention).
#[derive(Debug, Clone, PartialEq)]
pub struct BlipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Width of the image embeddings the cross-attention reads. transformers' `BlipConfig`
    /// always overwrites it with `vision_config.hidden_size`, whatever `text_config` says.
    pub encoder_hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    /// `[SEP]`: the stop token BLIP captioning generates with.
    pub sep_token_id: u32,
    pub pad_token_id: u32,
}

impl Default for BlipTextConfig {
    /// transformers 5.17 `BlipTextConfig()` defaults (note: 8 heads, unlike the checkpoints' 12).
    fn default() -> Self {
        Self {
            vocab_size: 30524,
            hidden_size: 768,
            encoder_hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 512,
            hidden_act: Activation::GeluErf,
            layer_norm_eps: 1e-12,
            bos_token_id: 30522,
            eos_token_id: 2,
            sep_token_id: 102,
            pad_token_id: 0,
        }
    }
}

impl BlipTextConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Resolved `BlipConfig`: the two towers used by captioning.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BlipConfig {
    pub text_config: BlipTextConfig,
    pub vision_config: BlipVisionConfig,
}

fn activation(
    section: &'static str,
    name: Option<String>,
    default: Activation,
) -> Result<Activation, ConfigError> {
    match name {
        None => Ok(default),
        Some(name) => Activation::from_hf_name(&name)
            .ok_or(ConfigError::UnsupportedActivation { section, name }),
    }
}

fn check_heads(section: &'static str, hidden: usize, heads: usize) -> Result<(), ConfigError> {
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(ConfigError::Inconsistent {
            section,
            what: format!("hidden_size {hidden} is not a multiple of num_attention_heads {heads}"),
        });
    }
    Ok(())
}

impl BlipConfig {
    /// Parses config.json text and fills absent fields with the transformers class defaults.
    pub fn from_json_str(json: &str) -> Result<Self, ConfigError> {
        let raw: RawBlipConfig = serde_json::from_str(json)?;
        Self::resolve(raw)
    }

    fn resolve(raw: RawBlipConfig) -> Result<Self, ConfigError> {
        let v = raw.vision_config.unwrap_or_default();
        let vd = BlipVisionConfig::default();
        let vision_config = BlipVisionConfig {
            hidden_size: v.hidden_size.unwrap_or(vd.hidden_size),
            intermediate_size: v.intermediate_size.unwrap_or(vd.intermediate_size),
            num_hidden_layers: v.num_hidden_layers.unwrap_or(vd.num_hidden_layers),
            num_attention_heads: v.num_attention_heads.unwrap_or(vd.num_attention_heads),
            image_size: v.image_size.unwrap_or(vd.image_size),
            patch_size: v.patch_size.unwrap_or(vd.patch_size),
            hidden_act: activation("vision_config", v.hidden_act, vd.hidden_act)?,
            layer_norm_eps: v.layer_norm_eps.unwrap_or(vd.layer_norm_eps),
        };
        check_heads(
            "vision_config",
            vision_config.hidden_size,
            vision_config.num_attention_heads,
        )?;
        if vision_config.patch_size == 0
            || !vision_config
                .image_size
                .is_multiple_of(vision_config.patch_size)
        {
            return Err(ConfigError::Inconsistent {
                section: "vision_config",
                what: format!(
                    "image_size {} is not a multiple of patch_size {}",
                    vision_config.image_size, vision_config.patch_size
                ),
            });
        }

        let t = raw.text_config.unwrap_or_default();
        let td = BlipTextConfig::default();
        let text_config = BlipTextConfig {
            vocab_size: t.vocab_size.unwrap_or(td.vocab_size),
            hidden_size: t.hidden_size.unwrap_or(td.hidden_size),
            // BlipConfig.__post_init__: text_config.encoder_hidden_size = vision_config.hidden_size.
            encoder_hidden_size: vision_config.hidden_size,
            intermediate_size: t.intermediate_size.unwrap_or(td.intermediate_size),
            num_hidden_layers: t.num_hidden_layers.unwrap_or(td.num_hidden_layers),
            num_attention_heads: t.num_attention_heads.unwrap_or(td.num_attention_heads),
            max_position_embeddings: t
                .max_position_embeddings
                .unwrap_or(td.max_position_embeddings),
            hidden_act: activation("text_config", t.hidden_act, td.hidden_act)?,
            layer_norm_eps: t.layer_norm_eps.unwrap_or(td.layer_norm_eps),
            bos_token_id: t.bos_token_id.unwrap_or(td.bos_token_id),
            eos_token_id: t.eos_token_id.unwrap_or(td.eos_token_id),
            sep_token_id: t.sep_token_id.unwrap_or(td.sep_token_id),
            pad_token_id: t.pad_token_id.unwrap_or(td.pad_token_id),
        };
        check_heads(
            "text_config",
            text_config.hidden_size,
            text_config.num_attention_heads,
        )?;
        Ok(Self {
            text_config,
            vision_config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_resolves_to_class_defaults() {
        let cfg = BlipConfig::from_json_str("{}").unwrap();
        assert_eq!(cfg, BlipConfig::default());
        assert_eq!(cfg.text_config.num_attention_heads, 8);
        assert_eq!(cfg.vision_config.num_positions(), 577);
    }

    #[test]
    fn base_checkpoint_style_config_overrides_and_ignores_unknown_keys() {
        let json = r#"{
            "architectures": ["BlipForConditionalGeneration"],
            "projection_dim": 512,
            "text_config": {"num_attention_heads": 12, "encoder_hidden_size": 123, "some_unknown": [1, 2]},
            "vision_config": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                              "intermediate_size": 4096, "hidden_act": "gelu"}
        }"#;
        let cfg = BlipConfig::from_json_str(json).unwrap();
        assert_eq!(cfg.text_config.num_attention_heads, 12);
        // encoder_hidden_size follows the vision width, as BlipConfig.__post_init__ forces it.
        assert_eq!(cfg.text_config.encoder_hidden_size, 1024);
        assert_eq!(cfg.vision_config.num_hidden_layers, 24);
        assert_eq!(cfg.text_config.sep_token_id, 102);
        assert_eq!(cfg.text_config.layer_norm_eps, 1e-12);
    }

    #[test]
    fn bad_activation_and_bad_heads_are_named() {
        let err =
            BlipConfig::from_json_str(r#"{"text_config": {"hidden_act": "swish"}}"#).unwrap_err();
        assert!(err.to_string().contains("text_config.hidden_act"), "{err}");
        let err = BlipConfig::from_json_str(r#"{"vision_config": {"num_attention_heads": 5}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("not a multiple"), "{err}");
        let err =
            BlipConfig::from_json_str(r#"{"vision_config": {"hidden_size": "wide"}}"#).unwrap_err();
        assert!(matches!(err, ConfigError::Json(_)));
    }
}
