//! Quantization at load (the projections read on the CPU in f32 and quantized there) against
//! in-situ quantization of the loaded dense model (tiny BLIP, CPU, f32): the same blocks, the
//! same logits; and how a quantized projection multiplies (kernel vs dequantized weight).

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use vlmrun::models::blip::{load_model, load_model_with, BlipForConditionalGeneration};
use vlmrun::models::linear::{Linear, QuantizedMatmul};

fn tiny_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny-blip")
}

/// Name -> (format, quantized bytes) of every projection.
fn blocks(model: &mut BlipForConditionalGeneration) -> BTreeMap<String, (GgmlDType, Vec<u8>)> {
    let mut out = BTreeMap::new();
    model
        .for_each_projection(&mut |name, linear| {
            let q = linear
                .qtensor()
                .expect("every tiny projection is quantized");
            out.insert(name.to_string(), (q.dtype(), q.data()?.to_vec()));
            Ok(())
        })
        .unwrap();
    out
}

fn first_logits(model: &BlipForConditionalGeneration) -> Tensor {
    // Two deterministic "images" (a ramp and its negation) and the decoder input [bos].
    let n = 3 * 64 * 64;
    let ramp: Vec<f32> = (0..n).map(|i| (i % 97) as f32 / 48.0 - 1.0).collect();
    let neg: Vec<f32> = ramp.iter().map(|v| -v).collect();
    let pixels = Tensor::from_vec([ramp, neg].concat(), (2, 3, 64, 64), &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[30522u32], [30522u32]], &Device::Cpu).unwrap();
    model.forward(&pixels, &ids).unwrap()
}

#[test]
fn load_time_quantization_matches_in_situ() {
    for format in [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4K] {
        let mut at_load = load_model_with(&tiny_dir(), DType::F32, &Device::Cpu, Some(format))
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        let mut in_situ = load_model(&tiny_dir(), DType::F32, &Device::Cpu).unwrap();
        in_situ.quantize(format).unwrap();
        assert_eq!(at_load.quantized(), Some(format));
        let (a, b) = (blocks(&mut at_load), blocks(&mut in_situ));
        assert_eq!(a.len(), 27, "tiny BLIP has 27 projections");
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{format:?}: projection names"
        );
        for (name, block) in &a {
            assert!(block == &b[name], "{format:?}: {name} differs");
        }
        let diff = (first_logits(&at_load) - first_logits(&in_situ))
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0, "{format:?}: logits differ");
    }
}

#[test]
fn dense_load_has_no_quantized_projection() {
    let mut model = load_model_with(&tiny_dir(), DType::F32, &Device::Cpu, None).unwrap();
    assert_eq!(model.quantized(), None);
    let mut count = 0;
    model
        .for_each_projection(&mut |_, linear| {
            assert!(linear.qtensor().is_none());
            count += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(count, 27);
}

/// The dequantized path multiplies by exactly the dequantized weight (no activation rounding);
/// the kernel path rounds the activations to 8 bits, so it differs from it, but only a little.
#[test]
fn quantized_matmul_paths() {
    let (out_f, in_f, rows) = (48usize, 256usize, 5usize);
    let weight: Vec<f32> = (0..out_f * in_f)
        .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 0.2)
        .collect();
    let weight = Tensor::from_vec(weight, (out_f, in_f), &Device::Cpu).unwrap();
    let xs: Vec<f32> = (0..rows * in_f)
        .map(|i| ((i * 104_729 % 997) as f32 / 997.0 - 0.5) * 2.0)
        .collect();
    let xs = Tensor::from_vec(xs, (rows, in_f), &Device::Cpu).unwrap();
    for format in [GgmlDType::Q8_0, GgmlDType::Q4K] {
        let mut linear = Linear::from_parts(weight.clone(), None)
            .quantize(format)
            .unwrap();
        let dequantized = linear.qtensor().unwrap().dequantize(&Device::Cpu).unwrap();
        let exact = xs.matmul(&dequantized.t().unwrap()).unwrap();
        linear.set_quantized_matmul(QuantizedMatmul::WEIGHT_ONLY);
        let weight_only = linear.forward(&xs).unwrap();
        linear.set_quantized_matmul(QuantizedMatmul::KERNEL);
        let kernel = linear.forward(&xs).unwrap();
        let max = |t: Tensor| {
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let scale = max(exact.clone());
        // Same products, possibly summed in another order: f32 rounding only.
        let weight_only_err = max((&weight_only - &exact).unwrap()) / scale;
        assert!(weight_only_err < 1e-5, "{format:?}: {weight_only_err}");
        // 8-bit activations: visible, but within a few percent.
        let kernel_err = max((&kernel - &exact).unwrap()) / scale;
        assert!(
            kernel_err > 1e-5 && kernel_err < 5e-2,
            "{format:?}: kernel error {kernel_err}"
        );
        // The default is weight-only, whatever the row count.
        assert!(QuantizedMatmul::default().dequantizes(1));
    }
}
