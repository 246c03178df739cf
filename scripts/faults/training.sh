#!/usr/bin/env bash
# Training resume. Held: a changed batch size refused naming the key (exit 2); a changed learning rate
# warned naming the key; a newest checkpoint without optimizer.safetensors named; an unreadable
# training image counted in train-summary.json.
source "$(dirname "$0")/common.sh"
D=$WORK/train
DATA="data.path=tests/fixtures/train/overfit16.jsonl"
t() { run "$D" --set "$DATA" --set train.batch_size=4 --set train.checkpoint_every=1 "$@" 2>"$WORK/err" >/dev/null; }
t train --steps 2 --fresh
t --set train.batch_size=2 train --steps 3 --resume; code=$?
result training "resume with train.batch_size changed" $([ $code = 2 ] && grep -q 'train.batch_size: 4 -> 2' "$WORK/err" && echo 1 || echo 0) "exit $code: $(grep -m1 '^error' "$WORK/err" | cut -c1-100)"
t --set train.lr=2e-5 train --steps 3 --resume; code=$?
result training "resume with train.lr changed" $([ $code = 0 ] && grep -q 'train.lr: 0.00001 -> 0.00002' "$WORK/err" && echo 1 || echo 0) "exit $code: $(grep -m1 'WARN' "$WORK/err" | cut -c1-100)"
rm -f "$D/checkpoints/step-00000003/optimizer.safetensors"
t train --steps 4 --resume; code=$?
result training "newest checkpoint lacks optimizer.safetensors" $([ $code = 0 ] && grep -q 'optimizer.safetensors missing' "$WORK/err" && echo 1 || echo 0) "exit $code: $(grep -m1 'skipping' "$WORK/err" | cut -c1-110)"
python3 - "$ROOT" "$WORK/t.jsonl" <<'P'
import json, sys, os
root, out = sys.argv[1], sys.argv[2]
with open(out, "w") as f:
    for line in open(os.path.join(root, "tests/fixtures/train/overfit16.jsonl")):
        e = json.loads(line); e["image"] = os.path.join(root, "tests/fixtures/train", e["image"]); f.write(json.dumps(e) + "\n")
    f.write(json.dumps({"image": out + ".png", "caption": "broken"}) + "\n")
P
echo "not a png" > "$WORK/t.jsonl.png"
run "$WORK/t2" --set "data.path=$WORK/t.jsonl" --set train.batch_size=4 train --steps 1 >/dev/null 2>"$WORK/err"; code=$?
n=$(json_field "$WORK/t2/train-summary.json" "['unreadable_images']")
result training "unreadable training image" $([ $code = 0 ] && [ "$n" = 1 ] && echo 1 || echo 0) "exit $code, train-summary.json unreadable_images: $n"
