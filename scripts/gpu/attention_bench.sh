#!/usr/bin/env bash
# Fused attention kernels alone, beside PyTorch's, in one GPU call.
#   here:  bash scripts/gpu/attention_bench.sh build [OLD_REV]   (nvcc from scripts/cuda-toolchain.sh;
#          binaries into carry/: att_new (this tree's kernel), att_new3 (-DATT_BWD_BLOCKS=3),
#          att_old (the kernel at OLD_REV, default HEAD))
#   GPU:   bash scripts/gpu/attention_bench.sh run [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
case "${1:-}" in
build)
    old="${2:-HEAD}"
    mkdir -p carry
    git show "$old:src/kernels/attention/kernel.cu" > carry/att_old_kernel.cu
    for v in "new:src/kernels/attention/kernel.cu:2" "new3:src/kernels/attention/kernel.cu:3" \
             "old:carry/att_old_kernel.cu:2"; do
        IFS=: read -r name file blocks <<< "$v"
        nvcc -O3 -arch=sm_90 -DATT_BWD_BLOCKS="$blocks" -DKERNEL="\"$(realpath "$file")\"" \
            benches/cuda/attention_bench.cu -o "carry/att_$name"
    done
    ;;
run)
    runs="${2:-20}"
    nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader || true
    for b in carry/att_new carry/att_new3 carry/att_old; do
        [ -x "$b" ] || continue
        echo "== $b"
        "$b" "$runs" || echo "$b exited $?"
    done
    echo "== PyTorch"
    python3 scripts/gpu/attention_torch.py "$runs"
    ;;
*)
    echo "usage: $0 build [OLD_REV] | run [RUNS]" >&2
    exit 2
    ;;
esac
