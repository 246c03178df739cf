#!/usr/bin/env bash
# Trains the demo model, models/demo-blip/, with `vlmrun train` itself, and checks it.
#
#   scripts/make-demo-model.sh            # writes models/demo-blip/ (~2 min on 2 CPU cores)
#   VLMRUN=path/to/vlmrun scripts/make-demo-model.sh
#
# Starts from the random tiny BLIP (models/tiny-blip, seeded weights, same shapes) and fine-tunes
# every weight on the 12 sample images and their 28 reference captions (tests/fixtures/samples.jsonl),
# CPU, f32, seed 42, 300 steps of 16 pairs, no prompt (the default `generation.prompt` is empty),
# so `vlmrun baseline` with the built-in defaults prints real captions. The demo model has memorised
# those captions: its scores on the sample images measure memorisation, not captioning skill, and
# it captions nothing else sensibly. models/demo-blip/vlmrun-model.json labels it `"kind": "demo"`
# (report.json, report.html and the run summary say so).
#
# Deterministic: a CPU f32 run with the same seed gives the same bits on every rerun, with all
# threads or one (checked here by training twice, once with RAYON_NUM_THREADS=1, and comparing the
# weights; measured on a 2-core machine: 2 threads vs 1 identical). The committed weights' SHA-256 is
# in vlmrun-model.json; another CPU may differ in the last bits through other SIMD kernels. The script prints the SHA-256 of the weights, the
# training time and the baseline metrics of the result.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
out="$root/models/demo-blip"
steps=300

# The dev build (dependencies are optimised in it); VLMRUN=path/to/vlmrun uses another binary.
if [[ -z "${VLMRUN:-}" ]]; then
    cargo build --quiet
    VLMRUN="${CARGO_TARGET_DIR:-target}/debug/vlmrun"
fi
export VLMRUN_NO_CUDA_LAUNCH=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

settings=(
    --device cpu --precision f32 --set seed=42
    --set model.source=models/tiny-blip
    --set data.source=manifest --set data.path=tests/fixtures/samples.jsonl
    --set 'train.prompt=' --set train.batch_size=16 --set train.grad_accumulation=1
    --set train.lr=5e-3 --set train.min_lr=0 --set train.warmup_steps=10
    --set train.weight_decay=0 --set train.label_smoothing=0 --set train.max_grad_norm=1.0
    --set train.freeze_vision=false --set train.shuffle=true
    --set train.eval_images=0 --set train.checkpoint_every=0
)

train() { # train OUTPUT_DIR [env...]
    local dir="$1"
    shift
    env "$@" "$VLMRUN" --quiet "${settings[@]}" --set "output.dir=$dir" train --steps "$steps" --fresh
}

started=$(date +%s.%N)
train "$work/a"
finished=$(date +%s.%N)
train "$work/b" RAYON_NUM_THREADS=1
checkpoint="$work/a/checkpoints/step-$(printf %08d "$steps")"
if ! cmp -s "$checkpoint/model.safetensors" \
    "$work/b/checkpoints/step-$(printf %08d "$steps")/model.safetensors"; then
    echo "two identical training runs gave different weights: training is not deterministic here" >&2
    exit 1
fi

mkdir -p "$out"
for file in config.json model.safetensors tokenizer.json; do
    install -m 0644 "$checkpoint/$file" "$out/$file"
done
sha=$(sha256sum "$out/model.safetensors" | cut -d' ' -f1)
last_loss=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["last_loss"], 4))' \
    "$work/a/train-summary.json")

# Score the result on the sample images with the defaults a user gets.
"$VLMRUN" --quiet --device cpu --set model.source="$out" --set data.path=tests/fixtures/samples.jsonl \
    --set "output.dir=$work/baseline" baseline --fresh
metrics=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["metrics"]; print(json.dumps({"bleu_4": round(m["bleu"][3], 4), "cider": round(m["cider"], 4), "rouge_l": round(m["rouge_l"], 4), "images": m["n_images"]}))' \
    "$work/baseline/report.json")

cat > "$out/vlmrun-model.json" <<JSON
{
  "kind": "demo",
  "description": "demo model: the tiny BLIP fine-tuned on the 12 built-in sample images; it has memorised their captions, so its scores there measure memorisation, not captioning",
  "made_by": "scripts/make-demo-model.sh",
  "trained_from": "models/tiny-blip",
  "training_data": "tests/fixtures/samples.jsonl",
  "training": {"steps": $steps, "batch_size": 16, "lr": 5e-3, "warmup_steps": 10, "weight_decay": 0, "label_smoothing": 0, "prompt": "", "seed": 42, "device": "cpu", "precision": "f32", "last_loss": $last_loss},
  "model_safetensors_sha256": "$sha",
  "baseline_on_samples": $metrics
}
JSON

seconds=$(python3 -c "print(round($finished - $started, 1))")
echo "wrote $out: $steps steps in $seconds s (one run), loss -> $last_loss, sha256 $sha" >&2
echo "baseline on the sample images: $metrics" >&2
