#!/usr/bin/env python3
"""PyTorch peer of `tessera bench --op packed`: transformers' Siglip2VisionModel on the
same batch of mixed-size images, as transformers runs it (padded to the largest, with a mask).

    python3 scripts/siglip2_peer.py [--shape base] [--layers 2] [--images 64] [--dtype f32]
                                    [--device cpu|cuda] [--reps 5]

The grids are `mixed_grids` of cli/src/bench/cases.rs (64 to 1024 patches, aspect ratios
cycling 1:1, 4:3, 3:4, 16:9, 9:16, 2:1, 1:2), the model has random weights at the shape
(position grid 16 x 16), and the time is the median wall time (CUDA: events) of
`model(pixel_values, pixel_attention_mask, spatial_shapes)` under inference_mode after
warm-up. Prints one line per measurement; compare with the `forward, SigLIP 2 packed` row of
`tessera bench --op packed` at the same --layers, images and dtype.
Needs torch and transformers (>= 4.50, Siglip2).
"""
import argparse
import math
import statistics
import time


def mixed_grids(count):
    ratios = [(1, 1), (4, 3), (3, 4), (16, 9), (9, 16), (2, 1), (1, 2)]
    out = []
    for i in range(count):
        target = 64 + 960 * i // max(count - 1, 1)
        aw, ah = ratios[i % len(ratios)]
        h = max(1, math.floor(math.sqrt(target * ah / aw)))
        out.append((h, max(1, target // h)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["base", "so400m"], default="base")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa, eager)")
    args = ap.parse_args()

    import torch
    from transformers import Siglip2VisionConfig, Siglip2VisionModel

    shapes = {
        "base": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, patch_size=16),
        "so400m": dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, patch_size=14),
    }
    cfg = Siglip2VisionConfig(num_hidden_layers=args.layers, num_patches=256, **shapes[args.shape])
    cfg._attn_implementation = args.attn
    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    dev = torch.device(args.device)
    model = Siglip2VisionModel(cfg).eval().to(dev, dtype)

    grids = mixed_grids(args.images)
    pmax = max(h * w for h, w in grids)
    real = sum(h * w for h, w in grids)
    cpp = 3 * cfg.patch_size**2
    pixels = torch.zeros(args.images, pmax, cpp, dtype=dtype, device=dev)
    mask = torch.zeros(args.images, pmax, dtype=torch.int32, device=dev)
    for b, (h, w) in enumerate(grids):
        pixels[b, : h * w] = torch.rand(h * w, cpp, dtype=dtype, device=dev) * 2 - 1
        mask[b, : h * w] = 1
    shapes_t = torch.tensor(grids, dtype=torch.int64, device=dev)

    def run():
        return model(pixel_values=pixels, pixel_attention_mask=mask, spatial_shapes=shapes_t)

    times = []
    with torch.inference_mode():
        run()
        for _ in range(args.reps):
            if dev.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t = time.perf_counter()
                run()
                times.append((time.perf_counter() - t) * 1e3)
    print(
        f"torch {torch.__version__} Siglip2VisionModel {args.shape} ({args.layers} layers, "
        f"attn {args.attn}) {args.dtype} on {dev} threads {torch.get_num_threads()}: "
        f"{args.images} images, {real} real patches padded to {args.images * pmax}: "
        f"median {statistics.median(times):.1f} ms over {args.reps}"
    )


if __name__ == "__main__":
    main()
