#!/usr/bin/env bash
# One device call on the H100 machine (see docs/parity.md): doctor, then f32 token-id parity with
# transformers on random-weight BLIP base and large, then the baseline throughput run in bf16.
# Expects .device-bin/{vlmrun,vlmrun-cuda}.xz (CPU launcher + CUDA build) carried with the call.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
bin=/tmp/vlmrun-bin; mkdir -p $bin
xz -dc .device-bin/vlmrun.xz > $bin/vlmrun && xz -dc .device-bin/vlmrun-cuda.xz > $bin/vlmrun-cuda
chmod +x $bin/vlmrun $bin/vlmrun-cuda
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"

echo "== doctor (CPU launcher -> CUDA build)"
$bin/vlmrun --device cuda doctor | tee "$OUT/doctor.txt"
$bin/vlmrun --device cuda doctor --json > "$OUT/doctor.json"; echo "doctor --json exit $?"

for arch in ${ARCHS:-base large}; do
  echo "== parity $arch"
  # The base init makes large's captions nearly image-independent (2-4 distinct of 16 at any vision gain):
  # try stronger cross-attention until the generator's own check passes; the gains are in expected.json.
  made=""
  # Each entry is VISION_GAIN:CROSS_GAIN.
  for gains in ${GAINS:-2.0:1.0 2.0:2.0 2.0:3.0 4.0:3.0}; do
    if python3 tests/fixtures/make_full_parity.py --out /tmp/parity-$arch --arch $arch --images 16 --device cuda \
        --vision-gain ${gains%%:*} --cross-gain ${gains##*:} > "$OUT/make_parity_$arch.log" 2>&1; then made=$gains; break; fi
    echo "gains $gains: $(tail -1 "$OUT/make_parity_$arch.log")"
  done
  [ -n "$made" ] || { echo "make_full_parity failed for $arch"; continue; }
  echo "vision:cross gains $made"
  tail -3 "$OUT/make_parity_$arch.log"
  echo "| arch | precision | decoding | prompt | images | identical | differ | differ where f64 transformers disagrees with f32 (near tie) |" | tee -a "$OUT/parity.md"
  echo "|---|---|---|---|---|---|---|---|" | tee -a "$OUT/parity.md"
  python3 scripts/gpu/parity_compare.py --vlmrun $bin/vlmrun --dir /tmp/parity-$arch --arch $arch \
    2> "$OUT/parity_${arch}_diff.txt" | tee -a "$OUT/parity.md"
done

if [ -n "${PERF:-1}" ] && [ -d /tmp/parity-base/model ]; then
  echo "== baseline throughput: base shapes, bf16, 512 synthetic 640x480 images, batch 64, 20 forced tokens"
  python3 - <<'PY'
import numpy as np
from PIL import Image
from pathlib import Path
d = Path("/tmp/synth"); d.mkdir(exist_ok=True)
rng = np.random.default_rng(0)
for i in range(512):
    base = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(base).resize((640, 480), Image.BILINEAR).save(d / f"img{i:04d}.jpg", quality=90)
PY
  for run in 1 2; do
    $bin/vlmrun --device cuda --precision bf16 --set model.source=/tmp/parity-base/model \
      --set data.source=folder --set data.path=/tmp/synth --set generation.batch_size=64 \
      --set generation.max_length=21 --set generation.min_length=21 --set output.dir=/tmp/run-perf \
      baseline --fresh 2>&1 | tail -14
  done
  cp /tmp/run-perf/report.json "$OUT/baseline_bf16_report.json"
fi
