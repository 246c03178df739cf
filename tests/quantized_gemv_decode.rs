//! The CUDA quantized GEMV (`qgemv_*` in src/kernels/fused/kernels.cu) decodes GGML blocks in
//! registers. CI has no GPU, so this test compiles the kernel file's block decoders
//! (`BlockQ8_0`, `BlockQ4_0`, `BlockQ4K`, `BlockQ6K`, verbatim) as host C++ with the machine's C++ compiler
//! and checks every weight they decode against candle's own CPU dequantization of the same bytes.
//! The GPU run of the whole kernel is in docs/runs (fidelity against the dequantizing path).

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

const KERNELS: &str = include_str!("../src/kernels/fused/kernels.cu");

/// The decoder structs of kernels.cu: from `struct BlockQ8_0` up to the activation loaders.
fn decoder_source() -> &'static str {
    let start = KERNELS
        .find("struct BlockQ8_0")
        .expect("kernels.cu no longer defines `struct BlockQ8_0`: update this test");
    let end = KERNELS[start..]
        .find("// 8 consecutive activations")
        .expect("kernels.cu: the `// 8 consecutive activations` marker after the decoders is gone");
    &KERNELS[start..start + end]
}

/// Host harness: `decode FORMAT ROWS IN BYTES_FILE OUT_FILE` decodes every row 8 weights at a
/// time, as each GPU lane does, and writes the f32 weights.
const HARNESS: &str = r#"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#define __device__
#define __forceinline__ inline
static float half_at(const unsigned char* p) {
    unsigned h = (unsigned)p[0] | ((unsigned)p[1] << 8);
    unsigned sign = (h >> 15) & 1, exp = (h >> 10) & 31, man = h & 1023;
    float mag;
    if (exp == 0) mag = (float)man * (1.0f / 16777216.0f);  // subnormal: man * 2^-24
    else if (exp == 31) mag = man ? 0.0f / 0.0f : 1.0f / 0.0f;
    else { unsigned bits = ((exp + 112) << 23) | (man << 13); memcpy(&mag, &bits, 4); }
    return sign ? -mag : mag;
}
DECODERS
template <typename B> void run(int rows, int in, const unsigned char* bytes, float* out) {
    for (int r = 0; r < rows; ++r)
        for (int k = 0; k < in; k += 8)
            B::decode8(bytes + (size_t)r * (in / B::QK) * B::BYTES, k, out + (size_t)r * in + k);
}
int main(int argc, char** argv) {
    if (argc != 6) return 2;
    int rows = atoi(argv[2]), in = atoi(argv[3]);
    FILE* f = fopen(argv[4], "rb");
    if (!f) return 3;
    std::vector<unsigned char> bytes(1 << 24);
    fread(bytes.data(), 1, bytes.size(), f);
    fclose(f);
    std::vector<float> out((size_t)rows * in);
    if (!strcmp(argv[1], "q8_0")) run<BlockQ8_0>(rows, in, bytes.data(), out.data());
    else if (!strcmp(argv[1], "q4_0")) run<BlockQ4_0>(rows, in, bytes.data(), out.data());
    else if (!strcmp(argv[1], "q4k")) run<BlockQ4K>(rows, in, bytes.data(), out.data());
    else if (!strcmp(argv[1], "q6k")) run<BlockQ6K>(rows, in, bytes.data(), out.data());
    else return 4;
    FILE* o = fopen(argv[5], "wb");
    if (!o) return 5;
    fwrite(out.data(), 4, out.size(), o);
    fclose(o);
    return 0;
}
"#;

fn compile_harness(dir: &Path) -> PathBuf {
    let source = dir.join("decode.cpp");
    std::fs::write(&source, HARNESS.replace("DECODERS", decoder_source())).unwrap();
    let exe = dir.join("decode");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let out = Command::new(&cxx)
        .args(["-O1", "-std=c++14", "-o"])
        .arg(&exe)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("running the C++ compiler `{cxx}` (set CXX): {e}"));
    assert!(
        out.status.success(),
        "compiling kernels.cu's decoders as host C++ failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

#[test]
fn cuda_block_decoders_match_candle_dequantization() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path());
    let (rows, in_features) = (6, 768);
    // Weights spread like a trained projection's, plus a few outliers so block scales vary.
    let weights = (Tensor::randn(0f32, 0.05, (rows, in_features), &Device::Cpu).unwrap()
        * Tensor::rand(0.2f32, 3.0, (rows, in_features), &Device::Cpu).unwrap())
    .unwrap();
    for (format, name) in [
        (GgmlDType::Q8_0, "q8_0"),
        (GgmlDType::Q4_0, "q4_0"),
        (GgmlDType::Q4K, "q4k"),
        (GgmlDType::Q6K, "q6k"),
    ] {
        let quantized = QTensor::quantize(&weights, format).unwrap();
        let bytes_file = dir.path().join(format!("{name}.bin"));
        std::fs::write(&bytes_file, quantized.data().unwrap()).unwrap();
        let out_file = dir.path().join(format!("{name}.f32"));
        let status = Command::new(&exe)
            .args([name, &rows.to_string(), &in_features.to_string()])
            .arg(&bytes_file)
            .arg(&out_file)
            .status()
            .unwrap();
        assert!(status.success(), "{name}: harness exited with {status}");
        let decoded: Vec<f32> = std::fs::read(&out_file)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let expected: Vec<f32> = quantized
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(decoded.len(), expected.len(), "{name}: weight count");
        let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
        let max_err = decoded
            .iter()
            .zip(&expected)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("{name}: max |decoded - candle| = {max_err:e} (weights up to {scale:e})");
        // Both compute d * q (q4k: d * scale * q - dmin * min; q6k: d * scale * q) in f32 from
        // the same f16 scales;
        // only the order of a multiply-add may differ: allow a few f32 ulps of the largest weight.
        assert!(
            max_err <= 4.0 * f32::EPSILON * scale,
            "{name}: decoded weights differ from candle's by {max_err:e}"
        );
    }
}
