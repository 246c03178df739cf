#!/usr/bin/env bash
# Interrupts: Ctrl-C before the first batch (here: while the dataset and model load), SIGTERM mid-run.
# Held: status "interrupted" (never "complete" with items left), exit 130, the partial report written.
source "$(dirname "$0")/common.sh"
manifest 60000 "$WORK/big.jsonl"
D=$WORK/early
run "$D" --set "data.path=$WORK/big.jsonl" baseline --fresh >/dev/null 2>&1 &
pid=$!; sleep 0.5; kill -INT $pid; wait $pid; code=$?
status=$(json_field "$D/report.json" "['status']"); remaining=$(json_field "$D/report.json" "['counts']['remaining']")
result interrupts "Ctrl-C before the first batch" $([ $code = 130 ] && [ "$status" = interrupted ] && echo 1 || echo 0) "exit $code, status $status, remaining $remaining"
manifest 400
D=$WORK/term
run "$D" --set "data.path=$WORK/data.jsonl" --set generation.batch_size=2 baseline --fresh >/dev/null 2>&1 &
pid=$!; wait_lines "$D/predictions.jsonl" 2; kill -TERM $pid; wait $pid; code=$?
status=$(json_field "$D/report.json" "['status']"); done_n=$(json_field "$D/report.json" "['counts']['done']")
result interrupts "SIGTERM mid-run" $([ $code = 130 ] && [ "$status" = interrupted ] && echo 1 || echo 0) "exit $code, status $status, done $done_n, $(lines "$D/predictions.jsonl") lines"
