#!/usr/bin/env python3
"""Loss curves of `vlmrun train` (metrics.jsonl) and scripts/gpu/pytorch_train.py (its JSON's
"losses") on the same data and order: an SVG plot (matplotlib when it imports) and a markdown
summary of the difference, per step and over 20-step moving averages.

Usage: loss_curves.py VLMRUN_METRICS.jsonl PYTORCH.json OUT.svg
"""

import json
import statistics
import sys


def moving(xs, w=20):
    return [statistics.fmean(xs[max(0, i - w + 1):i + 1]) for i in range(len(xs))]


def main():
    metrics, pytorch, svg = sys.argv[1:4]
    ours = [json.loads(l) for l in open(metrics) if '"step"' in l]
    ours = [r["loss"] for r in ours if "loss" in r]
    theirs = json.load(open(pytorch))["losses"]
    n = min(len(ours), len(theirs))
    ours, theirs = ours[:n], theirs[:n]
    diff = [abs(a - b) for a, b in zip(ours, theirs)]
    ma, mb = moving(ours), moving(theirs)
    mdiff = [abs(a - b) for a, b in zip(ma, mb)]
    rel = [d / max(abs(b), 1e-9) for d, b in zip(mdiff, mb)]
    print(f"steps compared: {n}")
    print(f"| | vlmrun | PyTorch |\n|---|---:|---:|")
    for i in [0, 9, 49, 99, 199, n - 1]:
        if i < n:
            print(f"| loss at step {i + 1} | {ours[i]:.4f} | {theirs[i]:.4f} |")
    print(f"\nper-step |difference|: median {statistics.median(diff):.4f}, max {max(diff):.4f}")
    print(f"20-step moving averages: max |difference| {max(mdiff):.4f} (max relative {max(rel):.2%})")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.plot(range(1, n + 1), ours, label="vlmrun train (explicit backward, bf16)", lw=1)
        ax.plot(range(1, n + 1), theirs, label="PyTorch AMP eager (bf16 autocast)", lw=1, alpha=0.8)
        ax.set_xlabel("step"); ax.set_ylabel("loss (label-smoothed CE)"); ax.set_yscale("log")
        ax.set_title("BLIP-base, batch 32, same data and order, random weights")
        ax.legend(); fig.tight_layout(); fig.savefig(svg)
        print(f"\nplot: {svg}")
    except ImportError:
        print("\n(matplotlib not available: no plot)")


if __name__ == "__main__":
    main()
