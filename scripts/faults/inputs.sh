#!/usr/bin/env bash
# Every input item ends in one place. Held: the documented exit code and a message naming the items
# (a non-UTF-8 file name gets its errors.jsonl line, a duplicated id is refused), exit 5 when every image fails, `score` and `fidelity`
# refusing duplicates and empty inputs.
source "$(dirname "$0")/common.sh"
check() {  # check CLASS CASE EXPECTED_EXIT NEEDLE -- ARGS... (run from $WORK, 60 s at most)
  local class=$1 name=$2 want=$3 needle=$4; shift 5
  (cd "$WORK" && timeout 60 "$VLMRUN" --device cpu "$@") >/dev/null 2>"$WORK/err"
  local code=$?
  local first; first=$(grep -m1 '^error: ' "$WORK/err" | cut -c1-120)
  result "$class" "$name" $([ $code = "$want" ] && grep -qF -- "$needle" "$WORK/err" && echo 1 || echo 0) "exit $code: ${first:-$(grep -v WARN "$WORK/err" | head -1 | cut -c1-100)}"
}
IMG="$ROOT/tests/fixtures/images"
mkdir -p "$WORK/nonutf8" "$WORK/bad" "$WORK/coco"
cp "$IMG/chelsea.png" "$WORK/nonutf8/ok.png"; cp "$IMG/chelsea.png" "$WORK/nonutf8/$(printf 'caf\xe9.png')"
check inputs "folder file name not UTF-8" 3 "gets an errors.jsonl line" -- --set data.source=folder --set data.path=nonutf8 --set output.dir=o1 baseline
cp "$IMG/chelsea.png" "$IMG/coffee.png" "$IMG/rocket.png" "$WORK/coco/"
cat > "$WORK/coco/ann.json" <<'J'
{"images": [{"id": 7, "file_name": "chelsea.png"}, {"id": 9, "file_name": "coffee.png"}, {"id": 7, "file_name": "rocket.png"}],
 "annotations": [{"image_id": 7, "caption": "a cat"}, {"image_id": 9, "caption": "a cup"}]}
J
check inputs "COCO image id given twice" 5 "appear more than once" -- --set data.source=coco --set data.path=coco/ann.json --set output.dir=o2 baseline
printf '{"id": "a", "image": "%s"}\n{"id": "a", "image": "%s"}\n' "$IMG/chelsea.png" "$IMG/coffee.png" > "$WORK/dup.jsonl"
check inputs "manifest id given twice" 5 "appears twice" -- --set data.path=dup.jsonl --set output.dir=o3 baseline
printf '[{"image": "a.jpg", "image_id": 1}, {"image": "b.jpg", "image_id": 1}]' > "$WORK/coco/lavis.json"
check inputs "LAVIS image_id naming two images" 5 'image_id "1" names' -- --set data.source=lavis --set data.path=coco/lavis.json --set output.dir=o4 baseline
echo "not a png" > "$WORK/bad/a.png"; echo "nor a jpeg" > "$WORK/bad/b.jpg"
check inputs "every image fails" 5 "a.png" -- --set data.source=folder --set data.path=bad --set output.dir=o5 baseline
printf '{"id": "a", "image": "a.png", "references": ["a cat"]}\n{"id": "b", "image": "b.png", "references": ["a dog"]}\n' > "$WORK/refs.jsonl"
printf '{"id": "a", "caption": "a cat"}\n{"id": "b", "caption": "a dog"}\n{"id": "a", "caption": "a bird"}\n' > "$WORK/p.jsonl"
check inputs "score: prediction id given twice" 5 '"a" (lines 1 and 3)' -- score --predictions p.jsonl --references refs.jsonl
: > "$WORK/empty.jsonl"
check inputs "score: empty predictions" 5 "no captions" -- score --predictions empty.jsonl --references refs.jsonl
printf '{"id": "a", "image": "a.png"}\n' > "$WORK/norefs.jsonl"
check inputs "score: references without captions" 5 "no reference captions" -- score --predictions p.jsonl --references norefs.jsonl
check inputs "fidelity --limit 0" 2 "--limit 0" -- --set output.dir=o6 fidelity --limit 0 --variants f16
