#!/usr/bin/env python3
"""Compare vlmrun's caption token ids with transformers' (make_full_parity.py's expected.json).

Runs `vlmrun caption --json` for greedy and beam search, with and without the prompt, over the
parity images, and prints one markdown table row per setting: images, identical sequences, and
for mismatches whether float64 transformers itself disagreed with float32 there (a near tie).
Standard library only. Usage:
    parity_compare.py --vlmrun BIN --dir OUT --arch base [--precision f32] [--batch-size 8] [--device cuda]
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vlmrun", required=True)
    ap.add_argument("--dir", type=Path, required=True, help="make_full_parity.py --out")
    ap.add_argument("--arch", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    doc = json.loads((args.dir / "expected.json").read_text())
    cases = [c for c in doc["cases"] if not c.get("batched")]
    images = sorted({c["image"] for c in cases})
    paths = [str(args.dir / "images" / f"{stem}.png") for stem in images]
    settings = sorted({(c["num_beams"], c["prompt"], c["max_length"], c["min_length"]) for c in cases})
    failures = 0
    for beams, prompt, max_length, min_length in settings:
        cmd = [args.vlmrun, "--device", args.device, "--precision", args.precision, "caption", "--json",
               "--model", str(args.dir / "model"), "--beams", str(beams), "--max-length", str(max_length),
               "--min-length", str(min_length), "--batch-size", str(args.batch_size)]
        if prompt:
            cmd += ["--prompt", prompt]
        run = subprocess.run(cmd + paths, capture_output=True, text=True)
        if run.returncode != 0:
            print(f"vlmrun failed ({run.returncode}): {run.stderr}", file=sys.stderr)
            return 2
        got = {Path(json.loads(line)["image"]).stem: json.loads(line)["token_ids"]
               for line in run.stdout.splitlines()}
        want = {c["image"]: c for c in cases
                if (c["num_beams"], c["prompt"], c["max_length"], c["min_length"]) == (beams, prompt, max_length, min_length)}
        same = sum(got.get(stem) == case["token_ids"] for stem, case in want.items())
        differ = [stem for stem, case in want.items() if got.get(stem) != case["token_ids"]]
        ties = [stem for stem in differ if want[stem].get("f64_agrees") is False]
        failures += len(differ) - len(ties)
        decoding = "greedy" if beams == 1 else f"beam {beams}"
        print(f"| {args.arch} | {args.precision} | {decoding} | {prompt or '(none)'!s} | {len(want)} | "
              f"{same} | {', '.join(differ) or '-'} | {', '.join(ties) or '-'} |", flush=True)
        for stem in differ:
            print(f"  {stem}: vlmrun {got.get(stem)}\n  {' ' * len(stem)}  transformers {want[stem]['token_ids']}",
                  file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
