#!/usr/bin/env bash
# First GPU look at precision and quantization (run after scripts/gpu/h100_run.sh has written /tmp/parity-base, or it writes
# it): for each quantization format, exact-sequence and per-token greedy agreement with vlmrun bf16 on the
# parity images, and `vlmrun bench` speed at batch 1 and 64. Expects .device-bin/*.xz like h100_run.sh.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
bin=/tmp/vlmrun-bin; mkdir -p $bin
[ -x $bin/vlmrun-cuda ] || { xz -dc .device-bin/vlmrun.xz > $bin/vlmrun; xz -dc .device-bin/vlmrun-cuda.xz > $bin/vlmrun-cuda; chmod +x $bin/*; }
[ -f /tmp/parity-base/model/model.safetensors ] || python3 tests/fixtures/make_full_parity.py --out /tmp/parity-base \
  --arch base --images 16 --device cuda --no-f64-check > /dev/null 2>&1
imgs=(/tmp/parity-base/images/*.png)
for q in none q8_0 q4k q4_0; do
  $bin/vlmrun --device cuda --precision bf16 --set quantization=$q caption --json --batch-size 16 \
    --model /tmp/parity-base/model "${imgs[@]}" > /tmp/caps_$q.jsonl 2> /tmp/caps_$q.err || tail -3 /tmp/caps_$q.err
done
python3 - <<'PY' | tee "$OUT/quant_agreement.md"
import json
def load(q):
    return {json.loads(l)["image"]: json.loads(l)["token_ids"] for l in open(f"/tmp/caps_{q}.jsonl")}
ref = load("none")
print("| quantization | images | exact sequences = bf16 | tokens = bf16 (position-wise) |")
print("|---|---|---|---|")
for q in ["none", "q8_0", "q4k", "q4_0"]:
    try:
        got = load(q)
    except Exception as e:
        print(f"| {q} | - | failed: {e} | |"); continue
    exact = sum(got.get(k) == v for k, v in ref.items())
    same = sum(a == b for k, v in ref.items() for a, b in zip(v, got.get(k, [])))
    total = sum(len(v) for v in ref.values())
    print(f"| {q} | {len(ref)} | {exact}/{len(ref)} | {same}/{total} ({100*same/total:.1f}%) |")
PY
for q in none q8_0 q4k; do
  $bin/vlmrun --device cuda --precision bf16 --set quantization=$q bench --model /tmp/parity-base/model \
    --batch-sizes 1,64 --beams 1 --tokens 20 --warmup 1 --iterations 3 --out /tmp/bench_$q.json 2>/dev/null \
    | grep -E "^\| (1|64) " | sed "s/^/$q /" | tee -a "$OUT/quant_speed.md"
done
