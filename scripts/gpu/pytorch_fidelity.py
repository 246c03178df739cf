#!/usr/bin/env python3
"""PyTorch's own precision fidelity, beside `vlmrun fidelity`: the same BLIP weights and images
through transformers in float32 (the reference) and in each of --dtypes (a pure f16/bf16 model:
from_pretrained(dtype=...), no autocast, eager attention), compared with the metrics vlmrun uses
(src/fidelity/compare.rs), written with the same field names.

Pinned versions (checked at start; refuses others unless --any-version):
    torch==2.11.0  transformers==5.17.0  Pillow==12.3.0  safetensors==0.8.0  numpy (any 2.x)
    tokenizers (the one transformers 5.17 pulls in)
No network is used.

Usage (from the repository root; the model from scripts/gpu/make_fidelity_model.py):
    python scripts/gpu/pytorch_fidelity.py --model /tmp/fid/model --images /tmp/fid/images \\
        --device cuda --dtypes f16,bf16 --beams 1,3 --out pytorch_fidelity.json

Metrics, per variant against float32 on the same images (ids: file names, sorted, as vlmrun's
folder dataset names them):
  - exact sequences: the whole generated sequence (bos, prompt, tokens, final [SEP]) is equal;
  - token agreement: over the reference's generated tokens (after bos + prompt), the share of
    positions where the variant has the same token (positions it does not reach disagree);
  - step-1 logits: the logits of the first generated token (decoder input bos + prompt, teacher
    forced), max and mean |variant - reference| over images and vocabulary, images whose argmax
    agrees, images with non-finite logits (left out of the errors);
  - torch_max_allocated_bytes: torch.cuda.max_memory_allocated while the variant ran (CUDA only;
    allocator bytes, not NVML process memory as vlmrun reports).
Preprocessing: tests/fixtures/make_full_parity.py's pixels() (BlipImageProcessorPil arithmetic,
which vlmrun reproduces bit for bit). Generation: greedy / beam search with --max-length,
--min-length, length_penalty 1, repetition_penalty 1, --batch images per generate call.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
from make_full_parity import BOS, PINS, SEP, pixels, require_pins, trim  # noqa: E402
from transformers import BlipForConditionalGeneration  # noqa: E402

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tiff"}


def sequence_agreement(reference, variant, start_len, ids):
    """As src/fidelity/compare.rs `sequences`."""
    exact, tokens, agreeing, differing = 0, 0, 0, []
    for i, want in enumerate(reference):
        got = variant[i] if i < len(variant) else []
        if want == got:
            exact += 1
        else:
            differing.append(ids[i])
        generated = want[start_len:]
        tokens += len(generated)
        agreeing += sum(1 for k, t in enumerate(generated)
                        if start_len + k < len(got) and got[start_len + k] == t)
    pct = lambda part, whole: 100.0 if whole == 0 else 100.0 * part / whole  # noqa: E731
    return dict(images=len(reference), exact_sequences=exact,
                exact_sequence_pct=pct(exact, len(reference)), reference_tokens=tokens,
                agreeing_tokens=agreeing, token_agreement_pct=pct(agreeing, tokens),
                differing_images=differing)


def logit_error(reference, variant):
    """As src/fidelity/compare.rs `step1_logits` (inputs: (images, vocab) float32 arrays)."""
    finite = np.isfinite(variant).all(axis=1)
    ref, var = reference[finite].astype(np.float64), variant[finite].astype(np.float64)
    err = np.abs(ref - var)
    measured = err.size > 0
    return dict(
        max_abs_error=float(err.max()) if measured else None,
        mean_abs_error=float(err.mean()) if measured else None,
        reference_max_abs=float(np.abs(ref).max()) if measured else 0.0,
        top1_agreement=int((ref.argmax(axis=1) == var.argmax(axis=1)).sum()) if measured else 0,
        non_finite_images=int((~finite).sum()),
    )


def run(model, batches, start, beams, args, device):
    """First-step logits (images, vocab) and, per beam count, the sequences of every image."""
    logits, sequences = [], {b: [] for b in beams}
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        for pv in batches:
            pv = pv.to(device, dtype)
            emb = model.vision_model(pixel_values=pv).last_hidden_state
            ids = torch.tensor([start] * pv.shape[0], device=device)
            out = model.text_decoder(input_ids=ids, encoder_hidden_states=emb).logits[:, -1]
            logits.append(out.float().cpu().numpy())
            prompt_ids = None
            if len(start) > 1:  # HF BLIP takes [CLS] prompt [SEP] and rewrites it to bos + prompt
                prompt_ids = torch.tensor([[101] + start[1:] + [SEP]] * pv.shape[0], device=device)
            for b in beams:
                o = model.generate(pixel_values=pv, input_ids=prompt_ids, max_length=args.max_length,
                                   min_length=args.min_length, num_beams=b, do_sample=False)
                sequences[b] += [trim(r, len(start)) for r in o.tolist()]
    return np.concatenate(logits), sequences


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True, help="folder of images (all are used)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtypes", default="f16,bf16")
    ap.add_argument("--beams", default="1,3")
    ap.add_argument("--max-length", type=int, default=20)
    ap.add_argument("--min-length", type=int, default=0)
    ap.add_argument("--prompt", default="", help='e.g. "a picture of"')
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--any-version", action="store_true")
    args = ap.parse_args()

    require_pins(args.any_version)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    device = torch.device(args.device)
    beams = [int(b) for b in args.beams.split(",")]
    variants = [d for d in args.dtypes.split(",") if d]
    unknown = [d for d in variants if d not in DTYPES]
    if unknown:
        sys.exit(f"unknown --dtypes {unknown}: expected f32, f16 or bf16")

    paths = sorted(p for p in args.images.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)[: args.limit]
    ids = [p.name for p in paths]
    config = json.loads((args.model / "config.json").read_text())
    size = config.get("vision_config", {}).get("image_size", 384)
    pix = torch.from_numpy(np.concatenate([pixels(p, size) for p in paths]))
    batches = pix.split(args.batch)
    start = [BOS]
    if args.prompt:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
        start = [BOS] + tok.encode(args.prompt).ids[1:-1]

    def load(name):
        m = BlipForConditionalGeneration.from_pretrained(args.model, dtype=DTYPES[name])
        return m.to(device).eval()

    results = {}
    for name in ["f32"] + variants:
        t0 = time.time()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        model = load(name)
        logits, sequences = run(model, batches, start, beams, args, device)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        results[name] = (logits, sequences, peak, time.time() - t0)
        print(f"{name}: {time.time() - t0:.0f}s", file=sys.stderr, flush=True)

    ref_logits, ref_seqs, ref_peak, ref_seconds = results["f32"]
    doc = {
        "schema": "pytorch.fidelity/1",
        "generator": "scripts/gpu/pytorch_fidelity.py",
        "versions": {k: v[0] for k, v in PINS.items()},
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "model": str(args.model),
        "image_ids": ids,
        "settings": dict(prompt=args.prompt, max_length=args.max_length, min_length=args.min_length,
                         length_penalty=1.0, repetition_penalty=1.0, batch_size=args.batch, beams=beams),
        "reference": dict(label="f32", precision="f32", torch_max_allocated_bytes=ref_peak,
                          run_seconds=ref_seconds),
        "reference_sequences": {str(b): ref_seqs[b] for b in beams},
        "variants": [],
    }
    for name in variants:
        logits, seqs, peak, seconds = results[name]
        doc["variants"].append(dict(
            label=name, precision=name, torch_max_allocated_bytes=peak, run_seconds=seconds,
            decoding=[dict(num_beams=b, **sequence_agreement(ref_seqs[b], seqs[b], len(start), ids))
                      for b in beams],
            step1_logits=logit_error(ref_logits, logits),
        ))
    args.out.write_text(json.dumps(doc, indent=1))

    setting = lambda b: "greedy" if b == 1 else f"beam {b}"  # noqa: E731
    head = ["variant"] + [f"{setting(b)} {k}" for b in beams for k in ("exact %", "tokens %")]
    head += ["step-1 logits max abs err", "mean abs err", "step-1 top-1 same", "torch peak MiB"]
    print(f"PyTorch agreement with f32 on {len(ids)} images, prompt {args.prompt!r}, "
          f"max_length {args.max_length}, batch {args.batch}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for v in doc["variants"]:
        row = [f"PyTorch {v['label']}"]
        for d in v["decoding"]:
            row += [f"{d['exact_sequence_pct']:.1f}", f"{d['token_agreement_pct']:.1f}"]
        e = v["step1_logits"]
        row += ["-" if e["max_abs_error"] is None else f"{e['max_abs_error']:.3e}",
                "-" if e["mean_abs_error"] is None else f"{e['mean_abs_error']:.3e}",
                f"{e['top1_agreement']}/{len(ids)}",
                "-" if v["torch_max_allocated_bytes"] is None else f"{v['torch_max_allocated_bytes'] / 2**20:.1f}"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
