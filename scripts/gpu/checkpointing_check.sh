#!/usr/bin/env bash
# One GPU call after an attention-forward or memory change: the attention kernels alone beside
# PyTorch's (attention_bench.sh run), the GPU kernel tests, training as `vlmrun bench --train`
# records (bf16, batch 32: as configured and with train.gradient_checkpointing; the largest
# batches with checkpointing), and the inference bench at batch 64 (the vision encoder uses the
# same attention forward). Expects carry/vlmrun-cuda.xz, carry/gpu_kernels.xz and the att_* bench
# binaries of attention_bench.sh build. Writes everything under $OUT.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
MODEL_DIR=/tmp/bench-base; DATA=/tmp/train-data; bin=/tmp/vlmrun-bin; mkdir -p $bin
xz -dc carry/vlmrun-cuda.xz > $bin/vlmrun-cuda && chmod +x $bin/vlmrun-cuda || exit 1
[ -f "$MODEL_DIR/model.safetensors" ] || python3 benches/reference/pytorch_blip.py write --arch base --model-dir "$MODEL_DIR" > "$OUT/write.log" 2>&1
[ -f "$DATA/data.jsonl" ] || python3 scripts/gpu/make_train_data.py "$DATA" > /dev/null
echo "== attention kernels alone"
bash scripts/gpu/attention_bench.sh run 20 2>&1 | tee "$OUT/attention_bench.txt" | grep -v "^check"
echo "== GPU kernel tests"
xz -dc carry/gpu_kernels.xz > /tmp/gpu_kernels && chmod +x /tmp/gpu_kernels
/tmp/gpu_kernels > "$OUT/gpu_kernels.txt" 2>&1; grep -E "^test |test result" "$OUT/gpu_kernels.txt"
train_bench() {  # label, steps, then --set pairs
  local label=$1 steps=$2; shift 2
  $bin/vlmrun-cuda --device cuda --precision bf16 --set model.source="$MODEL_DIR" \
    --set data.path="$DATA/data.jsonl" --set train.shuffle=false --set output.dir=/tmp/tb_$label "$@" \
    bench --train --train-steps "$steps" --out "$OUT/train_$label.json" > "$OUT/train_$label.md" 2> "$OUT/train_$label.log" \
    || { echo "$label failed:"; tail -5 "$OUT/train_$label.log"; }
  grep "^| [0-9]" "$OUT/train_$label.md" | sed "s/^/$label /"
}
echo "== training (bench --train): label | batch | accumulation | steps | samples/s | step ms | startup s | peak GPU GiB"
train_bench b32 20 --set train.batch_size=32
train_bench b32_ckpt 20 --set train.batch_size=32 --set train.gradient_checkpointing=true
for b in 64 128; do train_bench b${b}_ckpt 6 --set train.batch_size=$b --set train.gradient_checkpointing=true; done
train_bench b64 6 --set train.batch_size=64
echo "== inference bench bf16 batch 64 greedy"
$bin/vlmrun-cuda --device cuda --precision bf16 bench --model "$MODEL_DIR" --batch-sizes 64 --beams 1 \
  --tokens 20 --warmup 2 --iterations 5 --out "$OUT/bench_b64.json" > "$OUT/bench_b64.md" 2>&1
grep "^|" "$OUT/bench_b64.md"
