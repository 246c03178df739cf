# Shared by the fault scripts: $VLMRUN is the binary under test (default: target/release/vlmrun),
# $WORK a fresh scratch directory, `manifest N` writes N items cycling through the sample images,
# `result CLASS CASE EXPECTED GOT DETAIL` prints one line "held"/"FAILED".
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VLMRUN="${VLMRUN:-$ROOT/target/release/vlmrun}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export VLMRUN_NO_CUDA_LAUNCH=1 NO_COLOR=1

manifest() {
  local count=$1 out=${2:-$WORK/data.jsonl}
  local images=("$ROOT"/tests/fixtures/images/*)
  : > "$out"
  for ((i = 0; i < count; i++)); do
    printf '{"id": "img%d", "image": "%s", "references": ["a picture"]}\n' "$i" "${images[i % ${#images[@]}]}" >> "$out"
  done
}

# run DIR ARGS...: the binary on the CPU with output.dir=DIR, from the repository root.
run() {
  local dir=$1; shift
  (cd "$ROOT" && "$VLMRUN" --device cpu --set "output.dir=$dir" "$@")
}

lines() { [ -f "$1" ] && wc -l < "$1" | tr -d ' ' || echo 0; }

json_field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d'+sys.argv[2]))" "$1" "$2" 2>/dev/null || echo "?"; }

wait_lines() {  # wait_lines FILE N: until FILE has N lines (60 s at most)
  for _ in $(seq 600); do [ "$(lines "$1")" -ge "$2" ] && return 0; sleep 0.1; done; return 1
}

result() {  # result CLASS CASE OK(0/1) DETAIL
  local verdict=FAILED; [ "$3" = 1 ] && verdict=held
  printf '%-14s %-44s %-6s %s\n' "$1" "$2" "$verdict" "$4"
}
