#!/usr/bin/env bash
# Provision the pinned CUDA 13.0 build toolchain from PyPI wheels into .cuda-toolchain/ (git-ignored),
# for machines that have no system CUDA toolkit. Prints the environment to export for
# `cargo build --release --features cuda` (README, section CUDA). CUDA_COMPUTE_CAP: as given, else what
# nvidia-smi reports, else 90 with a note on stderr (scripts/cuda-compute-cap.sh).
#
# Why pinned: an nvcc newer than the driver's CUDA version emits PTX the driver rejects
# (CUDA_ERROR_UNSUPPORTED_PTX_VERSION). 13.0 matches driver 580.x. Install everything in ONE pip call:
# a second `pip install --target` replaces the whole nvidia/ folder.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${VLMRUN_CUDA_TOOLCHAIN:-$root/.cuda-toolchain}"
cu="$dest/nvidia/cu13"
py="${PYTHON:-python3}"

if [ ! -x "$cu/bin/nvcc" ]; then
  echo "vlmrun: installing the CUDA 13.0 toolchain wheels into $dest (~1.2 GB)" >&2
  "$py" -m pip install --quiet --no-deps --target "$dest" \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 \
    nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cuda-cccl==13.0.85 \
    nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
fi

# Unversioned names the linker looks for.
cd "$cu/lib"
for l in libcublas libcublasLt libcudart libnvrtc; do
  [ -e "$l.so" ] || ln -s "$l.so.13" "$l.so"
done
[ -e libcurand.so ] || ln -s libcurand.so.10 libcurand.so

# libcuda.so belongs to the driver and no wheel ships a link stub: generate one that defines every
# cu* function cudarc declares (each returns CUDA_ERROR_NOT_INITIALIZED). At run time the driver's real
# libcuda.so.1 is loaded instead (same SONAME).
if [ ! -e stubs/libcuda.so ]; then
  mkdir -p stubs
  sys_rs="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs 2>/dev/null | sort -V | tail -1 || true)"
  if [ -z "$sys_rs" ]; then
    (cd "$root" && cargo fetch >/dev/null 2>&1) || true
    sys_rs="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs 2>/dev/null | sort -V | tail -1 || true)"
  fi
  if [ -z "$sys_rs" ]; then
    echo "vlmrun: cudarc 0.19 sources not found; run 'cargo fetch --features cuda' first" >&2
    exit 1
  fi
  grep -oE 'fn cu[A-Za-z0-9_]+\(' "$sys_rs" | sed -E 's/fn (cu[A-Za-z0-9_]+)\(/\1/' | sort -u \
    | awk '{ printf "int %s(void) { return 3; }\n", $1 }' > stubs/libcuda_stub.c
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o stubs/libcuda.so stubs/libcuda_stub.c
fi

cap="$("$root/scripts/cuda-compute-cap.sh")"

cat <<ENV
export CUDA_PATH="$cu"
export CUDA_ROOT="$cu"
export PATH="$cu/bin:\$PATH"
export LIBRARY_PATH="$cu/lib:$cu/lib/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="$cap"
ENV
