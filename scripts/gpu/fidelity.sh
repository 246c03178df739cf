#!/usr/bin/env bash
# Precision and quantization fidelity on the H100 in one device call (docs/precision.md):
#  1. random-weight BLIP (base shapes; make_fidelity_model.py: make_full_parity.py's init, gains raised
#     until at least half the greedy captions are distinct) and >= 64 images (repository samples,
#     skimage photos, deterministic synthetic ones), written once outside $OUT;
#  2. `vlmrun fidelity`: f32 dense reference against $VARIANTS, greedy and beam 3;
#  3. scripts/gpu/pytorch_fidelity.py: PyTorch's own f16/bf16 agreement with PyTorch f32 on the same
#     weights and images (same metrics), and vlmrun f32 against PyTorch f32;
#  4. `vlmrun bench` per precision/quantization: images/s at batch 1 and 64, peak GPU memory.
#
# Expects .device-bin/{vlmrun,vlmrun-cuda}.xz (CPU launcher + CUDA build), as scripts/gpu/h100_run.sh.
# About 6-8 minutes on an H100 with the defaults (first run; the model is reused from $FID afterwards).
# Knobs (environment): ARCH=base|large, IMAGES=64, MODEL=random|trained (trained: the random model
# fine-tuned by make_trained_fidelity_model.py for STEPS=1500 steps of TRAIN_BATCH=64 at TRAIN_LR=2e-4,
# the settings of docs/precision.md's trained model, measured on IMAGES held-out scenes),
# VARIANTS (vlmrun fidelity --variants), BEAMS=1,3, TORCH_DTYPES=f16,bf16 (PyTorch side),
# BATCH=16 (fidelity batch), GAINS (vision:cross gain pairs tried in turn), MIN_DISTINCT=0.5 (fraction
# of distinct greedy captions a random model must reach; at 256-1024 images gains 2.0:2.0 give 29-51%),
# BENCH="f32:none f16:none bf16:none f16:q8_0 f16:q4k f16:q4_0 bf16:q4k"
# (PRECISION:QUANTIZATION pairs; empty: no bench), BENCH_BATCHES=1,64, FID (model + images dir),
# LIMIT (use only the first N images), DEVICE=cuda, VLMRUN_BIN (a folder with vlmrun: skips unpacking;
# with DEVICE=cpu ARCH=mid this runs on a CPU machine as a dry run).
# Outputs in $OUT (6-7 files): summary.md (every table), fidelity.json (vlmrun.fidelity/1),
# pytorch_fidelity.json, bench.json (the vlmrun.bench/1 documents, one per pair), model_info.json,
# trained_model_info.json (MODEL=trained), run.log.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
ARCH="${ARCH:-base}"; IMAGES="${IMAGES:-64}"; BEAMS="${BEAMS:-1,3}"; BATCH="${BATCH:-16}"
VARIANTS="${VARIANTS:-f32,f16,bf16,q8_0,q8_0:kernel,q4k,q4k@bf16,q4_0}"
BENCH="${BENCH-f32:none f16:none bf16:none f16:q8_0 f16:q4k f16:q4_0 bf16:q4k}"
BENCH_BATCHES="${BENCH_BATCHES:-1,64}"
FID="${FID:-/tmp/fid-$ARCH}"; DEVICE="${DEVICE:-cuda}"; LIMIT="${LIMIT:-}"
MODEL="${MODEL:-random}"; STEPS="${STEPS:-1500}"; MIN_DISTINCT="${MIN_DISTINCT:-0.5}"
TRAIN_BATCH="${TRAIN_BATCH:-64}"; TRAIN_LR="${TRAIN_LR:-2e-4}"
LOG="$OUT/run.log"; SUMMARY="$OUT/summary.md"; : > "$LOG"; : > "$SUMMARY"
started=$(date +%s)
elapsed() { echo "[$(( $(date +%s) - started )) s]"; }
say() { echo "== $* $(elapsed)" | tee -a "$LOG"; }

if [ -n "${VLMRUN_BIN:-}" ]; then bin=$VLMRUN_BIN; else
  bin=/tmp/vlmrun-bin; mkdir -p $bin
  xz -dc .device-bin/vlmrun.xz > $bin/vlmrun && xz -dc .device-bin/vlmrun-cuda.xz > $bin/vlmrun-cuda \
    || { echo "cannot unpack .device-bin/{vlmrun,vlmrun-cuda}.xz"; exit 1; }
  chmod +x $bin/vlmrun $bin/vlmrun-cuda
fi
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv >> "$LOG" 2>&1

say "model and images: $ARCH, $IMAGES images, in $FID"
nrandom=$IMAGES; [ "$MODEL" = trained ] && nrandom=16   # trained: the random model is only the start
if [ ! -f "$FID/model/model.safetensors" ]; then
  made=""
  for gains in ${GAINS:-2.0:1.0 2.0:2.0 2.0:3.0 4.0:3.0}; do
    if python3 scripts/gpu/make_fidelity_model.py --out "$FID" --arch "$ARCH" --images "$nrandom" --device "$DEVICE" \
        --vision-gain "${gains%%:*}" --cross-gain "${gains##*:}" --min-distinct "$MIN_DISTINCT" >> "$LOG" 2>&1; then made=$gains; break; fi
    echo "gains $gains: captions too uniform, next" | tee -a "$LOG"
  done
  [ -n "$made" ] || { echo "no gains gave image-dependent captions (see run.log)"; cp "$LOG" "$OUT/"; exit 1; }
fi
cp "$FID/model_info.json" "$OUT/"
grep -h "distinct" "$LOG" | tail -1
MODEL_DIR="$FID/model"; IMAGE_DIR="$FID/images"
if [ "$MODEL" = trained ]; then
  # The random model fine-tuned on synthetic shape scenes (make_trained_fidelity_model.py): confident
  # captions, as a trained captioner's; $IMAGES held-out scenes.
  FIDT="${FIDT:-/tmp/fidt-$ARCH}"
  say "trained model: $STEPS steps from $FID/model, $IMAGES held-out scenes, in $FIDT"
  if [ ! -f "$FIDT/model/model.safetensors" ]; then
    python3 scripts/gpu/make_trained_fidelity_model.py --init "$FID/model" --out "$FIDT" --images "$IMAGES" \
      --steps "$STEPS" --batch "$TRAIN_BATCH" --lr "$TRAIN_LR" --workers 12 --device "$DEVICE" >> "$LOG" 2>&1 || { echo "training failed (see run.log)"; cp "$LOG" "$OUT/"; exit 1; }
  fi
  cp "$FIDT/model_info.json" "$OUT/trained_model_info.json"
  grep -h "held-out" "$LOG" | tail -1
  MODEL_DIR="$FIDT/model"; IMAGE_DIR="$FIDT/images"
fi

say "vlmrun fidelity: $VARIANTS, beams $BEAMS"
vset=(--set data.source=folder --set "data.path=$IMAGE_DIR" --set output.dir=/tmp/fid-run)
vlimit=(); plimit=(); [ -n "$LIMIT" ] && { vlimit=(--limit "$LIMIT"); plimit=(--limit "$LIMIT"); }
$bin/vlmrun --device "$DEVICE" "${vset[@]}" fidelity "${vlimit[@]}" --model "$MODEL_DIR" --variants "$VARIANTS" --beams "$BEAMS" \
  --batch-size "$BATCH" --out "$OUT/fidelity.json" > /tmp/fid-vlmrun.md 2>> "$LOG"
echo "vlmrun fidelity exit $?" | tee -a "$LOG"
{ echo "## vlmrun fidelity ($DEVICE)"; echo; cat /tmp/fid-vlmrun.md; echo; } | tee -a "$SUMMARY"

say "PyTorch fidelity: ${TORCH_DTYPES:-f16,bf16} against f32"
python3 scripts/gpu/pytorch_fidelity.py --model "$MODEL_DIR" --images "$IMAGE_DIR" --device "$DEVICE" \
  "${plimit[@]}" --dtypes "${TORCH_DTYPES:-f16,bf16}" --beams "$BEAMS" --batch "$BATCH" --out "$OUT/pytorch_fidelity.json" \
  > /tmp/fid-pytorch.md 2>> "$LOG"
echo "pytorch_fidelity exit $?" | tee -a "$LOG"
{ echo "## PyTorch fidelity ($DEVICE)"; echo; cat /tmp/fid-pytorch.md; echo; } | tee -a "$SUMMARY"

# vlmrun's f32 reference against PyTorch's f32 reference (the same weights and images).
python3 - "$OUT" <<'PY' | tee -a "$SUMMARY"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
try:
    v = json.loads((out / "fidelity.json").read_text())
    t = json.loads((out / "pytorch_fidelity.json").read_text())
except Exception as e:  # noqa: BLE001 - one of the runs failed; its log says why
    print(f"vlmrun f32 vs PyTorch f32: not compared ({e})\n"); sys.exit(0)
print("## vlmrun f32 against PyTorch f32 (same weights, same images)\n")
print("| decoding | images | identical sequences |")
print("|---|---|---|")
order = {name: i for i, name in enumerate(t["image_ids"])}
for k, beams in enumerate(v["settings"]["beams"]):
    ours = dict(zip(v["image_ids"], v["reference_sequences"][k]))
    theirs = t["reference_sequences"].get(str(beams), [])
    same = sum(ours.get(name) == theirs[i] for name, i in order.items() if i < len(theirs))
    print(f"| {'greedy' if beams == 1 else f'beam {beams}'} | {len(order)} | {same}/{len(order)} |")
print()
PY

if [ -n "$BENCH" ]; then
  say "vlmrun bench: $BENCH at batch $BENCH_BATCHES"
  echo "## vlmrun bench ($DEVICE, greedy, 20 forced tokens)" >> "$SUMMARY"
  for pair in $BENCH; do
    p=${pair%%:*}; q=${pair##*:}
    $bin/vlmrun --device "$DEVICE" --precision "$p" bench --model "$MODEL_DIR" --quantization "$q" \
      --batch-sizes "$BENCH_BATCHES" --beams 1 --tokens 20 --warmup 1 --iterations 3 \
      --out "/tmp/fid-bench-$p-$q.json" > "/tmp/fid-bench-$p-$q.md" 2>> "$LOG"
    echo "bench $p $q exit $?" | tee -a "$LOG"
    { echo; echo "### $p, quantization $q"; echo; cat "/tmp/fid-bench-$p-$q.md"; } >> "$SUMMARY"
  done
  python3 - "$OUT" $BENCH <<'PY' | tee -a "$SUMMARY"
import json, sys
from pathlib import Path
out, pairs = Path(sys.argv[1]), sys.argv[2:]
docs, rows = [], []
for pair in pairs:
    p, q = pair.split(":")
    path = Path(f"/tmp/fid-bench-{p}-{q}.json")
    if not path.exists():
        rows.append(f"| {p} | {q} | failed (run.log) | | | |"); continue
    doc = json.loads(path.read_text()); docs.append(doc)
    for r in doc["records"]:
        peak = r.get("peak_gpu_bytes")
        rows.append(f"| {p} | {q} | {r['batch_size']} | {r['images_per_s']:.1f} | "
                    f"{peak / 2**30:.3f} | {peak if peak else '-'} |" if peak else
                    f"| {p} | {q} | {r['batch_size']} | {r['images_per_s']:.1f} | - | - |")
(out / "bench.json").write_text(json.dumps(docs, indent=1))
print("\n## bench summary\n\n| precision | quantization | batch | images/s | peak GPU GiB | peak bytes |")
print("|---|---|---|---|---|---|")
print("\n".join(rows))
PY
fi
say "done"
