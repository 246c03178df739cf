#!/usr/bin/env bash
# vlmrun against PyTorch (transformers 5.17, eager) on the same random-weight BLIP, in one device call
# (docs/performance.md). Writes the weights once (benches/reference/pytorch_blip.py write), then for each
# precision runs the PyTorch reference and `vlmrun bench` with the same settings, and prints the ratio
# table (vlmrun / PyTorch: images/s, vision images/s, peak memory).
#
# Expects .device-bin/{vlmrun,vlmrun-cuda}.xz (CPU launcher + CUDA build) carried with the call, as
# scripts/gpu/h100_run.sh does. About 3-5 minutes on an H100 with the defaults (budget: < 8).
# Knobs (environment): ARCH=base|large, PRECISIONS="f16 bf16", BATCHES=1,8,64, BEAMS=1,3, TOKENS=20,
# WARMUP=2, ITERS=5, MODEL_DIR (weights; outside $OUT, ~0.9 GB for base).
# Outputs in $OUT: pytorch_<p>.json, vlmrun_<p>.json (schema vlmrun.bench/1), vlmrun_<p>.md (tables),
# images_per_s_<p>.svg, ratios.md, *.log.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
ARCH="${ARCH:-base}"; PRECISIONS="${PRECISIONS:-f16 bf16}"; BATCHES="${BATCHES:-1,8,64}"
BEAMS="${BEAMS:-1,3}"; TOKENS="${TOKENS:-20}"; WARMUP="${WARMUP:-2}"; ITERS="${ITERS:-5}"
MODEL_DIR="${MODEL_DIR:-/tmp/bench-$ARCH}"
started=$(date +%s)
elapsed() { echo "[$(( $(date +%s) - started )) s]"; }

bin=/tmp/vlmrun-bin; mkdir -p $bin
xz -dc .device-bin/vlmrun.xz > $bin/vlmrun && xz -dc .device-bin/vlmrun-cuda.xz > $bin/vlmrun-cuda \
  || { echo "cannot unpack .device-bin/{vlmrun,vlmrun-cuda}.xz"; exit 1; }
chmod +x $bin/vlmrun $bin/vlmrun-cuda
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"

echo "== weights: $ARCH, random, written once to $MODEL_DIR $(elapsed)"
if [ ! -f "$MODEL_DIR/model.safetensors" ]; then
  python3 benches/reference/pytorch_blip.py write --arch "$ARCH" --model-dir "$MODEL_DIR" 2>&1 | tee "$OUT/write.log" \
    || { echo "writing the weights failed"; exit 1; }
fi

common=(--batch-sizes "$BATCHES" --beams "$BEAMS" --tokens "$TOKENS" --warmup "$WARMUP" --iterations "$ITERS")
for p in $PRECISIONS; do
  echo "== PyTorch $p $(elapsed)"
  python3 benches/reference/pytorch_blip.py bench --model-dir "$MODEL_DIR" --precision "$p" "${common[@]}" \
    --out "$OUT/pytorch_$p.json" 2>&1 | tee "$OUT/pytorch_$p.log"
  echo "== vlmrun $p $(elapsed)"
  ref=(); [ -f "$OUT/pytorch_$p.json" ] && ref=(--reference "$OUT/pytorch_$p.json")
  $bin/vlmrun --device cuda --precision "$p" bench --model "$MODEL_DIR" "${common[@]}" "${ref[@]}" \
    --out "$OUT/vlmrun_$p.json" --plot "$OUT/images_per_s_$p.svg" > "$OUT/vlmrun_$p.md" 2> "$OUT/vlmrun_$p.log"
  echo "vlmrun bench exit $?"; cat "$OUT/vlmrun_$p.md"; tail -3 "$OUT/vlmrun_$p.log"
done

echo "== ratios (vlmrun / PyTorch) $(elapsed)"
python3 - "$OUT" $PRECISIONS <<'PY' | tee "$OUT/ratios.md"
import json, sys
from pathlib import Path
out, precisions = Path(sys.argv[1]), sys.argv[2:]
def load(name):
    p = out / name
    return json.loads(p.read_text()) if p.exists() else None
def r(a, b):
    return f"{a / b:.2f}x" if a and b else "-"
def f(v, d=1):
    return f"{v:.{d}f}" if v is not None else "-"
print("| precision | batch | beams | vlmrun images/s | PyTorch images/s | ratio | vlmrun vision images/s "
      "| PyTorch vision | ratio | vlmrun peak GiB | PyTorch peak GiB | ratio |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for p in precisions:
    v, t = load(f"vlmrun_{p}.json"), load(f"pytorch_{p}.json")
    if not v or not t:
        print(f"| {p} | missing: {'vlmrun' if not v else ''} {'pytorch' if not t else ''} |")
        continue
    for a in v["records"]:
        b = next((x for x in t["records"] if (x["batch_size"], x["num_beams"]) == (a["batch_size"], a["num_beams"])), None)
        if b is None:
            continue
        gib = lambda x: x / 2**30 if x else None
        print(f"| {p} | {a['batch_size']} | {a['num_beams']} | {f(a['images_per_s'])} | {f(b['images_per_s'])} "
              f"| {r(a['images_per_s'], b['images_per_s'])} | {f(a['vision_images_per_s'])} "
              f"| {f(b['vision_images_per_s'])} | {r(a['vision_images_per_s'], b['vision_images_per_s'])} "
              f"| {f(gib(a['peak_gpu_bytes']), 2)} | {f(gib(b['peak_gpu_bytes']), 2)} "
              f"| {r(a['peak_gpu_bytes'], b['peak_gpu_bytes'])} |")
    print(f"\n{p}: peak memory vlmrun {v['settings'].get('peak_gpu_measure')}, "
          f"PyTorch {t['settings'].get('peak_gpu_measure')}\n")
PY
echo "done $(elapsed)"
