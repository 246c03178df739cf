//! Loading the tiny BLIP model from HF-style directories, and the errors for broken copies of it
//! (each built in a temporary directory).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use vlmrun::models::blip::{load_model, BlipForConditionalGeneration, LoadError};

fn tiny_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny-blip")
}

fn tiny_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(tiny_dir().join("model.safetensors"), &Device::Cpu).unwrap()
}

fn tiny_config() -> String {
    std::fs::read_to_string(tiny_dir().join("config.json")).unwrap()
}

/// A model directory with `config` and `tensors` saved as a single model.safetensors.
fn write_model(config: &str, tensors: &HashMap<String, Tensor>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    candle_core::safetensors::save(tensors, dir.path().join("model.safetensors")).unwrap();
    dir
}

fn load(dir: &Path) -> Result<BlipForConditionalGeneration, LoadError> {
    load_model(dir, DType::F32, &Device::Cpu)
}

fn logits(model: &BlipForConditionalGeneration) -> Vec<f32> {
    let pixels = Tensor::ones((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[30522u32, 1037]], &Device::Cpu).unwrap();
    model
        .forward(&pixels, &ids)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn missing_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::MissingConfig { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn malformed_config_names_the_file() {
    let dir = write_model(
        "{\"text_config\": {\"hidden_size\": \"wide\"}}",
        &HashMap::new(),
    );
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::Config { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
    let dir = write_model("{ not json", &HashMap::new());
    assert!(matches!(
        load(dir.path()).unwrap_err(),
        LoadError::Config { .. }
    ));
}

#[test]
fn missing_weights_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), tiny_config()).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::MissingWeights { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let name = "text_decoder.bert.encoder.layer.1.crossattention.self.key.weight";
    let mut tensors = tiny_tensors();
    assert!(tensors.remove(name).is_some());
    let dir = write_model(&tiny_config(), &tensors);
    match load(dir.path()).unwrap_err() {
        LoadError::MissingTensor { name: missing, .. } => assert_eq!(missing, name),
        other => panic!("expected MissingTensor, got {other}"),
    }
}

#[test]
fn wrong_shape_names_tensor_and_both_shapes() {
    // The config claims a wider feed-forward than the weights have.
    let config = tiny_config().replace("\"intermediate_size\": 96", "\"intermediate_size\": 100");
    assert_ne!(config, tiny_config());
    let dir = write_model(&config, &tiny_tensors());
    let err = load(dir.path()).unwrap_err();
    match &err {
        LoadError::WrongShape {
            name,
            expected,
            found,
        } => {
            assert_eq!(
                name,
                "text_decoder.bert.encoder.layer.0.intermediate.dense.weight"
            );
            assert_eq!(expected, &vec![100, 32]);
            assert_eq!(found, &vec![96, 32]);
        }
        other => panic!("expected WrongShape, got {other}"),
    }
    assert!(
        err.to_string().contains("intermediate.dense.weight"),
        "{err}"
    );
}

#[test]
fn sharded_checkpoint_loads_like_the_single_file() {
    let tensors = tiny_tensors();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), tiny_config()).unwrap();
    let (mut first, mut second) = (HashMap::new(), HashMap::new());
    let mut weight_map = serde_json::Map::new();
    for (name, tensor) in &tensors {
        let (shard, file) = if name.starts_with("vision_model.") {
            (&mut first, "model-00001-of-00002.safetensors")
        } else {
            (&mut second, "model-00002-of-00002.safetensors")
        };
        shard.insert(name.clone(), tensor.clone());
        weight_map.insert(name.clone(), serde_json::Value::String(file.to_string()));
    }
    candle_core::safetensors::save(&first, dir.path().join("model-00001-of-00002.safetensors"))
        .unwrap();
    candle_core::safetensors::save(&second, dir.path().join("model-00002-of-00002.safetensors"))
        .unwrap();
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let sharded = load(dir.path()).unwrap();
    let single = load(&tiny_dir()).unwrap();
    assert_eq!(logits(&sharded), logits(&single));

    // A shard named by the index but absent.
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::MissingShard { .. }), "{err}");
    assert!(
        err.to_string().contains("model-00002-of-00002.safetensors"),
        "{err}"
    );
}

#[test]
fn untied_decoder_weight_is_used_when_present() {
    // Older checkpoints store `cls.predictions.decoder.weight`; a zero matrix there makes every
    // logit equal to the output bias, which the tied embeddings would not.
    let mut tensors = tiny_tensors();
    let bias = tensors["text_decoder.cls.predictions.bias"]
        .to_vec1::<f32>()
        .unwrap();
    let zeros = Tensor::zeros((30524, 32), DType::F32, &Device::Cpu).unwrap();
    tensors.insert(
        "text_decoder.cls.predictions.decoder.weight".to_string(),
        zeros,
    );
    let dir = write_model(&tiny_config(), &tensors);
    let got = logits(&load(dir.path()).unwrap());
    assert_eq!(&got[30524..], bias.as_slice());
    let tied = logits(&load(&tiny_dir()).unwrap());
    assert_ne!(&tied[30524..], bias.as_slice());
}
