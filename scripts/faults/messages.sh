#!/usr/bin/env bash
# Messages. Held: the documented exit code, the path named as what it is (a directory, a FIFO, a file
# in the way), each cause printed once with one fix line, no parser wording, no read that blocks.
source "$(dirname "$0")/common.sh"
check() {  # check CASE EXPECTED_EXIT NEEDLE -- ARGS... (from $WORK, 30 s at most: a FIFO read would block)
  local name=$1 want=$2 needle=$3; shift 4
  (cd "$WORK" && timeout 30 "$VLMRUN" --device cpu "$@") >/dev/null 2>"$WORK/err"
  local code=$?
  local error; error=$(sed -n '/^error: /,$p' "$WORK/err")
  local fixes; fixes=$(printf '%s\n' "$error" | grep -c 'fix:')
  local oserr; oserr=$(printf '%s\n' "$error" | grep -o 'os error' | wc -l)
  local ok=0
  [ $code = "$want" ] && grep -qF -- "$needle" "$WORK/err" && [ "$fixes" -le 1 ] && [ "$oserr" -le 1 ] \
    && ! grep -q 'DuplicateKeyPolicy\|expected usize\|invalid u64' "$WORK/err" && ok=1
  result messages "$name" $ok "exit $code, $fixes fix line(s): $(printf '%s\n' "$error" | head -1 | cut -c1-110)"
}
mkfifo "$WORK/pipe"; mkdir "$WORK/adir"; echo x > "$WORK/afile"
check "--config a directory" 2 "is a directory" -- --config adir config
check "--config a FIFO" 2 "is a FIFO" -- --config pipe config
check "data.path a FIFO" 5 "is a FIFO" -- --set data.path=pipe --set output.dir=o baseline
check "data.path a directory (manifest)" 5 "is a directory" -- --set data.path=adir --set output.dir=o baseline
check "output.dir under a file" 6 "afile is a file, not a directory" -- --set output.dir=afile/run baseline --limit 1
check "output.dir empty" 2 "output.dir: must not be empty" -- --set output.dir= baseline
printf 'seed: 1\nseed: 2\n' > "$WORK/dup.yaml"
check "config key given twice" 2 "given twice" -- --config dup.yaml config
check "--set a word for a number" 2 "whole number" -- --set generation.num_beams=abc config
printf '{"id": "d", "image": "adir"}\n{"id": "p", "image": "pipe"}\n' > "$WORK/kinds.jsonl"
check "images that are a directory and a FIFO" 5 "all 2 image(s) failed" -- --set data.path=kinds.jsonl --set output.dir=o7 baseline
