//! Training checkpoints: bit-identical round trips, retention, crash safety, and the errors a bad
//! checkpoint gives (architecture mismatch, truncated or corrupt files).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use vlmrun::train::checkpoint::{
    read_state, CheckpointDir, CheckpointError, LoadedCheckpoint, MetricGoal, Progress, Retention,
    OPTIMIZER_FILE, STATE_FILE,
};
use vlmrun::train::grads::ParamGrads;
use vlmrun::train::optim::{AdamW, AdamWConfig};
use vlmrun::train::params::{FreezeRule, TrainParams};
use vlmrun::train::scaler::{LossScaler, ScalerConfig, ScalerState};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A few BLIP-named parameters with distinct values (`seed` shifts them).
fn small_params(seed: f32, freeze: &FreezeRule) -> TrainParams {
    let shapes: [(&str, &[usize]); 4] = [
        (
            "text_decoder.bert.encoder.layer.0.attention.self.query.weight",
            &[4, 3],
        ),
        (
            "text_decoder.bert.encoder.layer.0.attention.self.query.bias",
            &[4],
        ),
        (
            "text_decoder.bert.embeddings.word_embeddings.weight",
            &[6, 3],
        ),
        (
            "vision_model.embeddings.patch_embedding.weight",
            &[2, 3, 2, 2],
        ),
    ];
    let named = shapes
        .iter()
        .enumerate()
        .map(|(index, (name, dims))| {
            let count: usize = dims.iter().product();
            let values: Vec<f32> = (0..count)
                .map(|i| ((i as f32 + 1.0) * 0.37 + index as f32 + seed).sin())
                .collect();
            let var = Var::from_vec(values, *dims, &Device::Cpu).unwrap();
            (name.to_string(), var)
        })
        .collect();
    TrainParams::from_named(named, freeze).unwrap()
}

/// Takes `steps` AdamW steps with deterministic gradients.
fn train(params: &TrainParams, steps: usize) -> AdamW {
    let mut adamw = AdamW::new(params, AdamWConfig::default());
    for step in 0..steps {
        let named = params
            .trainable()
            .map(|p| {
                let grad = p.tensor().affine(0.1, step as f64 * 0.01).unwrap();
                (p.name.clone(), grad)
            })
            .collect();
        let grads = ParamGrads::from_named(named, params).unwrap();
        adamw.step(params, &grads, 1e-2).unwrap();
    }
    adamw
}

fn progress(step: u64, metric: Option<f64>) -> Progress {
    Progress {
        step,
        epoch: step / 7,
        epoch_position: step % 7 * 32,
        shuffle_seed: 1234,
        scaler: ScalerState {
            scale: 32768.0,
            growth_tracker: 17,
            skipped_steps: 2,
        },
        schedule_step: step,
        metric,
        best_metric: metric,
        world_size: 1,
    }
}

/// A model directory with the two files a checkpoint copies.
fn fake_model_dir(root: &Path) -> PathBuf {
    let dir = root.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), b"{\"model_type\": \"blip\"}\n").unwrap();
    std::fs::write(dir.join("tokenizer.json"), b"{}\n").unwrap();
    dir
}

fn keep(keep_last: usize, best: Option<MetricGoal>) -> Retention {
    Retention { keep_last, best }
}

fn bits(tensor: &Tensor) -> Vec<u32> {
    let values: Vec<f32> = tensor.flatten_all().unwrap().to_vec1().unwrap();
    values.iter().map(|v| v.to_bits()).collect()
}

fn steps_on_disk(dir: &CheckpointDir) -> Vec<u64> {
    dir.list().unwrap().iter().map(|e| e.step).collect()
}

#[test]
fn tiny_blip_round_trips_bit_identically_and_is_a_model_directory() {
    let model_dir = repo().join("models/tiny-blip");
    let weights =
        candle_core::safetensors::load(model_dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let to_params = |weights: &HashMap<String, Tensor>| {
        let named = weights
            .iter()
            .map(|(name, t)| (name.clone(), Var::from_tensor(&t.copy().unwrap()).unwrap()))
            .collect();
        TrainParams::from_named(named, &FreezeRule::vision_encoder()).unwrap()
    };
    let params = to_params(&weights);
    let adamw = train(&params, 2);
    let mut scaler = LossScaler::new(ScalerConfig::torch_defaults());
    scaler.update(true);
    let saved_progress = Progress {
        scaler: scaler.state(),
        ..progress(2, Some(2.5))
    };

    let temp = tempfile::tempdir().unwrap();
    let checkpoints = CheckpointDir::new(temp.path().join("ckpt"), keep(3, None)).unwrap();
    let dir = checkpoints
        .save(&params, &adamw, &saved_progress, &model_dir)
        .unwrap();
    assert!(dir.ends_with("step-00000002"), "{}", dir.display());

    // A model directory the inference loader accepts, holding the trained weights.
    assert!(vlmrun::hub::missing_files(&dir).is_empty());
    vlmrun::models::blip::load_model(&dir, DType::F32, &Device::Cpu).unwrap();

    // Restore into a run that starts from the original weights.
    let fresh = to_params(&weights);
    let mut fresh_adamw = AdamW::new(&fresh, AdamWConfig::default());
    let mut fresh_scaler = LossScaler::new(ScalerConfig::torch_defaults());
    let loaded = LoadedCheckpoint::load(&dir, &fresh, &Device::Cpu).unwrap();
    let restored = loaded
        .restore(&fresh, &mut fresh_adamw, &mut fresh_scaler)
        .unwrap();
    assert_eq!(restored, saved_progress);
    assert_eq!(fresh_scaler.state(), scaler.state());
    assert_eq!(loaded.state.vlmrun_version, env!("CARGO_PKG_VERSION"));
    let mut changed = 0;
    for param in params.all() {
        let back = fresh.get(&param.name).unwrap();
        assert_eq!(bits(param.tensor()), bits(back.tensor()), "{}", param.name);
        changed += usize::from(bits(param.tensor()) != bits(&weights[&param.name]));
    }
    assert!(
        changed > 10,
        "training changed the trainable weights ({changed})"
    );
    let (a, b) = (
        adamw.state_tensors().unwrap(),
        fresh_adamw.state_tensors().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (key, tensor) in &a {
        if tensor.dtype() == DType::F32 {
            assert_eq!(bits(tensor), bits(&b[key]), "{key}");
        } else {
            assert_eq!(
                tensor.to_scalar::<i64>().unwrap(),
                b[key].to_scalar::<i64>().unwrap(),
                "{key}"
            );
        }
    }
}

#[test]
fn retention_keeps_the_last_n_and_the_best() {
    let temp = tempfile::tempdir().unwrap();
    let model_dir = fake_model_dir(temp.path());
    let params = small_params(0.0, &FreezeRule::none());
    let adamw = train(&params, 1);
    let metrics = [3.0, 1.0, 2.0, 2.5, 2.2, 2.1];

    let lower =
        CheckpointDir::new(temp.path().join("lower"), keep(2, Some(MetricGoal::Lower))).unwrap();
    let higher = CheckpointDir::new(
        temp.path().join("higher"),
        keep(2, Some(MetricGoal::Higher)),
    )
    .unwrap();
    let plain = CheckpointDir::new(temp.path().join("plain"), keep(2, None)).unwrap();
    for (index, metric) in metrics.iter().enumerate() {
        let step = (index as u64 + 1) * 10;
        for dir in [&lower, &higher, &plain] {
            dir.save(&params, &adamw, &progress(step, Some(*metric)), &model_dir)
                .unwrap();
        }
    }
    assert_eq!(steps_on_disk(&lower), [20, 50, 60]);
    assert_eq!(steps_on_disk(&higher), [10, 50, 60]);
    assert_eq!(steps_on_disk(&plain), [50, 60]);
    assert_eq!(lower.latest().unwrap().unwrap().step, 60);
    assert_eq!(lower.best(MetricGoal::Lower).unwrap().unwrap().step, 20);
    // Nothing but the checkpoints is left in the directory.
    let names: Vec<String> = std::fs::read_dir(lower.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(CheckpointDir::new(temp.path(), keep(0, None)).is_err());
}

#[test]
fn a_failed_save_leaves_the_previous_checkpoint_intact() {
    let temp = tempfile::tempdir().unwrap();
    let model_dir = fake_model_dir(temp.path());
    let params = small_params(0.0, &FreezeRule::vision_encoder());
    let adamw = train(&params, 3);
    let checkpoints = CheckpointDir::new(temp.path().join("ckpt"), keep(1, None)).unwrap();
    checkpoints
        .save(&params, &adamw, &progress(10, None), &model_dir)
        .unwrap();

    // The save of step 20 fails after the weights are written (the tokenizer cannot be copied).
    let later = small_params(1.0, &FreezeRule::vision_encoder());
    std::fs::remove_file(model_dir.join("tokenizer.json")).unwrap();
    let err = checkpoints
        .save(&later, &adamw, &progress(20, None), &model_dir)
        .unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    // A process killed mid-save leaves a temporary directory with a torn file behind.
    let torn = checkpoints.root().join(".tmp-step-00000030-4242");
    std::fs::create_dir_all(&torn).unwrap();
    std::fs::write(torn.join("model.safetensors"), b"\x40\x00\x00").unwrap();
    // And a step directory copied by hand without its state is not complete either.
    let partial = checkpoints.root().join("step-00000040");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("model.safetensors"), b"").unwrap();

    let latest = checkpoints.latest().unwrap().unwrap();
    assert_eq!(latest.step, 10);
    let fresh = small_params(5.0, &FreezeRule::vision_encoder());
    let loaded = LoadedCheckpoint::load(&latest.dir, &fresh, &Device::Cpu).unwrap();
    let mut fresh_adamw = AdamW::new(&fresh, AdamWConfig::default());
    let mut scaler = LossScaler::new(ScalerConfig::torch_defaults());
    loaded
        .restore(&fresh, &mut fresh_adamw, &mut scaler)
        .unwrap();
    for param in params.trainable() {
        let back = fresh.get(&param.name).unwrap();
        assert_eq!(bits(param.tensor()), bits(back.tensor()), "{}", param.name);
    }

    // The next successful save cleans the leftovers.
    std::fs::write(model_dir.join("tokenizer.json"), b"{}\n").unwrap();
    checkpoints
        .save(&later, &adamw, &progress(20, None), &model_dir)
        .unwrap();
    assert!(!torn.exists());
    assert_eq!(steps_on_disk(&checkpoints), [20]);
}

#[test]
fn saving_the_same_step_again_replaces_it() {
    let temp = tempfile::tempdir().unwrap();
    let model_dir = fake_model_dir(temp.path());
    let checkpoints = CheckpointDir::new(temp.path().join("ckpt"), keep(2, None)).unwrap();
    let first = small_params(0.0, &FreezeRule::none());
    let adamw = train(&first, 1);
    checkpoints
        .save(&first, &adamw, &progress(10, None), &model_dir)
        .unwrap();
    let second = small_params(2.0, &FreezeRule::none());
    let dir = checkpoints
        .save(&second, &adamw, &progress(10, Some(1.0)), &model_dir)
        .unwrap();
    assert_eq!(read_state(&dir).unwrap().progress.metric, Some(1.0));
    let loaded = LoadedCheckpoint::load(&dir, &second, &Device::Cpu).unwrap();
    let name = "text_decoder.bert.embeddings.word_embeddings.weight";
    assert_eq!(
        bits(&loaded.model[name]),
        bits(second.get(name).unwrap().tensor())
    );
    assert_eq!(steps_on_disk(&checkpoints), [10]);
}

#[test]
fn resuming_from_an_earlier_checkpoint_sets_the_later_ones_aside() {
    let temp = tempfile::tempdir().unwrap();
    let model_dir = fake_model_dir(temp.path());
    let params = small_params(0.0, &FreezeRule::none());
    let adamw = train(&params, 1);
    let checkpoints = CheckpointDir::new(temp.path().join("ckpt"), keep(1, None)).unwrap();
    for step in [10, 20, 30] {
        checkpoints
            .save(&params, &adamw, &progress(step, None), &model_dir)
            .unwrap();
    }
    // keep_last = 1 left step 30; the run is resumed from a copy of step 10 and saves step 15.
    checkpoints
        .save(&params, &adamw, &progress(15, None), &model_dir)
        .unwrap();
    assert_eq!(steps_on_disk(&checkpoints), [15]);
    assert_eq!(checkpoints.latest().unwrap().unwrap().step, 15);
    assert!(checkpoints
        .root()
        .join("superseded-step-00000030-at-00000015")
        .join(STATE_FILE)
        .is_file());
}

#[test]
fn architecture_mismatch_names_the_parameters() {
    let temp = tempfile::tempdir().unwrap();
    let model_dir = fake_model_dir(temp.path());
    let params = small_params(0.0, &FreezeRule::none());
    let adamw = train(&params, 1);
    let checkpoints = CheckpointDir::new(temp.path().join("ckpt"), keep(1, None)).unwrap();
    let dir = checkpoints
        .save(&params, &adamw, &progress(1, None), &model_dir)
        .unwrap();

    let other = TrainParams::from_named(
        vec![
            (
                "text_decoder.bert.encoder.layer.0.attention.self.query.weight".into(),
                Var::zeros((5, 3), DType::F32, &Device::Cpu).unwrap(),
            ),
            (
                "text_decoder.bert.encoder.layer.0.attention.self.query.bias".into(),
                Var::zeros(4, DType::F32, &Device::Cpu).unwrap(),
            ),
            (
                "text_decoder.cls.predictions.bias".into(),
                Var::zeros(6, DType::F32, &Device::Cpu).unwrap(),
            ),
        ],
        &FreezeRule::none(),
    )
    .unwrap();
    let err = LoadedCheckpoint::load(&dir, &other, &Device::Cpu).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, CheckpointError::Architecture { count: 4, .. }),
        "{message}"
    );
    for needle in [
        "query.weight has shape [4, 3] in the checkpoint, [5, 3] in the model",
        "text_decoder.cls.predictions.bias missing from the checkpoint",
        "word_embeddings.weight is in the checkpoint but not in the model",
        "patch_embedding.weight is in the checkpoint but not in the model",
        "state.json",
        "--fresh",
    ] {
        assert!(message.contains(needle), "missing `{needle}` in: {message}");
    }

    // Resuming with another freeze setting: the optimizer state does not fit.
    let frozen = small_params(0.0, &FreezeRule::vision_encoder());
    let loaded = LoadedCheckpoint::load(&dir, &frozen, &Device::Cpu).unwrap();
    let mut adamw = AdamW::new(&frozen, AdamWConfig::default());
    let mut scaler = LossScaler::new(ScalerConfig::torch_defaults());
    let err = loaded
        .restore(&frozen, &mut adamw, &mut scaler)
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("vision_model.embeddings.patch_embedding.weight"),
        "{message}"
    );
    assert!(message.contains(OPTIMIZER_FILE), "{message}");
}

#[test]
fn damaged_files_are_named_with_the_fix() {
    let temp = tempfile::tempdir().unwrap();
    let model_dir = fake_model_dir(temp.path());
    let params = small_params(0.0, &FreezeRule::none());
    let adamw = train(&params, 1);
    let checkpoints = CheckpointDir::new(temp.path().join("ckpt"), keep(1, None)).unwrap();
    let dir = checkpoints
        .save(&params, &adamw, &progress(1, None), &model_dir)
        .unwrap();
    let load = || LoadedCheckpoint::load(&dir, &params, &Device::Cpu).unwrap_err();

    // Truncated weights.
    let model_path = dir.join("model.safetensors");
    let model_bytes = std::fs::read(&model_path).unwrap();
    std::fs::write(&model_path, &model_bytes[..model_bytes.len() - 100]).unwrap();
    let err = load();
    assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&model_path.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains("--fresh") && message.contains("--resume"),
        "{message}"
    );
    std::fs::write(&model_path, &model_bytes).unwrap();

    // Truncated optimizer state (header cut).
    let optimizer_path = dir.join(OPTIMIZER_FILE);
    let optimizer_bytes = std::fs::read(&optimizer_path).unwrap();
    std::fs::write(&optimizer_path, &optimizer_bytes[..20]).unwrap();
    let err = load();
    assert!(err.to_string().contains(OPTIMIZER_FILE), "{err}");
    std::fs::write(&optimizer_path, &optimizer_bytes).unwrap();

    // Bad JSON.
    let state_path = dir.join(STATE_FILE);
    let state_text = std::fs::read_to_string(&state_path).unwrap();
    std::fs::write(&state_path, &state_text[..state_text.len() / 2]).unwrap();
    let err = load();
    assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains(&state_path.display().to_string()),
        "{err}"
    );
    assert!(
        checkpoints.latest().unwrap().is_none(),
        "an unreadable state is not complete"
    );

    // A newer schema.
    let newer = state_text.replacen("\"schema_version\": 1", "\"schema_version\": 99", 1);
    assert_ne!(newer, state_text);
    std::fs::write(&state_path, newer).unwrap();
    let err = load();
    assert!(
        matches!(err, CheckpointError::NewerSchema { found: 99, .. }),
        "{err}"
    );

    // A missing file.
    std::fs::write(&state_path, &state_text).unwrap();
    std::fs::remove_file(&optimizer_path).unwrap();
    let err = load();
    assert!(matches!(err, CheckpointError::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains(OPTIMIZER_FILE), "{err}");
}
