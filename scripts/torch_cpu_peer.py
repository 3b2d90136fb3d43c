#!/usr/bin/env python3
"""PyTorch peers of tessera: the SigLIP forward and the embedding loop (on the CPU; the loop also on a GPU).

    python3 scripts/torch_cpu_peer.py make-model DIR [--shape base]   # random SigLIP, saved
    python3 scripts/torch_cpu_peer.py make-photos DIR [--count 48]    # 640x480 JPEG/PNG mix
    python3 scripts/torch_cpu_peer.py forward --model DIR --dtype f32 --batch 8
    python3 scripts/torch_cpu_peer.py embed --model DIR --images DIR [--batch 16] [-o OUT.safetensors]
        [--device cuda --dtype bf16 --workers 16]

- make-model: transformers' SiglipVisionModel at the shape (base: SigLIP-base/16 224;
  so400m: so400m/14 384) with random weights, written as config.json +
  model.safetensors (f32) + preprocessor_config.json (SiglipImageProcessor's
  defaults): a folder both `tessera` and this script load, so both run the same weights.
- forward: median wall time of `model(pixel_values=...)` under inference_mode after
  warm-up (eager; bf16 casts the model and the pixels), with the threads torch uses.
- embed: what a PyTorch user writes — open each file with PIL, the image processor
  on batches of --batch, the model, `pooler_output` — timed end to end (decoding
  included), images/s printed; -o writes `embeddings` [N, D] in path order, for a
  row-by-row comparison with `tessera embed` (scripts/golden_compare.py does not
  apply; compare with numpy). --device cuda --dtype bf16 runs the model on a GPU
  (the peer of `tessera embed --device cuda --dtype bf16`, scripts/gpu-check's embed
  part); --workers N decodes and preprocesses in N DataLoader processes, ahead of
  the model, as a user who has profiled the loop would.
Needs torch, transformers, pillow, safetensors, numpy.
"""
import argparse
import functools
import json
import os
import statistics
import sys
import time

import numpy as np


def make_model(args):
    import torch
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    shapes = {
        "base": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12, patch_size=16, image_size=224),
        "so400m": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                       num_attention_heads=16, patch_size=14, image_size=384),
    }
    torch.manual_seed(args.seed)
    config = SiglipVisionConfig(**shapes[args.shape])
    model = SiglipVisionModel(config).eval()
    os.makedirs(args.dir, exist_ok=True)
    model.save_pretrained(args.dir, safe_serialization=True)
    size = shapes[args.shape]["image_size"]
    SiglipImageProcessor(size={"height": size, "width": size}).save_pretrained(args.dir)
    print(f"wrote {args.dir}: random SiglipVisionModel ({args.shape})")


def make_photos(args):
    from PIL import Image

    rng = np.random.default_rng(args.seed)
    os.makedirs(args.dir, exist_ok=True)
    h, w = 480, 640
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(args.count):
        # Smooth colour fields plus noise: photo-like entropy for the codecs.
        f = rng.uniform(0.005, 0.03, size=(3, 2))
        ph = rng.uniform(0, 6.3, size=3)
        img = np.stack([127 + 100 * np.sin(f[c, 0] * xx + f[c, 1] * yy + ph[c]) for c in range(3)], -1)
        img += rng.normal(0, 12, size=img.shape)
        img = np.clip(img, 0, 255).astype(np.uint8)
        ext = "jpg" if i % 2 == 0 else "png"
        Image.fromarray(img).save(os.path.join(args.dir, f"photo_{i:03d}.{ext}"))
    print(f"wrote {args.count} photos ({h}x{w}, JPEG and PNG) to {args.dir}")


def load(model_dir, dtype):
    import torch
    from transformers import SiglipVisionModel

    model = SiglipVisionModel.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    return model.to(torch.bfloat16 if dtype == "bf16" else torch.float32)


def forward(args):
    import torch

    model = load(args.model, args.dtype)
    c = model.config
    px = torch.rand(args.batch, c.num_channels, c.image_size, c.image_size) * 2 - 1
    px = px.to(next(model.parameters()).dtype)
    times = []
    with torch.inference_mode():
        for _ in range(args.warmup):
            model(pixel_values=px)
        for _ in range(args.reps):
            t0 = time.perf_counter()
            model(pixel_values=px)
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    print(f"torch {torch.__version__} threads {torch.get_num_threads()}: forward {args.dtype} "
          f"batch {args.batch}: median {ms:.1f} ms over {args.reps} (min {min(times) * 1e3:.1f})")


def preprocess(processor, chunk):
    """A batch of files decoded with PIL and preprocessed (a DataLoader worker's task)."""
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in chunk]
    return processor(images=images, return_tensors="pt")["pixel_values"]


def embed(args):
    import torch
    from transformers import SiglipImageProcessor

    paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(args.images) for f in fs)
    processor = SiglipImageProcessor.from_pretrained(args.model)
    model = load(args.model, args.dtype).to(args.device)
    dtype = next(model.parameters()).dtype

    batch = functools.partial(preprocess, processor)
    chunks = [paths[i:i + args.batch] for i in range(0, len(paths), args.batch)]
    if args.workers > 0:
        loader = torch.utils.data.DataLoader(chunks, batch_size=None, num_workers=args.workers,
                                             collate_fn=batch, pin_memory=args.device != "cpu")
    else:
        loader = map(batch, chunks)
    rows = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for px in loader:
            px = px.to(args.device, dtype, non_blocking=True)
            rows.append(model(pixel_values=px).pooler_output.float().cpu())
    dt = time.perf_counter() - t0
    emb = torch.cat(rows).numpy()
    print(f"torch {torch.__version__} threads {torch.get_num_threads()} workers {args.workers} "
          f"{args.device} {args.dtype}: embedded {len(paths)} images in {dt:.2f} s: "
          f"{len(paths) / dt:.2f} images/s (batch {args.batch})")
    if args.output:
        from safetensors.numpy import save_file

        save_file({"embeddings": np.ascontiguousarray(emb, dtype=np.float32)}, args.output,
                  metadata={"paths": json.dumps(paths)})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-model")
    p.add_argument("dir")
    p.add_argument("--shape", default="base", choices=["base", "so400m"])
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("make-photos")
    p.add_argument("dir")
    p.add_argument("--count", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("forward")
    p.add_argument("--model", required=True)
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p = sub.add_parser("embed")
    p.add_argument("--model", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("-o", "--output")
    args = ap.parse_args()
    {"make-model": make_model, "make-photos": make_photos, "forward": forward, "embed": embed}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
