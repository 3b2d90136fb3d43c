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
import io
import os
import struct

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin
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

# Where else Pillow finds the orientation (Image.getexif; tessera's src/orientation.rs):
# a PNG eXIf chunk after the pixels, ImageMagick's "Raw profile type exif" text chunk,
# XMP (tiff:Orientation as an attribute or an element) in PNG, JPEG and WebP, a WebP
# EXIF chunk, an EXIF tag of 1 that hides an XMP 6, and TIFF's own tag, which Pillow
# applies when it opens the file (so `@stored`, what Image.open(f).convert("RGB")
# gives, is upright too).
def exif_bytes(n):
    e = Image.Exif()
    e[0x0112] = n
    return e.tobytes()


def xmp(n, element=False):
    field = f"><tiff:Orientation>{n}</tiff:Orientation" if element else f'tiff:Orientation="{n}"'
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" {field}></rdf:Description></rdf:RDF></x:xmpmeta>'
    )


def png_chunks(data):
    pos, out = 8, []
    while pos < len(data):
        n = struct.unpack(">I", data[pos : pos + 4])[0]
        out.append(data[pos : pos + 12 + n])
        pos += 12 + n
    return out


def late_exif_png(f):
    b = io.BytesIO()
    crop.save(b, "PNG", exif=exif_bytes(6))
    chunks = png_chunks(b.getvalue())
    exif = [c for c in chunks if c[4:8] == b"eXIf"]
    rest = [c for c in chunks if c[4:8] != b"eXIf"]
    end = [c[4:8] for c in rest].index(b"IEND")
    f.write(b.getvalue()[:8] + b"".join(rest[:end] + exif + rest[end:]))


def text_png(f, key, text, exif=None, **kw):
    info = PngImagePlugin.PngInfo()
    if key.startswith("XML"):
        info.add_itxt(key, text, **kw)
    else:
        info.add_text(key, text, **kw)
    crop.save(f, "PNG", pnginfo=info, **({"exif": exif} if exif else {}))


raw = exif_bytes(8).hex()
raw_profile = f"\nexif\n{len(raw) // 2:8}\n" + "\n".join(raw[i : i + 72] for i in range(0, len(raw), 72)) + "\n"
more = {
    "orient6_late.png": late_exif_png,
    "orient8_magick.png": lambda f: text_png(f, "Raw profile type exif", raw_profile, zip=True),
    "orient5_xmp.png": lambda f: text_png(f, "XML:com.adobe.xmp", xmp(5)),
    "orient7_xmpz.png": lambda f: text_png(f, "XML:com.adobe.xmp", xmp(7, element=True), zip=True),
    "orient1_over_xmp6.png": lambda f: text_png(f, "XML:com.adobe.xmp", xmp(6), exif=exif_bytes(1)),
    "orient7_xmp.jpg": lambda f: crop.save(f, "JPEG", quality=95, xmp=xmp(7, element=True).encode()),
    "orient6_xmp.webp": lambda f: crop.save(f, "WEBP", lossless=True, xmp=xmp(6).encode()),
    "orient3.webp": lambda f: crop.save(f, "WEBP", lossless=True, exif=exif_bytes(3)),
    "orient8.tiff": lambda f: crop.save(f, "TIFF", tiffinfo={0x0112: 8}),
    "orient6_lzw.tif": lambda f: crop.save(f, "TIFF", tiffinfo={0x0112: 6}, compression="tiff_lzw"),
}
for name, save in more.items():
    path = os.path.join(OUT, name)
    with open(path, "wb") as f:
        save(f)
    upright[name] = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"), dtype=np.uint8).copy()
    stored = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8).copy()
    if name.endswith(".jpg") or not np.array_equal(stored, upright["stored"]):
        upright[name + "@stored"] = stored
save_file(upright, os.path.join(OUT, "pil_upright.safetensors"), metadata={"pillow": Image.__version__})
print(f"wrote {OUT}: {len(saves)} images and {sum('@' not in k for k in upright) - 1} oriented ones, Pillow {Image.__version__}")
