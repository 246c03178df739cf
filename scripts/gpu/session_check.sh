#!/usr/bin/env bash
# The closing GPU check of a change to the training engine, in one call (about 7 minutes):
#   kernel tests, the same-call speed table (PyTorch eager and compiled beside vlmrun), a 300-step
#   loss curve beside PyTorch eager, peak memory per batch size, startup to the first step, and
#   PyTorch's own bf16 fidelity on the images inference_check.sh's `vlmrun fidelity` uses.
# Expects carry/vlmrun-cuda.xz and carry/gpu_kernels.xz. Leaves $OUT/session_check.tgz (everything).
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
MODEL_DIR=/tmp/bench-base; DATA=/tmp/train-data; bin=/tmp/vlmrun-bin; mkdir -p $bin
[ -x $bin/vlmrun-cuda ] || { xz -dc carry/vlmrun-cuda.xz > $bin/vlmrun-cuda && chmod +x $bin/vlmrun-cuda; } || exit 1
[ -f "$MODEL_DIR/model.safetensors" ] || python3 benches/reference/pytorch_blip.py write --arch base --model-dir "$MODEL_DIR" > "$OUT/write.log" 2>&1
[ -f "$DATA/data.jsonl" ] || python3 scripts/gpu/make_train_data.py "$DATA" > /dev/null
PARTS="kernels speed curve memory" MODES="gpu compile" BATCHES="${BATCHES:-8 16 24 48}" \
  LOSS_STEPS="${LOSS_STEPS:-300}" bash scripts/gpu/train_explicit_check.sh
echo "== startup: process start to the end of one step (batch 32, bf16)"
s=$(date +%s.%N)
$bin/vlmrun-cuda --device cuda --precision bf16 --set model.source="$MODEL_DIR" --set data.path="$DATA/data.jsonl" \
  --set output.dir=/tmp/t_start --set train.batch_size=32 train --steps 1 --fresh > "$OUT/startup.log" 2>&1
e=$(date +%s.%N); echo "wall for 1 step: $(python3 -c "print(f'{$e - $s:.2f} s')")"; grep -iE "load|first|step" "$OUT/startup.log" | tail -5
echo "== PyTorch bf16 fidelity on the same weights and images"
python3 scripts/gpu/pytorch_fidelity.py --model "$MODEL_DIR" --images "$DATA" --device cuda --dtypes bf16 \
  --beams 1 --out "$OUT/pytorch_fidelity.json" > "$OUT/pytorch_fidelity.log" 2>&1; tail -4 "$OUT/pytorch_fidelity.log"
echo "== vlmrun bench bf16 (inference, batch 1 and 64, greedy)"
$bin/vlmrun-cuda --device cuda --precision bf16 bench --model "$MODEL_DIR" --batch-sizes 1,64 --beams 1 \
  --tokens 20 --warmup 2 --iterations 5 --out "$OUT/vlmrun_bench_bf16.json" > "$OUT/vlmrun_bench_bf16.md" 2>&1
cat "$OUT/vlmrun_bench_bf16.md" | grep "^|"
# The device returns a few files per call: everything as one archive.
tar czf /tmp/session_check.tgz --exclude='*.safetensors' -C "$OUT" . && rm -rf "${OUT:?}"/* && mv /tmp/session_check.tgz "$OUT/"
