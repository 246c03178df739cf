"""PyTorch's BLIP vision encoder at its strongest, beside `vlmrun bench`'s vision rate (issue: the
inference engine): transformers' BlipVisionModel on the weights of benches/reference/pytorch_blip.py
(MODEL_DIR), bf16, one batch already on the GPU, timed with synchronisation after warm-up, median of
ITERS runs, for: eager (transformers' default attention), SDPA attention, and torch.compile with
mode=max-autotune (compile time reported apart). torch 2.11 + transformers 5.17 on the GPU machine.

usage: python3 scripts/gpu/vision_compile.py MODEL_DIR [BATCH=64] [ITERS=20] [MODES=eager,sdpa,max-autotune]
"""
import statistics
import sys
import time

import torch
from transformers import BlipForConditionalGeneration

model_dir = sys.argv[1]
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 64
iters = int(sys.argv[3]) if len(sys.argv) > 3 else 20
modes = (sys.argv[4] if len(sys.argv) > 4 else "eager,sdpa,max-autotune").split(",")
torch.backends.cuda.matmul.allow_tf32 = True


def load(attn):
    """The vision tower with `attn` attention, or transformers' default where BLIP refuses it."""
    try:
        model = BlipForConditionalGeneration.from_pretrained(model_dir, dtype=torch.bfloat16,
                                                             attn_implementation=attn)
    except (ValueError, NotImplementedError) as e:
        print(f"attn_implementation={attn} refused ({e}); transformers' default instead", flush=True)
        model = BlipForConditionalGeneration.from_pretrained(model_dir, dtype=torch.bfloat16)
    return model.vision_model.cuda().eval()


def timed(fn, pv):
    times = []
    with torch.inference_mode():
        for _ in range(3):
            fn(pixel_values=pv)
        for _ in range(iters):
            torch.cuda.synchronize()
            s = time.perf_counter()
            fn(pixel_values=pv)
            torch.cuda.synchronize()
            times.append((time.perf_counter() - s) * 1e3)
    return statistics.median(times)


size = 384
pv = torch.randn(batch, 3, size, size, device="cuda", dtype=torch.bfloat16)
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, batch {batch}, bf16")
for mode in modes:
    try:
        if mode in ("eager", "sdpa"):
            vision = load(mode)
            ms = timed(vision, pv)
            extra = ""
        else:
            vision = load("sdpa")
            compiled = torch.compile(vision, mode=mode)
            s = time.perf_counter()
            with torch.inference_mode():
                compiled(pixel_values=pv)
            torch.cuda.synchronize()
            extra = f" (compile {time.perf_counter() - s:.0f} s)"
            ms = timed(compiled, pv)
        print(f"PyTorch vision {mode:<13} batch {batch}: {ms:7.2f} ms, {batch * 1e3 / ms:7.0f} images/s{extra}",
              flush=True)
    except Exception as e:  # report and go on to the next mode
        print(f"PyTorch vision {mode}: failed: {e}", flush=True)
