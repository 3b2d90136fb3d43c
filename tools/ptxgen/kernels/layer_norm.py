"""layer_norm: one block of 256 threads (8 warps) per row; thread t handles
columns t, t + 256, ...
  pass 1: mean = Σx / cols (block reduction; skipped for RMS norm: mean 0);
  pass 2: var = Σ(x − mean)² / cols (two-pass: no cancellation);
  pass 3: out = (x − mean)·rstd·w + b, rstd = 1/√(var + eps) (sqrt.rn, rcp.rn);
          RMS norm (rms ≠ 0): b is not added (the pointer may be anything valid).
Row index = ctaid.y·65535 + ctaid.x (grids past 65535 rows)."""

from ..asm import F32, In, Kernel, Out, U32
from ..lib import DTYPES, SIZE, ZERO, addr, block_sum, counted_loop, lane_warp, ld_elem, st_elem

THREADS = 256
GRID_X = 65535


def layer_norm(dt):
    z = SIZE[dt]
    k = Kernel("layer_norm", f"layer_norm_{dt}", THREADS,
               [In("x"), In("w"), In("b"), Out("out"), U32("rows"), U32("cols"), F32("eps"),
                U32("rms")],
               "layer_norm",
               doc=f"Layer norm (rms = 0) or RMS norm (rms = 1) over rows of `cols` ({dt}), "
                   "one block per row.")
    k.const("GRID_X", GRID_X)
    x, w, b, out = (k.param(p) for p in ("x", "w", "b", "out"))
    rows, cols, eps, rms = k.param("rows"), k.param("cols"), k.param("eps"), k.param("rms")
    tid, lane, warp = lane_warp(k)
    row, done = k.reg("u32", "row"), k.reg("pred", "past")
    exit_ = k.label("exit")
    bx = k.reg("u32", "bx")
    k(f"mov.u32 {row}, %ctaid.y;")
    k(f"mov.u32 {bx}, %ctaid.x;")
    k(f"mad.lo.u32 {row}, {row}, {GRID_X}, {bx};")
    k(f"setp.ge.u32 {done}, {row}, {rows};")
    k(f"@{done} bra {exit_};")
    off = k.reg("u32", "off")
    k(f"mul.lo.u32 {off}, {row}, {cols};")
    xr, outr = addr(k, x, off, z, "xrow"), addr(k, out, off, z, "orow")
    ncols = k.reg("f32", "ncols")
    k(f"cvt.rn.f32.u32 {ncols}, {cols};")

    # RMS norm: mean 0, pass 1 skipped (rms is a parameter: the branch is uniform
    # over the block, so the reduction's barriers are reached by all or none).
    is_rms = k.reg("pred", "is_rms")
    k(f"setp.ne.u32 {is_rms}, {rms}, 0;")
    mean = k.reg("f32", "mean")
    k(f"mov.f32 {mean}, {ZERO};")
    after_mean = k.label("after_mean")
    k(f"@{is_rms} bra {after_mean};")
    acc = k.reg("f32", "sum")
    k(f"mov.f32 {acc}, {ZERO};")

    def p1(j):
        v = k.reg("f32", "v")
        ld_elem(k, dt, v, addr(k, xr, j, z))
        k(f"add.f32 {acc}, {acc}, {v};")

    counted_loop(k, tid, cols, THREADS, p1)
    total = block_sum(k, acc, THREADS // 32, lane, warp)
    k(f"div.rn.f32 {mean}, {total}, {ncols};")
    k.place(after_mean)
    sq = k.reg("f32", "sq")
    k(f"mov.f32 {sq}, {ZERO};")

    def p2(j):
        v = k.reg("f32", "v")
        ld_elem(k, dt, v, addr(k, xr, j, z))
        k(f"sub.f32 {v}, {v}, {mean};")
        k(f"fma.rn.f32 {sq}, {v}, {v}, {sq};")

    counted_loop(k, tid, cols, THREADS, p2)
    var = block_sum(k, sq, THREADS // 32, lane, warp)
    rstd = k.reg("f32", "rstd")
    k(f"div.rn.f32 {var}, {var}, {ncols};")
    k(f"add.f32 {var}, {var}, {eps};")
    k(f"sqrt.rn.f32 {var}, {var};")
    k(f"rcp.rn.f32 {rstd}, {var};")

    def p3(j):
        v, g, bb = k.reg("f32", "v"), k.reg("f32", "g"), k.reg("f32", "bb")
        ld_elem(k, dt, v, addr(k, xr, j, z))
        ld_elem(k, dt, g, addr(k, w, j, z))
        ld_elem(k, dt, bb, addr(k, b, j, z))
        k(f"selp.f32 {bb}, {ZERO}, {bb}, {is_rms};")
        k(f"sub.f32 {v}, {v}, {mean};")
        k(f"mul.f32 {v}, {v}, {rstd};")
        k(f"fma.rn.f32 {v}, {v}, {g}, {bb};")
        st_elem(k, dt, addr(k, outr, j, z), v)

    counted_loop(k, tid, cols, THREADS, p3)
    k.place(exit_)
    return k


def modules():
    return [("layer_norm", "layer_norm_{f32,bf16}(x, w, b, out, rows, cols, eps, rms).",
             [layer_norm(dt) for dt in DTYPES])]
