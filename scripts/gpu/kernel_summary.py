#!/usr/bin/env python3
"""Groups an Nsight Compute raw CSV (one row per kernel launch, gpu__time_duration.sum) by kernel
kind and prints a markdown table: launches, total ms, share, mean us per launch; then the top kernels.
Usage: kernel_summary.py ncu.csv"""
import csv
import re
import sys
from collections import defaultdict

KINDS = [
    ("GEMM (cuBLAS/CUTLASS)", r"gemm|sm90_xmma|cutlass|nvjet|cublas|splitK"),
    ("vlmrun fused: attention", r"attention|softmax_rows|cross_attn|self_attn"),
    ("vlmrun fused: norm/residual/bias", r"layer_norm|bias_|residual|embed"),
    ("vlmrun fused: heads split/merge, patchify", r"split_heads|merge_heads|patchify|vision_embed"),
    ("vlmrun fused: search (top-k, argmax, log-softmax)", r"topk|argmax|log_softmax|beam"),
    ("candle: softmax/reduce", r"softmax|reduce|fast_max|fast_min|fast_sum|argm"),
    ("candle: copy/cast/strided", r"copy|cast|ucopy|where|index_select|gather|fill|affine|transpose"),
    ("candle: elementwise", r"badd|bmul|bsub|bdiv|gelu|unary|binary|exp|sqrt|u[a-z]+_"),
]


def kind(name: str) -> str:
    for label, pattern in KINDS:
        if re.search(pattern, name, re.I):
            return label
    return "other"


def main() -> None:
    rows = list(csv.reader(open(sys.argv[1], newline="")))
    header_at = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
    header = rows[header_at]
    name_col, time_col = header.index("Kernel Name"), header.index("gpu__time_duration.sum")
    unit = rows[header_at + 1][time_col] if len(rows) > header_at + 1 else "ns"
    scale = {"ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0, "nsecond": 1e-6}.get(unit, 1e-6)
    by_kind, by_name = defaultdict(lambda: [0, 0.0]), defaultdict(lambda: [0, 0.0])
    for r in rows[header_at + 2:]:
        try:
            ms = float(r[time_col].replace(",", "")) * scale
        except (ValueError, IndexError):
            continue
        for table, key in ((by_kind, kind(r[name_col])), (by_name, r[name_col][:90])):
            table[key][0] += 1
            table[key][1] += ms
    total = sum(v[1] for v in by_kind.values())
    print(f"GPU time of every kernel: {total:.2f} ms over {sum(v[0] for v in by_kind.values())} launches\n")
    print("| kind | launches | ms | share | mean us |\n|---|---:|---:|---:|---:|")
    for key, (n, ms) in sorted(by_kind.items(), key=lambda kv: -kv[1][1]):
        print(f"| {key} | {n} | {ms:.2f} | {100 * ms / total:.1f}% | {1e3 * ms / n:.1f} |")
    print("\n| top kernels | launches | ms | mean us |\n|---|---:|---:|---:|")
    for key, (n, ms) in sorted(by_name.items(), key=lambda kv: -kv[1][1])[:20]:
        print(f"| `{key}` | {n} | {ms:.2f} | {1e3 * ms / n:.1f} |")


if __name__ == "__main__":
    main()
