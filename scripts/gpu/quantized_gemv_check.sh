#!/usr/bin/env bash
# The quantized GEMV (weights decoded in registers, for <= 8 rows) against the path it replaces
# (the weight dequantized on every call), on the H100 in one device call:
#  1. random-weight BLIP-base and $IMAGES images (make_fidelity_model.py, gains 2.0:2.0);
#  2. `vlmrun fidelity` at batch $BATCH (greedy: $BATCH rows, beam 3: 3x$BATCH rows, so every decode
#     projection of a quantized variant takes the GEMV), each quantized variant twice: default
#     (direct GEMV) and `:dequantize`. Agreement with f32 and the step-1 logit error must match;
#  3. `vlmrun bench --quantized-matmul weight-only|dequantize` at batch 1 and 8 for q4k and q8_0 with
#     f16 activations, dense f16 beside.
# Expects .device-bin/vlmrun-cuda.xz. Knobs: IMAGES=64 BATCH=2 FID=/tmp/fid-qgemv, VARIANTS (vlmrun
# fidelity --variants), PAIRS (QUANTIZATION:MATMUL bench pairs), BENCH_BATCHES=1,8.
# Outputs in $OUT: summary.md, fidelity.json, bench-*.json, model_info.json, run.log.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
IMAGES="${IMAGES:-64}"; BATCH="${BATCH:-2}"; FID="${FID:-/tmp/fid-qgemv}"
LOG="$OUT/run.log"; SUMMARY="$OUT/summary.md"; : > "$LOG"; : > "$SUMMARY"
started=$(date +%s)
say() { echo "== $* [$(( $(date +%s) - started )) s]" | tee -a "$LOG"; }
bin=/tmp/qgemv-bin; mkdir -p $bin
xz -dc .device-bin/vlmrun-cuda.xz > $bin/vlmrun && chmod +x $bin/vlmrun || { echo "cannot unpack .device-bin/vlmrun-cuda.xz"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv >> "$LOG" 2>&1

say "model and $IMAGES images in $FID"
if [ ! -f "$FID/model/model.safetensors" ]; then
  python3 scripts/gpu/make_fidelity_model.py --out "$FID" --arch base --images "$IMAGES" --device cuda \
    --vision-gain 2.0 --cross-gain 2.0 --min-distinct 0.3 >> "$LOG" 2>&1 || { echo "model failed (run.log)"; exit 1; }
fi
cp "$FID/model_info.json" "$OUT/"

V=${VARIANTS:-f16,q8_0@f16,q8_0@f16:dequantize,q4k@f16,q4k@f16:dequantize,q4_0@f16,q4_0@f16:dequantize,q8_0@bf16,q8_0@bf16:dequantize,q8_0,q8_0:dequantize}
PAIRS=${PAIRS:-none:weight-only q4k:weight-only q4k:dequantize q8_0:weight-only q8_0:dequantize}
BENCH_BATCHES=${BENCH_BATCHES:-1,8}
say "vlmrun fidelity at batch $BATCH: $V"
$bin/vlmrun --device cuda --set data.source=folder --set "data.path=$FID/images" --set output.dir=/tmp/qgemv-fid \
  fidelity --model "$FID/model" --variants "$V" --beams 1,3 --batch-size "$BATCH" --out "$OUT/fidelity.json" \
  > /tmp/qgemv-fid.md 2>> "$LOG"
echo "fidelity exit $?" | tee -a "$LOG"
{ echo "## vlmrun fidelity, batch $BATCH (H100)"; echo; cat /tmp/qgemv-fid.md; echo; } >> "$SUMMARY"

say "vlmrun bench, f16, batch $BENCH_BATCHES, greedy, 20 tokens"
for pair in $PAIRS; do
  q=${pair%%:*}; how=${pair##*:}
  $bin/vlmrun --device cuda --precision f16 bench --model "$FID/model" --quantization "$q" --quantized-matmul "$how" \
    --batch-sizes "$BENCH_BATCHES" --beams 1 --tokens 20 --warmup 2 --iterations 5 --out "$OUT/bench-$q-$how.json" \
    > /dev/null 2>> "$LOG"
  echo "bench $q $how exit $?" | tee -a "$LOG"
done
python3 - "$OUT" >> "$SUMMARY" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("## vlmrun bench (H100, f16 activations, greedy, 20 forced tokens, median of 5 after 2 warm-up)\n")
print("| quantization | matmul | batch | images/s | decode step ms | peak GPU MiB |")
print("|---|---|---:|---:|---:|---:|")
for path in sorted(out.glob("bench-*.json")):
    doc = json.loads(path.read_text())
    q = doc["environment"]["quantization"]; how = doc["settings"].get("quantized_matmul", "-")
    for r in doc["records"]:
        peak = r.get("peak_gpu_bytes") or 0
        print(f"| {q} | {how if q != 'none' else 'dense'} | {r['batch_size']} | {r['images_per_s']:.1f} | "
              f"{r['decode_step_ms']:.3f} | {peak / 2**20:.0f} |")
PY
say done
cat "$SUMMARY"
