#!/usr/bin/env python3
"""Write tests/data/images/formats/: waves_64x48.png saved by Pillow as BMP, TIFF
(LZW; and RGBA), WebP (lossless, lossy, and RGBA with transparent rows) and GIF
(palette; and 16 colours with a transparent index), with what Pillow's
`Image.open(f).convert("RGB")` makes of each in pil_rgb.safetensors (uint8,
[H, W, 3]), the decoding that SiglipImageProcessor's users feed it. tessera's
preprocess::read_rgb8 must give the same bytes. And a crop stored with each EXIF
orientation, with what ImageOps.exif_transpose (transformers' load_image) makes of
it: preprocess::read_rgb8_upright must give those.

    pip install --target .cache/pylib pillow numpy safetensors
    PYTHONPATH=.cache/pylib python3 scripts/make_format_fixture.py
"""
import os

import numpy as np
from PIL import Image, ImageOps
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

# EXIF orientation: a 12 x 8 crop stored with each of the 8 orientations (PNG eXIf
# chunk; and a JPEG), and what ImageOps.exif_transpose makes of each (transformers'
# load_image), in pil_upright.safetensors; `stored` is the crop as stored (the
# JPEG's own: `orient6.jpg@stored`).
crop = rgb.crop((20, 10, 32, 18))
upright = {"stored": np.asarray(crop, dtype=np.uint8).copy()}
for n in range(1, 9):
    exif = Image.Exif()
    exif[0x0112] = n
    for ext in ("png", "jpg"):
        if ext == "jpg" and n != 6:
            continue
        name = f"orient{n}.{ext}"
        path = os.path.join(OUT, name)
        crop.save(path, exif=exif.tobytes(), **({"quality": 95} if ext == "jpg" else {}))
        upright[name] = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"), dtype=np.uint8).copy()
        if ext == "jpg":  # lossy: its own pixels as stored
            upright[name + "@stored"] = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8).copy()
save_file(upright, os.path.join(OUT, "pil_upright.safetensors"), metadata={"pillow": Image.__version__})
print(f"wrote {OUT}: {len(saves)} images and {sum('@' not in k for k in upright) - 1} oriented ones, Pillow {Image.__version__}")
