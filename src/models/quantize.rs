//! In-situ weight quantization of a loaded model's projections (GGML formats through candle's
//! quantized support): which format each projection gets, and what it saved.

use candle_core::quantized::GgmlDType;
use candle_core::Result;

use super::linear::Linear;

/// Quantizes projections to one target format, falling back per projection when the format's
/// block size does not divide `in_features`: k-quants (q4k, q6k: blocks of 256) fall back to
/// q8_0 (blocks of 32) and q8_0/q4_0 to dense. Records what happened.
#[derive(Debug, Clone)]
pub struct Quantizer {
    target: GgmlDType,
    summary: QuantizationSummary,
}

/// What a [`Quantizer`] did to a model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantizationSummary {
    /// Projections quantized (in the target or the fallback format).
    pub quantized_layers: usize,
    /// Weight bytes of those projections before quantization (in the activation dtype).
    pub dense_bytes: usize,
    /// Weight bytes of those projections after quantization (quantized storage size).
    pub quantized_bytes: usize,
    /// `name: format` of projections quantized in a fallback format.
    pub fallbacks: Vec<String>,
    /// Projections left dense because no format's block size divides their input features.
    pub kept_dense: Vec<String>,
}

impl Quantizer {
    pub fn new(target: GgmlDType) -> Self {
        Self {
            target,
            summary: QuantizationSummary::default(),
        }
    }

    /// The format a projection with `in_features` inputs gets, `None` to keep it dense.
    pub fn format_for(target: GgmlDType, in_features: usize) -> Option<GgmlDType> {
        let fits = |format: GgmlDType| in_features % format.block_size() == 0;
        if fits(target) {
            Some(target)
        } else if target.block_size() > GgmlDType::Q8_0.block_size() && fits(GgmlDType::Q8_0) {
            Some(GgmlDType::Q8_0)
        } else {
            None
        }
    }

    /// Replaces `linear` (named `name` in messages) by its quantized version.
    pub fn apply(&mut self, name: &str, linear: &mut Linear) -> Result<()> {
        let Some(format) = Self::format_for(self.target, linear.in_features()?) else {
            self.summary.kept_dense.push(name.to_string());
            return Ok(());
        };
        let quantized = linear.quantize(format)?;
        if format != self.target {
            self.summary
                .fallbacks
                .push(format!("{name}: {}", format_name(format)));
        }
        self.summary.quantized_layers += 1;
        self.summary.dense_bytes += linear.weight_bytes();
        self.summary.quantized_bytes += quantized.weight_bytes();
        *linear = quantized;
        Ok(())
    }

    pub fn target(&self) -> GgmlDType {
        self.target
    }

    pub fn summary(&self) -> &QuantizationSummary {
        &self.summary
    }

    pub fn into_summary(self) -> QuantizationSummary {
        self.summary
    }
}

/// The config spelling of a GGML format (`q8_0`, `q4k`, ...).
pub fn format_name(format: GgmlDType) -> String {
    format!("{format:?}").to_ascii_lowercase()
}

/// The formats `quantization` accepts, in their config spelling (the dense `none` aside).
pub const FORMAT_NAMES: [&str; 4] = ["q8_0", "q4_0", "q4k", "q6k"];

/// The GGML format of a config spelling (`q8_0`, `q4_0`, `q4k`, `q6k`), `None` for any other name.
pub fn parse_format(name: &str) -> Option<GgmlDType> {
    match name {
        "q8_0" => Some(GgmlDType::Q8_0),
        "q4_0" => Some(GgmlDType::Q4_0),
        "q4k" => Some(GgmlDType::Q4K),
        "q6k" => Some(GgmlDType::Q6K),
        _ => None,
    }
}

/// The message for a format name that [`parse_format`] does not know.
pub fn unknown_format_message(name: &str) -> String {
    format!(
        "unknown quantization `{name}`: expected one of {}",
        FORMAT_NAMES.join(", ")
    )
}
