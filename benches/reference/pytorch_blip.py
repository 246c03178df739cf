#!/usr/bin/env python3
"""PyTorch reference for `vlmrun bench`: the same BLIP, weights, inputs and settings through
transformers, timed the same way, written in the same JSON schema (vlmrun.bench/1).

Pinned versions (checked at start; refuses others unless --any-version):
    torch==2.11.0  transformers==5.17.0  (plus numpy, Pillow, safetensors, tokenizers)
Optional: pynvml (nvidia-ml-py) for peak GPU memory measured like vlmrun (NVML, this process).
No network is used.

Two steps (run from the repository root):

    # 1. Random weights, ONCE, in the Hugging Face layout (config.json, model.safetensors in f32,
    #    tokenizer.json copied from models/tokenizer/), so vlmrun reads exactly the same weights:
    python benches/reference/pytorch_blip.py write --arch base --model-dir /tmp/bench-base

    # 2. Timings in one precision (a pure f16/bf16 model: weights cast with from_pretrained(dtype=...),
    #    no autocast; eager attention):
    python benches/reference/pytorch_blip.py bench --model-dir /tmp/bench-base --precision bf16 \
        --batch-sizes 1,8,64 --beams 1,3 --tokens 20 --warmup 2 --iterations 5 --out pytorch_bf16.json

Shapes (--arch): base and large as in tests/fixtures/make_full_parity.py (Salesforce
blip-image-captioning-{base,large}: vision 768x12 / 1024x24, text 768x12, 384 px images).
Weights: that script's init (reinit_, fixed --seed, CPU generator: identical on every machine).

What is timed, per (batch size, beams), every clock read after torch.cuda.synchronize(), medians:
  - vision:   model.vision_model(pixel_values) on the batch already on the device;
  - prefill / decode step: the text decoder called as generate calls it (prompt with the cache, then
    one token at a time over batch x beams rows), argmax read back each time;
  - generate: model.generate(pixel_values, input_ids, min_new_tokens=N, max_new_tokens=N, num_beams)
    from pixels on the device to token ids;
  - end to end: host pixels -> .to(device, dtype) -> generate -> batch_decode;
  - preprocessing: Pillow JPEG decode + BlipImageProcessorPil of the same synthetic 640x480 picture
    vlmrun uses (src/bench/synthetic.rs: the same formula), on one thread;
  - peak memory: NVML process memory sampled every 20 ms when pynvml is importable (as vlmrun does),
    else torch.cuda.max_memory_allocated; the latter is always recorded as torch_max_allocated_bytes.
"""

import argparse
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
from make_full_parity import ARCHS, blip_config, reinit_  # noqa: E402  (shared shapes and init)

PINS = {
    "torch": (torch.__version__.split("+")[0], "2.11.0"),
    "transformers": (transformers.__version__, "5.17.0"),
}
SCHEMA = "vlmrun.bench/1"
TOKENIZER = REPO / "models" / "tokenizer" / "tokenizer.json"
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
WIDTH, HEIGHT, JPEG_QUALITY = 640, 480, 90


# ---------------------------------------------------------------------------------------------
# write
# ---------------------------------------------------------------------------------------------
def write(args: argparse.Namespace) -> None:
    from transformers import BlipForConditionalGeneration

    t0 = time.time()
    config = blip_config(args.arch)
    gen = torch.Generator().manual_seed(args.seed)
    model = BlipForConditionalGeneration(config).eval()
    reinit_(model, gen, vision_gain=args.vision_gain)
    args.model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.model_dir, safe_serialization=True)
    (args.model_dir / "generation_config.json").unlink(missing_ok=True)
    shutil.copyfile(TOKENIZER, args.model_dir / "tokenizer.json")
    note = {"writer": "benches/reference/pytorch_blip.py", "arch": args.arch, "seed": args.seed,
            "vision_gain": args.vision_gain, "parameters": sum(p.numel() for p in model.parameters()),
            "versions": {k: v[0] for k, v in PINS.items()}}
    (args.model_dir / "bench-weights.json").write_text(json.dumps(note, indent=1) + "\n")
    print(f"wrote {args.arch} ({note['parameters'] / 1e6:.0f}M parameters) to {args.model_dir} "
          f"in {time.time() - t0:.0f} s", flush=True)


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def synthetic_image() -> np.ndarray:
    """The picture of src/bench/synthetic.rs: gradient (0..=191) + 6 bits of a uint32 hash."""
    x = np.arange(WIDTH, dtype=np.uint32)[None, :]
    y = np.arange(HEIGHT, dtype=np.uint32)[:, None]
    out = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    gradients = [x * 191 // (WIDTH - 1) + 0 * y, y * 191 // (HEIGHT - 1) + 0 * x,
                 (x + y) * 191 // (WIDTH + HEIGHT - 2)]
    for c in range(3):
        h = (x * np.uint32(73_856_093)) ^ (y * np.uint32(19_349_663)) ^ np.uint32((c * 83_492_791) & 0xFFFFFFFF)
        out[..., c] = (gradients[c] + ((h >> np.uint32(11)) & np.uint32(63))).astype(np.uint8)
    return out


def image_processor(size: int):
    try:
        from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil as cls
    except ImportError:  # other transformers versions
        from transformers import BlipImageProcessor as cls
    return cls(size={"height": size, "width": size}), cls.__name__


def summary(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"count": len(values), "p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
            "mean": float(v.mean()), "max": float(v.max())}


# ---------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------
def run_text(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except Exception:  # noqa: BLE001 - a missing tool just leaves the field null
        return None


def environment(device: torch.device, precision: str, model_dir: Path) -> dict:
    cuda = device.type == "cuda"
    smi = run_text(["nvidia-smi"]) if cuda else None
    driver_cuda = re.search(r"CUDA Version:\s*([0-9.]+)", smi).group(1) if smi and "CUDA Version" in smi else None
    driver = run_text(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]) if cuda else None
    cargo = (REPO / "Cargo.toml").read_text()
    version = re.search(r'^version\s*=\s*"([^"]+)"', cargo, re.M)
    cpu = "CPU " + (next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
                         "unknown") if Path("/proc/cpuinfo").exists() else "unknown")
    return {
        "device": f"cuda:{device.index or 0} ({torch.cuda.get_device_name(device)})" if cuda else "cpu",
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu,
        "driver": driver.splitlines()[0] if driver else None,
        "driver_cuda": driver_cuda,
        "cuda_build": torch.version.cuda if cuda else None,
        "compute_capability": "%d.%d" % torch.cuda.get_device_capability(device) if cuda else None,
        "precision": precision,
        "quantization": "none",
        "vlmrun_version": version.group(1) if version else "unknown",
        "git_rev": run_text(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"]) or "unknown",
        "framework": f"torch {torch.__version__}, transformers {transformers.__version__}",
        "cpu_threads": os.cpu_count() or 1,
        "model_dir": str(model_dir),
    }


class NvmlPeak:
    """This process's GPU memory from NVML, sampled every 20 ms (vlmrun's GpuMemoryMonitor)."""

    def __init__(self, index: int):
        import pynvml  # raises ImportError when absent

        pynvml.nvmlInit()
        self.nvml, self.handle, self.pid = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index), os.getpid()
        self.peak, self.stop = 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                for p in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
                    if p.pid == self.pid and p.usedGpuMemory:
                        self.peak = max(self.peak, int(p.usedGpuMemory))
            except self.nvml.NVMLError:
                pass
            time.sleep(0.02)

    def finish(self) -> int | None:
        self.stop.set()
        self.thread.join()
        return self.peak or None


# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------
def bench(args: argparse.Namespace) -> None:
    from tokenizers import Tokenizer
    from transformers import BlipForConditionalGeneration

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = DTYPES[args.precision]
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    model = BlipForConditionalGeneration.from_pretrained(
        args.model_dir, dtype=dtype, attn_implementation="eager").to(device).eval()
    tokenizer = Tokenizer.from_file(str(args.model_dir / "tokenizer.json"))
    sync()
    model_load_s = time.perf_counter() - t0
    cfg = model.config
    text = cfg.text_config
    size = cfg.vision_config.image_size

    # HF BLIP generate replaces the first id ([CLS]) with bos and drops the last ([SEP]); with no
    # prompt it builds [bos, eos] itself. `prompt` is what the decoder starts from (as vlmrun counts).
    ids = tokenizer.encode(args.prompt).ids if args.prompt else None
    prompt = [text.bos_token_id] + (ids[1:-1] if ids else [])
    prompt_len = len(prompt)

    # preprocessing: JPEG decode + processor, one thread
    buffer = io.BytesIO()
    Image.fromarray(synthetic_image(), "RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    jpeg = buffer.getvalue()
    processor, processor_name = image_processor(size)

    def preprocess_once() -> np.ndarray:
        img = Image.open(io.BytesIO(jpeg)).convert("RGB")
        return processor(images=img, return_tensors="np")["pixel_values"][0]

    for _ in range(max(args.warmup, 1)):
        preprocess_once()
    pre = []
    for _ in range(max(args.iterations, 5)):
        s = time.perf_counter()
        pixels = preprocess_once()
        pre.append((time.perf_counter() - s) * 1e3)
    pre_summary = summary(pre)

    try:
        NvmlPeak(device.index or 0).finish() if cuda else None
        measure = "nvml-process" if cuda else None
    except Exception:  # noqa: BLE001 - no pynvml or no NVML: fall back to torch's allocator stats
        measure = "torch-allocated" if cuda else None

    records = []
    for batch_size in args.batch_sizes:
        host = torch.from_numpy(np.repeat(pixels[None], batch_size, axis=0)).float()
        input_ids = torch.tensor([ids] * batch_size, device=device) if ids else None
        for beams in args.beams:
            monitor = NvmlPeak(device.index or 0) if measure == "nvml-process" else None
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)

            def end_to_end():
                sync()
                s = time.perf_counter()
                pv = host.to(device, dtype)
                sync()
                g = time.perf_counter()
                with torch.inference_mode():
                    out = model.generate(pixel_values=pv, input_ids=input_ids, max_new_tokens=args.tokens,
                                         min_new_tokens=args.tokens, num_beams=beams, do_sample=False)
                sync()
                e = time.perf_counter()
                rows = out.tolist()
                texts = [tokenizer.decode(r, skip_special_tokens=True) for r in rows]
                done = time.perf_counter()
                return (e - g) * 1e3, (done - s) * 1e3, {len(r) for r in rows}, texts

            for _ in range(args.warmup):
                end_to_end()
            pv = host.to(device, dtype)
            vision = []
            with torch.inference_mode():
                for _ in range(args.iterations):
                    sync()
                    s = time.perf_counter()
                    embeds = model.vision_model(pixel_values=pv)[0]
                    sync()
                    vision.append((time.perf_counter() - s) * 1e3)
            prefill, steps = decoder_phases(model, embeds, prompt, beams, args.tokens, args.iterations, sync)
            gen_ms, lat_ms, lengths = [], [], set()
            for _ in range(args.iterations):
                g, t, n, _ = end_to_end()
                gen_ms.append(g)
                lat_ms.append(t)
                lengths |= n
            generated = sorted(n - prompt_len for n in lengths)
            if generated != [args.tokens]:
                print(f"WARNING: batch {batch_size} beams {beams}: generated {generated} tokens, "
                      f"expected {args.tokens}", flush=True)
            torch_peak = torch.cuda.max_memory_allocated(device) if cuda else None
            nvml_peak = monitor.finish() if monitor else None
            vision_ms = statistics.median(vision)
            gen = summary(gen_ms)
            lat = summary(lat_ms)
            step_in_generate = None
            if prefill is not None and args.tokens > 1:
                step_in_generate = max(0.0, (gen["p50"] - vision_ms - prefill) / (args.tokens - 1))
            record = {
                "batch_size": batch_size,
                "num_beams": beams,
                "generated_tokens": generated[0] if len(generated) == 1 else args.tokens,
                "vision_ms": vision_ms,
                "vision_images_per_s": batch_size * 1e3 / vision_ms,
                "prefill_ms": prefill,
                "decode_step_ms": steps,
                "decode_step_in_generate_ms": step_in_generate,
                "generate_ms": gen,
                "latency_ms": lat,
                "images_per_s": batch_size * 1e3 / lat["p50"],
                "generated_tokens_per_s": batch_size * args.tokens * 1e3 / lat["p50"],
                "peak_gpu_bytes": nvml_peak if measure == "nvml-process" else torch_peak,
                "torch_max_allocated_bytes": torch_peak,
            }
            records.append(record)
            print(f"pytorch {args.precision}: batch {batch_size}, beams {beams}: "
                  f"{record['images_per_s']:.2f} images/s, vision {record['vision_images_per_s']:.0f} images/s, "
                  f"latency p50 {lat['p50']:.1f} ms", flush=True)

    doc = {
        "schema": SCHEMA,
        "tool": "pytorch",
        "environment": environment(device, args.precision, args.model_dir),
        "model": {
            "image_size": size,
            "patch_size": cfg.vision_config.patch_size,
            "vision_hidden_size": cfg.vision_config.hidden_size,
            "vision_layers": cfg.vision_config.num_hidden_layers,
            "text_hidden_size": text.hidden_size,
            "text_layers": text.num_hidden_layers,
            "vocab_size": text.vocab_size,
        },
        "settings": {
            "batch_sizes": args.batch_sizes,
            "beams": args.beams,
            "prompt": args.prompt,
            "prompt_tokens": prompt_len,
            "generated_tokens": args.tokens,
            "forced_length": prompt_len + args.tokens,
            "warmup": args.warmup,
            "iterations": args.iterations,
            "peak_gpu_measure": measure,
        },
        "model_load_s": model_load_s,
        "preprocess": {
            "input": f"{WIDTH}x{HEIGHT} synthetic JPEG (quality {JPEG_QUALITY}, Pillow) -> {size}x{size} "
                     f"({processor_name})",
            "ms": pre_summary,
            "images_per_s_one_thread": 1e3 / pre_summary["p50"],
        },
        "records": records,
        "config": {
            "script": "benches/reference/pytorch_blip.py",
            "argv": sys.argv[1:],
            "attn_implementation": "eager",
            "dtype": str(dtype),
            "generate": {"min_new_tokens": args.tokens, "max_new_tokens": args.tokens, "do_sample": False},
            "versions": {k: v[0] for k, v in PINS.items()},
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}", flush=True)


def decoder_phases(model, embeds, prompt, beams, tokens, iterations, sync):
    """Median prefill ms and median decode-step ms, driving the text decoder as generate does
    (encoder states repeated per beam, the cache the decoder returns fed back). (None, None) if this
    transformers version's decoder API does not allow it; the rest of the record is still measured."""
    try:
        rows = embeds.shape[0] * beams
        states = embeds.repeat_interleave(beams, dim=0)
        prefills, steps = [], []
        with torch.inference_mode():
            for _ in range(iterations):
                sync()
                s = time.perf_counter()
                ids = torch.tensor([prompt] * rows, device=embeds.device)
                out = model.text_decoder(input_ids=ids, encoder_hidden_states=states, use_cache=True,
                                         return_dict=True)
                nxt = out.logits[:, -1].float().argmax(-1)
                nxt.tolist()
                sync()
                prefills.append((time.perf_counter() - s) * 1e3)
                for _ in range(tokens - 1):
                    sync()
                    s = time.perf_counter()
                    out = model.text_decoder(input_ids=nxt[:, None], encoder_hidden_states=states,
                                             past_key_values=out.past_key_values, use_cache=True, return_dict=True)
                    nxt = out.logits[:, -1].float().argmax(-1)
                    nxt.tolist()
                    sync()
                    steps.append((time.perf_counter() - s) * 1e3)
        return statistics.median(prefills), (statistics.median(steps) if steps else None)
    except Exception as err:  # noqa: BLE001 - report and go on without these two numbers
        print(f"note: prefill/decode-step timing skipped ({type(err).__name__}: {err})", flush=True)
        return None, None


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--any-version", action="store_true", help="run with other torch/transformers versions")
    sub = ap.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write random weights once (HF layout)")
    w.add_argument("--arch", choices=sorted(ARCHS), default="base")
    w.add_argument("--model-dir", type=Path, required=True)
    w.add_argument("--seed", type=int, default=20240611)
    w.add_argument("--vision-gain", type=float, default=1.0,
                   help="init gain of the vision linears (reinit_ in make_full_parity.py; 1.0 keeps f16 finite)")
    b = sub.add_parser("bench", help="time transformers on the written weights")
    b.add_argument("--model-dir", type=Path, required=True)
    b.add_argument("--precision", choices=sorted(DTYPES), default="bf16")
    b.add_argument("--device", default="cuda")
    b.add_argument("--batch-sizes", type=int_list, default=[1, 8, 64])
    b.add_argument("--beams", type=int_list, default=[1])
    b.add_argument("--tokens", type=int, default=20)
    b.add_argument("--prompt", default="")
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--iterations", type=int, default=5)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    bad = {k: v for k, v in PINS.items() if v[0] != v[1]}
    if bad and not args.any_version:
        sys.exit(f"version mismatch (found, pinned): {bad}; pass --any-version to go on anyway")
    if args.command == "write":
        write(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
