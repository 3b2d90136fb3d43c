#!/usr/bin/env python3
"""PyTorch peers of `tessera bench`, at the same SigLIP shapes, timed with CUDA events.

Run it on the same GPU right beside `tessera bench --device cuda`:

    python3 scripts/sdpa_bench.py                       # everything, bf16
    python3 scripts/sdpa_bench.py --dtype f32 --only sdpa,linear
    python3 scripts/sdpa_bench.py --layers 27 --batch 32 --model so400m --only forward

What it measures (median over --reps repetitions, each the mean of enough calls
to last --target-ms, after warm-up; CUDA events around the calls):

- sdpa:    F.scaled_dot_product_attention restricted to the FLASH backend
           (bf16/f16 only; f32 falls back to the EFFICIENT backend and says so),
           q, k, v [B, H, N, hd], no mask; plus the default backend choice.
- linear:  F.linear (cuBLAS) at the q_proj / fc1 / fc2 shapes and 4096^3, with
           and without the bias/GELU/residual epilogue tessera fuses.
- memory-bound: layer_norm, residual add, cast, and a D2D copy of the same bytes.
- forward: transformers' SiglipVisionModel (SDPA attention) at the checkpoint's
           shape with random weights -- the graph of tessera's `forward` row, which
           runs VisionModel::forward_into of a random model: patch embedding, L
           encoder layers, post LayerNorm, pooling head. Eager always; with
           --compile also torch.compile(model) (compile time excluded, reported).
           Without transformers, a hand-written tower of the same graph.

FLOP and byte counts follow cli/src/bench/cases.rs so the rates compare directly.
Needs: torch >= 2.3 with CUDA. Prints one aligned table.

--smoke runs every code path (torch.compile included with --compile) on the CPU at
SigLIP-base batch 1, one layer, a 512^3 square GEMM and one repetition, on the host
clock: a check of the script before GPU time is spent on it, not a measurement.
"""

import argparse
import math
import statistics
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - reported, not raised
    sys.exit("error: PyTorch is not installed (pip install torch)")

MODELS = {
    # name: (D, F, H, P, I, C, L)
    "base": (768, 3072, 12, 16, 224, 3, 12),
    # 384 px, patch 14: the stride-14 conv uses 27 x 27 patches and drops the last 6 px.
    "so400m": (1152, 4304, 16, 14, 384, 3, 27),
}
E_EXPERTS, M_SLOTS = 4, 32
# "cuda", or "cpu" under --smoke.
DEV = "cuda"
# Side of the square GEMM and bytes of the ceiling copy (smaller under --smoke).
SQUARE, CEILING_BYTES = 4096, 256 << 20


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def release():
    if DEV == "cuda":
        torch.cuda.empty_cache()


def host_time_ms(fn, reps, warmup=1):
    """cuda_time_ms on the host clock (--smoke on the CPU)."""
    import time

    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def cuda_time_ms(fn, reps, target_ms, warmup=3):
    """Median over `reps` of the mean ms per call of `fn`, CUDA events."""
    if DEV != "cuda":
        return host_time_ms(fn, reps)
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    est = max(start.elapsed_time(end), 1e-3)
    iters = max(1, min(10_000, math.ceil(target_ms / est)))
    samples = []
    for _ in range(reps):
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / iters)
    return statistics.median(samples)


class Row:
    def __init__(self, op, shape, dtype, ms, flops=0.0, nbytes=0.0, note=""):
        self.op, self.shape, self.dtype, self.ms = op, shape, dtype, ms
        self.flops, self.nbytes, self.note = flops, nbytes, note

    def cells(self):
        if self.ms is None:
            return [self.op, self.shape, self.dtype, "error", "-", "-", self.note]
        if self.flops:
            rate, unit = self.flops / self.ms / 1e9, "TFLOP/s"
        elif self.nbytes:
            rate, unit = self.nbytes / self.ms / 1e6, "GB/s"
        else:
            rate, unit = float("nan"), "-"
        return [self.op, self.shape, self.dtype, f"{self.ms:.4f}", f"{rate:.2f}", unit, self.note]


def print_table(rows, header):
    head = ["op", "shape", "dtype", "median ms", "rate", "unit", "note"]
    cells = [r.cells() for r in rows]
    width = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]
    print(header)
    line = lambda cs: "  ".join(c.rjust(w) if i in (3, 4) else c.ljust(w) for i, (c, w) in enumerate(zip(cs, width))).rstrip()
    print(line(head))
    print(line(["-" * w for w in width]))
    for c in cells:
        print(line(c))


def rand(*shape, dtype, scale=1.0):
    return (torch.rand(*shape, device=DEV, dtype=torch.float32) * 2 - 1).mul_(scale).to(dtype)


def bench_sdpa(rows, name, b, dtype, args):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    d, _, h, p, i, _, _ = MODELS[name]
    n = (i // p) ** 2
    hd = d // h
    q, k, v = (rand(b, h, n, hd, dtype=dtype) for _ in range(3))
    flops = 4.0 * b * n * n * d
    nbytes = 4.0 * b * n * d * q.element_size()
    shape = f"{name} B{b} H{h} S{n} hd{hd}"
    wanted = SDPBackend.FLASH_ATTENTION if dtype != torch.float32 else SDPBackend.EFFICIENT_ATTENTION
    label = "sdpa flash" if wanted == SDPBackend.FLASH_ATTENTION else "sdpa efficient (no f32 flash)"
    try:
        with sdpa_kernel([wanted]):
            ms = cuda_time_ms(lambda: F.scaled_dot_product_attention(q, k, v), args.reps, args.target_ms)
        rows.append(Row(label, shape, args.dtype, ms, flops, nbytes))
    except RuntimeError as e:
        rows.append(Row(label, shape, args.dtype, None, note=str(e).splitlines()[0][:80]))
    ms = cuda_time_ms(lambda: F.scaled_dot_product_attention(q, k, v), args.reps, args.target_ms)
    rows.append(Row("sdpa default", shape, args.dtype, ms, flops, nbytes))
    # The memory-gated attention's joint sequence: M + N rows.
    s = n + M_SLOTS
    q2, k2, v2 = (rand(b, h, s, hd, dtype=dtype) for _ in range(3))
    ms = cuda_time_ms(lambda: F.scaled_dot_product_attention(q2, k2, v2), args.reps, args.target_ms)
    rows.append(Row("sdpa default (M+N)", f"{name} B{b} H{h} S{s} hd{hd}", args.dtype, ms, 4.0 * b * s * s * d))


def bench_linear(rows, name, b, dtype, args):
    d, f, _, p, i, _, _ = MODELS[name]
    n = (i // p) ** 2
    r = b * n
    for label, k, o, act, res in (
        ("q_proj", d, d, False, False),
        ("fc1+gelu", d, f, True, False),
        ("fc2+res", f, d, False, True),
    ):
        x = rand(r, k, dtype=dtype)
        w = rand(o, k, dtype=dtype, scale=1 / math.sqrt(k))
        bias = rand(o, dtype=dtype, scale=0.02)
        resid = rand(r, o, dtype=dtype) if res else None
        shape = f"{name} B{b} M{r} K{k} N{o}"
        flops = 2.0 * r * k * o
        ms = cuda_time_ms(lambda: F.linear(x, w), args.reps, args.target_ms)
        rows.append(Row(f"linear {label} (GEMM only)", shape, args.dtype, ms, flops))

        def fused():
            y = F.linear(x, w, bias)
            if act:
                y = F.gelu(y, approximate="tanh")
            if resid is not None:
                y = y + resid
            return y

        ms = cuda_time_ms(fused, args.reps, args.target_ms)
        rows.append(Row(f"linear {label} (eager epilogue)", shape, args.dtype, ms, flops))
        del x, w, bias, resid


def bench_square(rows, dtype, args):
    n = SQUARE
    a = rand(n, n, dtype=dtype)
    w = rand(n, n, dtype=dtype, scale=1 / math.sqrt(n))
    ms = cuda_time_ms(lambda: F.linear(a, w), args.reps, args.target_ms)
    rows.append(Row("linear square", f"{n}^3", args.dtype, ms, 2.0 * n**3))


def bench_memory(rows, name, b, dtype, args):
    d, _, _, p, i, _, _ = MODELS[name]
    n = (i // p) ** 2
    r = b * n
    es = torch.finfo(dtype).bits // 8
    x = rand(r, d, dtype=dtype)
    y = rand(r, d, dtype=dtype)
    lw, lb = torch.ones(d, device=DEV, dtype=dtype), rand(d, dtype=dtype, scale=0.02)
    shape = f"{name} B{b} [{r}, {d}]"
    ms = cuda_time_ms(lambda: F.layer_norm(x, (d,), lw, lb, 1e-6), args.reps, args.target_ms)
    rows.append(Row("layer_norm", shape, args.dtype, ms, nbytes=es * (2.0 * r * d + 2 * d)))
    ms = cuda_time_ms(lambda: torch.add(x, y), args.reps, args.target_ms)
    rows.append(Row("add (residual)", shape, args.dtype, ms, nbytes=es * 3.0 * r * d))
    other = torch.float32 if dtype != torch.float32 else torch.bfloat16
    os_ = torch.finfo(other).bits // 8
    ms = cuda_time_ms(lambda: x.to(other), args.reps, args.target_ms)
    rows.append(Row("cast", f"{shape} -> {str(other)[6:]}", args.dtype, ms, nbytes=(es + os_) * r * d))
    dst = torch.empty_like(x)
    ms = cuda_time_ms(lambda: dst.copy_(x), args.reps, args.target_ms)
    rows.append(Row("D2D copy", shape, args.dtype, ms, nbytes=2.0 * es * r * d))
    big = torch.empty(CEILING_BYTES, device=DEV, dtype=torch.uint8)
    big2 = torch.empty_like(big)
    ms = cuda_time_ms(lambda: big2.copy_(big), args.reps, args.target_ms)
    rows.append(Row("D2D copy (ceiling)", f"{CEILING_BYTES >> 20} MiB", "u8", ms, nbytes=2.0 * CEILING_BYTES))


class Layer(torch.nn.Module):
    def __init__(self, d, f, h):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = torch.nn.LayerNorm(d, eps=1e-6), torch.nn.LayerNorm(d, eps=1e-6)
        self.q, self.k, self.v, self.o = (torch.nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = torch.nn.Linear(d, f), torch.nn.Linear(f, d)

    def forward(self, x):
        b, n, d = x.shape
        hd = d // self.h
        t = self.ln1(x)
        split = lambda y: y.view(b, n, self.h, hd).transpose(1, 2)
        a = F.scaled_dot_product_attention(split(self.q(t)), split(self.k(t)), split(self.v(t)))
        x = x + self.o(a.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class Tower(torch.nn.Module):
    def __init__(self, name, layers):
        super().__init__()
        d, f, h, p, i, c, _ = MODELS[name]
        self.patch = torch.nn.Conv2d(c, d, p, stride=p)
        self.pos = torch.nn.Parameter(torch.randn((i // p) ** 2, d) * 0.02)
        self.layers = torch.nn.ModuleList(Layer(d, f, h) for _ in range(layers))
        self.post = torch.nn.LayerNorm(d, eps=1e-6)

    def forward(self, px):
        x = self.patch(px).flatten(2).transpose(1, 2) + self.pos
        for layer in self.layers:
            x = layer(x)
        return self.post(x)


def siglip_model(name, layers):
    """transformers' SiglipVisionModel at the shape of `name`, random weights; None
    without transformers."""
    try:
        from transformers import SiglipVisionConfig, SiglipVisionModel
    except ImportError:
        return None
    d, f, h, p, i, c, _ = MODELS[name]
    config = SiglipVisionConfig(
        hidden_size=d, intermediate_size=f, num_attention_heads=h, num_hidden_layers=layers,
        patch_size=p, image_size=i, num_channels=c,
    )
    config._attn_implementation = "sdpa"
    return SiglipVisionModel(config)


def bench_forward(rows, name, b, dtype, args):
    d, f, h, p, i, c, full = MODELS[name]
    layers = args.layers or full
    n = (i // p) ** 2
    model = siglip_model(name, layers)
    label = "SiglipVisionModel"
    if model is None:
        model, label = Tower(name, layers), "hand-written tower, no pooling head"
    model = model.to(DEV, dtype).eval()
    px = rand(b, c, i, i, dtype=dtype)
    k = c * p * p
    # As cli/src/bench/cases.rs: patch GEMM, layers (qkv + out_proj, MLP, attention), head.
    head = 2.0 * b * n * d * 2.0 * d + 4.0 * b * n * d + 2.0 * b * (d * d + 2.0 * d * f)
    flops = 2.0 * b * n * k * d + layers * (2.0 * b * n * d * d * 4 + 2.0 * b * n * d * f * 2 + 4.0 * b * n * n * d) + head
    shape = f"{name} B{b} N{n} D{d} F{f}"
    with torch.inference_mode():
        ms = cuda_time_ms(lambda: model(pixel_values=px) if label == "SiglipVisionModel" else model(px), args.reps, args.target_ms)
    rows.append(Row(f"forward eager ({layers} layers)", shape, args.dtype, ms, flops, note=label))
    if args.compile:
        import time

        op = f"forward torch.compile ({layers} layers)"
        try:
            compiled = torch.compile(model)
            call = (lambda: compiled(pixel_values=px)) if label == "SiglipVisionModel" else (lambda: compiled(px))
            with torch.inference_mode():
                t0 = time.time()
                call()
                sync()
                compile_s = time.time() - t0
                ms = cuda_time_ms(call, args.reps, args.target_ms)
            rows.append(Row(op, shape, args.dtype, ms, flops, note=f"{label}; first call {compile_s:.0f} s"))
            del compiled
        except Exception as e:  # an inductor failure costs this row, not the table
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
            rows.append(Row(op, shape, args.dtype, None, note=f"{type(e).__name__}: {msg}"[:100]))
    del model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--model", default="all", choices=["all", "base", "so400m"])
    ap.add_argument("--batch", default="1,32", help="comma-separated batch sizes")
    ap.add_argument("--only", default="sdpa,linear,memory,forward", help="comma-separated: sdpa, linear, memory, forward")
    ap.add_argument("--layers", type=int, default=0, help="forward depth (default: the checkpoint's, 12 / 27)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--target-ms", type=float, default=50.0)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the forward")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 tensor cores for f32 GEMMs (off by default: true SGEMM)")
    ap.add_argument("--smoke", action="store_true", help="check every code path on the CPU at small sizes (no figures)")
    args = ap.parse_args()
    if args.smoke:
        global DEV, SQUARE, CEILING_BYTES
        DEV, SQUARE, CEILING_BYTES = "cpu", 512, 16 << 20
        args.model, args.batch, args.layers, args.reps = "base", "1", 1, 1
    elif not torch.cuda.is_available():
        sys.exit("error: no CUDA device visible to PyTorch")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    names = list(MODELS) if args.model == "all" else [args.model]
    batches = [int(x) for x in args.batch.split(",") if x]
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    rows = []
    torch.manual_seed(0)
    with torch.inference_mode():
        if "linear" in only:
            bench_square(rows, dtype, args)
        for name in names:
            for b in batches:
                if "sdpa" in only:
                    bench_sdpa(rows, name, b, dtype, args)
                if "linear" in only:
                    bench_linear(rows, name, b, dtype, args)
                if "memory" in only:
                    bench_memory(rows, name, b, dtype, args)
                release()
    for name in names:
        for b in batches:
            if "forward" in only:
                bench_forward(rows, name, b, dtype, args)
                release()
    device = torch.cuda.get_device_properties(0).name if DEV == "cuda" else "CPU (--smoke: no figures)"
    header = (
        f"device: {device}  torch {torch.__version__}  CUDA {torch.version.cuda}  "
        f"dtype {args.dtype}  tf32 {'on' if args.tf32 else 'off'}"
    )
    print_table(rows, header)


if __name__ == "__main__":
    main()
