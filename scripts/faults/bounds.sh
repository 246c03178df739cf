#!/usr/bin/env bash
# Unbounded settings. Held: a configuration error (exit 2) naming the key, before anything is spawned
# or allocated. Each case runs under a 4 GiB address-space limit and a 60 s timeout so that a build
# without the checks fails instead of exhausting the machine.
source "$(dirname "$0")/common.sh"
manifest 4
D=$WORK/out
case_() {
  local name=$1 key=$2; shift 2
  ( ulimit -v 4194304; timeout 60 bash -c 'cd "$0" && "$1" --device cpu "${@:2}"' "$ROOT" "$VLMRUN" --set "output.dir=$D" --set "data.path=$WORK/data.jsonl" "$@" baseline --fresh ) >/dev/null 2>"$WORK/err"
  local code=$?
  result bounds "$name" $([ $code = 2 ] && grep -q "$key" "$WORK/err" && echo 1 || echo 0) "exit $code: $(grep -m1 . "$WORK/err" | cut -c1-110)"
}
case_ "preprocess.workers: 100000" preprocess.workers --set preprocess.workers=100000
case_ "generation.max_length: 100000" generation.max_length --set generation.max_length=100000
case_ "generation.max_length: 600 (> 512 positions)" generation.max_length --set generation.max_length=600
case_ "generation.num_beams: 100000" generation.num_beams --set generation.num_beams=100000
case_ "prompt longer than max_length" generation.prompt --set generation.max_length=8 --set "generation.prompt=a picture of a very long and winding road"
