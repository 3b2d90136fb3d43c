"""Instruction sequences every kernel uses, written once: element loads and stores
in f32 or bf16, address arithmetic, the bf16 rounding rule, warp and block
reductions, loops, GELU. Each takes the `Kernel` and allocates its own
temporaries, so callers never share scratch registers by convention.

Conventions (all kernels): arithmetic in f32; bf16 is read as 16 bits and widened
exactly (shift into the high half); results are rounded to bf16 once, by
`cvt.rn.bf16.f32` (round to nearest even; every NaN becomes 0x7FFF — tessera's
bf16 NaN on all backends); indices are u32 (the host refuses tensors of 2^31 or
more elements) and become byte offsets through `mul.wide.u32`.
"""

DTYPES = ("f32", "bf16")
SIZE = {"f32": 4, "bf16": 2}

ZERO = "0f00000000"
ONE = "0f3F800000"
NEG_INF = "0fFF800000"
LOG2E = "0f3FB8AA3B"


def addr(k, base, index, size, stem="ad"):
    """A b64 register = base + index·size (index u32)."""
    a = k.reg("b64", stem)
    k(f"mul.wide.u32 {a}, {index}, {size};")
    k(f"add.s64 {a}, {base}, {a};")
    return a


def ld_elem(k, dt, dst, address, off=0, pred=None, space="global"):
    """dst (f32) ← element of type dt at [address + off bytes]; with `pred`, only
    where it holds (dst unchanged elsewhere)."""
    g = f"@{pred} " if pred is not None else ""
    o = f"+{off}" if off else ""
    if dt == "f32":
        k(f"{g}ld.{space}.f32 {dst}, [{address}{o}];")
        return
    w = k.reg("b32", "w")
    k(f"{g}ld.{space}.u16 {w}, [{address}{o}];")
    k(f"{g}shl.b32 {w}, {w}, 16;")
    k(f"{g}mov.b32 {dst}, {w};")


def to_bf16(k, f):
    """A b16 register holding f rounded to bf16 (nearest even; NaN → 0x7FFF)."""
    h = k.reg("b16", "h")
    k(f"cvt.rn.bf16.f32 {h}, {f};")
    return h


def st_elem(k, dt, address, f, off=0, pred=None, space="global"):
    """Store f32 register f as dt at [address + off], rounding once for bf16."""
    g = f"@{pred} " if pred is not None else ""
    o = f"+{off}" if off else ""
    if dt == "f32":
        k(f"{g}st.{space}.f32 [{address}{o}], {f};")
        return
    h = to_bf16(k, f)
    k(f"{g}st.{space}.b16 [{address}{o}], {h};")


def pack_bf16x2(k, lo, hi):
    """A b32 register holding (bf16(hi) << 16) | bf16(lo): two adjacent elements,
    the lower address in the low half."""
    r = k.reg("b32", "bf2")
    k(f"cvt.rn.bf16x2.f32 {r}, {hi}, {lo};")
    return r


def widen_bf16x2(k, raw, lo, hi):
    """f32 registers lo, hi ← the two bf16 of b32 `raw` (the lower address in the
    low half), exactly."""
    t = k.reg("b32", "wt")
    k(f"shl.b32 {t}, {raw}, 16;")
    k(f"mov.b32 {lo}, {t};")
    k(f"and.b32 {t}, {raw}, 0xFFFF0000;")
    k(f"mov.b32 {hi}, {t};")


def warp_reduce(k, v, op):
    """v ← the op ("add" or "max") of v over the warp's 32 lanes (butterfly: every
    lane ends with the same value)."""
    t = k.reg("f32", "sh")
    for off in (16, 8, 4, 2, 1):
        k(f"shfl.sync.bfly.b32 {t}, {v}, {off}, 31, -1;")
        k(f"{op}.f32 {v}, {v}, {t};")


def quad_reduce(k, v, op):
    """v ← op over the 4 lanes of a quad (lanes 4q..4q+3), as mma fragments need."""
    t = k.reg("f32", "sh")
    for off in (1, 2):
        k(f"shfl.sync.bfly.b32 {t}, {v}, {off}, 31, -1;")
        k(f"{op}.f32 {v}, {v}, {t};")


def block_sum(k, v, warps, lane, warp):
    """A register holding Σ v over the block (`warps` warps): warp butterflies, lane 0
    of each warp writes its partial to a shared array of its own, bar.sync, then
    every thread adds the partials in the same order (so all get the same bits).
    Ends with a bar.sync, so the caller may reduce again right away."""
    warp_reduce(k, v, "add")
    red = k.shared("red", 4 * warps, 4)
    p = k.reg("pred", "lane0")
    a = k.reg("u32", "ra")
    out = k.reg("f32", "bsum")
    t = k.reg("f32", "bt")
    k(f"setp.eq.u32 {p}, {lane}, 0;")
    k(f"mov.u32 {a}, {red};")
    k(f"mad.lo.u32 {a}, {warp}, 4, {a};")
    k(f"@{p} st.shared.f32 [{a}], {v};")
    k("bar.sync 0;")
    k(f"mov.u32 {a}, {red};")
    k(f"ld.shared.f32 {out}, [{a}];")
    for w in range(1, warps):
        k(f"ld.shared.f32 {t}, [{a}+{4 * w}];")
        k(f"add.f32 {out}, {out}, {t};")
    k("bar.sync 0;")
    return out


def lane_warp(k):
    """(tid, lane, warp) registers of this thread."""
    tid, lane, warp = k.reg("u32", "tid"), k.reg("u32", "lane"), k.reg("u32", "warp")
    k(f"mov.u32 {tid}, %tid.x;")
    k(f"and.b32 {lane}, {tid}, 31;")
    k(f"shr.u32 {warp}, {tid}, 5;")
    return tid, lane, warp


def grid_stride(k, n, body):
    """for (i = global thread index; i < n; i += total threads) body(i)."""
    i, step, p = k.reg("u32", "i"), k.reg("u32", "step"), k.reg("pred", "done")
    bid, t = k.reg("u32", "bid"), k.reg("u32", "tx")
    k(f"mov.u32 {step}, %ntid.x;")
    k(f"mov.u32 {bid}, %ctaid.x;")
    k(f"mov.u32 {t}, %tid.x;")
    k(f"mad.lo.u32 {i}, {bid}, {step}, {t};")
    k(f"mov.u32 {bid}, %nctaid.x;")
    k(f"mul.lo.u32 {step}, {step}, {bid};")
    top, end = k.label("gs"), k.label("gs_end")
    k.place(top)
    k(f"setp.ge.u32 {p}, {i}, {n};")
    k(f"@{p} bra {end};")
    body(i)
    k(f"add.u32 {i}, {i}, {step};")
    k(f"bra.uni {top};")
    k.place(end)


def counted_loop(k, start, stop, step, body, stem="j"):
    """for (j = start; j < stop; j += step) body(j); start may be a register or an
    immediate, stop a register; the counter is a fresh u32 register."""
    j, p = k.reg("u32", stem), k.reg("pred", f"{stem}_done")
    k(f"mov.u32 {j}, {start};")
    top, end = k.label(f"{stem}_loop"), k.label(f"{stem}_end")
    k.place(top)
    k(f"setp.ge.u32 {p}, {j}, {stop};")
    k(f"@{p} bra {end};")
    body(j)
    k(f"add.u32 {j}, {j}, {step};")
    k(f"bra.uni {top};")
    k.place(end)


def specialise(k, pred, emit, stem):
    """emit(True) where the uniform predicate `pred` holds, else emit(False): the
    code written twice behind one branch. A short branch inside emit's code, one
    an element, is if-converted by ptxas: its instructions are then issued,
    predicated off, where `pred` is false (the GEMM epilogues' GELU: 11 % of the
    H100 qkv kernel's stall samples, notes/h100-2026-11-25)."""
    on, done = k.label(f"{stem}_on"), k.label(f"{stem}_done")
    k(f"@{pred} bra.uni {on};")
    emit(False)
    k(f"bra.uni {done};")
    k.place(on)
    emit(True)
    k.place(done)


def gelu(k, v):
    """v ← gelu_tanh(v) = v·sigmoid(2u) = v / (1 + 2^(−2u·log2 e)), u = √(2/π)(v +
    0.044715v³): +∞ at +∞, NaN at −∞ (−∞/∞, as the tanh form's −∞·0 in PyTorch),
    relative error ~2⁻²² from ex2.approx; the CPU computes the same formula."""
    t = k.reg("f32", "gl")
    k(f"mul.f32 {t}, {v}, {v};")
    k(f"fma.rn.f32 {t}, {t}, 0f3D372713, {ONE};")  # 1 + 0.044715 v²
    k(f"mul.f32 {t}, {t}, {v};")
    k(f"mul.f32 {t}, {t}, 0fC0135761;")  # · −2√(2/π)·log2(e)
    k(f"ex2.approx.f32 {t}, {t};")
    k(f"add.f32 {t}, {t}, {ONE};")
    k(f"div.rn.f32 {v}, {v}, {t};")


def zero(k, regs):
    for r in regs:
        k(f"mov.f32 {r}, {ZERO};")


def aligned_dyn_smem(k, base, align=1024):
    """base = the dynamic shared memory's address rounded up to `align` bytes (the
    128-byte swizzle's atom is 1024: TMA boxes and wgmma operands start on one);
    the kernel's dynamic size includes the slack."""
    k(f"mov.u32 {base}, dyn_smem;")
    k(f"add.u32 {base}, {base}, {align - 1};")
    k(f"and.b32 {base}, {base}, {-align};")
