#!/usr/bin/env bash
# Decode through recorded steps (CUDA graphs), one device call: the fused-kernel tests (recorded vs
# eager token ids included), f32 token-id parity with transformers on BLIP-base shapes (graphs on,
# the default), `vlmrun bench` bf16 with generation.cuda_graphs on and off, and the whole-dataset
# run (2048 JPEGs, batch 64, bf16): vlmrun baseline with graphs on and off (their captions compared)
# beside the transformers script of scripts/gpu/whole_dataset.py. About 6 minutes.
# Expects carry/vlmrun-cuda.xz and carry/gpu_kernels.xz. Knobs: BATCHES=1,8,64 IMAGES=2048
# PARTS="kernels parity bench dataset" (also: ab, with AB="a.xz b.xz": the bench for each build).
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
PARTS="${PARTS:-kernels parity bench dataset}"
bin=/tmp/vlmrun-bin; mkdir -p $bin; M=/tmp/bench-base; WD=/tmp/wd
xz -dc carry/vlmrun-cuda.xz > $bin/vlmrun && chmod +x $bin/vlmrun || exit 1
[ -f $M/model.safetensors ] || python3 benches/reference/pytorch_blip.py write --arch base --model-dir $M > "$OUT/write.log" 2>&1
has() { [[ " $PARTS " == *" $1 "* ]]; }
if has kernels && [ -f carry/gpu_kernels.xz ]; then
  xz -dc carry/gpu_kernels.xz > $bin/gpu_kernels && chmod +x $bin/gpu_kernels
  echo "== fused kernels and recorded decode steps"
  $bin/gpu_kernels --nocapture --test-threads 1 > "$OUT/gpu_kernels.txt" 2>&1
  grep -E "^test |test result|recorded|panicked" "$OUT/gpu_kernels.txt" | tail -20
fi
if has ab; then
  # The same bench for each binary of AB (xz files), graphs on: an A/B of two builds in one call.
  for x in ${AB:-}; do
    name=$(basename "$x" .xz); xz -dc "$x" > $bin/$name && chmod +x $bin/$name
    echo "== bench bf16, $name"
    $bin/$name --device cuda --precision bf16 bench --model $M --batch-sizes "${BATCHES:-1,8,64}" --beams 1 \
      --tokens 20 --warmup 2 --iterations 5 --out "$OUT/bench_$name.json" > "$OUT/bench_$name.md" 2> "$OUT/bench_$name.log"
    echo "exit $?"; grep "^|" "$OUT/bench_$name.md" | tail -n +3 | head -6
  done
fi
if has parity; then
  echo "== parity base (f32 token ids, graphs on)"
  if python3 tests/fixtures/make_full_parity.py --out /tmp/parity-base --arch base --images 16 --device cuda \
      --vision-gain 2.0 --cross-gain 1.0 > "$OUT/make_parity.log" 2>&1; then
    python3 scripts/gpu/parity_compare.py --vlmrun $bin/vlmrun --dir /tmp/parity-base --arch base \
      2> "$OUT/parity_diff.txt" | tee "$OUT/parity.md"
  else
    tail -3 "$OUT/make_parity.log"
  fi
fi
if has bench; then
  for g in true false; do
    echo "== bench bf16, generation.cuda_graphs=$g"
    $bin/vlmrun --device cuda --precision bf16 --set generation.cuda_graphs=$g bench --model $M \
      --batch-sizes "${BATCHES:-1,8,64}" --beams 1 --tokens 20 --warmup 2 --iterations 5 \
      --out "$OUT/bench_graphs_$g.json" > "$OUT/bench_graphs_$g.md" 2> "$OUT/bench_graphs_$g.log"
    echo "exit $?"; grep "^|" "$OUT/bench_graphs_$g.md" | head -8; grep -i "warn\|record" "$OUT/bench_graphs_$g.log" | head -3
  done
fi
if has dataset; then
  [ -f $WD/data.jsonl ] || python3 scripts/gpu/whole_dataset.py make $WD "${IMAGES:-2048}" > /dev/null
  for g in true false; do
    echo "== whole dataset, vlmrun baseline, generation.cuda_graphs=$g"
    s=$(date +%s.%N)
    $bin/vlmrun --device cuda --precision bf16 --set model.source=$M --set data.path=$WD/data.jsonl \
      --set output.dir=/tmp/wd_$g --set generation.batch_size=64 --set preprocess.workers=16 \
      --set generation.cuda_graphs=$g baseline --fresh > "$OUT/wd_$g.log" 2>&1; echo "exit $?"
    e=$(date +%s.%N)
    python3 - "$s" "$e" /tmp/wd_$g/report.json <<'PY'
import json, sys
s, e, path = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
r = json.load(open(path)); t = r.get("timings", {})
print(json.dumps({"process_wall_s": round(e - s, 2), "images_per_s": t.get("images_per_s"),
                  "generation_images_per_s": t.get("generation_images_per_s"), "done": r.get("done")}))
PY
  done
  python3 - <<'PY'
import json
def load(p): return {r["id"]: r.get("token_ids") or r.get("caption") for r in map(json.loads, open(p))}
a, b = load("/tmp/wd_true/predictions.jsonl"), load("/tmp/wd_false/predictions.jsonl")
same = sum(a[k] == b.get(k) for k in a)
print(f"graphs on vs off: {same}/{len(a)} captions identical ({len(b)} without graphs)")
PY
  echo "== whole dataset, transformers (DataLoader 8 workers, bf16, batch 64)"
  python3 scripts/gpu/whole_dataset.py hf $M $WD /tmp/wd_hf.jsonl 2> "$OUT/wd_hf.log" | tail -1
fi
cp /tmp/wd_true/report.json "$OUT/wd_report_graphs.json" 2>/dev/null
tar czf /tmp/graphs_check.tgz -C "$OUT" . && rm -rf "${OUT:?}"/* && mv /tmp/graphs_check.tgz "$OUT/"
