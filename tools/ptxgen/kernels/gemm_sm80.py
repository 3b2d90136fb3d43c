"""linear_bf16 / linear_f32_3xtf32: the sm_80 tensor-core GEMM for the model's shapes
(bf16: K and N multiples of 8; f32: of 4; 16-byte aligned operands; the host sends
anything else to linear_bf16_any / linear_f32). One generator, two element types:
the shared-memory tile is 64-byte rows either way (32 bf16 or 16 f32 of K), so the
layout, the swizzle and the ldmatrix addressing are the same; bf16 runs one
m16n8k16 mma per 16 k, f32 three m16n8k8 tf32 mma per 8 k (3xTF32, frag.py: each
product within ~2^-19 of exact, sums in f32; ±inf and NaN as in f32).

Block: 4 warps (128 threads), output tile 128×128, BK = 64 bytes of K, STAGES = 4.
  warp w: wm = w & 1 owns rows 64wm..64wm+63, wn = w >> 1 cols 64wn..64wn+63:
  4 (m16) × 8 (n8) mma tiles, 128 f32 accumulators per thread.
Grid: one block per tile, rasterised in groups of GROUP_M = 8 tile rows (blocks
  that run together share W tiles and x tiles in L2).
Shared (dynamic, STAGES × (A 128 rows + B 128 rows) × 64 bytes = 64 KiB): 16-byte
  chunk c of row r stored at chunk c ^ ((r >> 1) & 3) (XOR swizzle: the 8 rows of
  an ldmatrix phase hit 8 distinct bank groups; see frag.swizzle_64b).
Pipeline: cp.async (16 bytes, `.cg`, zero-fill past M, N or K) keeps STAGES − 1
  k-tiles in flight; per k-tile: wait for its group, bar.sync, request the tile
  STAGES − 1 ahead into the stage just freed, then two k-steps of ldmatrix.x4 (A:
  4, B: 4 per k-step) and 32 mma (bf16) or 96 (f32: the A fragments split once a
  k-step, each B fragment once, before its 4 m-tiles; a warp whose fragments hold
  ±inf or NaN takes the exact split for that k-step).
Epilogue: + bias, GELU (tanh.approx: 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))),
  + residual, all in f32 on the accumulators (one rounding), written in the
  output type to a shared staging tile (rows padded by 8 elements: conflict-free),
  then out with 16-byte stores of whole rows.
Split-K (few tiles, long K: batch 1): linear_{bf16,f32_3xtf32}_splitk runs the
  same main loop over one K slice per grid row (%ctaid.y) and stores its f32
  partial tile; linear_splitk_reduce_{bf16,f32} adds the slices in order
  (deterministic), applies the same epilogue and rounds once."""

from ..asm import In, Kernel, Opt, Out, U32
from ..frag import (any_nonfinite, cp_async_16, cp_commit, cp_wait, ldmatrix_x4, mma, mma_3xtf32, split_tf32,
                    split_tf32_specials, swizzle_64b)
from ..lib import ONE, SIZE, ZERO, addr, grid_stride, lane_warp, pack_bf16x2, specialise
from .gemm_common import LINEAR_PARAMS, epilogue_flags, ld_pair, raster

BM, BN, STAGES, GROUP_M = 128, 128, 4, 8
ROW_BYTES = 64           # of K per tile row, either element type
WARPS = 4
A_BYTES = BM * ROW_BYTES
STAGE_BYTES = 2 * A_BYTES
# Entry names by element type: the GEMM, its split-K form, the split-K reduction.
NAMES = {"bf16": ("linear_bf16", "linear_bf16_splitk", "linear_splitk_reduce_bf16"),
         "f32": ("linear_f32_3xtf32", "linear_f32_3xtf32_splitk", "linear_splitk_reduce_f32")}


def tile_k(dt):
    """Elements of K in a k-tile (64 bytes of each row)."""
    return ROW_BYTES // SIZE[dt]


def out_stride(dt):
    """Row stride of the epilogue's staging tile: a row plus 8 elements. A warp
    stores rows g (8 of them) × 4 lanes of 2 elements: 8·z bytes a row, so rows
    8·z bytes apart (mod 128) fill the banks without conflicts (bf16: 4-byte
    stores, the whole warp; f32: 8-byte stores, each half-warp)."""
    return (BN + 8) * SIZE[dt]


def log2(n):
    """The shift of power of two `n` (generation time)."""
    assert n > 0 and n & (n - 1) == 0, n
    return n.bit_length() - 1


def dyn_smem(dt):
    return max(STAGES * STAGE_BYTES, BM * out_stride(dt))


def gelu_tanh(k, v):
    """v ← 0.5·v·(1 + tanh(√(2/π)·(v + 0.044715·v³))) with tanh.approx (max relative
    error 2⁻¹⁰·⁹⁹, below bf16's rounding)."""
    t = k.reg("f32", "gt")
    k(f"mul.f32 {t}, {v}, {v};")
    k(f"fma.rn.f32 {t}, {t}, 0f3D372713, {ONE};")  # 1 + 0.044715 v²
    k(f"mul.f32 {t}, {t}, {v};")
    k(f"mul.f32 {t}, {t}, 0f3F4C422A;")  # · √(2/π)
    k(f"tanh.approx.f32 {t}, {t};")
    k(f"add.f32 {t}, {t}, {ONE};")
    k(f"mul.f32 {t}, {t}, {v};")
    k(f"mul.f32 {v}, {t}, 0f3F000000;")


SPLIT_PARAMS = [In("x"), In("w"), Out("part"), U32("m"), U32("n"), U32("k")]
REDUCE_PARAMS = [In("part"), Opt("bias"), Opt("res"), Out("out"), U32("m"), U32("n"), U32("splits"),
                 U32("flags"), U32("res_rows")]


def bias_gelu_pair(k, x0, x1, b0, b1, gelu):
    """(x0, x1) ← GELU_tanh(x + bias) where `gelu`, else x + bias (the bias 0 when
    absent): the first half of the linear epilogue, on one column pair. `gelu` is
    a generation-time bool (code written under `specialise`) or a predicate
    register (a branch around the pair)."""
    k(f"add.f32 {x0}, {x0}, {b0};")
    k(f"add.f32 {x1}, {x1}, {b1};")
    if gelu is False:
        return
    ng = None if gelu is True else k.label("no_gelu")
    if ng:
        k(f"@!{gelu} bra {ng};")
    gelu_tanh(k, x0)
    gelu_tanh(k, x1)
    if ng:
        k.place(ng)


def gemm_sm80(dt, split=False):
    """The fused GEMM of element type `dt`, or (split) its split-K form: block
    (tile, s) of a grid (tiles, S) sums k-tiles [s·q, (s + 1)·q), q = ⌈k-tiles /
    S⌉, and writes the f32 partial tile to part[s] ([S, M, N]); the split-K
    reduction of `dt` adds them."""
    z, BK = SIZE[dt], tile_k(dt)
    main, splitk, reduce_ = NAMES[dt]
    smem = dyn_smem(dt) if not split else STAGES * STAGE_BYTES
    what = (f"{main}: sm_80 tensor-core GEMM, 128×128×{BK} tiles, 4-stage cp.async\n"
            if dt == "bf16" else
            f"{main}: sm_80 tensor-core GEMM in 3xTF32 (f32-accurate), 128×128×{BK} tiles,\n4-stage cp.async ")
    if split:
        k = Kernel("linear", splitk, 32 * WARPS, SPLIT_PARAMS, "linear_splitk",
                   doc=f"{splitk}: {main}'s main loop over one K slice per grid row\n"
                       f"(%ctaid.y); writes f32 partial tiles for {reduce_}.",
                   dyn_smem=smem)
    else:
        k = Kernel("linear", main, 32 * WARPS, LINEAR_PARAMS, "linear",
                   doc=what + "pipeline, swizzled shared memory, fused bias / GELU / residual epilogue.",
                   dyn_smem=smem)
    k.const("TILE_M", BM)
    k.const("TILE_N", BN)
    k.const("TILE_K", BK)
    k.const("DYN_SMEM", smem)
    x, w = k.param("x"), k.param("w")
    M, N, K = (k.param(p) for p in ("m", "n", "k"))
    tid, lane, warp = lane_warp(k)
    t, u, p = k.reg("u32", "t"), k.reg("u32", "u"), k.reg("pred", "p")

    # Rasterised tile index.
    tiles_m, tiles_n, pid = k.reg("u32", "tiles_m"), k.reg("u32", "tiles_n"), k.reg("u32", "pid")
    k(f"add.u32 {tiles_m}, {M}, {BM - 1};")
    k(f"shr.u32 {tiles_m}, {tiles_m}, 7;")
    k(f"add.u32 {tiles_n}, {N}, {BN - 1};")
    k(f"shr.u32 {tiles_n}, {tiles_n}, 7;")
    k(f"mov.u32 {pid}, %ctaid.x;")
    tm, tn = raster(k, pid, tiles_m, tiles_n, GROUP_M)
    m0, n0 = k.reg("u32", "m0"), k.reg("u32", "n0")
    k(f"shl.b32 {m0}, {tm}, 7;")
    k(f"shl.b32 {n0}, {tn}, 7;")

    sbase = k.reg("u32", "sbase")
    k(f"mov.u32 {sbase}, dyn_smem;")
    # Loader: chunk c = tid + 128i (i < 4) of a 128×4-chunk tile: row c >> 2 (row0
    # + 32i), chunk c & 3. Rows 32 apart share the swizzle ((row >> 1) & 3), so
    # chunk i lands 32 rows (2048 bytes) after chunk 0; its global element index is
    # chunk 0's + 32i·K. Only chunk 0's offset and index are kept: registers are
    # what the f32 kernel's fragments need.
    nld = BM * (ROW_BYTES // 16) // (32 * WARPS)
    ch, row0 = k.reg("u32", "ch"), k.reg("u32", "lrow")
    k(f"and.b32 {ch}, {tid}, 3;")
    k(f"shr.u32 {row0}, {tid}, 2;")
    soff = swizzle_64b(k, row0, ch)
    k32 = k.reg("u32", "k32")
    k(f"shl.b32 {k32}, {K}, 5;")
    operands = []  # (base, first row of this thread, row limit, element index of (row, k 0))
    for base, lim, r0, stem in ((x, M, m0, "ga"), (w, N, n0, "gb")):
        grow, g = k.reg("u32", f"{stem}row"), k.reg("u32", stem)
        k(f"add.u32 {grow}, {r0}, {row0};")
        k(f"mul.lo.u32 {g}, {grow}, {K};")
        k(f"shl.b32 {t}, {ch}, {log2(16 // z)};")
        k(f"add.u32 {g}, {g}, {t};")
        operands.append((base, grow, lim, g))
    kcol = k.reg("u32", "kcol")  # this thread's first k within a tile
    k(f"shl.b32 {kcol}, {ch}, {log2(16 // z)};")
    # This block's k-tiles [kbeg, ktiles): all of them, or (split) slice %ctaid.y.
    ktiles, kbeg = k.reg("u32", "ktiles"), k.reg("u32", "kbeg")
    k(f"add.u32 {ktiles}, {K}, {BK - 1};")
    k(f"shr.u32 {ktiles}, {ktiles}, {log2(BK)};")
    k(f"mov.u32 {kbeg}, 0;")
    if split:
        per, sidx = k.reg("u32", "kper"), k.reg("u32", "split")
        k(f"mov.u32 {per}, %nctaid.y;")
        k(f"add.u32 {t}, {ktiles}, {per};")
        k(f"sub.u32 {t}, {t}, 1;")
        k(f"div.u32 {per}, {t}, {per};")
        k(f"mov.u32 {sidx}, %ctaid.y;")
        k(f"mul.lo.u32 {kbeg}, {sidx}, {per};")
        k(f"min.u32 {kbeg}, {kbeg}, {ktiles};")
        k(f"add.u32 {t}, {kbeg}, {per};")
        k(f"min.u32 {ktiles}, {ktiles}, {t};")

    def load(kt_reg, stage_reg):
        """cp.async k-tile kt_reg into stage stage_reg."""
        k0, so, kin = k.reg("u32", "k0"), k.reg("u32", "so"), k.reg("pred", "kin")
        k(f"shl.b32 {k0}, {kt_reg}, {log2(BK)};")
        k(f"add.u32 {t}, {k0}, {kcol};")
        k(f"setp.lt.u32 {kin}, {t}, {K};")
        k(f"mad.lo.u32 {so}, {stage_reg}, {STAGE_BYTES}, {sbase};")
        k(f"add.u32 {so}, {so}, {soff};")
        # Addresses from 32-bit element indices (index32 bounds every operand),
        # the operand's first element where the chunk is zero-filled.
        for (base, grow, lim, g0), extra in zip(operands, (0, A_BYTES)):
            e0 = k.reg("u32", "ge0")
            k(f"add.u32 {e0}, {g0}, {k0};")
            for i in range(nld):
                e, r, inside = k.reg("u32", "ge"), k.reg("u32", "gr"), k.reg("pred", "in")
                k(f"add.u32 {r}, {grow}, {32 * i};")
                k(f"setp.lt.and.u32 {inside}, {r}, {lim}, {kin};")
                k(f"mad.lo.u32 {e}, {k32}, {i}, {e0};")
                k(f"@!{inside} mov.u32 {e}, 0;")
                g = addr(k, base, e, z, "g")
                cp_async_16(k, f"{so}+{extra + 2048 * i}", g, inside)

    # Prologue: tiles kbeg .. kbeg + STAGES − 2, one commit group each (empty past ktiles).
    for s in range(STAGES - 1):
        st, ss, skip = k.reg("u32", "st"), k.reg("u32", "ss"), k.label("pro")
        k(f"add.u32 {st}, {kbeg}, {s};")
        k(f"mov.u32 {ss}, {s};")
        k(f"setp.ge.u32 {p}, {st}, {ktiles};")
        k(f"@{p} bra {skip};")
        load(st, ss)
        k.place(skip)
        cp_commit(k)

    # ldmatrix lane offsets (before the swizzle): A row 64wm + (lane & 15), k chunk
    # lane >> 4; B row 64wn + (lane & 7) + 8(lane >> 4), k chunk (lane >> 3) & 1.
    wm, wn = k.reg("u32", "wm"), k.reg("u32", "wn")
    k(f"and.b32 {wm}, {warp}, 1;")
    k(f"shr.u32 {wn}, {warp}, 1;")
    arow, brow, achk, bchk = (k.reg("u32", s) for s in ("arow", "brow", "achk", "bchk"))
    k(f"and.b32 {arow}, {lane}, 15;")
    k(f"shl.b32 {t}, {wm}, 6;")
    k(f"add.u32 {arow}, {arow}, {t};")
    k(f"shr.u32 {achk}, {lane}, 4;")
    k(f"and.b32 {brow}, {lane}, 7;")
    k(f"shr.u32 {t}, {lane}, 4;")
    k(f"shl.b32 {t}, {t}, 3;")
    k(f"add.u32 {brow}, {brow}, {t};")
    k(f"shl.b32 {t}, {wn}, 6;")
    k(f"add.u32 {brow}, {brow}, {t};")
    k(f"shr.u32 {bchk}, {lane}, 3;")
    k(f"and.b32 {bchk}, {bchk}, 1;")
    # Swizzled offsets per k-step s (logical chunk base + 2s). The m-tiles (n-tile
    # pairs) are 16 rows apart, which keeps (row >> 1) & 3 and so the swizzle: they
    # are the same offset plus 16 rows · 64 bytes.
    aoff, boff = [], []
    for s in range(2):
        c = k.reg("u32", "c")
        k(f"add.u32 {c}, {achk}, {2 * s};")
        aoff.append(swizzle_64b(k, arow, c))
        c = k.reg("u32", "c")
        k(f"add.u32 {c}, {bchk}, {2 * s};")
        off = swizzle_64b(k, brow, c)
        k(f"add.u32 {off}, {off}, {A_BYTES};")
        boff.append(off)

    acc = [[k.regs_n("f32", f"c{mt}_{nt}_", 4) for nt in range(8)] for mt in range(4)]
    for row_ in acc:
        for frag in row_:
            for r in frag:
                k(f"mov.f32 {r}, {ZERO};")
    fa = [k.regs_n("b32", f"fa{mt}_", 4) for mt in range(4)]
    fb = [k.regs_n("b32", f"fb{nq}_", 4) for nq in range(4)]

    kt, stage, nxt, nstage = (k.reg("u32", s) for s in ("kt", "stage", "nxt", "nstage"))
    k(f"mov.u32 {kt}, {kbeg};")
    k(f"mov.u32 {stage}, 0;")
    k(f"mov.u32 {nstage}, {STAGES - 1};")
    top, done = k.label("ktile"), k.label("kdone")
    k.place(top)
    k(f"setp.ge.u32 {p}, {kt}, {ktiles};")
    k(f"@{p} bra {done};")
    cp_wait(k, STAGES - 2)
    k("bar.sync 0;")
    # Request tile kt + STAGES − 1 into the stage the previous iteration freed.
    skip = k.label("no_load")
    k(f"add.u32 {nxt}, {kt}, {STAGES - 1};")
    k(f"setp.ge.u32 {p}, {nxt}, {ktiles};")
    k(f"@{p} bra {skip};")
    load(nxt, nstage)
    k.place(skip)
    cp_commit(k)
    sb = k.reg("u32", "sb")
    k(f"mad.lo.u32 {sb}, {stage}, {STAGE_BYTES}, {sbase};")
    for s in range(2):
        a, b_ = k.reg("u32", "la"), k.reg("u32", "lb")
        k(f"add.u32 {a}, {sb}, {aoff[s]};")
        k(f"add.u32 {b_}, {sb}, {boff[s]};")
        for mt in range(4):
            ldmatrix_x4(k, fa[mt], f"{a}+{16 * 64 * mt}")
        for nq in range(4):
            ldmatrix_x4(k, fb[nq], f"{b_}+{16 * 64 * nq}")
        if dt == "bf16":
            for mt in range(4):
                for nt in range(8):
                    mma(k, acc[mt][nt], fa[mt], fb[nt // 2][2 * (nt % 2):2 * (nt % 2) + 2])
        else:
            # The quick split where this warp's fragments are all finite (A split
            # once: 32 registers; B an n-tile at a time), else the exact one,
            # each fragment split where it is used (a rare path: registers first).
            exact, joined = k.label("nonfinite"), k.label("ksplit_done")
            k(f"@{any_nonfinite(k, [r for f in fa + fb for r in f])} bra {exact};")
            sa = [[split_tf32(k, r, "sa") for r in fa[mt]] for mt in range(4)]
            for nt in range(8):
                sb_ = [split_tf32(k, r, "sb") for r in fb[nt // 2][2 * (nt % 2):2 * (nt % 2) + 2]]
                for mt in range(4):
                    mma_3xtf32(k, acc[mt][nt], sa[mt], sb_)
            k(f"bra.uni {joined};")
            k.place(exact)
            for mt in range(4):
                sa = [split_tf32_specials(k, r, "xa") for r in fa[mt]]
                for nt in range(8):
                    sb_ = [split_tf32_specials(k, r, "xb") for r in fb[nt // 2][2 * (nt % 2):2 * (nt % 2) + 2]]
                    mma_3xtf32(k, acc[mt][nt], sa, sb_)
            k.place(joined)
    k(f"add.u32 {kt}, {kt}, 1;")
    for r in (stage, nstage):
        k(f"add.u32 {r}, {r}, 1;")
        k(f"setp.eq.u32 {p}, {r}, {STAGES};")
        k(f"@{p} mov.u32 {r}, 0;")
    k(f"bra.uni {top};")
    k.place(done)
    cp_wait(k, 0)
    k("bar.sync 0;")  # every warp is done with the pipeline's shared memory
    if split:
        partial_store(k, acc, lane, warp, m0, n0, M, N)
        return k
    bias, res, out, flags = (k.param(p) for p in ("bias", "res", "out", "flags"))
    res_rows = k.param("res_rows")

    # Epilogue in f32: bias, GELU, residual (bf16; f32 adds it on the way out, below);
    # then pairs of the output type into the staging tile.
    has_bias, has_gelu, has_res = epilogue_flags(k, flags)
    g4, c2 = k.reg("u32", "g4"), k.reg("u32", "c2")
    k(f"shr.u32 {g4}, {lane}, 2;")
    k(f"and.b32 {c2}, {lane}, 3;")
    k(f"shl.b32 {c2}, {c2}, 1;")
    lrow0, lcol0 = k.reg("u32", "lrow0"), k.reg("u32", "lcol0")  # in the tile
    k(f"shl.b32 {lrow0}, {wm}, 6;")
    k(f"add.u32 {lrow0}, {lrow0}, {g4};")
    k(f"shl.b32 {lcol0}, {wn}, 6;")
    k(f"add.u32 {lcol0}, {lcol0}, {c2};")
    bv = []
    for nt in range(8):
        # Bias pair of columns n0 + lcol0 + 8nt, +1 (0 past N or without bias).
        col, pb_ = k.reg("u32", "bcol"), k.reg("pred", "pbias")
        k(f"add.u32 {col}, {n0}, {lcol0};")
        k(f"add.u32 {col}, {col}, {8 * nt};")
        k(f"setp.lt.and.u32 {pb_}, {col}, {N}, {has_bias};")
        bv.append(ld_pair(k, dt, addr(k, bias, col, z), pb_, nc=True, stem="bias"))
    stile = k.reg("u32", "stile")
    OUT_STRIDE = out_stride(dt)
    k(f"mad.lo.u32 {stile}, {lrow0}, {OUT_STRIDE}, {sbase};")
    k(f"shl.b32 {t}, {lcol0}, {log2(z)};")
    k(f"add.u32 {stile}, {stile}, {t};")
    def epilogue_math(gelu):
        """Bias, GELU where `gelu`, residual (bf16), into the staging tile."""
        for mt in range(4):
            for half in range(2):
                grow_, rin = k.reg("u32", "orow"), k.reg("pred", "rin")
                k(f"add.u32 {grow_}, {m0}, {lrow0};")
                k(f"add.u32 {grow_}, {grow_}, {16 * mt + 8 * half};")
                k(f"setp.lt.and.u32 {rin}, {grow_}, {M}, {has_res};")
                k(f"rem.u32 {grow_}, {grow_}, {res_rows};")  # the residual's row
                k(f"mul.lo.u32 {grow_}, {grow_}, {N};")
                k(f"add.u32 {grow_}, {grow_}, {n0};")
                k(f"add.u32 {grow_}, {grow_}, {lcol0};")
                rbase = addr(k, res, grow_, z, "rb")
                for nt in range(8):
                    x0, x1 = acc[mt][nt][2 * half], acc[mt][nt][2 * half + 1]
                    bias_gelu_pair(k, x0, x1, *bv[nt], gelu)
                    if dt == "f32":
                        st_pair(k, dt, f"[{stile}+{(16 * mt + 8 * half) * OUT_STRIDE + 8 * z * nt}]", x0, x1,
                                "shared")
                        continue
                    col, pr = k.reg("u32", "rcol"), k.reg("pred", "pres")
                    k(f"add.u32 {col}, {n0}, {lcol0};")
                    k(f"add.u32 {col}, {col}, {8 * nt};")
                    k(f"setp.lt.and.u32 {pr}, {col}, {N}, {rin};")
                    r0, r1 = ld_pair(k, dt, f"{rbase}+{8 * z * nt}", pr, stem="res")
                    k(f"add.f32 {x0}, {x0}, {r0};")
                    k(f"add.f32 {x1}, {x1}, {r1};")
                    st_pair(k, dt, f"[{stile}+{(16 * mt + 8 * half) * OUT_STRIDE + 8 * z * nt}]", x0, x1, "shared")

    specialise(k, has_gelu, epilogue_math, "gelu")
    k("bar.sync 0;")
    # Staging tile → global, 16 bytes a store: chunk c = tid + 128i, row c / R,
    # chunk c % R of R = BN·z / 16 chunks a row. f32 adds the residual here, in
    # 16-byte loads (the same f32 sum as on the accumulators: the staged value is
    # exact), a batch of 16 chunks' loads issued before any of their stores: a
    # load after a store to `out` waits for it (ptxas cannot tell the pointers
    # apart), and the accumulators are free by now.
    per_row = BN * z // 16
    chunks = BM * per_row // (32 * WARPS)
    if dt == "f32":
        res_n = k.reg("u32", "res_n")
        k(f"mul.lo.u32 {res_n}, {res_rows}, {N};")
    batch = 16 if dt == "f32" else chunks
    for b0 in range(0, chunks, batch):
        items = []
        for i in range(b0, b0 + batch):
            c, row, chunk = k.reg("u32", "oc"), k.reg("u32", "orw"), k.reg("u32", "ock")
            k(f"add.u32 {c}, {tid}, {32 * WARPS * i};")
            k(f"shr.u32 {row}, {c}, {log2(per_row)};")
            k(f"and.b32 {chunk}, {c}, {per_row - 1};")
            sa, gr, gc, ok = k.reg("u32", "osa"), k.reg("u32", "ogr"), k.reg("u32", "ogc"), k.reg("pred", "ook")
            k(f"mad.lo.u32 {sa}, {row}, {OUT_STRIDE}, {sbase};")
            k(f"shl.b32 {t}, {chunk}, 4;")
            k(f"add.u32 {sa}, {sa}, {t};")
            k(f"add.u32 {gr}, {m0}, {row};")
            k(f"shl.b32 {gc}, {chunk}, {log2(16 // z)};")
            k(f"add.u32 {gc}, {gc}, {n0};")
            k(f"setp.lt.u32 {ok}, {gr}, {M};")
            k(f"setp.lt.and.u32 {ok}, {gc}, {N}, {ok};")
            v4 = k.regs_n("b32", "ov", 4)
            k(f"@{ok} ld.shared.v4.b32 {{{', '.join(map(str, v4))}}}, [{sa}];")
            k(f"mad.lo.u32 {gr}, {gr}, {N}, {gc};")
            r4 = None
            if dt == "f32":
                r4, pr, rr = k.regs_n("f32", "or", 4), k.reg("pred", "opr"), k.reg("u32", "orr")
                for r in r4:
                    k(f"mov.f32 {r}, {ZERO};")  # past M or N: added, never stored
                k(f"and.pred {pr}, {ok}, {has_res};")
                # The residual's element: (row mod res_rows)·N + column = the
                # output's element mod res_rows·N.
                k(f"rem.u32 {rr}, {gr}, {res_n};")
                k(f"@{pr} ld.global.v4.f32 {{{', '.join(map(str, r4))}}}, [{addr(k, res, rr, z)}];")
            items.append((ok, gr, v4, r4))
        for ok, gr, v4, r4 in items:
            if r4 is not None:
                for v, r in zip(v4, r4):
                    k(f"@{has_res} add.f32 {v}, {v}, {r};")
            k(f"@{ok} st.global.v4.b32 [{addr(k, out, gr, z)}], {{{', '.join(map(str, v4))}}};")
    return k


def st_pair(k, dt, address, x0, x1, space="global"):
    """Store the f32 pair (x0, x1) at `address` (a bracketed operand) in type `dt`:
    a bf16x2 word (rounded to nearest even) or two f32."""
    if dt == "bf16":
        k(f"st.{space}.b32 {address}, {pack_bf16x2(k, x0, x1)};")
    else:
        k(f"st.{space}.v2.f32 {address}, {{{x0}, {x1}}};")


def partial_store(k, acc, lane, warp, m0, n0, M, N):
    """part[%ctaid.y][row][col] ← the accumulators, f32 pairs (8-byte stores; N is
    even, so a pair never straddles the edge)."""
    part = k.param("part")
    t, g4, c2 = k.reg("u32", "t"), k.reg("u32", "g4"), k.reg("u32", "c2")
    base, slice_ = k.reg("u32", "prow0"), k.reg("u32", "slice")
    k(f"shr.u32 {g4}, {lane}, 2;")
    k(f"and.b32 {c2}, {lane}, 3;")
    k(f"shl.b32 {c2}, {c2}, 1;")
    k(f"and.b32 {t}, {warp}, 1;")
    k(f"shl.b32 {base}, {t}, 6;")
    k(f"add.u32 {base}, {base}, {g4};")
    k(f"add.u32 {base}, {base}, {m0};")            # first row of this thread
    col0 = k.reg("u32", "pcol0")
    k(f"shr.u32 {t}, {warp}, 1;")
    k(f"shl.b32 {col0}, {t}, 6;")
    k(f"add.u32 {col0}, {col0}, {c2};")
    k(f"add.u32 {col0}, {col0}, {n0};")
    k(f"mov.u32 {slice_}, %ctaid.y;")
    k(f"mul.lo.u32 {slice_}, {slice_}, {M};")     # rows before this slice: s·M
    for mt in range(4):
        for half in range(2):
            row, rin = k.reg("u32", "prow"), k.reg("pred", "prin")
            k(f"add.u32 {row}, {base}, {16 * mt + 8 * half};")
            k(f"setp.lt.u32 {rin}, {row}, {M};")
            k(f"add.u32 {row}, {row}, {slice_};")
            k(f"mad.lo.u32 {row}, {row}, {N}, {col0};")
            pa = addr(k, part, row, 4, "pa")
            for nt in range(8):
                ok = k.reg("pred", "pok")
                k(f"add.u32 {t}, {col0}, {8 * nt};")
                k(f"setp.lt.and.u32 {ok}, {t}, {N}, {rin};")
                x0, x1 = acc[mt][nt][2 * half], acc[mt][nt][2 * half + 1]
                k(f"@{ok} st.global.v2.f32 [{pa}+{32 * nt}], {{{x0}, {x1}}};")


def splitk_reduce(dt):
    """out = epilogue(Σ_s part[s]) over [M, N], two columns a thread (grid-stride);
    the slices are added in order, so the result does not depend on timing."""
    z, (main, splitk, name) = SIZE[dt], NAMES[dt]
    k = Kernel("linear", name, 256, REDUCE_PARAMS, "splitk_reduce",
               doc=f"{name}: sums {splitk}'s f32 slices, then bias,\n"
                   f"GELU and residual as {main}'s epilogue, rounded once to {dt}.")
    part, bias, res, out = (k.param(p) for p in ("part", "bias", "res", "out"))
    M, N, S, flags = (k.param(p) for p in ("m", "n", "splits", "flags"))
    has_bias, has_gelu, has_res = epilogue_flags(k, flags)
    pairs, mn, rn = k.reg("u32", "pairs"), k.reg("u32", "mn"), k.reg("u32", "rn")
    k(f"mul.lo.u32 {mn}, {M}, {N};")
    # Residual element of output element e (row r, column c): (r mod res_rows)·N
    # + c = e mod res_rows·N.
    k(f"mul.lo.u32 {rn}, {k.param('res_rows')}, {N};")
    k(f"shr.u32 {pairs}, {mn}, 1;")

    def body(i):
        e, col, s_, p = k.reg("u32", "e"), k.reg("u32", "col"), k.reg("u32", "s"), k.reg("pred", "more")
        x0, x1, y0, y1 = (k.reg("f32", n) for n in ("x0", "x1", "y0", "y1"))
        k(f"shl.b32 {e}, {i}, 1;")
        k(f"rem.u32 {col}, {e}, {N};")
        pa = addr(k, part, e, 4, "pa")
        off = k.reg("b64", "slice")
        k(f"mul.wide.u32 {off}, {mn}, 4;")
        k(f"ld.global.v2.f32 {{{x0}, {x1}}}, [{pa}];")
        k(f"mov.u32 {s_}, 1;")
        top, end = k.label("sum"), k.label("sum_end")
        k.place(top)
        k(f"setp.ge.u32 {p}, {s_}, {S};")
        k(f"@{p} bra {end};")
        k(f"add.s64 {pa}, {pa}, {off};")
        k(f"ld.global.v2.f32 {{{y0}, {y1}}}, [{pa}];")
        k(f"add.f32 {x0}, {x0}, {y0};")
        k(f"add.f32 {x1}, {x1}, {y1};")
        k(f"add.u32 {s_}, {s_}, 1;")
        k(f"bra {top};")
        k.place(end)
        b0, b1 = ld_pair(k, dt, addr(k, bias, col, z), has_bias, nc=True, stem="bias")
        bias_gelu_pair(k, x0, x1, b0, b1, has_gelu)
        re = k.reg("u32", "re")
        k(f"rem.u32 {re}, {e}, {rn};")
        r0, r1 = ld_pair(k, dt, addr(k, res, re, z), has_res, stem="res")
        k(f"add.f32 {x0}, {x0}, {r0};")
        k(f"add.f32 {x1}, {x1}, {r1};")
        st_pair(k, dt, f"[{addr(k, out, e, z)}]", x0, x1)

    grid_stride(k, pairs, body)
    return k


def kernels():
    return [kern for dt in ("bf16", "f32")
            for kern in (gemm_sm80(dt), gemm_sm80(dt, split=True), splitk_reduce(dt))]
