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
from .gemm_common import PatchGeometry

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
    x, out, rows, kp, kk = (k.param(s) for s in ("x", "out", "rows", "kp", "k"))
    geo = PatchGeometry(k, *(k.param(s) for s in ("c", "i", "p", "g")))
    walk = geo.walk()
    units, groups = k.reg("u32", "units"), k.reg("u32", "groups")
    k(f"div.u32 {groups}, {kp}, {v};")
    k(f"mul.lo.u32 {units}, {rows}, {groups};")

    def body(u):
        row, kg, k0, t = (k.reg("u32", s) for s in ("row", "kg", "k0", "t"))
        k(f"div.u32 {row}, {u}, {groups};")
        k(f"mul.lo.u32 {t}, {row}, {groups};")
        k(f"sub.u32 {kg}, {u}, {t};")
        k(f"mul.lo.u32 {k0}, {kg}, {v};")
        # The unit's first pixel: the patch's base + its element's offset; the
        # offset of a k0 past K is never loaded.
        off, py, px = geo.kofs(k0)
        k(f"add.u32 {off}, {off}, {geo.rowbase(row)};")
        step = k.reg("pred", "wrap")
        vals = []
        for j in range(v):
            inside, kj = k.reg("pred", "in"), k.reg("u32", "kj")
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
            if j < v - 1:
                geo.step(walk, off, py, px, step)
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
