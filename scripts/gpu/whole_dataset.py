#!/usr/bin/env python3
"""The whole-dataset comparison: what the Python baseline vlmrun replaces does with a folder of JPEGs
(a torch DataLoader decoding and preprocessing with worker processes, transformers BLIP `generate`
in bf16 on the GPU, one JSON line per image), timed from the first image read to the last line
written, beside `vlmrun baseline` on the same images and weights (scripts/gpu/graphs_check.sh).

  whole_dataset.py make DIR N        N synthetic 640x480 JPEGs and DIR/data.jsonl (numpy seed 0)
  whole_dataset.py hf MODEL DIR OUT  transformers over DIR/data.jsonl -> OUT (jsonl); prints images/s

Pinned: torch 2.11, transformers 5.17 (the GPU machine's)."""
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with open(folder / "data.jsonl", "w") as f:
        for i in range(count):
            small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
            Image.fromarray(small).resize((640, 480), Image.BILINEAR).save(folder / f"img{i:05d}.jpg", quality=90)
            f.write(json.dumps({"id": f"img{i:05d}", "image": f"img{i:05d}.jpg", "references": ["a picture"]}) + "\n")
    print(f"wrote {count} JPEGs to {folder}")


def hf(model_dir: Path, folder: Path, out: Path, batch: int = 64, workers: int = 8) -> None:
    import torch
    from tokenizers import Tokenizer
    from torch.utils.data import DataLoader, Dataset
    from transformers import BlipForConditionalGeneration

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benches" / "reference"))
    from pytorch_blip import image_processor  # noqa: E402

    rows = [json.loads(line) for line in open(folder / "data.jsonl")]
    t0 = time.perf_counter()
    model = BlipForConditionalGeneration.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    processor, _ = image_processor(model.config.vision_config.image_size)
    torch.cuda.synchronize()
    load_s = time.perf_counter() - t0

    class Images(Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            img = Image.open(folder / rows[i]["image"]).convert("RGB")
            return torch.from_numpy(processor(images=img, return_tensors="np")["pixel_values"][0]), i

    loader = DataLoader(Images(), batch_size=batch, num_workers=workers, pin_memory=True)
    start = time.perf_counter()
    done = 0
    with open(out, "w") as f, torch.inference_mode():
        for pixels, index in loader:
            ids = model.generate(pixel_values=pixels.cuda(non_blocking=True).to(torch.bfloat16), max_length=20,
                                 num_beams=1, do_sample=False)
            for i, seq in zip(index.tolist(), ids.tolist()):
                f.write(json.dumps({"id": rows[i]["id"], "caption": tokenizer.decode(seq, skip_special_tokens=True),
                                    "token_ids": seq}) + "\n")
            done += len(index)
    wall = time.perf_counter() - start
    print(json.dumps({"tool": "transformers", "images": done, "wall_s": round(wall, 2), "load_s": round(load_s, 2),
                      "images_per_s": round(done / wall, 1), "batch": batch, "workers": workers,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "make":
        make(Path(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) >= 5 and sys.argv[1] == "hf":
        hf(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        sys.exit(__doc__)
