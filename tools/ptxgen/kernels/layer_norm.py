"""layer_norm_{dt}: one block of 256 threads (8 warps) per row; thread t handles
columns t, t + 256, ... (any cols, any alignment):
  pass 1: mean = Σx / cols (block reduction; skipped for RMS norm: mean 0);
  pass 2: var = Σ(x − mean)² / cols (two-pass: no cancellation);
  pass 3: out = (x − mean)·rstd·w + b, rstd = 1/√(var + eps) (sqrt.rn, rcp.rn);
          RMS norm (rms ≠ 0): b is not added (the pointer may be anything valid).
Row index = ctaid.y·65535 + ctaid.x (grids past 65535 rows).

layer_norm_rows_{dt}: one warp per row, 8 rows a block, the row held in registers:
  lane l loads 16-byte vectors l, l + 32, ... (at most MAX_VECS of them, so cols ≤
  32·MAX_VECS·(16 / element size): 2048 bf16, 1024 f32; cols a multiple of the
  vector and every pointer 16-byte aligned: the host checks), reads the row from
  memory once and writes it once, the sums by warp butterflies (no barrier).
  Same three passes, same operations per element, so the same results up to the
  order of the sums. Row = (ctaid.y·65535 + ctaid.x)·8 + warp."""

from ..asm import F32, In, Kernel, Out, U32
from ..lib import (DTYPES, SIZE, ZERO, addr, block_sum, counted_loop, lane_warp, ld_elem, st_elem, warp_reduce,
                   widen_bf16x2)

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


MAX_VECS = 8          # 16-byte vectors a lane keeps (layer_norm_rows)
ROWS_PER_BLOCK = THREADS // 32


def vec_elems(dt):
    return 16 // SIZE[dt]


def ld_vec(k, dt, regs, address, pred):
    """regs (f32) ← the 16-byte vector at `address` where `pred`, else zeros; through
    the non-coherent path (the inputs of these kernels are never their outputs)."""
    raw = k.regs_n("b32", "lv", 4)
    for r in raw:
        k(f"mov.b32 {r}, 0;")
    k(f"@{pred} ld.global.nc.v4.b32 {{{', '.join(map(str, raw))}}}, [{address}];")
    if dt == "f32":
        for d, r in zip(regs, raw):
            k(f"mov.b32 {d}, {r};")
        return
    for i, r in enumerate(raw):
        widen_bf16x2(k, r, regs[2 * i], regs[2 * i + 1])


def st_vec(k, dt, address, vals, pred):
    """The f32 values `vals` as one 16-byte vector of dt at `address` where `pred`
    (bf16: rounded once, to nearest even)."""
    if dt == "f32":
        words = vals
    else:
        words = [k.reg("b32", "sv") for _ in range(4)]
        for i, w_ in enumerate(words):
            k(f"cvt.rn.bf16x2.f32 {w_}, {vals[2 * i + 1]}, {vals[2 * i]};")
    k(f"@{pred} st.global.v4.b32 [{address}], {{{', '.join(map(str, words))}}};")


def layer_norm_rows(dt):
    ve = vec_elems(dt)
    k = Kernel("layer_norm", f"layer_norm_rows_{dt}", THREADS,
               [In("x"), In("w"), In("b"), Out("out"), U32("rows"), U32("cols"), F32("eps"),
                U32("rms")],
               "layer_norm",
               doc=f"Layer norm / RMS norm ({dt}), one warp per row held in registers, 16-byte "
                   f"accesses (cols a multiple of {ve}, at most {32 * MAX_VECS * ve}).")
    k.const("GRID_X", GRID_X)
    k.const("ROWS_PER_BLOCK", ROWS_PER_BLOCK)
    k.const("MAX_COLS", 32 * MAX_VECS * ve)
    k.const("VEC", ve)
    x, w, b, out = (k.param(p) for p in ("x", "w", "b", "out"))
    rows, cols, eps, rms = k.param("rows"), k.param("cols"), k.param("eps"), k.param("rms")
    _, lane, warp = lane_warp(k)
    row, past, bx = k.reg("u32", "row"), k.reg("pred", "past"), k.reg("u32", "bx")
    exit_ = k.label("exit")
    k(f"mov.u32 {row}, %ctaid.y;")
    k(f"mov.u32 {bx}, %ctaid.x;")
    k(f"mad.lo.u32 {row}, {row}, {GRID_X}, {bx};")
    k(f"mad.lo.u32 {row}, {row}, {ROWS_PER_BLOCK}, {warp};")
    k(f"setp.ge.u32 {past}, {row}, {rows};")
    k(f"@{past} bra {exit_};")
    nvec, off = k.reg("u32", "nvec"), k.reg("u32", "off")
    k(f"div.u32 {nvec}, {cols}, {ve};")
    k(f"mul.lo.u32 {off}, {row}, {cols};")
    xr, outr = addr(k, x, off, SIZE[dt], "xrow"), addr(k, out, off, SIZE[dt], "orow")
    ncols = k.reg("f32", "ncols")
    k(f"cvt.rn.f32.u32 {ncols}, {cols};")
    is_rms = k.reg("pred", "is_rms")
    k(f"setp.ne.u32 {is_rms}, {rms}, 0;")
    # Vector v of this lane: element offset (lane + 32v)·ve, present when < nvec.
    vals, present, eofs = [], [], []
    for v in range(MAX_VECS):
        j, pv, e = k.reg("u32", "vj"), k.reg("pred", "pv"), k.reg("u32", "ve")
        k(f"add.u32 {j}, {lane}, {32 * v};")
        k(f"setp.lt.u32 {pv}, {j}, {nvec};")
        k(f"mul.lo.u32 {e}, {j}, {ve};")
        regs = k.regs_n("f32", f"x{v}_", ve)
        ld_vec(k, dt, regs, addr(k, xr, e, SIZE[dt]), pv)
        vals.append(regs)
        present.append(pv)
        eofs.append(e)
    # Pass 1: the mean (0 for RMS norm). Absent vectors hold zeros.
    total, mean = k.reg("f32", "sum"), k.reg("f32", "mean")
    k(f"mov.f32 {total}, {ZERO};")
    for regs in vals:
        for r in regs:
            k(f"add.f32 {total}, {total}, {r};")
    warp_reduce(k, total, "add")
    k(f"div.rn.f32 {mean}, {total}, {ncols};")
    k(f"selp.f32 {mean}, {ZERO}, {mean}, {is_rms};")
    # Pass 2: Σ (x − mean)² over the present vectors.
    sq, d = k.reg("f32", "sq"), k.reg("f32", "dv")
    k(f"mov.f32 {sq}, {ZERO};")
    for regs, pv in zip(vals, present):
        for r in regs:
            k(f"sub.f32 {d}, {r}, {mean};")
            k(f"@{pv} fma.rn.f32 {sq}, {d}, {d}, {sq};")
    warp_reduce(k, sq, "add")
    rstd = k.reg("f32", "rstd")
    k(f"div.rn.f32 {sq}, {sq}, {ncols};")
    k(f"add.f32 {sq}, {sq}, {eps};")
    k(f"sqrt.rn.f32 {sq}, {sq};")
    k(f"rcp.rn.f32 {rstd}, {sq};")
    # Pass 3: (x − mean)·rstd·w + b, one vector store each.
    for regs, pv, e in zip(vals, present, eofs):
        g, bb = k.regs_n("f32", "g", ve), k.regs_n("f32", "bb", ve)
        ld_vec(k, dt, g, addr(k, w, e, SIZE[dt]), pv)
        ld_vec(k, dt, bb, addr(k, b, e, SIZE[dt]), pv)
        for r, gi, bi in zip(regs, g, bb):
            k(f"selp.f32 {bi}, {ZERO}, {bi}, {is_rms};")
            k(f"sub.f32 {r}, {r}, {mean};")
            k(f"mul.f32 {r}, {r}, {rstd};")
            k(f"fma.rn.f32 {r}, {r}, {gi}, {bi};")
        st_vec(k, dt, addr(k, outr, e, SIZE[dt]), regs, pv)
    k.place(exit_)
    return k


def modules():
    return [("layer_norm", "layer_norm_{f32,bf16}(x, w, b, out, rows, cols, eps, rms): a block a row,\n"
             "any shape; layer_norm_rows_{f32,bf16}: a warp a row, 16-byte accesses.",
             [layer_norm(dt) for dt in DTYPES] + [layer_norm_rows(dt) for dt in DTYPES])]
