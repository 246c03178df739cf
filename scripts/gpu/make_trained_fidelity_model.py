#!/usr/bin/env python3
"""A trained BLIP for `vlmrun fidelity`: the random-weight model of make_fidelity_model.py,
fine-tuned on a synthetic captioning task until its captions are confident, as a trained
captioner's are.

Why: a random-weight BLIP picks each token among ~30k near-equal logits (top-1/top-2 gaps of about
one logit), so any rounding flips captions: on it even PyTorch's own bf16 keeps only about half
the greedy captions of PyTorch f32. A trained captioner puts a clear margin between its token and
the rest. This script produces such a model with the same architecture and shapes, so agreement
numbers measure rounding against realistic margins. The random model stays the stress test.

The task: scenes of one or two coloured shapes (circle, square, triangle; small or large; left,
right, top, bottom or middle) on a coloured, lightly textured background, captioned by a template
("a large red circle on the left on a blue background", "a small green square and a yellow
triangle on a black background"). Training scenes are drawn at the model's image size on the fly;
held-out scenes are written as PNGs of random sizes (the captioning pipeline resizes them) with
their reference captions (data.jsonl). The model learns colours, shapes, sizes and places from
the pixels, so its captions depend on the image.

Training: PyTorch, scenes drawn by --workers loader processes, AdamW (lr --lr, weight decay 0.05, warm-up 5% then cosine), bf16 autocast on
CUDA (f32 on CPU), HF's own loss (label smoothing 0.1), the vision encoder frozen unless
--train-vision, `input_ids[:, 0]` = the decoder BOS as generate uses it, pads ignored.

Pinned versions: those of make_full_parity.py (torch 2.11.0, transformers 5.17.0, Pillow 12.3.0).

Usage (from the repository root; a few minutes for base on an H100):
    python scripts/gpu/make_fidelity_model.py --out /tmp/fid-base --arch base --images 8
    python scripts/gpu/make_trained_fidelity_model.py --init /tmp/fid-base/model --out /tmp/fidt-base \\
        --images 256 --steps 1500 --batch 64 --lr 2e-4

Writes OUT/model/{config.json, model.safetensors (f32), tokenizer.json}, OUT/images/*.png +
OUT/images/data.jsonl, OUT/model_info.json (settings, loss curve, held-out caption accuracy,
distinct captions, confidence of the greedy tokens: mean top-1 probability and logit margin).
"""

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
from make_full_parity import BOS, PAD, PINS, TOKENIZER, pixels, require_pins, trim  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import BlipForConditionalGeneration  # noqa: E402

COLOURS = {
    "red": (215, 35, 35), "green": (40, 160, 60), "blue": (40, 70, 215), "yellow": (240, 215, 40),
    "white": (240, 240, 240), "black": (20, 20, 20), "orange": (240, 135, 25),
    "purple": (130, 50, 165), "pink": (240, 130, 190), "gray": (128, 128, 128),
}
SHAPES = ["circle", "square", "triangle"]
PLACES = {"on the left": (0.25, 0.5), "on the right": (0.75, 0.5), "at the top": (0.5, 0.25),
          "at the bottom": (0.5, 0.75), "in the middle": (0.5, 0.5)}
SIZES = {"small": 0.11, "large": 0.22}
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def scene(rng: np.random.Generator, width: int, height: int) -> tuple[Image.Image, str]:
    """One random scene and its caption."""
    names = list(COLOURS)
    bg = names[rng.integers(len(names))]
    base = np.array(COLOURS[bg], np.float32)
    noise = rng.normal(0, 12, (height // 8 + 1, width // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)
    im = Image.fromarray(np.clip(base + noise[:height, :width], 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    side = min(width, height)

    def draw_shape(kind: str, colour: str, cx: float, cy: float, r: float) -> None:
        x, y, rr = cx * width, cy * height, r * side
        fill = COLOURS[colour]
        if kind == "circle":
            draw.ellipse([x - rr, y - rr, x + rr, y + rr], fill=fill)
        elif kind == "square":
            draw.rectangle([x - rr, y - rr, x + rr, y + rr], fill=fill)
        else:
            draw.polygon([(x, y - rr), (x - rr, y + rr), (x + rr, y + rr)], fill=fill)

    others = [c for c in names if c != bg]
    colour = others[rng.integers(len(others))]
    kind = SHAPES[rng.integers(len(SHAPES))]
    if rng.random() < 0.6:
        size = list(SIZES)[rng.integers(2)]
        place = list(PLACES)[rng.integers(len(PLACES))]
        cx, cy = PLACES[place]
        jitter = rng.uniform(-0.05, 0.05, 2)
        draw_shape(kind, colour, cx + jitter[0], cy + jitter[1], SIZES[size])
        caption = f"a {size} {colour} {kind} {place} on a {bg} background"
    else:
        size = list(SIZES)[rng.integers(2)]
        colour2 = others[rng.integers(len(others))]
        kind2 = SHAPES[rng.integers(len(SHAPES))]
        left, right = (0.27, 0.5 + rng.uniform(-0.1, 0.1)), (0.73, 0.5 + rng.uniform(-0.1, 0.1))
        draw_shape(kind, colour, *left, SIZES[size])
        draw_shape(kind2, colour2, *right, 0.15)
        caption = f"a {size} {colour} {kind} and a {colour2} {kind2} on a {bg} background"
    return im, caption


def normalise(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> BLIP pixel values (B, 3, S, S) f32 (no resize: drawn at size S)."""
    x = (batch.double() * (1 / 255)).float()
    mean, std = (torch.tensor(v, device=batch.device) for v in (MEAN, STD))
    return ((x - mean) / std).permute(0, 3, 1, 2).contiguous()


class Scenes(torch.utils.data.IterableDataset):
    """Endless batches of (uint8 scenes (B, S, S, 3), captions), drawn by each loader worker from
    its own seed."""

    def __init__(self, size: int, batch: int, seed: int):
        self.size, self.batch, self.seed = size, batch, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            scenes = [scene(rng, self.size, self.size) for _ in range(self.batch)]
            yield (torch.from_numpy(np.stack([np.asarray(im) for im, _ in scenes])),
                   [c for _, c in scenes])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--init", type=Path, required=True, help="model dir of make_fidelity_model.py")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--images", type=int, default=256, help="held-out scenes to write")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--train-vision", action="store_true")
    ap.add_argument("--workers", type=int, default=8, help="scene-drawing loader processes")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-length", type=int, default=20)
    ap.add_argument("--any-version", action="store_true")
    args = ap.parse_args()

    require_pins(args.any_version)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    t0 = time.time()
    model = BlipForConditionalGeneration.from_pretrained(args.init, torch_dtype=torch.float32).to(device)
    size = model.config.vision_config.image_size
    tok = Tokenizer.from_file(str(TOKENIZER))

    if not args.train_vision:
        model.vision_model.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    warm = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else
        0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, args.steps - warm))))
    autocast = device.type == "cuda"
    losses = []
    model.train()
    loader = iter(torch.utils.data.DataLoader(Scenes(size, args.batch, args.seed), batch_size=None,
                                              num_workers=args.workers))
    for step in range(args.steps):
        images, texts = next(loader)
        pix = normalise(images.to(device))
        enc = [tok.encode(c).ids for c in texts]
        width = max(map(len, enc))
        ids = torch.full((len(enc), width), PAD, dtype=torch.long)
        for i, row in enumerate(enc):
            ids[i, : len(row)] = torch.tensor(row)
        ids[:, 0] = BOS
        ids = ids.to(device)
        labels = ids.masked_fill(ids == PAD, -100)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = model(pixel_values=pix, input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(round(loss.item(), 5))
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step} loss {losses[-1]:.4f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()

    # Held-out scenes at random sizes, through the Pillow preprocessing the pipelines use.
    image_dir = args.out / "images"
    if image_dir.exists():
        shutil.rmtree(image_dir)
    image_dir.mkdir(parents=True)
    eval_rng = np.random.default_rng(args.seed + 1)
    refs = []
    with open(image_dir / "data.jsonl", "w") as manifest:
        for i in range(args.images):
            w, h = (int(v) for v in eval_rng.integers(200, 700, 2))
            im, caption = scene(eval_rng, w, h)
            name = f"scene_{i:03d}_{w}x{h}.png"
            im.save(image_dir / name)
            refs.append(caption)
            manifest.write(json.dumps({"id": name, "image": name, "references": [caption]}) + "\n")
    paths = sorted(image_dir.glob("*.png"))
    captions, top1, margins = [], [], []
    with torch.no_grad():
        for k in range(0, len(paths), 16):
            pix = torch.from_numpy(np.concatenate([pixels(p, size) for p in paths[k:k + 16]])).to(device)
            out = model.generate(pixel_values=pix, max_length=args.max_length, num_beams=1,
                                 do_sample=False, output_scores=True, return_dict_in_generate=True)
            for r in out.sequences.tolist():
                captions.append(tok.decode(trim(r, 1), skip_special_tokens=True))
            for scores in out.scores:  # one (B, V) per generated step
                best = scores.float().topk(2, dim=-1)
                top1 += torch.softmax(scores.float(), -1).max(-1).values.tolist()
                margins += (best.values[:, 0] - best.values[:, 1]).tolist()
    by_name = {p.name: c for p, c in zip(paths, captions)}
    with open(image_dir / "data.jsonl") as manifest:
        truth = {json.loads(line)["id"]: json.loads(line)["references"][0] for line in manifest}
    correct = sum(by_name[n] == truth[n] for n in truth)
    margins_sorted = sorted(margins)
    print(f"held-out: {correct}/{len(truth)} captions exact, {len(set(captions))} distinct; "
          f"greedy tokens: mean top-1 probability {np.mean(top1):.3f}, median logit margin "
          f"{np.median(margins):.2f}, 5th percentile {margins_sorted[len(margins) // 20]:.2f} "
          f"({time.time() - t0:.0f}s)", flush=True)
    for name in list(truth)[:5]:
        print(f"  {name}: {by_name[name]!r} (reference {truth[name]!r})")

    model_dir = args.out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(model_dir, safe_serialization=True)
    (model_dir / "generation_config.json").unlink(missing_ok=True)
    shutil.copyfile(TOKENIZER, model_dir / "tokenizer.json")
    info = {
        "generator": "scripts/gpu/make_trained_fidelity_model.py",
        "argv": sys.argv[1:],
        "versions": {k: v[0] for k, v in PINS.items()},
        "init": str(args.init),
        "steps": args.steps, "batch": args.batch, "lr": args.lr, "train_vision": args.train_vision,
        "loss_first": losses[:5], "loss_last": losses[-5:],
        "loss_every_50": losses[::50],
        "held_out_images": len(truth), "held_out_exact": correct,
        "distinct_greedy_captions": len(set(captions)),
        "greedy_mean_top1_probability": float(np.mean(top1)),
        "greedy_median_logit_margin": float(np.median(margins)),
        "greedy_p5_logit_margin": float(margins_sorted[len(margins) // 20]),
        "seconds": round(time.time() - t0, 1),
    }
    (args.out / "model_info.json").write_text(json.dumps(info, indent=1))
    print(f"model saved to {model_dir} ({time.time() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
