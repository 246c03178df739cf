#!/usr/bin/env bash
# Model errors: a NaN weight, an I32 tensor where floats are expected, a truncated model.safetensors.
# Held: caption exits 4 naming the tensor (and dtype); doctor says FAIL for the model.
source "$(dirname "$0")/common.sh"
edit() {  # edit DIR MODE: rewrites DIR/model.safetensors (nan: a NaN in the first F32 tensor; i32: that tensor's dtype; truncate: 100 bytes off)
  python3 - "$1/model.safetensors" "$2" <<'PY'
import json, struct, sys
path, mode = sys.argv[1], sys.argv[2]
data = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
name = sorted(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")[0]
start = 8 + n + header[name]["data_offsets"][0]
if mode == "nan":
    data[start:start + 4] = struct.pack("<f", float("nan"))
elif mode == "i32":
    header[name]["dtype"] = "I32"
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (n - len(text))
    assert len(text) == n, "header grew"
    data[8:8 + n] = text
elif mode == "truncate":
    data = data[:-100]
open(path, "wb").write(data)
print(name)
PY
}
for mode in nan i32 truncate; do
  M=$WORK/model-$mode; cp -r "$ROOT/models/tiny-blip" "$M"
  tensor=$(edit "$M" $mode)
  (cd "$ROOT" && "$VLMRUN" --device cpu --set "model.source=$M" caption tests/fixtures/images/$(ls "$ROOT/tests/fixtures/images" | head -1)) >/dev/null 2>"$WORK/err"; code=$?
  named=0; { [ $mode = truncate ] || grep -q "$tensor" "$WORK/err"; } && named=1
  result model-errors "caption: $mode" $([ $code = 4 ] && [ $named = 1 ] && echo 1 || echo 0) "exit $code: $(grep -m1 . "$WORK/err" | cut -c1-110)"
  (cd "$ROOT" && "$VLMRUN" --device cpu --set "model.source=$M" doctor --json) > "$WORK/doctor.json" 2>/dev/null
  status=$(python3 -c "import json,sys; print([c['status'] for c in json.load(open(sys.argv[1]))['checks'] if c['name']=='model'][0])" "$WORK/doctor.json" 2>/dev/null || echo "?")
  result model-errors "doctor: $mode" $([ "$status" = fail ] && echo 1 || echo 0) "model check: $status"
done
