#!/usr/bin/env bash
# Per-kernel GPU time of decode steps (docs/performance.md): Nsight Compute times ~2.5 steps in the
# middle of one eager `vlmrun bench` generate (BLIP-base, bf16, 20 tokens) at each batch size of
# BATCHES, skipping the vision encoder and the prefill (SKIP launches), and scripts/gpu/kernel_summary.py
# groups them. Kernel replay serialises launches: the sum is pure GPU time. Expects carry/vlmrun-cuda.xz.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
bin=/tmp/vlmrun-bin; mkdir -p $bin; M=/tmp/bench-base
[ -x $bin/vlmrun ] || { xz -dc carry/vlmrun-cuda.xz > $bin/vlmrun && chmod +x $bin/vlmrun; } || exit 1
[ -f $M/model.safetensors ] || python3 benches/reference/pytorch_blip.py write --arch base --model-dir $M > /dev/null 2>&1
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "ncu not found"; exit 1; }
NSYS=$(command -v nsys || ls /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda*/bin/nsys 2>/dev/null | head -1)
echo "nsys: ${NSYS:-none}"
if [ -n "$NSYS" ]; then
  for b in ${BATCHES:-1 64}; do
    for g in false true; do
      "$NSYS" profile -t cuda --cuda-graph-trace=node -o /tmp/nsys_b${b}_$g -f true $bin/vlmrun --set generation.cuda_graphs=$g \
        --device cuda --precision bf16 bench --model $M --batch-sizes "$b" --beams 1 --tokens 20 --warmup 2 --iterations 3 \
        > /tmp/nsys_b${b}_$g.log 2>&1; echo "nsys b$b graphs=$g exit $?"
      "$NSYS" stats --report cuda_gpu_trace --format csv -o /tmp/trace_b${b}_$g /tmp/nsys_b${b}_$g.nsys-rep > /dev/null 2>&1
      ls /tmp/trace_b${b}_$g* 2>/dev/null | head -2
      f=$(ls /tmp/trace_b${b}_$g*.csv 2>/dev/null | head -1); [ -n "$f" ] && xz -T4 -c "$f" > "$OUT/trace_b${b}_$g.csv.xz"
    done
  done
  exit 0
fi
for b in ${BATCHES:-1 64}; do
  echo "== batch $b"
  timeout 240 "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
    --launch-skip "${SKIP:-4000}" --launch-count "${COUNT:-250}" \
    $bin/vlmrun --set generation.cuda_graphs=false --device cuda --precision bf16 bench --model $M \
    --batch-sizes "$b" --beams 1 --tokens 20 --warmup 0 --iterations 1 > "$OUT/ncu_b$b.csv" 2> "$OUT/ncu_b$b.log"
  echo "ncu exit $?"
  python3 scripts/gpu/kernel_summary.py "$OUT/ncu_b$b.csv" | tee "$OUT/kernels_b$b.md" | head -30
done
