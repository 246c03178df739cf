#!/usr/bin/env bash
# The explicit backward pass on the GPU (docs/training.md), in one device call, BLIP-base shapes
# (random weights of benches/reference/pytorch_blip.py), bf16 autocast with f32 master weights,
# batch 32, data in manifest order (train.shuffle=false, as scripts/gpu/pytorch_train.py):
#   1. step-1 gradients of every parameter: vlmrun explicit bf16 (fused kernels), explicit f32,
#      autograd f32 (the reference path), PyTorch bf16 autocast and f32 -> grad_table.py
#   2. speed: scripts/gpu/train_side_by_side.sh (PyTorch jpeg / gpu / compile rows and vlmrun),
#      then vlmrun's autograd path in the same call (before/after)
#   3. a LOSS_STEPS-step loss curve beside PyTorch eager on the same data and order
#   4. peak memory per batch size (BATCHES)
#   5. PROFILE=1: ncu over two training steps (scripts/gpu/profile.sh WHAT=train)
# Knobs: PARTS="grads speed curve memory profile" LOSS_STEPS=300 BATCHES="8 16 24 48 64"
# Expects carry/vlmrun-cuda.xz (stripped CUDA build). Writes everything under $OUT.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
PARTS="${PARTS:-kernels grads speed curve memory profile}"
LOSS_STEPS="${LOSS_STEPS:-300}"; BATCHES="${BATCHES:-8 16 24 48 64}"
MODEL_DIR=/tmp/bench-base; DATA=/tmp/train-data
bin=/tmp/vlmrun-bin; mkdir -p $bin
if [ ! -x $bin/vlmrun-cuda ]; then
  xz -dc carry/vlmrun-cuda.xz > $bin/vlmrun-cuda && chmod +x $bin/vlmrun-cuda || exit 1
fi
mkdir -p .device-bin && ln -sf "$PWD/carry/vlmrun-cuda.xz" .device-bin/vlmrun-cuda.xz
[ -f "$MODEL_DIR/model.safetensors" ] || python3 benches/reference/pytorch_blip.py write --arch base --model-dir "$MODEL_DIR"
[ -f "$DATA/data.jsonl" ] || python3 scripts/gpu/make_train_data.py "$DATA"
common=(--device cuda --set model.source="$MODEL_DIR" --set data.path="$DATA/data.jsonl"
        --set train.shuffle=false --set train.lr=1e-5)
has() { [[ " $PARTS " == *" $1 "* ]]; }

if has kernels; then
  echo "== 0. kernel tests against the composed ops"
  t=$(ls carry/gpu_kernels* 2>/dev/null | head -1)
  if [ -n "$t" ]; then xz -dc "$t" > /tmp/gpu_kernels && chmod +x /tmp/gpu_kernels && /tmp/gpu_kernels --nocapture 2>&1 | tail -40
  else echo "no carry/gpu_kernels*.xz"; fi
fi

if has grads; then
  echo "== 1. step-1 gradients"
  dump() {  # label, then vlmrun options
    local label=$1; shift
    $bin/vlmrun-cuda "${common[@]}" --set output.dir=/tmp/g_$label --set train.batch_size=32 "$@" \
      train --steps 1 --fresh --dump-grads "$OUT/grads_$label.safetensors" > "$OUT/grads_$label.log" 2>&1 \
      || { echo "vlmrun $label failed:"; tail -20 "$OUT/grads_$label.log"; }
  }
  dump explicit_bf16 --precision bf16
  dump explicit_f32 --precision f32
  dump autograd_f32 --precision f32 --set train.backward=autograd
  dump autograd_bf16 --precision bf16 --set train.backward=autograd
  for p in bf16 f32; do
    python3 scripts/gpu/pytorch_train.py --mode gpu --model-dir "$MODEL_DIR" --manifest "$DATA/data.jsonl" \
      --batch-size 32 --warmup 0 --steps 1 --precision $p --out "$OUT/pytorch_grads_$p.json" \
      --dump-grads "$OUT/grads_pytorch_$p.safetensors" > "$OUT/pytorch_grads_$p.log" 2>&1 \
      || { echo "PyTorch $p failed:"; tail -20 "$OUT/pytorch_grads_$p.log"; }
  done
  python3 - "$OUT" <<'PY'
import sys
from pathlib import Path
from safetensors import safe_open
out = Path(sys.argv[1])
for p in sorted(out.glob("grads_*.safetensors")):
    with safe_open(str(p), "pt") as f:
        meta = f.metadata() or {}
        loss = f.get_tensor("__loss__").item() if "__loss__" in f.keys() else meta.get("loss")
    print(f"step-1 loss {p.stem}: {loss}")
PY
  g=$OUT/grads
  python3 scripts/gpu/grad_table.py "$OUT/grad_table.json" \
    "vlmrun explicit f32 vs vlmrun autograd f32:${g}_explicit_f32.safetensors:${g}_autograd_f32.safetensors" \
    "vlmrun explicit bf16 vs vlmrun autograd f32:${g}_explicit_bf16.safetensors:${g}_autograd_f32.safetensors" \
    "vlmrun explicit bf16 vs PyTorch bf16:${g}_explicit_bf16.safetensors:${g}_pytorch_bf16.safetensors" \
    "vlmrun autograd f32 vs PyTorch f32:${g}_autograd_f32.safetensors:${g}_pytorch_f32.safetensors" \
    "PyTorch bf16 vs PyTorch f32:${g}_pytorch_bf16.safetensors:${g}_pytorch_f32.safetensors" \
    "vlmrun explicit bf16 vs PyTorch f32:${g}_explicit_bf16.safetensors:${g}_pytorch_f32.safetensors" \
    "vlmrun autograd bf16 vs PyTorch f32:${g}_autograd_bf16.safetensors:${g}_pytorch_f32.safetensors" \
    | tee "$OUT/grad_table.md"
  rm -f "$OUT"/grads_*.safetensors   # ~1 GB each: the table keeps what matters
fi

if has speed; then
  echo "== 2. speed (same call)"
  MODES="${MODES:-jpeg gpu compile}" VLMRUN_BIN=$bin/vlmrun-cuda VLMRUN_SETS="train.shuffle=false" \
    bash scripts/gpu/train_side_by_side.sh
  echo "-- vlmrun autograd path (before), same call"
  $bin/vlmrun-cuda "${common[@]}" --precision bf16 --set output.dir=/tmp/t_autograd --set train.batch_size=32 \
    --set train.backward=autograd train --steps 8 --fresh 2>&1 | tail -2
  python3 - /tmp/t_autograd <<'PY'
import json, statistics, sys
from pathlib import Path
d = Path(sys.argv[1])
steps = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines() if '"step"' in l]
rates = [s["samples_per_s"] for s in steps if "samples_per_s" in s][3:]
s = json.loads((d / "train-summary.json").read_text())
print(f"vlmrun autograd bf16 batch 32: {statistics.median(rates):.1f} samples/s, peak {s.get('peak_gpu_bytes', 0) / 2**30:.2f} GiB")
PY
fi

if has curve; then
  echo "== 3. $LOSS_STEPS-step loss curves, same data and order"
  $bin/vlmrun-cuda "${common[@]}" --precision bf16 --set output.dir=/tmp/t_curve --set train.batch_size=32 \
    --set train.max_grad_norm=1.0 --set train.min_lr=1e-5 train --steps "$LOSS_STEPS" --fresh > "$OUT/curve_vlmrun.log" 2>&1 \
    || tail -20 "$OUT/curve_vlmrun.log"
  cp /tmp/t_curve/metrics.jsonl "$OUT/curve_vlmrun_metrics.jsonl" 2>/dev/null
  python3 scripts/gpu/pytorch_train.py --mode gpu --model-dir "$MODEL_DIR" --manifest "$DATA/data.jsonl" \
    --batch-size 32 --warmup 0 --steps "$LOSS_STEPS" --precision bf16 --out "$OUT/curve_pytorch.json" \
    > "$OUT/curve_pytorch.log" 2>&1 || tail -20 "$OUT/curve_pytorch.log"
  python3 scripts/gpu/loss_curves.py "$OUT/curve_vlmrun_metrics.jsonl" "$OUT/curve_pytorch.json" \
    "$OUT/loss_curves.svg" | tee "$OUT/loss_curves.md"
fi

if has memory; then
  echo "== 4. peak memory by batch size (bf16, 4 steps each)"
  echo "| batch | samples/s | peak GiB (NVML) |" > "$OUT/memory.md"; echo "|---:|---:|---:|" >> "$OUT/memory.md"
  for b in $BATCHES; do
    $bin/vlmrun-cuda "${common[@]}" --precision bf16 --set output.dir=/tmp/t_mem$b --set train.batch_size=$b \
      train --steps 4 --fresh > "$OUT/memory_$b.log" 2>&1 || { echo "batch $b failed"; tail -5 "$OUT/memory_$b.log"; }
    python3 - /tmp/t_mem$b $b >> "$OUT/memory.md" <<'PY'
import json, statistics, sys
from pathlib import Path
d, b = Path(sys.argv[1]), sys.argv[2]
try:
    steps = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines() if '"step"' in l]
    rates = [s["samples_per_s"] for s in steps if "samples_per_s" in s][1:]
    s = json.loads((d / "train-summary.json").read_text())
    print(f"| {b} | {statistics.median(rates):.1f} | {s.get('peak_gpu_bytes', 0) / 2**30:.2f} |")
except Exception as e:
    print(f"| {b} | failed ({e}) | - |")
PY
  done
  cat "$OUT/memory.md"
fi

if has profile; then
  echo "== 5. kernel profile, two training steps at batch 32"
  WHAT=train BATCH=32 TRAIN_STEPS="${TRAIN_STEPS:-1}" NCU_TIMEOUT="${NCU_TIMEOUT:-300}" \
    bash scripts/gpu/profile.sh 2>&1 | tail -40
fi
