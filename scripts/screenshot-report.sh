#!/usr/bin/env bash
# Renders a baseline run's report.html in headless Chromium and saves a PNG screenshot.
#
#   scripts/screenshot-report.sh [OUT.png] [-- vlmrun global options...]
#
# Runs `vlmrun baseline --fresh` (CPU) into a temporary output directory with the
# given vlmrun options (default: the built-in demo model on the sample images), then opens its
# report.html with `chromium --headless --screenshot`. Needs a Chromium on PATH (`chromium` or
# `chromium-browser`; Debian: `apt-get install chromium`). docs/report-html.png was made with
# Chromium 156.0.8078.114 (Debian 12) and the defaults:
#
#   scripts/screenshot-report.sh docs/report-html.png
#
# (The demo model, models/demo-blip, has memorised the sample images' captions: the page shows real
# captions, perfect scores, and the note that says why. Any other model and data:
#   scripts/screenshot-report.sh out.png -- --set model.source=DIR --set data.path=FILE)
set -euo pipefail
cd "$(dirname "$0")/.."
out_png="${1:-docs/report-html.png}"
[[ "$out_png" == /* ]] || out_png="$PWD/$out_png"
shift || true
[[ "${1:-}" == "--" ]] && shift
browser="$(command -v chromium || command -v chromium-browser || true)"
if [[ -z "$browser" ]]; then
    echo "no chromium on PATH; install one (Debian: apt-get install chromium)" >&2
    exit 2
fi
# The dev build (dependencies are optimised in it); VLMRUN=path/to/vlmrun uses another binary.
if [[ -z "${VLMRUN:-}" ]]; then
    cargo build --quiet
    VLMRUN="${CARGO_TARGET_DIR:-target}/debug/vlmrun"
fi
run="$(mktemp -d)"
trap 'rm -rf "$run"' EXIT
VLMRUN_NO_CUDA_LAUNCH=1 "$VLMRUN" --device cpu --set "output.dir=$run/out" "$@" baseline --fresh --quiet || true
test -f "$run/out/report.html" || { echo "the run wrote no report.html" >&2; exit 1; }
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1400 \
    --screenshot="$out_png" "file://$run/out/report.html" >/dev/null 2>&1
echo "wrote $out_png ($("$browser" --version))" >&2
