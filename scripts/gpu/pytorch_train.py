#!/usr/bin/env python3
"""PyTorch AMP reference for `vlmrun train` throughput (docs/training.md): the same BLIP weights,
the same manifest, the same recipe, timed the same way.

Recipe (as vlmrun's train loop and LAVIS' caption fine-tuning): f32 master weights, forward and
backward under torch.autocast(bfloat16) (no GradScaler: bf16 needs none), prompt "a picture of "
masked out of the labels with the padding, label smoothing 0.1, AdamW (torch's default foreach
implementation; weight decay 0.05 on weights, none on biases/LayerNorms/embeddings), global-norm
clipping at 1.0, constant learning rate. Images are preprocessed once and kept on the host (as
vlmrun does for a small set); each step uploads its batch.

Timed: each step from batch assembly to the optimizer update, torch.cuda.synchronize() before the
clock is read; samples/s is the median over the measured steps (warm-up steps excluded). Peak
memory: NVML process memory sampled every 20 ms when pynvml imports (as vlmrun measures), and
torch.cuda.max_memory_allocated.

Pinned versions (checked at start): torch==2.11.0 transformers==5.17.0
Run from the repository root:
    python3 scripts/gpu/pytorch_train.py --model-dir /tmp/bench-base --manifest /tmp/train/data.jsonl \
        --batch-size 32 --warmup 3 --steps 10 --out pytorch_train.json
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import transformers
from PIL import Image

PINS = {"torch": (torch.__version__.split("+")[0], "2.11.0"), "transformers": (transformers.__version__, "5.17.0")}
PROMPT = "a picture of "
BOS, PAD = 30522, 0


def decays(name: str, rank: int) -> bool:
    """vlmrun's rule (src/train/params.rs)."""
    if rank < 2:
        return False
    parts = name.split(".")
    if parts[-1] == "bias" or any("layernorm" in p.lower() or "layer_norm" in p.lower() for p in parts):
        return False
    return not any(p != "patch_embedding" and (p.endswith("_embeddings") or p.endswith("_embedding")) for p in parts)


class PeakMemory:
    """NVML memory of this process, sampled every 20 ms."""

    def __init__(self):
        self.peak, self.stop = None, threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # noqa: BLE001 (pynvml missing or no driver: torch's number only)
            self.nvml = None

    def sample(self):
        while not self.stop.is_set():
            for p in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
                if p.pid == os.getpid() and p.usedGpuMemory:
                    self.peak = max(self.peak or 0, p.usedGpuMemory)
            time.sleep(0.02)

    def __enter__(self):
        if self.nvml:
            self.thread = threading.Thread(target=self.sample, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--precision", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    bad = [f"{k} {have} (need {want})" for k, (have, want) in PINS.items() if have != want]
    if bad:
        sys.exit("wrong versions: " + ", ".join(bad))

    from transformers import BlipForConditionalGeneration, PreTrainedTokenizerFast
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    dev = torch.device("cuda")
    t0 = time.perf_counter()
    model = BlipForConditionalGeneration.from_pretrained(args.model_dir, dtype=torch.float32).to(dev).train()
    model.text_decoder.label_smoothing = 0.1
    load_s = time.perf_counter() - t0
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(args.model_dir / "tokenizer.json"), pad_token="[PAD]")
    size = model.config.vision_config.image_size
    processor = BlipImageProcessorPil(size={"height": size, "width": size})
    pairs = []
    for line in args.manifest.read_text().splitlines():
        record = json.loads(line)
        image = Path(record["image"])
        image = image if image.is_absolute() else args.manifest.parent / image
        pairs += [(image, caption) for caption in record["references"]]
    pixels = {}
    for image, _ in pairs:
        if image not in pixels:
            pixels[image] = processor(Image.open(image).convert("RGB"), return_tensors="pt").pixel_values[0]
    prompt_len = len(tokenizer(PROMPT).input_ids) - 1

    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if decays(n, p.dim())], "weight_decay": 0.05},
        {"params": [p for n, p in named if not decays(n, p.dim())], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.precision == "bf16")

    times, losses = [], []
    torch.cuda.reset_peak_memory_stats()
    with PeakMemory() as peak:
        for step in range(args.warmup + args.steps):
            torch.cuda.synchronize()
            start = time.perf_counter()
            batch = [pairs[(step * args.batch_size + i) % len(pairs)] for i in range(args.batch_size)]
            enc = tokenizer([PROMPT + c for _, c in batch], padding="longest", truncation=True, max_length=30,
                            return_tensors="pt")
            input_ids = enc.input_ids.clone()
            input_ids[:, 0] = BOS
            labels = input_ids.masked_fill(input_ids == PAD, -100)
            labels[:, :prompt_len] = -100
            pv = torch.stack([pixels[i] for i, _ in batch]).to(dev, non_blocking=False)
            input_ids, labels = input_ids.to(dev), labels.to(dev)
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = model(pixel_values=pv, input_ids=input_ids, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            torch.cuda.synchronize()
            if step >= args.warmup:
                times.append(time.perf_counter() - start)
    median = statistics.median(times)
    result = {
        "schema": "vlmrun.train-reference/1",
        "implementation": f"PyTorch {torch.__version__} + transformers {transformers.__version__}, eager, "
                          f"autocast {args.precision}, AdamW foreach",
        "device": torch.cuda.get_device_name(0),
        "batch_size": args.batch_size,
        "precision": args.precision,
        "warmup_steps": args.warmup,
        "measured_steps": args.steps,
        "step_ms_median": median * 1e3,
        "samples_per_s": args.batch_size / median,
        "peak_gpu_bytes": peak.peak,
        "torch_max_allocated_bytes": torch.cuda.max_memory_allocated(),
        "model_load_s": load_s,
        "losses": losses,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    gib = lambda b: f"{b / 2**30:.2f} GiB" if b else "-"  # noqa: E731
    print(f"PyTorch train {args.precision} batch {args.batch_size}: {result['samples_per_s']:.1f} samples/s "
          f"(step {median * 1e3:.1f} ms), peak {gib(result['peak_gpu_bytes'])} (NVML), "
          f"{gib(result['torch_max_allocated_bytes'])} (allocator), loss {losses[0]:.3f} -> {losses[-1]:.3f}")


if __name__ == "__main__":
    main()
