"""attention_{bf16,f32}_hd{HD}: attention on tensor cores, FlashAttention-2 style.

attention_bf16_hd{HD}: bf16,
for head dims hd ≤ HD (HD = 16, 32, …, 128: hd rounded up to a multiple of 16;
hd itself a multiple of 8, so every row is whole 16-byte chunks).

Block: 4 warps (128 threads) own BR = 128 query rows, 32 per warp (two m16
  tiles, MT = 2: every K and V fragment read from shared memory feeds two mma,
  as in FlashAttention-2's 128-row blocks — with 16 rows per warp the ldmatrix
  traffic alone would take more shared-memory cycles than the mma take tensor
  cycles); grid (⌈max q_len / 128⌉, H, B). Keys and values stream through in
  tiles of BC = 64.
Shared (dynamic): Q [BR][HD], K [2][64][HD], V [2][64][HD] bf16, each row padded
  by 16 bytes (stride 2·HD + 16: the 8 rows an ldmatrix phase reads start in 8
  distinct bank groups). Filled by cp.async, 16 bytes a copy; rows past the
  sequence and columns past hd are zero-filled (nothing is read there). Where a
  row is not a multiple of 8 chunks (HD not a multiple of 64), the copies walk
  the padded rows chunk by chunk, pad chunks included (zero-filled, never read):
  8 neighbouring lanes then write 8 consecutive chunks, free of bank conflicts,
  where walking only the data chunks would wrap a quarter-warp across the pad.
Pipeline: Q and K/V tile 0 are requested first; while tile j is computed, tile
  j + 1 is already in flight into the other stage (cp.async groups, wait_group 1).
Per tile, warp w, for each of its m16 tiles (rows 32w + 16t, t < MT):
  S = Q·Kᵀ (16 × 64, f32): HD/16 k-steps × 8 key n-tiles of mma.m16n8k16 — Q's A
    fragments stay in registers for the whole kernel up to HD 80 and are re-read
    by ldmatrix each k-step above (registers), K's B fragments come from
    ldmatrix.x4 (K rows are the "col" B operand as stored), shared by the m-tiles;
  scores scaled by hd^-0.5·log2(e); keys past kv_len −∞ (last tile only);
  online softmax per row (a lane holds rows g and g + 8 of each m-tile): m_new =
    max(m, rowmax) over the quad; m_ref = m_new, or 0 when m_new = −∞ (the −∞
    guard: no NaN from −∞ − −∞ when a whole tile scores −∞); α = 2^(m − m_ref),
    P = 2^(S − m_ref), l = α·l + Σ P; O ·= α;
  P stays in registers: the C fragments of two adjacent key n-tiles, rounded to
    bf16 pairs, are exactly the A fragment of one 16-key k-step;
  O += P·V (16 × HD): 4 k-steps × HD/8 dim n-tiles, V's B fragments from
    ldmatrix.x4.trans (V rows are keys: transposed, they are the "col" operand),
    shared by the m-tiles.
End: l summed over the quad, O / l rounded to bf16 once, stored as bf16 pairs for
  rows < q_len and columns < hd.

attention_f32_hd{HD}: the same kernel in f32, on tensor cores in 3xTF32 (see
frag.py: x = big + small, a product big·big + big·small + small·big, three
mma.m16n8k8.tf32), for head dims hd ≤ HD (HD = 32, 64, 72, 80, 96, 128; hd a
multiple of 4, whole 16-byte chunks). What changes:
- Tiles of BC = 32 keys (rows of 4·HD + 16 bytes: 64-key stages would leave one
  block an SM from HD 80, and 64 more score registers beside the accumulators);
  shared (128 + 4·32) rows, 132 KiB at HD 128 (an A100 takes it).
- Q·Kᵀ in HD/8 k-steps of 8: ldmatrix over f32 rows gives the tf32 A (Q) and B
  (K) fragments with the bf16 lane addresses (a 16-byte row of an 8×8 b16 matrix
  is 4 f32); Q is re-read and split each k-step.
- P stays in registers: with the 8 keys of a score n-tile relabelled (A column c
  ↔ key 2c, c + 4 ↔ key 2c + 1), its C fragment is the A fragment of one 8-key
  step as it stands: a0..a3 = c0, c2, c1, c3. V's B fragment is then
  V[2c][8n + g] and V[2c + 1][8n + g]: two scalar shared loads, conflict-free at
  the row stride of HD + 4 words (HD a multiple of 8).
- ±inf and NaN: a product's cross terms would turn inf·(small = 0) into NaN. Each
  thread scans the K/V chunks it copied (one FFMA a word: 0·x + acc is NaN only
  for a non-finite x) and a barrier with an OR reduction (bar.red.or) tells the
  block: such a tile takes the exact split for K and V (frag.py), the others the
  quick one (2 instructions a value, small read truncated by the mma). Q and P
  always take the quick one: a non-finite query value makes its row NaN either
  way, and P = 2^(s − max) is never ±inf.
- The output is stored as f32 pairs."""

from ..asm import Kernel
from ..frag import (c_coords, cp_async_16, cp_commit, cp_wait, ldmatrix_x4, mma, mma_3xtf32, padded_stride,
                    split_tf32, split_tf32_specials)
from ..lib import NEG_INF, SIZE, ZERO, addr, lane_warp
from .attention_common import (ATTENTION_PARAMS, attention_module, column_bases, online_softmax_row,
                               query_block, softmax_state, store_output_row)

WARPS, MT = 4, 2
BR = 16 * MT * WARPS  # query rows per block
# Keys per K/V tile: 64 for bf16; 32 for f32, whose rows are twice as long (the
# shared memory of 64-key stages would leave one block an SM from hd 80) and whose
# scores would otherwise need 64 more registers beside the f32 accumulators.
BC = {"bf16": 64, "f32": 32}
HEAD_DIMS = {"bf16": (16, 32, 48, 64, 80, 96, 112, 128),
             # f32 k-steps are 8 wide: so400m's hd 72 runs unpadded.
             "f32": (32, 64, 72, 80, 96, 128)}
# Largest head dim whose Q fragments stay in registers for the whole kernel
# (above it they would push the 32-row accumulators past 255 registers).
Q_IN_REGS_MAX_HD = 64


def chunk_passes(k, tid, HD, SB, rows, z=2):
    """How the 128 threads copy a tile of `rows` rows of HD elements of z bytes into
    shared rows of stride SB, 16 bytes a copy: per pass, (row, column element,
    column-inside-hd predicate, shared offset: a register, or None for
    `so0 + 2048·pass`).

    Rows of a multiple of 8 chunks: copy c = tid + 128·pass is chunk c % CPR of row
    c / CPR (a quarter-warp's 8 copies fill 8 consecutive chunks of one row).
    Otherwise the copies walk the padded rows, pad chunk included (CPR + 1 slots
    a row): copy c lands at byte 16·c, so any 8 neighbouring copies hit 8
    distinct bank groups; the pad slot's column is ≥ HD ≥ hd, so it is zero-filled
    and nothing is read for it."""
    CPR = HD * z // 16
    padded = CPR % 8 != 0
    slots = CPR + 1 if padded else CPR
    total = rows * slots
    npass = -(-total // (32 * WARPS))
    so0 = None
    if padded:
        assert SB == 16 * slots
        so0 = k.reg("u32", "so0")
        k(f"shl.b32 {so0}, {tid}, 4;")
    passes, t = [], None if padded else k.reg("u32", "pt")
    for i in range(npass):
        c, r, col = k.reg("u32", f"ch{i}"), k.reg("u32", f"row{i}"), k.reg("u32", f"col{i}")
        k(f"add.u32 {c}, {tid}, {32 * WARPS * i};")
        k(f"div.u32 {r}, {c}, {slots};")
        k(f"rem.u32 {col}, {c}, {slots};")
        so = None
        if not padded:
            so = k.reg("u32", f"so{i}")
            k(f"mul.lo.u32 {so}, {r}, {SB};")
            k(f"shl.b32 {t}, {col}, 4;")
            k(f"add.u32 {so}, {so}, {t};")
        k(f"shl.b32 {col}, {col}, {(16 // z).bit_length() - 1};")  # column element
        cv = k.reg("pred", f"cv{i}")
        k(f"setp.lt.u32 {cv}, {col}, {k.param('hd')};")
        passes.append((r, col, cv, so))
    return passes, so0, total


def own_chunks(k, tid, HD, SB, z, sdst, tile_rows):
    """The 16-byte chunks this thread copies into a tile at `sdst` (chunk_passes'
    walk): [(row, column element, column-inside-hd predicate, address, guard)],
    `address()` emitting the chunk's shared address where the caller needs it,
    `guard` the last pass's predicate (None: every thread copies one)."""
    passes, so0, total = chunk_passes(k, tid, HD, SB, tile_rows, z)
    last_guard = None
    if total % (32 * WARPS):
        last_guard = k.reg("pred", "lastg")
        k(f"setp.lt.u32 {last_guard}, {tid}, {total % (32 * WARPS)};")
    sa0 = None
    if so0 is not None:
        sa0 = k.reg("u32", "sa0")
        k(f"add.u32 {sa0}, {sdst}, {so0};")

    def dst(i, so):
        """The chunk's shared address (emitted where the caller asks for it)."""
        if so is None:
            return f"{sa0}+{16 * 32 * WARPS * i}" if i else f"{sa0}"
        a = k.reg("u32", "sa")
        k(f"add.u32 {a}, {sdst}, {so};")
        return a
    return [(r, col, cv, (lambda i=i, so=so: dst(i, so)), last_guard if i == len(passes) - 1 else None)
            for i, (r, col, cv, so) in enumerate(passes)]


def scan_nonfinite(k, acc, chunks):
    """acc ← Σ 0·x over the f32 words of this thread's copied chunks: acc (0 or
    NaN) is NaN exactly when one of them is ±inf or NaN (0·x is ±0 for every
    finite x). One FFMA a word, into four chains (one a vector lane) summed at
    the end, so the scan waits a quarter of a 40-long FFMA chain; the thread's own
    cp.async copies are visible to it after its wait_group."""
    x = k.regs_n("f32", "nfx", 4)
    part = [acc] + k.regs_n("f32", "nfa", 3)
    for r in part:
        k(f"mov.f32 {r}, {ZERO};")
    for _, _, _, dst, guard in chunks:
        g = f"@{guard} " if guard is not None else ""
        k(f"{g}ld.shared.v4.f32 {{{', '.join(map(str, x))}}}, [{dst()}];")
        for a, r in zip(part, x):
            k(f"{g}fma.rn.f32 {a}, {r}, {ZERO}, {a};")
    k(f"add.f32 {part[0]}, {part[0]}, {part[1]};")
    k(f"add.f32 {part[2]}, {part[2]}, {part[3]};")
    k(f"add.f32 {acc}, {part[0]}, {part[2]};")


def v_banks_conflict_free(HD):
    """The f32 P·V B fragments: lane (g, c) reads word (2c + i)·(HD + 4) + g of a V
    tile (i = 0, 1): 32 distinct banks for each i."""
    sw = HD + 4
    return all(len({((2 * (l % 4) + i) * sw + l // 4) % 32 for l in range(32)}) == 32 for i in (0, 1))


def attention_fa2(HD, dt="bf16"):
    f32 = dt == "f32"
    z = SIZE[dt]
    bc = BC[dt]
    lbc = bc.bit_length() - 1
    SB = padded_stride(z * HD)
    KC = HD // 16  # k-steps of Q·Kᵀ (bf16; f32: HD / 8 of 8)
    q_regs = not f32 and HD <= Q_IN_REGS_MAX_HD
    smem = (BR + 4 * bc) * SB
    if f32:
        assert HD % 8 == 0 and v_banks_conflict_free(HD), HD
    what = "3xTF32 f32" if f32 else "bf16"
    k = Kernel(attention_module(dt), f"attention_{dt}_hd{HD}", 32 * WARPS, ATTENTION_PARAMS, "attention",
               doc=f"attention_{dt}_hd{HD}: FlashAttention-2-style {what} attention on tensor cores,\n"
                   f"hd ≤ {HD}, {BR} query rows per block ({16 * MT} per warp), {bc}-key K/V tiles "
                   f"double-buffered.",
               dyn_smem=smem)
    k.const("ROWS", BR)
    k.const("HD", HD)
    k.const("DYN_SMEM", smem)
    q, kk, v = column_bases(k, z)
    out = k.param("out")
    hd, ldq, ldkv, ldo, scale = (k.param(p) for p in ("hd", "ldq", "ldkv", "ldo", "scale"))
    tid, lane, warp = lane_warp(k)
    qb, (q0, kv0, o0, ql, kl), exit_, hoff, p = query_block(k, BR)
    t, u = k.reg("u32", "t"), k.reg("u32", "u")
    sQ = k.reg("u32", "sQ")
    k(f"mov.u32 {sQ}, dyn_smem;")

    def load_tile(base, ld, row0, nrows, sdst, tile_rows):
        """cp.async rows row0 .. row0 + tile_rows − 1 (valid below nrows) of a
        [.., ld] tensor's head columns into the tile at shared address sdst.
        The pass registers are recomputed per call (a few integer instructions)
        rather than held across the loop, where the accumulators need the room."""
        for r, col, cv, dst, guard in own_chunks(k, tid, HD, SB, z, sdst, tile_rows):
            inside, e = k.reg("pred", "in"), k.reg("u32", "e")
            k(f"setp.lt.u32 {inside}, {r}, {nrows};")
            k(f"and.pred {inside}, {inside}, {cv};")
            k(f"add.u32 {e}, {row0}, {r};")
            k(f"mad.lo.u32 {e}, {e}, {ld}, {hoff};")
            k(f"add.u32 {e}, {e}, {col};")
            g = addr(k, base, e, z, "g")
            k(f"@!{inside} mov.b64 {g}, {base};")  # nothing is read; keep it a valid address
            cp_async_16(k, dst(), g, inside, guard=guard)

    # Q tile, then K/V tile 0.
    qrow0, qleft = k.reg("u32", "qrow0"), k.reg("u32", "qleft")
    k(f"add.u32 {qrow0}, {q0}, {qb};")
    k(f"sub.u32 {qleft}, {ql}, {qb};")
    load_tile(q, ldq, qrow0, qleft, sQ, BR)
    cp_commit(k)
    sK, sV = k.reg("u32", "sK"), k.reg("u32", "sV")
    k(f"add.u32 {sK}, {sQ}, {BR * SB};")
    k(f"add.u32 {sV}, {sK}, {2 * bc * SB};")
    load_tile(kk, ldkv, kv0, kl, sK, bc)
    load_tile(v, ldkv, kv0, kl, sV, bc)
    cp_commit(k)
    cp_wait(k, 1)
    k("bar.sync 0;")

    # Q fragments of m-tile mt: rows 32w + 16mt + (lane & 15), k offset 16·(lane >> 4) bytes.
    qa = k.reg("u32", "qa")
    k(f"mul.lo.u32 {t}, {warp}, {16 * MT};")
    k(f"and.b32 {u}, {lane}, 15;")
    k(f"add.u32 {t}, {t}, {u};")
    k(f"mul.lo.u32 {qa}, {t}, {SB};")
    k(f"shr.u32 {u}, {lane}, 4;")
    k(f"shl.b32 {u}, {u}, 4;")
    k(f"add.u32 {qa}, {qa}, {u};")
    k(f"add.u32 {qa}, {qa}, {sQ};")
    if q_regs:
        qf = [[k.regs_n("b32", f"q{mt}_{c}_", 4) for c in range(KC)] for mt in range(MT)]
        for mt in range(MT):
            for c in range(KC):
                ldmatrix_x4(k, qf[mt][c], f"{qa}+{mt * 16 * SB + 32 * c}")
    else:
        qt = [k.regs_n("b32", f"q{mt}_", 4) for mt in range(MT)]

    # ldmatrix lane offsets: K (B operand, two key n-tiles per x4) and V (.trans;
    # f32: the scalar B-fragment loads' lane offset, below).
    klo, vlo = k.reg("u32", "klo"), k.reg("u32", "vlo")
    k(f"and.b32 {t}, {lane}, 7;")
    k(f"shr.u32 {u}, {lane}, 4;")
    k(f"shl.b32 {u}, {u}, 3;")
    k(f"add.u32 {t}, {t}, {u};")
    k(f"mul.lo.u32 {klo}, {t}, {SB};")
    k(f"shr.u32 {u}, {lane}, 3;")
    k(f"and.b32 {u}, {u}, 1;")
    k(f"shl.b32 {u}, {u}, 4;")
    k(f"add.u32 {klo}, {klo}, {u};")
    if f32:
        # V's tf32 B fragment of key step kk, dim tile n (keys relabelled, see the
        # module doc): b0 = V[8kk + 2c][8n + g], b1 = V[8kk + 2c + 1][8n + g].
        k(f"and.b32 {t}, {lane}, 3;")
        k(f"shl.b32 {t}, {t}, 1;")
        k(f"mul.lo.u32 {vlo}, {t}, {SB};")
        k(f"shr.u32 {u}, {lane}, 2;")
        k(f"shl.b32 {u}, {u}, 2;")
        k(f"add.u32 {vlo}, {vlo}, {u};")
    else:
        k(f"and.b32 {t}, {lane}, 7;")
        k(f"shr.u32 {u}, {lane}, 3;")
        k(f"and.b32 {u}, {u}, 1;")
        k(f"shl.b32 {u}, {u}, 3;")
        k(f"add.u32 {t}, {t}, {u};")
        k(f"mul.lo.u32 {vlo}, {t}, {SB};")
        k(f"shr.u32 {u}, {lane}, 4;")
        k(f"shl.b32 {u}, {u}, 4;")
        k(f"add.u32 {vlo}, {vlo}, {u};")
    c2 = k.reg("u32", "c2")  # 2·(lane % 4): this lane's first column in a C fragment
    k(f"and.b32 {c2}, {lane}, 3;")
    k(f"shl.b32 {c2}, {c2}, 1;")

    O = [[k.regs_n("f32", f"o{mt}_{n}_", 4) for n in range(HD // 8)] for mt in range(MT)]
    for frag in (f for om in O for f in om):
        for r in frag:
            k(f"mov.f32 {r}, {ZERO};")
    # Running max and sum of rows g (index 2mt) and g + 8 (2mt + 1) of each m-tile.
    m, lsum = softmax_state(k, 2 * MT)
    S = [[k.regs_n("f32", f"s{mt}_{n}_", 4) for n in range(bc // 8)] for mt in range(MT)]
    kb = k.regs_n("b32", "kb", 4)
    if not f32:
        P = [[k.regs_n("b32", f"p{mt}_{c}_", 4) for c in range(bc // 16)] for mt in range(MT)]

    ntiles, j, stage = k.reg("u32", "ntiles"), k.reg("u32", "j"), k.reg("u32", "stage")
    k(f"add.u32 {ntiles}, {kl}, {bc - 1};")
    k(f"shr.u32 {ntiles}, {ntiles}, {lbc};")
    k(f"mov.u32 {j}, 0;")
    k(f"mov.u32 {stage}, 0;")
    top, done = k.label("tile"), k.label("tiles_done")
    k.place(top)
    k(f"setp.ge.u32 {p}, {j}, {ntiles};")
    k(f"@{p} bra {done};")
    # Request tile j + 1 into the other stage (an empty group on the last tile keeps
    # the wait below uniform).
    nxt, skip_load = k.reg("u32", "nxt"), k.label("no_next")
    k(f"add.u32 {nxt}, {j}, 1;")
    k(f"setp.ge.u32 {p}, {nxt}, {ntiles};")
    k(f"@{p} bra {skip_load};")
    krow, kleft, so = k.reg("u32", "krow"), k.reg("u32", "kleft"), k.reg("u32", "so")
    k(f"shl.b32 {krow}, {nxt}, {lbc};")
    k(f"sub.u32 {kleft}, {kl}, {krow};")
    k(f"add.u32 {krow}, {krow}, {kv0};")
    k(f"xor.b32 {so}, {stage}, 1;")
    k(f"mul.lo.u32 {so}, {so}, {bc * SB};")
    sKn, sVn = k.reg("u32", "sKn"), k.reg("u32", "sVn")
    k(f"add.u32 {sKn}, {sK}, {so};")
    k(f"add.u32 {sVn}, {sV}, {so};")
    load_tile(kk, ldkv, krow, kleft, sKn, bc)
    load_tile(v, ldkv, krow, kleft, sVn, bc)
    k.place(skip_load)
    cp_commit(k)
    cp_wait(k, 1)
    kbase, vbase = k.reg("u32", "kbase"), k.reg("u32", "vbase")
    k(f"mul.lo.u32 {so}, {stage}, {bc * SB};")
    k(f"add.u32 {kbase}, {sK}, {so};")
    k(f"add.u32 {vbase}, {sV}, {so};")
    if f32:
        # Whether this K/V tile holds ±inf or NaN anywhere (every thread scans what
        # it copied; the barrier ORs it over the block): then its K and V take the
        # exact split, a block-uniform branch.
        acc, nf = k.reg("f32", "tnf"), k.reg("pred", "tile_nf")
        scan_nonfinite(k, acc, own_chunks(k, tid, HD, SB, z, kbase, bc) + own_chunks(k, tid, HD, SB, z, vbase, bc))
        k(f"setp.nan.f32 {p}, {acc}, {acc};")
        k(f"bar.red.or.pred {nf}, 0, {p};")
    else:
        k("bar.sync 0;")
    k(f"add.u32 {kbase}, {kbase}, {klo};")
    k(f"add.u32 {vbase}, {vbase}, {vlo};")

    # S = Q·Kᵀ: each K fragment feeds the MT m-tiles.
    for frag in (f for sm in S for f in sm):
        for r in frag:
            k(f"mov.f32 {r}, {ZERO};")
    if f32:
        def qk_tf32(split):
            for c in range(HD // 8):
                for mt in range(MT):
                    ldmatrix_x4(k, qt[mt], f"{qa}+{mt * 16 * SB + 32 * c}")
                qs = [[split_tf32(k, x, "qs", round_small=False) for x in qt[mt]] for mt in range(MT)]
                for np_ in range(bc // 16):
                    ldmatrix_x4(k, kb, f"{kbase}+{np_ * 16 * SB + 32 * c}")
                    ks = [split(k, x, "ks") for x in kb]
                    for mt in range(MT):
                        mma_3xtf32(k, S[mt][2 * np_], qs[mt], ks[:2])
                        mma_3xtf32(k, S[mt][2 * np_ + 1], qs[mt], ks[2:])
        tf32_branches(k, nf, qk_tf32, "qk")
    else:
        for c in range(KC):
            if q_regs:
                qc = [qf[mt][c] for mt in range(MT)]
            else:
                for mt in range(MT):
                    ldmatrix_x4(k, qt[mt], f"{qa}+{mt * 16 * SB + 32 * c}")
                qc = qt
            for np_ in range(bc // 16):
                ldmatrix_x4(k, kb, f"{kbase}+{np_ * 16 * SB + 32 * c}")
                for mt in range(MT):
                    mma(k, S[mt][2 * np_], qc[mt], kb[:2])
                    mma(k, S[mt][2 * np_ + 1], qc[mt], kb[2:])
    for frag in (f for sm in S for f in sm):
        for r in frag:
            k(f"mul.f32 {r}, {r}, {scale};")
    # Keys past kv_len score −∞ (only the last tile can hold any).
    left, full = k.reg("u32", "left"), k.label("full_tile")
    k(f"shl.b32 {left}, {j}, {lbc};")
    k(f"sub.u32 {left}, {kl}, {left};")
    k(f"setp.ge.u32 {p}, {left}, {bc};")
    k(f"@{p} bra {full};")
    col = k.reg("u32", "kcol")
    for n in range(bc // 8):
        for qq in range(4):
            _, dc = c_coords(qq)
            k(f"add.u32 {col}, {c2}, {8 * n + dc};")
            k(f"setp.ge.u32 {p}, {col}, {left};")
            for mt in range(MT):
                k(f"@{p} mov.f32 {S[mt][n][qq]}, {NEG_INF};")
    k.place(full)

    # Online softmax, per m-tile: rows g (registers 0, 1) and g + 8 (registers 2, 3).
    for mt in range(MT):
        for half in range(2):
            ri = 2 * mt + half
            alpha = k.reg("f32", "alpha")
            online_softmax_row(k, S[mt], half, m[ri], lsum[ri], alpha)
            for n in range(HD // 8):
                for qq in (2 * half, 2 * half + 1):
                    k(f"mul.f32 {O[mt][n][qq]}, {O[mt][n][qq]}, {alpha};")
        if not f32:
            # P in registers as A fragments: key chunk c = n-tiles 2c (a0, a1) and 2c + 1 (a2, a3).
            for c in range(bc // 16):
                lo, hi = S[mt][2 * c], S[mt][2 * c + 1]
                for dst, (x, y) in zip(P[mt][c], ((lo[0], lo[1]), (lo[2], lo[3]), (hi[0], hi[1]), (hi[2], hi[3]))):
                    k(f"cvt.rn.bf16x2.f32 {dst}, {y}, {x};")
    # O += P·V: each V fragment feeds the MT m-tiles.
    if f32:
        vb = k.regs_n("b32", "vb", 2)

        def pv_tf32(split):
            for ks in range(bc // 8):
                # P's C fragment of key n-tile ks as a tf32 A fragment, keys
                # relabelled: A column c ↔ key 2c, c + 4 ↔ 2c + 1.
                # P is never ±inf (2^(s − max) ≤ 1): the quick split serves both
                # paths (a NaN stays NaN in small).
                ps = [[split_tf32(k, S[mt][ks][qq], "ps", round_small=False) for qq in (0, 2, 1, 3)]
                      for mt in range(MT)]
                for n in range(HD // 8):
                    for i in range(2):
                        k(f"ld.shared.b32 {vb[i]}, [{vbase}+{(8 * ks + i) * SB + 32 * n}];")
                    vs = [split(k, x, "vs") for x in vb]
                    for mt in range(MT):
                        mma_3xtf32(k, O[mt][n], ps[mt], vs)
        tf32_branches(k, nf, pv_tf32, "pv")
    else:
        for c in range(bc // 16):
            for dp in range(HD // 16):
                ldmatrix_x4(k, kb, f"{vbase}+{c * 16 * SB + 32 * dp}", trans=True)
                for mt in range(MT):
                    mma(k, O[mt][2 * dp], P[mt][c], kb[:2])
                    mma(k, O[mt][2 * dp + 1], P[mt][c], kb[2:])
    k("bar.sync 0;")  # this stage is read before tile j + 2 is loaded into it
    k(f"xor.b32 {stage}, {stage}, 1;")
    k(f"add.u32 {j}, {j}, 1;")
    k(f"bra.uni {top};")
    k.place(done)
    cp_wait(k, 0)

    # out = O / l, rows < q_len, columns < hd.
    grow = k.reg("u32", "grow")
    k(f"shr.u32 {t}, {lane}, 2;")
    k(f"mul.lo.u32 {grow}, {warp}, {16 * MT};")
    k(f"add.u32 {grow}, {grow}, {t};")
    k(f"add.u32 {grow}, {grow}, {qb};")  # query row (in the sequence) of m-tile 0's registers 0, 1
    for mt in range(MT):
        for half in range(2):
            row = k.reg("u32", "orow")
            k(f"add.u32 {row}, {grow}, {16 * mt + 8 * half};")
            store_output_row(k, O[mt], half, lsum[2 * mt + half], row, (out, o0, ql, ldo, hoff), c2, hd=hd, dt=dt)
    k.place(exit_)
    return k


def tf32_branches(k, nonfinite, body, stem):
    """body(split) twice: with the quick split where the block-uniform predicate
    `nonfinite` is false, with the exact one (±inf, NaN) where it is true."""
    exact, join = k.label(f"{stem}_exact"), k.label(f"{stem}_done")
    k(f"@{nonfinite} bra.uni {exact};")
    body(lambda k_, x, stem_: split_tf32(k_, x, stem_, round_small=False))
    k(f"bra.uni {join};")
    k.place(exact)
    body(lambda k_, x, stem_: split_tf32_specials(k_, x, stem_, round_small=False))
    k.place(join)


def kernels(dt):
    return [attention_fa2(hd, dt) for hd in HEAD_DIMS[dt]]
