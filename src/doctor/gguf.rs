//! The model checks of `vlmrun doctor` for a `.gguf` model source (a file from `vlmrun
//! quantize`): the header and tensor table are read and checked with the loader's own functions
//! (no tensor data is read), the tokenizer is resolved as loading resolves it, and the configured
//! `quantization` is held against the file's format by the loader's rule. Each problem is a failed
//! check carrying the loader's message and fix.

use std::path::Path;

use serde::Serialize;

use super::{split_fix, Check, ModelEntry, Status};
use crate::config::Config;
use crate::engine::quantization_format;
use crate::models::blip::gguf::{check_requested, BlipGguf};
use crate::models::blip::load::resolve_model_files;
use crate::models::quantize::format_name;

/// The fix for a file error whose message carries none (unreadable, not GGUF at all).
const REWRITE: &str = "point model.source at a readable GGUF file written by `vlmrun quantize --model DIR --to FORMAT --out FILE.gguf`";

/// What the header of a GGUF model source says (present once its metadata passed the loader's
/// checks; the tensor check may still have failed).
#[derive(Debug, Clone, Serialize)]
pub struct GgufEntry {
    pub file: String,
    pub size_bytes: u64,
    /// `vlmrun.quantization`: the format the projections were written for.
    pub quantization: String,
    /// `vlmrun.dense_dtype`: storage of the tensors that are not quantized.
    pub dense_dtype: Option<String>,
    /// `vlmrun.gguf_layout`.
    pub layout: u32,
    pub vision: VisionShape,
    pub text: TextShape,
    /// Tensors in the file and their bytes, in all and in block formats.
    pub tensors: usize,
    pub tensor_bytes: u64,
    pub quantized_tensors: usize,
    pub quantized_bytes: u64,
    /// `vlmrun.source.model`, `vlmrun.source.revision`, `vlmrun.version`.
    pub source_model: Option<String>,
    pub source_revision: Option<String>,
    pub written_by: Option<String>,
    /// The tokenizer.json loading would use; null when none resolves.
    pub tokenizer: Option<String>,
}

/// The vision tower's shape in the embedded config.
#[derive(Debug, Clone, Serialize)]
pub struct VisionShape {
    pub layers: usize,
    pub hidden_size: usize,
    pub image_size: usize,
    pub patch_size: usize,
}

/// The text decoder's shape in the embedded config.
#[derive(Debug, Clone, Serialize)]
pub struct TextShape {
    pub layers: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
}

/// Inspects `config.model.source` (a `.gguf` path): the model entry and its checks `model`,
/// then `tokenizer` and `quantization` when the header could be read.
pub fn inspect(config: &Config) -> (ModelEntry, Vec<Check>) {
    let source = &config.model.source;
    let revision = &config.model.revision;
    let path = Path::new(source);
    let mut entry = ModelEntry {
        source: source.clone(),
        revision: revision.clone(),
        dir: None,
        missing: Vec::new(),
        error: None,
        invalid: None,
        gguf: None,
        kind: None,
    };
    let opened = if path.is_file() {
        BlipGguf::open(path).map_err(|err| err.to_string())
    } else {
        // The loader resolves the source first; its message for a missing file is the one to give.
        Err(match resolve_model_files(source, revision) {
            Err(err) => err.to_string(),
            Ok(_) => format!("{source}: not a file"),
        })
    };
    let gguf = match opened {
        Ok(gguf) => gguf,
        Err(text) => {
            let check = failed("model", &text);
            entry.error = Some(check.message.clone());
            return (entry, vec![check]);
        }
    };

    let header = &gguf.header;
    let storage = gguf.file().storage();
    let tokenizer = resolve_model_files(source, revision).map(|files| files.tokenizer);
    let vision = &header.config.vision_config;
    let text = &header.config.text_config;
    let facts = GgufEntry {
        file: source.clone(),
        size_bytes: gguf.file().size(),
        quantization: format_name(header.quantization),
        dense_dtype: header.dense_dtype.clone(),
        layout: header.layout,
        vision: VisionShape {
            layers: vision.num_hidden_layers,
            hidden_size: vision.hidden_size,
            image_size: vision.image_size,
            patch_size: vision.patch_size,
        },
        text: TextShape {
            layers: text.num_hidden_layers,
            hidden_size: text.hidden_size,
            vocab_size: text.vocab_size,
        },
        tensors: storage.tensors,
        tensor_bytes: storage.bytes,
        quantized_tensors: storage.quantized_tensors,
        quantized_bytes: storage.quantized_bytes,
        source_model: header.source_model.clone(),
        source_revision: header.source_revision.clone(),
        written_by: header.vlmrun_version.clone(),
        tokenizer: tokenizer
            .as_ref()
            .ok()
            .map(|file| file.display().to_string()),
    };

    let mut checks = Vec::new();
    match gguf.check_tensors() {
        Ok(()) => checks.push(Check {
            name: "model".into(),
            status: Status::Ok,
            message: summary(&facts),
            remedy: None,
        }),
        Err(err) => {
            let check = failed("model", &err.to_string());
            entry.error = Some(check.message.clone());
            checks.push(check);
        }
    }
    checks.push(match &tokenizer {
        Ok(file) => Check {
            name: "tokenizer".into(),
            status: Status::Ok,
            message: file.display().to_string(),
            remedy: None,
        },
        Err(err) => failed("tokenizer", &err.to_string()),
    });
    let requested = quantization_format(config.quantization);
    checks.push(
        match check_requested(path, header.quantization, requested) {
            Ok(()) => Check {
                name: "quantization".into(),
                status: Status::Ok,
                message: format!(
                    "{}: the file's {} weights are used as stored",
                    config.quantization, facts.quantization
                ),
                remedy: None,
            },
            Err(err) => failed("quantization", &err.to_string()),
        },
    );
    entry.gguf = Some(facts);
    (entry, checks)
}

/// A failed check from a loader message ("problem\n  fix: remedy"; [`REWRITE`] when it has no
/// fix). The message is its first line: candle appends a backtrace when RUST_BACKTRACE is set.
fn failed(name: &str, text: &str) -> Check {
    let (message, remedy) = split_fix(text);
    let message = message.lines().next().unwrap_or_default().to_string();
    Check {
        name: name.into(),
        status: Status::Fail,
        message,
        remedy: Some(remedy.unwrap_or_else(|| REWRITE.to_string())),
    }
}

/// The one-line description of a file that passed every check.
fn summary(facts: &GgufEntry) -> String {
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    let unknown = "?";
    format!(
        "{} ({:.1} MiB): GGUF layout {}, {} projections, dense {}; vision {} layers x {} wide, image {} px; text {} layers x {} wide, vocab {}; {} tensors, {} bytes ({} quantized tensors, {} bytes); written from {} ({}) by vlmrun {}",
        facts.file,
        mib(facts.size_bytes),
        facts.layout,
        facts.quantization,
        facts.dense_dtype.as_deref().unwrap_or(unknown),
        facts.vision.layers,
        facts.vision.hidden_size,
        facts.vision.image_size,
        facts.text.layers,
        facts.text.hidden_size,
        facts.text.vocab_size,
        facts.tensors,
        facts.tensor_bytes,
        facts.quantized_tensors,
        facts.quantized_bytes,
        facts.source_model.as_deref().unwrap_or(unknown),
        facts.source_revision.as_deref().unwrap_or(unknown),
        facts.written_by.as_deref().unwrap_or(unknown),
    )
}
