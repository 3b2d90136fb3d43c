#!/usr/bin/env python3
"""Write tests/data/images/pil_resize.safetensors: what Pillow's Image.resize makes of
tests/data/images/waves_64x48.png (converted to RGB) with every resampling filter, at
sizes that shrink, stretch and mix (reducing_gap=None, as transformers calls it).
tessera's preprocess::resize ports Pillow's arithmetic and must match it bit for bit.

    pip install --target .cache/pylib pillow numpy safetensors
    PYTHONPATH=.cache/pylib python3 scripts/make_resample_fixture.py
"""
import os

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SRC = os.path.join(ROOT, "tests/data/images/waves_64x48.png")
OUT = os.path.join(ROOT, "tests/data/images/pil_resize.safetensors")

FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
SIZES = [(20, 13), (80, 50), (33, 96), (32, 32)]  # (width, height)

img = Image.open(SRC).convert("RGB")
out = {}
for code, name in FILTERS.items():
    for w, h in SIZES:
        r = img.resize((w, h), resample=code, reducing_gap=None)
        out[f"{name}.{w}x{h}"] = np.asarray(r, dtype=np.uint8).copy()
save_file(out, OUT, metadata={"source": "waves_64x48.png", "pillow": Image.__version__})
print(f"wrote {OUT}: {len(out)} images")
