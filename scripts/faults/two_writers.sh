#!/usr/bin/env bash
# Two writers on one output directory: a second baseline (plain and --fresh) and a train --fresh while
# a baseline runs there. Held: the second ones are refused and the first run's results survive.
source "$(dirname "$0")/common.sh"
manifest 400
D=$WORK/out
run "$D" --set "data.path=$WORK/data.jsonl" --set generation.batch_size=2 baseline --fresh >/dev/null 2>&1 &
first=$!
wait_lines "$D/predictions.jsonl" 2
run "$D" --set "data.path=$WORK/data.jsonl" --set generation.batch_size=2 baseline >/dev/null 2>"$WORK/plain.err"; plain=$?
run "$D" --set "data.path=$WORK/data.jsonl" --set data.limit=100 --set generation.batch_size=2 baseline --fresh >/dev/null 2>"$WORK/fresh.err"; fresh=$?
run "$D" --set "data.path=$WORK/data.jsonl" train --fresh --steps 1 >/dev/null 2>"$WORK/train.err"; train=$?
kill -INT $first; wait $first; code=$?
n=$(lines "$D/predictions.jsonl"); done_n=$(json_field "$D/report.json" "['counts']['done']")
ids=$(python3 -c "import json,sys; print(len({json.loads(l)['id'] for l in open(sys.argv[1])}))" "$D/predictions.jsonl")
result two-writers "second plain baseline refused" $([ $plain = 8 ] && echo 1 || echo 0) "exit $plain: $(head -1 "$WORK/plain.err")"
result two-writers "second baseline --fresh refused" $([ $fresh = 8 ] && echo 1 || echo 0) "exit $fresh: $(head -1 "$WORK/fresh.err")"
result two-writers "train --fresh on a live directory refused" $([ $train = 8 ] && echo 1 || echo 0) "exit $train"
result two-writers "first run's lines = its report's done" $([ "$n" = "$done_n" ] && [ "$n" = "$ids" ] && echo 1 || echo 0) "exit $code, $n lines, $ids ids, report done $done_n"
