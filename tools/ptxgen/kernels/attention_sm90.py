"""attention_bf16_sm90_hd{HD}: bf16 attention on Hopper (sm_90a), wgmma fed by
TMA, FlashAttention-3's structure with its scheduler barriers; for exactly
head dim HD (64, 72, 80, 128), same parameters and semantics as
attention_bf16_hd* plus six tensor maps; the host picks it on compute
capability 9.x.

Block: 384 threads. Persistent: the grid is at most one block per SM (params
  qblocks = ⌈max q_len / 128⌉ and items = qblocks·H·B); block b runs work items
  b, b + grid, ... (attention_common.item_block: query block, head, sequence,
  the query blocks of a head side by side), skipping those past their
  sequence's queries, so the next item's Q and first K/V tiles load while this
  one finishes, where a block a query block paid those loads (1-2 us) with the
  SM idle. Warpgroups 0 and 1 are consumers: warpgroup g owns query rows
  64g..64g+63 of the item's 128. Thread 256 (warpgroup 2) is the producer: per
  item it loads Q into the item's Q buffer and streams K/V tiles of 128 keys
  through STAGES stages (the ring runs on across items); the rest of its
  warpgroup exits after giving back registers (setmaxnreg: 24 for the producer,
  240 for the consumers).
Shared (dynamic, 1024-aligned): QBUFS Q buffers [128 rows] (two where they
  leave 3 stages, else one: hd 128), then STAGES × (K [128], V [128]), then the
  mbarriers. A head's columns are split as hd = 64·A + 8·C:
  - A atoms of 64 columns (128-byte rows, the 128-byte swizzle, 16 KiB each),
    loaded with boxes of 128 rows × 64 columns (tensor maps tmap_q / tmap_k /
    tmap_v);
  - C chunks of 8 columns (16-byte rows, no swizzle, 2 KiB each), boxes of 128
    rows × 8 columns (tmap_*_tail): the core-matrix layout wgmma reads without a
    swizzle;
  - Q and K get one more chunk of zeros when C is odd (written once, never
    loaded), so Q·Kᵀ's last k-step of 16 columns reads zeros past hd.
  TMA zero-fills rows past the tensor; rows of the next sequence (fixed lengths
  past kv_len, or the next packed sequence) are loaded as they are: their keys
  are masked to −∞, and the consumers zero those V rows (generic stores, then
  fence.proxy.async and a barrier of the 256 consumer threads) so 0·NaN never
  reaches O.
Pipeline: full[s] (count 1 + the K and V bytes) and empty[s] (count 256: every
  consumer thread arrives once its P·V has retired); per Q buffer fullq (count 1
  + the Q bytes) and emptyq (count 256: every consumer thread, once the item's
  last wgmma has retired; the producer waits on it before loading the item
  QBUFS items later).
Order (FlashAttention-3's intra-warpgroup overlap): S_j = Q·K_jᵀ and
  P_{j−1}·V_{j−1} are issued together; the softmax of S_j runs while P·V is on
  the tensor cores; then O is rescaled and P_j packed. Between the warpgroups
  (FlashAttention-3's pingpong), where the parameter `turns` is not 0: they
  take turns issuing (named barriers 2 and 3, SchedulerBarriers), so one's
  softmax runs while the other's products are on the tensor cores, not both
  softmaxes at once with the tensor cores idle.
Per tile, warpgroup g:
  S = Q·Kᵀ (64 × 128, f32, 64 registers a thread): wgmma m64n128k16, A (Q) and
    B (K) K-major through descriptors: 4 k-steps per atom (128B swizzle), ⌈C/2⌉
    over the chunks (no swizzle, LBO = the next chunk);
  keys past kv_len −∞ (last tile); online softmax per row as
  attention_bf16_hd* (the accumulator of a warp is an m16n8 C fragment per 8
  columns), scores scaled by hd^-0.5·log2(e) in its fma before each exp2:
  m_ref = m_new, or 0 when m_new = −∞;
  P stays in registers: accumulator columns 16s..16s+15 rounded to bf16 pairs
    are the A fragment of k-step s (wgmma with A from registers);
  O += P·V: per 16 keys one wgmma m64n(64A)k16 over the atoms (V MN-major, the
    128-byte swizzle: SBO = 8 keys, LBO = the next atom) and one m64n(8C)k16 over
    the chunks (MN-major, no swizzle: SBO = the next chunk, LBO = 8 keys).
End: l summed over the quad, O / l rounded to bf16 once, stored as bf16 pairs
  for rows < q_len."""

from types import SimpleNamespace

from ..asm import F32, In, Kernel, Opt, Out, TMap, U32
from ..frag import (fence_proxy_async_shared, mbar_arrive, mbar_arrive_tx, mbar_init, mbar_wait, named_barrier,
                    ring_advance, setmaxnreg, tma_load_2d, warpgroup_ids, wgmma_bf16, wgmma_bf16_rs, wgmma_commit,
                    wgmma_desc, wgmma_fence, wgmma_wait)
from ..lib import NEG_INF, ZERO, aligned_dyn_smem
from .attention_common import item_block, online_softmax_row, softmax_state, store_output_row

HEAD_DIMS = (64, 72, 80, 128)
BR = BC = ROWS = 128               # query rows per block, keys per tile
CONSUMERS = 2
THREADS = 128 * (CONSUMERS + 1)
PRODUCER_REGS, CONSUMER_REGS = 24, 240
assert 128 * PRODUCER_REGS + 128 * CONSUMERS * CONSUMER_REGS <= 65536
ATOM = ROWS * 128                  # 16 KiB: 128 rows of 64 bf16, 128-byte swizzle
CHUNK = ROWS * 16                  # 2 KiB: 128 rows of 8 bf16
SMEM_LIMIT = 227 * 1024
MAX_STAGES = 3
# Named barrier 1: the 256 consumer threads (zeroing V rows of the last tile);
# 2 and 3: the scheduler barriers of warpgroups 0 and 1 (SchedulerBarriers).
BAR_CONSUMERS = 1
BAR_SCHED = 2

PARAMS = ([In("q"), In("k"), In("v")]
          + [TMap(f"tmap_{t}", t, (ROWS, 64)) for t in "qkv"]
          + [TMap(f"tmap_{t}_tail", t, (ROWS, 8), swizzle=0) for t in "qkv"]
          + [Out("out"), Opt("cu"), U32("nq"), U32("nk"), U32("heads"), U32("hd"), U32("ldq"), U32("ldkv"),
             U32("ldo"), U32("q_col"), U32("k_col"), U32("v_col"), U32("q_bstride"), U32("q_varlen"),
             F32("scale"), U32("qblocks"), U32("items"), U32("turns")])


class Item:
    """The work-item loop of a role of a persistent attention kernel (emitted by
    `begin` and `finish` around the role's work): item = ctaid.x, + nctaid.x, ...
    below `items`; items past their sequence's queries are skipped by every role
    alike, so the producer and the consumers (and converters) walk the same K/V
    tiles through the stage ring. `n` counts the items run: Q buffer n % qbufs
    (qbufs a power of two), its phase (n / qbufs) & 1. `rows` query rows an
    item, `keys` keys a K/V tile (a power of two), `q_bytes` a Q buffer's
    bytes (the buffers from `base`), `fullq0` / `emptyq0` the first Q buffer's
    barriers (8 bytes apart)."""

    def __init__(self, k, p, rows, keys, qbufs, q_bytes, base, fullq0, emptyq0):
        assert keys & (keys - 1) == 0 and qbufs & (qbufs - 1) == 0
        self.k, self.p, self.rows, self.keys, self.qbufs = k, p, rows, keys, qbufs
        self.q_bytes, self.base, self.fullq0, self.emptyq0 = q_bytes, base, fullq0, emptyq0

    def begin(self, stem):
        k, p = self.k, self.p
        self.item, self.n = k.reg("u32", f"{stem}_item"), k.reg("u32", f"{stem}_n")
        self.top, self.next, self.end = (k.label(f"{stem}_{x}") for x in ("item", "next", "items_done"))
        self.step = k.reg("u32", f"{stem}_step")
        k(f"mov.u32 {self.item}, %ctaid.x;")
        k(f"mov.u32 {self.step}, %nctaid.x;")
        k(f"mov.u32 {self.n}, 0;")
        k.place(self.top)
        k(f"setp.ge.u32 {p}, {self.item}, {k.param('items')};")
        k(f"@{p} bra {self.end};")
        self.qb, bounds, self.hoff = item_block(k, self.item, self.rows)
        self.q0, self.kv0, self.o0, self.ql, self.kl = bounds
        k(f"setp.ge.u32 {p}, {self.qb}, {self.ql};")
        k(f"@{p} bra {self.next};")
        self.ntiles = k.reg("u32", "ntiles")
        k(f"add.u32 {self.ntiles}, {self.kl}, {self.keys - 1};")
        k(f"shr.u32 {self.ntiles}, {self.ntiles}, {self.keys.bit_length() - 1};")
        # This item's Q buffer: its full and empty barriers, address, phase.
        self.qfull, self.qempty = k.reg("u32", "qfull"), k.reg("u32", "qempty")
        self.qbuf, self.qphase = k.reg("u32", "qbuf"), k.reg("u32", "qphase")
        slot = k.reg("u32", "qslot")
        k(f"and.b32 {slot}, {self.n}, {self.qbufs - 1};")
        k(f"shr.u32 {self.qphase}, {self.n}, {self.qbufs.bit_length() - 1};")
        k(f"and.b32 {self.qphase}, {self.qphase}, 1;")
        k(f"mad.lo.u32 {self.qbuf}, {slot}, {self.q_bytes}, {self.base};")
        k(f"mad.lo.u32 {self.qfull}, {slot}, 8, {self.fullq0};")
        k(f"mad.lo.u32 {self.qempty}, {slot}, 8, {self.emptyq0};")
        return self

    def finish(self):
        k = self.k
        k(f"add.u32 {self.n}, {self.n}, 1;")
        k.place(self.next)
        k(f"add.u32 {self.item}, {self.item}, {self.step};")
        k(f"bra.uni {self.top};")
        k.place(self.end)


def tile_load(k, maps, dst, col0, row, bar, split):
    """TMA of one tile (rows row.., a head's columns from col0) into the region at
    shared address dst: its atoms through maps[0] (the 128-byte swizzle), then its
    chunks through maps[1] (16-byte rows). `split` = (atoms, atom columns, atom
    bytes, chunks, chunk columns, chunk bytes)."""
    main, tail = maps
    atoms, acols, abytes, chunks, ccols, cbytes = split
    c, d = k.reg("u32", "tc"), k.reg("u32", "td")
    for i in range(atoms):
        k(f"add.u32 {c}, {col0}, {acols * i};")
        k(f"add.u32 {d}, {dst}, {i * abytes};")
        tma_load_2d(k, d, main, c, row, bar)
    for i in range(chunks):
        k(f"add.u32 {c}, {col0}, {acols * atoms + ccols * i};")
        k(f"add.u32 {d}, {dst}, {atoms * abytes + i * cbytes};")
        tma_load_2d(k, d, tail, c, row, bar)


class Ring:
    """The K/V stage ring of a Hopper attention kernel, as each role walks it:
    `stage` and `phase` (u32 registers, the role's own), `stages` stages of
    `stage_bytes` from base + koff, their full and empty mbarriers 8 bytes apart
    from full0 and empty0 (shared addresses in registers)."""

    def __init__(self, k, p, stage, phase, stages, base, koff, stage_bytes, full0, empty0):
        self.k, self.p, self.stage, self.phase, self.stages = k, p, stage, phase, stages
        self.base, self.koff, self.stage_bytes, self.full0, self.empty0 = base, koff, stage_bytes, full0, empty0

    def advance(self):
        ring_advance(self.k, self.stage, self.phase, self.stages)

    def tile(self, dst):
        """dst ← the current stage's first byte (its K tile)."""
        self.k(f"mad.lo.u32 {dst}, {self.stage}, {self.stage_bytes}, {self.base};")
        self.k(f"add.u32 {dst}, {dst}, {self.koff};")

    def bar(self, dst, first):
        """dst ← the current stage's barrier of the array at `first`."""
        self.k(f"mad.lo.u32 {dst}, {self.stage}, 8, {first};")

    def loop(self, j, ntiles, body, stem):
        """body() for tiles j = 0 .. ntiles − 1, the ring advancing after each."""
        k, p = self.k, self.p
        top, end = k.label(f"{stem}_tile"), k.label(f"{stem}_tiles_done")
        k(f"mov.u32 {j}, 0;")
        k.place(top)
        k(f"setp.ge.u32 {p}, {j}, {ntiles};")
        k(f"@{p} bra {end};")
        body()
        self.advance()
        k(f"add.u32 {j}, {j}, 1;")
        k(f"bra.uni {top};")
        k.place(end)


def producer(k, p, item, ring, maps, q_split, kv_split, q_bytes, v_off):
    """The producer thread's loop: per item, Q into its buffer once the
    consumers released it (qbufs items earlier), then its K/V tiles through the
    ring, each stage once its consumers released it: K at the stage's start, V
    `v_off` bytes further. `maps[x]` = (atoms' map, chunks' map) of tensor x;
    q_split / kv_split as tile_load's `split`; q_bytes what Q's TMA writes (a K
    or V tile: the ring's full barrier expects twice kv_split's bytes)."""
    atoms, _, abytes, chunks, _, cbytes = kv_split
    kv_bytes = atoms * abytes + chunks * cbytes
    it = item.begin("prod")
    col, row = k.reg("u32", "pcol"), k.reg("u32", "prow")
    par = k.reg("u32", "pqpar")
    k(f"xor.b32 {par}, {it.qphase}, 1;")
    mbar_wait(k, it.qempty, par)
    k(f"add.u32 {col}, {k.param('q_col')}, {it.hoff};")
    k(f"add.u32 {row}, {it.q0}, {it.qb};")
    mbar_arrive_tx(k, it.qfull, q_bytes)
    tile_load(k, maps["q"], it.qbuf, col, row, it.qfull, q_split)
    kcol, vcol = k.reg("u32", "kcol"), k.reg("u32", "vcol")
    k(f"add.u32 {kcol}, {k.param('k_col')}, {it.hoff};")
    k(f"add.u32 {vcol}, {k.param('v_col')}, {it.hoff};")
    pj = k.reg("u32", "pj")

    def produce():
        empty, full, ppar, sk, sv = (k.reg("u32", s) for s in ("pempty", "pfull", "ppar", "psk", "psv"))
        ring.bar(empty, ring.empty0)
        k(f"xor.b32 {ppar}, {ring.phase}, 1;")
        mbar_wait(k, empty, ppar)
        ring.bar(full, ring.full0)
        mbar_arrive_tx(k, full, 2 * kv_bytes)
        ring.tile(sk)
        k(f"add.u32 {sv}, {sk}, {v_off};")
        k(f"shl.b32 {row}, {pj}, {item.keys.bit_length() - 1};")
        k(f"add.u32 {row}, {row}, {it.kv0};")
        tile_load(k, maps["k"], sk, kcol, row, full, kv_split)
        tile_load(k, maps["v"], sv, vcol, row, full, kv_split)

    ring.loop(pj, it.ntiles, produce, "prod")
    it.finish()


class SchedulerBarriers:
    """FlashAttention-3's warp-scheduler barriers between two consumer
    warpgroups (named barriers `first` and `first` + 1, one a warpgroup, 256
    threads each): a warpgroup issues its wgmma between sync() (its own
    barrier) and arrive() (the other's), so the two take turns on the tensor
    cores and one's softmax runs while the other's products do. `open` (at the
    role's start) lets warpgroup 0 take the first turn; `close` (at its end)
    has warpgroup 0 meet warpgroup 1's last arrive, so no barrier is left
    half-arrived at exit. Both warpgroups must take the same number of turns.
    Only where the u32 `on` (a parameter, the same for every thread) is not 0:
    else every one of these is predicated off (the host's switch, to time the
    kernel without them)."""

    def __init__(self, k, wg, first, on):
        assert 1 <= first <= 14
        self.k = k
        self.own, self.other = k.reg("u32", "sched_own"), k.reg("u32", "sched_other")
        k(f"add.u32 {self.own}, {wg}, {first};")
        k(f"xor.b32 {self.other}, {wg}, 1;")
        k(f"add.u32 {self.other}, {self.other}, {first};")
        self.on = k.reg("pred", "sched_on")
        k(f"setp.ne.u32 {self.on}, {on}, 0;")
        self.wg = wg

    def sync(self):
        self.k(f"@{self.on} bar.sync {self.own}, 256;")

    def arrive(self):
        self.k(f"@{self.on} bar.arrive {self.other}, 256;")

    def open(self, p):
        self.k(f"setp.ne.u32 {p}, {self.wg}, 0;")
        self.k(f"and.pred {p}, {p}, {self.on};")
        self.k(f"@{p} bar.arrive {self.other}, 256;")

    def close(self, p):
        self.k(f"setp.eq.u32 {p}, {self.wg}, 0;")
        self.k(f"and.pred {p}, {p}, {self.on};")
        self.k(f"@{p} bar.sync {self.own}, 256;")


def consumer_tiles(k, p, ring, j, it, ops, sched=None):
    """A consumer warpgroup's pass over an item's K/V tiles (FlashAttention-3's
    intra-warpgroup order). Tile 0: S, softmax. Then per tile j ≥ 1, at the
    loop's top, once the P·V in flight (tile j − 2) has retired: its stage goes
    back to the producer, O is rescaled and P_{j−1} made; S_j and
    P_{j−1}·V_{j−1} are issued, and the softmax of S_j runs while P·V is on the
    tensor cores. The retire sits at the top of the loop, a block of its own,
    because ptxas hoists a wgmma.wait_group to the start of its basic block:
    written after the softmax, it would wait for P·V before it. Last: P·V of
    the last tile, and its stage's release; then, every wgmma of the item
    retired (and its reads of Q long before), the release of the item's Q
    buffer (`it`: the role's Item). `ops` gives the kernel's parts:
    tile_start() (wait for tile j's stage), fence_s (whether a wgmma.fence goes
    before issue_s(), or issue_s fences itself), issue_s(), issue_pv(v) (V of
    the stage kept as v), after_issue() (work between the issue and the wait,
    or None), softmax(), rescale() (O ·= alpha, P from S), keep_v(dst) (dst ←
    the current stage's V, for P·V a tile later). With `sched`
    (SchedulerBarriers) each tile's issue, once its stage has landed, is a
    turn: S_0, then S_j with P_{j−1}·V_{j−1} (the last P·V is not, as in
    FlashAttention-3)."""
    ntiles = it.ntiles
    prev_v, prev_empty = k.reg("u32", "prev_v"), k.reg("u32", "prev_empty")
    pending = k.reg("pred", "pending")  # a P·V in flight whose stage is still held
    no_tiles = k.label("no_tiles")
    k(f"setp.eq.u32 {p}, {ntiles}, 0;")
    k(f"@{p} bra {no_tiles};")
    k(f"mov.u32 {j}, 0;")

    def s_and(extra):
        ops.tile_start()
        if sched:
            sched.sync()
        if ops.fence_s:
            wgmma_fence(k)
        ops.issue_s()
        extra()
        if sched:
            sched.arrive()
        if ops.after_issue:
            ops.after_issue()

    s_and(lambda: None)
    wgmma_wait(k, 0)
    ops.softmax()
    cur_v, cur_empty = k.reg("u32", "cur_v"), k.reg("u32", "cur_empty")

    def keep_stage():
        ops.keep_v(cur_v)
        ring.bar(cur_empty, ring.empty0)

    keep_stage()
    ring.advance()
    k(f"mov.u32 {j}, 1;")
    k(f"setp.ne.u32 {pending}, {j}, {j};")  # false
    top, end = k.label("cons_tile"), k.label("cons_tiles_done")
    k.place(top)
    wgmma_wait(k, 0)
    k(f"@{pending} mbarrier.arrive.shared::cta.b64 _, [{prev_empty}];")
    ops.rescale()
    k(f"mov.u32 {prev_v}, {cur_v};")
    k(f"mov.u32 {prev_empty}, {cur_empty};")
    k(f"setp.ge.u32 {p}, {j}, {ntiles};")
    k(f"@{p} bra {end};")
    s_and(lambda: ops.issue_pv(prev_v))
    wgmma_wait(k, 1)
    ops.softmax()
    keep_stage()
    k(f"setp.eq.u32 {pending}, {j}, {j};")  # true
    ring.advance()
    k(f"add.u32 {j}, {j}, 1;")
    k(f"bra.uni {top};")
    k.place(end)
    wgmma_fence(k)
    ops.issue_pv(prev_v)
    wgmma_wait(k, 0)
    mbar_arrive(k, prev_empty)
    k.place(no_tiles)
    mbar_arrive(k, it.qempty)


def softmax_tile(k, p, S, scale, partial, left, c2, m, lsum, alpha):
    """S (retired; m16n8 groups of 4 f32 registers, 8 columns each): keys at
    or past `left` −∞ where `partial` (the last tile), then 2^(scale·S − m_ref)
    in place with m, l and alpha updated per row (online_softmax_row, which
    applies `scale`). Touches S only."""
    # Keys past kv_len score −∞.
    no_mask, kc = k.label("no_mask"), k.reg("u32", "kcol")
    k(f"@!{partial} bra {no_mask};")
    for n in range(len(S)):
        for q in range(2):
            k(f"add.u32 {kc}, {c2}, {8 * n + q};")
            k(f"setp.ge.u32 {p}, {kc}, {left};")
            k(f"@{p} mov.f32 {S[n][q]}, {NEG_INF};")
            k(f"@{p} mov.f32 {S[n][q + 2]}, {NEG_INF};")
    k.place(no_mask)
    # Online softmax: rows g (registers 0, 1 of each group) and g + 8 (2, 3).
    for half in range(2):
        online_softmax_row(k, S, half, m[half], lsum[half], alpha[half], scale)


def rescale_rows(k, O, alpha):
    """O ·= alpha of its row: alpha[0] for registers 0, 1 of each group (row g),
    alpha[1] for 2, 3 (row g + 8)."""
    for half in range(2):
        for group in O:
            for q in (2 * half, 2 * half + 1):
                k(f"mul.f32 {group[q]}, {group[q]}, {alpha[half]};")


def store_item(k, O, lsum, ids, it, out, ldo, c2, dt):
    """out = O / l for this thread's two rows of the item (warpgroup wg's rows
    64 wg + 16 warp + lane / 4 (+ 8)), rows < q_len, as dt pairs. ids = (wg,
    warp, lane, t: a scratch u32)."""
    wg, warp, lane, t = ids
    grow = k.reg("u32", "grow")
    k(f"shr.u32 {t}, {lane}, 2;")
    k(f"shl.b32 {grow}, {wg}, 6;")
    k(f"mad.lo.u32 {grow}, {warp}, 16, {grow};")
    k(f"add.u32 {grow}, {grow}, {t};")
    k(f"add.u32 {grow}, {grow}, {it.qb};")
    for half in range(2):
        orow = k.reg("u32", "orow")
        k(f"add.u32 {orow}, {grow}, {8 * half};")
        store_output_row(k, O, half, lsum[half], orow, (out, it.o0, it.ql, ldo, it.hoff), c2, dt=dt)


def split(hd):
    """(atoms, chunks, zero chunk) of head dim hd."""
    assert hd % 8 == 0 and 0 < hd <= 128
    a, c = hd // 64, (hd % 64) // 8
    return a, c, c % 2


def attention_sm90(HD):  # noqa: N803 (the head dim's name)
    A, C, Z = split(HD)
    QK_BYTES = A * ATOM + (C + Z) * CHUNK      # noqa: N806 (a Q or K region)
    V_BYTES = A * ATOM + C * CHUNK             # noqa: N806
    LOAD = A * ATOM + C * CHUNK                # noqa: N806 (bytes TMA writes per Q, K or V tile)
    STAGE = QK_BYTES + V_BYTES                 # noqa: N806

    def stages(qbufs):
        return min(MAX_STAGES, (SMEM_LIMIT - 1024 - qbufs * (QK_BYTES + 16)) // (STAGE + 16))
    # Two Q buffers (the next item's Q loads during this one) where they leave
    # MAX_STAGES stages; else one (hd 128).
    QBUFS = 2 if stages(2) == MAX_STAGES else 1  # noqa: N806 (a power of two: the slot is n & (QBUFS - 1))
    STAGES = stages(QBUFS)                     # noqa: N806
    assert STAGES >= 2
    KOFF = QBUFS * QK_BYTES                    # noqa: N806 (stage 0's K)
    BARS = KOFF + STAGES * STAGE               # noqa: N806
    SMEM = 1024 + BARS + 16 * QBUFS + 16 * STAGES  # noqa: N806
    name = f"attention_bf16_sm90_hd{HD}"
    k = Kernel("attention_sm90", name, THREADS, PARAMS, "attention_sm90",
               doc=f"{name}: Hopper bf16 attention, hd {HD}, wgmma fed by TMA through {STAGES}\n"
                   f"stages of 128-key K/V tiles, 128 query rows per block (two consumer warpgroups).",
               dyn_smem=SMEM)
    k.const("ROWS", BR)
    k.const("HD", HD)
    k.const("DYN_SMEM", SMEM)
    k.const("Q_BUFFERS", QBUFS)
    out = k.param("out")
    ldo, scale = (k.param(p) for p in ("ldo", "scale"))
    tid = k.reg("u32", "tid")
    k(f"mov.u32 {tid}, %tid.x;")
    p = k.reg("pred", "p")
    t = k.reg("u32", "t")
    # Parameters load where first used: those both roles read, here, before the
    # roles branch apart.
    for name in ("items", "qblocks", "heads", "hd", "cu", "nq", "nk", "q_bstride", "q_varlen"):
        k.param(name)

    base, fullq0, emptyq0, full0, empty0 = (k.reg("u32", s) for s in ("base", "fullq0", "emptyq0", "full0",
                                                                      "empty0"))
    aligned_dyn_smem(k, base)
    k(f"add.u32 {fullq0}, {base}, {BARS};")
    k(f"add.u32 {emptyq0}, {fullq0}, {8 * QBUFS};")
    k(f"add.u32 {full0}, {emptyq0}, {8 * QBUFS};")
    k(f"add.u32 {empty0}, {full0}, {8 * STAGES};")

    # Thread 0 initialises the barriers; with an odd chunk count every thread
    # zeroes a slice of the zero chunks (Q's and each stage's K), which wgmma
    # (the async proxy) reads: fence.proxy.async before the barrier.
    skip = k.label("no_init")
    k(f"setp.ne.u32 {p}, {tid}, 0;")
    k(f"@{p} bra {skip};")
    for i in range(QBUFS):
        mbar_init(k, f"{fullq0}+{8 * i}", 1)
        mbar_init(k, f"{emptyq0}+{8 * i}", 128 * CONSUMERS)
    for s in range(STAGES):
        mbar_init(k, f"{full0}+{8 * s}", 1)
        mbar_init(k, f"{empty0}+{8 * s}", 128 * CONSUMERS)
    k("fence.mbarrier_init.release.cluster;")
    k.place(skip)
    if Z:
        zr = k.reg("b32", "zr")
        k(f"mov.b32 {zr}, 0;")
        zbase = ([i * QK_BYTES + A * ATOM + C * CHUNK for i in range(QBUFS)]
                 + [KOFF + s * STAGE + A * ATOM + C * CHUNK for s in range(STAGES)])
        za = k.reg("u32", "za")
        k(f"shl.b32 {za}, {tid}, 4;")
        k(f"add.u32 {za}, {za}, {base};")
        for zb in zbase:
            for off in range(0, CHUNK, 16 * THREADS):
                n = min(THREADS, (CHUNK - off) // 16)
                guard = ""
                if n < THREADS:
                    k(f"setp.lt.u32 {p}, {tid}, {n};")
                    guard = f"@{p} "
                k(f"{guard}st.shared.v4.b32 [{za}+{zb + off}], {{{zr}, {zr}, {zr}, {zr}}};")
        k("fence.proxy.async.shared::cta;")
    k("bar.sync 0;")

    stage, phase = k.reg("u32", "stage"), k.reg("u32", "phase")
    k(f"mov.u32 {stage}, 0;")
    k(f"mov.u32 {phase}, 0;")

    ring = Ring(k, p, stage, phase, STAGES, base, KOFF, STAGE, full0, empty0)

    def item():
        return Item(k, p, BR, BC, QBUFS, QK_BYTES, base, fullq0, emptyq0)

    consumer, done = k.label("consumer"), k.label("done")
    k(f"setp.lt.u32 {p}, {tid}, {128 * CONSUMERS};")
    k(f"@{p} bra {consumer};")
    # ---- producer: thread 256 ---------------------------------------------------
    setmaxnreg(k, PRODUCER_REGS, grow=False)
    k(f"setp.ne.u32 {p}, {tid}, {128 * CONSUMERS};")
    k(f"@{p} bra {done};")
    maps = {x: (k.param(f"tmap_{x}"), k.param(f"tmap_{x}_tail")) for x in "qkv"}
    producer(k, p, item(), ring, maps, (A, 64, ATOM, C, 8, CHUNK), (A, 64, ATOM, C, 8, CHUNK), LOAD, QK_BYTES)
    k(f"bra.uni {done};")

    # ---- consumers ------------------------------------------------------------
    k.place(consumer)
    setmaxnreg(k, CONSUMER_REGS, grow=True)
    wg, warp, lane = warpgroup_ids(k, tid)
    c2 = k.reg("u32", "c2")  # 2·(lane % 4): this lane's first column in an 8-column group
    k(f"and.b32 {c2}, {lane}, 3;")
    k(f"shl.b32 {c2}, {c2}, 1;")

    sched = SchedulerBarriers(k, wg, BAR_SCHED, k.param("turns"))
    sched.open(p)
    it = item().begin("cons")
    kl = it.kl  # the item's, for zero_tail_rows
    # Q descriptors for the item: this warpgroup's 64 rows of its Q buffer.
    qa = k.reg("u32", "qa")
    qdesc = []
    for s in range(4 * A):
        k(f"mad.lo.u32 {qa}, {wg}, {64 * 128}, {it.qbuf};")
        k(f"add.u32 {qa}, {qa}, {(s // 4) * ATOM + 32 * (s % 4)};")
        qdesc.append(wgmma_desc(k, qa, 16, 1024, True))
    for s in range((C + 1) // 2):
        k(f"mad.lo.u32 {qa}, {wg}, {64 * 16}, {it.qbuf};")
        k(f"add.u32 {qa}, {qa}, {A * ATOM + 2 * s * CHUNK};")
        qdesc.append(wgmma_desc(k, qa, CHUNK, 128, False))

    S = [k.regs_n("f32", f"s{n}_", 4) for n in range(BC // 8)]
    O = [k.regs_n("f32", f"o{n}_", 4) for n in range(HD // 8)]
    P = [k.regs_n("b32", f"p{s}_", 4) for s in range(BC // 16)]
    for r in (x for f in O for x in f):
        k(f"mov.f32 {r}, {ZERO};")
    m, lsum = softmax_state(k, 2)
    mbar_wait(k, it.qfull, it.qphase)

    j = k.reg("u32", "j")
    sk, sv, left = k.reg("u32", "sk"), k.reg("u32", "sv"), k.reg("u32", "left")
    partial = k.reg("pred", "partial")
    s_flat = [x for f in S for x in f]

    def tile_start():
        """Wait for the current stage's K and V; their addresses in sk, sv."""
        full = k.reg("u32", "cfull")
        ring.bar(full, full0)
        mbar_wait(k, full, phase)
        ring.tile(sk)
        k(f"add.u32 {sv}, {sk}, {QK_BYTES};")

    def issue_s():
        """S = Q·Kᵀ for the stage at sk (one wgmma group; the caller fenced)."""
        ka = k.reg("u32", "ka")
        for s in range(4 * A):
            k(f"add.u32 {ka}, {sk}, {(s // 4) * ATOM + 32 * (s % 4)};")
            wgmma_bf16(k, s_flat, qdesc[s], wgmma_desc(k, ka, 16, 1024, True), 1 if s else 0)
        for s in range((C + 1) // 2):
            k(f"add.u32 {ka}, {sk}, {A * ATOM + 2 * s * CHUNK};")
            wgmma_bf16(k, s_flat, qdesc[4 * A + s], wgmma_desc(k, ka, CHUNK, 128, False), 1 if 4 * A + s else 0)
        wgmma_commit(k)

    def issue_pv(v):
        """O += P·V for the V tile at shared address v (one wgmma group)."""
        va = k.reg("u32", "va")
        o_main = [x for f in O[:8 * A] for x in f]
        o_tail = [x for f in O[8 * A:] for x in f]
        for s in range(BC // 16):
            if A:
                k(f"add.u32 {va}, {v}, {s * 16 * 128};")
                wgmma_bf16_rs(k, o_main, P[s], wgmma_desc(k, va, ATOM, 1024, True), 1, trans_b=True)
            if C:
                k(f"add.u32 {va}, {v}, {A * ATOM + s * 16 * 16};")
                wgmma_bf16_rs(k, o_tail, P[s], wgmma_desc(k, va, 128, CHUNK, False), 1, trans_b=True)
        wgmma_commit(k)

    def zero_tail_rows():
        """Tile j, when short: zero V's rows past kv_len (the 256 consumer
        threads; the atoms row by row, 16 bytes a thread, so 8 neighbouring
        threads store 128 contiguous bytes; then the chunks), fence them for
        the async proxy, and meet at the consumers' barrier. Sets `left` (keys
        of the tile inside the sequence) and `partial`."""
        k(f"shl.b32 {left}, {j}, 7;")
        k(f"sub.u32 {left}, {kl}, {left};")
        k(f"setp.lt.u32 {partial}, {left}, {BC};")
        full_tile = k.label("full_tile")
        k(f"@!{partial} bra {full_tile};")
        zv = k.reg("b32", "zv")
        k(f"mov.b32 {zv}, 0;")
        idx, tot, r, cc, za, q_ = (k.reg("u32", s) for s in ("zi", "ztot", "zrow", "zch", "zad", "zq"))
        k(f"sub.u32 {tot}, {BC}, {left};")  # rows to clear
        if A:
            k(f"mul.lo.u32 {q_}, {tot}, {8 * A};")
            top, end = k.label("zatom"), k.label("zatom_end")
            k(f"mov.u32 {idx}, {tid};")
            k.place(top)
            k(f"setp.ge.u32 {p}, {idx}, {q_};")
            k(f"@{p} bra {end};")
            k(f"shr.u32 {r}, {idx}, 3;")      # (row, atom) pair, 8 chunks a row
            k(f"and.b32 {cc}, {idx}, 7;")
            if A > 1:
                at = k.reg("u32", "zat")
                k(f"rem.u32 {at}, {r}, {A};")
                k(f"div.u32 {r}, {r}, {A};")
                k(f"mad.lo.u32 {za}, {at}, {ATOM}, {sv};")
            else:
                k(f"mov.u32 {za}, {sv};")
            k(f"add.u32 {r}, {r}, {left};")
            k(f"mad.lo.u32 {za}, {r}, 128, {za};")
            k(f"mad.lo.u32 {za}, {cc}, 16, {za};")
            k(f"st.shared.v4.b32 [{za}], {{{zv}, {zv}, {zv}, {zv}}};")
            k(f"add.u32 {idx}, {idx}, {128 * CONSUMERS};")
            k(f"bra.uni {top};")
            k.place(end)
        if C:
            # Every row slot of every chunk, the rows below kv_len skipped: 8
            # neighbouring threads take 8 consecutive rows of one chunk.
            top, end = k.label("zchunk"), k.label("zchunk_end")
            k(f"mov.u32 {idx}, {tid};")
            k.place(top)
            k(f"setp.ge.u32 {p}, {idx}, {C * ROWS};")
            k(f"@{p} bra {end};")
            k(f"shr.u32 {cc}, {idx}, 7;")  # chunk, then row inside it
            k(f"and.b32 {r}, {idx}, {ROWS - 1};")
            k(f"mad.lo.u32 {za}, {cc}, {CHUNK}, {sv};")
            k(f"add.u32 {za}, {za}, {A * ATOM};")
            k(f"mad.lo.u32 {za}, {r}, 16, {za};")
            k(f"setp.ge.u32 {p}, {r}, {left};")
            k(f"@{p} st.shared.v4.b32 [{za}], {{{zv}, {zv}, {zv}, {zv}}};")
            k(f"add.u32 {idx}, {idx}, {128 * CONSUMERS};")
            k(f"bra.uni {top};")
            k.place(end)
        fence_proxy_async_shared(k)
        named_barrier(k, BAR_CONSUMERS, 128 * CONSUMERS)
        k.place(full_tile)

    alpha = [k.reg("f32", f"alpha{i}") for i in range(2)]

    def rescale_and_pack():
        """O ·= alpha; P ← S as bf16 pairs (O and P are free: their wgmma retired)."""
        rescale_rows(k, O, alpha)
        for s in range(BC // 16):
            lo, hi = S[2 * s], S[2 * s + 1]
            for dst, (x, y) in zip(P[s], ((lo[0], lo[1]), (lo[2], lo[3]), (hi[0], hi[1]), (hi[2], hi[3]))):
                k(f"cvt.rn.bf16x2.f32 {dst}, {y}, {x};")

    ops = SimpleNamespace(
        tile_start=tile_start, fence_s=True, issue_s=issue_s, issue_pv=issue_pv, after_issue=zero_tail_rows,
        softmax=lambda: softmax_tile(k, p, S, scale, partial, left, c2, m, lsum, alpha),
        rescale=rescale_and_pack, keep_v=lambda dst: k(f"mov.u32 {dst}, {sv};"))
    consumer_tiles(k, p, ring, j, it, ops, sched)
    store_item(k, O, lsum, (wg, warp, lane, t), it, out, ldo, c2, "bf16")
    it.finish()
    sched.close(p)
    k.place(done)
    return k


def kernels():
    return [attention_sm90(hd) for hd in HEAD_DIMS]
