#!/usr/bin/env bash
# Where `vlmrun bench` spends its CPU time, per function (perf's sampling profile), for
# docs/performance.md's "CPU profile"; the PyTorch counterpart is scripts/cpu/torch_profile.py.
# Needs a release build that keeps its symbols:
#   CARGO_PROFILE_RELEASE_STRIP=none cargo build --release
# Knobs (environment): VLMRUN (binary), MODEL_DIR (benches/reference/pytorch_blip.py write --arch
# base), OUT (default /tmp/cpu-profile), BATCH=1, QUANT=none (or q8_0, q4k, ...), TOKENS=20, ROWS=30.
# Outputs: OUT/perf-<quant>-b<batch>.txt (self time per symbol, top ROWS) and the bench's .md.
set -uo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
VLMRUN="${VLMRUN:-$REPO/target/release/vlmrun}"; MODEL_DIR="${MODEL_DIR:-/tmp/cpu-bench-base}"
OUT="${OUT:-/tmp/cpu-profile}"; BATCH="${BATCH:-1}"; QUANT="${QUANT:-none}"; TOKENS="${TOKENS:-20}"
ROWS="${ROWS:-30}"
mkdir -p "$OUT"
tag="$QUANT-b$BATCH"
perf record -F 499 -o "$OUT/perf-$tag.data" -- "$VLMRUN" --device cpu bench --model "$MODEL_DIR" \
  --quantization "$QUANT" --batch-sizes "$BATCH" --beams 1 --tokens "$TOKENS" --warmup 0 --iterations 1 \
  --out "$OUT/bench-$tag.json" > "$OUT/bench-$tag.md" 2> "$OUT/perf-$tag.log" || { cat "$OUT/perf-$tag.log"; exit 1; }
perf report -i "$OUT/perf-$tag.data" --no-children --sort symbol --percent-limit 0.5 --stdio 2>/dev/null \
  | grep -v "^#" | grep -v "^$" | head -n "$ROWS" | sed 's/  */ /g' | cut -c1-160 > "$OUT/perf-$tag.txt"
cat "$OUT/perf-$tag.txt"
