"""What the GEMM-shaped kernels (linear, patch_embed) share: their parameter lists,
the A-operand row addressing of patch_embed (rows gathered from pixels), and the
epilogue — bias, GELU and residual (linear) or bias and position (patch_embed) —
applied to one f32 accumulator and stored once in the output type.

C = A·Bᵀ with A [M, K] (x, or the patches of the pixels) and B = W [N, K]: both
K-major, so W is the "col" B operand of mma as stored."""

from ..asm import In, Opt, Out, U32
from ..lib import SIZE, addr, gelu, ld_elem, st_elem

LINEAR_PARAMS = [In("x"), In("w"), Opt("bias"), Opt("res"), Out("out"), U32("m"), U32("n"),
                 U32("k"), U32("flags")]
PATCH_PARAMS = [In("x"), In("w"), In("bias"), In("res"), Out("out"), U32("m"), U32("n"),
                U32("k"), U32("c"), U32("i"), U32("p"), U32("g")]

# Bits of `flags` (linear): bias present, GELU, residual present.
FLAG_BIAS, FLAG_GELU, FLAG_RES = 1, 2, 4


class Operands:
    """The kernel parameters of a GEMM kernel in registers, plus (patch_embed) the
    patch geometry: I·I, P·P, P·I, tokens per image NT = G·G, C·I·I."""

    def __init__(self, k, mode):
        self.k, self.mode = k, mode
        self.x, self.w, self.bias, self.res, self.out = (
            k.param(p) for p in ("x", "w", "bias", "res", "out"))
        self.m, self.n, self.kk = k.param("m"), k.param("n"), k.param("k")
        if mode == "linear":
            self.has_bias, self.has_gelu, self.has_res = epilogue_flags(k, k.param("flags"))
        else:
            c, i, p, g = (k.param(s) for s in ("c", "i", "p", "g"))
            self.c, self.i, self.p, self.g = c, i, p, g
            self.ii, self.pp, self.pi, self.nt, self.cii = (
                k.reg("u32", s) for s in ("ii", "pp", "pi", "nt", "cii"))
            k(f"mul.lo.u32 {self.ii}, {i}, {i};")
            k(f"mul.lo.u32 {self.pp}, {p}, {p};")
            k(f"mul.lo.u32 {self.pi}, {p}, {i};")
            k(f"mul.lo.u32 {self.nt}, {g}, {g};")
            k(f"mul.lo.u32 {self.cii}, {c}, {self.ii};")

    def patch_rowbase(self, row):
        """Pixel offset of patch row `row` = b·C·I·I + gy·P·I + gx·P, row = b·NT + gy·G + gx."""
        k = self.k
        b, rest, gy, gx, t, dst = (k.reg("u32", s) for s in ("pb", "pn", "gy", "gx", "pt", "prow"))
        k(f"div.u32 {b}, {row}, {self.nt};")
        k(f"mul.lo.u32 {t}, {b}, {self.nt};")
        k(f"sub.u32 {rest}, {row}, {t};")
        k(f"div.u32 {gy}, {rest}, {self.g};")
        k(f"mul.lo.u32 {t}, {gy}, {self.g};")
        k(f"sub.u32 {gx}, {rest}, {t};")
        k(f"mul.lo.u32 {dst}, {b}, {self.cii};")
        k(f"mad.lo.u32 {dst}, {gy}, {self.pi}, {dst};")
        k(f"mad.lo.u32 {dst}, {gx}, {self.p}, {dst};")
        return dst

    def patch_kofs(self, kk):
        """Pixel offset of patch element kk = c·P·P + py·P + px: c·I·I + py·I + px.
        Returns (offset, py, px)."""
        k = self.k
        c, rest, py, px, t, dst = (k.reg("u32", s) for s in ("kc", "kr", "py", "px", "kt", "kofs"))
        k(f"div.u32 {c}, {kk}, {self.pp};")
        k(f"mul.lo.u32 {t}, {c}, {self.pp};")
        k(f"sub.u32 {rest}, {kk}, {t};")
        k(f"div.u32 {py}, {rest}, {self.p};")
        k(f"mul.lo.u32 {t}, {py}, {self.p};")
        k(f"sub.u32 {px}, {rest}, {t};")
        k(f"mul.lo.u32 {dst}, {c}, {self.ii};")
        k(f"mad.lo.u32 {dst}, {py}, {self.i}, {dst};")
        k(f"add.u32 {dst}, {dst}, {px};")
        return dst, py, px

    def epilogue(self, dt, acc, row, col):
        """Finish the accumulator of output (row, col) (bounds-checked) and store it."""
        k, z = self.k, SIZE[dt]
        inside, skip = k.reg("pred", "inside"), k.label("skip")
        k(f"setp.lt.u32 {inside}, {row}, {self.m};")
        k(f"setp.lt.and.u32 {inside}, {col}, {self.n}, {inside};")
        k(f"@!{inside} bra {skip};")
        v, t, o = k.reg("f32", "ev"), k.reg("f32", "et"), k.reg("u32", "eo")
        k(f"mov.f32 {v}, {acc};")
        k(f"mad.lo.u32 {o}, {row}, {self.n}, {col};")
        if self.mode == "linear":
            ld_elem(k, dt, t, addr(k, self.bias, col, z), pred=self.has_bias)
            k(f"@{self.has_bias} add.f32 {v}, {v}, {t};")
            no_gelu = k.label("no_gelu")
            k(f"@!{self.has_gelu} bra {no_gelu};")
            gelu(k, v)
            k.place(no_gelu)
            ld_elem(k, dt, t, addr(k, self.res, o, z), pred=self.has_res)
            k(f"@{self.has_res} add.f32 {v}, {v}, {t};")
        else:
            pos = k.reg("u32", "pos")
            ld_elem(k, dt, t, addr(k, self.bias, col, z))
            k(f"add.f32 {v}, {v}, {t};")
            k(f"rem.u32 {pos}, {row}, {self.nt};")
            k(f"mad.lo.u32 {pos}, {pos}, {self.n}, {col};")
            ld_elem(k, dt, t, addr(k, self.res, pos, z))
            k(f"add.f32 {v}, {v}, {t};")
        st_elem(k, dt, addr(k, self.out, o, z), v)
        k.place(skip)


def epilogue_flags(k, flags):
    """(has_bias, has_gelu, has_res) predicates from the `flags` parameter."""
    preds = tuple(k.reg("pred", s) for s in ("has_bias", "has_gelu", "has_res"))
    t = k.reg("u32", "fl")
    for pred, bit in zip(preds, (FLAG_BIAS, FLAG_GELU, FLAG_RES)):
        k(f"and.b32 {t}, {flags}, {bit};")
        k(f"setp.ne.u32 {pred}, {t}, 0;")
    return preds


def ld_bf16_pair(k, address, pred, nc=False, stem="pr"):
    """Two adjacent bf16 at `address` (4-byte aligned) widened to f32 registers
    (lo, hi); both 0 where `pred` is false."""
    raw, t = k.reg("b32", f"{stem}raw"), k.reg("b32", f"{stem}t")
    lo, hi = k.reg("f32", f"{stem}0"), k.reg("f32", f"{stem}1")
    k(f"mov.b32 {raw}, 0;")
    k(f"@{pred} ld.global{'.nc' if nc else ''}.b32 {raw}, [{address}];")
    k(f"shl.b32 {t}, {raw}, 16;")
    k(f"mov.b32 {lo}, {t};")
    k(f"and.b32 {t}, {raw}, 0xFFFF0000;")
    k(f"mov.b32 {hi}, {t};")
    return lo, hi


def raster(k, pid, tiles_m, tiles_n, group_m):
    """(tile row, tile column) of linear tile index `pid` in groups of `group_m`
    tile rows: consecutive blocks walk down a group's rows before moving right,
    so blocks running together share W tiles (and x tiles) in L2."""
    in_group, group, first_m, gsize, t, tm, tn = (
        k.reg("u32", s) for s in ("in_group", "group", "first_m", "gsize", "rt", "tm", "tn"))
    k(f"mul.lo.u32 {in_group}, {tiles_n}, {group_m};")
    k(f"div.u32 {group}, {pid}, {in_group};")
    k(f"mul.lo.u32 {first_m}, {group}, {group_m};")
    k(f"sub.u32 {gsize}, {tiles_m}, {first_m};")
    k(f"min.u32 {gsize}, {gsize}, {group_m};")
    k(f"rem.u32 {t}, {pid}, {in_group};")
    k(f"rem.u32 {tm}, {t}, {gsize};")
    k(f"add.u32 {tm}, {tm}, {first_m};")
    k(f"div.u32 {tn}, {t}, {gsize};")
    return tm, tn
