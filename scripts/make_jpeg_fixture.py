#!/usr/bin/env python3
"""JPEG fixtures for tests/it/preprocess.rs: files Pillow writes, and the RGB bytes
Pillow's `Image.open(f).convert("RGB")` gives for each (pil_jpeg.safetensors, one
tensor per file name, [H, W, 3] u8), in tests/data/images/formats/jpeg/.

    python3 scripts/make_jpeg_fixture.py      # needs Pillow 13, numpy, safetensors

Chroma 4:4:4, 4:2:2 and 4:2:0, baseline and progressive, sides no 8 or 16 divides,
grey, and CMYK with every K (read as Adobe's inverted CMYK, then cmyk2rgb).

Also pil_jpeg_draft.safetensors: each file opened, `draft("RGB", (w, h))`, then
`convert("RGB")`, for a (w, h) that makes Pillow pick each of its scales 1/2, 1/4
and 1/8 (tensor `FILE@WxH`).
"""
import os

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

out = os.path.join(os.path.dirname(__file__), "..", "tests/data/images/formats/jpeg")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(7)


def photo(w, h, channels=3):
    y, x = np.mgrid[0:h, 0:w]
    planes = [np.sin(x / 5.0 + c) * 90 + np.cos(y / 4.0 - c) * 60 + 128 for c in range(channels)]
    a = np.stack(planes, -1) + rng.normal(0, 18, (h, w, channels))
    return np.clip(a, 0, 255).astype(np.uint8)


files = {}
rgb = Image.fromarray(photo(37, 23))
for sub, name in [(0, "444"), (1, "422"), (2, "420")]:
    for prog in (False, True):
        f = f"s{name}{'_prog' if prog else ''}.jpg"
        rgb.save(os.path.join(out, f), quality=88, subsampling=sub, progressive=prog)
        files[f] = f
Image.fromarray(photo(19, 41)).save(os.path.join(out, "tall_420.jpg"), quality=70)
files["tall_420.jpg"] = "tall_420.jpg"
rgb.convert("L").save(os.path.join(out, "grey.jpg"), quality=90)
files["grey.jpg"] = "grey.jpg"
Image.fromarray(photo(29, 17, 4), "CMYK").save(os.path.join(out, "cmyk.jpg"), quality=92)
files["cmyk.jpg"] = "cmyk.jpg"
# Several MCU rows and columns at every draft scale.
Image.fromarray(photo(163, 122)).save(os.path.join(out, "photo_420.jpg"), quality=85)
files["photo_420.jpg"] = "photo_420.jpg"

tensors = {}
for f in sorted(files):
    with Image.open(os.path.join(out, f)) as im:
        tensors[f] = np.ascontiguousarray(np.asarray(im.convert("RGB")))
save_file(tensors, os.path.join(out, "pil_jpeg.safetensors"))
print(f"wrote {len(tensors)} JPEG fixtures to {out}")

drafts = {}
for f in sorted(files):
    for s in (2, 4, 8):
        with Image.open(os.path.join(out, f)) as im:
            want = (max(im.width // s, 1), max(im.height // s, 1))
            im.draft("RGB", want)
            assert im.decoderconfig[0] == s, (f, s, im.decoderconfig)
            drafts[f"{f}@{want[0]}x{want[1]}"] = np.ascontiguousarray(np.asarray(im.convert("RGB")))
save_file(drafts, os.path.join(out, "pil_jpeg_draft.safetensors"))
print(f"wrote {len(drafts)} draft fixtures to {out}")
