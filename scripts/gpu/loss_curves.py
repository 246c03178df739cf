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
        write_plain_svg(svg, ours, theirs)
        print(f"\nplot (plain SVG, no matplotlib): {svg}")


def write_plain_svg(path, ours, theirs, w=800, h=420, pad=50):
    """Both curves as polylines on a log-scale loss axis, without matplotlib."""
    import math
    n = len(ours)
    lo = math.log10(min(min(ours), min(theirs)))
    hi = math.log10(max(max(ours), max(theirs)))
    x = lambda i: pad + (w - 2 * pad) * i / max(n - 1, 1)
    y = lambda v: h - pad - (h - 2 * pad) * (math.log10(v) - lo) / max(hi - lo, 1e-9)
    line = lambda vs: " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(vs))
    ticks = [t for t in (2, 3, 4, 5, 7, 10, 15, 20, 25, 30) if lo <= math.log10(t) <= hi]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{w / 2}" y="20" text-anchor="middle">BLIP-base, batch 32, same data and order (H200, bf16)</text>',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
             f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">step (1..{n})</text>']
    for t in ticks:
        parts.append(f'<text x="{pad - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t}</text>')
        parts.append(f'<line x1="{pad}" y1="{y(t):.1f}" x2="{w - pad}" y2="{y(t):.1f}" stroke="#ddd"/>')
    for i in range(0, n, max(n // 6, 1)):
        parts.append(f'<text x="{x(i):.1f}" y="{h - pad + 16}" text-anchor="middle">{i + 1}</text>')
    parts.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.2" points="{line(ours)}"/>')
    parts.append(f'<polyline fill="none" stroke="#ff7f0e" stroke-width="1.2" stroke-opacity="0.8" points="{line(theirs)}"/>')
    parts.append(f'<text x="{w - pad}" y="{pad}" text-anchor="end" fill="#1f77b4">vlmrun train (explicit backward)</text>')
    parts.append(f'<text x="{w - pad}" y="{pad + 16}" text-anchor="end" fill="#ff7f0e">PyTorch AMP eager</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts))


if __name__ == "__main__":
    main()
