#!/usr/bin/env bash
# Fused attention kernels alone, beside PyTorch's, in one GPU call.
#   here:  bash scripts/gpu/attention_bench.sh build [OLD_REV]   (nvcc from scripts/cuda-toolchain.sh;
#          binaries into carry/: att_new (this tree's kernel as compiled for vlmrun), att_new_mt2
#          (-DATT_FWD_MT=2: two 16-row tiles per warp in the forward), att_old (the kernel at
#          OLD_REV, default HEAD))
#   GPU:   bash scripts/gpu/attention_bench.sh run [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
case "${1:-}" in
build)
    old="${2:-HEAD}"
    mkdir -p carry
    git show "$old:src/kernels/attention/kernel.cu" > carry/att_old_kernel.cu
    for v in "new:src/kernels/attention/kernel.cu:" "new_mt2:src/kernels/attention/kernel.cu:-DATT_FWD_MT=2" \
             "old:carry/att_old_kernel.cu:"; do
        IFS=: read -r name file flags <<< "$v"
        # shellcheck disable=SC2086
        nvcc -O3 -arch=sm_90 $flags -DKERNEL="\"$(realpath "$file")\"" \
            benches/cuda/attention_bench.cu -o "carry/att_$name"
    done
    ;;
run)
    runs="${2:-20}"
    nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader || true
    for b in carry/att_new carry/att_new_mt2 carry/att_old; do
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
