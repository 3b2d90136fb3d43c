#!/usr/bin/env python3
"""Make tests/data/siglip2/width1/io.safetensors: SigLIP 2 grids one patch wide.

    python3 scripts/make_siglip2_width1.py   # needs torch, transformers >= 5, safetensors

PyTorch's CPU `F.interpolate(mode="bilinear", antialias=True)` gives every output row
row 0's values when the output is one column wide (size=(h, 1), h > 1); its CUDA kernel and
the formula do not. transformers on the CPU inherits the bug for hᵢ × 1 grids (a 3000×20 px
image at patch 16 and 256 patches is 150 × 1). tessera follows the formula. This case is
computed by transformers' Siglip2VisionModel in float64 from tests/data/siglip2/siglip2_tiny
with one change: the position resize of an hᵢ × 1 grid runs on the transposed grid (output
1 × hᵢ, which the CPU kernel gets right) and is transposed back — the same numbers the
formula gives. Every other grid goes through transformers' own code.
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import Siglip2VisionModel
from transformers.models.siglip2 import modeling_siglip2 as m

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODEL = os.path.join(ROOT, "tests/data/siglip2/siglip2_tiny")
OUT = os.path.join(ROOT, "tests/data/siglip2/width1")

original = m.Siglip2VisionEmbeddings.resize_positional_embeddings


def resize(positional_embeddings, spatial_shapes, max_length):
    out = original(positional_embeddings, spatial_shapes, max_length)
    table = positional_embeddings.permute(2, 0, 1).unsqueeze(0)  # (1, D, G, G)
    d = table.shape[1]
    for i, (h, w) in enumerate(spatial_shapes.tolist()):
        if w == 1 and h > 1:
            t = F.interpolate(table.transpose(2, 3), size=(1, h), mode="bilinear",
                              align_corners=False, antialias=True).transpose(2, 3)
            rows = t.reshape(d, h).transpose(0, 1).to(out.dtype)
            out[i, :h] = rows
            out[i, h:] = rows[0]
    return out


def main():
    m.Siglip2VisionEmbeddings.resize_positional_embeddings = staticmethod(resize)
    model = Siglip2VisionModel.from_pretrained(MODEL).to(torch.float64).eval()
    grids = [(5, 1), (1, 5), (3, 1), (2, 2)]
    pmax = 6
    cpp = 3 * model.config.patch_size**2
    g = torch.Generator().manual_seed(20261123)
    pixels = torch.zeros(len(grids), pmax, cpp, dtype=torch.float64)
    mask = torch.zeros(len(grids), pmax, dtype=torch.int32)
    for b, (h, w) in enumerate(grids):
        # Rounded to f32 first: the file stores f32 and the model reads those values.
        pixels[b, : h * w] = (torch.rand(h * w, cpp, generator=g, dtype=torch.float64) * 2 - 1).float().double()
        mask[b, : h * w] = 1
    shapes = torch.tensor(grids, dtype=torch.int64)
    with torch.no_grad():
        out = model(pixel_values=pixels, pixel_attention_mask=mask, spatial_shapes=shapes)
    last = out.last_hidden_state.clone()
    for b, (h, w) in enumerate(grids):
        last[b, h * w :] = 0
    os.makedirs(OUT, exist_ok=True)
    save_file(
        {
            "pixel_values": pixels.float().contiguous(),
            "pixel_attention_mask": mask,
            "spatial_shapes": shapes,
            "last_hidden_state": last.float().contiguous(),
            "pooler_output": out.pooler_output.float().contiguous(),
        },
        os.path.join(OUT, "io.safetensors"),
    )
    print(f"wrote {OUT}/io.safetensors: grids {grids}, Pmax {pmax}")


if __name__ == "__main__":
    main()
