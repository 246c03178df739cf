#!/usr/bin/env bash
# `vlmrun train` beside PyTorch AMP on the H100 (docs/training.md), in one device call: BLIP-base
# shapes with the random weights of benches/reference/pytorch_blip.py (written once, read by both),
# 64 synthetic 640x480 JPEGs with two captions each, batch 32, bf16 compute with f32 master weights,
# the same recipe (scripts/gpu/pytorch_train.py's docstring). Each side: warm-up steps, then the
# median step time of the measured steps, and peak GPU memory (NVML).
# Expects .device-bin/{vlmrun,vlmrun-cuda}.xz. Knobs: BATCH=32 WARMUP=3 STEPS=10 PRECISION=bf16.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
BATCH="${BATCH:-32}"; WARMUP="${WARMUP:-3}"; STEPS="${STEPS:-10}"; PRECISION="${PRECISION:-bf16}"
MODEL_DIR="${MODEL_DIR:-/tmp/bench-base}"; DATA=/tmp/train-data
bin=/tmp/vlmrun-bin; mkdir -p $bin
if [ ! -x $bin/vlmrun-cuda ]; then
  xz -dc .device-bin/vlmrun.xz > $bin/vlmrun && xz -dc .device-bin/vlmrun-cuda.xz > $bin/vlmrun-cuda \
    || { echo "cannot unpack .device-bin"; exit 1; }
  chmod +x $bin/vlmrun $bin/vlmrun-cuda
fi
[ -f "$MODEL_DIR/model.safetensors" ] || python3 benches/reference/pytorch_blip.py write --arch base --model-dir "$MODEL_DIR"

[ -f "$DATA/data.jsonl" ] || python3 scripts/gpu/make_train_data.py "$DATA"

echo "== PyTorch AMP $PRECISION, batch $BATCH"
python3 scripts/gpu/pytorch_train.py --model-dir "$MODEL_DIR" --manifest "$DATA/data.jsonl" --batch-size "$BATCH" \
  --warmup "$WARMUP" --steps "$STEPS" --precision "$PRECISION" --out "$OUT/pytorch_train.json" 2>&1 | tail -3

echo "== vlmrun train $PRECISION, batch $BATCH"
$bin/vlmrun --device cuda --precision "$PRECISION" --set model.source="$MODEL_DIR" --set data.path="$DATA/data.jsonl" \
  --set output.dir=/tmp/vtrain --set train.batch_size="$BATCH" --set train.lr=1e-5 \
  train --steps $((WARMUP + STEPS)) --fresh 2>&1 | tail -4
cp /tmp/vtrain/train-summary.json "$OUT/vlmrun_train_summary.json" 2>/dev/null
python3 - "$OUT" "$WARMUP" <<'PY' | tee "$OUT/train.md"
import json, statistics, sys
from pathlib import Path
out, warmup = Path(sys.argv[1]), int(sys.argv[2])
steps = [json.loads(l) for l in open("/tmp/vtrain/metrics.jsonl") if '"kind":"step"' in l.replace(" ", "")]
rates = [s["samples_per_s"] for s in steps[warmup:]]
summary = json.loads((out / "vlmrun_train_summary.json").read_text())
ref = json.loads((out / "pytorch_train.json").read_text()) if (out / "pytorch_train.json").exists() else {}
ours = statistics.median(rates) if rates else None
gib = lambda b: f"{b / 2**30:.2f}" if b else "-"
print("| implementation | samples/s (median) | peak GPU GiB (NVML) | first -> last loss |")
print("|---|---|---|---|")
print(f"| vlmrun | {ours:.1f} | {gib(summary.get('peak_gpu_bytes'))} | {steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f} |")
if ref:
    print(f"| PyTorch AMP | {ref['samples_per_s']:.1f} | {gib(ref.get('peak_gpu_bytes'))} "
          f"(allocator {gib(ref.get('torch_max_allocated_bytes'))}) | {ref['losses'][0]:.3f} -> {ref['losses'][-1]:.3f} |")
    print(f"\nratio vlmrun / PyTorch: {ours / ref['samples_per_s']:.2f}x samples/s")
PY
