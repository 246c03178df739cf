//! `vlmrun fidelity`: how much a precision or a quantization changes the captions. The reference
//! is the configured model in f32 with dense weights; every variant runs on the same dataset
//! images with the same generation settings, and is compared with it: exact sequences and
//! tokens (per decoding setting), first-step logits, weight bytes, peak GPU memory.

pub mod compare;
pub mod report;
pub mod runner;
pub mod variant;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::ResolvedConfig;
use crate::data::dataset;
use crate::device::{ActiveDevice, CudaAvailability, SystemFacts};
use crate::error::Error;
use crate::models::blip::gguf::is_gguf_path;
use crate::models::blip::load::{resolve_model_files, SourceError};
use crate::models::blip::BlipWeights;
use crate::preprocess::ImageProcessor;
use crate::report::{describe_environment, Environment};
use runner::{run_variant, VariantOutputs};
use variant::{matmul_description, Variant};

/// Schema name of the JSON document.
pub const SCHEMA: &str = "vlmrun.fidelity/1";

/// What to compare.
#[derive(Debug, Clone)]
pub struct FidelityPlan {
    pub variants: Vec<Variant>,
    /// Beam counts to decode with (1 = greedy).
    pub beams: Vec<usize>,
    /// At most this many dataset images.
    pub limit: Option<usize>,
}

/// The JSON document `vlmrun fidelity` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FidelityDocument {
    pub schema: String,
    pub environment: Environment,
    pub model_source: String,
    pub image_ids: Vec<String>,
    /// Dataset items that could not be compared (a folder file whose name is not UTF-8), each
    /// with the reason: never silently dropped, and the command exits 3 when there are any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<LeftOut>,
    pub settings: Settings,
    pub reference: RunFacts,
    /// The reference's sequences per beam count (as in `settings.beams`), per image: for
    /// comparing with another framework's reference.
    pub reference_sequences: Vec<Vec<Vec<u32>>>,
    pub variants: Vec<VariantReport>,
}

/// A dataset item left out of the comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeftOut {
    pub id: String,
    pub reason: String,
}

/// Generation settings shared by every run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub prompt: String,
    pub max_length: usize,
    pub min_length: usize,
    pub length_penalty: f64,
    pub repetition_penalty: f32,
    pub batch_size: usize,
    pub beams: Vec<usize>,
}

impl RunFacts {
    /// Peak GPU memory the variant added to what the process held before it loaded: weights,
    /// activations, workspaces (what `torch.cuda.max_memory_reserved` counts, roughly).
    pub fn added_gpu_bytes(&self) -> Option<u64> {
        Some(
            self.peak_gpu_bytes?
                .saturating_sub(self.gpu_bytes_before_load?),
        )
    }
}

/// Cost of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunFacts {
    pub label: String,
    pub precision: String,
    pub quantization: String,
    pub quantized_matmul: String,
    pub weight_bytes: u64,
    /// NVML's peak for this process while the variant loaded and ran (CUDA context included).
    pub peak_gpu_bytes: Option<u64>,
    /// This process's GPU memory just before the variant loaded: the CUDA context, libraries and
    /// kernel modules, and what the pool kept from earlier variants.
    #[serde(default)]
    pub gpu_bytes_before_load: Option<u64>,
    pub load_seconds: f64,
    pub run_seconds: f64,
}

/// One variant against the reference.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariantReport {
    #[serde(flatten)]
    pub run: RunFacts,
    /// Per decoding setting, in the order of `settings.beams`.
    pub decoding: Vec<DecodingAgreement>,
    pub step1_logits: compare::LogitError,
}

/// Agreement for one beam count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecodingAgreement {
    pub num_beams: usize,
    #[serde(flatten)]
    pub agreement: compare::SequenceAgreement,
}

/// Runs the reference and every variant of `plan` on the configured dataset and compares them.
pub fn run(
    resolved: &ResolvedConfig,
    active: &ActiveDevice,
    facts: &SystemFacts,
    cuda: &CudaAvailability,
    plan: &FidelityPlan,
    progress: bool,
) -> Result<FidelityDocument, Error> {
    let config = &resolved.config;
    if plan.variants.is_empty() || plan.beams.is_empty() || plan.beams.contains(&0) {
        return Err(Error::Usage(
            "fidelity needs at least one variant and beam counts of at least 1\n  fix: e.g. --variants f16,q8_0 --beams 1,3".to_string(),
        ));
    }
    if is_gguf_path(Path::new(&config.model.source)) {
        return Err(Error::Usage(format!(
            "fidelity compares with the dense f32 model, and {} is a quantized GGUF file\n  fix: pass the model directory it was written from (--model DIR) and name the format as a variant",
            config.model.source
        )));
    }
    let files = resolve_model_files(&config.model.source, &config.model.revision).map_err(
        |err| match err {
            SourceError::Hub(err) => Error::Hub(err),
            SourceError::Load(err) => Error::model(err),
        },
    )?;
    let checkpoint_elements = checkpoint_elements(&files.weights)?;

    let mut items = dataset::load(&config.data).map_err(Error::input)?;
    if let Some(limit) = plan.limit {
        items.truncate(limit);
    }
    if items.is_empty() {
        return Err(Error::Usage(
            "fidelity has no images to compare\n  fix: a positive --limit, and a dataset with images".to_string(),
        ));
    }
    let (items, left_out) = usable_items(items);
    for left in &left_out {
        tracing::warn!("fidelity leaves {} out: {}", left.id, left.reason);
    }
    if items.is_empty() {
        return Err(Error::Input(format!(
            "fidelity has no images to compare: all {} dataset item(s) were left out (listed above)\n  fix: rename the files to UTF-8 names, or list the images in a JSONL manifest",
            left_out.len()
        )));
    }
    let image_size = BlipWeights::locate(&files.weights)
        .map_err(Error::model)?
        .config
        .vision_config
        .image_size;
    let mut processor = ImageProcessor::blip(image_size);
    processor.max_pixels = config.preprocess.max_pixels;
    let images = items
        .iter()
        .map(|item| {
            processor
                .process_file(&item.image)
                .map_err(|err| Error::Input(format!("fidelity image {}: {err}", item.id)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let image_ids: Vec<String> = items.iter().map(|item| item.id.clone()).collect();
    let batch_size = config.generation.batch_size;

    let run_one = |variant: &Variant| -> Result<VariantOutputs, Error> {
        if progress {
            eprintln!(
                "fidelity: {} ({} images, beams {:?})",
                variant.label,
                images.len(),
                plan.beams
            );
        }
        run_variant(
            config,
            active,
            variant,
            &images,
            &plan.beams,
            batch_size,
            checkpoint_elements,
        )
    };
    let reference_variant = Variant::reference();
    let reference = run_one(&reference_variant)?;
    let mut variants = Vec::with_capacity(plan.variants.len());
    for variant in &plan.variants {
        let outputs = run_one(variant)?;
        let decoding = plan
            .beams
            .iter()
            .enumerate()
            .map(|(k, &num_beams)| DecodingAgreement {
                num_beams,
                agreement: compare::sequences(
                    reference.sequences.get(k).map(Vec::as_slice).unwrap_or(&[]),
                    outputs.sequences.get(k).map(Vec::as_slice).unwrap_or(&[]),
                    reference.start_len,
                    &image_ids,
                ),
            })
            .collect();
        variants.push(VariantReport {
            run: facts_of(variant, &outputs),
            decoding,
            step1_logits: compare::step1_logits(&reference.step1_logits, &outputs.step1_logits),
        });
    }
    let settings = &config.generation;
    Ok(FidelityDocument {
        schema: SCHEMA.to_string(),
        environment: describe_environment(
            active,
            facts,
            cuda,
            config,
            Some(files.weights.display().to_string()),
        ),
        model_source: config.model.source.clone(),
        image_ids,
        left_out,
        settings: Settings {
            prompt: settings.prompt.clone(),
            max_length: settings.max_length,
            min_length: settings.min_length,
            length_penalty: settings.length_penalty,
            repetition_penalty: settings.repetition_penalty,
            batch_size,
            beams: plan.beams.clone(),
        },
        reference: facts_of(&reference_variant, &reference),
        reference_sequences: reference.sequences.clone(),
        variants,
    })
}

/// The items fidelity can compare, and the others with the reason (`dataset::unusable`: the
/// same items the caption baseline gives an errors.jsonl line).
fn usable_items(items: Vec<dataset::Item>) -> (Vec<dataset::Item>, Vec<LeftOut>) {
    let mut usable = Vec::with_capacity(items.len());
    let mut left_out = Vec::new();
    for item in items {
        match dataset::unusable(&item) {
            Some(reason) => left_out.push(LeftOut {
                id: item.id,
                reason,
            }),
            None => usable.push(item),
        }
    }
    (usable, left_out)
}

fn facts_of(variant: &Variant, outputs: &VariantOutputs) -> RunFacts {
    RunFacts {
        label: variant.label.clone(),
        precision: variant.dtype.as_str().to_string(),
        quantization: variant.quantization.to_string(),
        quantized_matmul: matmul_description(variant),
        weight_bytes: outputs.weight_bytes,
        peak_gpu_bytes: outputs.peak_gpu_bytes,
        gpu_bytes_before_load: outputs.gpu_bytes_before_load,
        load_seconds: outputs.load_seconds,
        run_seconds: outputs.run_seconds,
    }
}

/// Parameters in the checkpoint of the model directory `dir` (from the safetensors headers, or the
/// PyTorch file).
fn checkpoint_elements(dir: &Path) -> Result<usize, Error> {
    let weights = BlipWeights::locate(dir).map_err(Error::model)?;
    weights.element_count().map_err(Error::model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn an_item_whose_path_is_not_utf8_is_left_out_with_its_reason() {
        use std::os::unix::ffi::OsStrExt;
        let item = |id: &str, image: std::path::PathBuf| dataset::Item {
            id: id.to_string(),
            image,
            image_as_given: format!("dir/{id}"),
            references: Vec::new(),
        };
        let bad = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"dir/caf\xe9.png"));
        let items = vec![
            item("a.png", "dir/a.png".into()),
            item("caf\\xE9.png", bad),
            item("b.png", "dir/b.png".into()),
        ];
        let (usable, left_out) = usable_items(items);
        let ids: Vec<&str> = usable.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a.png", "b.png"]);
        assert_eq!(left_out.len(), 1);
        assert_eq!(left_out[0].id, "caf\\xE9.png");
        assert!(
            left_out[0].reason.contains("not valid UTF-8"),
            "{}",
            left_out[0].reason
        );
    }
}
