//! CPU per-op timings at BLIP-base shapes (ViT-B/16 at 384 px: 577 tokens, width 768, MLP 3072,
//! 12 heads of 64; text decoder rows = batch): what each projection and attention op costs in
//! candle's composed form and in vlmrun's CPU paths (fused bias/GELU GEMM, weight-only quantized
//! GEMV), median of 5 after a warm-up. The PyTorch counterpart is scripts/cpu/torch_ops.py.
//!
//! `cargo run --release --example cpu_ops -- [batch]` (docs/performance.md, "CPU profile")

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Result, Tensor};
use vlmrun::models::{cpu_dense, cpu_qgemv};

fn median_ms(f: impl Fn() -> Result<Tensor>) -> Result<f64> {
    f()?;
    let mut ms = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        f()?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[2])
}

fn main() -> Result<()> {
    let batch: usize = std::env::args()
        .nth(1)
        .and_then(|b| b.parse().ok())
        .unwrap_or(1);
    let dev = Device::Cpu;
    let tokens = 577 * batch;
    println!(
        "candle threads {}, batch {batch} ({tokens} vision rows)\n",
        candle_core::utils::get_num_threads()
    );
    println!("| op | shape (m x k -> n) | ms | GFLOP/s |");
    println!("|---|---|---:|---:|");
    let row = |name: &str, m: usize, k: usize, n: usize, ms: f64| {
        let gflops = 2.0 * (m * k * n) as f64 / ms / 1e6;
        println!("| {name} | {m} x {k} -> {n} | {ms:.2} | {gflops:.0} |");
    };
    for (name, k, n) in [
        ("vision qkv", 768, 2304),
        ("vision out proj", 768, 768),
        ("vision fc1", 768, 3072),
        ("vision fc2", 3072, 768),
    ] {
        let x = Tensor::randn(0f32, 1.0, (tokens, k), &dev)?;
        let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
        let b = Tensor::randn(0f32, 0.02, n, &dev)?;
        let composed = median_ms(|| x.matmul(&w.t()?)?.broadcast_add(&b))?;
        row(
            &format!("{name}: matmul + bias (composed)"),
            tokens,
            k,
            n,
            composed,
        );
        let fused = median_ms(|| cpu_dense::linear(&x, &w, Some(&b), false))?;
        row(&format!("{name}: fused bias GEMM"), tokens, k, n, fused);
        if name == "vision fc1" {
            let composed = median_ms(|| x.matmul(&w.t()?)?.broadcast_add(&b)?.gelu_erf())?;
            row("vision fc1 + GELU (composed)", tokens, k, n, composed);
            let fused = median_ms(|| cpu_dense::linear(&x, &w, Some(&b), true))?;
            row("vision fc1 + GELU (fused)", tokens, k, n, fused);
        }
        let q = QTensor::quantize(&w, GgmlDType::Q8_0)?;
        let deq = median_ms(|| x.matmul(&cpu_qgemv::dequantize(&q)?.t()?))?;
        row(
            &format!("{name}: q8_0 dequantize + matmul"),
            tokens,
            k,
            n,
            deq,
        );
        let kernel = QMatMul::from_qtensor(q)?;
        let ms = median_ms(|| kernel.forward(&x))?;
        row(
            &format!("{name}: q8_0 candle kernel (8-bit x)"),
            tokens,
            k,
            n,
            ms,
        );
    }
    // Attention at one layer: (B*12) heads of (577, 64).
    let heads = 12 * batch;
    let q = Tensor::randn(0f32, 1.0, (heads, 577, 64), &dev)?;
    let k = Tensor::randn(0f32, 1.0, (heads, 577, 64), &dev)?;
    let scores = q.matmul(&k.t()?)?;
    let ms = median_ms(|| q.matmul(&k.t()?))?;
    row("attention q k^T (per layer)", heads * 577, 64, 577, ms);
    let ms = median_ms(|| candle_nn::ops::softmax_last_dim(&scores))?;
    println!("| attention softmax (per layer) | {heads} x 577 x 577 | {ms:.2} | |");
    let ms = median_ms(|| scores.matmul(&q))?;
    row("attention probs v (per layer)", heads * 577, 577, 64, ms);
    let qkv = Tensor::randn(0f32, 1.0, (batch, 577, 3 * 768), &dev)?;
    let ms = median_ms(|| {
        qkv.reshape((batch, 577, 3, 12, 64))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()
    })?;
    println!("| attention head split copy (per layer) | {batch} x 577 x 2304 | {ms:.2} | |");
    // Decode: `batch` rows through the text decoder's projections.
    for (name, k, n) in [
        ("decode self/cross q,k,v,o", 768, 768),
        ("decode fc1", 768, 3072),
        ("decode fc2", 3072, 768),
        ("decode LM head", 768, 30524),
    ] {
        let x = Tensor::randn(0f32, 1.0, (batch, k), &dev)?;
        let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
        let ms = median_ms(|| x.matmul(&w.t()?))?;
        row(&format!("{name}: f32 matmul"), batch, k, n, ms);
        let q = QTensor::quantize(&w, GgmlDType::Q8_0)?;
        let ms = median_ms(|| x.matmul(&q.dequantize(&dev)?.t()?))?;
        row(
            &format!("{name}: q8_0 dequantize per call (before)"),
            batch,
            k,
            n,
            ms,
        );
        let ms = median_ms(|| cpu_qgemv::quantized_gemv(&x, &q))?;
        row(&format!("{name}: q8_0 weight-only GEMV"), batch, k, n, ms);
        let kernel = QMatMul::from_qtensor(q)?;
        let ms = median_ms(|| kernel.forward(&x))?;
        row(
            &format!("{name}: q8_0 candle kernel (8-bit x)"),
            batch,
            k,
            n,
            ms,
        );
        let q4 = QTensor::quantize(&w, GgmlDType::Q4K)?;
        let ms = median_ms(|| cpu_qgemv::quantized_gemv(&x, &q4))?;
        row(&format!("{name}: q4k weight-only GEMV"), batch, k, n, ms);
    }
    Ok(())
}
