#!/usr/bin/env bash
# Builds the two-binary package in dist/: `vlmrun` (CPU build; starts everywhere and launches the CUDA
# build when the machine can load it) and `vlmrun-cuda` (CUDA build). See README, section CUDA.
#   scripts/build-dist.sh            both
#   scripts/build-dist.sh --cpu-only only dist/vlmrun
# Uses a system CUDA toolkit when nvcc is on PATH or CUDA_PATH is set, else scripts/cuda-toolchain.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mkdir -p dist
cargo build --release --locked
cp target/release/vlmrun dist/vlmrun
if [ "${1:-}" = "--cpu-only" ]; then exit 0; fi
if ! command -v nvcc >/dev/null 2>&1 && [ -z "${CUDA_PATH:-}" ]; then
  eval "$(scripts/cuda-toolchain.sh)"
fi
# As given (or set by cuda-toolchain.sh above), else what nvidia-smi reports, else 90, said on stderr.
if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
  CUDA_COMPUTE_CAP="$(scripts/cuda-compute-cap.sh)"
fi
export CUDA_COMPUTE_CAP
CARGO_TARGET_DIR="${VLMRUN_CUDA_TARGET_DIR:-target/cuda}" cargo build --release --locked --features cuda
cp "${VLMRUN_CUDA_TARGET_DIR:-target/cuda}/release/vlmrun" dist/vlmrun-cuda
echo "dist/vlmrun + dist/vlmrun-cuda (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)" >&2
