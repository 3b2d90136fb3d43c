"""Tensor-core fragments, written once: `mma.sync.aligned.m16n8k16.row.col` with
bf16 inputs and f32 accumulators (and m16n8k8 tf32 for f32 as 3xTF32, below),
the `ldmatrix` forms that feed them, `cp.async`
with zero-fill, and the shared-memory layouts (XOR swizzle, padded rows) that
keep `ldmatrix` free of bank conflicts.

Fragment layouts of m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16"),
lane l, g = l / 4, c = l % 4; a register holds two bf16, the lower column in the
low half:
  A (16×16, row-major), 4 registers: a0 = A[g][2c, 2c+1], a1 = A[g+8][2c, 2c+1],
      a2 = A[g][2c+8, 2c+9], a3 = A[g+8][2c+8, 2c+9];
  B (16×8, "col": B[k][n] with k contiguous per n), 2 registers:
      b0 = B[2c, 2c+1][g], b1 = B[2c+8, 2c+9][g];
  C, D (16×8 f32), 4 registers: c0 = C[g][2c], c1 = C[g][2c+1],
      c2 = C[g+8][2c], c3 = C[g+8][2c+1].
`ldmatrix.m8n8.x4` loads four 8×8 b16 matrices; lanes 8i..8i+7 give the row
addresses of matrix i, and register i of lane l receives row l/4, columns
2(l%4), 2(l%4)+1 of matrix i (with `.trans`, the transposed matrix: column l/4,
rows 2(l%4), 2(l%4)+1).
"""


def c_coords(q):
    """(row offset, column offset) of accumulator register q within an m16n8 tile,
    relative to (g, 2c): q0 (0, 0), q1 (0, 1), q2 (8, 0), q3 (8, 1)."""
    return (8 * (q >> 1), q & 1)


def mma(k, d, a, b, c=None):
    """d ← a·b + c (c defaults to d): one m16n8k16 bf16 mma, f32 accumulate."""
    c = d if c is None else c
    k(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        f"{{{', '.join(map(str, d))}}}, {{{', '.join(map(str, a))}}}, "
        f"{{{', '.join(map(str, b))}}}, {{{', '.join(map(str, c))}}};"
    )


# -- f32 on tensor cores: 3xTF32 ------------------------------------------------
#
# mma.m16n8k8 with .tf32 operands (PTX ISA "Matrix Fragments for mma.m16n8k8",
# .tf32; lane l, g = l / 4, c = l % 4; one element a register):
#   A (16×8): a0 = A[g][c], a1 = A[g+8][c], a2 = A[g][c+4], a3 = A[g+8][c+4];
#   B (8×8, B[k][n]): b0 = B[c][g], b1 = B[c+4][g]; C, D as m16n8k16.
# Over rows of f32 in shared memory (k contiguous), `ldmatrix` (non-trans) gives
# exactly these: an 8×8 b16 matrix is 8 rows × 4 f32, and lane l receives word
# l % 4 of row l / 4. So A tiles and W tiles ([n][k]) load as the bf16 ones do,
# with 16-byte chunks of 4 k in place of 8.
# The tensor core reads the top 19 bits of each register (sign, exponent, 10
# mantissa bits). 3xTF32 (CUTLASS's OpMultiplyAddFastF32) splits each f32
# x = big + small: big = x with its low 13 bits cleared (truncation: a finite x
# never becomes inf), small = x − big (exact in f32), rounded to nearest on 19
# bits; then x·y ≈ big_x·big_y + big_x·small_y + small_x·big_y. Dropped:
# small_x·small_y (< 2⁻²⁰ |x·y|) and small's rounding (≤ 2⁻²¹ |x| each), so each
# product is within ~2⁻¹⁹ of exact, against 2⁻²⁴ for an f32 multiply; sums are
# formed in f32 by the tensor core.
# Non-finite x: inf·0 in a cross term would make NaN where f32 gives ±inf, and a
# NaN whose payload lies in the low 13 bits would read as ±inf. So a warp first
# asks whether any value of its fragments is not finite (any_nonfinite) and
# splits them the quick way (split_tf32) when none is. Otherwise it takes the
# exact split (split_tf32_specials): the cross terms get `bigc` (big, or 0 where
# x is not finite), small is 0 there, and big is x + x (±inf stays, any NaN
# becomes the canonical NaN, whose top bits still read as NaN).

TF32_MASK = "0xFFFFE000"
EXP_MASK = "0x7F800000"


def mma_tf32(k, d, a, b, c=None):
    """d ← a·b + c (c defaults to d): one m16n8k8 tf32 mma, f32 accumulate."""
    c = d if c is None else c
    k(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        f"{{{', '.join(map(str, d))}}}, {{{', '.join(map(str, a))}}}, "
        f"{{{', '.join(map(str, b))}}}, {{{', '.join(map(str, c))}}};"
    )


def any_nonfinite(k, regs):
    """A predicate, the same in every lane of the warp: whether any lane holds a
    non-finite f32 (all exponent bits set) in any of the b32 registers `regs`."""
    top, e, p, q = k.reg("u32", "nfmax"), k.reg("u32", "nfe"), k.reg("pred", "nf"), k.reg("pred", "nfany")
    k(f"mov.u32 {top}, 0;")
    for r in regs:
        k(f"and.b32 {e}, {r}, {EXP_MASK};")
        k(f"max.u32 {top}, {top}, {e};")
    k(f"setp.eq.u32 {p}, {top}, {EXP_MASK};")
    k(f"vote.sync.any.pred {q}, {p}, 0xffffffff;")
    return q


def split_tf32(k, x, stem="sp", round_small=True):
    """(big, big, small) of a finite f32 in b32 register `x`: four instructions, or
    two without `round_small`, when the mma reads small truncated (its low 13 bits
    ignored: ≤ 2⁻²⁰ |x| more error a product, the bound staying ~2⁻¹⁹)."""
    big, small = k.reg("b32", f"{stem}b"), k.reg("b32", f"{stem}s")
    k(f"and.b32 {big}, {x}, {TF32_MASK};")
    k(f"sub.f32 {small}, {x}, {big};")
    if round_small:
        k(f"add.u32 {small}, {small}, 4096;")  # round the 13 low bits half away from zero
        k(f"and.b32 {small}, {small}, {TF32_MASK};")
    return big, big, small


def split_tf32_specials(k, x, stem="sx", round_small=True):
    """(big, bigc, small) of any f32 in b32 register `x` (see above)."""
    big, bigc, small = split_tf32(k, x, stem, round_small)
    bigc = k.reg("b32", f"{stem}c")
    t, fin = k.reg("f32", f"{stem}t"), k.reg("pred", f"{stem}f")
    k(f"abs.f32 {t}, {x};")
    k(f"setp.lt.f32 {fin}, {t}, 0f7F800000;")  # false for ±inf and NaN
    k(f"selp.b32 {small}, {small}, 0, {fin};")
    k(f"selp.b32 {bigc}, {big}, 0, {fin};")
    k(f"add.f32 {t}, {x}, {x};")
    k(f"selp.b32 {big}, {big}, {t}, {fin};")
    return big, bigc, small


def mma_3xtf32(k, acc, a, b):
    """acc += A·B in 3xTF32: `a` and `b` are lists of split_tf32 triples (4 for an
    A fragment, 2 for B). The small products go first, while acc is small."""
    col = lambda regs, i: [r[i] for r in regs]  # noqa: E731
    mma_tf32(k, acc, col(a, 2), col(b, 1))
    mma_tf32(k, acc, col(a, 1), col(b, 2))
    mma_tf32(k, acc, col(a, 0), col(b, 0))


def ldmatrix_x4(k, regs, address, trans=False):
    """Four 8×8 b16 matrices from shared memory into `regs` (4 b32 registers);
    `address` is this lane's row address (see the module doc)."""
    t = ".trans" if trans else ""
    k(f"ldmatrix.sync.aligned.m8n8.x4{t}.shared.b16 {{{', '.join(map(str, regs))}}}, [{address}];")


def stmatrix_x4(k, address, regs):
    """Four 8×8 b16 matrices from `regs` (4 b32 registers, register i of lane t:
    row t/4, columns 2(t%4), 2(t%4)+1 of matrix i, the layout ldmatrix loads and
    an mma / wgmma accumulator pair has) into shared memory (sm_90); `address`
    is the row this lane names: row t % 8 of matrix t / 8."""
    k(f"stmatrix.sync.aligned.m8n8.x4.shared.b16 [{address}], {{{', '.join(map(str, regs))}}};")


def cp_async_16(k, smem_addr, gmem_addr, pred, guard=None):
    """Copy 16 bytes global → shared asynchronously (L2 only, `.cg`); where `pred`
    is false nothing is read and the 16 bytes are zero-filled; where `guard` (a
    predicate) is false, nothing is copied at all."""
    n = k.reg("u32", "cpn")
    k(f"selp.u32 {n}, 16, 0, {pred};")
    g = f"@{guard} " if guard is not None else ""
    k(f"{g}cp.async.cg.shared.global [{smem_addr}], [{gmem_addr}], 16, {n};")


def cp_commit(k):
    k("cp.async.commit_group;")


def cp_wait(k, pending):
    """Wait until at most `pending` committed groups are still in flight."""
    k(f"cp.async.wait_group {pending};")


def swizzle_64b(k, row, chunk):
    """Byte offset of 16-byte chunk `chunk` (0..3) of row `row` in a tile of
    64-byte rows (32 bf16), XOR-swizzled: chunk ^ ((row >> 1) & 3). The 8 rows an
    ldmatrix phase reads then fall in 8 distinct 16-byte bank groups (even rows
    use bytes 0-63 of a 128-byte line, odd rows 64-127, and the four XOR values
    differ)."""
    t, off = k.reg("u32", "sw"), k.reg("u32", "swo")
    k(f"shr.u32 {t}, {row}, 1;")
    k(f"and.b32 {t}, {t}, 3;")
    k(f"xor.b32 {t}, {t}, {chunk};")
    k(f"shl.b32 {t}, {t}, 4;")
    k(f"shl.b32 {off}, {row}, 6;")
    k(f"add.u32 {off}, {off}, {t};")
    return off


def padded_stride(row_bytes):
    """Row stride of a tile whose rows are `row_bytes` (a multiple of 16) long,
    padded by one 16-byte chunk so that the 8 rows an ldmatrix phase reads start
    in 8 distinct 16-byte bank groups (checked for the stride at generation
    time). Used where rows are not a power-of-two number of chunks (hd 80)."""
    stride = row_bytes + 16
    assert_conflict_free(stride)
    return stride


def assert_conflict_free(stride):
    """8 rows at this byte stride, 16 bytes each, must hit 8 distinct 16-byte bank
    groups of a 128-byte line (one ldmatrix phase without conflicts)."""
    groups = {(r * stride) % 128 // 16 for r in range(8)}
    if len(groups) != 8:
        raise ValueError(f"row stride {stride} B: ldmatrix rows share banks")


# -- Hopper (sm_90a): wgmma, TMA, mbarrier -------------------------------------
#
# wgmma.mma_async.m64nNk16 (bf16 in, f32 accumulate), both operands in shared
# memory through 64-bit matrix descriptors (PTX ISA "Matrix Descriptor Format"):
#   bits 0-13 start address >> 4, 16-29 leading byte offset >> 4, 32-45 stride
#   byte offset >> 4, 49-51 base offset, 62-63 swizzle (1 = 128-byte).
# Operands here are K-major tiles written by TMA with the 128-byte swizzle: row i
# of a tile (64 bf16 of K = 128 bytes) at byte 128·i, its 16-byte chunk j stored
# at chunk j ^ (i % 8); 8 rows make a 1024-byte atom, so SBO = 1024. The k-th
# 16-wide slice of the 64-wide K tile starts 32·k bytes into the atom (the
# hardware applies the XOR to the address bits, as TMA wrote them).
# Accumulator fragment of m64nNk16 (PTX ISA "Matrix Fragments for wgmma .m64nNk16"),
# warp w of the warpgroup, lane l, g = l / 4, c = l % 4, register j < N/2:
#   row 16w + g + 8·((j >> 1) & 1), column 8·(j >> 2) + 2c + (j & 1).

SW128_ATOM = 1024  # bytes: 8 rows of 128 bytes


def wgmma_d_coords(j):
    """(row, column) offset of accumulator register j relative to (16w + g, 2c)."""
    return (8 * ((j >> 1) & 1), 8 * (j >> 2) + (j & 1))


def wgmma_desc(k, smem_addr, lbo, sbo, sw128):
    """A b64 matrix descriptor of a bf16 operand at shared address `smem_addr`
    (u32 register, or `reg+imm`-free: a register): leading / stride byte offsets
    `lbo`, `sbo` (ints, multiples of 16) and the 128-byte swizzle or none. What
    LBO and SBO step over depends on the operand's major-ness:
      K-major, 128B: SBO = the next 8 rows (1024 for 128-byte rows), LBO unused;
      K-major, none: core matrices of 8 rows × 16 bytes; SBO = the next 8 rows,
        LBO = the second 8 k;
      MN-major (trans), 128B: 64 MN elements make a 128-byte row, 8 k-rows a
        1024-byte atom; SBO = the next 8 k, LBO = the next 64 MN;
      MN-major, none: core matrices of 8 MN (16 bytes) × 8 k at 16-byte pitch;
        SBO = the next 8 MN, LBO = the second 8 k."""
    assert lbo % 16 == 0 and sbo % 16 == 0 and lbo >> 4 < 1 << 14 and sbo >> 4 < 1 << 14
    lo, d = k.reg("u32", "dlo"), k.reg("b64", "desc")
    k(f"bfe.u32 {lo}, {smem_addr}, 4, 14;")
    k(f"or.b32 {lo}, {lo}, {(lbo >> 4) << 16};")
    k(f"mov.b64 {d}, {{{lo}, {(sbo >> 4) | ((1 << 30) if sw128 else 0)}}};")
    return d


def wgmma_desc_sw128(k, smem_addr):
    """A b64 descriptor of a K-major, 128-byte-swizzled bf16 tile starting at
    shared address `smem_addr` (u32; within the first 128 bytes of a 1024-byte
    atom): SBO = 1024 (the next 8 rows), LBO unused (16)."""
    return wgmma_desc(k, smem_addr, 16, SW128_ATOM, True)


def wgmma_bf16(k, acc, desc_a, desc_b, scale_d):
    """acc ← A·Bᵀ (+ acc when scale_d): one m64nNk16 wgmma, N = 2·len(acc); A
    (64×16) and B (N×16) K-major in shared memory; scale_d a predicate or 0/1."""
    n = 2 * len(acc)
    k(f"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.bf16.bf16 "
      f"{{{', '.join(map(str, acc))}}}, {desc_a}, {desc_b}, {scale_d}, 1, 1, 0, 0;")


def wgmma_bf16_rs(k, acc, a_regs, desc_b, scale_d, trans_b):
    """acc ← A·B (+ acc when scale_d) with A (64×16) from registers: 4 b32 per
    thread, the layout of an m16n8k16 A fragment for warp w's rows 16w..16w+15
    (a0 = A[g][2c, 2c+1], a1 = A[g+8][..], a2 = A[g][2c+8, 2c+9], a3 =
    A[g+8][2c+8, 2c+9]) — the same as the accumulator's for N = 16, so two
    adjacent 8-column groups of an f32 accumulator, rounded to bf16 pairs, are
    one k-step of A. B (N×16 as K×N) through a descriptor, MN-major when
    `trans_b` (rows of the stored tile are k)."""
    n = 2 * len(acc)
    k(f"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.bf16.bf16 "
      f"{{{', '.join(map(str, acc))}}}, {{{', '.join(map(str, a_regs))}}}, {desc_b}, {scale_d}, 1, 1, "
      f"{1 if trans_b else 0};")


def wgmma_tf32_rs(k, acc, a_regs, desc_b, scale_d):
    """acc ← A·Bᵀ (+ acc when scale_d): one m64nNk8 tf32 wgmma (N = 2·len(acc))
    with A (64×8) from registers — 4 b32 per thread, warp w's rows 16w..16w+15 as
    an m16n8k8 tf32 A fragment (a0 = A[g][c], a1 = A[g+8][c], a2 = A[g][c+4],
    a3 = A[g+8][c+4]; CUTLASS ALayout_64x8), which ldmatrix_x4 over four 8×4
    f32 blocks gives — and B (N×8) K-major in shared memory through `desc_b`
    (a 128-byte row holds 32 f32: k step s at +32 bytes, as bf16's 16). tf32
    operands have no transposed form. Each operand is read as tf32: its low 13
    bits ignored."""
    n = 2 * len(acc)
    k(f"wgmma.mma_async.sync.aligned.m64n{n}k8.f32.tf32.tf32 "
      f"{{{', '.join(map(str, acc))}}}, {{{', '.join(map(str, a_regs))}}}, {desc_b}, {scale_d}, 1, 1;")


TINY = "0f2B800000"  # 2⁻⁴⁰


def split_tf32_rs(k, x, stem="sr"):
    """(big, small, bigc) of any f32 in b32 register `x` for a 3xTF32 product with
    a B operand in shared memory as two tiles, big (±inf and NaN kept) and
    small (0 where B is not finite): acc += small·B_big + bigc·B_small +
    big·B_big. A non-finite B reaches the sum through big·B_big and small·B_big,
    so small must carry x's sign and be non-zero wherever big is: where
    split_tf32_specials leaves small 0 — x a tf32 value, or not finite — small
    is big·2⁻⁴⁰ (an error of 2⁻⁴⁰ |x·b|; or 1·inf would add 0·inf = NaN). A
    non-finite x then has small = big (±inf, or NaN) and bigc = 0: its
    infinity adds the same sign twice and never meets B's small. Big is the
    truncated x (the mma reads small truncated too: ≤ 2⁻²⁰ |x| more error a
    product)."""
    big, bigc, small = split_tf32_specials(k, x, stem, round_small=False)
    t, zero = k.reg("f32", f"{stem}t2"), k.reg("pred", f"{stem}z")
    k(f"setp.eq.f32 {zero}, {small}, 0f00000000;")
    k(f"mul.f32 {t}, {big}, {TINY};")
    k(f"selp.b32 {small}, {t}, {small}, {zero};")
    return big, small, bigc


def wgmma_fence(k):
    k("wgmma.fence.sync.aligned;")


def wgmma_commit(k):
    k("wgmma.commit_group.sync.aligned;")


def wgmma_wait(k, pending):
    """Wait until at most `pending` committed wgmma groups of this warpgroup run."""
    k(f"wgmma.wait_group.sync.aligned {pending};")


def setmaxnreg(k, count, grow):
    """Move this warpgroup's per-thread register allocation to `count` (a multiple
    of 8 in 24..256): up (`grow`, waits for registers released by others) or down."""
    assert 24 <= count <= 256 and count % 8 == 0
    k(f"setmaxnreg.{'inc' if grow else 'dec'}.sync.aligned.u32 {count};")


def warpgroup_ids(k, tid):
    """(warpgroup, warp within it, lane) registers of thread `tid`."""
    wg, warp, lane = k.reg("u32", "wg"), k.reg("u32", "warp"), k.reg("u32", "lane")
    k(f"shr.u32 {wg}, {tid}, 7;")
    k(f"shr.u32 {warp}, {tid}, 5;")
    k(f"and.b32 {warp}, {warp}, 3;")
    k(f"and.b32 {lane}, {tid}, 31;")
    return wg, warp, lane


def ring_advance(k, stage, phase, stages):
    """The next slot of an mbarrier ring of `stages` stages: stage += 1, and at
    `stages` back to 0 with the parity `phase` flipped (u32 registers)."""
    wrap = k.reg("pred", "wrap")
    k(f"add.u32 {stage}, {stage}, 1;")
    k(f"setp.eq.u32 {wrap}, {stage}, {stages};")
    k(f"@{wrap} mov.u32 {stage}, 0;")
    k(f"@{wrap} xor.b32 {phase}, {phase}, 1;")


def ring_skip(k, stage, phase, stages, n):
    """Skip `n` (a u32 register) slots of an mbarrier ring of `stages` stages:
    stage += n mod stages, the parity `phase` flipped once for each wrap."""
    q, r, wrap = k.reg("u32", "skq"), k.reg("u32", "skr"), k.reg("pred", "skwrap")
    k(f"rem.u32 {r}, {n}, {stages};")
    k(f"div.u32 {q}, {n}, {stages};")
    k(f"and.b32 {q}, {q}, 1;")
    k(f"xor.b32 {phase}, {phase}, {q};")
    k(f"add.u32 {stage}, {stage}, {r};")
    k(f"setp.ge.u32 {wrap}, {stage}, {stages};")
    k(f"@{wrap} sub.u32 {stage}, {stage}, {stages};")
    k(f"@{wrap} xor.b32 {phase}, {phase}, 1;")


def mbar_init(k, bar, count):
    k(f"mbarrier.init.shared::cta.b64 [{bar}], {count};")


def mbar_arrive(k, bar, pred=None):
    st = k.reg("b64", "mbst")
    g = f"@{pred} " if pred is not None else ""
    k(f"{g}mbarrier.arrive.shared::cta.b64 {st}, [{bar}];")


def mbar_arrive_tx(k, bar, nbytes):
    """Arrive and expect `nbytes` more bytes of asynchronous copies this phase."""
    st = k.reg("b64", "mbst")
    k(f"mbarrier.arrive.expect_tx.shared::cta.b64 {st}, [{bar}], {nbytes};")


def mbar_wait(k, bar, parity):
    """Spin until the phase of parity `parity` (u32 0/1) of `bar` has completed."""
    p, top = k.reg("pred", "mbok"), k.label("mbwait")
    k.place(top)
    k(f"mbarrier.try_wait.parity.shared::cta.b64 {p}, [{bar}], {parity};")
    k(f"@!{p} bra {top};")


def tma_load_2d(k, dst, tmap, col, row, bar):
    """TMA: the box of tensor map `tmap` (generic address) at element (row, col)
    → shared `dst`, completing its bytes on mbarrier `bar`; out-of-range
    elements are zero-filled."""
    k(f"cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
      f"[{dst}], [{tmap}, {{{col}, {row}}}], [{bar}];")


def tma_load_2d_multicast(k, dst, tmap, col, row, bar, mask):
    """TMA multicast within a cluster: the box lands at the same offset as `dst`
    in the shared memory of every CTA whose rank is a set bit of `mask` (an
    immediate), and completes its bytes on the mbarrier at `bar`'s offset in each
    of them."""
    m = k.reg("b16", "mcmask")
    k(f"mov.b16 {m}, {mask};")
    k(f"cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster "
      f"[{dst}], [{tmap}, {{{col}, {row}}}], [{bar}], {m};")


# -- Thread-block clusters --------------------------------------------------------
#
# A cluster's CTAs run at once on one GPC and may reach each other's shared memory
# (distributed shared memory): `mapa` turns an address of this CTA's shared memory
# into the same offset in CTA `rank`'s, which `.shared::cluster` instructions take.


def cluster_sync(k, aligned=True, relaxed=False):
    """Every non-exited thread of the cluster arrives, then waits for the others.
    The arrive releases this thread's memory operations to the waiters (ptxas:
    MEMBAR.ALL.GPU before it) unless `relaxed` (after mbarrier initialisation,
    which fence.mbarrier_init.release.cluster publishes). `aligned`: all
    threads of each warp execute it together."""
    a = ".aligned" if aligned else ""
    k(f"barrier.cluster.arrive.{'relaxed' if relaxed else 'release'}{a};")
    k(f"barrier.cluster.wait.acquire{a};")


def mbar_arrive_cluster(k, bar, rank, pred=None):
    """Arrive on the mbarrier at `bar`'s offset in the shared memory of the
    cluster's CTA `rank` (a register or immediate; this CTA's own too). The
    default semantics (.release.cta), as CUTLASS's ClusterBarrier: with
    .release.cluster ptxas puts MEMBAR.ALL.GPU before every arrive."""
    g = f"@{pred} " if pred is not None else ""
    r = k.reg("u32", "remote")
    k(f"{g}mapa.shared::cluster.u32 {r}, {bar}, {rank};")
    k(f"{g}mbarrier.arrive.shared::cluster.b64 _, [{r}];")


# -- TMA stores from shared memory (bulk async-groups) ---------------------------
#
# A TMA store reads its box from shared memory asynchronously: the generic stores
# that filled the box must be made visible to the async proxy first
# (fence.proxy.async by each writer, then a barrier with the issuing thread), and
# the buffer may be refilled only once the store has read it: the issuing thread
# commits its stores into bulk async-groups and waits with wait_group.read.


def sw128_offset(row, chunk):
    """Byte offset of 16-byte chunk `chunk` (0..7) of row `row` in a tile of
    128-byte rows laid out as TMA's 128-byte swizzle does (in a 1024-byte aligned
    buffer): 128·row + 16·(chunk ^ (row % 8)). Python ints (generation time)."""
    return 128 * row + 16 * (chunk ^ (row % 8))


def tma_store_2d(k, tmap, col, row, src, pred=None):
    """TMA: shared `src` → the box of tensor map `tmap` (generic address) at element
    (row, col); elements past the tensor's edges are not written."""
    guard = f"@{pred} " if pred is not None else ""
    k(f"{guard}cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [{tmap}, {{{col}, {row}}}], [{src}];")


def bulk_commit(k, pred=None):
    """Close this thread's uncommitted TMA stores into a bulk async-group."""
    guard = f"@{pred} " if pred is not None else ""
    k(f"{guard}cp.async.bulk.commit_group;")


def bulk_wait_read(k, pending, pred=None):
    """Wait until all but the `pending` newest bulk groups of this thread have read
    their shared-memory sources (the buffers may be written again)."""
    guard = f"@{pred} " if pred is not None else ""
    k(f"{guard}cp.async.bulk.wait_group.read {pending};")


def bulk_wait(k, pending, pred=None):
    """Wait until all but the `pending` newest bulk groups of this thread are complete."""
    guard = f"@{pred} " if pred is not None else ""
    k(f"{guard}cp.async.bulk.wait_group {pending};")


def fence_proxy_async_shared(k):
    """Order this thread's generic shared-memory writes before later async-proxy
    (TMA) reads of them."""
    k("fence.proxy.async.shared::cta;")


def named_barrier(k, bar_id, threads):
    """bar.sync on barrier `bar_id` (a register, or an int 1..15; 0 is the whole
    block's) among `threads` threads (whole warps)."""
    assert threads % 32 == 0 and (not isinstance(bar_id, int) or 1 <= bar_id <= 15)
    k(f"bar.sync {bar_id}, {threads};")
