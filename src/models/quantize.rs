//! In-situ weight quantization of a loaded model's projections (GGML formats through candle's
//! quantized support): which format each projection gets, and what it saved.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

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
        let fits = |format: GgmlDType| in_features.is_multiple_of(format.block_size());
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

/// Quantizes the row-major f32 matrix `values` `(rows, cols)` to `format` and places it on
/// `device`. GGML blocks never span rows, so the rows are quantized in chunks on the CPU's threads
/// (rayon) and the chunks' blocks, concatenated, are exactly those of quantizing the matrix whole;
/// they are uploaded once. (candle quantizes a tensor on one thread: for q4k this was most of the
/// load time of a quantized BLIP-base.)
pub fn quantize_matrix_onto(
    values: &[f32],
    shape: (usize, usize),
    format: GgmlDType,
    device: &Device,
) -> Result<QTensor> {
    let chunk_rows = shape.0.div_ceil(4 * rayon::current_num_threads()).max(1);
    quantize_matrix_in_chunks(values, shape, format, device, chunk_rows)
}

/// [`quantize_matrix_onto`] with `chunk_rows` rows per parallel task.
fn quantize_matrix_in_chunks(
    values: &[f32],
    (rows, cols): (usize, usize),
    format: GgmlDType,
    device: &Device,
    chunk_rows: usize,
) -> Result<QTensor> {
    if rows == 0 || cols == 0 || values.len() != rows * cols {
        candle_core::bail!(
            "quantize: {} values for a ({rows}, {cols}) matrix",
            values.len()
        );
    }
    if cols % format.block_size() != 0 {
        candle_core::bail!(
            "quantize: {cols} columns are not a multiple of {}'s block size {}",
            format_name(format),
            format.block_size()
        );
    }
    let chunks = values
        .par_chunks(chunk_rows.max(1) * cols)
        .map(|chunk| {
            let part = Tensor::from_slice(chunk, (chunk.len() / cols, cols), &Device::Cpu)?;
            Ok(QTensor::quantize(&part, format)?.data()?.into_owned())
        })
        .collect::<Result<Vec<Vec<u8>>>>()?;
    let storage = QStorage::from_data(Cow::Owned(chunks.concat()), device, format)?;
    QTensor::new(storage, (rows, cols))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_quantization_gives_the_blocks_of_whole_matrix_quantization() {
        let (rows, cols) = (37, 512);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0 + (i % 13) as f32 * 0.01)
            .collect();
        let whole = Tensor::from_slice(&values, (rows, cols), &Device::Cpu).unwrap();
        for format in [
            GgmlDType::Q8_0,
            GgmlDType::Q4_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let expected = QTensor::quantize(&whole, format).unwrap();
            // 37 rows in chunks of 5: uneven, the last chunk shorter.
            let chunked =
                quantize_matrix_in_chunks(&values, (rows, cols), format, &Device::Cpu, 5).unwrap();
            assert_eq!(chunked.shape().dims(), &[rows, cols]);
            assert_eq!(chunked.dtype(), format);
            assert!(
                chunked.data().unwrap() == expected.data().unwrap(),
                "{format:?}: chunked blocks differ"
            );
            let default =
                quantize_matrix_onto(&values, (rows, cols), format, &Device::Cpu).unwrap();
            assert!(default.data().unwrap() == expected.data().unwrap());
        }
    }

    #[test]
    fn chunked_quantization_refuses_bad_shapes() {
        let values = vec![0.5f32; 3 * 48];
        let err = quantize_matrix_onto(&values, (3, 48), GgmlDType::Q8_0, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("48 columns") && err.contains("32"), "{err}");
        let err = quantize_matrix_onto(&values, (4, 48), GgmlDType::Q8_0, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("144 values"), "{err}");
    }
}
