#!/usr/bin/env bash
# Runs every fault script against one binary: scripts/faults/run.sh [PATH/TO/vlmrun]
# (default target/release/vlmrun). One line per case: class, case, held/FAILED, what happened.
dir="$(cd "$(dirname "$0")" && pwd)"
export VLMRUN="${1:-${VLMRUN:-$dir/../../target/release/vlmrun}}"
for script in two_writers resume_mix interrupts bounds model_errors inputs messages training hostile_files disk_full; do
  bash "$dir/$script.sh"
done
