"""add and cast: grid-stride loops, one element per thread per iteration, 256
threads per block."""

from ..asm import Kernel, In, Out, U32
from ..lib import DTYPES, SIZE, addr, grid_stride, ld_elem, st_elem

THREADS = 256


def add(dt):
    k = Kernel("add", f"add_{dt}", THREADS, [In("a"), In("b"), Out("out"), U32("n")], "elementwise2",
               doc=f"out[i] = a[i] + b[i] for i < n ({dt}); grid-stride loop.")
    a, b, out, n = (k.param(p) for p in ("a", "b", "out", "n"))

    def body(i):
        x, y = k.reg("f32", "x"), k.reg("f32", "y")
        ld_elem(k, dt, x, addr(k, a, i, SIZE[dt]))
        ld_elem(k, dt, y, addr(k, b, i, SIZE[dt]))
        k(f"add.rn.f32 {x}, {x}, {y};")
        st_elem(k, dt, addr(k, out, i, SIZE[dt]), x)

    grid_stride(k, n, body)
    return k


def cast(src, dst):
    k = Kernel("cast", f"cast_{src}_{dst}", THREADS, [In("x"), Out("out"), U32("n")], "elementwise1",
               doc=f"out[i] = {dst}(x[i]) for i < n: bf16 → f32 exact; f32 → bf16 rounds to\n"
                   "nearest even (NaN → 0x7FFF, past the largest bf16 → ±inf).")
    x, out, n = (k.param(p) for p in ("x", "out", "n"))

    def body(i):
        v = k.reg("f32", "v")
        ld_elem(k, src, v, addr(k, x, i, SIZE[src]))
        st_elem(k, dst, addr(k, out, i, SIZE[dst]), v)

    grid_stride(k, n, body)
    return k


def modules():
    return [
        ("add", "add_{f32,bf16}(a, b, out, n).", [add(dt) for dt in DTYPES]),
        ("cast", "cast_f32_bf16 and cast_bf16_f32 (x, out, n).",
         [cast("f32", "bf16"), cast("bf16", "f32")]),
    ]
