#!/usr/bin/env python3
"""Per-op CPU time of PyTorch's BLIP (transformers, eager, f32) on the random BLIP-base weights that
benches/reference/pytorch_blip.py writes: the vision encoder on one batch, then 19 decode steps of the
text decoder (as `generate` drives it), each under torch.profiler. Prints the ops' self CPU time,
the counterpart of `perf report` on `vlmrun bench` (docs/performance.md, "CPU profile").

Pinned: torch==2.11.0 transformers==5.17.0 (the versions pytorch_blip.py pins). No network.

    python scripts/cpu/torch_profile.py --model-dir /tmp/cpu-bench-base --batch 1 > torch_profile.txt
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import transformers
from torch.profiler import ProfilerActivity, profile

PINS = {"torch": "2.11.0", "transformers": "5.17.0"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=19)
    ap.add_argument("--rows", type=int, default=25, help="ops listed per table")
    args = ap.parse_args()
    got = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}
    if got != PINS:
        print(f"warning: versions {got}, pinned {PINS}", file=sys.stderr)
    from transformers import BlipForConditionalGeneration

    model = BlipForConditionalGeneration.from_pretrained(
        args.model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    size = model.config.vision_config.image_size
    pixels = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    bos = model.config.text_config.bos_token_id
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"threads {torch.get_num_threads()}, batch {args.batch}")
    with torch.inference_mode():
        embeds = model.vision_model(pixel_values=pixels)[0]  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t = time.perf_counter()
            embeds = model.vision_model(pixel_values=pixels)[0]
            vision_ms = (time.perf_counter() - t) * 1e3
        print(f"\n## vision encoder: {vision_ms:.1f} ms\n")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))

        ids = torch.tensor([[bos]] * args.batch)
        out = model.text_decoder(input_ids=ids, encoder_hidden_states=embeds, use_cache=True, return_dict=True)
        nxt = out.logits[:, -1].argmax(-1)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t = time.perf_counter()
            for _ in range(args.steps):
                out = model.text_decoder(input_ids=nxt[:, None], encoder_hidden_states=embeds,
                                         past_key_values=out.past_key_values, use_cache=True, return_dict=True)
                nxt = out.logits[:, -1].argmax(-1)
            step_ms = (time.perf_counter() - t) * 1e3 / args.steps
        print(f"\n## decode: {args.steps} steps, {step_ms:.1f} ms per step\n")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
