#!/usr/bin/env bash
# Prints the CUDA compute capability to build for, as CUDA_COMPUTE_CAP wants it (e.g. 90), and says on
# stderr where it came from:
#   1. $CUDA_COMPUTE_CAP when set (kept as given);
#   2. else `nvidia-smi --query-gpu=compute_cap` (the first GPU; a warning when the GPUs differ);
#   3. else 90 (H100/H200), said aloud: a build for another GPU then needs CUDA_COMPUTE_CAP set.
# NVIDIA_SMI names another nvidia-smi binary (tests use a stand-in).
set -euo pipefail
if [ -n "${CUDA_COMPUTE_CAP:-}" ]; then
  echo "vlmrun: CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP (from the environment)" >&2
  echo "$CUDA_COMPUTE_CAP"
  exit 0
fi
smi="${NVIDIA_SMI:-nvidia-smi}"
caps=""
if command -v "$smi" >/dev/null 2>&1; then
  caps="$("$smi" --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | tr -d ' .\r' | grep -E '^[0-9]+$' || true)"
fi
if [ -z "$caps" ]; then
  if command -v "$smi" >/dev/null 2>&1; then
    why="nvidia-smi reports no GPU compute capability"
  else
    why="no nvidia-smi on PATH"
  fi
  echo "vlmrun: $why; building for CUDA_COMPUTE_CAP=90 (H100/H200). For another GPU set it, e.g. CUDA_COMPUTE_CAP=86 (A10/RTX 30xx), 89 (L4/RTX 40xx), 80 (A100)" >&2
  echo 90
  exit 0
fi
first="$(echo "$caps" | head -n1)"
if [ "$(echo "$caps" | sort -u | wc -l)" -gt 1 ]; then
  echo "vlmrun: the GPUs have different compute capabilities ($(echo "$caps" | sort -u | tr '\n' ' ' | sed 's/ $//')); building for the first GPU's, $first; set CUDA_COMPUTE_CAP to choose" >&2
fi
echo "vlmrun: CUDA_COMPUTE_CAP=$first (from nvidia-smi)" >&2
echo "$first"
