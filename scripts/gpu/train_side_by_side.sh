#!/usr/bin/env bash
# `vlmrun train` beside PyTorch AMP on the GPU (docs/training.md), in one device call: BLIP-base
# shapes with the random weights of benches/reference/pytorch_blip.py (written once, read by all),
# 64 synthetic 640x480 JPEGs with two captions each, batch 32, bf16 compute with f32 master weights,
# the same recipe (scripts/gpu/pytorch_train.py's docstring). PyTorch runs once per mode in MODES
# (jpeg: host batches uploaded each step, AdamW foreach; gpu: batches resident on the GPU, AdamW
# fused; compile: gpu + torch.compile), each writing $OUT/pytorch_train_<mode>.json (log beside it),
# then vlmrun. Each row: warm-up steps, then the median step time of the measured steps, the first
# step's time, and peak GPU memory (NVML); the summary goes to $OUT/train.md.
# Knobs: BATCH=32 WARMUP=3 STEPS=10 PRECISION=bf16 MODEL_DIR=/tmp/bench-base MODES="jpeg gpu compile"
#   VLMRUN_BIN=/tmp/vlmrun-bin/vlmrun-cuda (unpacked from .device-bin/vlmrun-cuda.xz, or from
#   carry/vlmrun-cuda.xz when .device-bin has none, if it is missing)
#   VLMRUN_SETS="" (extra config overrides for vlmrun train, space-separated: "k=v k2=v2" or
#   "--set k=v --set k2=v2"; they come after the script's own --set and so override them)
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
BATCH="${BATCH:-32}"; WARMUP="${WARMUP:-3}"; STEPS="${STEPS:-10}"; PRECISION="${PRECISION:-bf16}"
MODEL_DIR="${MODEL_DIR:-/tmp/bench-base}"; DATA=/tmp/train-data
MODES="${MODES:-jpeg gpu compile}"
VLMRUN_BIN="${VLMRUN_BIN:-/tmp/vlmrun-bin/vlmrun-cuda}"; VLMRUN_SETS="${VLMRUN_SETS:-}"

bin=$(dirname "$VLMRUN_BIN")
if [ "$(basename "$VLMRUN_BIN")" != vlmrun-cuda ]; then
  # another name: reach it as $bin/vlmrun-cuda through a link
  [ -x "$VLMRUN_BIN" ] || { echo "VLMRUN_BIN=$VLMRUN_BIN is not an executable"; exit 1; }
  target=$(readlink -f "$VLMRUN_BIN"); bin=/tmp/vlmrun-bin-link; mkdir -p "$bin"
  ln -sfn "$target" "$bin/vlmrun-cuda"
fi
mkdir -p "$bin"
if [ ! -x "$bin/vlmrun-cuda" ]; then
  if [ -f .device-bin/vlmrun-cuda.xz ]; then packed=.device-bin/vlmrun-cuda.xz
  elif [ -f carry/vlmrun-cuda.xz ]; then packed=carry/vlmrun-cuda.xz
  else echo "no $bin/vlmrun-cuda and neither .device-bin/vlmrun-cuda.xz nor carry/vlmrun-cuda.xz"; exit 1; fi
  xz -dc "$packed" > "$bin/vlmrun-cuda.part" && mv "$bin/vlmrun-cuda.part" "$bin/vlmrun-cuda" \
    || { echo "cannot unpack $packed"; exit 1; }
  chmod +x "$bin/vlmrun-cuda"
fi
sets=()
read -ra set_words <<< "$VLMRUN_SETS"
for w in ${set_words[@]+"${set_words[@]}"}; do
  case "$w" in
    --set) ;;                      # "--set k=v" form: the k=v word follows
    --set=*) sets+=("$w") ;;
    *) sets+=(--set "$w") ;;
  esac
done

[ -f "$MODEL_DIR/model.safetensors" ] || python3 benches/reference/pytorch_blip.py write --arch base --model-dir "$MODEL_DIR"
[ -f "$DATA/data.jsonl" ] || python3 scripts/gpu/make_train_data.py "$DATA"

for mode in $MODES; do
  echo "== PyTorch AMP $PRECISION, batch $BATCH, mode $mode"
  rm -f "$OUT/pytorch_train_$mode.json"
  python3 scripts/gpu/pytorch_train.py --mode "$mode" --model-dir "$MODEL_DIR" --manifest "$DATA/data.jsonl" \
    --batch-size "$BATCH" --warmup "$WARMUP" --steps "$STEPS" --precision "$PRECISION" \
    --out "$OUT/pytorch_train_$mode.json" > "$OUT/pytorch_train_$mode.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then tail -3 "$OUT/pytorch_train_$mode.log"
  else echo "mode $mode failed (exit $rc):"; tail -30 "$OUT/pytorch_train_$mode.log"; fi
done

echo "== vlmrun train $PRECISION, batch $BATCH${VLMRUN_SETS:+ (extra: $VLMRUN_SETS)}"
rm -f /tmp/vtrain/train-summary.json /tmp/vtrain/metrics.jsonl "$OUT/vlmrun_train_summary.json"
$bin/vlmrun-cuda --device cuda --precision "$PRECISION" --set model.source="$MODEL_DIR" --set data.path="$DATA/data.jsonl" \
  --set output.dir=/tmp/vtrain --set train.batch_size="$BATCH" --set train.lr=1e-5 ${sets[@]+"${sets[@]}"} \
  train --steps $((WARMUP + STEPS)) --fresh 2>&1 | tail -4
cp /tmp/vtrain/train-summary.json "$OUT/vlmrun_train_summary.json" 2>/dev/null
cp /tmp/vtrain/metrics.jsonl "$OUT/vlmrun_metrics.jsonl" 2>/dev/null
python3 - "$OUT" "$WARMUP" "$BATCH" "$MODES" <<'PY' | tee "$OUT/train.md"
import json, statistics, sys
from pathlib import Path
out, warmup, batch, modes = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split()
gib = lambda b: f"{b / 2**30:.2f}" if b else "-"
num = lambda x, f: format(x, f) if x is not None else "-"
rows = []  # (name, samples/s, step ms, first step s, NVML bytes, allocator bytes, first loss, last loss)
metrics = out / "vlmrun_metrics.jsonl"
steps = [json.loads(l) for l in metrics.read_text().splitlines() if '"kind":"step"' in l.replace(" ", "")] \
    if metrics.exists() else []
summary = json.loads((out / "vlmrun_train_summary.json").read_text()) \
    if (out / "vlmrun_train_summary.json").exists() else {}
ours = None
if steps:
    rates = [s["samples_per_s"] for s in steps[warmup:]] or [s["samples_per_s"] for s in steps]
    ours = statistics.median(rates)
    step_ms = statistics.median(batch / r * 1e3 for r in rates)
    rows.append(("vlmrun", ours, step_ms, batch / steps[0]["samples_per_s"], summary.get("peak_gpu_bytes"), None,
                 steps[0]["loss"], steps[-1]["loss"]))
else:
    print("(vlmrun train wrote no step records)\n")
refs = {}
for mode in modes:
    path = out / f"pytorch_train_{mode}.json"
    if not path.exists():
        print(f"(PyTorch mode {mode}: no result, see pytorch_train_{mode}.log)\n")
        continue
    ref = refs[mode] = json.loads(path.read_text())
    rows.append((f"PyTorch AMP {mode}", ref["samples_per_s"], ref["step_ms_median"], ref.get("first_step_s"),
                 ref.get("peak_gpu_bytes"), ref.get("torch_max_allocated_bytes"), ref["losses"][0], ref["losses"][-1]))
print("| implementation | samples/s (median) | step ms (median) | first step s | peak GPU GiB (NVML) "
      "| allocator GiB | first -> last loss |")
print("|---|---|---|---|---|---|---|")
for name, sps, ms, first, nvml, alloc, l0, l1 in rows:
    print(f"| {name} | {sps:.1f} | {ms:.1f} | {num(first, '.2f')} | {gib(nvml)} | {gib(alloc)} | {l0:.3f} -> {l1:.3f} |")
if ours is not None and refs:
    print()
    for mode, ref in refs.items():
        print(f"ratio vlmrun / PyTorch {mode}: {ours / ref['samples_per_s']:.2f}x samples/s")
for mode, ref in refs.items():
    print(f"\n{mode}: {ref['implementation']}")
PY
