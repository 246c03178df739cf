#!/usr/bin/env bash
# Data-parallel `baseline` scaling on one multi-GPU machine (docs/scaling.md): 1, 2, 4 and (when present)
# 8 ranks, one per GPU, BLIP-base shapes with random weights, bf16, batch 64, 20 forced tokens, synthetic
# 640x480 JPEGs (the same setup as the baseline throughput run in h100_run.sh, more images). Prints
# images/s and efficiency = images/s(N) / (N x images/s(1)) as a markdown table (also $OUT/scaling.md)
# and keeps every merged report in $OUT.
# Expects .device-bin/{vlmrun,vlmrun-cuda}.xz (CPU launcher + CUDA build) carried with the call.
# Knobs: IMAGES (default 4096), REPEATS (default 2, best kept), WORLDS (default "1 2 4 8"); for a CPU
# smoke test of the script itself: BIN=dir-with-vlmrun MODEL=models/tiny-blip DEVICE=cpu PRECISION=f32 GPUS=2.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
unset RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE CUDA_VISIBLE_DEVICES
bin=${BIN:-/tmp/vlmrun-bin}; mkdir -p $bin
[ -x $bin/vlmrun ] || { xz -dc .device-bin/vlmrun.xz > $bin/vlmrun; xz -dc .device-bin/vlmrun-cuda.xz > $bin/vlmrun-cuda; chmod +x $bin/*; }
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"
fi
gpus=${GPUS:-$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)}
echo "GPUs: $gpus, CPU cores: $(nproc)" | tee -a "$OUT/nvidia-smi.txt"

model=${MODEL:-/tmp/parity-base/model}
[ -f $model/model.safetensors ] || python3 tests/fixtures/make_full_parity.py --out /tmp/parity-base \
  --arch base --images 16 --device cuda --no-f64-check > "$OUT/make_model.log" 2>&1
[ -f $model/model.safetensors ] || { echo "no base model: see $OUT/make_model.log"; tail -5 "$OUT/make_model.log"; exit 1; }

images=${IMAGES:-4096}
data=/tmp/synth-scale
if [ "$(ls $data 2>/dev/null | wc -l)" != "$images" ]; then
  rm -rf $data
  python3 - "$data" "$images" <<'PY'
import sys
import numpy as np
from PIL import Image
from pathlib import Path
d = Path(sys.argv[1]); d.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
for i in range(int(sys.argv[2])):
    base = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(base).resize((640, 480), Image.BILINEAR).save(d / f"img{i:05d}.jpg", quality=90)
PY
fi

common=(--device ${DEVICE:-cuda} --precision ${PRECISION:-bf16} --set model.source=$model --set data.source=folder --set data.path=$data
  --set generation.batch_size=64 --set generation.max_length=21 --set generation.min_length=21)

# One run of N ranks on GPUs 0..N-1; prints the merged report's images/s (empty on failure).
run_world() {
  local n=$1 tag=$2 dir=/tmp/scale-$1 pids=() k code
  for ((k = 0; k < n; k++)); do
    $bin/vlmrun "${common[@]}" --set output.dir=$dir baseline --fresh --rank $k --world-size $n \
      --wait-timeout 600 > "$OUT/log-$tag-rank$k.txt" 2>&1 &
    pids+=($!)
  done
  code=0
  for k in "${!pids[@]}"; do wait "${pids[$k]}" || code=$?; done
  if [ "$code" != 0 ]; then
    echo "world $n ($tag): a rank exited $code" >&2; tail -20 "$OUT/log-$tag-rank0.txt" >&2; return
  fi
  cp $dir/report.json "$OUT/report-$tag.json"
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['timings']['images_per_s'])" $dir/report.json
}

echo "== warm-up (page cache, clocks; not counted)"
run_world 1 warmup > /dev/null

declare -A best
for n in ${WORLDS:-1 2 4 8}; do
  [ "$n" -le "$gpus" ] || { echo "skip $n ranks: $gpus GPUs"; continue; }
  for ((r = 1; r <= ${REPEATS:-2}; r++)); do
    ips=$(run_world $n "n$n-r$r")
    echo "$n rank(s), repeat $r: ${ips:-failed} images/s"
    [ -n "$ips" ] || continue
    if [ -z "${best[$n]:-}" ] || python3 -c "import sys; sys.exit(not float(sys.argv[1]) > float(sys.argv[2]))" "$ips" "${best[$n]}"; then
      best[$n]=$ips
    fi
  done
done

{
  echo "| GPUs | images/s | per GPU | efficiency |"
  echo "|---|---|---|---|"
  for n in 1 2 4 8; do
    [ -n "${best[$n]:-}" ] || continue
    python3 -c "
import sys
n, ips, one = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]) if sys.argv[3] else 0.0
eff = f'{100 * ips / (n * one):.1f}%' if one > 0 else 'n/a'
print(f'| {n} | {ips:.1f} | {ips / n:.1f} | {eff} |')
" "$n" "${best[$n]}" "${best[1]:-}"
  done
} | tee "$OUT/scaling.md"
echo "($images images, best of ${REPEATS:-2}; reports in $OUT/report-*.json)"
