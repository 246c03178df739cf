//! `vlmrun quantize`: quantizes model.source (a directory or a cached hub id) on the CPU and writes
//! one GGUF file with the metadata to load it again (docs/precision.md, "Pre-quantized files").
//! Exit 2 for bad flags, 4 for model problems, 6 when the file cannot be written.

use std::path::Path;

use candle_core::DType;

use super::{print_stdout, Context};
use crate::cli::QuantizeArgs;
use crate::error::Error;
use crate::exit::Exit;
use crate::hub::{self, ModelSource};
use crate::models::blip::gguf::{self, ExportRequest};
use crate::models::blip::LoadError;
use crate::models::gguf::GgufError;
use crate::models::quantize::{format_name, parse_format, unknown_format_message};

pub fn run(context: &Context, args: &QuantizeArgs) -> Result<Exit, Error> {
    let model = &context.config.config.model;
    let target = parse_format(&args.to).ok_or_else(|| {
        Error::Usage(format!(
            "--to: {}\n  fix: pass one of them, e.g. --to q4k",
            unknown_format_message(&args.to)
        ))
    })?;
    let dense_dtype = match args.dense.as_str() {
        "f32" => DType::F32,
        "f16" => DType::F16,
        other => {
            return Err(Error::Usage(format!(
                "--dense: `{other}` is not a storage dtype for the dense tensors\n  fix: pass f32 or f16"
            )))
        }
    };
    if !gguf::is_gguf_path(&args.out) {
        return Err(Error::Usage(format!(
            "--out {}: the file name must end in .gguf (model.source recognises GGUF files by it)\n  fix: e.g. --out blip-{}.gguf",
            args.out.display(),
            format_name(target)
        )));
    }
    if gguf::is_gguf_path(Path::new(&model.source)) {
        return Err(Error::Usage(format!(
            "model.source {} is already a GGUF file\n  fix: quantize from the model directory (--model DIR)",
            model.source
        )));
    }
    let model_dir = hub::resolve_complete_model_dir(&model.source, &model.revision)?;
    let (revision, tokenizer) = match hub::classify_source(&model.source, &model.revision)? {
        ModelSource::Hub { id, revision } => {
            let commit = model_dir
                .file_name()
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default();
            (format!("{revision} ({commit})"), id)
        }
        ModelSource::Local { .. } => {
            let file = model_dir.join(hub::TOKENIZER_FILE);
            let absolute = std::fs::canonicalize(&file).unwrap_or(file);
            ("local".to_string(), absolute.display().to_string())
        }
    };
    let request = ExportRequest {
        model_dir: model_dir.clone(),
        target,
        dense_dtype,
        source: model.source.clone(),
        revision,
        tokenizer,
    };
    let summary = gguf::export(&request, &args.out).map_err(|err| to_error(err, &args.out))?;
    let q = &summary.quantization;
    let mut text = format!(
        "wrote {}: {} projections in {} ({} -> {} bytes of projection weights), {} tensors, {} bytes of tensor data\n",
        args.out.display(),
        q.quantized_layers,
        format_name(target),
        q.dense_bytes,
        q.quantized_bytes,
        summary.tensors,
        summary.tensor_bytes
    );
    if !q.fallbacks.is_empty() {
        text.push_str(&format!(
            "in q8_0 (input size not a multiple of {}): {}\n",
            target.block_size(),
            q.fallbacks.join(", ")
        ));
    }
    if !q.kept_dense.is_empty() {
        text.push_str(&format!(
            "kept dense (input size not a multiple of 32): {}\n",
            q.kept_dense.join(", ")
        ));
    }
    text.push_str(&format!(
        "use it with: vlmrun --set model.source={} caption IMAGE...\n",
        args.out.display()
    ));
    print_stdout(&text)?;
    Ok(Exit::Success)
}

/// Write failures are output errors (exit 6); everything else is about the model (exit 4).
fn to_error(err: LoadError, out: &Path) -> Error {
    match err {
        LoadError::GgufFile(file_error) => match *file_error {
            GgufError::Create { source, .. } => Error::Output {
                what: "the GGUF file",
                path: out.to_path_buf(),
                source,
            },
            GgufError::Write { source, .. } => Error::Output {
                what: "the GGUF file",
                path: out.to_path_buf(),
                source: std::io::Error::other(source.to_string()),
            },
            other => Error::Model(other.to_string()),
        },
        other => Error::Model(format!("{other:#}")),
    }
}
