#!/usr/bin/env bash
# Functional checks on one GPU that the CPU CI cannot make (docs/runs/h100-2026-11-24b/checks.txt):
# a q4k GGUF written by `vlmrun quantize` and captioned from on CUDA (against quantizing at load),
# f16 training with dynamic loss scaling, and data-parallel `baseline` with 2 ranks sharing the one GPU
# (the multi-process path on CUDA; not a scaling measurement). Expects .device-bin/vlmrun-cuda.xz.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
b=/tmp/vb; mkdir -p $b; xz -dc .device-bin/vlmrun-cuda.xz > $b/vlmrun; chmod +x $b/vlmrun
M=/tmp/bench-base
[ -f $M/model.safetensors ] || python3 benches/reference/pytorch_blip.py write --arch base --model-dir $M >/dev/null 2>&1
imgs="tests/fixtures/images/astronaut.png tests/fixtures/images/coffee.png"
echo "== quantize base -> q4k GGUF, caption on CUDA (GGUF, then quantized at load)"
time $b/vlmrun --device cuda quantize --model $M --to q4k --out /tmp/base-q4k.gguf 2>&1 | tail -3
ls -la /tmp/base-q4k.gguf
$b/vlmrun --device cuda --precision bf16 --set model.source=/tmp/base-q4k.gguf caption --json $imgs 2>&1 | cut -c1-220
$b/vlmrun --device cuda --precision bf16 --set model.source=$M --set quantization=q4k caption --json $imgs 2>&1 | cut -c1-220
echo "== f16 training with loss scaling, 6 steps of 8"
python3 scripts/gpu/make_train_data.py /tmp/td >/dev/null
$b/vlmrun --device cuda --precision f16 --set model.source=$M --set data.path=/tmp/td/data.jsonl \
  --set output.dir=/tmp/f16t --set train.batch_size=8 train --steps 6 --fresh 2>&1 | tail -2
python3 -c "import json;[print({k:r[k] for k in ('step','loss','loss_scale','skipped','grad_norm')}) for r in map(json.loads,open('/tmp/f16t/metrics.jsonl'))]"
echo "== baseline, 256 images: 1 process, then 2 ranks sharing the GPU"
python3 - <<'P'
import numpy as np; from PIL import Image; from pathlib import Path
d = Path('/tmp/s256'); d.mkdir(exist_ok=True); r = np.random.default_rng(0)
for i in range(256):
    Image.fromarray(r.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((640, 480)).save(d / f"i{i:03d}.jpg", quality=90)
P
common=(--device cuda --precision bf16 --set model.source=$M --set data.source=folder --set data.path=/tmp/s256 --set generation.batch_size=64)
$b/vlmrun "${common[@]}" --set output.dir=/tmp/dp1 -q baseline --fresh; echo "1 process exit $?"
for k in 0 1; do CUDA_VISIBLE_DEVICES=0 RANK=$k WORLD_SIZE=2 $b/vlmrun "${common[@]}" --set output.dir=/tmp/dp2 -q baseline --fresh & done; wait
echo "2 ranks done"; wc -l /tmp/dp1/predictions.jsonl /tmp/dp2/predictions.jsonl
python3 - <<'P'
import json
one = {json.loads(l)["id"]: json.loads(l)["token_ids"] for l in open("/tmp/dp1/predictions.jsonl")}
two = {json.loads(l)["id"]: json.loads(l)["token_ids"] for l in open("/tmp/dp2/predictions.jsonl")}
print("same ids", one.keys() == two.keys(), "same tokens", sum(one[k] == two.get(k) for k in one), "/", len(one))
for name in ("dp1", "dp2"):
    r = json.load(open(f"/tmp/{name}/report.json"))
    print(name, json.dumps(r.get("timings"))[:400]); print(name, "distributed", json.dumps(r.get("distributed"))[:500])
P
