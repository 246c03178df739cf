#!/usr/bin/env bash
# Where the GPU time goes (docs/performance.md, docs/training.md): Nsight Compute times every kernel
# of one `vlmrun bench` record at batch 64 (BLIP-base shapes, bf16, 20 tokens: vision encoder,
# prefill + steps, generate; WHAT=bench) or of two training steps at batch 32 (WHAT=train, data from
# scripts/gpu/train_side_by_side.sh), and scripts/gpu/kernel_summary.py groups them by kind. Kernel replay serialises launches, so the sum is
# pure GPU time; the gap to the measured wall time of the same work is launch/CPU overhead.
# Expects .device-bin/{vlmrun,vlmrun-cuda}.xz and the weights of benches/reference/pytorch_blip.py in
# MODEL_DIR (written if missing). Knobs: BATCH=64 TOKENS=20 PRECISION=bf16.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
WHAT="${WHAT:-bench}"; BATCH="${BATCH:-64}"; TOKENS="${TOKENS:-20}"; PRECISION="${PRECISION:-bf16}"; MODEL_DIR="${MODEL_DIR:-/tmp/bench-base}"
bin=/tmp/vlmrun-bin; mkdir -p $bin
if [ ! -x $bin/vlmrun-cuda ]; then
  xz -dc .device-bin/vlmrun.xz > $bin/vlmrun && xz -dc .device-bin/vlmrun-cuda.xz > $bin/vlmrun-cuda || exit 1
  chmod +x $bin/vlmrun $bin/vlmrun-cuda
fi
[ -f "$MODEL_DIR/model.safetensors" ] || python3 benches/reference/pytorch_blip.py write --arch base --model-dir "$MODEL_DIR"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "ncu not found"; exit 1; }
ncu=("$NCU" --clock-control none --metrics gpu__time_duration.sum --csv --page raw --target-processes all)
if [ "$WHAT" = train ]; then
  [ -f /tmp/train-data/data.jsonl ] || python3 scripts/gpu/make_train_data.py /tmp/train-data
  # Two optimizer steps (the first includes one-time setup).
  timeout "${NCU_TIMEOUT:-400}" "${ncu[@]}" $bin/vlmrun-cuda --device cuda --precision "$PRECISION" --set model.source="$MODEL_DIR" \
    --set data.path=/tmp/train-data/data.jsonl --set output.dir=/tmp/ptrain --set train.batch_size="$BATCH" \
    train --steps "${TRAIN_STEPS:-2}" --fresh > /tmp/ncu.csv 2> "$OUT/ncu_$WHAT.log"
else
  # One bench record: a warm-up-free end-to-end generate, the vision encoder, prefill + steps, generate again.
  timeout 400 "${ncu[@]}" $bin/vlmrun-cuda --device cuda --precision "$PRECISION" bench --model "$MODEL_DIR" \
    --batch-sizes "$BATCH" --beams 1 --tokens "$TOKENS" --warmup 0 --iterations 1 > /tmp/ncu.csv 2> "$OUT/ncu_$WHAT.log"
fi
echo "ncu exit $?"
python3 scripts/gpu/kernel_summary.py /tmp/ncu.csv | tee "$OUT/kernels_$WHAT.md"
