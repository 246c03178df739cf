//! PyTorch checkpoints (`pytorch_model.bin`, the zip format `torch.save` has written since torch
//! 1.6), read through candle's pickle support and checked as the safetensors files are
//! ([`super::verify`]): the archive is complete, every tensor is a float (an integer tensor is never
//! cast; only the `*.position_ids` index buffers older transformers saved are skipped, the model
//! never reads them), and every value is finite. The file is read once, into CPU memory in its
//! stored dtype; the loader builds the model from those tensors.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use candle_core::pickle::PthTensors;
use candle_core::{DType, Tensor};

use super::load_error::LoadError;

/// The file name transformers saves PyTorch weights under.
pub const PTH_FILE: &str = "pytorch_model.bin";

/// The start of a zip archive (`PK\x03\x04`), what every torch >= 1.6 checkpoint is.
const ZIP_MAGIC: [u8; 4] = *b"PK\x03\x04";
/// The start of a pickle of protocol 2 or later: a checkpoint in torch's legacy (pre-1.6) format.
const PICKLE_MAGIC: u8 = 0x80;

fn bad(path: &Path, reason: String) -> LoadError {
    LoadError::BadPytorch {
        path: path.to_path_buf(),
        reason,
    }
}

/// Tensors the model never reads that older checkpoints store as integers.
fn is_index_buffer(name: &str) -> bool {
    name.ends_with(".position_ids")
}

/// Reads every tensor of the PyTorch checkpoint `path`, checked: float dtypes only (else
/// [`LoadError::WrongDtype`]), every value finite (else [`LoadError::NonFinite`]), a complete and
/// readable archive (else [`LoadError::BadPytorch`]). Index buffers (`*.position_ids`) are left out.
pub fn read_checked(path: &Path) -> Result<HashMap<String, Tensor>, LoadError> {
    check_magic(path)?;
    // candle's unpickler indexes into what it parsed; a damaged pickle inside a valid archive must
    // become an error naming the file, not a panic.
    let opened = std::panic::catch_unwind(|| PthTensors::new(path, None))
        .map_err(|_| bad(path, "its pickle could not be parsed".to_string()))?
        .map_err(|err| bad(path, format!("{err}")))?;
    let mut infos: Vec<_> = opened.tensor_infos().values().collect();
    if infos.is_empty() {
        return Err(bad(
            path,
            "no tensors found (a state dict saved with torch.save is expected)".to_string(),
        ));
    }
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    let mut tensors = HashMap::with_capacity(infos.len());
    for info in infos {
        if !info.dtype.is_float() {
            if is_index_buffer(&info.name) {
                tracing::debug!("{}: skipping index buffer {}", path.display(), info.name);
                continue;
            }
            return Err(LoadError::WrongDtype {
                name: info.name.clone(),
                dtype: format!("{:?}", info.dtype).to_uppercase(),
                path: path.to_path_buf(),
            });
        }
        let tensor =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| opened.get(&info.name)))
                .map_err(|_| {
                    bad(
                        path,
                        format!("tensor {}: its data could not be read", info.name),
                    )
                })?
                .map_err(|err| bad(path, format!("tensor {}: {err}", info.name)))?
                .ok_or_else(|| bad(path, format!("tensor {} is listed but absent", info.name)))?;
        check_finite(path, &info.name, &tensor)?;
        tensors.insert(info.name.clone(), tensor);
    }
    Ok(tensors)
}

/// The archive's first bytes: a zip, else a clear word on what it is instead.
fn check_magic(path: &Path) -> Result<(), LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut start = [0u8; 4];
    let read = file.read(&mut start).map_err(io)?;
    if read == 4 && start == ZIP_MAGIC {
        return Ok(());
    }
    if read >= 1 && start[0] == PICKLE_MAGIC {
        return Err(bad(
            path,
            "it is in torch's legacy (pre-1.6) format, which vlmrun does not read; re-save it with a current torch (torch.save(torch.load(F), F)) or convert it to model.safetensors".to_string(),
        ));
    }
    Err(bad(
        path,
        format!("it is not a zip archive (it starts with {:02x?}); a checkpoint saved by torch.save is one", &start[..read]),
    ))
}

/// [`LoadError::NonFinite`] when `tensor` holds a NaN or an infinity.
fn check_finite(path: &Path, name: &str, tensor: &Tensor) -> Result<(), LoadError> {
    let values = tensor
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .map_err(|err| bad(path, format!("tensor {name}: {err}")))?;
    let mut count = 0u64;
    let mut first = 0u64;
    for (index, value) in values.iter().enumerate() {
        if !value.is_finite() {
            if count == 0 {
                first = index as u64;
            }
            count += 1;
        }
    }
    if count > 0 {
        return Err(LoadError::NonFinite {
            name: name.to_string(),
            path: path.to_path_buf(),
            count,
            first,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_legacy_files_are_named_not_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PTH_FILE);
        std::fs::write(&path, b"<html>not found</html>").unwrap();
        let err = read_checked(&path).unwrap_err();
        assert!(matches!(err, LoadError::BadPytorch { .. }), "{err}");
        assert!(err.to_string().contains("not a zip archive"), "{err}");
        std::fs::write(&path, [0x80, 0x02, 0x8a, 0x0a]).unwrap();
        let err = read_checked(&path).unwrap_err();
        assert!(err.to_string().contains("legacy"), "{err}");
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            read_checked(&path),
            Err(LoadError::BadPytorch { .. })
        ));
    }

    #[test]
    fn a_zip_header_without_an_archive_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PTH_FILE);
        let mut bytes = ZIP_MAGIC.to_vec();
        bytes.extend_from_slice(&[0u8; 64]);
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            read_checked(&path),
            Err(LoadError::BadPytorch { .. })
        ));
    }

    #[test]
    fn non_finite_values_are_counted_from_their_first_index() {
        let path = Path::new("w.bin");
        let good = Tensor::new(&[1.0f32, 2.0], &candle_core::Device::Cpu).unwrap();
        assert!(check_finite(path, "w", &good).is_ok());
        let bad = Tensor::new(
            &[1.0f32, f32::NAN, 3.0, f32::NEG_INFINITY],
            &candle_core::Device::Cpu,
        )
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
        match check_finite(path, "w", &bad) {
            Err(LoadError::NonFinite { count, first, .. }) => assert_eq!((count, first), (2, 1)),
            other => panic!("{other:?}"),
        }
    }
}
