"""f32 GEMM (linear_f32, patch_embed_f32): exact-f32 SIMT SGEMM.

Block: 256 threads, output tile 64×64, K step 16; tx = tid & 15, ty = tid >> 4.
Shared: As[16][68], Bs[16][68] f32, k-major (the +4 pad spreads the transposing
  stores over banks and keeps rows 16-byte aligned for ld.shared.v4).
Global → shared: with lx = tid & 7, ly = tid >> 3, thread loads A rows
  m0 + ly + 32i (i < 2) at k = k0 + lx + 8j (j < 2), and W rows n0 + ly + 32i at
  the same k; out-of-range rows or k are stored as 0, so any M, N, K work. A warp
  stores 8 k × 4 rows: words 68·k + row fall in 32 distinct banks (the +4 pad
  makes 68·k = 4k mod 32), where 16 k × 2 rows would pair k with k + 8.
Registers: the thread owns the 4×4 outputs rows m0 + 4ty + i, cols n0 + 4tx + j;
  per k it reads a 4-vector of A and of B from shared memory and does 16 FMAs.
Grid: (ceil(N / 64), ceil(M / 64))."""

from ..asm import Kernel
from ..lib import ZERO, addr, lane_warp
from .gemm_common import LINEAR_PARAMS, PATCH_PARAMS, Operands

TILE, BK, PAD = 64, 16, 68


def gemm_f32(mode):
    name = f"{'linear' if mode == 'linear' else 'patch_embed'}_f32"
    k = Kernel(mode if mode == "linear" else "patch_embed", name, 256,
               LINEAR_PARAMS if mode == "linear" else PATCH_PARAMS,
               "linear" if mode == "linear" else "patch_embed",
               doc=f"{name}: exact-f32 SIMT GEMM, 64×64 tiles, 4×4 outputs per thread.")
    k.const("TILE_M", TILE)
    k.const("TILE_N", TILE)
    op = Operands(k, mode)
    As, Bs = k.shared("As", 4 * BK * PAD), k.shared("Bs", 4 * BK * PAD)
    tid, _, _ = lane_warp(k)
    tx, ty, m0, n0 = (k.reg("u32", s) for s in ("tx", "ty", "m0", "n0"))
    k(f"and.b32 {tx}, {tid}, 15;")
    k(f"shr.u32 {ty}, {tid}, 4;")
    k(f"mov.u32 {n0}, %ctaid.x;")
    k(f"shl.b32 {n0}, {n0}, 6;")
    k(f"mov.u32 {m0}, %ctaid.y;")
    k(f"shl.b32 {m0}, {m0}, 6;")
    lx, ly = k.reg("u32", "lx"), k.reg("u32", "ly")
    k(f"and.b32 {lx}, {tid}, 7;")
    k(f"shr.u32 {ly}, {tid}, 3;")
    pa, pb, ra, rb = [], [], [], []
    u = k.reg("u32", "u")
    for i in range(2):
        p, q = k.reg("pred", f"pa{i}"), k.reg("pred", f"pb{i}")
        k(f"add.u32 {u}, {m0}, {ly};")
        k(f"add.u32 {u}, {u}, {32 * i};")
        k(f"setp.lt.u32 {p}, {u}, {op.m};")
        if mode == "linear":
            r = k.reg("u32", f"ra{i}")
            k(f"mul.lo.u32 {r}, {u}, {op.kk};")
        else:
            r = op.patch.rowbase(u)
        s = k.reg("u32", f"rb{i}")
        k(f"add.u32 {u}, {n0}, {ly};")
        k(f"add.u32 {u}, {u}, {32 * i};")
        k(f"setp.lt.u32 {q}, {u}, {op.n};")
        k(f"mul.lo.u32 {s}, {u}, {op.kk};")
        pa.append(p), pb.append(q), ra.append(r), rb.append(s)
    sa, sb = k.reg("u32", "sa"), k.reg("u32", "sb")
    k(f"mad.lo.u32 {u}, {lx}, {PAD}, {ly};")
    k(f"shl.b32 {u}, {u}, 2;")
    k(f"mov.u32 {sa}, {As};")
    k(f"add.u32 {sa}, {sa}, {u};")
    k(f"mov.u32 {sb}, {Bs};")
    k(f"add.u32 {sb}, {sb}, {u};")
    acc = k.regs_n("f32", "c", 16)
    for r in acc:
        k(f"mov.f32 {r}, {ZERO};")
    kt, gk, kofs = k.reg("u32", "kt"), k.reg("u32", "gk"), k.reg("u32", "kofs")
    pk, pq = k.reg("pred", "pk"), k.reg("pred", "pq")
    top, end = k.label("kloop"), k.label("kdone")
    k(f"mov.u32 {kt}, 0;")
    k.place(top)
    k(f"setp.ge.u32 {pq}, {kt}, {op.kk};")
    k(f"@{pq} bra {end};")
    v = k.reg("f32", "v")
    for j in range(2):
        k(f"add.u32 {gk}, {kt}, {lx};")
        if j:
            k(f"add.u32 {gk}, {gk}, 8;")
        k(f"setp.lt.u32 {pk}, {gk}, {op.kk};")
        if mode == "patch":
            skip = k.label("kofs")
            k(f"mov.u32 {kofs}, 0;")
            k(f"@!{pk} bra {skip};")
            off, _, _ = op.patch.kofs(gk)
            k(f"mov.u32 {kofs}, {off};")
            k.place(skip)
        else:
            k(f"mov.u32 {kofs}, {gk};")
        for i in range(2):
            so = 4 * (8 * j * PAD + 32 * i)  # k + 8j, row + 32i
            k(f"mov.f32 {v}, {ZERO};")
            k(f"and.pred {pq}, {pk}, {pa[i]};")
            k(f"add.u32 {u}, {ra[i]}, {kofs};")
            k(f"@{pq} ld.global.f32 {v}, [{addr(k, op.x, u, 4)}];")
            k(f"st.shared.f32 [{sa}+{so}], {v};")
            k(f"mov.f32 {v}, {ZERO};")
            k(f"and.pred {pq}, {pk}, {pb[i]};")
            k(f"add.u32 {u}, {rb[i]}, {gk};")
            k(f"@{pq} ld.global.f32 {v}, [{addr(k, op.w, u, 4)}];")
            k(f"st.shared.f32 [{sb}+{so}], {v};")
    k("bar.sync 0;")
    a_row, b_row = k.reg("u32", "arow"), k.reg("u32", "brow")
    k(f"shl.b32 {u}, {ty}, 4;")
    k(f"mov.u32 {a_row}, {As};")
    k(f"add.u32 {a_row}, {a_row}, {u};")
    k(f"shl.b32 {u}, {tx}, 4;")
    k(f"mov.u32 {b_row}, {Bs};")
    k(f"add.u32 {b_row}, {b_row}, {u};")
    av, bv = k.regs_n("f32", "a", 4), k.regs_n("f32", "b", 4)
    for kk in range(BK):
        k(f"ld.shared.v4.f32 {{{', '.join(map(str, av))}}}, [{a_row}+{kk * 4 * PAD}];")
        k(f"ld.shared.v4.f32 {{{', '.join(map(str, bv))}}}, [{b_row}+{kk * 4 * PAD}];")
        for i in range(4):
            for j in range(4):
                k(f"fma.rn.f32 {acc[4 * i + j]}, {av[i]}, {bv[j]}, {acc[4 * i + j]};")
    k("bar.sync 0;")
    k(f"add.u32 {kt}, {kt}, {BK};")
    k(f"bra.uni {top};")
    k.place(end)
    r0, c0 = k.reg("u32", "r0"), k.reg("u32", "c0")
    k(f"shl.b32 {r0}, {ty}, 2;")
    k(f"add.u32 {r0}, {r0}, {m0};")
    k(f"shl.b32 {c0}, {tx}, 2;")
    k(f"add.u32 {c0}, {c0}, {n0};")
    rows, cols = k.regs_n("u32", "row", 4), k.regs_n("u32", "col", 4)
    for i in range(4):
        k(f"add.u32 {rows[i]}, {r0}, {i};")
        k(f"add.u32 {cols[i]}, {c0}, {i};")
    op.epilogue_grid("f32", rows, cols, lambda i, j: acc[4 * i + j])
    return k
