#!/usr/bin/env bash
# Resume mixes runs: rerun an output directory with another num_beams, prompt or model; an image that
# changed after it was captioned. Held: other settings refused (exit 2, key named); the image redone.
source "$(dirname "$0")/common.sh"
mkdir -p "$WORK/img"; cp "$ROOT"/tests/fixtures/images/* "$WORK/img/"
images=("$WORK"/img/*)
: > "$WORK/data.jsonl"
for i in 0 1 2 3 4 5; do printf '{"id": "i%d", "image": "%s"}\n' $i "${images[i % ${#images[@]}]}" >> "$WORK/data.jsonl"; done
D=$WORK/out
run "$D" --set "data.path=$WORK/data.jsonl" baseline --fresh >/dev/null 2>&1
for change in generation.num_beams=3 "generation.prompt=a picture of " generation.max_length=12; do
  run "$D" --set "data.path=$WORK/data.jsonl" --set "$change" baseline >/dev/null 2>"$WORK/err"; code=$?
  n=$(lines "$D/predictions.jsonl")
  key=${change%%=*}
  result resume-mix "rerun with $key changed" $([ $code = 2 ] && grep -q "$key" "$WORK/err" && echo 1 || echo 0) "exit $code, $n lines: $(head -1 "$WORK/err")"
done
cp -r "$ROOT/models/tiny-blip" "$WORK/model"
run "$D" --set "data.path=$WORK/data.jsonl" --set "model.source=$WORK/model" baseline >/dev/null 2>"$WORK/err"; code=$?
result resume-mix "rerun with another model.source" $([ $code = 2 ] && echo 1 || echo 0) "exit $code: $(head -1 "$WORK/err")"
# Replace the first image's bytes with another image's (same id, same path).
first=$(python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['image'])" "$WORK/data.jsonl")
cp "${images[1]}" "$first.new" && mv "$first.new" "$first"
run "$D" --set "data.path=$WORK/data.jsonl" baseline >/dev/null 2>"$WORK/err"; code=$?
skipped=$(json_field "$D/report.json" "['counts']['skipped']"); n=$(lines "$D/predictions.jsonl")
result resume-mix "changed image is captioned again" $([ "$skipped" = 5 ] && [ "$n" = 6 ] && echo 1 || echo 0) "exit $code, skipped $skipped of 6, $n lines"
