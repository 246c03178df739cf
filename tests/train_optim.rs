//! AdamW, gradient clipping and the warm-up + cosine schedule against PyTorch.
//!
//! Reference data: `tests/fixtures/make_optim_fixtures.py` (torch 2.11.0, transformers 5.17.0, CPU,
//! f32) runs `clip_grad_norm_` + `torch.optim.AdamW` (two param groups by the decay rule) +
//! `get_cosine_with_min_lr_schedule_with_warmup` for 10 steps on six BLIP-named parameters and
//! writes the inputs and every step's parameters to `tests/fixtures/optim/`. The test replays the
//! same gradients through vlmrun's optimizer and reports the max error per tensor per step.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use serde::Deserialize;
use vlmrun::train::grads::ParamGrads;
use vlmrun::train::optim::{clip_grad_norm, AdamW, AdamWConfig};
use vlmrun::train::params::{FreezeRule, TrainParams};
use vlmrun::train::schedule::WarmupCosine;

/// Max error allowed, relative to the largest magnitude in the reference tensor. Both sides compute
/// in f32 with the same formula; they differ in rounding only (candle multiplies by a reciprocal
/// where torch divides, sums squares in another order for the norm): measured worst 6e-8 over the
/// 10 steps (2e-7 for the moments). A real mistake is far larger: decay on the wrong group changes a
/// parameter by lr*wd = 1e-3 of itself, an off-by-one schedule step by ~3e-3 of lr, a missed clip by
/// the clip factor (up to 7x); eps inside the square root or before the bias correction gave
/// 1.2e-3 (the fixture's eps is 1e-3 so that its placement shows).
const REL_TOL: f32 = 1e-5;
/// The schedule is the same f64 formula on both sides; only `cos` may differ by an ulp across libms.
const LR_REL_TOL: f64 = 1e-12;

#[derive(Debug, Deserialize)]
struct Expected {
    lr: f64,
    min_lr: f64,
    warmup_steps: u64,
    total_steps: u64,
    weight_decay: f64,
    betas: [f64; 2],
    eps: f64,
    max_norm: f64,
    params: Vec<String>,
    decay: HashMap<String, bool>,
    step_counts: HashMap<String, u64>,
    clipped_steps: Vec<u64>,
}

struct Fixture {
    expected: Expected,
    inputs: HashMap<String, Tensor>,
    outputs: HashMap<String, Tensor>,
}

fn fixture() -> Fixture {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/optim");
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    Fixture {
        expected: serde_json::from_str(&text).unwrap(),
        inputs: candle_core::safetensors::load(dir.join("inputs.safetensors"), &Device::Cpu)
            .unwrap(),
        outputs: candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu)
            .unwrap(),
    }
}

impl Fixture {
    fn params_from(&self, values: impl Fn(&str) -> Tensor) -> TrainParams {
        let named = self
            .expected
            .params
            .iter()
            .map(|name| (name.clone(), Var::from_tensor(&values(name)).unwrap()))
            .collect();
        TrainParams::from_named(named, &FreezeRule::none()).unwrap()
    }

    fn initial_params(&self) -> TrainParams {
        self.params_from(|name| self.inputs[&format!("init/{name}")].copy().unwrap())
    }

    fn grads(&self, step: usize, params: &TrainParams) -> ParamGrads {
        let prefix = format!("grad/{step}/");
        let named = self
            .inputs
            .iter()
            .filter_map(|(key, value)| {
                key.strip_prefix(&prefix)
                    .map(|name| (name.to_string(), value.clone()))
            })
            .collect();
        ParamGrads::from_named(named, params).unwrap()
    }

    fn config(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.expected.betas[0],
            beta2: self.expected.betas[1],
            eps: self.expected.eps,
            weight_decay: self.expected.weight_decay,
        }
    }

    fn schedule(&self) -> WarmupCosine {
        let e = &self.expected;
        WarmupCosine::new(e.lr, e.min_lr, e.warmup_steps, e.total_steps).unwrap()
    }

    /// Runs steps `range` (clip, step at the scheduled lr); returns the pre-clip norms.
    fn run(
        &self,
        params: &TrainParams,
        adamw: &mut AdamW,
        range: std::ops::Range<usize>,
        mut after_step: impl FnMut(usize, &TrainParams),
    ) -> Vec<f64> {
        let schedule = self.schedule();
        let mut norms = Vec::new();
        for step in range {
            let mut grads = self.grads(step, params);
            norms.push(clip_grad_norm(&mut grads, self.expected.max_norm).unwrap());
            adamw
                .step(params, &grads, schedule.lr_at(step as u64))
                .unwrap();
            after_step(step, params);
        }
        norms
    }
}

/// max |a - b| / max |b|.
fn rel_error(actual: &Tensor, expected: &Tensor) -> f32 {
    assert_eq!(actual.dims(), expected.dims());
    let diff = actual
        .sub(expected)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = expected
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    diff / scale.max(f32::MIN_POSITIVE)
}

#[test]
fn decay_groups_match_the_fixture_rule() {
    let fixture = fixture();
    let params = fixture.initial_params();
    for param in params.all() {
        assert_eq!(
            param.decay, fixture.expected.decay[&param.name],
            "decay flag of {}",
            param.name
        );
    }
}

#[test]
fn schedule_matches_transformers() {
    let fixture = fixture();
    let schedule = fixture.schedule();
    let expected: Vec<f64> = fixture.outputs["lr"].to_vec1().unwrap();
    for (step, want) in expected.iter().enumerate() {
        let got = schedule.lr_at(step as u64);
        let error = (got - want).abs() / want.abs().max(f64::MIN_POSITIVE);
        assert!(
            got == *want || error < LR_REL_TOL,
            "step {step}: lr {got} vs {want}"
        );
    }
}

#[test]
fn adamw_with_clipping_matches_torch_step_by_step() {
    let fixture = fixture();
    let params = fixture.initial_params();
    let mut adamw = AdamW::new(&params, fixture.config());
    let mut worst = 0.0f32;
    let norms = fixture.run(&params, &mut adamw, 0..10, |step, params| {
        for param in params.all() {
            let expected = &fixture.outputs[&format!("param/{step}/{}", param.name)];
            let error = rel_error(param.tensor(), expected);
            println!("step {step:2} {:70} max rel error {error:.2e}", param.name);
            worst = worst.max(error);
            assert!(
                error < REL_TOL,
                "step {step} {}: {error:.2e} >= {REL_TOL:.0e}",
                param.name
            );
        }
    });
    println!("worst {worst:.2e} (tolerance {REL_TOL:.0e})");

    let expected_norms: Vec<f32> = fixture.outputs["grad_norm"].to_vec1().unwrap();
    for (step, (got, want)) in norms.iter().zip(&expected_norms).enumerate() {
        let error = (*got as f32 - want).abs() / want;
        assert!(error < 1e-6, "step {step}: norm {got} vs {want}");
        let clipped = fixture.expected.clipped_steps.contains(&(step as u64));
        assert_eq!(*got > fixture.expected.max_norm, clipped, "step {step}");
    }

    for (name, count) in &fixture.expected.step_counts {
        assert_eq!(adamw.param_step(name), *count, "{name}");
    }
    let state = adamw.state_tensors().unwrap();
    for name in &fixture.expected.params {
        for moment in ["exp_avg", "exp_avg_sq"] {
            let error = rel_error(
                &state[&format!("{name}.{moment}")],
                &fixture.outputs[&format!("{moment}/{name}")],
            );
            println!("final {moment:10} {name:70} max rel error {error:.2e}");
            assert!(error < REL_TOL, "{moment} of {name}: {error:.2e}");
        }
    }
}

#[test]
fn resuming_from_exported_state_continues_bit_identically() {
    let fixture = fixture();
    let straight = fixture.initial_params();
    let mut straight_adamw = AdamW::new(&straight, fixture.config());
    fixture.run(&straight, &mut straight_adamw, 0..10, |_, _| {});

    // Stop after 5 steps (the word embeddings skipped step 4, so the step counts differ), carry the
    // parameter values and the state map over to fresh objects, and finish.
    let first = fixture.initial_params();
    let mut first_adamw = AdamW::new(&first, fixture.config());
    fixture.run(&first, &mut first_adamw, 0..5, |_, _| {});
    let state = first_adamw.state_tensors().unwrap();
    let resumed = fixture.params_from(|name| first.get(name).unwrap().tensor().copy().unwrap());
    let mut resumed_adamw = AdamW::new(&resumed, fixture.config());
    resumed_adamw.load_state(&resumed, &state).unwrap();
    fixture.run(&resumed, &mut resumed_adamw, 5..10, |_, _| {});

    for param in straight.all() {
        let a: Vec<f32> = param.tensor().flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = resumed
            .get(&param.name)
            .unwrap()
            .tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a, b, "{}", param.name);
    }
}

#[test]
fn half_precision_gradients_update_f32_masters() {
    // Gradients of an f16 forward arrive as f16 when the graph is cast inside; they are converted.
    let fixture = fixture();
    let params = fixture.initial_params();
    let mut adamw = AdamW::new(&params, fixture.config());
    let named = params
        .all()
        .iter()
        .map(|p| {
            let grad = Tensor::ones(p.tensor().dims(), DType::F16, &Device::Cpu).unwrap();
            (p.name.clone(), grad)
        })
        .collect();
    let grads = ParamGrads::from_named(named, &params).unwrap();
    adamw.step(&params, &grads, 1e-3).unwrap();
    for param in params.all() {
        assert_eq!(param.tensor().dtype(), DType::F32);
    }
}

/// One f16 step as the training loop composes it: f32 master -> f16 forward -> scaled loss ->
/// backward -> f32 gradients -> unscale -> clip -> AdamW; and an overflowing step that is skipped.
#[test]
fn f16_step_with_loss_scaling_from_a_real_backward() {
    use vlmrun::train::scaler::{LossScaler, ScalerConfig};

    let device = Device::Cpu;
    let w = Var::from_vec(
        (0..12)
            .map(|i| (i as f32 * 0.7).sin())
            .collect::<Vec<f32>>(),
        (4, 3),
        &device,
    )
    .unwrap();
    let params = TrainParams::from_named(
        vec![(
            "text_decoder.cls.predictions.transform.dense.weight".into(),
            w,
        )],
        &FreezeRule::none(),
    )
    .unwrap();
    let name = "text_decoder.cls.predictions.transform.dense.weight";
    let x = Tensor::from_vec(
        (0..6).map(|i| i as f32 * 0.25 - 0.5).collect::<Vec<f32>>(),
        (2, 3),
        &device,
    )
    .unwrap();
    // loss = mean((x W^T)^2) * factor, forward in `dtype`.
    let loss_of = |dtype: DType, factor: f64| {
        let w = params.get(name).unwrap().tensor().to_dtype(dtype).unwrap();
        let y = x.to_dtype(dtype).unwrap().matmul(&w.t().unwrap()).unwrap();
        let loss = y
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .affine(factor, 0.0)
            .unwrap();
        loss.to_dtype(DType::F32).unwrap()
    };
    let reference = ParamGrads::from_store(loss_of(DType::F32, 1.0).backward().unwrap(), &params)
        .unwrap()
        .get(name)
        .unwrap()
        .clone();

    let mut scaler = LossScaler::new(ScalerConfig::for_compute_dtype(DType::F16));
    let mut adamw = AdamW::new(&params, AdamWConfig::default());
    let initial = params.get(name).unwrap().tensor().copy().unwrap();
    // GradScaler's first steps: 2^16 overflows this toy's f16 backward, so steps are skipped and the
    // scale halves until the scaled gradients fit.
    loop {
        let scaled = scaler.scale_loss(&loss_of(DType::F16, 1.0)).unwrap();
        let mut grads = ParamGrads::from_store(scaled.backward().unwrap(), &params).unwrap();
        let found_inf = scaler.unscale(&mut grads).unwrap();
        if found_inf {
            scaler.update(found_inf);
            assert!(scaler.skipped_steps() < 8, "scale {}", scaler.scale());
            continue;
        }
        let grad = grads.get(name).unwrap();
        assert_eq!(grad.dtype(), DType::F32);
        // f16 has an 11-bit mantissa: 1e-2 of the gradient's scale covers its rounding.
        let error = rel_error(grad, &reference);
        assert!(error < 1e-2, "f16 gradient vs f32: {error:.2e}");
        assert_eq!(
            rel_error(params.get(name).unwrap().tensor(), &initial),
            0.0,
            "skipped steps leave the weights alone"
        );
        clip_grad_norm(&mut grads, 1.0).unwrap();
        adamw.step(&params, &grads, 1e-3).unwrap();
        scaler.update(found_inf);
        break;
    }
    let skipped = scaler.skipped_steps();
    assert!(skipped >= 1);
    assert_eq!(scaler.scale(), 65536.0 / f64::from(1u32 << skipped));
    assert!(rel_error(params.get(name).unwrap().tensor(), &initial) > 0.0);

    // A loss whose scaled gradients overflow f16: inf gradients, step skipped, scale halved.
    let kept = params.get(name).unwrap().tensor().copy().unwrap();
    let scale = scaler.scale();
    let scaled = scaler.scale_loss(&loss_of(DType::F16, 1e3)).unwrap();
    let mut grads = ParamGrads::from_store(scaled.backward().unwrap(), &params).unwrap();
    let found_inf = scaler.unscale(&mut grads).unwrap();
    assert!(found_inf);
    if !found_inf {
        adamw.step(&params, &grads, 1e-3).unwrap();
    }
    scaler.update(found_inf);
    assert_eq!(scaler.scale(), scale / 2.0);
    assert_eq!(scaler.skipped_steps(), skipped + 1);
    assert_eq!(rel_error(params.get(name).unwrap().tensor(), &kept), 0.0);
}
