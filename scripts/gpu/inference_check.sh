#!/usr/bin/env bash
# Inference on the GPU in one call (issue: inference engine): `vlmrun bench` (bf16, BATCHES, greedy)
# beside PyTorch eager generate (benches/reference/pytorch_blip.py bench) and PyTorch's vision encoder
# eager / SDPA / torch.compile max-autotune (scripts/gpu/vision_compile.py), then `vlmrun fidelity`
# (f32 reference against FIDELITY variants, greedy) on the training scenes of make_train_data.py.
# Expects carry/vlmrun-cuda.xz. Knobs: BATCHES=1,64 ITERS=5 COMPILE_MODES=eager,sdpa,max-autotune
# COMPILE_TIMEOUT=240 FIDELITY=f16,bf16 FIDELITY_LIMIT=64. Writes under $OUT.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
BATCHES="${BATCHES:-1,64}"; ITERS="${ITERS:-5}"; MODEL_DIR=/tmp/bench-base; DATA=/tmp/train-data
bin=/tmp/vlmrun-bin; mkdir -p $bin
[ -x $bin/vlmrun-cuda ] || { xz -dc carry/vlmrun-cuda.xz > $bin/vlmrun-cuda && chmod +x $bin/vlmrun-cuda; } || exit 1
[ -f "$MODEL_DIR/model.safetensors" ] || python3 benches/reference/pytorch_blip.py write --arch base --model-dir "$MODEL_DIR" > "$OUT/write.log" 2>&1
common=(--batch-sizes "$BATCHES" --beams 1 --tokens 20 --warmup 2 --iterations "$ITERS")
echo "== vlmrun bench bf16"
$bin/vlmrun-cuda --device cuda --precision bf16 bench --model "$MODEL_DIR" "${common[@]}" \
  --out "$OUT/vlmrun_bf16.json" > "$OUT/vlmrun_bf16.md" 2> "$OUT/vlmrun_bf16.log"; echo "exit $?"
cat "$OUT/vlmrun_bf16.md"; tail -3 "$OUT/vlmrun_bf16.log"
echo "== PyTorch eager generate bf16"
python3 benches/reference/pytorch_blip.py bench --model-dir "$MODEL_DIR" --precision bf16 "${common[@]}" \
  --out "$OUT/pytorch_bf16.json" > "$OUT/pytorch_bf16.log" 2>&1; grep -i "images/s" "$OUT/pytorch_bf16.log" | tail -4
echo "== PyTorch vision encoder"
timeout "${COMPILE_TIMEOUT:-240}" python3 scripts/gpu/vision_compile.py "$MODEL_DIR" 64 20 \
  "${COMPILE_MODES:-eager,sdpa,max-autotune}" 2>&1 | grep -v Warning | tee "$OUT/vision_compile.txt"
echo "== vlmrun fidelity (f32 reference vs ${FIDELITY:-f16,bf16}, greedy)"
[ -f "$DATA/data.jsonl" ] || python3 scripts/gpu/make_train_data.py "$DATA" > /dev/null
$bin/vlmrun-cuda --device cuda --set data.path="$DATA/data.jsonl" --set output.dir=/tmp/fid fidelity \
  --model "$MODEL_DIR" --variants "${FIDELITY:-f16,bf16}" --beams 1 --limit "${FIDELITY_LIMIT:-64}" \
  --out "$OUT/fidelity.json" > "$OUT/fidelity.md" 2> "$OUT/fidelity.log"; echo "exit $?"
cat "$OUT/fidelity.md"; tail -3 "$OUT/fidelity.log"
