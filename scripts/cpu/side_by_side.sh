#!/usr/bin/env bash
# vlmrun against PyTorch on the CPU, same random BLIP-base weights, interleaved rounds
# (docs/performance.md, "CPU: vlmrun vs PyTorch"). Each round runs PyTorch f32 and then every
# vlmrun variant once, with the same settings; the summary gives per variant and batch size the
# median over rounds of images/s, vision ms and decode-step ms, and the median of the per-round
# ratios vlmrun / PyTorch (each ratio from one pair measured minutes apart).
#
# PyTorch: torch 2.11.0 (CPU use of the PyPI wheel), transformers 5.17.0, eager, f32, the pins of
# benches/reference/pytorch_blip.py. Weights: `pytorch_blip.py write --arch base` once into MODEL_DIR.
#
# Knobs (environment): VLMRUN (binary; default target/release/vlmrun), PY (python with the pinned
# torch/transformers; default python3), MODEL_DIR (default /tmp/cpu-bench-base), OUT (default
# /tmp/cpu-side-by-side), ROUNDS=2, VARIANTS="f32 q8_0" (f32, bf16, or a quantization q8_0/q4k/q6k/q4_0,
# optionally NAME:HOW with HOW a --quantized-matmul choice, e.g. q8_0:kernel; a base/ prefix runs the
# binary BASE_VLMRUN instead, e.g. base/f32 for a before/after pair), BATCHES=1,4, TOKENS=20,
# WARMUP=1, ITERS=3. Both tools use every core they are given (RAYON_NUM_THREADS / torch's default).
# Outputs in OUT: r<N>/pytorch_f32.json, r<N>/vlmrun_<variant>.json (+ .md, .log), summary.md.
set -uo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
VLMRUN="${VLMRUN:-$REPO/target/release/vlmrun}"; PY="${PY:-python3}"
MODEL_DIR="${MODEL_DIR:-/tmp/cpu-bench-base}"; OUT="${OUT:-/tmp/cpu-side-by-side}"
ROUNDS="${ROUNDS:-2}"; VARIANTS="${VARIANTS:-f32 q8_0}"; BATCHES="${BATCHES:-1,4}"
TOKENS="${TOKENS:-20}"; WARMUP="${WARMUP:-1}"; ITERS="${ITERS:-3}"
mkdir -p "$OUT"
[ -x "$VLMRUN" ] || { echo "no vlmrun binary at $VLMRUN (cargo build --release, or set VLMRUN)"; exit 2; }
if [ ! -f "$MODEL_DIR/model.safetensors" ]; then
  "$PY" "$REPO/benches/reference/pytorch_blip.py" write --arch base --model-dir "$MODEL_DIR" || exit 1
fi
{ lscpu | grep -E "Model name|^CPU\(s\)"
  grep -m1 -o -w -E "avx2|avx512f|avx512_vnni|avx512_bf16|amx_bf16|amx_int8" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
  echo "RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-unset} nproc=$(nproc)"; uptime; } > "$OUT/machine.txt"
common=(--batch-sizes "$BATCHES" --beams 1 --tokens "$TOKENS" --warmup "$WARMUP" --iterations "$ITERS")
for r in $(seq 1 "$ROUNDS"); do
  dir="$OUT/r$r"; mkdir -p "$dir"
  echo "== round $r: PyTorch f32 ($(uptime | sed 's/.*load/load/'))"
  "$PY" "$REPO/benches/reference/pytorch_blip.py" bench --device cpu --precision f32 --model-dir "$MODEL_DIR" \
    "${common[@]}" --out "$dir/pytorch_f32.json" > "$dir/pytorch_f32.log" 2>&1 || echo "PyTorch failed (see $dir/pytorch_f32.log)"
  for v in $VARIANTS; do
    bin="$VLMRUN"; spec="$v"
    case "$v" in base/*) bin="${BASE_VLMRUN:?set BASE_VLMRUN for base/ variants}"; spec="${v#base/}" ;; esac
    name="${spec%%:*}"; how=""; [ "$name" != "$spec" ] && how="${spec#*:}"
    args=(--device cpu); extra=()
    case "$name" in
      f32|bf16|f16) args+=(--precision "$name") ;;
      *) args+=(--precision f32); extra+=(--quantization "$name") ;;
    esac
    [ -n "$how" ] && extra+=(--quantized-matmul "$how")
    tag="${v//:/-}"; tag="${tag//\//-}"
    echo "== round $r: vlmrun $v ($(uptime | sed 's/.*load/load/'))"
    "$bin" "${args[@]}" bench --model "$MODEL_DIR" "${extra[@]}" "${common[@]}" \
      --out "$dir/vlmrun_$tag.json" > "$dir/vlmrun_$tag.md" 2> "$dir/vlmrun_$tag.log" || echo "vlmrun $v failed (see $dir/vlmrun_$tag.log)"
  done
done
"$PY" - "$OUT" "$ROUNDS" $VARIANTS <<'PY' | tee "$OUT/summary.md"
import json, statistics, sys
from pathlib import Path
out, rounds, variants = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
def load(r, name):
    p = out / f"r{r}" / name
    return json.loads(p.read_text()) if p.exists() else None
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
def f(v, d=2):
    return "-" if v is None else f"{v:.{d}f}"
torch_docs = [load(r, "pytorch_f32.json") for r in range(1, rounds + 1)]
def rec(doc, batch):
    return next((x for x in doc["records"] if x["batch_size"] == batch and x["num_beams"] == 1), None) if doc else None
batches = sorted({x["batch_size"] for d in torch_docs if d for x in d["records"]})
print(f"{rounds} interleaved rounds; medians over rounds; ratio = median of per-round vlmrun / PyTorch f32\n")
print("| tool | batch | images/s | ratio | vision ms per image | ratio (speed) | decode step ms | ratio (speed) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for b in batches:
    t = [rec(d, b) for d in torch_docs]
    def col(rs, key, per_image=False):
        return [None if r is None or r.get(key) is None else r[key] / (b if per_image else 1) for r in rs]
    t_ips, t_vis, t_dec = col(t, "images_per_s"), col(t, "vision_ms", True), col(t, "decode_step_ms")
    print(f"| PyTorch f32 | {b} | {f(med(t_ips))} | 1.00x | {f(med(t_vis), 0)} | 1.00x | {f(med(t_dec), 1)} | 1.00x |")
    for v in variants:
        tag = v.replace(":", "-").replace("/", "-")
        vr = [rec(load(r, f"vlmrun_{tag}.json"), b) for r in range(1, rounds + 1)]
        v_ips, v_vis, v_dec = col(vr, "images_per_s"), col(vr, "vision_ms", True), col(vr, "decode_step_ms")
        ratio = lambda a, c, inv=False: med([(y / x if inv else x / y) for x, y in zip(a, c) if x and y])
        print(f"| vlmrun {v} | {b} | {f(med(v_ips))} | {f(ratio(v_ips, t_ips))}x | {f(med(v_vis), 0)} "
              f"| {f(ratio(v_vis, t_vis, True))}x | {f(med(v_dec), 1)} | {f(ratio(v_dec, t_dec, True))}x |")
PY
