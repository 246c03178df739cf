#!/usr/bin/env python3
"""Per-parameter gradient agreement table (docs/training.md): step-1 gradients dumped by
`vlmrun train --dump-grads` and scripts/gpu/pytorch_train.py --dump-grads on the same weights, batch
and recipe, compared pairwise. For each parameter: max |a - b| / max |b| (b = the reference of the
pair), with max |b| floored at 1e-3 of the largest gradient entry of the whole reference: the
attention key biases have an exactly-zero gradient in exact arithmetic (softmax ignores a constant
added to a query's scores), so both sides hold rounding noise there and are compared against the
model's gradient scale, not against that noise (as tests/train_grads.rs does). Prints a markdown summary (worst, median, and the parameters above --flag) and writes the
full table as JSON. A parameter missing from a dump, or all-zero where the reference is not, is
reported as missing: the check that no parameter stops receiving gradient.

Usage: grad_table.py OUT.json PAIR... with PAIR = label:A.safetensors:B.safetensors
Needs torch and safetensors (the GPU machine has both).
"""

import json
import statistics
import sys

import torch
from safetensors.torch import load_file


def load(path):
    tensors = load_file(path)
    tensors.pop("__loss__", None)
    return {k: v.float() for k, v in tensors.items()}


def main():
    out, pairs = sys.argv[1], sys.argv[2:]
    report = {}
    flag = 5e-2
    print("| comparison | parameters | missing | worst (parameter) | median | p90 | above 5e-2 |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for pair in pairs:
        label, a_path, b_path = pair.split(":")
        a, b = load(a_path), load(b_path)
        rows, missing = {}, []
        floor = 1e-3 * max(t.abs().max().item() for t in b.values())
        for name, ref in sorted(b.items()):
            ours = a.get(name)
            ref_max = ref.abs().max().item()
            if name.endswith("key.bias"):
                pass  # kept: compared against the floor like every other tensor
            if ours is None or (ours.abs().max().item() == 0 and ref_max > floor * 1e-3):
                missing.append(name)
                continue
            ours = ours.reshape(ref.shape)
            rows[name] = (ours - ref).abs().max().item() / max(ref_max, floor, 1e-30)
        extra = sorted(set(a) - set(b))
        errors = sorted(rows.values())
        worst = max(rows, key=rows.get) if rows else "-"
        p90 = errors[int(0.9 * (len(errors) - 1))] if errors else float("nan")
        above = [n for n, e in rows.items() if e > flag]
        print(f"| {label} | {len(rows)} | {len(missing)} | {rows.get(worst, float('nan')):.2e} ({worst}) "
              f"| {statistics.median(errors) if errors else float('nan'):.2e} | {p90:.2e} | {len(above)} |")
        report[label] = {"a": a_path, "b": b_path, "errors": rows, "missing": missing, "extra": extra,
                         "above_flag": above}
    with open(out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
