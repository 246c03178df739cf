//! GGUF file surgery shared by the GGUF tests: rewrite a file with edited metadata and a subset
//! of its tensors, to produce the broken files loading and doctor must refuse.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;

/// Rewrites `src` into `dst` with metadata `edit`ed and the tensors `keep` accepts.
pub fn rewrite(
    src: &Path,
    dst: &Path,
    edit: impl Fn(&mut Vec<(String, Value)>),
    keep: impl Fn(&str) -> bool,
) {
    let mut reader = BufReader::new(File::open(src).unwrap());
    let content = Content::read(&mut reader).unwrap();
    let mut metadata: Vec<(String, Value)> = content.metadata.clone().into_iter().collect();
    edit(&mut metadata);
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let tensors: Vec<(String, QTensor)> = names
        .into_iter()
        .filter(|n| keep(n))
        .map(|n| {
            (
                n.clone(),
                content.tensor(&mut reader, n, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    let metadata_refs: Vec<(&str, &Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = File::create(dst).unwrap();
    gguf_file::write(&mut out, &metadata_refs, &tensor_refs).unwrap();
}

pub fn set(metadata: &mut [(String, Value)], key: &str, value: &str) {
    let entry = metadata.iter_mut().find(|(k, _)| k == key).unwrap();
    entry.1 = Value::String(value.to_string());
}
