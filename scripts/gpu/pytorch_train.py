#!/usr/bin/env python3
"""PyTorch AMP reference for `vlmrun train` throughput (docs/training.md): the same BLIP weights,
the same manifest, the same recipe, timed the same way.

Recipe (as vlmrun's train loop and LAVIS' caption fine-tuning): f32 master weights, forward and
backward under torch.autocast(bfloat16) (no GradScaler: bf16 needs none), prompt "a picture of "
masked out of the labels with the padding, label smoothing 0.1, AdamW (weight decay 0.05 on
weights, none on biases/LayerNorms/embeddings), global-norm clipping at 1.0, constant learning
rate. Batches are the training pairs in manifest order (no shuffling), `batch-size` at a time,
wrapping around.

Modes (--mode):
  jpeg     images preprocessed once and kept on the host (as vlmrun does for a small set); each step
           tokenizes its captions and uploads its batch; AdamW foreach (torch's default).
  gpu      the strongest eager loop: every batch's pixel_values, input_ids and labels built once
           before timing and kept on the GPU, so a step is pure GPU work; AdamW fused=True.
  compile  as gpu, with model = torch.compile(model) (default mode); the first step (compilation
           included) is reported separately as first_step_s.
Every mode uses optimizer.zero_grad(set_to_none=True); first_step_s is reported for all of them.

Timed: each step from batch assembly to the optimizer update, torch.cuda.synchronize() before the
clock is read; samples/s is the median over the measured steps (warm-up steps excluded). Peak
memory: NVML process memory sampled every 20 ms when pynvml imports (as vlmrun measures), and
torch.cuda.max_memory_allocated (gpu/compile: includes the resident batches).

--dump-grads PATH: after the first step's backward (before clipping and the optimizer step), every
parameter's gradient is saved (f32, HF parameter names, safetensors.torch.save_file; a parameter
with no gradient is saved as zeros and listed in the metadata's "no_grad"; the metadata also holds
the step-1 loss). The time the dump takes is left out of that step's time.

Pinned versions (checked at start): torch==2.11.0 transformers==5.17.0
Run from the repository root:
    python3 scripts/gpu/pytorch_train.py --model-dir /tmp/bench-base --manifest /tmp/train/data.jsonl \
        --mode gpu --batch-size 32 --warmup 3 --steps 10 --out pytorch_train_gpu.json
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
MODES = {
    "jpeg": "eager, batches uploaded from the host each step, AdamW foreach",
    "gpu": "eager, batches resident on the GPU, AdamW fused",
    "compile": "torch.compile (default mode), batches resident on the GPU, AdamW fused",
}


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
    ap.add_argument("--mode", choices=list(MODES), default="jpeg")
    ap.add_argument("--dump-grads", type=Path, default=None,
                    help="save every parameter's gradient after the first backward (safetensors, f32)")
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

    def host_batch(step: int):
        """The step's pairs (in manifest order) as host tensors: pixel_values, input_ids, labels."""
        batch = [pairs[(step * args.batch_size + i) % len(pairs)] for i in range(args.batch_size)]
        enc = tokenizer([PROMPT + c for _, c in batch], padding="longest", truncation=True, max_length=30,
                        return_tensors="pt")
        input_ids = enc.input_ids.clone()
        input_ids[:, 0] = BOS
        labels = input_ids.masked_fill(input_ids == PAD, -100)
        labels[:, :prompt_len] = -100
        return torch.stack([pixels[i] for i, _ in batch]), input_ids, labels

    total_steps = args.warmup + args.steps
    resident = {}  # gpu/compile: batch start offset -> (pixel_values, input_ids, labels) on the GPU
    if args.mode != "jpeg":
        for step in range(total_steps):
            key = (step * args.batch_size) % len(pairs)
            if key not in resident:
                resident[key] = tuple(t.to(dev) for t in host_batch(step))
        torch.cuda.synchronize()
    seq_lens = sorted({b[1].shape[1] for b in resident.values()})

    named = list(model.named_parameters())  # HF names (taken before torch.compile wraps the model)
    groups = [
        {"params": [p for n, p in named if decays(n, p.dim())], "weight_decay": 0.05},
        {"params": [p for n, p in named if not decays(n, p.dim())], "weight_decay": 0.0},
    ]
    if args.mode == "jpeg":
        optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    else:
        optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    params = [p for _, p in named]
    if args.mode == "compile":
        torch._logging.set_logs(recompiles=True)  # a recompilation inside the measured steps shows in the log
    step_model = torch.compile(model) if args.mode == "compile" else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def dump_grads(loss) -> float:
        """Saves every parameter's gradient (f32, HF names); returns the seconds it took."""
        from safetensors.torch import save_file

        torch.cuda.synchronize()
        t = time.perf_counter()
        tensors, no_grad = {}, []
        for n, p in named:
            if p.grad is None:
                no_grad.append(n)
                tensors[n] = torch.zeros(p.shape, dtype=torch.float32)
            else:
                tensors[n] = p.grad.detach().to("cpu", torch.float32).contiguous()
        args.dump_grads.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(args.dump_grads), metadata={
            "step": "1", "loss": repr(loss.item()), "mode": args.mode, "precision": args.precision,
            "batch_size": str(args.batch_size), "no_grad": ",".join(no_grad)})
        print(f"gradients of step 1 ({len(tensors)} parameters, {len(no_grad)} without one) -> {args.dump_grads}")
        return time.perf_counter() - t

    times, losses, first_step_s, dump_s = [], [], None, 0.0
    torch.cuda.reset_peak_memory_stats()
    with PeakMemory() as peak:
        for step in range(total_steps):
            torch.cuda.synchronize()
            start = time.perf_counter()
            if args.mode == "jpeg":
                pv, input_ids, labels = host_batch(step)
                pv = pv.to(dev, non_blocking=False)
                input_ids, labels = input_ids.to(dev), labels.to(dev)
            else:
                pv, input_ids, labels = resident[(step * args.batch_size) % len(pairs)]
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = step_model(pixel_values=pv, input_ids=input_ids, labels=labels).loss
            loss.backward()
            if step == 0 and args.dump_grads is not None:
                dump_s = dump_grads(loss)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            losses.append(loss.item())
            torch.cuda.synchronize()
            elapsed = time.perf_counter() - start - (dump_s if step == 0 else 0.0)
            if step == 0:
                first_step_s = elapsed
            if step >= args.warmup:
                times.append(elapsed)
    median = statistics.median(times)
    result = {
        "schema": "vlmrun.train-reference/1",
        "implementation": f"PyTorch {torch.__version__} + transformers {transformers.__version__}, "
                          f"mode {args.mode}: {MODES[args.mode]}, autocast {args.precision}",
        "mode": args.mode,
        "device": torch.cuda.get_device_name(0),
        "batch_size": args.batch_size,
        "precision": args.precision,
        "warmup_steps": args.warmup,
        "measured_steps": args.steps,
        "step_ms_median": median * 1e3,
        "first_step_s": first_step_s,
        "samples_per_s": args.batch_size / median,
        "peak_gpu_bytes": peak.peak,
        "torch_max_allocated_bytes": torch.cuda.max_memory_allocated(),
        "model_load_s": load_s,
        "losses": losses,
    }
    if seq_lens:
        result["resident_batches"] = len(resident)
        result["seq_lens"] = seq_lens
    if args.dump_grads is not None:
        result["dump_grads"] = str(args.dump_grads)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    gib = lambda b: f"{b / 2**30:.2f} GiB" if b else "-"  # noqa: E731
    print(f"PyTorch train ({args.mode}) {args.precision} batch {args.batch_size}: {result['samples_per_s']:.1f} "
          f"samples/s (step {median * 1e3:.1f} ms, first step {first_step_s:.2f} s), peak {gib(result['peak_gpu_bytes'])} (NVML), "
          f"{gib(result['torch_max_allocated_bytes'])} (allocator), loss {losses[0]:.3f} -> {losses[-1]:.3f}")


if __name__ == "__main__":
    main()
