#!/usr/bin/env bash
# One device call after a refactor (issue: layout) and for the training engine: f32 token-id
# parity with transformers on BLIP-base shapes (16 images, greedy/beam, with/without prompt), the
# bench numbers (bf16, batch 1 and 64, 20 tokens), the fused-kernel tests, f16 training with
# dynamic loss scaling on the fused kernels, and bf16 training throughput at batch 32.
# Expects carry/vlmrun-cuda.xz and carry/gpu_kernels.xz (see train_engine_check.sh).
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
bin=/tmp/vlmrun-bin; mkdir -p $bin
xz -dc carry/vlmrun-cuda.xz > $bin/vlmrun && chmod +x $bin/vlmrun || exit 1
M=/tmp/bench-base
[ -f $M/model.safetensors ] || python3 benches/reference/pytorch_blip.py write --arch base --model-dir $M >/dev/null 2>&1
echo "== parity base (f32 token ids)"
if python3 tests/fixtures/make_full_parity.py --out /tmp/parity-base --arch base --images 16 --device cuda \
    --vision-gain 2.0 --cross-gain 1.0 > "$OUT/make_parity.log" 2>&1; then
  python3 scripts/gpu/parity_compare.py --vlmrun $bin/vlmrun --dir /tmp/parity-base --arch base \
    2> "$OUT/parity_diff.txt" | tee "$OUT/parity.md"
else
  tail -3 "$OUT/make_parity.log"
fi
echo "== bench bf16"
$bin/vlmrun --device cuda --precision bf16 bench --model $M --batch-sizes 1,64 --beams 1 --tokens 20 \
  --warmup 2 --iterations 5 --out "$OUT/bench.json" 2>&1 | tail -6
if [ -f carry/gpu_kernels.xz ]; then
  xz -dc carry/gpu_kernels.xz > $bin/gpu_kernels && chmod +x $bin/gpu_kernels
  echo "== fused kernels"
  $bin/gpu_kernels --nocapture --test-threads 1 2>&1 | grep -v "^ *[0-9]*: \|^$" | tee "$OUT/gpu_kernels.txt" | tail -25
fi
[ -f /tmp/td/data.jsonl ] || python3 scripts/gpu/make_train_data.py /tmp/td >/dev/null
echo "== f16 training, loss scaling, fused kernels, 6 steps of 8"
$bin/vlmrun --device cuda --precision f16 --set model.source=$M --set data.path=/tmp/td/data.jsonl \
  --set output.dir=/tmp/f16t --set train.batch_size=8 train --steps 6 --fresh 2>&1 | tail -1
python3 -c "import json;[print({k:r.get(k) for k in ('step','loss','loss_scale','skipped','grad_norm')}) for r in map(json.loads,open('/tmp/f16t/metrics.jsonl'))]"
echo "== bf16 training, batch 32, 10 steps"
$bin/vlmrun --device cuda --precision bf16 --set model.source=$M --set data.path=/tmp/td/data.jsonl \
  --set output.dir=/tmp/bt --set train.batch_size=32 train --steps 10 --fresh 2>&1 | tail -1
cp /tmp/bt/train-summary.json "$OUT/train_summary_bf16.json"
