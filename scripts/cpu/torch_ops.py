#!/usr/bin/env python3
"""PyTorch's CPU time for the ops of examples/cpu_ops.rs at the same BLIP-base shapes (torch.nn.functional
.linear = addmm with bias, gelu, bmm, softmax, the head-split copy), median of 5 after a warm-up.
Pinned: torch==2.11.0 (pytorch_blip.py's pin). No network.

    python scripts/cpu/torch_ops.py [batch]
"""
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def median_ms(f):
    f()
    ms = []
    for _ in range(5):
        s = time.perf_counter()
        f()
        ms.append((time.perf_counter() - s) * 1e3)
    return statistics.median(ms)


def main():
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    tokens = 577 * batch
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {batch} ({tokens} vision rows)\n")
    print("| op | shape (m x k -> n) | ms | GFLOP/s |")
    print("|---|---|---:|---:|")

    def row(name, m, k, n, ms):
        print(f"| {name} | {m} x {k} -> {n} | {ms:.2f} | {2 * m * k * n / ms / 1e6:.0f} |")

    with torch.inference_mode():
        for name, k, n in [("vision qkv", 768, 2304), ("vision out proj", 768, 768),
                           ("vision fc1", 768, 3072), ("vision fc2", 3072, 768)]:
            x, w, b = torch.randn(tokens, k), torch.randn(n, k) * 0.02, torch.randn(n) * 0.02
            row(f"{name}: linear (addmm)", tokens, k, n, median_ms(lambda: F.linear(x, w, b)))
            if name == "vision fc1":
                row("vision fc1 + GELU", tokens, k, n, median_ms(lambda: F.gelu(F.linear(x, w, b))))
        heads = 12 * batch
        q, kk = torch.randn(heads, 577, 64), torch.randn(heads, 577, 64)
        scores = q @ kk.transpose(1, 2)
        row("attention q k^T (per layer)", heads * 577, 64, 577, median_ms(lambda: q @ kk.transpose(1, 2)))
        print(f"| attention softmax (per layer) | {heads} x 577 x 577 | {median_ms(lambda: scores.softmax(-1)):.2f} | |")
        row("attention probs v (per layer)", heads * 577, 577, 64, median_ms(lambda: scores @ q))
        qkv = torch.randn(batch, 577, 3 * 768)
        ms = median_ms(lambda: qkv.reshape(batch, 577, 3, 12, 64).permute(2, 0, 3, 1, 4).contiguous())
        print(f"| attention head split copy (per layer) | {batch} x 577 x 2304 | {ms:.2f} | |")
        for name, k, n in [("decode self/cross q,k,v,o", 768, 768), ("decode fc1", 768, 3072),
                           ("decode fc2", 3072, 768), ("decode LM head", 768, 30524)]:
            x, w = torch.randn(batch, k), torch.randn(n, k) * 0.02
            row(f"{name}: f32 linear", batch, k, n, median_ms(lambda: F.linear(x, w)))


if __name__ == "__main__":
    main()
