#!/usr/bin/env bash
# A full disk. Held: exit 6 naming the file and the free space left, one fix line. Needs root (a
# 64 KiB tmpfs is mounted for the run and unmounted after); prints "skipped" otherwise.
source "$(dirname "$0")/common.sh"
FS=$WORK/tiny
mkdir -p "$FS"
if ! mount -t tmpfs -o size=64k tmpfs "$FS" 2>/dev/null; then
  printf '%-14s %-44s %-6s %s\n' disk_full "(all cases)" skipped "mounting a tmpfs needs root"
  exit 0
fi
trap 'umount "$FS"; rm -rf "$WORK"' EXIT
manifest 400
case_() {
  local name=$1; shift
  rm -rf "${FS:?}"/*
  (cd "$ROOT" && "$VLMRUN" --device cpu "$@") >/dev/null 2>"$WORK/err"
  local code=$?
  local error; error=$(sed -n '/^error: /,$p' "$WORK/err")
  local fixes; fixes=$(printf '%s\n' "$error" | grep -c 'fix:')
  result disk_full "$name" $([ $code = 6 ] && grep -q 'the disk is full, .* free on the file system of' "$WORK/err" && [ "$fixes" = 1 ] && echo 1 || echo 0) "exit $code, $fixes fix line(s): $(printf '%s\n' "$error" | head -1 | cut -c1-110)"
}
case_ "baseline: predictions.jsonl fills the disk" --set "data.path=$WORK/data.jsonl" --set "output.dir=$FS/run" baseline
case_ "train: the checkpoint fills the disk" --set data.path=tests/fixtures/train/overfit16.jsonl --set train.batch_size=4 --set "output.dir=$FS/t" train --steps 1
