"""What the GEMM-shaped kernels (linear, patch_embed) share: their parameter lists,
the A-operand row addressing of patch_embed (rows gathered from pixels), and the
epilogue — bias, GELU and residual (linear) or bias and position (patch_embed) —
applied to one f32 accumulator and stored once in the output type.

C = A·Bᵀ with A [M, K] (x, or the patches of the pixels) and B = W [N, K]: both
K-major, so W is the "col" B operand of mma as stored."""

from ..asm import In, Opt, Out, U32
from ..lib import SIZE, ZERO, addr, gelu, ld_elem, st_elem, widen_bf16x2

# res_rows: output row r adds residual row r mod res_rows (a linear layer: m;
# patch embedding on the GEMMs: the tokens of an image, its position embedding).
LINEAR_PARAMS = [In("x"), In("w"), Opt("bias"), Opt("res"), Out("out"), U32("m"), U32("n"),
                 U32("k"), U32("flags"), U32("res_rows")]
PATCH_PARAMS = [In("x"), In("w"), In("bias"), In("res"), Out("out"), U32("m"), U32("n"),
                U32("k"), U32("c"), U32("i"), U32("p"), U32("g")]

# Bits of `flags` (linear): bias present, GELU, residual present.
FLAG_BIAS, FLAG_GELU, FLAG_RES = 1, 2, 4


class PatchGeometry:
    """The patches of images [B, C, I, I], P pixels a side, G a side of the
    image (parameters c, i, p, g in registers), and the products the pixel
    addressing needs: I·I, P·P, P·I, tokens per image NT = G·G, C·I·I. Patch
    row = b·NT + gy·G + gx; element k = c·P·P + py·P + px (patch_embed's
    gathered A operand; patchify's copy)."""

    def __init__(self, k, c, i, p, g):
        self.k, self.c, self.i, self.p, self.g = k, c, i, p, g
        self.ii, self.pp, self.pi, self.nt, self.cii = (
            k.reg("u32", s) for s in ("ii", "pp", "pi", "nt", "cii"))
        k(f"mul.lo.u32 {self.ii}, {i}, {i};")
        k(f"mul.lo.u32 {self.pp}, {p}, {p};")
        k(f"mul.lo.u32 {self.pi}, {p}, {i};")
        k(f"mul.lo.u32 {self.nt}, {g}, {g};")
        k(f"mul.lo.u32 {self.cii}, {c}, {self.ii};")

    def rowbase(self, row):
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

    def kofs(self, kk):
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

    def walk(self):
        """The offset steps for `step`, in registers: to the next pixel row of
        a patch, I − P, and to the next channel, I·I − P·I."""
        k = self.k
        gip, giipi = k.reg("u32", "gip"), k.reg("u32", "giipi")
        k(f"sub.u32 {gip}, {self.i}, {self.p};")
        k(f"sub.u32 {giipi}, {self.ii}, {self.pi};")
        return gip, giipi

    def step(self, walk, ofs, py, px, pred):
        """The next element's (ofs, py, px): px + 1, wrapping to the next pixel
        row, then channel, predicated (no branch); `pred` is scratch."""
        k = self.k
        gip, giipi = walk
        k(f"add.u32 {ofs}, {ofs}, 1;")
        k(f"add.u32 {px}, {px}, 1;")
        k(f"setp.eq.u32 {pred}, {px}, {self.p};")
        k(f"@{pred} mov.u32 {px}, 0;")
        k(f"@{pred} add.u32 {py}, {py}, 1;")
        k(f"@{pred} add.u32 {ofs}, {ofs}, {gip};")
        k(f"setp.eq.u32 {pred}, {py}, {self.p};")
        k(f"@{pred} mov.u32 {py}, 0;")
        k(f"@{pred} add.u32 {ofs}, {ofs}, {giipi};")


class Operands:
    """The kernel parameters of a GEMM kernel in registers, plus (patch_embed)
    the patch geometry (`patch`)."""

    def __init__(self, k, mode):
        self.k, self.mode = k, mode
        self.x, self.w, self.bias, self.res, self.out = (
            k.param(p) for p in ("x", "w", "bias", "res", "out"))
        self.m, self.n, self.kk = k.param("m"), k.param("n"), k.param("k")
        if mode == "linear":
            self.has_bias, self.has_gelu, self.has_res = epilogue_flags(k, k.param("flags"))
            self.res_rows = k.param("res_rows")
        else:
            self.patch = PatchGeometry(k, *(k.param(s) for s in ("c", "i", "p", "g")))

    def epilogue_grid(self, dt, rows, cols, acc_at):
        """Finish and store the accumulators acc_at(i, j) of outputs (rows[i],
        cols[j]) (registers; bounds-checked). Every bias / residual / position
        load is issued before the first store: a load after a store to `out`
        may not be moved above it by ptxas (it cannot tell the pointers apart),
        so an element-by-element epilogue waits one global round trip per
        element. A barrier keeps the loads above the stores (see below)."""
        k, z, linear = self.k, SIZE[dt], self.mode == "linear"
        rin, rofs, pofs = [], [], []
        for r in rows:
            p, o = k.reg("pred", "rin"), k.reg("u32", "rofs")
            k(f"setp.lt.u32 {p}, {r}, {self.m};")
            k(f"mul.lo.u32 {o}, {r}, {self.n};")
            rin.append(p)
            rofs.append(o)
            # The residual's row: row mod res_rows (linear); the position's:
            # the token, row mod G·G (patch_embed).
            q = k.reg("u32", "pofs")
            k(f"rem.u32 {q}, {r}, {self.res_rows if linear else self.patch.nt};")
            k(f"mul.lo.u32 {q}, {q}, {self.n};")
            pofs.append(q)
        cin, bias = [], []
        for c in cols:
            p, b = k.reg("pred", "cin"), k.reg("f32", "eb")
            k(f"setp.lt.u32 {p}, {c}, {self.n};")
            if linear:
                pb = k.reg("pred", "pbias")
                k(f"and.pred {pb}, {p}, {self.has_bias};")
                p_load = pb
            else:
                p_load = p
            ld_elem(k, dt, b, addr(k, self.bias, c, z), pred=p_load)
            cin.append(p)
            bias.append(b)
        items = []
        for i, _ in enumerate(rows):
            for j, c in enumerate(cols):
                ok, o, t = k.reg("pred", "ok"), k.reg("u32", "eo"), k.reg("f32", "et")
                k(f"and.pred {ok}, {rin[i]}, {cin[j]};")
                k(f"add.u32 {o}, {rofs[i]}, {c};")
                q = k.reg("u32", "po")
                k(f"add.u32 {q}, {pofs[i]}, {c};")
                if linear:
                    pr = k.reg("pred", "pres")
                    k(f"and.pred {pr}, {ok}, {self.has_res};")
                    ld_elem(k, dt, t, addr(k, self.res, q, z), pred=pr)
                else:
                    ld_elem(k, dt, t, addr(k, self.res, q, z), pred=ok)
                items.append((ok, o, t, acc_at(i, j), bias[j]))
        # Left to itself, ptxas sinks each load to just before its use (fewer live
        # registers) and the round trips are serial again; it moves no memory
        # access across a barrier, and every thread of these blocks is here.
        k("bar.sync 0;")
        for ok, o, t, acc, b in items:
            v = k.reg("f32", "ev")
            k(f"mov.f32 {v}, {acc};")
            if linear:
                k(f"@{self.has_bias} add.f32 {v}, {v}, {b};")
                no_gelu = k.label("no_gelu")
                k(f"@!{self.has_gelu} bra {no_gelu};")
                gelu(k, v)
                k.place(no_gelu)
                k(f"@{self.has_res} add.f32 {v}, {v}, {t};")
            else:
                k(f"add.f32 {v}, {v}, {b};")
                k(f"add.f32 {v}, {v}, {t};")
            st_elem(k, dt, addr(k, self.out, o, z), v, pred=ok)


def epilogue_flags(k, flags):
    """(has_bias, has_gelu, has_res) predicates from the `flags` parameter."""
    preds = tuple(k.reg("pred", s) for s in ("has_bias", "has_gelu", "has_res"))
    t = k.reg("u32", "fl")
    for pred, bit in zip(preds, (FLAG_BIAS, FLAG_GELU, FLAG_RES)):
        k(f"and.b32 {t}, {flags}, {bit};")
        k(f"setp.ne.u32 {pred}, {t}, 0;")
    return preds


def ld_pair(k, dt, address, pred, nc=False, stem="pr"):
    """Two adjacent elements of type `dt` at `address` (aligned to the pair) as
    f32 registers (lo, hi); both 0 where `pred` is false."""
    if dt == "bf16":
        return ld_bf16_pair(k, address, pred, nc, stem)
    lo, hi = k.reg("f32", f"{stem}0"), k.reg("f32", f"{stem}1")
    k(f"mov.f32 {lo}, {ZERO};")
    k(f"mov.f32 {hi}, {ZERO};")
    k(f"@{pred} ld.global{'.nc' if nc else ''}.v2.f32 {{{lo}, {hi}}}, [{address}];")
    return lo, hi


def ld_bf16_pair(k, address, pred, nc=False, stem="pr"):
    """Two adjacent bf16 at `address` (4-byte aligned) widened to f32 registers
    (lo, hi); both 0 where `pred` is false."""
    raw = k.reg("b32", f"{stem}raw")
    lo, hi = k.reg("f32", f"{stem}0"), k.reg("f32", f"{stem}1")
    k(f"mov.b32 {raw}, 0;")
    k(f"@{pred} ld.global{'.nc' if nc else ''}.b32 {raw}, [{address}];")
    widen_bf16x2(k, raw, lo, hi)
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
