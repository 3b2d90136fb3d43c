"""linear_bf16_sm90: the Hopper (sm_90a) bf16 GEMM, for the same shapes as
linear_bf16 (K and N multiples of 8, 16-byte aligned operands); the host picks it
on compute capability 9.x. Six variants, one generator: 128×256 output tiles
(linear_bf16_sm90) and 128×192 (linear_bf16_sm90_n192), each alone or in
clusters of two CTAs (_c2, below); the host takes the one whose persistent
schedule is shortest (src/cuda/linear.rs, sm90_variant). And 128×128 tiles,
one a consumer warpgroup (ping-pong, _pp, below), alone or in pairs: not yet
timed on a GPU, so taken only where TESSERA_CUDA_SM90_TILE_N=128 asks. Below,
BN is the width and CM the CTAs of a cluster.

Block: 384 threads. Warps 0-7 are two consumer warpgroups: warpgroup g computes
  rows 64g..64g+63 of the 128×BN output tile with wgmma m64nBNk16 (BN/2 f32
  accumulators per thread). Warpgroup 2 is the producer: thread 256 issues the TMA
  loads; the others exit once the warpgroup has given back its registers
  (setmaxnreg: 40 a thread for the producer, 232 for the consumers; without it
  ptxas allots 168 to every thread, which leaves the epilogue no room to have its
  loads in flight together).
Persistent: the grid is at most one block per SM; block b takes tiles b, b + grid,
  ... in rasterised order (groups of GROUP_M = 8 tile rows share W tiles in L2).
Pipeline: STAGES stages of (x tile 128×64, W tile BN×64) bf16 (48 / 40 KiB), loaded
  by TMA (tensor maps tmap_x, tmap_w: boxes of 64 columns, 128-byte swizzle, zero
  fill past M, N and K) and completed on mbarrier full[s] (count 1 + the bytes);
  the consumers wait on full[s], run 4 wgmma (K 16 each) from descriptors over
  the stage, commit, and once the wgmma group of the previous k-tile has retired
  (wait_group 1) thread 0 of each consumer warpgroup arrives on that stage's
  empty barrier (count 2: a wgmma group's completion is warpgroup-wide), which
  the producer waits on before reusing the stage. Stage and phase run on across
  tiles, so the producer loads the next tile's first k-tiles while the consumers
  finish the epilogue of this one.
Clusters (_c2, `.reqnctapercluster 2`): the two CTAs of a cluster compute
  vertically adjacent tiles (rows CM·u + rank of unit u; the grid hands out units
  of CM tile rows) and need the same W tile. Each CTA's producer loads its own x
  tile and BN/CM rows of the W tile, which it multicasts into the same stage of
  every CTA of the cluster (one L2 read for both: a third fewer bytes from L2
  per FLOP at 256 wide). So a stage of CTA r is written by every producer of the
  cluster: its full barrier expects the whole stage's bytes (the peers'
  complete_tx may land before this CTA's own expect_tx; the phase waits for the
  one arrival as well), and its empty barrier counts an arrival from every
  consumer warpgroup of the cluster (count 2·CM): thread r of each warpgroup
  releases the stage on CTA r's barrier through mapa (mbarrier.arrive
  .shared::cluster, the default .release.cta: with .release.cluster ptxas
  fences the whole GPU before each arrive). Both CTAs run the same units, so the
  multicasts pair up; a unit's tile rows past M load zeros and store nothing.
  The CTAs meet at a cluster barrier after initialising their mbarriers and
  again before exiting (a peer may still arrive on this CTA's barriers).
Ping-pong (linear_bf16_sm90_pp, _pp_c2: 128×128 tiles, 6 stages): each consumer
  warpgroup computes whole tiles of its own, both m64 row blocks of one (two
  m64n128k16 wgmma a k step, 128 accumulators a thread as at 256 wide), so one
  warpgroup's epilogue runs while the other's mainloop keeps the tensor cores
  busy (CUTLASS's KernelTmaWarpSpecializedPingpong); in the cooperative
  kernels both warpgroups finish a tile together and no wgmma is issued during
  its epilogue (27-39 % of the qkv / fc1 / out_proj samples on the H100,
  notes/h100-2026-11-25/profile.md). Warpgroup w takes every other tile of the
  block's, from the w-th; the producer loads the tiles' k-tiles in the block's
  order, so a stage is released by the one warpgroup (of each CTA of a
  cluster) whose tile it holds (empty count CM), and each warpgroup skips the
  other's k-tiles in the ring (frag.ring_skip). Their mainloops take turns
  (CUTLASS's OrderedSequenceBarrier, here two mbarriers of 128 arrivals):
  warpgroup w waits for its turn before its first full-barrier wait of a
  tile, and every thread of it arrives on the other's turn once its last
  k-tile is issued. The turn is what keeps the full-barrier waits within one
  phase: with more k-tiles a tile than twice the stages, a warpgroup waiting
  on the ring early would find its stage's barrier two phases behind, and
  the parity test would pass on the other tile's data. Warpgroup 0 takes the
  first turn by arriving on its own barrier.
Shared (dynamic): 1 KiB of alignment slack (the stages start at a 1024-byte
  boundary, the swizzle atom), the stages, the epilogue's staging buffers (two of
  64×64 bf16 per consumer warpgroup, 8 KiB each), then the mbarriers (ping-pong:
  the two turn barriers last).
Epilogue: + bias, GELU (tanh.approx), + residual in f32, rounded once to bf16,
  per 64×64 subtile of each warpgroup's 64×BN rows, written for each of the four
  flag sets of GELU and residual behind uniform branches (lib.specialise), so a
  linear issues nothing for what it does not have. Output row r adds residual
  row r mod res_rows (a linear passes m; patch embedding passes the tokens of
  an image, so its position embedding repeats over the batch: one rem a row).
  With a residual, the tile's residual rows are prefetched into L2 before the
  mainloop. The bias and
  residual loads go out one batch of column groups ahead of the math (8 groups,
  a subtile; 4 at 256 wide, where two batches of 8 in flight spill), at
  immediate offsets from one address a row; the results are written into a
  staging buffer (the 128-byte swizzle TMA uses) by stmatrix (bf16: two column
  groups' 4 pairs an instruction, conflict-free; f32: st.shared.v2 pairs), and
  one thread of the warpgroup stores the subtile with
  a TMA store (tensor map tmap_out, edges clipped by the map) while the
  warpgroup goes on to the next subtile and the next tile's mainloop. The two
  buffers alternate; before the warpgroup's named barrier that ends a subtile,
  the storing thread waits until every earlier store has read its buffer
  (wait_group.read 0), so the buffer the next subtile writes is free. Stores
  once went straight from the registers: 4-byte pieces of 16-byte row segments,
  the warpgroup waiting for them before its next mainloop.

linear_f32_sm90: the f32 GEMM in 3xTF32 on the same skeleton (K and N multiples
  of 4), 128×192 tiles, stages of K 32 (a 128-byte row of f32, the same swizzle),
  each product small·W_big + bigc·W_small + big·W_big (frag.split_tf32_rs: x's
  parts, with ±inf / NaN kept and a tf32-exact x's small part big·2^-40, so a ±inf
  weight still gives ±inf). tf32 wgmma reads B only from shared memory, so W's
  parts live there: a stage is the x tile, the W tile and W's small tile (16 + 24
  + 24 KiB, 3 stages). Warps 9-11 of the producer warpgroup (the converters)
  wait for each stage's TMA, split the W tile in place (big) and into the small
  tile, fence.proxy.async, and arrive on the stage's `ready` barrier (96
  arrivals). The consumers wait on `full` and `ready`; per k step of 8 each warp
  loads its A fragment by ldmatrix (tf32 pairs of b16 columns), splits it in
  registers and issues three m64n192k8 wgmma with A from registers: a wgmma
  group a step, two register sets alternating (wait_group 1 before a set is
  rewritten). A stage is released by lane 0 of every consumer warp (8
  arrivals: each warp's ldmatrix reads are its own) once its last group has
  retired: at the next k-tile's second step. The stage release is predicated,
  not branched around: a branch in the pipelined region makes ptxas serialise
  every wgmma (C7513). The epilogue stages f32 pairs (32 columns a 128-byte
  subtile row; 2-way bank conflicts, see emu_check.BANK_ALLOWANCE) and loads
  its bias and residual pairs coherently (ptxas hoists .nc loads across the
  subtiles' barriers, and the f32 pairs then take the registers). setmaxnreg:
  56 / 224."""

from ..asm import In, Kernel, Opt, Out, TMap, U32
from ..frag import (bulk_commit, bulk_wait, bulk_wait_read, cluster_sync, fence_proxy_async_shared, ldmatrix_x4,
                    mbar_arrive, mbar_arrive_cluster, mbar_arrive_tx, mbar_init, mbar_wait, named_barrier, ring_advance,
                    ring_skip, setmaxnreg, split_tf32_rs, split_tf32_specials, stmatrix_x4, sw128_offset, tma_load_2d,
                    tma_load_2d_multicast, tma_store_2d, warpgroup_ids, wgmma_bf16, wgmma_commit, wgmma_d_coords,
                    wgmma_desc_sw128, wgmma_fence, wgmma_tf32_rs, wgmma_wait)
from ..lib import addr, aligned_dyn_smem, specialise
from .gemm_common import epilogue_flags, ld_pair, raster
from .gemm_sm80 import bias_gelu_pair

BM, GROUP_M = 128, 8
ROW = 128                          # bytes of a tile row: the 128-byte swizzle's span
ESIZE = {"bf16": 2, "f32": 4}
TILE_NS = {"bf16": (256, 192),     # the variants: 128 x 256 and 128 x 192 output tiles
           "f32": (192,)}
CLUSTERS = {"bf16": (1, 2),        # CTAs per cluster: alone, or pairs sharing W tiles by multicast
            "f32": (1,)}
# The ping-pong variant's tile width: a warpgroup's own 128 x 128 tile.
PINGPONG_N = 128
# Column groups (of 8) whose epilogue loads go out together.
LOAD_BATCH = {("bf16", 256): 4, ("bf16", 192): 8, ("bf16", 128): 4, ("f32", 192): 4}
EPI_BUF_BYTES = 64 * ROW           # an epilogue subtile: 64 rows of a warpgroup x 128 bytes (8 KiB)
EPI_BUFS = 2                       # staging buffers per consumer warpgroup
CONSUMERS = 2                      # warpgroups
THREADS = 128 * (CONSUMERS + 1)    # + the producer warpgroup
# Registers a thread after setmaxnreg: (producer warpgroup, consumers). The f32
# producer's warps 9-11 split the W tiles (below).
REGS = {"bf16": (40, 232), "f32": (56, 224)}
for _p, _c in REGS.values():
    assert 128 * _p + 128 * CONSUMERS * _c <= 65536
CONVERTERS = 96                    # f32: threads of warps 9-11
CONVERT_BATCH = 2                  # 16-byte chunks a converter thread has in flight
SMEM_LIMIT = 227 * 1024            # per block, with the opt-in
A_BYTES = BM * ROW                 # 16 KiB


def tile_k(dt):
    """K of a tile: one 128-byte row (64 bf16, 32 f32)."""
    return ROW // ESIZE[dt]


def entry_name(dt, bn, cm=1, pingpong=False):
    if dt == "f32":
        assert bn == TILE_NS["f32"][0] and cm == 1 and not pingpong
        return "linear_f32_sm90"
    if pingpong:
        assert bn == PINGPONG_N
        return "linear_bf16_sm90_pp" + ("" if cm == 1 else f"_c{cm}")
    return "linear_bf16_sm90" + ("" if bn == 256 else f"_n{bn}") + ("" if cm == 1 else f"_c{cm}")


def linear_sm90(dt="bf16", BN=256, CM=1, pingpong=False):  # noqa: N803 (the tile constants' names)
    """The kernel of element type dt with BM x BN output tiles and as many
    stages as fit, in clusters of CM CTAs along M (1: no cluster); with
    `pingpong` each consumer warpgroup computes whole tiles of its own, the two
    taking turns on the tensor cores (module docstring)."""
    f32 = dt == "f32"
    pp = pingpong
    assert not (pp and f32) and (not pp or BN == PINGPONG_N)
    # m64 row blocks of the tile a consumer warpgroup computes: its 64 rows of
    # the shared tile, or (ping-pong) both halves of its own.
    HALVES = 2 if pp else 1        # noqa: N806
    es = ESIZE[dt]
    BK = tile_k(dt)                # noqa: N806
    EPI_N = ROW // es              # noqa: N806 (columns of an epilogue subtile)
    EPI_BATCH = EPI_N // 8         # noqa: N806 (its column groups of 8)
    PRODUCER_REGS, CONSUMER_REGS = REGS[dt]  # noqa: N806
    assert BM == 64 * CONSUMERS and BK * es == ROW and BN <= 256 and BN % 8 == 0 and (BN // 8) % EPI_BATCH == 0
    # Each CTA of a cluster loads BN / CM rows of the W tile and multicasts them;
    # each share starts on a 1024-byte swizzle atom.
    BH = BN // CM                  # noqa: N806
    assert BN % CM == 0 and BH % 8 == 0 and GROUP_M % CM == 0
    B_BYTES = BN * ROW             # noqa: N806
    # f32: the W tile's small parts (the converters' output) after the W tile.
    SMALL_BYTES = B_BYTES if f32 else 0  # noqa: N806
    STAGE_BYTES = A_BYTES + B_BYTES + SMALL_BYTES  # noqa: N806
    NBAR = 3 if f32 else 2         # noqa: N806 (mbarriers a stage: full, empty (, ready))
    EPI_BYTES = CONSUMERS * EPI_BUFS * EPI_BUF_BYTES  # noqa: N806 (32 KiB)
    # 1 KiB of alignment slack, the stages, the staging buffers, 8 bytes an
    # mbarrier.
    # Ping-pong: two more mbarriers, the warpgroups' turns.
    TURN_BYTES = 16 if pp else 0   # noqa: N806
    STAGES = (SMEM_LIMIT - 1024 - EPI_BYTES - TURN_BYTES) // (STAGE_BYTES + 8 * NBAR)  # noqa: N806 (4 bf16, 3 f32, 6 pp)
    EPI = STAGES * STAGE_BYTES     # noqa: N806 (offset of the staging buffers from the aligned base)
    BARS = EPI + EPI_BYTES         # noqa: N806 (offset of the mbarriers)
    SMEM = 1024 + BARS + 8 * NBAR * STAGES + TURN_BYTES  # noqa: N806
    # x and w are not read by the kernel (TMA reads them through the tensor maps); they
    # are the buffers the maps describe, which the host keeps borrowed for the launch.
    # Nor is `out`: the epilogue writes it through tmap_out (boxes of 64 x 64).
    params = [In("x"), In("w"), TMap("tmap_x", "x", (BM, BK), dtype=dt), TMap("tmap_w", "w", (BH, BK), dtype=dt),
              TMap("tmap_out", "out", (64, EPI_N), dtype=dt), Opt("bias"), Opt("res"), Out("out"), U32("m"),
              U32("n"), U32("k"), U32("flags"), U32("res_rows")]
    name = entry_name(dt, BN, CM, pp)
    # 256 wide, two batches of 8 column groups in flight (96 registers with the
    # 128 accumulators) spill; of 4, they do not.
    load_batch = LOAD_BATCH[dt, BN]
    assert EPI_BATCH % load_batch == 0
    pairs = "" if CM == 1 else f", in clusters of {CM} along M sharing W tiles by TMA multicast"
    if f32:
        doc = (f"{name}: Hopper f32 GEMM in 3xTF32, {BM}×{BN} tiles, tf32 wgmma fed by TMA through a\n"
               f"{STAGES}-stage mbarrier pipeline, W tiles split by three converter warps, persistent tiles.")
    elif pp:
        doc = (f"{name}: Hopper GEMM, {BM}×{BN} tiles, wgmma fed by TMA through a {STAGES}-stage\n"
               f"mbarrier pipeline, a producer and two consumer warpgroups on tiles of their own, taking\n"
               f"turns on the tensor cores (ping-pong), persistent tiles{pairs}.")
    else:
        doc = (f"{name}: Hopper GEMM, {BM}×{BN} tiles, wgmma fed by TMA through a {STAGES}-stage\n"
               f"mbarrier pipeline, a producer and two consumer warpgroups, persistent tiles{pairs}.")
    k = Kernel("linear_sm90_f32" if f32 else "linear_sm90", name, THREADS, params, "linear_sm90", doc=doc,
               dyn_smem=SMEM, cluster=CM)
    k.const("TILE_M", BM)
    k.const("TILE_N", BN)
    k.const("TILE_K", BK)
    k.const("DYN_SMEM", SMEM)
    k.const("CLUSTER", CM)
    k.const("PINGPONG", int(pp))
    tmap_x, tmap_w, tmap_out = k.param("tmap_x"), k.param("tmap_w"), k.param("tmap_out")
    bias, res = k.param("bias"), k.param("res")
    M, N, K, flags = (k.param(p) for p in ("m", "n", "k", "flags"))
    res_rows = k.param("res_rows")
    t, p = k.reg("u32", "t"), k.reg("pred", "p")
    tid = k.reg("u32", "tid")
    k(f"mov.u32 {tid}, %tid.x;")

    # The aligned base (the stages need 1024-byte alignment for the swizzle).
    base, full0, empty0 = k.reg("u32", "base"), k.reg("u32", "full0"), k.reg("u32", "empty0")
    aligned_dyn_smem(k, base)
    k(f"add.u32 {full0}, {base}, {BARS};")
    k(f"add.u32 {empty0}, {full0}, {8 * STAGES};")
    ready0 = turn0 = None
    if f32:
        ready0 = k.reg("u32", "ready0")
        k(f"add.u32 {ready0}, {empty0}, {8 * STAGES};")
    if pp:
        turn0 = k.reg("u32", "turn0")
        k(f"add.u32 {turn0}, {empty0}, {8 * STAGES};")

    # Thread 0 initialises the barriers; everyone waits for that, then the roles split.
    skip = k.label("no_init")
    k(f"setp.ne.u32 {p}, {tid}, 0;")
    k(f"@{p} bra {skip};")
    for s in range(STAGES):
        mbar_init(k, f"{full0}+{8 * s}", 1)
        # One arrival per consumer warpgroup of every CTA of the cluster (the
        # stage is overwritten in all of them by one multicast); ping-pong: by
        # the one warpgroup of each CTA whose tile the stage holds; f32: per
        # consumer warp (each warp's ldmatrix reads the x tile).
        mbar_init(k, f"{empty0}+{8 * s}", CM if pp else CONSUMERS * (4 if f32 else CM))
        if f32:     # every converter thread, once its part of the stage's W tile is split
            mbar_init(k, f"{ready0}+{8 * s}", CONVERTERS)
    if pp:          # the warpgroups' turns: every thread of the other warpgroup
        for w_ in range(CONSUMERS):
            mbar_init(k, f"{turn0}+{8 * w_}", 128)
    k("fence.mbarrier_init.release.cluster;")
    k("fence.proxy.async.shared::cta;")
    k.place(skip)
    if CM == 1:
        k("bar.sync 0;")
    else:
        # The peers' barriers are initialised before anyone arrives on them or
        # multicasts into their shared memory.
        cluster_sync(k, relaxed=True)
    rank = None
    if CM > 1:
        rank = k.reg("u32", "rank")
        k(f"mov.u32 {rank}, %cluster_ctarank;")

    # Tile bookkeeping shared by both roles.
    tiles_m, tiles_n, ntiles, ktiles = (k.reg("u32", s) for s in ("tiles_m", "tiles_n", "ntiles", "ktiles"))
    k(f"add.u32 {tiles_m}, {M}, {BM - 1};")
    k(f"div.u32 {tiles_m}, {tiles_m}, {BM};")
    k(f"add.u32 {tiles_n}, {N}, {BN - 1};")
    k(f"div.u32 {tiles_n}, {tiles_n}, {BN};")
    # Tiles are handed out in units of CM vertically adjacent tiles, one per CTA of
    # a cluster (the last unit's lower tiles may lie past M: they load zeros and
    # store nothing, but take part in the multicasts).
    units_m = tiles_m
    if CM > 1:
        units_m = k.reg("u32", "units_m")
        k(f"add.u32 {units_m}, {tiles_m}, {CM - 1};")
        k(f"div.u32 {units_m}, {units_m}, {CM};")
    k(f"mul.lo.u32 {ntiles}, {units_m}, {tiles_n};")
    k(f"add.u32 {ktiles}, {K}, {BK - 1};")
    k(f"div.u32 {ktiles}, {ktiles}, {BK};")
    tile, step = k.reg("u32", "tile"), k.reg("u32", "step")
    m0, n0 = k.reg("u32", "m0"), k.reg("u32", "n0")

    def tile_loop(body, stem, share=None):
        """for tile = ctaid; tile < ntiles; tile += nctaid: (m0, n0) of it, body().
        In clusters the unit is the cluster's: every CTA of it runs the same
        iterations (their multicasts pair up), CTA r taking tile row CM·u + r.
        With `share` (ping-pong: the consumer warpgroup, 0 or 1) every other
        tile of those, from the share-th."""
        top, end = k.label(f"{stem}_tile"), k.label(f"{stem}_tiles_done")
        k(f"mov.u32 {tile}, {'%ctaid.x' if CM == 1 else '%clusterid.x'};")
        k(f"mov.u32 {step}, {'%nctaid.x' if CM == 1 else '%nclusterid.x'};")
        if share is not None:
            k(f"mad.lo.u32 {tile}, {share}, {step}, {tile};")
            k(f"shl.b32 {step}, {step}, 1;")
        k.place(top)
        k(f"setp.ge.u32 {p}, {tile}, {ntiles};")
        k(f"@{p} bra {end};")
        tm, tn = raster(k, tile, units_m, tiles_n, GROUP_M // CM)
        if CM > 1:
            k(f"mad.lo.u32 {tm}, {tm}, {CM}, {rank};")
        k(f"mul.lo.u32 {m0}, {tm}, {BM};")
        k(f"mul.lo.u32 {n0}, {tn}, {BN};")
        body()
        k(f"add.u32 {tile}, {tile}, {step};")
        k(f"bra.uni {top};")
        k.place(end)

    stage, phase = k.reg("u32", "stage"), k.reg("u32", "phase")
    k(f"mov.u32 {stage}, 0;")
    k(f"mov.u32 {phase}, 0;")

    def advance():
        ring_advance(k, stage, phase, STAGES)

    consumer = k.label("consumer")
    done, idle = k.label("done"), k.label("idle")
    k(f"setp.lt.u32 {p}, {tid}, {128 * CONSUMERS};")
    k(f"@{p} bra {consumer};")
    # ---- producer: thread 256 -----------------------------------------------------
    setmaxnreg(k, PRODUCER_REGS, grow=False)
    k(f"setp.ne.u32 {p}, {tid}, {128 * CONSUMERS};")
    conv = k.label("converter") if f32 else idle
    k(f"@{p} bra {conv};")

    def produce():
        kt = k.reg("u32", "pkt")

        def one_k(_):
            sa, full, empty, par, kc = (k.reg("u32", s) for s in ("psa", "pfull", "pempty", "ppar", "pkc"))
            k(f"mad.lo.u32 {empty}, {stage}, 8, {empty0};")
            k(f"xor.b32 {par}, {phase}, 1;")
            mbar_wait(k, empty, par)
            k(f"mad.lo.u32 {full}, {stage}, 8, {full0};")
            mbar_arrive_tx(k, full, A_BYTES + B_BYTES)   # what TMA writes (not the small parts)
            k(f"mad.lo.u32 {sa}, {stage}, {STAGE_BYTES}, {base};")
            k(f"mul.lo.u32 {kc}, {kt}, {BK};")
            tma_load_2d(k, sa, tmap_x, kc, m0, full)
            k(f"add.u32 {sa}, {sa}, {A_BYTES};")
            if CM == 1:
                tma_load_2d(k, sa, tmap_w, kc, n0, full)
            else:
                # This CTA's share of the W tile, rows BH·rank.., into every CTA.
                nr = k.reg("u32", "pnr")
                k(f"mad.lo.u32 {sa}, {rank}, {BH * BK * 2}, {sa};")
                k(f"mad.lo.u32 {nr}, {rank}, {BH}, {n0};")
                tma_load_2d_multicast(k, sa, tmap_w, kc, nr, full, (1 << CM) - 1)
            advance()

        loop_k(kt, one_k, "pk")

    def loop_k(kt, body, stem):
        top, end = k.label(f"{stem}_loop"), k.label(f"{stem}_end")
        k(f"mov.u32 {kt}, 0;")
        k.place(top)
        k(f"setp.ge.u32 {p}, {kt}, {ktiles};")
        k(f"@{p} bra {end};")
        body(kt)
        k(f"add.u32 {kt}, {kt}, 1;")
        k(f"bra.uni {top};")
        k.place(end)

    tile_loop(produce, "prod")
    k(f"bra.uni {done};")

    if f32:
        # ---- converters (f32): threads 288..383 ----------------------------------
        # Each stage's W tile, once TMA has filled it, becomes its 3xTF32 parts:
        # big (x with the low 13 bits cleared; ±inf, and NaN as x + x) in place,
        # small (x − big; 0 where x is not finite) into the stage's small tile, at
        # the same offsets (both tiles start on a 1024-byte swizzle atom, so the
        # swizzled layout is the same). Thread i takes 16-byte chunks i, i + 96,
        # ...: each warp's loads and stores are 512 contiguous bytes (4 wavefronts,
        # no conflicts). The consumers wait for the stage's `ready` barrier, which
        # every converter thread arrives on after its fence.proxy.async (the
        # wgmma reads the parts through the async proxy).
        k.place(conv)
        k(f"setp.lt.u32 {p}, {tid}, {128 * CONSUMERS + 32};")
        k(f"@{p} bra {idle};")
        coff = k.reg("u32", "coff")
        k(f"sub.u32 {coff}, {tid}, {128 * CONSUMERS + 32};")
        k(f"shl.b32 {coff}, {coff}, 4;")
        per_thread = B_BYTES // 16 // CONVERTERS
        assert per_thread * 16 * CONVERTERS == B_BYTES and per_thread % CONVERT_BATCH == 0

        def convert():
            kt = k.reg("u32", "vkt")

            def one_k(_):
                full, ready, wb = k.reg("u32", "vfull"), k.reg("u32", "vready"), k.reg("u32", "vwb")
                k(f"mad.lo.u32 {full}, {stage}, 8, {full0};")
                mbar_wait(k, full, phase)
                k(f"mad.lo.u32 {wb}, {stage}, {STAGE_BYTES}, {base};")
                k(f"add.u32 {wb}, {wb}, {A_BYTES};")
                k(f"add.u32 {wb}, {wb}, {coff};")
                for j0 in range(0, per_thread, CONVERT_BATCH):  # chunks in flight at a time
                    chunks = []
                    for j in range(j0, j0 + CONVERT_BATCH):
                        x = k.regs_n("b32", "vx", 4)
                        k(f"ld.shared.v4.b32 {{{', '.join(map(str, x))}}}, [{wb}+{16 * CONVERTERS * j}];")
                        chunks.append((j, x))
                    for j, x in chunks:
                        parts = [split_tf32_specials(k, r, "vs", round_small=False) for r in x]
                        off = 16 * CONVERTERS * j
                        k(f"st.shared.v4.b32 [{wb}+{off}], {{{', '.join(str(q[0]) for q in parts)}}};")
                        k(f"st.shared.v4.b32 [{wb}+{off + B_BYTES}], {{{', '.join(str(q[2]) for q in parts)}}};")
                fence_proxy_async_shared(k)
                k(f"mad.lo.u32 {ready}, {stage}, 8, {ready0};")
                mbar_arrive(k, ready)
                advance()

            loop_k(kt, one_k, "vk")

        tile_loop(convert, "conv")
        k(f"bra.uni {done};")

    # ---- consumers ---------------------------------------------------------------
    k.place(consumer)
    setmaxnreg(k, CONSUMER_REGS, grow=True)
    wg, warp, lane = warpgroup_ids(k, tid)
    # Stage releases: one arrival per warpgroup on each CTA's empty barrier, by
    # threads 0..CM-1 of the warpgroup (thread r on CTA r's). The wgmma group's
    # completion is warpgroup-wide, so one thread's wait_group covers its warps.
    # f32: lane 0 of every warp, as each warp's ldmatrix reads of the x tile are
    # its own (they retired before the warp issued its part of the wgmma).
    wtid, releaser = k.reg("u32", "wtid"), k.reg("pred", "releaser")
    k(f"and.b32 {wtid}, {tid}, {31 if f32 else 127};")
    k(f"setp.lt.u32 {releaser}, {wtid}, {CM};")

    def release(e):
        if CM == 1:
            mbar_arrive(k, e, pred=releaser)
        else:
            mbar_arrive_cluster(k, e, wtid, pred=releaser)
    # The accumulators of each m64 row block (wgmma m64nBNk16: BN/2 a thread).
    accs = [k.regs_n("f32", "d" if h == 0 else f"d{h}_", BN // 2) for h in range(HALVES)]
    prev = k.reg("u32", "prev")
    has_bias, has_gelu, has_res = epilogue_flags(k, flags)
    # This thread's first output row (of its first row block) and column within
    # the tile.
    lrow, lcol = k.reg("u32", "lrow"), k.reg("u32", "lcol")
    if pp:
        k(f"mul.lo.u32 {lrow}, {warp}, 16;")
    else:
        k(f"shl.b32 {lrow}, {wg}, 6;")
        k(f"mad.lo.u32 {lrow}, {warp}, 16, {lrow};")
    k(f"shr.u32 {t}, {lane}, 2;")
    k(f"add.u32 {lrow}, {lrow}, {t};")
    k(f"and.b32 {lcol}, {lane}, 3;")
    k(f"shl.b32 {lcol}, {lcol}, 1;")

    always = k.reg("pred", "always")
    k(f"setp.eq.u32 {always}, {tid}, {tid};")

    # The epilogue's staging (see `staging`): with an even number of subtiles a
    # tile, subtile b uses buffer b % 2; with an odd number the buffers alternate
    # across tiles too, and `eu` (0 or EPI_BUF_BYTES) tracks the one to use next.
    eu = None
    if (BN // EPI_N) % 2:
        eu = k.reg("u32", "eu")
        k(f"mov.u32 {eu}, 0;")
    for r in range(64):
        for c in range(8):
            assert sw128_offset(r, c) == 128 * r + ((16 * c) ^ (16 * (r % 8)))
            assert sw128_offset(r + 8, c) == sw128_offset(r, c) + 1024
    for w_ in range(4):           # the bf16 stmatrix addressing (`staging`)
        for l_ in range(32):
            r_ = 16 * w_ + 8 * ((l_ >> 3) & 1) + l_ % 8
            for c in range(0, 8, 2):
                assert 128 * r_ + ((16 * ((l_ >> 4) ^ (l_ % 8))) ^ (16 * c)) == sw128_offset(r_, c + (l_ >> 4))

    def staging(b):
        """Subtile b's staging buffer (this warpgroup's), and the address parts
        (row, x16) of this thread's writes in it: bf16, the row it names to
        stmatrix (below); f32, its own pairs (below). Recomputed from %tid.x
        per subtile (a dozen instructions): the 256-wide kernel has no
        registers to keep them in across the mainloop. Also `lead`, thread 0
        of the warpgroup, which stores the buffer."""
        tx, w, buf, row, x16, lead = (k.reg(t_, n_) for t_, n_ in (
            ("u32", "etx"), ("u32", "ewg"), ("u32", "ebuf"), ("u32", "erow"), ("u32", "x16"), ("pred", "lead")))
        k(f"mov.u32 {tx}, %tid.x;")
        k(f"shr.u32 {w}, {tx}, 7;")
        k(f"mul.lo.u32 {buf}, {w}, {EPI_BUFS * EPI_BUF_BYTES};")
        if eu is not None:
            k(f"add.u32 {buf}, {buf}, {eu};")
        k(f"add.u32 {buf}, {buf}, {base};")
        k(f"add.u32 {buf}, {buf}, {EPI + (0 if eu is not None else (b % 2) * EPI_BUF_BYTES)};")
        k(f"and.b32 {x16}, {tx}, 127;")
        k(f"setp.eq.u32 {lead}, {x16}, 0;")
        k(f"shr.u32 {row}, {x16}, 5;")                    # the warp of the warpgroup
        if not f32:
            # bf16: stmatrix.x4 of column groups c, c + 1 (c even), matrix q =
            # rows 8 (q & 1) of the warp's 16, chunk c + (q >> 1): lane l names
            # row r = 16 warp + 8 ((l >> 3) & 1) + l % 8 (so r % 8 = l % 8) of
            # matrix l / 8, at 128 r + 16 ((c + (l >> 4)) ^ (l % 8)) = 128 r +
            # ((16 ((l >> 4) ^ (l % 8))) ^ 16 c): `row` is 128 r + the buffer,
            # `x16` the part before ^ 16 c.
            ln, q = k.reg("u32", "eln"), k.reg("u32", "eq")
            k(f"and.b32 {ln}, {tx}, 31;")
            k(f"and.b32 {x16}, {ln}, 7;")
            k(f"and.b32 {q}, {ln}, 8;")
            k(f"add.u32 {q}, {q}, {x16};")
            k(f"mad.lo.u32 {row}, {row}, 16, {q};")
            k(f"shl.b32 {row}, {row}, 7;")
            k(f"add.u32 {row}, {row}, {buf};")
            k(f"shr.u32 {q}, {ln}, 4;")
            k(f"xor.b32 {x16}, {x16}, {q};")
            k(f"shl.b32 {x16}, {x16}, 4;")
            return buf, row, x16, lead
        # f32: this thread's pair c (c = lane % 4) of column group j (0..3), rows
        # r = 16 warp + 8 h + lane / 4 (so r % 8 = lane / 4), is bytes 8 (c % 2)
        # of chunk 2j + c / 2: at 128 r + 16 ((2j + c / 2) ^ (lane / 4)) + 8 (c %
        # 2) = row + ((16 ((c / 2) ^ (lane / 4))) ^ 32 j) + 1024 h.
        k(f"and.b32 {x16}, {tx}, 31;")
        k(f"shr.u32 {x16}, {x16}, 2;")                    # lane / 4
        k(f"mad.lo.u32 {row}, {row}, 16, {x16};")         # 16 warp + lane / 4: the row (h = 0)
        k(f"shl.b32 {row}, {row}, 7;")
        k(f"add.u32 {row}, {row}, {buf};")
        k(f"and.b32 {tx}, {tx}, 3;")
        cb = k.reg("u32", "ecb")
        k(f"shr.u32 {cb}, {tx}, 1;")
        k(f"xor.b32 {x16}, {x16}, {cb};")
        k(f"shl.b32 {x16}, {x16}, 4;")
        k(f"and.b32 {tx}, {tx}, 1;")
        k(f"mad.lo.u32 {row}, {tx}, 8, {row};")           # + 8 (c % 2)
        return buf, row, x16, lead

    def stage_in(kt):
        """Wait until the current stage holds k-tile kt (its TMA; f32: and the
        converters' W parts): the stage's x and W tile addresses, and scale-d
        (accumulate after the first k-tile)."""
        full, sa, sb = k.reg("u32", "cfull"), k.reg("u32", "csa"), k.reg("u32", "csb")
        first = k.reg("pred", "first")
        k(f"mad.lo.u32 {full}, {stage}, 8, {full0};")
        mbar_wait(k, full, phase)
        if f32:
            ready = k.reg("u32", "cready")
            k(f"mad.lo.u32 {ready}, {stage}, 8, {ready0};")
            mbar_wait(k, ready, phase)
        k(f"mad.lo.u32 {sa}, {stage}, {STAGE_BYTES}, {base};")
        k(f"add.u32 {sb}, {sa}, {A_BYTES};")
        k(f"setp.ne.u32 {first}, {kt}, 0;")
        return sa, sb, first

    def prefetch_residual():
        """With a residual, ask L2 for the tile's residual rows before the
        mainloop, so the epilogue's loads of them hit L2 rather than wait for
        DRAM (the H100 out_proj epilogue spent 45 % of its stall samples on
        those loads, notes/h100-2026-11-25). The tile's consumer threads (both
        warpgroups' 256; ping-pong: its warpgroup's 128) share its 128 rows:
        thread t takes part t % parts of row t / parts, one prefetch a 128-byte
        line; rows past M and columns past N are skipped."""
        parts = 1 if pp else 128 * CONSUMERS // BM
        assert parts in (1, 2)
        half = BN * es // parts
        skip = k.label("no_res_prefetch")
        k(f"@!{has_res} bra.uni {skip};")
        tx, r, c, o = k.reg("u32", "ptx"), k.reg("u32", "prow"), k.reg("u32", "pcol"), k.reg("u32", "pofs")
        rin = k.reg("pred", "prin")
        k(f"mov.u32 {tx}, %tid.x;")
        k(f"{'and.b32' if pp else 'shr.u32'} {r}, {tx}, {127 if pp else 1};")
        k(f"add.u32 {r}, {r}, {m0};")
        k(f"setp.lt.u32 {rin}, {r}, {M};")
        k(f"rem.u32 {r}, {r}, {res_rows};")
        if pp:
            k(f"mov.u32 {c}, {n0};")
        else:
            k(f"and.b32 {c}, {tx}, 1;")
            k(f"mad.lo.u32 {c}, {c}, {half // es}, {n0};")
        k(f"mad.lo.u32 {o}, {r}, {N}, {c};")
        at = addr(k, res, o, es, "pra")
        for j in range(0, half, ROW):
            cj, pj = k.reg("u32", "pcj"), k.reg("pred", "ppj")
            k(f"add.u32 {cj}, {c}, {j // es};")
            k(f"setp.lt.and.u32 {pj}, {cj}, {N}, {rin};")
            k(f"@{pj} prefetch.global.L2 [{at}+{j}];")
        k.place(skip)

    def tile_body(one_k):
        """A tile's consumer work: one_k(kt) for each k-tile, then the last
        stage's release once its wgmma retired, and the epilogue. Ping-pong:
        the mainloop waits for this warpgroup's turn and hands the turn to the
        other once its last k-tile is issued, then skips the other's tile's
        k-tiles in the ring."""
        kt = k.reg("u32", "ckt")
        prefetch_residual()
        if pp:
            mine = k.reg("u32", "myturn")
            k(f"mad.lo.u32 {mine}, {wg}, 8, {turn0};")
            mbar_wait(k, mine, tpar)
            k(f"xor.b32 {tpar}, {tpar}, 1;")
        loop_k(kt, lambda _: one_k(kt), "ck")
        if pp:
            theirs = k.reg("u32", "theirturn")
            k(f"xor.b32 {theirs}, {wg}, 1;")
            k(f"mad.lo.u32 {theirs}, {theirs}, 8, {turn0};")
            mbar_arrive(k, theirs)
            ring_skip(k, stage, phase, STAGES, ktiles)
        wgmma_wait(k, 0)
        e = k.reg("u32", "cempty")
        k(f"mad.lo.u32 {e}, {prev}, 8, {empty0};")
        # K = 0 leaves no k-tile: nothing to release, and the accumulators are zero.
        no_k = k.label("no_k")
        k(f"setp.eq.u32 {p}, {ktiles}, 0;")
        k(f"@{p} bra {no_k};")
        release(e)
        k.place(no_k)
        epilogue()

    if f32:
        # ldmatrix.x4 over the x tile gives a k step's tf32 A fragment: matrix q
        # (lanes 8q..8q+7 give its rows) is rows 8 (q & 1) + 0..7 of the warp's
        # 16, 16-byte chunk 2s + (q >> 1) (k 4 (q >> 1)..+3 of step s), so lane l
        # holds a0 = (l / 4, l % 4), a1 = (8 + l / 4, l % 4), a2 = (l / 4, 4 + l
        # % 4), a3 = (8 + l / 4, 4 + l % 4). Lane l's row r = 16 warp + l % 8 +
        # 8 ((l >> 3) & 1) has r % 8 = l % 8, so its chunk 2s + (l >> 4) lies at
        # 16 ((2s + (l >> 4)) ^ (l % 8)) = (16 ((l >> 4) ^ (l % 8))) ^ 32 s:
        # `arow` is 128 r + the warpgroup's rows, `achunk` the part before ^ 32 s.
        arow, achunk, t2 = k.reg("u32", "arow"), k.reg("u32", "achunk"), k.reg("u32", "at")
        k(f"and.b32 {t2}, {lane}, 7;")
        k(f"shr.u32 {achunk}, {lane}, 4;")
        k(f"xor.b32 {achunk}, {achunk}, {t2};")
        k(f"shl.b32 {achunk}, {achunk}, 4;")
        k(f"mad.lo.u32 {arow}, {warp}, 16, {t2};")
        k(f"and.b32 {t2}, {lane}, 8;")
        k(f"add.u32 {arow}, {arow}, {t2};")
        k(f"mad.lo.u32 {arow}, {wg}, 64, {arow};")
        k(f"shl.b32 {arow}, {arow}, 7;")
        for w_ in range(4):
            for lane_ in range(32):
                row_ = 16 * w_ + lane_ % 8 + 8 * ((lane_ >> 3) & 1)
                for st_ in range(BK // 8):
                    want = sw128_offset(row_, 2 * st_ + (lane_ >> 4))
                    got = 128 * row_ + ((16 * ((lane_ >> 4) ^ (lane_ % 8))) ^ (32 * st_))
                    assert want == got

    def consume_f32():
        """The f32 mainloop, 3xTF32: per k step of 8, A's fragment from the x
        tile (ldmatrix) split in registers (split_tf32_rs), and three wgmma with
        A from registers against the W tile's parts the converters wrote:
        small·W_big + bigc·W_small + big·W_big (the small products first, while
        the accumulators are small). Each k step is a wgmma group; its A
        registers stay untouched until it retires, so the steps alternate two
        register sets (the step before this one may still run: wait_group 1
        before a set is written). The stage of the previous k-tile is released
        once its last group retires, at the second step of this one."""

        def one_k(kt):
            sa, sb, first = stage_in(kt)
            k(f"add.u32 {sa}, {sa}, {arow};")
            for s_ in range(BK // 8):
                wgmma_wait(k, 1)
                if s_ == 1:
                    # Predicated, not branched around: a branch here would end
                    # the wgmma pipeline stage for ptxas, which then serialises
                    # every wgmma (C7513).
                    e, rel = k.reg("u32", "cempty"), k.reg("pred", "rel")
                    k(f"setp.ne.and.u32 {rel}, {kt}, 0, {releaser};")
                    k(f"mad.lo.u32 {e}, {prev}, 8, {empty0};")
                    mbar_arrive(k, e, pred=rel)
                a_ad, ch = k.reg("u32", "aad"), k.reg("u32", "ach")
                k(f"xor.b32 {ch}, {achunk}, {32 * s_};")
                k(f"add.u32 {a_ad}, {sa}, {ch};")
                raw = k.regs_n("b32", "ax", 4)
                ldmatrix_x4(k, raw, a_ad)
                parts = [split_tf32_rs(k, r, "ap") for r in raw]
                big, small, bigc = ([q[i] for q in parts] for i in range(3))
                b_big, b_small = k.reg("u32", "dbb"), k.reg("u32", "dbs")
                k(f"add.u32 {b_big}, {sb}, {32 * s_};")
                k(f"add.u32 {b_small}, {b_big}, {B_BYTES};")
                d_big, d_small = wgmma_desc_sw128(k, b_big), wgmma_desc_sw128(k, b_small)
                wgmma_fence(k)
                acc = accs[0]
                wgmma_tf32_rs(k, acc, small, d_big, first if s_ == 0 else always)
                wgmma_tf32_rs(k, acc, bigc, d_small, always)
                wgmma_tf32_rs(k, acc, big, d_big, always)
                wgmma_commit(k)
            k(f"mov.u32 {prev}, {stage};")
            advance()

        tile_body(one_k)

    def consume():
        def one_k(kt):
            sa, sb, first = stage_in(kt)
            if not pp:      # this warpgroup's 64 rows of the x tile
                k(f"mad.lo.u32 {sa}, {wg}, {64 * ROW}, {sa};")
            wgmma_fence(k)
            for s in range(BK // 16):
                # k step s of each row block (ping-pong: two), W's descriptor shared.
                d_b = None
                for h, acc in enumerate(accs):
                    a_s = k.reg("u32", "das")
                    k(f"add.u32 {a_s}, {sa}, {64 * ROW * h + 32 * s};")
                    if d_b is None:
                        b_s = k.reg("u32", "dbs")
                        k(f"add.u32 {b_s}, {sb}, {32 * s};")
                        d_a, d_b = wgmma_desc_sw128(k, a_s), wgmma_desc_sw128(k, b_s)
                    else:
                        d_a = wgmma_desc_sw128(k, a_s)
                    wgmma_bf16(k, acc, d_a, d_b, first if s == 0 else always)
            wgmma_commit(k)
            # The previous k-tile's group has retired: its stage may be refilled.
            wgmma_wait(k, 1)
            skip = k.label("no_release")
            k(f"setp.eq.u32 {p}, {kt}, 0;")
            k(f"@{p} bra {skip};")
            e = k.reg("u32", "cempty")
            k(f"mad.lo.u32 {e}, {prev}, 8, {empty0};")
            release(e)
            k.place(skip)
            k(f"mov.u32 {prev}, {stage};")
            advance()

        tile_body(one_k)

    def epilogue():
        zero_k = k.label("acc_live")
        k(f"setp.ne.u32 {p}, {ktiles}, 0;")
        k(f"@{p} bra {zero_k};")
        for acc in accs:
            for r in acc:
                k(f"mov.f32 {r}, 0f00000000;")
        k.place(zero_k)
        # Each m64 row block's first row (ping-pong: its warpgroup's tile's
        # rows 64 h..), and the thread's first column.
        row0s = [k.reg("u32", "row0") for _ in accs]
        col0 = k.reg("u32", "col0")
        for h, row0 in enumerate(row0s):
            k(f"add.u32 {row0}, {m0}, {lrow};")
            if h:
                k(f"add.u32 {row0}, {row0}, {64 * h};")
        k(f"add.u32 {col0}, {n0}, {lcol};")
        # Written twice behind one uniform branch, with and without the residual:
        # a linear without one (qkv, fc1) then issues no residual address, load,
        # unpack or add (predicated off, they were about a third of its epilogue's
        # instructions).
        specialise(k, has_res, lambda with_res: epilogue_blocks(row0s, col0, with_res), "epi_res")

    def epilogue_blocks(row0s, col0, with_res):
        """Each m64 row block's epilogue, its subtiles' TMA stores at tile row
        64·wg (ping-pong: 64·h of the warpgroup's own tile; the second block
        loads the bias pairs again, from L1: kept across the blocks they would
        take 32 registers)."""
        for h, (row0, acc) in enumerate(zip(row0s, accs)):
            epilogue_body(row0, col0, with_res, acc, h if pp else wg)

    def epilogue_body(row0, col0, with_res, acc, block):
        obase = []
        if with_res:
            for h in range(2):
                r, rin = k.reg("u32", "orow"), k.reg("pred", f"rin{h}")
                k(f"add.u32 {r}, {row0}, {8 * h};")
                k(f"setp.lt.u32 {rin}, {r}, {M};")
                k(f"rem.u32 {r}, {r}, {res_rows};")
                k(f"mad.lo.u32 {r}, {r}, {N}, {col0};")
                obase.append((r, rin))

        # Loads in batches of `load_batch` column groups, each batch's bias and
        # residual pairs issued before the previous batch is finished.
        # Loaded just before its use, each pair would wait one global round trip
        # (the residual tile was prefetched into L2 at the tile's start, see
        # `prefetch_residual`).
        # `res` is read through the non-coherent path: it never aliases `out`
        # (distinct borrows on the host; the emulator checks that no .nc byte is
        # written by the launch). Not in f32: ptxas moves .nc loads across the
        # subtiles' barriers, and hoisted there, the f32 pairs (two registers
        # each) of later subtiles take the registers the batching meant to keep.
        # One address each for the bias row and the two residual rows, the
        # column groups at immediate offsets. This thread's pair of column group
        # jt is inside N where 8 jt < N - col0 (signed; N is even, so is col0):
        # `rem`, and `remb` for the bias (0 without one).
        bias_at = addr(k, bias, col0, es, "ba")
        res_at = [addr(k, res, o, es, "ra") for o, _ in obase]
        rem, remb = k.reg("s32", "erem"), k.reg("s32", "eremb")
        k(f"sub.s32 {rem}, {N}, {col0};")
        k(f"selp.s32 {remb}, {rem}, 0, {has_bias};")

        def issue(b):
            loads = []
            for jt in range(load_batch * b, load_batch * (b + 1)):
                pb = k.reg("pred", "pbias")
                k(f"setp.lt.s32 {pb}, {8 * jt}, {remb};")
                bias_pair = ld_pair(k, dt, f"{bias_at}+{8 * es * jt}", pb, nc=not f32, stem="bias")
                res_pairs = []
                for h, (_, rin) in enumerate(obase):
                    pr = k.reg("pred", "pres")
                    k(f"setp.lt.and.s32 {pr}, {8 * jt}, {rem}, {rin};")
                    res_pairs.append(ld_pair(k, dt, f"{res_at[h]}+{8 * es * jt}", pr, nc=not f32, stem="res"))
                loads.append((jt, bias_pair, res_pairs))
            return loads

        def finish(b, loads, stage_regs):
            """The math of column groups `loads` of subtile b, its bf16 (f32) pairs
            into the staging buffer: written twice, with and without GELU, behind
            one uniform branch (a branch per pair was if-converted by ptxas, so a
            linear without GELU issued its instructions predicated off: 11 % of
            the qkv kernel's stall samples on the H100, notes/h100-2026-11-25)."""
            specialise(k, has_gelu, lambda gelu: finish_math(b, loads, stage_regs, gelu), "fin_gelu")

        def finish_math(b, loads, stage_regs, with_gelu):
            _, rowbuf, x16, _ = stage_regs
            packed = {}               # bf16: (column group, h) -> the pair, for stmatrix
            for jt, (b0, b1), res_pairs in loads:
                if f32:               # column group jt - 8 b of the subtile: 32 bytes of the row
                    sw = k.reg("u32", "esw")
                    k(f"xor.b32 {sw}, {x16}, {32 * (jt - EPI_BATCH * b)};")
                for h in range(2):
                    j = 4 * jt + 2 * h
                    assert wgmma_d_coords(j) == (8 * h, 8 * jt) and wgmma_d_coords(j + 1) == (8 * h, 8 * jt + 1)
                    x0, x1 = acc[j], acc[j + 1]
                    bias_gelu_pair(k, x0, x1, b0, b1, with_gelu)
                    if res_pairs:
                        r0, r1 = res_pairs[h]
                        k(f"add.f32 {x0}, {x0}, {r0};")
                        k(f"add.f32 {x1}, {x1}, {r1};")
                    if f32:
                        sa = k.reg("u32", "esa")
                        k(f"add.u32 {sa}, {rowbuf}, {sw};")
                        k(f"st.shared.v2.f32 [{sa}+{1024 * h}], {{{x0}, {x1}}};")
                        continue
                    pk = k.reg("b32", "pk")
                    k(f"cvt.rn.bf16x2.f32 {pk}, {x1}, {x0};")
                    packed[jt, h] = pk
            # bf16: column groups c, c + 1 (rows h = 0, 1 of each) by one stmatrix
            # (see `staging`); 8 pairs a batch took 8 st.shared and their addresses.
            for jt in sorted({jt for jt, _ in packed}):
                if jt % 2:
                    continue
                sw, sa = k.reg("u32", "esw"), k.reg("u32", "esa")   # chunk jt - 8 b of the row
                k(f"xor.b32 {sw}, {x16}, {16 * (jt - EPI_BATCH * b)};")
                k(f"add.u32 {sa}, {rowbuf}, {sw};")
                stmatrix_x4(k, sa, [packed[jt, 0], packed[jt, 1], packed[jt + 1, 0], packed[jt + 1, 1]])

        def store(b, stage_regs):
            """Subtile b is in its buffer: one thread stores it."""
            buf, _, _, lead = stage_regs
            fence_proxy_async_shared(k)
            # Every store issued so far has read its buffer, so the one the next
            # subtile writes is free once the barrier below is passed.
            bulk_wait_read(k, 0, pred=lead)
            barid = k.reg("u32", "barid")
            k(f"add.u32 {barid}, {wg}, 1;")
            named_barrier(k, barid, 128)
            scol, srow = k.reg("u32", "scol"), k.reg("u32", "srow")
            k(f"add.u32 {scol}, {n0}, {EPI_N * b};")
            if isinstance(block, int):
                k(f"add.u32 {srow}, {m0}, {64 * block};")
            else:
                k(f"mad.lo.u32 {srow}, {block}, 64, {m0};")
            tma_store_2d(k, tmap_out, scol, srow, buf, pred=lead)
            bulk_commit(k, pred=lead)
            if eu is not None:
                k(f"xor.b32 {eu}, {eu}, {EPI_BUF_BYTES};")

        # Load batches of LOAD_BATCH column groups, each issued one batch ahead.
        nb = BN // 8 // load_batch
        per_sub = EPI_BATCH // load_batch
        pending = issue(0)
        stage_regs = None
        for i in range(nb):
            sub = i // per_sub
            if i % per_sub == 0:
                stage_regs = staging(sub)
            following = issue(i + 1) if i + 1 < nb else None
            finish(sub, pending, stage_regs)
            if i % per_sub == per_sub - 1:
                store(sub, stage_regs)
            pending = following

    tpar = None
    if pp:
        # Warpgroup 1 starts at the CTA's second tile: past the first's k-tiles
        # in the ring. Warpgroup 0 takes the first turn (its own arrivals
        # complete phase 0 of its turn barrier); `tpar` is the parity of the
        # turn a warpgroup waits for next.
        skip0, tpar = k.reg("u32", "skip0"), k.reg("u32", "tpar")
        k(f"mul.lo.u32 {skip0}, {wg}, {ktiles};")
        ring_skip(k, stage, phase, STAGES, skip0)
        k(f"mov.u32 {tpar}, 0;")
        first_turn = k.reg("pred", "firstturn")
        k(f"setp.eq.u32 {first_turn}, {wg}, 0;")
        mbar_arrive(k, turn0, pred=first_turn)
    tile_loop(consume_f32 if f32 else consume, "cons", share=wg if pp else None)
    # Shared memory must outlive the last stores' reads of it.
    bulk_wait(k, 0, pred=staging(0)[3])
    k.place(done)
    if CM > 1:
        # Nor may it go while a peer still arrives on its barriers (the last
        # stage releases): the working threads meet the peers' before exiting.
        cluster_sync(k, aligned=False)
    k.place(idle)
    return k


def kernels(dt="bf16"):
    out = [linear_sm90(dt, bn, cm) for cm in CLUSTERS[dt] for bn in TILE_NS[dt]]
    if dt == "bf16":
        out += [linear_sm90(dt, PINGPONG_N, cm, pingpong=True) for cm in CLUSTERS[dt]]
    return out
