"""bf16 GEMM for any shape (linear_bf16_any, patch_embed_bf16) on tensor cores:
mma.sync m16n8k16, f32 accumulation.

Block: 128 threads = 4 warps, output tile 64×64, K step 32.
  warp w: wm = w & 1 owns rows 32wm..32wm+31, wn = w >> 1 cols 32wn..32wn+31,
  i.e. 2 (m16) × 4 (n8) mma tiles.
Shared: As[64][40], Bs[64][40] bf16 (row = m or n, 32 k + 8 pad). Row stride 80 B:
  16-byte aligned rows for ldmatrix / st.shared.v4, and the 8 rows one ldmatrix
  phase reads fall in distinct 16-byte bank groups.
Global → shared: thread t fills row t & 63, k = 16(t >> 6) .. +15 of both
  tiles: two 16-byte loads when K % 8 == 0 and the operand's base is 16-byte
  aligned (checked in the kernel, so views cannot fault), else 16 predicated
  2-byte loads packed in registers; patch_embed's A (pixels) always element by
  element, walking (c, py, px) incrementally. Either way the thread stores two
  16-byte vectors: a quarter-warp's 8 rows (80 bytes apart, 5 chunks: 5r mod 8
  distinct) hit 8 distinct bank groups. Out-of-range rows or k are stored as 0:
  any M, N, K.
Fragments: ldmatrix.x4 (see frag.py). The sm_80 pipelined kernel (gemm_sm80.py)
  takes the model's shapes; this one takes the rest.
Grid: (ceil(N / 64), ceil(M / 64))."""

from ..asm import Kernel
from ..frag import c_coords, ldmatrix_x4, mma
from ..lib import ZERO, addr, lane_warp
from .gemm_common import LINEAR_PARAMS, PATCH_PARAMS, Operands

TILE, BK, ROW_B = 64, 32, 80


def gemm_bf16_any(mode):
    linear = mode == "linear"
    name = "linear_bf16_any" if linear else "patch_embed_bf16"
    k = Kernel("linear" if linear else "patch_embed", name, 128,
               LINEAR_PARAMS if linear else PATCH_PARAMS, "linear" if linear else "patch_embed",
               doc=f"{name}: bf16 mma.sync GEMM for any shape, 64×64 tiles, 4 warps.")
    k.const("TILE_M", TILE)
    k.const("TILE_N", TILE)
    op = Operands(k, mode)
    As, Bs = k.shared("As", TILE * ROW_B), k.shared("Bs", TILE * ROW_B)
    tid, lane, warp = lane_warp(k)
    wm, wn, m0, n0, u, t = (k.reg("u32", s) for s in ("wm", "wn", "m0", "n0", "u", "t"))
    k(f"and.b32 {wm}, {warp}, 1;")
    k(f"shr.u32 {wn}, {warp}, 1;")
    k(f"mov.u32 {n0}, %ctaid.x;")
    k(f"shl.b32 {n0}, {n0}, 6;")
    k(f"mov.u32 {m0}, %ctaid.y;")
    k(f"shl.b32 {m0}, {m0}, 6;")
    # Vector loads: K % 8 == 0 and a 16-byte aligned base.
    kvec, va, vb = k.reg("pred", "kvec"), k.reg("pred", "va"), k.reg("pred", "vb")
    a64 = k.reg("b64", "al")
    k(f"and.b32 {t}, {op.kk}, 7;")
    k(f"setp.eq.u32 {kvec}, {t}, 0;")
    k(f"and.b64 {a64}, {op.x}, 15;")
    k(f"setp.eq.and.u64 {va}, {a64}, 0, {kvec};")
    k(f"and.b64 {a64}, {op.w}, 15;")
    k(f"setp.eq.and.u64 {vb}, {a64}, 0, {kvec};")
    # Loader: row tid & 63, k offset 16·(tid >> 6).
    pa, pb, rb, w_ = k.reg("pred", "pa"), k.reg("pred", "pb"), k.reg("u32", "rb"), k.reg("u32", "w")
    k(f"and.b32 {u}, {tid}, 63;")
    k(f"add.u32 {w_}, {m0}, {u};")
    k(f"setp.lt.u32 {pa}, {w_}, {op.m};")
    if linear:
        ra = k.reg("u32", "ra")
        k(f"mul.lo.u32 {ra}, {w_}, {op.kk};")
    else:
        ra = op.patch.rowbase(w_)
        walk = op.patch.walk()
    k(f"add.u32 {w_}, {n0}, {u};")
    k(f"setp.lt.u32 {pb}, {w_}, {op.n};")
    k(f"mul.lo.u32 {rb}, {w_}, {op.kk};")
    sa, sb = k.reg("u32", "sa"), k.reg("u32", "sb")
    k(f"mul.lo.u32 {w_}, {u}, {ROW_B};")
    k(f"shr.u32 {t}, {tid}, 6;")
    k(f"shl.b32 {t}, {t}, 5;")
    k(f"add.u32 {w_}, {w_}, {t};")
    k(f"mov.u32 {sa}, {As};")
    k(f"add.u32 {sa}, {sa}, {w_};")
    k(f"mov.u32 {sb}, {Bs};")
    k(f"add.u32 {sb}, {sb}, {w_};")
    # ldmatrix lane addresses: A row lane & 15, k 8·(lane >> 4); B row (lane & 7) +
    # 8·(lane >> 4), k 8·((lane >> 3) & 1).
    ab, bb = k.reg("u32", "ab"), k.reg("u32", "bb")
    k(f"and.b32 {u}, {lane}, 15;")
    k(f"mul.lo.u32 {u}, {u}, {ROW_B};")
    k(f"shr.u32 {t}, {lane}, 4;")
    k(f"shl.b32 {t}, {t}, 4;")
    k(f"add.u32 {u}, {u}, {t};")
    k(f"mad.lo.u32 {u}, {wm}, {32 * ROW_B}, {u};")
    k(f"mov.u32 {ab}, {As};")
    k(f"add.u32 {ab}, {ab}, {u};")
    k(f"and.b32 {u}, {lane}, 7;")
    k(f"shr.u32 {t}, {lane}, 4;")
    k(f"shl.b32 {t}, {t}, 3;")
    k(f"add.u32 {u}, {u}, {t};")
    k(f"mul.lo.u32 {u}, {u}, {ROW_B};")
    k(f"shr.u32 {t}, {lane}, 3;")
    k(f"and.b32 {t}, {t}, 1;")
    k(f"shl.b32 {t}, {t}, 4;")
    k(f"add.u32 {u}, {u}, {t};")
    k(f"mad.lo.u32 {u}, {wn}, {32 * ROW_B}, {u};")
    k(f"mov.u32 {bb}, {Bs};")
    k(f"add.u32 {bb}, {bb}, {u};")
    acc = k.regs_n("f32", "d", 32)
    for r in acc:
        k(f"mov.f32 {r}, {ZERO};")
    kt, gk, pq, pw = k.reg("u32", "kt"), k.reg("u32", "gk"), k.reg("pred", "pq"), k.reg("pred", "pw")
    top, end = k.label("kloop"), k.label("kdone")
    k(f"mov.u32 {kt}, 0;")
    k.place(top)
    k(f"setp.ge.u32 {pq}, {kt}, {op.kk};")
    k(f"@{pq} bra {end};")
    k(f"shr.u32 {t}, {tid}, 6;")
    k(f"shl.b32 {t}, {t}, 4;")
    k(f"add.u32 {gk}, {kt}, {t};")
    x4 = k.regs_n("b32", "x", 4)
    hv = k.regs_n("b16", "hv", 16)

    def store_packed(sdst):
        """The 16 elements in hv as two 16-byte vectors at sdst."""
        for j in range(2):
            for q in range(4):
                k(f"mov.b32 {x4[q]}, {{{hv[8 * j + 2 * q]}, {hv[8 * j + 2 * q + 1]}}};")
            k(f"st.shared.v4.u32 [{sdst}+{16 * j}], {{{', '.join(map(str, x4))}}};")

    def vec_load(base, rowbase, rowpred, sdst):
        for j in range(2):
            for r in x4:
                k(f"mov.b32 {r}, 0;")
            k(f"add.u32 {w_}, {gk}, {8 * j};")
            k(f"setp.lt.and.u32 {pw}, {w_}, {op.kk}, {rowpred};")
            k(f"add.u32 {w_}, {w_}, {rowbase};")
            k(f"@{pw} ld.global.v4.u32 {{{', '.join(map(str, x4))}}}, [{addr(k, base, w_, 2)}];")
            k(f"st.shared.v4.u32 [{sdst}+{16 * j}], {{{', '.join(map(str, x4))}}};")

    def scalar_load(base, rowbase, rowpred, sdst):
        for e in range(16):
            k(f"mov.b16 {hv[e]}, 0;")
            k(f"add.u32 {w_}, {gk}, {e};")
            k(f"setp.lt.and.u32 {pw}, {w_}, {op.kk}, {rowpred};")
            k(f"add.u32 {w_}, {w_}, {rowbase};")
            k(f"@{pw} ld.global.b16 {hv[e]}, [{addr(k, base, w_, 2)}];")
        store_packed(sdst)

    def either(vec, base, rowbase, rowpred, sdst):
        scalar, done = k.label("scalar"), k.label("loaded")
        k(f"@!{vec} bra {scalar};")
        vec_load(base, rowbase, rowpred, sdst)
        k(f"bra.uni {done};")
        k.place(scalar)
        scalar_load(base, rowbase, rowpred, sdst)
        k.place(done)

    if linear:
        either(va, op.x, ra, pa, sa)
    else:
        # Pixels: k = gk + e at offset ra + kofs(k), (c, py, px) walked incrementally.
        kofs, kpy, kpx = k.reg("u32", "kofs"), k.reg("u32", "kpy"), k.reg("u32", "kpx")
        start = k.label("pk")
        k(f"mov.u32 {kofs}, 0;")
        k(f"mov.u32 {kpy}, 0;")
        k(f"mov.u32 {kpx}, 0;")
        k(f"setp.ge.u32 {pw}, {gk}, {op.kk};")
        k(f"@{pw} bra {start};")
        off, py, px = op.patch.kofs(gk)
        k(f"mov.u32 {kofs}, {off};")
        k(f"mov.u32 {kpy}, {py};")
        k(f"mov.u32 {kpx}, {px};")
        k.place(start)
        for e in range(16):
            k(f"mov.b16 {hv[e]}, 0;")
            k(f"add.u32 {w_}, {gk}, {e};")
            k(f"setp.lt.and.u32 {pw}, {w_}, {op.kk}, {pa};")
            k(f"add.u32 {w_}, {ra}, {kofs};")
            k(f"@{pw} ld.global.b16 {hv[e]}, [{addr(k, op.x, w_, 2)}];")
            if e < 15:
                op.patch.step(walk, kofs, kpy, kpx, pw)
        store_packed(sa)
    either(vb, op.w, rb, pb, sb)
    # The loads branch per thread: converge the warp before .aligned ldmatrix / mma.
    k("bar.sync 0;")
    k("bar.warp.sync -1;")
    fa, fb = k.regs_n("b32", "fa", 8), k.regs_n("b32", "fb", 8)
    for ks in range(2):
        o = 32 * ks
        ldmatrix_x4(k, fa[:4], f"{ab}+{o}")
        ldmatrix_x4(k, fa[4:], f"{ab}+{o + 16 * ROW_B}")
        ldmatrix_x4(k, fb[:4], f"{bb}+{o}")
        ldmatrix_x4(k, fb[4:], f"{bb}+{o + 16 * ROW_B}")
        for mt in range(2):
            for nt in range(4):
                mma(k, acc[(4 * mt + nt) * 4:(4 * mt + nt) * 4 + 4], fa[4 * mt:4 * mt + 4],
                    fb[2 * nt:2 * nt + 2])
    k("bar.sync 0;")
    k(f"add.u32 {kt}, {kt}, {BK};")
    k(f"bra.uni {top};")
    k.place(end)
    # Accumulator (mt, nt, q): row m0 + 32wm + 16mt + lane/4 (+8), col n0 + 32wn + 8nt + 2(lane%4) (+1).
    er, ec = k.reg("u32", "er"), k.reg("u32", "ec")
    k(f"shl.b32 {er}, {wm}, 5;")
    k(f"add.u32 {er}, {er}, {m0};")
    k(f"shr.u32 {t}, {lane}, 2;")
    k(f"add.u32 {er}, {er}, {t};")
    k(f"shl.b32 {ec}, {wn}, 5;")
    k(f"add.u32 {ec}, {ec}, {n0};")
    k(f"and.b32 {t}, {lane}, 3;")
    k(f"shl.b32 {t}, {t}, 1;")
    k(f"add.u32 {ec}, {ec}, {t};")
    # Rows (mt, dr) and columns (nt, dc) of this thread's fragments.
    rows, cols = k.regs_n("u32", "row", 4), k.regs_n("u32", "col", 8)
    for mt in range(2):
        for half in range(2):
            k(f"add.u32 {rows[2 * mt + half]}, {er}, {16 * mt + 8 * half};")
    for nt in range(4):
        for dc in range(2):
            k(f"add.u32 {cols[2 * nt + dc]}, {ec}, {8 * nt + dc};")

    def acc_at(i, j):
        mt, half, nt, dc = i // 2, i % 2, j // 2, j % 2
        q = 2 * half + dc
        assert c_coords(q) == (8 * half, dc)
        return acc[(4 * mt + nt) * 4 + q]

    op.epilogue_grid("bf16", rows, cols, acc_at)
    return k
