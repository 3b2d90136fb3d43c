#!/usr/bin/env python3
"""Write tests/data/images/formats/: waves_64x48.png saved by Pillow as BMP, TIFF
(LZW; and RGBA), WebP (lossless, lossy, and RGBA with transparent rows) and GIF
(palette; and 16 colours with a transparent index), with what Pillow's
`Image.open(f).convert("RGB")` makes of each in pil_rgb.safetensors (uint8,
[H, W, 3]), the decoding that SiglipImageProcessor's users feed it. tessera's
preprocess::read_rgb8 must give the same bytes.

    pip install --target .cache/pylib pillow numpy safetensors
    PYTHONPATH=.cache/pylib python3 scripts/make_format_fixture.py
"""
import os

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SRC = os.path.join(ROOT, "tests/data/images/waves_64x48.png")
OUT = os.path.join(ROOT, "tests/data/images/formats")

os.makedirs(OUT, exist_ok=True)
rgb = Image.open(SRC).convert("RGB")
rgba = np.array(rgb.convert("RGBA"))
rgba[::3, :, 3] = 0  # every third row transparent: convert("RGB") drops alpha
rgba[1::3, :, 3] = 128
rgba = Image.fromarray(rgba)

saves = {
    "waves.bmp": lambda f: rgb.save(f),
    "waves.tiff": lambda f: rgb.save(f, compression="tiff_lzw"),
    "waves_rgba.tif": lambda f: rgba.save(f),
    "waves.webp": lambda f: rgb.save(f, lossless=True),
    "waves_lossy.webp": lambda f: rgb.save(f, quality=80),
    "waves_rgba.webp": lambda f: rgba.save(f, lossless=True, exact=True),
    "waves.gif": lambda f: rgb.save(f),
    "waves_transparent.gif": lambda f: rgb.quantize(16).save(f, transparency=3),
}
out = {}
for name, save in saves.items():
    path = os.path.join(OUT, name)
    save(path)
    out[name] = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8).copy()
save_file(out, os.path.join(OUT, "pil_rgb.safetensors"), metadata={"pillow": Image.__version__})
print(f"wrote {OUT}: {len(saves)} images, Pillow {Image.__version__}")
