#!/usr/bin/env python3
"""64 synthetic 640x480 JPEGs with two random-word captions each and their manifest (data.jsonl), in
the folder given as the argument: the training set of scripts/gpu/train_side_by_side.sh and
scripts/gpu/profile.sh (WHAT=train). Deterministic (numpy seed 0)."""
import json, sys
import numpy as np
from pathlib import Path
from PIL import Image
d = Path(sys.argv[1]); d.mkdir(exist_ok=True)
rng = np.random.default_rng(0)
words = "a the dog cat man woman red blue green small large on in with near table street car tree sky".split()
with open(d / "data.jsonl", "w") as f:
    for i in range(64):
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((640, 480), Image.BILINEAR) \
            .save(d / f"img{i:03d}.jpg", quality=90)
        refs = [" ".join(rng.choice(words, rng.integers(6, 13))) for _ in range(2)]
        f.write(json.dumps({"id": f"img{i:03d}", "image": f"img{i:03d}.jpg", "references": refs}) + "\n")
