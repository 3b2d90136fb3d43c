"""patchify_{bf16,f32}: the patches of images as the rows of a matrix (im2col
for a stride-P convolution), so that patch embedding can run on the GEMMs of
the linear layers (on Hopper: the wgmma kernels, with the bias in their
epilogue and the position embedding as a residual that repeats every image,
src/cuda/patch_embed.rs).

out[row, k] = x[b, c, gy·P + py, gx·P + px] for row = b·G·G + gy·G + gx and
k = c·P·P + py·P + px < K = C·P·P; 0 for K ≤ k < KP (the row padded to KP
elements, a multiple of V, so that the rows start 16-byte aligned as TMA needs).
A bit-exact copy: no arithmetic on the values. The same kernel pads a weight
[D, C, P, P] to [D, KP] (images of one patch: I = P, G = 1).

Block: 256 threads, grid-stride over units of V consecutive elements of a row
(V = 8 bf16, 4 f32: one 16-byte store). A unit finds its row's pixel base and
its first element's (c, py, px) by division, then walks (c, py, px)
incrementally; its V pixel loads are 2 or 4 bytes each, read through the
non-coherent path (x never aliases out). Consecutive threads take consecutive
units of a row, so a warp's loads of one instruction touch the 28-32-byte
patch rows of a few image rows, and its stores are contiguous."""

from ..asm import In, Kernel, Out, U32
from ..lib import SIZE, addr, grid_stride

THREADS = 256
VEC = {"bf16": 8, "f32": 4}
PARAMS = [In("x"), Out("out"), U32("rows"), U32("kp"), U32("k"), U32("c"), U32("i"), U32("p"), U32("g")]


def patchify(dt):
    v, es = VEC[dt], SIZE[dt]
    name = f"patchify_{dt}"
    k = Kernel("patch_embed", name, THREADS, PARAMS, "patchify",
               doc=f"{name}: the patches of [B, C, I, I] as rows [B·G·G, KP] ({dt}; KP a multiple of {v},\n"
                   "the padding zeros); a copy, grid-stride over 16-byte units.")
    k.const("VEC", v)
    x, out, rows, kp, kk, c, i, p, g = (k.param(s) for s in ("x", "out", "rows", "kp", "k", "c", "i", "p", "g"))
    ii, pp, pi, nt, cii, units, groups, gip, giipi = (
        k.reg("u32", s) for s in ("ii", "pp", "pi", "nt", "cii", "units", "groups", "gip", "giipi"))
    k(f"mul.lo.u32 {ii}, {i}, {i};")
    k(f"mul.lo.u32 {pp}, {p}, {p};")
    k(f"mul.lo.u32 {pi}, {p}, {i};")
    k(f"mul.lo.u32 {nt}, {g}, {g};")
    k(f"mul.lo.u32 {cii}, {c}, {ii};")
    k(f"div.u32 {groups}, {kp}, {v};")
    k(f"mul.lo.u32 {units}, {rows}, {groups};")
    k(f"sub.u32 {gip}, {i}, {p};")       # the next pixel row of the patch: + I - P
    k(f"sub.u32 {giipi}, {ii}, {pi};")   # the next channel: + I·I - P·I

    def body(u):
        row, kg, k0, t = (k.reg("u32", s) for s in ("row", "kg", "k0", "t"))
        k(f"div.u32 {row}, {u}, {groups};")
        k(f"mul.lo.u32 {t}, {row}, {groups};")
        k(f"sub.u32 {kg}, {u}, {t};")
        k(f"mul.lo.u32 {k0}, {kg}, {v};")
        # The patch's pixel base: b·C·I·I + gy·P·I + gx·P.
        b, rest, gy, gx, base = (k.reg("u32", s) for s in ("pb", "pn", "gy", "gx", "base"))
        k(f"div.u32 {b}, {row}, {nt};")
        k(f"mul.lo.u32 {t}, {b}, {nt};")
        k(f"sub.u32 {rest}, {row}, {t};")
        k(f"div.u32 {gy}, {rest}, {g};")
        k(f"mul.lo.u32 {t}, {gy}, {g};")
        k(f"sub.u32 {gx}, {rest}, {t};")
        k(f"mul.lo.u32 {base}, {b}, {cii};")
        k(f"mad.lo.u32 {base}, {gy}, {pi}, {base};")
        k(f"mad.lo.u32 {base}, {gx}, {p}, {base};")
        # The first element's (c, py, px) and its pixel: base + c·I·I + py·I + px.
        ch, py, px, off = (k.reg("u32", s) for s in ("ch", "py", "px", "off"))
        k(f"div.u32 {ch}, {k0}, {pp};")
        k(f"mul.lo.u32 {t}, {ch}, {pp};")
        k(f"sub.u32 {rest}, {k0}, {t};")
        k(f"div.u32 {py}, {rest}, {p};")
        k(f"mul.lo.u32 {t}, {py}, {p};")
        k(f"sub.u32 {px}, {rest}, {t};")
        k(f"mad.lo.u32 {off}, {ch}, {ii}, {base};")
        k(f"mad.lo.u32 {off}, {py}, {i}, {off};")
        k(f"add.u32 {off}, {off}, {px};")
        vals = []
        for j in range(v):
            inside, w1, w2 = k.reg("pred", "in"), k.reg("pred", "wpx"), k.reg("pred", "wpy")
            kj = k.reg("u32", "kj")
            k(f"add.u32 {kj}, {k0}, {j};")
            k(f"setp.lt.u32 {inside}, {kj}, {kk};")
            at = addr(k, x, off, es, "xa")
            if dt == "bf16":
                val = k.reg("b32", "pv")
                k(f"mov.b32 {val}, 0;")
                k(f"@{inside} ld.global.nc.u16 {val}, [{at}];")
            else:
                val = k.reg("f32", "pv")
                k(f"mov.b32 {val}, 0;")
                k(f"@{inside} ld.global.nc.f32 {val}, [{at}];")
            vals.append(val)
            if j == v - 1:
                break
            # Next element: px + 1, wrapping to the next pixel row, then channel.
            k(f"add.u32 {px}, {px}, 1;")
            k(f"add.u32 {off}, {off}, 1;")
            k(f"setp.eq.u32 {w1}, {px}, {p};")
            k(f"@{w1} mov.u32 {px}, 0;")
            k(f"@{w1} add.u32 {py}, {py}, 1;")
            k(f"@{w1} add.u32 {off}, {off}, {gip};")
            k(f"setp.eq.and.u32 {w2}, {py}, {p}, {w1};")
            k(f"@{w2} mov.u32 {py}, 0;")
            k(f"@{w2} add.u32 {off}, {off}, {giipi};")
        o = k.reg("u32", "o")
        k(f"mad.lo.u32 {o}, {row}, {kp}, {k0};")
        at = addr(k, out, o, es, "oa")
        if dt == "bf16":
            words = []
            for lo, hi in zip(vals[0::2], vals[1::2]):
                wd = k.reg("b32", "pw")
                k(f"prmt.b32 {wd}, {lo}, {hi}, 0x5410;")
                words.append(wd)
            k(f"st.global.v4.b32 [{at}], {{{', '.join(map(str, words))}}};")
        else:
            k(f"st.global.v4.f32 [{at}], {{{', '.join(map(str, vals))}}};")

    grid_stride(k, units, body)
    return k


def kernels():
    return [patchify(dt) for dt in ("f32", "bf16")]
