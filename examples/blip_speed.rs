//! Speed probe for the BLIP model and generation on random weights (no files needed):
//! vision encoder alone and full `generate`, per batch size, median of a few runs after warm-up,
//! with device synchronisation around every timed region.
//!
//! `cargo run --release --features cuda --example blip_speed -- [f16|bf16|f32] [base|large] [beams] [new_tokens] [batch...]`
//! Greedy with `min_length = max_length` forces exactly `new_tokens` generated tokens, like the
//! PyTorch baseline (`max_new_tokens = min_new_tokens = 20`).

use std::time::Instant;

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use vlmrun::generate::{generate, GenerationConfig};
use vlmrun::models::blip::{BlipConfig, BlipForConditionalGeneration};

/// Hands out N(0, 0.02^2) tensors of whatever shape the model asks for.
struct RandomWeights;

impl candle_nn::var_builder::SimpleBackend for RandomWeights {
    fn get(&self, s: Shape, _: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        Tensor::randn(0f32, 0.02, s, dev)?.to_dtype(dtype)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("no shape for {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        false
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn time<T>(device: &Device, f: impl Fn() -> T) -> (f64, T) {
    device.synchronize().unwrap();
    let start = Instant::now();
    let out = f();
    device.synchronize().unwrap();
    (start.elapsed().as_secs_f64(), out)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("probe") {
        let device = if candle_core::utils::cuda_is_available() {
            Device::new_cuda(0)?
        } else {
            Device::Cpu
        };
        let batch = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
        probe_vision_layer(&device, DType::BF16, batch)?;
        return Ok(());
    }
    let dtype = match args.first().map(String::as_str).unwrap_or("bf16") {
        "f16" => DType::F16,
        "f32" => DType::F32,
        _ => DType::BF16,
    };
    let size = args.get(1).cloned().unwrap_or_else(|| "base".into());
    let beams: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let new_tokens: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20);
    let batches: Vec<usize> = args.iter().skip(4).filter_map(|s| s.parse().ok()).collect();
    let batches = if batches.is_empty() {
        vec![1, 8, 64]
    } else {
        batches
    };

    let json = match size.as_str() {
        "large" => {
            r#"{"text_config": {"num_attention_heads": 12},
            "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16}}"#
        }
        _ => r#"{"text_config": {"num_attention_heads": 12}}"#,
    };
    let cfg = BlipConfig::from_json_str(json)?;
    let device = if candle_core::utils::cuda_is_available() {
        Device::new_cuda(0)?
    } else {
        Device::Cpu
    };
    let vb = VarBuilder::from_backend(Box::new(RandomWeights), dtype, device.clone());
    let model = BlipForConditionalGeneration::new(&cfg, vb)?;
    let gen = GenerationConfig {
        max_length: 1 + new_tokens,
        min_length: 1 + new_tokens,
        num_beams: beams,
        ..GenerationConfig::default()
    };
    println!(
        "device {device:?} dtype {dtype:?} model {size} beams {beams} new_tokens {new_tokens}"
    );
    let runs = if device.is_cuda() { 5 } else { 1 };
    for &batch in &batches {
        let s = cfg.vision_config.image_size;
        let pixels = Tensor::randn(0f32, 1.0, (batch, 3, s, s), &device)?;
        // warm-up (kernel loading, allocator pools)
        let _ = generate(&model, &pixels, &[], &gen)?;
        let mut vision = Vec::new();
        let mut full = Vec::new();
        let mut lengths = 0;
        for _ in 0..runs {
            let (t, _) = time(&device, || model.image_embeds(&pixels).unwrap());
            vision.push(t);
            let (t, out) = time(&device, || generate(&model, &pixels, &[], &gen).unwrap());
            full.push(t);
            lengths = out.iter().map(Vec::len).max().unwrap_or(0);
        }
        if std::env::var_os("VLMRUN_PROFILE").is_some() {
            // One more generate between cuProfilerStart/Stop (for `ncu --profile-from-start off`).
            #[cfg(feature = "cuda")]
            // SAFETY: plain driver calls without arguments.
            unsafe {
                candle_core::cuda_backend::cudarc::driver::sys::cuProfilerStart();
            }
            let _ = generate(&model, &pixels, &[], &gen)?;
            device.synchronize()?;
            #[cfg(feature = "cuda")]
            // SAFETY: as above.
            unsafe {
                candle_core::cuda_backend::cudarc::driver::sys::cuProfilerStop();
            }
        }
        let (v, g) = (median(vision), median(full));
        println!(
            "batch {batch:>3}: generate {:8.2} ms = {:8.1} images/s | vision {:7.2} ms = {:8.1} images/s | decode {:.3} ms/step (len {lengths})",
            g * 1e3,
            batch as f64 / g,
            v * 1e3,
            batch as f64 / v,
            (g - v) * 1e3 / new_tokens as f64
        );
    }
    Ok(())
}

/// Times the pieces of one ViT-base layer at `batch` images (synchronising after each), to see
/// where the vision encoder spends its time.
pub fn probe_vision_layer(device: &Device, dtype: DType, batch: usize) -> Result<()> {
    let (n, d, h, dh, inter) = (577usize, 768usize, 12usize, 64usize, 3072usize);
    let rows = batch * n;
    let x = Tensor::randn(0f32, 1.0, (rows, d), device)?.to_dtype(dtype)?;
    let w_qkv = Tensor::randn(0f32, 0.02, (3 * d, d), device)?.to_dtype(dtype)?;
    let b_qkv = Tensor::randn(0f32, 0.02, 3 * d, device)?.to_dtype(dtype)?;
    let w_fc1 = Tensor::randn(0f32, 0.02, (inter, d), device)?.to_dtype(dtype)?;
    let gamma = Tensor::ones(d, dtype, device)?;
    let beta = Tensor::zeros(d, dtype, device)?;
    let reps = 5;
    let t = |name: &str, f: &dyn Fn() -> Result<Tensor>| -> Result<Tensor> {
        let out = f()?;
        device.synchronize()?;
        let start = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        device.synchronize()?;
        println!(
            "  {name:<40} {:8.3} ms",
            start.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
        Ok(out)
    };
    println!("one ViT-base layer's pieces, batch {batch}, {dtype:?}:");
    t("layer_norm (rows, 768)", &|| {
        candle_nn::ops::layer_norm(&x, &gamma, &beta, 1e-5)
    })?;
    let qkv = t("matmul qkv (rows,768)x(768,2304)", &|| {
        x.matmul(&w_qkv.t()?)
    })?;
    let qkv = t("broadcast_add bias (rows,2304)", &|| {
        qkv.broadcast_add(&b_qkv)
    })?;
    let heads = t("permute to (3,B,H,N,Dh) contiguous", &|| {
        qkv.reshape((batch, n, 3, h, dh))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()
    })?;
    let (q, k, v) = (heads.get(0)?, heads.get(1)?, heads.get(2)?);
    let scores = t("matmul q k^T (B*H,577,577)", &|| q.matmul(&k.t()?))?;
    let kt = k.t()?.contiguous()?;
    t("matmul q kT contiguous", &|| q.matmul(&kt))?;
    let probs = t("softmax_last_dim", &|| {
        candle_nn::ops::softmax_last_dim(&scores)
    })?;
    let ctx = t("matmul probs v", &|| probs.matmul(&v))?;
    t("transpose(1,2) reshape (B,N,D)", &|| {
        ctx.transpose(1, 2)?.reshape((batch, n, d))
    })?;
    let h1 = t("matmul fc1 (rows,768)x(768,3072)", &|| {
        x.matmul(&w_fc1.t()?)
    })?;
    t("gelu_erf (rows,3072)", &|| h1.gelu_erf())?;
    t("add (rows,768)", &|| &x + &x)?;

    // Per-op overhead at decode sizes: issue 1000 small ops, time the issuing and the total.
    let small = Tensor::randn(0f32, 1.0, (1, d), device)?.to_dtype(dtype)?;
    for (name, f) in [
        (
            "tiny add (1,768)",
            &(|| &small + &small) as &dyn Fn() -> Result<Tensor>,
        ),
        ("gemv (1,768)x(768,2304)", &|| small.matmul(&w_qkv.t()?)),
        ("layer_norm (1,768)", &|| {
            candle_nn::ops::layer_norm(&small, &gamma, &beta, 1e-5)
        }),
    ] {
        f()?;
        device.synchronize()?;
        let start = Instant::now();
        for _ in 0..1000 {
            f()?;
        }
        let issued = start.elapsed().as_secs_f64();
        device.synchronize()?;
        let total = start.elapsed().as_secs_f64();
        println!(
            "  1000 x {name:<28} issue {:6.2} us/op, done {:6.2} us/op",
            issued * 1e3,
            total * 1e3
        );
    }
    Ok(())
}
