//! The variants `vlmrun fidelity` compares with its f32 reference, parsed from
//! `NAME[@PRECISION][:MATMUL]`: a precision (`f32`, `f16`, `bf16`; dense weights), or a
//! quantization (`q8_0`, `q4_0`, `q4k`, `q6k`) computed in f32 unless `@f16`/`@bf16` follows,
//! optionally with `:kernel`, `:weight-only` or `:dequantize` (how its projections multiply).

use candle_core::DType;

use crate::config::Quantization;
use crate::models::linear::QuantizedMatmul;
use crate::models::quantize::FORMAT_NAMES;

/// One way of running the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// As the user wrote it (`q4k@bf16`), the key in reports.
    pub label: String,
    /// Activation dtype.
    pub dtype: DType,
    pub quantization: Quantization,
    /// How quantized projections multiply; `None`: the default.
    pub matmul: Option<QuantizedMatmul>,
}

impl Variant {
    /// The reference every variant is compared with: f32, dense weights.
    pub fn reference() -> Self {
        Self {
            label: "f32".to_string(),
            dtype: DType::F32,
            quantization: Quantization::None,
            matmul: None,
        }
    }

    /// Parses one specification (see the module doc); the error says what is wrong and lists the
    /// valid names.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        let (rest, matmul) = match spec.rsplit_once(':') {
            Some((rest, how)) => match QuantizedMatmul::from_name(how) {
                Some(policy) => (rest, Some(policy)),
                None => {
                    return Err(format!(
                        "`:{how}` is not a matmul choice: expected one of {}",
                        QuantizedMatmul::names()
                    ))
                }
            },
            None => (spec, None),
        };
        let (name, precision) = match rest.split_once('@') {
            Some((name, precision)) => (name, Some(precision)),
            None => (rest, None),
        };
        if let Some(dtype) = precision_dtype(name) {
            if precision.is_some() || matmul.is_some() {
                return Err(format!(
                    "`{name}` is a precision: @PRECISION and :MATMUL apply to quantizations only"
                ));
            }
            return Ok(Self {
                label: spec.to_string(),
                dtype,
                quantization: Quantization::None,
                matmul: None,
            });
        }
        let quantization: Quantization = serde_json::from_value(serde_json::json!(name))
            .ok()
            .filter(|q| *q != Quantization::None)
            .ok_or_else(|| {
                format!(
                    "unknown variant `{name}`: expected a precision (f32, f16, bf16) or a quantization ({})",
                    FORMAT_NAMES.join(", ")
                )
            })?;
        let dtype = match precision {
            None => DType::F32,
            Some(p) => {
                precision_dtype(p).ok_or_else(|| format!("`@{p}`: expected @f32, @f16 or @bf16"))?
            }
        };
        Ok(Self {
            label: spec.to_string(),
            dtype,
            quantization,
            matmul,
        })
    }
}

fn precision_dtype(name: &str) -> Option<DType> {
    match name {
        "f32" => Some(DType::F32),
        "f16" => Some(DType::F16),
        "bf16" => Some(DType::BF16),
        _ => None,
    }
}

/// How a variant's quantized projections multiply, in words (for reports).
pub fn matmul_description(variant: &Variant) -> String {
    if variant.quantization == Quantization::None {
        return "dense".to_string();
    }
    let policy = variant.matmul.unwrap_or_default();
    match policy.dequantize_from_rows {
        0 if policy.direct_gemv => {
            "weight-only (quantized GEMV for <= 8 rows on CUDA, else dequantized weight + regular matmul)"
                .to_string()
        }
        0 => "weight-only (dequantized weight, regular matmul)".to_string(),
        usize::MAX => "quantized kernel (8-bit activations)".to_string(),
        n => format!("quantized kernel below {n} rows, weight-only from {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specifications() {
        let v = Variant::parse("q4k@bf16:kernel").unwrap();
        assert_eq!(
            (v.dtype, v.quantization, v.matmul),
            (
                DType::BF16,
                Quantization::Q4k,
                Some(QuantizedMatmul::KERNEL)
            )
        );
        let v = Variant::parse("q8_0").unwrap();
        assert_eq!((v.dtype, v.matmul), (DType::F32, None));
        assert_eq!(Variant::parse("f16").unwrap().dtype, DType::F16);
        assert!(Variant::parse("q5")
            .unwrap_err()
            .contains("q8_0, q4_0, q4k, q6k"));
        assert!(Variant::parse("none").is_err());
        assert!(Variant::parse("f16@bf16").is_err());
        assert!(Variant::parse("q8_0:fast")
            .unwrap_err()
            .contains("weight-only, dequantize, kernel"));
        assert!(Variant::parse("q8_0@f64").is_err());
        let v = Variant::parse("q4k@f16:dequantize").unwrap();
        assert_eq!(v.matmul, Some(QuantizedMatmul::DEQUANTIZE));
        assert_ne!(
            matmul_description(&v),
            matmul_description(&Variant::parse("q4k@f16").unwrap())
        );
    }
}
