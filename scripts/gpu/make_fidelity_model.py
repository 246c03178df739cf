#!/usr/bin/env python3
"""Random-weight BLIP and images for `vlmrun fidelity` / scripts/gpu/pytorch_fidelity.py.

Builds BlipForConditionalGeneration with the shapes of --arch (base, large: the real checkpoint
shapes of Salesforce/blip-image-captioning-{base,large}; mid: a 512-wide, 4+4-layer model at 224 px
for CPU runs), fills it with tests/fixtures/make_full_parity.py's init (reinit_: wide random weights
with --vision-gain / --cross-gain so that captions depend on the image) and its [SEP]-bias tuning,
saves it in the Hugging Face layout (config.json + model.safetensors in f32 + tokenizer.json) and
writes --images PNGs (make_full_parity's write_images: skimage photos when installed, the
repository's sample images, deterministic synthetic smooth-noise images of random sizes).

Pinned versions (checked at start; refuses others unless --any-version):
    torch==2.11.0  transformers==5.17.0  Pillow==12.3.0  safetensors==0.8.0  numpy (any 2.x)

Usage (from the repository root):
    python scripts/gpu/make_fidelity_model.py --out /tmp/fid --arch base --images 64 --device cuda

Writes OUT/model/{config.json, model.safetensors, tokenizer.json}, OUT/images/*.png and
OUT/model_info.json (settings, the [SEP] bias, distinct greedy captions of the f32 model). Exits 3
when fewer than --min-distinct of the greedy captions are distinct (weights too flat: retry with
other gains).
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
from make_full_parity import (  # noqa: E402  (shared shapes, init, images and preprocessing)
    BOS,
    PINS,
    TOKENIZER,
    blip_config,
    pixels,
    reinit_,
    require_pins,
    trim,
    tune_stop_bias,
    write_images,
)
from transformers import BlipConfig, BlipForConditionalGeneration  # noqa: E402


def mid_config() -> BlipConfig:
    """512 wide (k-quant blocks of 256 fit), 4 vision + 4 text layers, 224 px: minutes on a CPU."""
    return BlipConfig(
        vision_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=4,
                           num_attention_heads=8, image_size=224, patch_size=16),
        text_config=dict(vocab_size=30524, hidden_size=512, intermediate_size=2048,
                         num_hidden_layers=4, num_attention_heads=8, max_position_embeddings=512,
                         bos_token_id=BOS, eos_token_id=2, sep_token_id=102, pad_token_id=0),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--arch", choices=["base", "large", "mid"], default="base")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--max-length", type=int, default=20)
    ap.add_argument("--min-length", type=int, default=5, help="used to tune the [SEP] bias only")
    ap.add_argument("--vision-gain", type=float, default=2.0)
    ap.add_argument("--cross-gain", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--min-distinct", type=float, default=0.5,
                    help="fraction of images that must get distinct greedy captions")
    ap.add_argument("--any-version", action="store_true")
    args = ap.parse_args()

    require_pins(args.any_version)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)
    t0 = time.time()
    model_dir, image_dir = args.out / "model", args.out / "images"
    if image_dir.exists():
        shutil.rmtree(image_dir)
    paths = write_images(image_dir, args.images, args.seed)
    config = mid_config() if args.arch == "mid" else blip_config(args.arch)
    size = config.vision_config.image_size
    pix = np.concatenate([pixels(p, size) for p in paths])
    print(f"{len(paths)} images ({time.time() - t0:.0f}s)", flush=True)

    gen = torch.Generator().manual_seed(args.seed)
    model = BlipForConditionalGeneration(config).eval()
    reinit_(model, gen, cross_gain=args.cross_gain, vision_gain=args.vision_gain)
    model.to(device)
    with torch.no_grad():
        batch = torch.from_numpy(pix).to(device)
        embeds = torch.cat([model.vision_model(pixel_values=b).last_hidden_state
                            for b in batch.split(args.batch)])
        sep_bias = tune_stop_bias(model, embeds, args.max_length, args.min_length)
        greedy = []
        for b in batch.split(args.batch):
            out = model.generate(pixel_values=b, max_length=args.max_length, num_beams=1, do_sample=False)
            greedy += [tuple(trim(r, 1)) for r in out.tolist()]
    distinct = len(set(greedy))
    print(f"[SEP] bias {sep_bias:.3f}; {distinct}/{len(greedy)} distinct greedy captions "
          f"({time.time() - t0:.0f}s)", flush=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(model_dir, safe_serialization=True)
    (model_dir / "generation_config.json").unlink(missing_ok=True)
    shutil.copyfile(TOKENIZER, model_dir / "tokenizer.json")
    info = {
        "generator": "scripts/gpu/make_fidelity_model.py",
        "argv": sys.argv[1:],
        "versions": {k: v[0] for k, v in PINS.items()},
        "arch": args.arch,
        "seed": args.seed,
        "vision_gain": args.vision_gain,
        "cross_gain": args.cross_gain,
        "sep_bias": sep_bias,
        "images": [p.name for p in paths],
        "distinct_greedy_captions": distinct,
    }
    (args.out / "model_info.json").write_text(json.dumps(info, indent=1))
    print(f"model saved to {model_dir} ({time.time() - t0:.0f}s)", flush=True)
    if distinct < args.min_distinct * len(greedy):
        sys.exit(3)


if __name__ == "__main__":
    main()
