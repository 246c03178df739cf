//! The fused training kernels against the composed candle ops they replace, on a CUDA GPU
//! (built only with `--features cuda`; skipped when no GPU is visible). Run on the GPU machine:
//! `cargo test --release --features cuda --test gpu_kernels -- --nocapture` (or the test binary
//! that command builds).
//!
//! Reference: the composed path in f32 on the same (rounded) inputs, so the error measured is
//! the kernel's own: bf16/f16 products and probabilities in the tensor cores, f32 accumulation.
//! Tolerances are relative to the largest reference entry: the output and dV are convex
//! combinations rounded once (bf16 2^-8, f16 2^-11); dQ/dK go through dS = P (dP - delta), a
//! difference of near-equal terms, rounded to the 16-bit type before the last matmul, so they
//! get 4x more room. A wrong index or a missing term gives errors of order 1.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor, Var};
use vlmrun::kernels::attention::{composed_self_attention, FusedAttention};
use vlmrun::models::norm::softmax_last_dim;

fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(dev) => Some(dev),
        Err(err) => {
            eprintln!("no CUDA device ({err}); skipping");
            None
        }
    }
}

/// `max |a - b| / max(max |b|, 1e-3)`: relative to the largest reference entry, and relative to
/// 1e-3 where the reference is zero up to rounding (dQ and dK of a softmax over a single key are
/// exactly 0: the fused path leaves ~1e-7 of f32 summation-order noise there).
fn rel_max_error(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    let diff = (&a - &b).unwrap().abs().unwrap().max_all().unwrap();
    let scale = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    diff.to_scalar::<f32>().unwrap() / scale.max(1e-3)
}

struct Case {
    batch: usize,
    tokens: usize,
    heads: usize,
    causal: bool,
    dtype: DType,
}

/// Output and gradient errors of the fused op against the f32 composition.
fn errors(dev: &Device, case: &Case) -> (f32, f32, f32, f32) {
    let Case {
        batch,
        tokens,
        heads,
        causal,
        dtype,
    } = *case;
    let width = 3 * heads * 64;
    // Scores of order 1-3 (as a trained model's), not the near-uniform softmax of tiny inputs.
    let qkv = (Tensor::randn(0f32, 1.0, (batch, tokens, width), dev).unwrap() * 0.35)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let upstream = Tensor::randn(0f32, 1.0, (batch, tokens, heads * 64), dev).unwrap();
    let scale = 0.125;
    let attention = FusedAttention::for_device(dev).unwrap();

    let fused_in = Var::from_tensor(&qkv).unwrap();
    let fused = attention
        .self_attention(fused_in.as_tensor(), heads, scale, causal)
        .unwrap()
        .expect("the kernel applies to bf16/f16 heads of 64 on CUDA");
    let loss = (fused.to_dtype(DType::F32).unwrap() * &upstream)
        .unwrap()
        .sum_all()
        .unwrap();
    let fused_grad = loss.backward().unwrap().get(&fused_in).unwrap().clone();

    let ref_in = Var::from_tensor(&qkv.to_dtype(DType::F32).unwrap()).unwrap();
    let reference =
        composed_self_attention(ref_in.as_tensor(), heads, scale, causal, softmax_last_dim)
            .unwrap();
    let loss = (&reference * &upstream).unwrap().sum_all().unwrap();
    let ref_grad = loss.backward().unwrap().get(&ref_in).unwrap().clone();

    let d = heads * 64;
    let part = |g: &Tensor, i: usize| g.narrow(2, i * d, d).unwrap();
    (
        rel_max_error(&fused, &reference),
        rel_max_error(&part(&fused_grad, 0), &part(&ref_grad, 0)),
        rel_max_error(&part(&fused_grad, 1), &part(&ref_grad, 1)),
        rel_max_error(&part(&fused_grad, 2), &part(&ref_grad, 2)),
    )
}

#[test]
fn fused_attention_matches_the_composed_ops() {
    let Some(dev) = gpu() else { return };
    let cases = [
        // Vision: 577 tokens (not a multiple of the 64-row tiles), non-causal.
        (2, 577, 3, false),
        // Text self-attention: causal, a short padded caption length.
        (3, 33, 2, true),
        // One tile exactly, and a single token.
        (1, 64, 1, false),
        (2, 1, 2, true),
    ];
    println!("| dtype | B | N | heads | causal | out | dQ | dK | dV |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for dtype in [DType::BF16, DType::F16] {
        let (out_tol, grad_tol) = match dtype {
            DType::BF16 => (1.6e-2, 6.4e-2),
            _ => (2e-3, 8e-3),
        };
        for (batch, tokens, heads, causal) in cases {
            let case = Case {
                batch,
                tokens,
                heads,
                causal,
                dtype,
            };
            let (out, dq, dk, dv) = errors(&dev, &case);
            println!(
                "| {dtype:?} | {batch} | {tokens} | {heads} | {causal} | {out:.2e} | {dq:.2e} | {dk:.2e} | {dv:.2e} |"
            );
            assert!(out < out_tol, "{dtype:?} N={tokens}: output error {out}");
            assert!(dv < out_tol * 2.0, "{dtype:?} N={tokens}: dV error {dv}");
            assert!(dq < grad_tol, "{dtype:?} N={tokens}: dQ error {dq}");
            assert!(dk < grad_tol, "{dtype:?} N={tokens}: dK error {dk}");
        }
    }
}

#[test]
fn fused_attention_does_not_apply_to_f32() {
    let Some(dev) = gpu() else { return };
    let attention = FusedAttention::for_device(&dev).unwrap();
    let qkv = Tensor::zeros((1, 4, 3 * 64), DType::F32, &dev).unwrap();
    assert!(attention
        .self_attention(&qkv, 1, 1.0, false)
        .unwrap()
        .is_none());
}

/// Three AdamW steps (decay on the matrix, none on the bias, clipping's gradient scale) with the
/// fused kernel against the composed update on the same GPU tensors. Both are f32 with the same
/// operation order; they differ by fused multiply-adds only, so 1e-6 relative.
#[test]
fn fused_adamw_matches_the_composed_update() {
    use std::collections::HashMap;
    use vlmrun::kernels::adamw::FusedAdamW;
    use vlmrun::train::grads::ParamGrads;
    use vlmrun::train::optim::{AdamW, AdamWConfig};
    use vlmrun::train::params::{FreezeRule, TrainParams};

    let Some(dev) = gpu() else { return };
    let weight = Tensor::randn(0f32, 1.0, (64, 300), &dev).unwrap();
    let bias = Tensor::randn(0f32, 1.0, 300, &dev).unwrap();
    let make = || {
        TrainParams::from_named(
            vec![
                (
                    "l.weight".to_string(),
                    Var::from_tensor(&weight.copy().unwrap()).unwrap(),
                ),
                (
                    "l.bias".to_string(),
                    Var::from_tensor(&bias.copy().unwrap()).unwrap(),
                ),
            ],
            &FreezeRule::none(),
        )
        .unwrap()
    };
    let (composed_params, fused_params) = (make(), make());
    let config = AdamWConfig {
        weight_decay: 0.05,
        ..AdamWConfig::default()
    };
    let mut composed = AdamW::new(&composed_params, config);
    let mut fused =
        AdamW::new(&fused_params, config).with_kernels(FusedAdamW::for_device(&dev).unwrap());
    for step in 0..3 {
        let grads = HashMap::from([
            (
                "l.weight".to_string(),
                Tensor::randn(0f32, 1.0, (64, 300), &dev).unwrap(),
            ),
            (
                "l.bias".to_string(),
                Tensor::randn(0f32, 1.0, 300, &dev).unwrap(),
            ),
        ]);
        let a = ParamGrads::from_named(grads.clone(), &composed_params).unwrap();
        let b = ParamGrads::from_named(grads, &fused_params).unwrap();
        let scale = if step == 1 { 0.25 } else { 1.0 };
        composed
            .step_scaled(&composed_params, &a, 1e-2, scale)
            .unwrap();
        fused.step_scaled(&fused_params, &b, 1e-2, scale).unwrap();
    }
    for name in ["l.weight", "l.bias"] {
        let a = composed_params.get(name).unwrap().tensor().clone();
        let b = fused_params.get(name).unwrap().tensor().clone();
        let moved = rel_max_error(&a, &weight_or_bias(name, &weight, &bias));
        let err = rel_max_error(&b, &a);
        println!("AdamW {name}: fused vs composed {err:.2e} (the steps moved it by {moved:.2e})");
        assert!(moved > 1e-3, "{name} did not move");
        assert!(err < 1e-6, "{name}: fused AdamW differs by {err}");
    }
}

/// The multi-tensor cast equals candle's `to_dtype` bit for bit (both round to nearest even), both
/// ways and for odd sizes; the compute copy the fused AdamW writes equals the updated f32 weight
/// converted by `to_dtype`, and an update without the copy leaves it as it was.
#[test]
fn multi_tensor_cast_and_the_adamw_copy_match_to_dtype() {
    use std::collections::HashMap;
    use vlmrun::kernels::adamw::FusedAdamW;
    use vlmrun::train::grads::ParamGrads;
    use vlmrun::train::optim::{AdamW, AdamWConfig};
    use vlmrun::train::params::{FreezeRule, TrainParams};

    let Some(dev) = gpu() else { return };
    let kernels = FusedAdamW::for_device(&dev).unwrap();
    // Odd sizes; values wide enough to round in every bit position, past f16's range in the last.
    let sources: Vec<Tensor> = [
        (vec![1usize], 1.0),
        (vec![7], 3.0),
        (vec![64, 300], 300.0),
        (vec![3, 5, 11], 1e5),
    ]
    .into_iter()
    .map(|(shape, scale)| (Tensor::randn(0f32, 1.0, shape, &dev).unwrap() * scale).unwrap())
    .collect();
    let refs: Vec<&Tensor> = sources.iter().collect();
    for dtype in [DType::BF16, DType::F16] {
        let cast = kernels
            .cast_many(&refs, dtype)
            .unwrap()
            .expect("the cast applies");
        let back = kernels
            .cast_many(&cast.iter().collect::<Vec<_>>(), DType::F32)
            .unwrap()
            .expect("the cast applies");
        for ((src, c), b) in sources.iter().zip(&cast).zip(&back) {
            assert_eq!(c.dims(), src.dims());
            let want = src.to_dtype(dtype).unwrap();
            let same = |a: &Tensor, b: &Tensor| {
                let (a, b) = (f32_values(a), f32_values(b));
                a.iter()
                    .zip(&b)
                    .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
            };
            assert!(
                same(c, &want),
                "{dtype:?} cast of {:?} differs from to_dtype",
                src.dims()
            );
            assert!(
                same(b, &want.to_dtype(DType::F32).unwrap()),
                "{dtype:?} -> f32 differs"
            );
        }
    }
    let weight = Tensor::randn(0f32, 1.0, (64, 300), &dev).unwrap();
    let params = TrainParams::from_named(
        vec![("l.weight".to_string(), Var::from_tensor(&weight).unwrap())],
        &FreezeRule::none(),
    )
    .unwrap();
    let mut adamw = AdamW::new(&params, AdamWConfig::default()).with_kernels(kernels.clone());
    let copy: HashMap<String, Tensor> = HashMap::from([(
        "l.weight".to_string(),
        kernels
            .cast_many(&[&weight], DType::BF16)
            .unwrap()
            .unwrap()
            .remove(0),
    )]);
    let before = copy["l.weight"].to_dtype(DType::F32).unwrap();
    for _ in 0..2 {
        let grads = HashMap::from([(
            "l.weight".to_string(),
            Tensor::randn(0f32, 1.0, (64, 300), &dev).unwrap(),
        )]);
        let grads = ParamGrads::from_named(grads, &params).unwrap();
        let written = adamw
            .step_scaled_with_copy(&params, &grads, 1e-2, 1.0, Some(&copy))
            .unwrap();
        assert!(written, "the fused update did not write the copy");
    }
    let updated = params
        .get("l.weight")
        .unwrap()
        .tensor()
        .to_dtype(DType::BF16)
        .unwrap();
    let diff = (copy["l.weight"].to_dtype(DType::F32).unwrap()
        - updated.to_dtype(DType::F32).unwrap())
    .unwrap()
    .abs()
    .unwrap()
    .max_all()
    .unwrap()
    .to_scalar::<f32>()
    .unwrap();
    let moved = rel_max_error(&copy["l.weight"].to_dtype(DType::F32).unwrap(), &before);
    println!("AdamW compute copy: max |copy - to_dtype(weight)| = {diff:e} (moved {moved:.2e})");
    assert_eq!(
        diff, 0.0,
        "the copy differs from the updated weight's bf16 rounding"
    );
    assert!(moved > 1e-3, "the copy did not move");
}

/// Every value of `t` as f32 (exact from bf16/f16), in order.
fn f32_values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn weight_or_bias<'a>(name: &str, weight: &'a Tensor, bias: &'a Tensor) -> Tensor {
    if name.ends_with("weight") {
        weight.clone()
    } else {
        bias.clone()
    }
}

/// Bias + GELU forward and both gradients against `gelu_erf(x + bias)` composed in f32 on the
/// same rounded inputs. The forward is rounded once to the 16-bit type; dx is too; dbias sums
/// 2000 rows of f32 products, so all three are held to the output's rounding bound.
#[test]
fn fused_bias_gelu_matches_the_composed_ops() {
    use vlmrun::kernels::gelu::FusedGelu;
    let Some(dev) = gpu() else { return };
    let gelu = FusedGelu::for_device(&dev).unwrap();
    // Width 96: the 16-byte kernels; 100: the one-element ones.
    for (dtype, width) in [
        (DType::BF16, 96),
        (DType::F16, 96),
        (DType::BF16, 100),
        (DType::F16, 100),
    ] {
        let tol = if dtype == DType::BF16 { 8e-3 } else { 1e-3 };
        let x = (Tensor::randn(0f32, 1.0, (4, 500, width), &dev).unwrap() * 2.0)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let b = Tensor::randn(0f32, 1.0, width, &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let upstream = Tensor::randn(0f32, 1.0, (4, 500, width), &dev).unwrap();
        let (xv, bv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&b).unwrap());
        let fused = gelu
            .bias_gelu(xv.as_tensor(), bv.as_tensor())
            .unwrap()
            .expect("applies on CUDA");
        let grads = (fused.to_dtype(DType::F32).unwrap() * &upstream)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (xr, br) = (
            Var::from_tensor(&x.to_dtype(DType::F32).unwrap()).unwrap(),
            Var::from_tensor(&b.to_dtype(DType::F32).unwrap()).unwrap(),
        );
        let reference = xr
            .as_tensor()
            .broadcast_add(br.as_tensor())
            .unwrap()
            .gelu_erf()
            .unwrap();
        let ref_grads = (&reference * &upstream)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let out = rel_max_error(&fused, &reference);
        let dx = rel_max_error(grads.get(&xv).unwrap(), ref_grads.get(&xr).unwrap());
        let db = rel_max_error(grads.get(&bv).unwrap(), ref_grads.get(&br).unwrap());
        println!("bias+GELU {dtype:?} width {width}: out {out:.2e}, dx {dx:.2e}, dbias {db:.2e}");
        assert!(
            out < tol && dx < tol && db < tol,
            "{dtype:?}: {out} {dx} {db}"
        );
    }
}

/// The explicit training ops (`kernels::backprop::TrainOps`, the kernels of `vlmrun train`'s
/// default backward pass) in bf16 on the GPU against the same ops composed in f32 on the same
/// rounded inputs: LayerNorm backward, the fused label-smoothed cross-entropy (loss and logits
/// gradient), and cross-attention / causal self-attention forward and backward at BLIP-base
/// widths (12 heads of 64, 577 image tokens, 30 text tokens). Tolerances as above: one bf16
/// rounding of the result (2^-8 relative) with room for the f32 sums' order; the attention
/// gradients get the 4x of dQ/dK.
#[test]
fn explicit_train_ops_match_the_composed_ops() {
    use vlmrun::kernels::backprop::TrainOps;
    let Some(dev) = gpu() else { return };
    let fused = TrainOps::for_device(&dev).unwrap();
    let composed = TrainOps::composed();
    let bf16 = |t: Tensor| t.to_dtype(DType::BF16).unwrap();
    let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();

    // LayerNorm backward, hidden states with an offset mean.
    let x = bf16((Tensor::randn(0f32, 2.0, (2048, 768), &dev).unwrap() + 0.7).unwrap());
    let w = bf16((Tensor::randn(0f32, 0.2, 768, &dev).unwrap() + 1.0).unwrap());
    let dy = bf16(Tensor::randn(0f32, 1.0, (2048, 768), &dev).unwrap());
    let ours = fused.layer_norm_backward(&x, &w, &dy, 1e-12).unwrap();
    let reference = composed
        .layer_norm_backward(&f32(&x), &f32(&w), &f32(&dy), 1e-12)
        .unwrap();
    for (what, a, b) in [
        ("dx", &ours.0, &reference.0),
        ("dw", &ours.1, &reference.1),
        ("db", &ours.2, &reference.2),
    ] {
        let e = rel_max_error(a, b);
        println!("layer norm backward {what}: {e:.2e}");
        assert!(e < 1e-2, "layer norm {what} {e}");
    }

    // Cross-entropy over the BLIP vocabulary, some rows not counted.
    let (rows, vocab) = (96, 30524);
    let logits = bf16(Tensor::randn(0f32, 3.0, (rows, vocab), &dev).unwrap());
    let targets: Vec<u32> = (0..rows as u32)
        .map(|r| (r * 7919) % vocab as u32)
        .collect();
    let targets = Tensor::new(targets.as_slice(), &dev).unwrap();
    let weights: Vec<f32> = (0..rows)
        .map(|r| if r % 5 == 0 { 0.0 } else { 1.0 })
        .collect();
    let weights = Tensor::new(weights.as_slice(), &dev).unwrap();
    let (loss, grad) = fused
        .cross_entropy(&logits, &targets, &weights, 0.1, 0.01)
        .unwrap();
    let (ref_loss, ref_grad) = composed
        .cross_entropy(&f32(&logits), &targets, &weights, 0.1, 0.01)
        .unwrap();
    let (loss, ref_loss) = (
        loss.to_scalar::<f32>().unwrap(),
        ref_loss.to_scalar::<f32>().unwrap(),
    );
    println!("cross-entropy loss {loss} vs {ref_loss}");
    assert!(((loss - ref_loss) / ref_loss).abs() < 1e-4);
    let e = rel_max_error(&grad, &ref_grad);
    println!("cross-entropy dlogits: {e:.2e}");
    assert!(e < 1e-2, "cross-entropy gradient {e}");

    // Cross-attention and causal self-attention, forward and backward.
    let (b, t, m, heads) = (4, 30, 577, 12);
    let q = bf16(Tensor::randn(0f32, 1.0, (b, t, 768), &dev).unwrap());
    let kv = bf16(Tensor::randn(0f32, 1.0, (b, m, 1536), &dev).unwrap());
    let dout = bf16(Tensor::randn(0f32, 1.0, (b, t, 768), &dev).unwrap());
    let (out, saved) = fused.cross_attention(&q, &kv, heads, 0.125).unwrap();
    let (dq, dkv) = fused
        .cross_attention_backward(&q, &kv, &out, &dout, &saved, heads, 0.125)
        .unwrap();
    let (rq, rkv, rdout) = (f32(&q), f32(&kv), f32(&dout));
    let (ref_out, ref_saved) = composed.cross_attention(&rq, &rkv, heads, 0.125).unwrap();
    let (ref_dq, ref_dkv) = composed
        .cross_attention_backward(&rq, &rkv, &ref_out, &rdout, &ref_saved, heads, 0.125)
        .unwrap();
    for (what, a, bb, tol) in [
        ("out", &out, &ref_out, 1e-2),
        ("dq", &dq, &ref_dq, 2e-2),
        ("dkv", &dkv, &ref_dkv, 2e-2),
    ] {
        let e = rel_max_error(a, bb);
        println!("cross-attention {what}: {e:.2e}");
        assert!(e < tol, "cross-attention {what} {e}");
    }
    let qkv = bf16(Tensor::randn(0f32, 1.0, (b, t, 3 * 768), &dev).unwrap());
    let (out, saved) = fused.self_attention(&qkv, heads, 0.125, true).unwrap();
    let dqkv = fused
        .self_attention_backward(&qkv, &out, &dout, &saved, heads, 0.125, true)
        .unwrap();
    let rqkv = f32(&qkv);
    let (ref_out, ref_saved) = composed.self_attention(&rqkv, heads, 0.125, true).unwrap();
    let ref_dqkv = composed
        .self_attention_backward(&rqkv, &ref_out, &rdout, &ref_saved, heads, 0.125, true)
        .unwrap();
    for (what, a, bb, tol) in [
        ("out", &out, &ref_out, 1e-2),
        ("dqkv", &dqkv, &ref_dqkv, 2e-2),
    ] {
        let e = rel_max_error(a, bb);
        println!("causal self-attention {what}: {e:.2e}");
        assert!(e < tol, "self-attention {what} {e}");
    }

    // Bias + residual adds: 16-byte path (width 768), any-width path (the vocabulary, 30524),
    // an unaligned start (a narrowed residual), and each operand alone. One bf16 rounding of an
    // f32 sum: within 2^-8 of the largest entry.
    for (rows, width) in [(1155, 768), (37, 30524)] {
        let x = bf16(Tensor::randn(0f32, 1.0, (rows, width), &dev).unwrap());
        let bias = bf16(Tensor::randn(0f32, 1.0, width, &dev).unwrap());
        let wide = bf16(Tensor::randn(0f32, 1.0, (rows, width + 3), &dev).unwrap());
        let residual = wide.narrow(1, 3, width).unwrap().contiguous().unwrap();
        let shifted = wide
            .flatten_all()
            .unwrap()
            .narrow(0, 3, rows * width)
            .unwrap();
        let shifted = shifted.reshape((rows, width)).unwrap();
        for (what, b, r) in [
            ("bias + residual", Some(&bias), Some(&residual)),
            ("bias", Some(&bias), None),
            ("residual", None, Some(&residual)),
            ("unaligned residual", Some(&bias), Some(&shifted)),
        ] {
            let ours = fused.add(&x, b, r).unwrap();
            let reference = composed
                .add(&f32(&x), b.map(f32).as_ref(), r.map(f32).as_ref())
                .unwrap();
            let e = rel_max_error(&ours, &reference);
            println!("add {what} ({rows} x {width}): {e:.2e}");
            assert!(e < 1e-2, "add {what} {e}");
        }
    }
    let x = bf16(Tensor::randn(0f32, 1.0, (64, 768), &dev).unwrap());
    let w = bf16(Tensor::randn(0f32, 0.05, (256, 768), &dev).unwrap());
    let b = bf16(Tensor::randn(0f32, 1.0, 256, &dev).unwrap());
    let r = bf16(Tensor::randn(0f32, 1.0, (64, 256), &dev).unwrap());
    let ours = fused.linear(&x, &w, Some(&b), Some(&r)).unwrap();
    let reference = composed
        .linear(&f32(&x), &f32(&w), Some(&f32(&b)), Some(&f32(&r)))
        .unwrap();
    let e = rel_max_error(&ours, &reference);
    println!("linear + bias + residual: {e:.2e}");
    assert!(e < 1e-2, "linear {e}");
}

/// The global gradient norm (one launch over every tensor) against the f64 sum on the host, on
/// tensors of very different sizes, one of them a view that starts inside its storage.
#[test]
fn fused_global_norm_matches_the_host_sum() {
    use vlmrun::kernels::adamw::FusedAdamW;
    let Some(dev) = gpu() else { return };
    let fused = FusedAdamW::for_device(&dev).unwrap();
    let big = Tensor::randn(0f32, 1.0, (3000, 769), &dev).unwrap();
    let tensors = vec![
        Tensor::randn(0f32, 2.0, 7, &dev).unwrap(),
        big.clone(),
        big.flatten_all().unwrap().narrow(0, 5, 1000).unwrap(),
        Tensor::randn(0f32, 0.01, (768, 3), &dev).unwrap(),
    ];
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let norm = fused
        .global_norm(&refs)
        .unwrap()
        .expect("the kernel applies to f32");
    let host: f64 = tensors
        .iter()
        .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .map(|x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    println!("global norm {norm} vs host {host}");
    assert!((norm - host).abs() / host < 1e-9, "{norm} vs {host}");
}

/// Greedy search through recorded decode steps (CUDA graphs) gives the token ids of the same
/// search run eagerly over the same buffers (rows kept: the same kernels, so exactly), in f32 and
/// bf16, with and without a prompt, for a fresh pool (eager warm-up), its second use (capture) and
/// its third (replay); in f32 also those of plain greedy search (finished rows dropped); and steps
/// are recorded at all.
#[test]
fn recorded_decode_steps_give_the_eager_token_ids() {
    use vlmrun::generate::{generate, generate_with, GenerationConfig, StepGraphs};
    use vlmrun::models::blip::load::load_model;
    let Some(dev) = gpu() else { return };
    // vlmrun's device policy turns cudarc's per-launch events off (one stream); capture needs it.
    if let Device::Cuda(cuda) = &dev {
        unsafe { cuda.disable_event_tracking() };
    }
    let dir = [
        "models/demo-blip",
        concat!(env!("CARGO_MANIFEST_DIR"), "/models/demo-blip"),
    ]
    .into_iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.join("config.json").exists())
    .expect("models/demo-blip (run from the repository root)");
    for dtype in [DType::F32, DType::BF16] {
        let model = load_model(&dir, dtype, &dev).unwrap();
        let size = model.config().vision_config.image_size;
        let graphs = StepGraphs::new(true);
        let unrecorded = StepGraphs::unrecorded();
        let prompted = GenerationConfig {
            max_length: 14,
            min_length: 6,
            repetition_penalty: 1.3,
            ..GenerationConfig::default()
        };
        for (prompt, cfg) in [
            (vec![], GenerationConfig::default()),
            (vec![30522, 1037, 3861], prompted),
        ] {
            for round in 0..3 {
                let pixels = Tensor::randn(0f32, 1.0, (6, 3, size, size), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let eager = generate_with(&model, &pixels, &prompt, &cfg, &unrecorded).unwrap();
                let graphed = generate_with(&model, &pixels, &prompt, &cfg, &graphs).unwrap();
                assert_eq!(
                    graphed, eager,
                    "{dtype:?}, prompt {prompt:?}, round {round}"
                );
                if dtype == DType::F32 {
                    let dropped = generate(&model, &pixels, &prompt, &cfg).unwrap();
                    assert_eq!(graphed, dropped, "f32, prompt {prompt:?}, round {round}");
                }
            }
        }
        assert!(
            graphs.recorded() > 0,
            "{dtype:?}: no decode step was recorded"
        );
        eprintln!("{dtype:?}: {} decode steps recorded", graphs.recorded());
    }
}

/// `softmax(q K^T) V` over the first `valid` keys, composed in f32: q `(images*g, d)` plus bias,
/// kv `(2, images, heads, padded, dh)`.
fn composed_cross_attention(
    q: &Tensor,
    bias: &Tensor,
    kv: &Tensor,
    g: usize,
    valid: usize,
) -> Tensor {
    let (_, images, heads, _, dh) = kv.dims5().unwrap();
    let d = heads * dh;
    let qh = q
        .broadcast_add(&bias)
        .unwrap()
        .reshape((images, g, heads, dh))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap();
    let keys = kv
        .get(0)
        .unwrap()
        .narrow(2, 0, valid)
        .unwrap()
        .contiguous()
        .unwrap();
    let values = kv
        .get(1)
        .unwrap()
        .narrow(2, 0, valid)
        .unwrap()
        .contiguous()
        .unwrap();
    let probs = softmax_last_dim(&qh.matmul(&keys.t().unwrap()).unwrap()).unwrap();
    probs
        .matmul(&values)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((images * g, d))
        .unwrap()
}

/// The one-token cross-attention kernel (split over the image keys, then merged) against the
/// composed ops `softmax(q K^T) V` over the real keys, for one image (the most splits), a few
/// images with beams (g queries per image) and padding past the real tokens. Tolerances relative
/// to the largest output entry: f32 1e-5 (summation order), 16-bit 2^-7 (one rounding of the
/// output plus the probabilities in f32).
#[test]
fn split_cross_attention_step_matches_the_composed_ops() {
    use vlmrun::kernels::fused::FusedOps;
    let Some(dev) = gpu() else { return };
    let ops = FusedOps::for_device(&dev).unwrap();
    let (heads, dh) = (12, 64);
    for (images, g, valid, padded) in [
        (1, 1, 577, 584),
        (3, 3, 577, 584),
        (2, 1, 40, 40),
        (5, 2, 1, 8),
    ] {
        let d = heads * dh;
        let q = Tensor::randn(0f32, 0.3, (images * g, d), &dev).unwrap();
        let bias = Tensor::randn(0f32, 0.1, d, &dev).unwrap();
        let kv = Tensor::randn(0f32, 1.0, (2, images, heads, padded, dh), &dev).unwrap();
        for (dtype, tolerance) in [
            (DType::F32, 1e-5f32),
            (DType::BF16, 2f32.powi(-7)),
            (DType::F16, 2f32.powi(-7)),
        ] {
            let cast = |t: &Tensor| t.to_dtype(dtype).unwrap();
            let wide = |t: &Tensor| cast(t).to_dtype(DType::F32).unwrap();
            // The reference sees the same rounded inputs: the error measured is the kernel's.
            let expected = composed_cross_attention(&wide(&q), &wide(&bias), &wide(&kv), g, valid);
            let got = ops
                .cross_attention_step(&cast(&q), &cast(&bias), &cast(&kv), g, valid)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let err = rel_max_error(&got, &expected);
            eprintln!(
                "cross-attention step {dtype:?} images {images} g {g} keys {valid}: {err:.2e}"
            );
            assert!(
                err < tolerance,
                "{dtype:?} images {images} g {g} keys {valid}: {err:e}"
            );
        }
    }
}
