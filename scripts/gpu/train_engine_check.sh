#!/usr/bin/env bash
# One device call for the training engine (docs/training.md, "Training engine"): the fused-kernel
# test binary against the composed ops, then `vlmrun train` on BLIP-base shapes (random weights of
# benches/reference/pytorch_blip.py, 64 synthetic JPEGs x 2 captions, batch 32, bf16 compute, f32
# master weights) with the fused kernels off (the reference path) and on, then a per-kernel
# Nsight Compute profile of one step of each (PROFILE=1).
# Expects carry/vlmrun-cuda.xz and (optionally) carry/gpu_kernels.xz, the test binary of
# `cargo test --release --features cuda --test gpu_kernels --no-run`.
# Knobs: BATCH=32 STEPS=8 PROFILE=1 PROFILE_BATCH=8 MODES="composed fused".
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
BATCH="${BATCH:-32}"; STEPS="${STEPS:-8}"; PROFILE="${PROFILE:-1}"; PROFILE_BATCH="${PROFILE_BATCH:-8}"
MODES="${MODES:-composed fused}"
MODEL_DIR="${MODEL_DIR:-/tmp/bench-base}"; DATA=/tmp/train-data
bin=/tmp/vlmrun-bin; mkdir -p $bin
[ -x $bin/vlmrun-cuda ] || { xz -dc carry/vlmrun-cuda.xz > $bin/vlmrun-cuda && chmod +x $bin/vlmrun-cuda; } || exit 1
if [ -f carry/gpu_kernels.xz ]; then
  xz -dc carry/gpu_kernels.xz > $bin/gpu_kernels && chmod +x $bin/gpu_kernels
  echo "== fused kernels against the composed ops"
  $bin/gpu_kernels --nocapture --test-threads 1 2>&1 | tee "$OUT/gpu_kernels.txt" | grep -v "^$"
fi
[ -f "$MODEL_DIR/model.safetensors" ] || python3 benches/reference/pytorch_blip.py write --arch base --model-dir "$MODEL_DIR" >/dev/null
[ -f "$DATA/data.jsonl" ] || python3 scripts/gpu/make_train_data.py "$DATA"
train() {  # mode batch steps outdir [extra...]
  local mode=$1 batch=$2 steps=$3 dir=$4; shift 4
  local fused=true; [ "$mode" = composed ] && fused=false
  $bin/vlmrun-cuda --device cuda --precision bf16 --set model.source="$MODEL_DIR" --set data.path="$DATA/data.jsonl" \
    --set output.dir="$dir" --set train.batch_size="$batch" --set train.lr=1e-5 --set train.fused_kernels=$fused \
    "$@" train --steps "$steps" --fresh
}
for mode in $MODES; do
  echo "== vlmrun train, $mode, batch $BATCH, $STEPS steps"
  /usr/bin/time -f "wall %e s, max RSS %M KB" bash -c "$(declare -f train); bin=$bin MODEL_DIR=$MODEL_DIR DATA=$DATA; train $mode $BATCH $STEPS /tmp/vt-$mode" 2>&1 | tail -3
  cp /tmp/vt-$mode/train-summary.json "$OUT/train_summary_$mode.json" 2>/dev/null
  cp /tmp/vt-$mode/metrics.jsonl "$OUT/train_metrics_$mode.jsonl" 2>/dev/null
done
if [ "$PROFILE" = 1 ]; then
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
  for mode in $MODES; do
    echo "== ncu: one step, $mode, batch $PROFILE_BATCH"
    fused=true; [ "$mode" = composed ] && fused=false
    timeout 240 "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv --page raw --target-processes all \
      $bin/vlmrun-cuda --device cuda --precision bf16 --set model.source="$MODEL_DIR" --set data.path="$DATA/data.jsonl" \
      --set output.dir=/tmp/pt-$mode --set train.batch_size="$PROFILE_BATCH" --set train.fused_kernels=$fused \
      --set train.checkpoint_every=0 train --steps 1 --fresh > /tmp/ncu-$mode.csv 2> "$OUT/ncu_$mode.log"
    echo "ncu exit $?"
    python3 scripts/gpu/kernel_summary.py /tmp/ncu-$mode.csv > "$OUT/kernels_train_$mode.md" 2>&1
    head -40 "$OUT/kernels_train_$mode.md"
  done
fi
python3 - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
for f in sorted(out.glob("train_summary_*.json")):
    s = json.loads(f.read_text())
    mode = f.stem.removeprefix("train_summary_")
    steps = [json.loads(l) for l in open(out / f"train_metrics_{mode}.jsonl") if '"step"' in l and '"loss"' in l]
    rates = [x["samples_per_s"] for x in steps[2:]] or [s.get("samples_per_s") or 0]
    print(f"{mode}: median samples/s after 2 warm-up steps {statistics.median(rates):.1f}, "
          f"peak {s.get('peak_gpu_bytes', 0) / 2**30:.2f} GiB, loss {s['first_loss']:.4f} -> {s['last_loss']:.4f}, "
          f"process {s['seconds']:.1f} s")
PY
