//! Gradients of the tiny BLIP through vlmrun's differentiable path against PyTorch's
//! (tests/fixtures/make_train_fixtures.py): same weights, pixels, captions and label smoothing.
//! Reports the max error of every parameter's gradient.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use vlmrun::models::blip::{BlipConfig, BlipForConditionalGeneration};
use vlmrun::preprocess::prompt::PromptTokenizer;
use vlmrun::train::loss::{caption_loss, CaptionBatch};

const WORD_EMBEDDINGS: &str = "text_decoder.bert.embeddings.word_embeddings.weight";

/// f32 on both sides; the gradients differ by summation order only (matmul blocking, the
/// softmax/LayerNorm reductions). Measured max error is <1e-5 of each gradient's largest entry;
/// 1e-4 leaves room for other BLAS builds and would still catch any missing or wrong term
/// (those are O(1) relative).
const GRAD_TOLERANCE: f32 = 1e-4;

/// Some gradients are exactly zero in exact arithmetic: the attention key biases (softmax is
/// invariant to adding `q.b` to every score of a query) come out as ~1e-8 rounding noise on both
/// sides. Errors are therefore taken relative to at least this fraction of the model's largest
/// gradient entry, never to a noise level.
const SCALE_FLOOR: f32 = 1e-3;

struct Fixture {
    tensors: HashMap<String, Tensor>,
    meta: serde_json::Value,
}

fn fixture() -> Fixture {
    let dir = Path::new("tests/fixtures/train");
    let tensors = candle_core::safetensors::load(dir.join("grads.safetensors"), &Device::Cpu)
        .expect("grads.safetensors");
    let meta = serde_json::from_str(&std::fs::read_to_string(dir.join("grads.json")).unwrap())
        .expect("grads.json");
    Fixture { tensors, meta }
}

fn trainable_model(dev: &Device) -> (BlipForConditionalGeneration, HashMap<String, Var>) {
    let dir = Path::new("models/tiny-blip");
    let cfg = BlipConfig::from_json_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
        .unwrap();
    let weights = candle_core::safetensors::load(dir.join("model.safetensors"), dev).unwrap();
    let vars: HashMap<String, Var> = weights
        .into_iter()
        .map(|(name, t)| (name, Var::from_tensor(&t).unwrap()))
        .collect();
    let tensors = vars
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, dev);
    (
        BlipForConditionalGeneration::new_differentiable(&cfg, vb).unwrap(),
        vars,
    )
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// `max |a - b|` relative to `max(max |b|, floor)`.
fn relative_max_error(a: &Tensor, b: &Tensor, floor: f32) -> f32 {
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    diff.to_scalar::<f32>().unwrap() / max_abs(b).max(floor).max(f32::MIN_POSITIVE)
}

/// The worst relative error over `names` of `gradient(name)` against the fixture's PyTorch
/// gradients (the word embeddings by their norm and the rows the batch used), printing each.
fn worst_gradient_error(
    fx: &Fixture,
    names: &[String],
    gradient: impl Fn(&str) -> Tensor,
) -> (String, f32) {
    let dev = Device::Cpu;
    let largest = fx
        .tensors
        .iter()
        .filter(|(name, _)| name.starts_with("grad"))
        .map(|(_, t)| max_abs(t))
        .fold(0f32, f32::max);
    let floor = SCALE_FLOOR * largest;
    let mut worst = (String::new(), 0f32);
    for name in names {
        let grad = gradient(name);
        let error = if name == WORD_EMBEDDINGS {
            let rows: Vec<u32> = fx.meta["word_embedding_rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_u64().unwrap() as u32)
                .collect();
            let rows = Tensor::new(rows.as_slice(), &dev).unwrap();
            let norm = grad.sqr().unwrap().sum_all().unwrap().sqrt().unwrap();
            let expected_norm = &fx.tensors[&format!("grad_norm.{name}")];
            let norm_error = relative_max_error(&norm.reshape(1).unwrap(), expected_norm, floor);
            let row_error = relative_max_error(
                &grad.index_select(&rows, 0).unwrap(),
                &fx.tensors[&format!("grad_rows.{name}")],
                floor,
            );
            norm_error.max(row_error)
        } else {
            let expected = &fx.tensors[&format!("grad.{name}")];
            relative_max_error(&grad.reshape(expected.shape()).unwrap(), expected, floor)
        };
        println!("{name}: relative max error {error:.2e}");
        if error > worst.1 {
            worst = (name.clone(), error);
        }
    }
    worst
}

fn caption_batch(fx: &Fixture, dev: &Device) -> CaptionBatch {
    let tokenizer = PromptTokenizer::from_file("models/tiny-blip/tokenizer.json").unwrap();
    let prompt = fx.meta["prompt"].as_str().unwrap();
    let max_tokens = fx.meta["max_tokens"].as_u64().unwrap() as usize;
    let prefix = "a picture of ";
    let captions: Vec<_> = fx.meta["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let caption = t.as_str().unwrap().strip_prefix(prefix).unwrap();
            tokenizer.caption_ids(prompt, caption, max_tokens).unwrap()
        })
        .collect();
    for c in &captions {
        assert_eq!(c.prompt_len as u64, fx.meta["prompt_len"].as_u64().unwrap());
    }
    CaptionBatch::new(&captions, dev).unwrap()
}

#[test]
fn tokenized_batch_matches_lavis_ids_and_labels() {
    let fx = fixture();
    let batch = caption_batch(&fx, &Device::Cpu);
    let expected_ids = fx.tensors["input_ids"].to_dtype(DType::U32).unwrap();
    let ids: Vec<Vec<u32>> = batch.input_ids.to_vec2().unwrap();
    assert_eq!(ids, expected_ids.to_vec2::<u32>().unwrap());
    // Labels -100 <=> weight 0, for the shifted positions.
    let labels: Vec<Vec<i64>> = fx.tensors["labels"].to_vec2().unwrap();
    let weights: Vec<Vec<f32>> = batch.weights.to_vec2().unwrap();
    for (row_labels, row_weights) in labels.iter().zip(&weights) {
        let counted: Vec<bool> = row_labels[1..].iter().map(|l| *l != -100).collect();
        let ours: Vec<bool> = row_weights.iter().map(|w| *w > 0.0).collect();
        assert_eq!(counted, ours);
    }
}

#[test]
fn loss_and_every_gradient_match_pytorch() {
    let dev = Device::Cpu;
    let fx = fixture();
    let (model, vars) = trainable_model(&dev);
    let batch = caption_batch(&fx, &dev);
    let smoothing = fx.meta["label_smoothing"].as_f64().unwrap();
    let logits = model
        .forward(&fx.tensors["pixel_values"], &batch.input_ids)
        .unwrap();
    let loss = caption_loss(&logits, &batch, smoothing).unwrap();
    let ours = loss.to_scalar::<f32>().unwrap();
    let theirs = fx.tensors["loss"].to_vec1::<f32>().unwrap()[0];
    println!("loss: vlmrun {ours:.6} pytorch {theirs:.6}");
    assert!(((ours - theirs) / theirs).abs() < 1e-5);

    let grads = loss.backward().unwrap();
    let names: Vec<String> = fx.meta["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names.len(),
        vars.len(),
        "every parameter has a gradient in PyTorch"
    );
    let worst = worst_gradient_error(&fx, &names, |name| {
        grads
            .get(vars[name].as_tensor())
            .unwrap_or_else(|| panic!("no gradient reached {name}"))
            .clone()
    });
    println!("worst: {} {:.2e}", worst.0, worst.1);
    assert!(
        worst.1 < GRAD_TOLERANCE,
        "{} gradient off by {:.2e} (relative)",
        worst.0,
        worst.1
    );
}

/// The explicit backward pass (each layer's hand-written backward, no autograd graph; what
/// `vlmrun train` runs by default) against PyTorch: the same loss and every parameter's gradient
/// within the tolerance of the autograd path above, and no parameter left without a gradient;
/// with the vision activations recomputed in the backward, the same loss and gradients exactly.
#[test]
fn explicit_backward_matches_pytorch_for_every_parameter() {
    use vlmrun::kernels::backprop::TrainOps;
    use vlmrun::models::blip::backprop::{Activations, CaptionTargets};
    use vlmrun::models::gradients::NamedGrads;

    let dev = Device::Cpu;
    let fx = fixture();
    let dir = Path::new("models/tiny-blip");
    let cfg = BlipConfig::from_json_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
        .unwrap();
    let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &dev).unwrap();
    let names: Vec<String> = fx.meta["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    let vb = VarBuilder::from_tensors(weights, DType::F32, &dev);
    let model = BlipForConditionalGeneration::new_differentiable(&cfg, vb).unwrap();
    let batch = caption_batch(&fx, &dev);
    let targets = CaptionTargets {
        input_ids: &batch.input_ids,
        targets: &batch.targets,
        weights: &batch.weights,
        counted: batch.target_tokens,
        label_smoothing: fx.meta["label_smoothing"].as_f64().unwrap(),
    };
    let run = |activations: Activations| {
        let mut grads = NamedGrads::new(names.iter().cloned());
        let loss = model
            .train_caption_step(
                &fx.tensors["pixel_values"],
                targets,
                1.0,
                &TrainOps::composed(),
                activations,
                &mut grads,
            )
            .unwrap();
        (loss, grads)
    };
    let (loss, grads) = run(Activations::Stored);
    // Activation recomputation (train.gradient_checkpointing) runs the same ops again: the same
    // loss and every gradient bit for bit.
    let (recomputed_loss, recomputed) = run(Activations::Recomputed);
    assert_eq!(loss.to_bits(), recomputed_loss.to_bits());
    let recomputed = recomputed.into_map();
    let theirs = fx.tensors["loss"].to_vec1::<f32>().unwrap()[0] as f64;
    println!("loss: explicit {loss:.6} pytorch {theirs:.6}");
    assert!(((loss - theirs) / theirs).abs() < 1e-5);
    let grads = grads.into_map();
    assert_eq!(recomputed.len(), grads.len());
    for (name, grad) in &grads {
        let again = &recomputed[name];
        let same = (grad - again)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(
            same, 0.0,
            "{name}: recomputed activations changed the gradient"
        );
    }
    let worst = worst_gradient_error(&fx, &names, |name| {
        grads
            .get(name)
            .unwrap_or_else(|| panic!("the explicit backward gave {name} no gradient"))
            .clone()
    });
    assert_eq!(
        grads.len(),
        names.len(),
        "a gradient for every parameter, no other"
    );
    println!("worst: {} {:.2e}", worst.0, worst.1);
    assert!(
        worst.1 < GRAD_TOLERANCE,
        "{} gradient off by {:.2e} (relative)",
        worst.0,
        worst.1
    );
}
