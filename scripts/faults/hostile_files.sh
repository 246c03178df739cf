#!/usr/bin/env bash
# Hostile weight files. Held: a model error (exit 4) naming the file, never a panic (exit 101).
source "$(dirname "$0")/common.sh"
python3 - "$WORK/align0.gguf" <<'P'
import struct, sys
b = b"GGUF" + struct.pack("<IQQ", 3, 1, 1)
key = b"general.alignment"
b += struct.pack("<Q", len(key)) + key + struct.pack("<II", 4, 0)
b += struct.pack("<Q", 1) + b"w" + struct.pack("<IQIQ", 1, 4, 0, 0)
b += b"\0" * (-len(b) % 32) + b"\0" * 16
open(sys.argv[1], "wb").write(b)
P
run "$WORK/o" --set "model.source=$WORK/align0.gguf" caption "$ROOT/tests/fixtures/images/chelsea.png" >/dev/null 2>"$WORK/err"; code=$?
result hostile "GGUF with general.alignment 0" $([ $code = 4 ] && grep -q 'align0.gguf' "$WORK/err" && echo 1 || echo 0) "exit $code: $(grep -m1 'error\|panicked' "$WORK/err" | cut -c1-110)"
run "$WORK/o" --set "model.source=$WORK/align0.gguf" doctor --json >"$WORK/doc.json" 2>"$WORK/err"; code=$?
status=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print([c['status'] for c in d['checks'] if c['name']=='model'][0])" "$WORK/doc.json" 2>/dev/null || echo "no report")
result hostile "doctor on that GGUF" $([ "$status" = fail ] && echo 1 || echo 0) "exit $code, model check: $status"
