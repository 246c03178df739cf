//! Parity of the BLIP model and generation with transformers 5.17 on the tiny random model.
//!
//! Reference data: `tests/fixtures/make_blip_fixtures.py` (torch 2.11.0, transformers 5.17.0,
//! CPU, f32) writes `models/tiny-blip/` and `tests/fixtures/blip/expected.{safetensors,json}`.
//! The tests feed the reference pixel tensors (preprocessing is tested elsewhere), compare
//! tensors with a per-tensor max error report, and require identical token ids.
//!
//! `VLMRUN_TEST_DEVICE=cuda` runs them on the first CUDA device (a `--features cuda` build),
//! where decoding goes through the fused kernels; `VLMRUN_REPO_DIR` points at the checkout when
//! the test binary runs elsewhere than where it was built.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use vlmrun::generate::{generate, GenerationConfig};
use vlmrun::models::blip::{load_model, BlipForConditionalGeneration};

/// Maximum error allowed, relative to the largest magnitude in the reference tensor.
/// f32 on both sides; only summation order differs (conv vs. matmul patch embedding, BLAS
/// blocking, fused LayerNorm/softmax), which accounts for ~1e-6 of the scale. 1e-4 leaves room
/// for other BLAS builds while still catching any real mistake (a wrong eps, scale, mask or
/// activation moves the outputs by >1e-2 of their scale).
const REL_TOL: f32 = 1e-4;

fn repo() -> PathBuf {
    std::env::var_os("VLMRUN_REPO_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn device() -> Device {
    match std::env::var("VLMRUN_TEST_DEVICE").as_deref() {
        Ok("cuda") => {
            Device::new_cuda(0).expect("VLMRUN_TEST_DEVICE=cuda needs a CUDA build and GPU")
        }
        _ => Device::Cpu,
    }
}

#[derive(Debug, Deserialize)]
struct Case {
    image: String,
    prompt: String,
    num_beams: usize,
    max_length: usize,
    min_length: usize,
    repetition_penalty: f32,
    length_penalty: f64,
    batched: bool,
    token_ids: Vec<u32>,
}

#[derive(Debug, Deserialize)]
struct Expected {
    prompt_input_ids: Vec<u32>,
    bos: u32,
    eos: u32,
    pad: u32,
    batch_order: Vec<String>,
    cases: Vec<Case>,
}

struct Fixture {
    model: BlipForConditionalGeneration,
    tensors: HashMap<String, Tensor>,
    expected: Expected,
}

fn fixture() -> Fixture {
    let model = load_model(&repo().join("models/tiny-blip"), DType::F32, &device()).unwrap();
    let dir = repo().join("tests/fixtures/blip");
    let tensors =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &device()).unwrap();
    let expected: Expected =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    Fixture {
        model,
        tensors,
        expected,
    }
}

impl Fixture {
    fn tensor(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture tensor {name} missing"))
    }

    fn pixels(&self, stems: &[String]) -> Tensor {
        let rows: Vec<&Tensor> = stems
            .iter()
            .map(|s| self.tensor(&format!("pixel_values/{s}")))
            .collect();
        Tensor::cat(&rows, 0).unwrap()
    }

    fn prompt_for(&self, prompt: &str) -> Vec<u32> {
        if prompt.is_empty() {
            vec![]
        } else {
            self.expected.prompt_input_ids.clone()
        }
    }

    fn gen_config(&self, case: &Case) -> GenerationConfig {
        GenerationConfig {
            max_length: case.max_length,
            min_length: case.min_length,
            num_beams: case.num_beams,
            length_penalty: case.length_penalty,
            repetition_penalty: case.repetition_penalty,
            bos: self.expected.bos,
            eos: self.expected.eos,
            pad: self.expected.pad,
        }
    }
}

/// (max |a - b|, that divided by max |b|).
fn errors(actual: &Tensor, expected: &Tensor) -> (f32, f32) {
    assert_eq!(actual.dims(), expected.dims());
    let a = actual
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let max_abs = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    (max_abs, max_abs / scale.max(f32::MIN_POSITIVE))
}

fn check(name: &str, actual: &Tensor, expected: &Tensor, worst: &mut f32) {
    let (abs, rel) = errors(actual, expected);
    eprintln!("{name:>40}: max abs err {abs:.3e}, relative to max |ref| {rel:.3e}");
    assert!(
        rel <= REL_TOL,
        "{name}: relative error {rel:.3e} > {REL_TOL:.0e}"
    );
    *worst = worst.max(rel);
}

#[test]
fn vision_embeds_match_transformers() {
    let f = fixture();
    let mut worst = 0f32;
    for stem in &f.expected.batch_order {
        let embeds = f
            .model
            .image_embeds(&f.pixels(std::slice::from_ref(stem)))
            .unwrap()
            .squeeze(0)
            .unwrap();
        check(
            &format!("vision_embeds/{stem}"),
            &embeds,
            f.tensor(&format!("vision_embeds/{stem}")),
            &mut worst,
        );
    }
    // Batched: every image at once gives the same embeddings.
    let all = f
        .model
        .image_embeds(&f.pixels(&f.expected.batch_order))
        .unwrap();
    for (i, stem) in f.expected.batch_order.iter().enumerate() {
        let row = all.get(i).unwrap();
        check(
            &format!("batched vision_embeds/{stem}"),
            &row,
            f.tensor(&format!("vision_embeds/{stem}")),
            &mut worst,
        );
    }
    eprintln!("worst relative error: {worst:.3e}");
}

#[test]
fn first_step_logits_match_transformers() {
    let f = fixture();
    let mut worst = 0f32;
    for (kind, prompt) in [
        ("noprompt", vec![f.expected.bos]),
        ("prompt", f.expected.prompt_input_ids.clone()),
    ] {
        let stems = &f.expected.batch_order;
        let ids = Tensor::new(prompt.as_slice(), &device())
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        for stem in stems {
            let logits = f
                .model
                .forward(&f.pixels(std::slice::from_ref(stem)), &ids)
                .unwrap();
            let last = logits.get(0).unwrap().get(prompt.len() - 1).unwrap();
            check(
                &format!("logits_{kind}/{stem}"),
                &last,
                f.tensor(&format!("logits_{kind}/{stem}")),
                &mut worst,
            );
        }
        // Batched forward over all images.
        let batch_ids = ids.repeat((stems.len(), 1)).unwrap();
        let logits = f.model.forward(&f.pixels(stems), &batch_ids).unwrap();
        for (i, stem) in stems.iter().enumerate() {
            let last = logits.get(i).unwrap().get(prompt.len() - 1).unwrap();
            check(
                &format!("batched logits_{kind}/{stem}"),
                &last,
                f.tensor(&format!("logits_{kind}/{stem}")),
                &mut worst,
            );
        }
    }
    eprintln!("worst relative error: {worst:.3e}");
}

fn describe(case: &Case) -> String {
    format!(
        "{} prompt={:?} beams={} rep={} lp={}",
        case.image, case.prompt, case.num_beams, case.repetition_penalty, case.length_penalty
    )
}

#[test]
fn single_image_generation_matches_transformers_ids() {
    let f = fixture();
    let mut failures = Vec::new();
    let mut n = 0;
    for case in f.expected.cases.iter().filter(|c| !c.batched) {
        let ids = generate(
            &f.model,
            &f.pixels(std::slice::from_ref(&case.image)),
            &f.prompt_for(&case.prompt),
            &f.gen_config(case),
        )
        .unwrap();
        n += 1;
        if ids[0] != case.token_ids {
            failures.push(format!(
                "{}\n  expected {:?}\n  got      {:?}",
                describe(case),
                case.token_ids,
                ids[0]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{n} single-image cases identical");
}

#[test]
fn batched_generation_matches_transformers_ids() {
    let f = fixture();
    let stems = &f.expected.batch_order;
    let pixels = f.pixels(stems);
    let mut n = 0;
    for prompt in ["", "a picture of"] {
        for beams in [1usize, 3] {
            let cases: Vec<&Case> = f
                .expected
                .cases
                .iter()
                .filter(|c| c.batched && c.prompt == prompt && c.num_beams == beams)
                .collect();
            assert_eq!(cases.len(), stems.len());
            let out = generate(
                &f.model,
                &pixels,
                &f.prompt_for(prompt),
                &f.gen_config(cases[0]),
            )
            .unwrap();
            for (case, ids) in cases.iter().zip(&out) {
                assert_eq!(ids, &case.token_ids, "{}", describe(case));
                n += 1;
            }
        }
    }
    eprintln!("{n} batched cases identical");
}

#[test]
fn caption_does_not_depend_on_batch_neighbours() {
    let f = fixture();
    let stems = &f.expected.batch_order;
    for beams in [1usize, 3] {
        let cfg = GenerationConfig {
            max_length: 20,
            min_length: 5,
            num_beams: beams,
            ..GenerationConfig::default()
        };
        let prompt = f.expected.prompt_input_ids.clone();
        let batched = generate(&f.model, &f.pixels(stems), &prompt, &cfg).unwrap();
        // Same image alone, and inside a batch in another order with a duplicate.
        let mut shuffled: Vec<String> = stems.iter().rev().cloned().collect();
        shuffled.push(stems[0].clone());
        let reordered = generate(&f.model, &f.pixels(&shuffled), &prompt, &cfg).unwrap();
        for (i, stem) in stems.iter().enumerate() {
            let alone = generate(
                &f.model,
                &f.pixels(std::slice::from_ref(stem)),
                &prompt,
                &cfg,
            )
            .unwrap();
            assert_eq!(alone[0], batched[i], "{stem} beams={beams}: alone vs batch");
            assert_eq!(
                reordered[stems.len() - 1 - i],
                batched[i],
                "{stem} beams={beams}: reordered batch"
            );
        }
        assert_eq!(reordered[stems.len()], batched[0]);
    }
}

#[test]
fn half_precision_runs_with_finite_logits() {
    let dir = repo().join("models/tiny-blip");
    let f = fixture();
    let stems = &f.expected.batch_order[..3];
    for dtype in [DType::F16, DType::BF16] {
        let model = load_model(Path::new(&dir), dtype, &device()).unwrap();
        let ids = Tensor::new(f.expected.prompt_input_ids.as_slice(), &device())
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let ids = ids.repeat((stems.len(), 1)).unwrap();
        let logits = model.forward(&f.pixels(stems), &ids).unwrap();
        // Logits come out in f32 whatever the activation dtype (generate ranks tokens in f32).
        assert_eq!(logits.dtype(), DType::F32);
        let values = logits
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(
            values.iter().all(|v| v.is_finite()),
            "{dtype:?}: non-finite logits"
        );
        let mut worst = 0f32;
        for (i, stem) in stems.iter().enumerate() {
            let last = logits
                .get(i)
                .unwrap()
                .get(f.expected.prompt_input_ids.len() - 1)
                .unwrap();
            let (abs, rel) = errors(&last, f.tensor(&format!("logits_prompt/{stem}")));
            eprintln!("{dtype:?} logits_prompt/{stem}: max abs err {abs:.3e}, relative {rel:.3e}");
            worst = worst.max(rel);
        }
        // Loose sanity bound: half precision keeps ~3 significant digits.
        assert!(worst < 0.1, "{dtype:?}: relative error {worst}");
        for beams in [1usize, 3] {
            let cfg = GenerationConfig {
                num_beams: beams,
                min_length: 5,
                ..GenerationConfig::default()
            };
            let out =
                generate(&model, &f.pixels(stems), &f.expected.prompt_input_ids, &cfg).unwrap();
            for seq in &out {
                assert!(
                    seq.len() > f.expected.prompt_input_ids.len() && seq.len() <= cfg.max_length,
                    "{dtype:?}: {seq:?}"
                );
                assert_eq!(&seq[..4], f.expected.prompt_input_ids.as_slice());
            }
        }
    }
}

#[test]
fn fused_kernels_agree_with_composed_ops() {
    // On CUDA the decode step runs fused kernels; the composed candle ops are the reference.
    let f = fixture();
    if !f.model.device().is_cuda() {
        eprintln!("skipped: the fused kernels only exist on CUDA (set VLMRUN_TEST_DEVICE=cuda)");
        return;
    }
    let mut composed = f.model.clone();
    composed.set_fused(false).unwrap();
    let stems = &f.expected.batch_order;
    let pixels = f.pixels(stems);
    let ids = Tensor::new(f.expected.prompt_input_ids.as_slice(), &device())
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let ids = ids.repeat((stems.len(), 1)).unwrap();
    let (abs, rel) = errors(
        &f.model.image_embeds(&pixels).unwrap(),
        &composed.image_embeds(&pixels).unwrap(),
    );
    eprintln!("vision embeds fused vs composed: max abs {abs:.3e}, relative {rel:.3e}");
    assert!(rel <= REL_TOL);
    let (abs, rel) = errors(
        &f.model.forward(&pixels, &ids).unwrap(),
        &composed.forward(&pixels, &ids).unwrap(),
    );
    eprintln!("prefill logits fused vs composed: max abs {abs:.3e}, relative {rel:.3e}");
    assert!(rel <= REL_TOL);
    for beams in [1usize, 3] {
        let cfg = GenerationConfig {
            num_beams: beams,
            min_length: 5,
            ..GenerationConfig::default()
        };
        let a = generate(&f.model, &pixels, &f.expected.prompt_input_ids, &cfg).unwrap();
        let b = generate(&composed, &pixels, &f.expected.prompt_input_ids, &cfg).unwrap();
        assert_eq!(a, b, "beams={beams}");
    }
}
