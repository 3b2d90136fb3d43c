#!/usr/bin/env python3
"""A small SIMT emulator for the PTX subset tessera's kernels use.

Not a GPU and not a model of one: it exists so the hand-written kernels can be
checked for index arithmetic, tile edges, barriers, shared-memory races,
out-of-bounds and misaligned accesses, asynchronous-copy discipline and
numerical results on a machine with no GPU. What it cannot check: timing,
register pressure, races on global memory, and any place where our reading of
the PTX ISA differs from the hardware. It counts shared-memory bank conflicts
when asked (run_kernel(..., banks=BankStats()); the model is in BankStats).

Execution model: one block at a time (a cluster launch: one cluster at a time,
see Clusters); every thread has its own pc; the threads
at the smallest pc execute together (vectorised with numpy), which reconverges
structured control flow. Threads that wait (on an mbarrier phase, or at a
bar.sync not yet complete) are left out of that choice until released, so
independent roles (a producer warp looping in one place, consumer warpgroups in
another) run interleaved. bar.sync without a thread count requires every live
thread of the block at the same bar.sync: threads reaching it wait for the
others; an error if one of those exits or waits at a different bar.sync. With a
thread count (`bar.sync a, b`, a named barrier: see Semantics) it completes when
b threads, in whole warps, have arrived at barrier a. Warp-collective
instructions (shfl.sync, vote.sync, bar.warp.sync, elect.sync, ldmatrix, mma)
require every lane they name (the whole warp for the .aligned ones) at the same
instruction; warpgroup-collective ones (wgmma.*, setmaxnreg) all 128 threads of
each executing warpgroup (warps 4i..4i+3). If every live thread waits on
mbarriers or barriers nothing can complete any more, the launch fails with a
deadlock error naming the barriers and their states (mbarrier phases and
counts; for named barriers the id and the threads arrived / expected; for the
cluster barrier the threads arrived). Shared
memory starts filled with 0xFF bytes (NaN), registers with zeros; global
accesses must fall inside an allocation and be naturally aligned (the whole
vector for .v2/.v4).

Semantics (PTX ISA 9.x; fragment layouts also checked against CUTLASS cute
copy_traits_sm75 / mma_traits_sm80):
  * f32 add/sub/mul/div.rn/rcp.rn/sqrt.rn/fma.rn are correctly rounded (fma with
    a single rounding). `.approx` / `.full` ops (div, rcp, sqrt, rsqrt, ex2, lg2,
    sin, cos, tanh) are computed in float64 and rounded once to f32: the
    emulator does NOT model the hardware's approximation error (up to 2 ulp for
    ex2, 2^-11 relative for tanh, ...), only the special values of the ISA
    tables and div.approx's zero result for 2^126 < |b| < 2^128. `.ftz` flushes
    subnormal inputs and results to sign-preserving zero; NaN results are the
    canonical 0x7fffffff. min/max return the non-NaN input (`.NaN`: NaN), with
    -0 < +0.
  * mma.m16n8k16 (bf16/f16 inputs, f32 accumulators) and mma.m16n8k8 (.tf32
    inputs: the top 19 bits of each register, the low 13 ignored) form A·B + C
    exactly in float64 and round once to f32; the hardware's internal
    accumulation order and precision are not modelled.
  * cp.async: a copy reads global memory when issued but lands in shared memory
    only when a cp.async.wait_group / wait_all of the issuing thread retires its
    group. Until then any read of the destination bytes, any store to them and
    any second cp.async onto them is an error, as is exiting with copies pending.
    With strict_async=True (the default) retired bytes are visible only to the
    issuing thread (the ISA's rule) until a barrier of the whole block (bar.sync
    without a count, or a named barrier every warp of the block took part in) or
    a full-mask bar.warp.sync executed by the issuing lane (threads of its warp);
    reading them earlier from another thread is an error. (A named barrier of
    fewer warps does not make them visible to its participants: conservative.)
  * Barriers: bar.sync / barrier.sync{.aligned} a{, b}; a is the barrier id
    0..15, b the thread count, a positive multiple of 32 up to the block's size
    (immediates or registers, checked when executed). Without b, or with an
    immediate b = the block's thread count (rounded up to whole warps), it is
    the whole-block barrier above (any id; all its threads must name the same
    id). With b (a named barrier): warps arrive whole - every live lane of an
    arriving warp executes it with its guard true (.aligned), else an error -
    and each counts 32 threads (its exited lanes too, as the hardware counts
    warps); when b threads have arrived at barrier a it completes: the waiting
    threads go on and it resets for reuse. Arrivals at one id with different
    counts (or at an id threads wait at as a whole-block barrier), and more than
    b threads arriving before it completes, are errors. Different bar.sync
    instructions may complete one named barrier. A thread exiting while a named
    barrier is pending is not an error by itself: a count never reached ends in
    the deadlock error. The warps of a completing named barrier are ordered as
    below (races, mbarrier.init, release of reads for TMA); one whose warps are
    every warp of the block acts as a whole-block barrier in every respect.
    bar.arrive a, b (b below the block's size) counts its warps as bar.sync
    does, and they go on: what they did before it is ordered before what the
    waiting warps do after the barrier completes, nothing the other way
    (FlashAttention-3's scheduler barriers: one warpgroup's arrive lets the
    other's bar.sync through).
  * Shared-memory races (check_races=True, the default): a byte written by one
    thread and read or written by another, or read by one and written by
    another, is an error unless the accesses are ordered (happens-before): a
    barrier's completion orders everything its warps did before it before
    everything they do after it, transitively through chains of barriers
    (warp-level vector clocks; barriers count whole warps, so this is exact),
    the whole-block barrier and a block's start ordering the whole block; within
    a warp a full-mask bar.warp.sync also orders its lanes. So a byte written by
    warpgroup 1 and read by warpgroup 2 with only warpgroup 1's named barrier
    between them is a race. Tracked per granule (the smallest shared access
    size): the last writer (an unordered write is itself an error, so it stands
    for the earlier ones) and, per warp, the latest read and the lanes that read
    since that warp's last barrier. A cp.async counts as a write when issued
    (so refilling a buffer other threads read since the last barrier is
    caught); ldmatrix reads for every lane of its warp; a TMA store reads its
    source as its issuing thread when issued. One store instruction writing
    different values to one address from several threads is an error (global
    memory too).
  * ld.global.nc: the bytes read that way must not be written by the same
    launch (checked at the end of run_kernel; the CUDA Programming Guide's rule
    for the read-only data cache: "read-only for the entire lifetime of the
    kernel").
  * Launch limits: block <= 1024 threads, .reqntid (exact) / .maxntid (total),
    static shared memory <= 48 KiB, static + dynamic <= 48 KiB unless
    allow_large_smem (cudaFuncAttributeMaxDynamicSharedMemorySize), <= 227 KiB
    (per CTA). Clusters (run_kernel(..., cluster=(cx, cy, cz))): at most 8 CTAs,
    the grid a multiple of the cluster in every dimension; .reqnctapercluster
    must equal the cluster given (launching without one is an error too),
    .explicitcluster needs one, .maxclusterrank bounds its size.
  * Operand types follow the ISA's compatibility rules (bit-size types match any
    type of the same size, same-size integers match each other; ld/st/cvt may use
    wider registers, chopping sources and sign/zero-extending destinations).
    Integer division by zero (unspecified in the ISA) is an error.
  * %warpid is %tid / 32 (linear thread index), %laneid its remainder.
  * Kernel parameters: `.param .align 64 .b8 p[128]` is an opaque tensor map:
    run_kernel takes a TensorMap (the emulator's stand-in for a CUtensorMap,
    see its doc) or its 128 encoded bytes there. `mov.u64 %rd, p` gives the
    parameter's .param address (PARAM_SPACE_BASE + its offset), `cvta.param.u64`
    the generic one (PARAM_GENERIC_BASE + offset); a global access through either
    is an error. Parameters are laid out at their natural alignment (64 for maps).
  * mbarrier (shared::cta objects, 8 bytes, state in a side table; arrive /
    expect_tx / complete_tx also through .shared::cluster addresses, e.g. onto
    another CTA's mbarrier, see Clusters): init sets
    the expected count (1..2^20-1); a phase completes when its pending arrivals
    and its tx-count are both zero: the parity flips and pending becomes the
    expected count again. arrive{.expect_tx} = tx-count += txCount, then pending
    -= count (an arrival beyond the phase's pending count is an error: a phase
    waiting only on tx-count has none left); expect_tx / complete_tx add to /
    subtract from the signed tx-count (|tx-count| < 2^20; complete_tx may come
    before its expect_tx, but not exceed it once the arrivals are done).
    A phase waits for both: complete_tx may come before the expect_tx of its
    phase (a peer's multicast landing before this CTA's producer armed the
    barrier: tx-count negative meanwhile, the phase still waiting for the
    arrival).
    try_wait / test_wait.parity q is true iff the phase of parity q has completed,
    i.e. the current phase's parity != q (a fresh barrier: q = 1 is true at once);
    the parity operand must be 0 or 1. A false result lets the thread go on (pc
    advanced) only once the barrier completes a phase: it waits, out of the
    scheduler, until then (`L: try_wait p; @!p bra L` then retries and passes).
    For test_wait that wait also ends when every live thread waits (its false
    result stands); for try_wait that is a deadlock. strict_waits=True (default):
    the first try of a thread at a wait instruction returns false even when the
    phase has completed, and the thread goes on at once (it might have come
    before the completion; its retry sees the real state), so a kernel that
    ignores the result is caught whatever the schedule. A successful wait
    records that the thread has observed every phase completed so far. Generic
    loads / stores of an initialised mbarrier's bytes are errors, as is another
    thread using it before a barrier orders it after the init (bar.sync after
    mbarrier.init + fence.mbarrier_init, or a named barrier both took part in),
    arriving on an uninitialised one, and the block exiting while TMA bytes are
    owed to an incomplete phase. mbarrier.arrive's state result is the phase
    number.
  * cp.async.bulk.tensor.2d (TMA, tile mode, completing on an mbarrier): issued
    by each active thread; copies box[0] x box[1] elements at (c0, c1) (inner,
    outer; may be negative or past the end: those elements read as zero), row r
    of the box at dst + r * box[0] * elem; with the 128-byte swizzle (dst 1024-
    byte aligned, else 128) byte a of the destination lands at a ^ (((a >> 7) & 7)
    << 4). The copy lands at issue; complete_tx(box bytes, OOB included) follows.
    The in-bounds source bytes must lie in allocations. .multicast::cluster
    (ctaMask: a .b16 / .u16 / .u32 register or an immediate, bit r = CTA rank
    r): the box lands at the destination's offset in the shared memory of every
    CTA in the mask, each completing the mbarrier at the mbarrier operand's
    offset in that CTA (each landing checked as a TMA of the issuing thread into
    that CTA: alignment, pending copies, released reads, ...). Without it the
    destination is the issuer's own shared memory or, through a mapa address,
    another CTA's (its mbarrier in the same CTA).
  * cp.async.bulk.tensor.2d.global.shared::cta (TMA store, tile mode, bulk
    async-groups): issued by each active thread; the box at (c0, c1), laid out
    in shared memory at src exactly as a TMA load lays it out at dst (alignment
    and 128-byte swizzle included), is read and its in-bounds elements (0 <= x <
    dims[0], 0 <= y < dims[1]) written to global memory; out-of-bounds ones are
    not written (a box entirely outside writes nothing). The in-bounds
    destination bytes must lie in allocations (checked at issue); they count as
    written by the launch for ld.global.nc. The copy is deferred: it reads
    shared memory and writes global memory when the issuing thread's bulk
    async-group retires. cp.async.bulk.commit_group closes the thread's
    uncommitted TMA stores into a group (an empty one if none);
    cp.async.bulk.wait_group N and wait_group.read N retire all but the N newest
    committed groups of the thread, oldest first (both perform the whole copy:
    .read only promises the source was read, and global memory is not checked
    for races). Until its store retires, any write to a source byte (st.shared,
    cp.async, TMA load, mbarrier.init; any thread) is an error, as is a thread
    exiting with uncommitted or unretired stores. At issue the store reads its
    source as an ld.shared of the issuing thread would (race detector, pending
    cp.async, cp.async visibility, mbarrier objects, TMA-written bytes only once
    the issuer observed their phase). Proxy fence: a generic store to shared
    memory (st.shared, and a cp.async when it lands) marks its bytes with the
    writer; that thread's fence.proxy.async or fence.proxy.async.shared::{cta,
    cluster} (not .global) fences the marked bytes it wrote; a TMA store whose
    source holds a byte not fenced, or fenced by a fence not ordered before the
    store's issue (the issuer's own, or a barrier - or a full-mask bar.warp.sync
    in the writer's warp - between the fence and the issue), is an error naming
    the writer. TMA loads clear the marks of the bytes they write.
  * Memory model of the asynchronous paths (per 16-byte shared chunk): bytes a
    TMA wrote may be read (ld.shared, ldmatrix, wgmma) or written generically
    only by threads that have observed the completion of that TMA's phase (for
    wgmma: every thread of the warpgroup; ldmatrix: every lane); a generic
    16-byte store makes its chunk ordinary data again. Reads of those
    bytes (and every wgmma operand read) are recorded per reader - a thread
    (ld.shared), a warp (ldmatrix), a warpgroup (wgmma) - and must be released
    before a TMA may overwrite them: the read must have retired (wgmma: a
    wgmma.wait_group retired its group) and then some thread of the reader
    arrived on an mbarrier (for a warp / warpgroup: any of its threads: the
    wait_group is warpgroup-collective), and the TMA's issuing thread must have
    observed the phase that arrival completes. Every arrival of the reader after
    the retirement counts (each read keeps, per mbarrier, the first phase an
    arrival of its reader after the retirement belongs to, until a TMA
    overwrites its bytes): the issuer must have observed one of them, for every
    reader of the bytes, so a warpgroup may release a stage on several
    mbarriers (in a cluster: one in each CTA whose producer refills it). A
    whole-block barrier releases every retired read, and a read retired before a
    barrier (a named one, a cluster barrier too) that orders it before the TMA's
    issue (happens-before, as for races: the reader thread's warp, the warp, or
    one of the warpgroup's warps) needs no more; nor do the issuer's own
    retired loads. Of a warpgroup's wgmma reads of a chunk only the latest
    counts (its releases release the earlier ones). A TMA onto bytes of an
    unretired wgmma operand, of a pending cp.async, of an mbarrier, of the
    source of an unretired TMA store, or of an earlier TMA whose phase has not
    completed, is an error. TMA writes and wgmma reads do not enter the race
    detector as generic accesses do: a TMA write resets the detector's state of
    its bytes (errors if another thread stored them, or read bytes no TMA had
    written, with no barrier ordering that before the TMA's issue); a wgmma read
    is checked against generic stores by threads outside its warpgroup that no
    barrier orders before it (one of its warps taking part is enough) and
    recorded as a read by every lane of the warpgroup. fence.proxy.async matters
    for TMA stores only (above): the generic -> async proxy ordering of TMA
    loads and wgmma operands is not checked. mbarriers order generic accesses
    as the PTX memory model says: an mbarrier.arrive (.release unless
    .relaxed) releases what its warp did before it, and a try_wait / test_wait
    that observes a phase's completion (.acquire unless .relaxed) orders its
    warp after every release of that phase and of the phases before it - at
    warp granularity, as the barriers (one lane's arrival or observation stands
    for its warp). So generic stores another warp reads (or a warpgroup's wgmma)
    after such a hand-off are not races; without the hand-off (or a barrier)
    they are.
  * wgmma (warpgroup-collective, .sync.aligned): mma_async m64nNk16 (N a
    multiple of 8 in 8..256), .f32 accumulators, .bf16 / .f16 inputs, or
    m64nNk8 with .tf32 inputs (below); B, and A
    unless it comes from registers, in shared memory through matrix
    descriptors: start ((d & 0x3FFF) << 4), LBO (bits 16-29, << 4), SBO (bits
    32-45, << 4), base offset (bits 49-51, must be 0), swizzle (bits 62-63: 1 =
    128B, 0 = none; 64B / 32B are rejected; other bits must be 0). i is the row
    of A (0..63) or the row n of B (0..N-1), k in 0..15: D = A·Bᵀ (+ D when
    scale-d), formed in float64 and rounded once to f32 like mma. K-major
    operands (imm-trans 0): 128B: element (i, k) at lin = start + (i / 8) SBO +
    (i % 8) 128 + 2k, stored at lin ^ (((lin >> 7) & 7) << 4), start within the
    first 128 bytes of a 1024-byte atom, LBO unused; none: start + (i / 8) SBO +
    (k / 8) LBO + (i % 8) 16 + 2 (k % 8). MN-major operands (imm-trans 1, the
    canonical layouts of CUTLASS make_gmma_desc<Major::MN>): 128B: lin = start +
    2 (i % 64) + (i / 64) LBO + 128 (k % 8) + (k / 8) SBO (64 MN elements a
    128-byte row, 8 k rows an atom), swizzled and start-checked as above; none:
    start + 2 (i % 8) + (i / 8) SBO + 16 (k % 8) + (k / 8) LBO (core matrices of
    8 MN elements x 8 k). A from registers (7 operands: {d}, {a0, a1, a2, a3},
    b-desc, scale-d, imm-scale-a, imm-scale-b, imm-trans-b): register r (.b32)
    of lane l of warp w of the warpgroup holds (16w + l/4 + 8(r & 1), 8(r >> 1)
    + 2(l % 4)) in its low 16 bits and the next column in its high 16 bits.
    m64nNk8 .f32.tf32.tf32: K-major operands only (no imm-trans: {d}, a-desc,
    b-desc, scale-d, imm-scale-a, imm-scale-b, or {d}, {a0, a1, a2, a3},
    b-desc, scale-d, imm-scale-a, imm-scale-b), 4-byte elements, k in 0..7
    (element (i, k) of a 128B K-major operand at lin = start + (i / 8) SBO +
    (i % 8) 128 + 4k; none: start + (i / 8) SBO + (k / 4) LBO + (i % 8) 16 +
    4 (k % 4)); each element read as mma's tf32 (its low 13 bits ignored); A
    register r of lane l of warp w holds (16w + l/4 + 8(r & 1), l % 4 +
    4(r >> 1)) (CUTLASS ALayout_64x8).
    Descriptors and scale-d must be equal across the warpgroup; imm-scale-a/b
    must be 1, imm-trans-a/b 0 or 1. Accumulator fragment: register j of lane l
    of warp w of the warpgroup holds (16w + l/4 + 8((j >> 1) & 1), 8(j >> 2) +
    2(l % 4) + (j & 1)). The accumulators are written (and A registers read)
    when the instruction issues; until a wgmma.wait_group retires its group, any
    other instruction touching its accumulator or A registers is an error (as is
    another wgmma.mma_async using them in the other role), as is a write to its
    operand bytes (st.shared, cp.async, TMA) and a thread exiting. Consecutive
    mma_async may share accumulators, or A registers, while in flight.
    commit_group closes the warpgroup's uncommitted operations into a group;
    wait_group N retires all but the N newest groups. mma_async needs a
    wgmma.fence since the start and since any other instruction touched its
    accumulator or A registers.
  * Clusters (sm_90). A cluster of C = cx*cy*cz CTAs of T threads runs as one
    emulated block: CTA rank r (x fastest: %cluster_ctaid.x + cx
    %cluster_ctaid.y + cx cy %cluster_ctaid.z) owns the threads r*Tp .. r*Tp +
    T - 1, Tp = T rounded up to a whole warpgroup (128), so warps and
    warpgroups never straddle CTAs; thread numbers in messages are these
    cluster-wide ones (with rank and %tid). Per thread: %tid, %ntid, %warpid,
    %laneid of its CTA; %ctaid = %clusterid * cluster dims + %cluster_ctaid;
    %cluster_ctarank, %cluster_nctarank, %cluster_ctaid / %cluster_nctaid,
    %clusterid / %nclusterid (.x .y .z) and %is_explicit_cluster (.pred: the
    launch gave a cluster, or the kernel declares one). A launch without a
    cluster is one of 1x1x1 (rank 0 of 1, %clusterid = %ctaid), as on the GPU,
    at the speed of a plain launch. Shared memory: each CTA has its own, a
    window of W bytes of one flat array (W = its shared size rounded up to 1
    KiB); shared::cta addresses (symbols and everything computed from them)
    are offsets in the thread's own CTA's memory - the same values in every
    CTA, as on the hardware, so wgmma descriptors and swizzle arithmetic are
    unchanged - and every .shared / .shared::cta access (ld / st, ldmatrix,
    cp.async, mbarrier, TMA operands, wgmma descriptors) is checked against and
    lands in that CTA's memory (a shared::cluster address there is an error
    naming both CTAs). shared::cluster addresses are CLUSTER_WINDOW (16 MiB) +
    r * W + offset: mapa.shared::cluster.{u32,u64} d, a, r maps a (a
    shared::cta or shared::cluster address) to CTA rank r (r outside the
    cluster: an error); ld / st.shared::cluster, mbarrier.arrive{.expect_tx}
    / expect_tx / complete_tx .shared::cluster and the .shared::cluster
    destination of cp.async.bulk.tensor take them (a thread's own shared::cta
    addresses too). Barriers: bar.sync / barrier.sync, with or without a thread
    count, are per CTA (barrier id a of rank r is not that of rank s; a
    whole-block bar.sync waits for its CTA's live threads only, the other CTAs
    running on). barrier.cluster.arrive{.release|.relaxed}{.aligned} /
    barrier.cluster.wait{.acquire}{.aligned}: a thread's wait completes once
    every live thread of the cluster has arrived since its previous wait
    (exited threads do not count); arriving twice without a wait, or waiting
    without an arrival, is an error; .aligned: every live thread of the warp
    executes it. For the race detector and everything ordered by barriers
    (mbarrier.init's visibility, released TMA reads, proxy fences) the wait
    orders every access its arriving warps made before their (.release)
    arrivals before everything after it, in every CTA; a .relaxed arrival
    orders only what its warp did before its latest fence.{sc,acq_rel,release,
    mbarrier_init}.{cluster,gpu,sys} (so fence.mbarrier_init.release.cluster +
    barrier.cluster.arrive.relaxed publishes the mbarrier inits; the fence is
    taken as a release fence of all that went before it). Accesses to another
    CTA's shared memory are ordered by cluster barriers only (mbarriers do not
    order generic accesses, as within a CTA). Exit: a CTA's threads may exit
    while its peers run on, but once all of them have, its shared memory is
    gone: any later access to it (a mapa'd ld / st, a remote arrive, a
    multicast landing there) is an error, and so is the last exit itself if a
    peer's earlier access to that memory is not ordered before it (a cluster
    barrier before exiting). Mbarriers, TMA landings, releases and
    observations work across CTAs as within one (a warpgroup's read of its
    CTA's stage released by arrivals on both CTAs' empty barriers; the peer's
    producer observing its own). The scheduler is the block's: waiting threads
    (try_wait, bar.sync, barrier.cluster.wait) leave the choice, so a CTA
    waiting on another never starves it. Bank accounting counts each warp's
    requests once (CTAs are not mixed in a warp).
  * .version / .target: the sm_90 instructions need .version >= 8.0 and .target
    sm_90 or later (wgmma, setmaxnreg: sm_90a), when the module declares them.

Instructions (anything else is rejected when the kernel is first launched):
  control     bra{.uni}, ret, exit, trap, bar.sync{.aligned} /
              barrier{.cta}.sync{.aligned} a{, b} (a: barrier 0..15, b: thread
              count, whole warps; each an immediate or a .u32 register),
              bar.warp.sync, fence.proxy.async{.shared::cta, .shared::cluster}
              (fences generic shared stores for TMA stores), membar / other
              fences (incl. fence.proxy.async.global, fence.mbarrier_init,
              fence.acq_rel.cluster: no-ops but for .relaxed cluster arrivals) /
              nanosleep / prefetch (incl. prefetch.tensormap) (no-ops; a
              prefetch.global address must lie in a buffer of the launch)
  cluster     barrier.cluster.arrive{.release|.relaxed}{.aligned},
              barrier.cluster.wait{.acquire}{.aligned},
              mapa.shared::cluster.{u32,u64} d, a, rank; special registers
              %cluster_ctarank, %cluster_nctarank, %cluster_ctaid.{x,y,z},
              %cluster_nctaid.{x,y,z}, %clusterid.{x,y,z}, %nclusterid.{x,y,z},
              %is_explicit_cluster
  data        mov (incl. {lo, hi} pack / unpack, symbol and parameter
              addresses), cvta,
              ld / st .param / .global / .shared{::cta, ::cluster} (.v2 / .v4,
              .nc, cache hints), cvt (int <-> int, int <-> f32, f32 <-> f64,
              f32 <-> bf16 / f16, .bf16x2 / .f16x2 pairs, .rni / .rzi / .rmi / .rpi,
              .sat, .ftz, .relu, .satfinite), selp, prmt (default mode), lop3,
              cvta.param / cvta.to.param (parameter windows)
  integer     add, sub, mul.{lo,hi,wide}, mad.{lo,hi,wide}, div, rem, min, max,
              neg, abs, and, or, xor, not, cnot, shl, shr, popc, clz
              (.u16/.s16/.b16 .. .u64/.s64/.b64), bfe.{u,s}{32,64},
              bfi.b{32,64}, and / or / xor / not .pred,
              setp (all comparisons, .and / .or / .xor with {!}c, p|q)
  float       add, sub, mul, fma, mad.rn, div.{rn,approx,full}, rcp.{rn,approx},
              sqrt.{rn,approx}, rsqrt / ex2 / lg2 / sin / cos / tanh .approx,
              min, max (.NaN), neg, abs with .ftz / .sat; .f64 add, sub, mul,
              div, neg, abs, min, max; setp .f32 / .f64 incl. unordered
  warp        shfl.sync.{up,down,bfly,idx}.b32 (d|p form too), vote.sync
              .{all,any,uni}.pred / .ballot.b32, activemask, ldmatrix.sync
              .aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16, stmatrix.sync
              .aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16 (sm_90), mma.sync.aligned
              .m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 and
              .m16n8k8.row.col.f32.tf32.tf32.f32, elect.sync d|p
  warpgroup   wgmma.fence / commit_group / wait_group N .sync.aligned,
              wgmma.mma_async.sync.aligned.m64nNk16.f32.{bf16.bf16,f16.f16}
              {d..}, a-desc, b-desc, scale-d (predicate or 0/1), 1, 1,
              trans-a, trans-b (0 / 1) | {d..}, {a0, a1, a2, a3}, b-desc,
              scale-d, 1, 1, trans-b (0 / 1);
              setmaxnreg.{inc,dec}.sync.aligned.u32 (no-op)
  async       cp.async.{ca,cg}.shared.global (cp-size 4 / 8 / 16, src-size or
              ignore-src, cache hints), cp.async.commit_group / wait_group /
              wait_all; cp.async.bulk.tensor.2d.shared::{cluster,cta}.global
              {.tile}.mbarrier::complete_tx::bytes{.multicast::cluster}
              {.L2::cache_hint} [dst], [tmap, {c0, c1}], [mbar]{, ctaMask}
              {, policy};
              cp.async.bulk.tensor.2d.global.shared::cta{.tile}.bulk_group
              {.L2::cache_hint} [tmap, {c0, c1}], [src]{, policy};
              cp.async.bulk.commit_group; cp.async.bulk.wait_group{.read} N
  mbarrier    (.shared::cta or .shared; .b64; .release/.acquire/.relaxed, .cta/
              .cluster accepted) init [a], count; inval [a]; arrive{.expect_tx}
              state|_, [a]{, count | txCount} (.shared::cluster with `_`: any
              CTA's mbarrier); expect_tx / complete_tx{.shared::cluster} [a],
              txCount; try_wait.parity /
              test_wait.parity p, [a], parity{, suspendTimeHint}
  directives  .reg, .shared (incl. .extern dynamic), .reqntid, .maxntid,
              .maxnreg, .minnctapersm, .reqnctapercluster, .explicitcluster,
              .maxclusterrank, .pragma; parameters .param .{type} and
              .param .align 64 .b8 name[128] (tensor maps)
"""
import re
import struct

import numpy as np

MASK32 = np.uint64(0xFFFFFFFF)

SMEM_STATIC_LIMIT = 48 * 1024       # static shared memory per block
SMEM_DEFAULT_LIMIT = 48 * 1024      # static + dynamic without the opt-in attribute
SMEM_MAX_PER_BLOCK = 227 * 1024     # sm_90 (H100 / H200) per-block maximum, with opt-in
MAX_CLUSTER = 8                     # CTAs per cluster (the portable maximum)
# shared::cluster addresses (mapa's results): CLUSTER_WINDOW + rank * W + offset,
# W = a CTA's shared memory rounded up to 1 KiB; shared::cta addresses are the
# CTA-relative offsets 0 .. shared size - 1, the same in every CTA.
CLUSTER_WINDOW = 0x0100_0000


class EmuError(Exception):
    pass


def f32_to_bf16_bits(f):
    """Round-to-nearest-even f32 -> bf16 bits (NaN -> 0x7fff), like cvt.rn.bf16.f32."""
    b = np.asarray(f, dtype=np.float32).view(np.uint32).astype(np.uint64)
    nan = np.isnan(np.asarray(f, dtype=np.float32))
    rounded = (b + np.uint64(0x7FFF) + ((b >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    out = rounded.astype(np.uint16)
    out = np.where(nan, np.uint16(0x7FFF), out)
    return out.astype(np.uint16)


def bf16_bits_to_f32(h):
    return (np.asarray(h, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


# ----------------------------------------------------------------------------- tensor maps

# Address windows of kernel parameters (far above any Memory): `mov.u64 %rd,
# p_name` gives PARAM_SPACE_BASE + the parameter's offset (a .param-space
# address), `cvta.param.u64` maps it to PARAM_GENERIC_BASE + the offset (a
# generic address, what cp.async.bulk.tensor takes). Neither is a global address.
PARAM_SPACE_BASE = 0x1000_0000_0000
PARAM_GENERIC_BASE = 0x2000_0000_0000
PARAM_WINDOW = 0x1000_0000_0000     # both windows are this long


class TensorMap:
    """The emulator's stand-in for a CUtensorMap (cuTensorMapEncodeTiled): a 2-D
    tiled tensor map, no interleave, no L2 promotion, OOB fill with zeros.

    TensorMap(addr, elem_bytes, dims, stride, box, swizzle=0)
      addr        global address of element (0, 0) (an address in a Memory)
      elem_bytes  element size in bytes (2 for bf16)
      dims        (inner, outer) extents in elements (inner is contiguous)
      stride      bytes between consecutive outer indices
      box         (inner, outer) box extents in elements
      swizzle     0 (none) or 128 (CU_TENSOR_MAP_SWIZZLE_128B)
    Validated like the driver: addr 16-byte aligned, stride a multiple of 16 and
    >= inner * elem_bytes, box extents 1..256, box inner bytes a multiple of 16,
    and with swizzle 128 the box inner bytes <= 128.

    encode() gives the 128 bytes a kernel's `.param .align 64 .b8 p[128]` holds
    (this emulator's own layout, not the driver's); decode() reads them back."""

    MAGIC = b"EmTM"
    _FMT = "<4sI8Q"

    def __init__(self, addr, elem_bytes, dims, stride, box, swizzle=0):
        self.addr = int(addr)
        self.elem = self.elem_bytes = int(elem_bytes)
        self.dims = tuple(int(x) for x in dims)
        self.stride = int(stride)
        self.box = tuple(int(x) for x in box)
        self.swizzle = int(swizzle)
        if len(self.dims) != 2 or len(self.box) != 2:
            raise EmuError("TensorMap: dims and box are (inner, outer) pairs")
        if self.elem not in (1, 2, 4, 8):
            raise EmuError(f"TensorMap: element size {self.elem} not in 1, 2, 4, 8")
        if self.addr < 0 or self.addr % 16:
            raise EmuError(f"TensorMap: global address {self.addr:#x} is not 16-byte aligned")
        if not all(1 <= d <= 1 << 32 for d in self.dims):
            raise EmuError(f"TensorMap: dims {self.dims} out of range 1..2^32")
        if self.stride % 16 or self.stride < self.dims[0] * self.elem or self.stride >= 1 << 40:
            raise EmuError(f"TensorMap: outer stride {self.stride} must be a multiple of 16, >= inner extent "
                           f"* element size ({self.dims[0] * self.elem}) and < 2^40")
        if not all(1 <= b <= 256 for b in self.box):
            raise EmuError(f"TensorMap: box {self.box} extents must be in 1..256")
        ib = self.box[0] * self.elem
        if ib % 16:
            raise EmuError(f"TensorMap: box inner extent {ib} bytes is not a multiple of 16")
        if self.swizzle not in (0, 128):
            raise EmuError(f"TensorMap: swizzle {self.swizzle} not supported (0 or 128)")
        if self.swizzle == 128 and ib > 128:
            raise EmuError(f"TensorMap: box inner extent {ib} bytes exceeds the 128-byte swizzle span")

    def encode(self):
        b = struct.pack(self._FMT, self.MAGIC, 1, self.addr, self.elem, self.dims[0], self.dims[1],
                        self.stride, self.box[0], self.box[1], self.swizzle)
        return b + bytes(128 - len(b))

    @classmethod
    def decode(cls, data):
        data = bytes(data)
        if len(data) != 128:
            raise EmuError(f"TensorMap.decode: {len(data)} bytes, need 128")
        f = struct.unpack_from(cls._FMT, data)
        if f[0] != cls.MAGIC or f[1] != 1:
            raise EmuError("not an encoded TensorMap (bad magic: the parameter does not hold a tensor map)")
        return cls(f[2], f[3], (f[4], f[5]), f[6], (f[7], f[8]), f[9])

    def __eq__(self, other):
        return isinstance(other, TensorMap) and self.encode() == other.encode()

    def __hash__(self):
        return hash(self.encode())

    def __repr__(self):
        return (f"TensorMap(addr={self.addr:#x}, elem_bytes={self.elem}, dims={self.dims}, "
                f"stride={self.stride}, box={self.box}, swizzle={self.swizzle})")


# ----------------------------------------------------------------------------- types

_BITS = {"pred": 1, "b8": 8, "u8": 8, "s8": 8, "b16": 16, "u16": 16, "s16": 16, "f16": 16,
         "bf16": 16, "b32": 32, "u32": 32, "s32": 32, "f32": 32, "f16x2": 32, "bf16x2": 32,
         "b64": 64, "u64": 64, "s64": 64, "f64": 64}
_NP = {"pred": np.bool_, "b8": np.uint8, "u8": np.uint8, "s8": np.int8, "b16": np.uint16,
       "u16": np.uint16, "s16": np.int16, "f16": np.float16, "bf16": np.uint16, "b32": np.uint32,
       "u32": np.uint32, "s32": np.int32, "f32": np.float32, "f16x2": np.uint32,
       "bf16x2": np.uint32, "b64": np.uint64, "u64": np.uint64, "s64": np.int64,
       "f64": np.float64}
_UNS = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}
_SGN = {8: np.int8, 16: np.int16, 32: np.int32, 64: np.int64}
_FLT = {16: np.float16, 32: np.float32, 64: np.float64}
_KIND = {1: "pred", 8: "b16", 16: "b16", 32: "b32", 64: "b64"}
_STORE = {"pred": np.bool_, "b16": np.uint16, "b32": np.uint32, "b64": np.uint64}

_CANON32 = np.array([0x7FFFFFFF], np.uint32).view(np.float32)[0]
_FLT_MIN = np.float32(2.0 ** -126)


def _cls(t):
    if t == "pred":
        return "pred"
    if t in ("f16", "f32", "f64"):
        return "f"
    if t[0] in "us":
        return t[0]
    return "b"  # b8..b64, bf16, f16x2, bf16x2 are bit containers here


def _compat(ity, rty, relaxed=False):
    """Operand-type compatibility (PTX ISA 6.1 and 9.4.1): may a register declared
    `rty` be an operand of an instruction of type `ity`?"""
    if ity == "pred" or rty == "pred":
        return ity == rty
    ib, rb = _BITS[ity], _BITS[rty]
    ic, rc = _cls(ity), _cls(rty)
    if relaxed:  # ld, st, cvt: wider registers allowed (chop / extend)
        if rb < ib:
            return False
        if ic == "f" and rc != "b" and rty != ity:
            return False
        if rc == "f" and ic != "b" and rty != ity:
            return False
        return True
    if rb != ib:
        return False
    if ic == "b" or rc == "b":
        return True
    if ic in "us" and rc in "us":
        return True
    return ic == rc


def _ftz(x):
    """Flush subnormals to sign-preserving zero (f32 arrays)."""
    if not np.count_nonzero((x != 0) & (np.abs(x) < _FLT_MIN)):
        return x
    return np.where(np.abs(x) < _FLT_MIN, np.copysign(np.float32(0), x), x).astype(np.float32, copy=False)


def _canon(x):
    """NaN results become the canonical 0x7fffffff."""
    x = np.asarray(x, dtype=np.float32)
    m = x != x
    if np.count_nonzero(m):
        x = x.copy()
        x[m] = _CANON32
    return x


def _fma_f32(a, b, c):
    """fma.rn.f32 with a single rounding. a*b is exact in f64; the f64 sum s can
    only round wrongly to f32 when s sits exactly on an f32 rounding midpoint (or
    in the f32 subnormal range): only then is s replaced by its round-to-odd
    value (exact error via TwoSum), which then rounds correctly (53 >= 24 + 2)."""
    p = np.multiply(a, b, dtype=np.float64)   # exact: 48 significant bits
    s = np.add(p, c, dtype=np.float64)
    risky = (s.view(np.int64) & 0x1FFFFFFF) == 0x10000000
    risky |= (np.abs(s) < 2.0 ** -125) & (s != 0)
    if not np.count_nonzero(risky):
        return s.astype(np.float32)
    c = c.astype(np.float64)
    bb = s - p
    e = (p - (s - bb)) + (c - bb)   # s + e == p + c exactly (finite case)
    fix = (e != 0) & np.isfinite(s) & ((s.view(np.int64) & 1) == 0)
    if np.count_nonzero(fix):
        s = np.where(fix, np.nextafter(s, np.where(e > 0, np.inf, -np.inf)), s)
    return s.astype(np.float32)


# ----------------------------------------------------------------------------- parsing

class Instr:
    __slots__ = ("pred", "neg", "op", "mods", "args", "text", "line")


def split_args(s):
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _strip_comments(text):
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _int_lit(s):
    s = s.strip()
    neg = s.startswith("-")
    if neg:
        s = s[1:].strip()
    s = s.rstrip("Uu")
    if re.fullmatch(r"0[0-7]+", s):
        v = int(s, 8)
    else:
        v = int(s, 0)
    return -v if neg else v


_SHARED_ELEM = {"b8": 1, "u8": 1, "s8": 1, "b16": 2, "u16": 2, "s16": 2, "f16": 2, "bf16": 2,
                "b32": 4, "u32": 4, "s32": 4, "f32": 4, "b64": 8, "u64": 8, "s64": 8, "f64": 8}


def _parse_decl_names(rest):
    """`a[16], b, c[2][3]` -> [(name, count or None for [], is_array)]"""
    out = []
    for part in split_args(rest):
        m = re.fullmatch(r"([$%\w]+)\s*((?:\[\s*\w*\s*\])*)", part.strip())
        if not m:
            raise EmuError(f"cannot parse declaration `{part}`")
        dims = re.findall(r"\[\s*(\w*)\s*\]", m.group(2))
        if any(d == "" for d in dims):
            out.append((m.group(1), None))
        else:
            n = 1
            for d in dims:
                n *= _int_lit(d)
            out.append((m.group(1), n))
    return out


class Function:
    """One .entry: parameters, registers, shared variables, program, directives."""

    def __init__(self, name, params, body, module_shared, header_directives="", module_dyn_align=16,
                 body_line=1):
        self.name = name
        self.params = params  # [(type, name)]
        self.regs = {}        # name -> storage kind: 'pred', 'b16', 'b32', 'b64'
        self.reg_types = {}   # name -> declared PTX type
        self.shared = {}      # name -> (offset, size)
        self.prog = []
        self.labels = {}
        self.module_shared = module_shared  # dynamic (extern) shared symbols
        self.dyn_align = module_dyn_align
        self.version = None   # (major, minor) of the module's .version
        self.target = None    # the module's .target list, e.g. ['sm_90a']
        self.reqntid = None
        self.maxntid = None
        self.maxnreg = None
        self.reqncluster = None     # .reqnctapercluster (x, y, z)
        self.explicitcluster = False
        self.maxclusterrank = None
        self._cache = {}
        self._parse_directives(header_directives)
        off = 0
        # statements: split on ';', peel labels and scope braces off their fronts
        pos = 0
        line = body_line
        for chunk in body.split(";"):
            start_line = line
            line += chunk.count("\n")
            s = chunk
            while True:
                stripped = s.lstrip()
                start_line += s[:len(s) - len(stripped)].count("\n")
                s = stripped
                if s.startswith("{") or s.startswith("}"):
                    s = s[1:]
                    continue
                m = re.match(r"([$%\w.]+)\s*:(?!:)", s)
                if m and not s.startswith("@"):
                    self.labels[m.group(1)] = len(self.prog)
                    s = s[m.end():]
                    continue
                break
            s = s.strip()
            if not s:
                continue
            pos += 1
            if s.startswith(".reg"):
                m = re.match(r"\.reg\s+\.(\w+)\s+(.*)$", s, re.S)
                if not m or m.group(1) not in _BITS or m.group(1) in ("f16x2", "bf16x2"):
                    if m and m.group(1) in ("f16x2", "bf16x2"):
                        ty = "b32"
                    else:
                        raise EmuError(f"{name}: unsupported register declaration `{s}` (line {start_line})")
                else:
                    ty = m.group(1)
                for nm in split_args(m.group(2)):
                    nm = nm.strip()
                    mm = re.fullmatch(r"(%[\w$]+)<(\d+)>", nm)
                    names = [f"{mm.group(1)}{i}" for i in range(int(mm.group(2)))] if mm else [nm]
                    for n in names:
                        if n in self.reg_types and self.reg_types[n] != ty:
                            raise EmuError(f"{name}: register {n} redeclared as .{ty} (was .{self.reg_types[n]})")
                        self.reg_types[n] = ty
                        self.regs[n] = _KIND[_BITS[ty]]
                continue
            if s.startswith(".shared"):
                m = re.match(r"\.shared\s+(?:\.align\s+(\d+)\s+)?\.(\w+)\s+(.*)$", s, re.S)
                if not m or m.group(2) not in _SHARED_ELEM:
                    raise EmuError(f"{name}: unsupported shared declaration `{s}` (line {start_line})")
                esz = _SHARED_ELEM[m.group(2)]
                align = int(m.group(1)) if m.group(1) else esz
                for nm, n in _parse_decl_names(m.group(3)):
                    if n is None:
                        raise EmuError(f"{name}: unsized shared array {nm} must be .extern")
                    off = (off + align - 1) // align * align
                    self.shared[nm] = (off, n * esz)
                    off += n * esz
                continue
            if s.startswith(".local") or s.startswith(".param") or s.startswith(".global") \
                    or s.startswith(".const"):
                raise EmuError(f"{name}: unsupported declaration `{s}` (line {start_line})")
            if s.startswith(".pragma") or s.startswith(".loc") or s.startswith(".file"):
                continue
            if s.startswith("."):
                raise EmuError(f"{name}: unsupported directive `{s}` (line {start_line})")
            ins = Instr()
            ins.text = " ".join(s.split())
            ins.line = start_line
            ins.pred, ins.neg = None, False
            m = re.match(r"@\s*(!?)\s*(%[\w$]+)\s+(.*)$", s, re.S)
            if m:
                ins.neg = m.group(1) == "!"
                ins.pred = m.group(2)
                s = m.group(3)
            parts = s.split(None, 1)
            opfull = parts[0]
            toks = opfull.split(".")
            ins.op = toks[0]
            ins.mods = toks[1:]
            ins.args = split_args(" ".join(parts[1].split())) if len(parts) > 1 else []
            self.prog.append(ins)
        self.static_smem_bytes = off
        self.static_smem = (off + 15) // 16 * 16

    def _parse_directives(self, text):
        text = " ".join(text.split())
        for m in re.finditer(r"\.(\w+)((?:\s*\d+\s*,?)*)", text):
            d = m.group(1)
            nums = [int(x) for x in re.findall(r"\d+", m.group(2))]
            if d in ("reqntid", "maxntid"):
                if not 1 <= len(nums) <= 3:
                    raise EmuError(f"{self.name}: bad .{d}")
                setattr(self, d, tuple(nums + [1] * (3 - len(nums))))
            elif d == "maxnreg":
                self.maxnreg = nums[0]
            elif d == "reqnctapercluster":
                if not 1 <= len(nums) <= 3 or min(nums) < 1:
                    raise EmuError(f"{self.name}: bad .reqnctapercluster")
                self.reqncluster = tuple(nums + [1] * (3 - len(nums)))
            elif d == "explicitcluster":
                self.explicitcluster = True
            elif d == "maxclusterrank":
                if len(nums) != 1 or nums[0] < 1:
                    raise EmuError(f"{self.name}: bad .maxclusterrank")
                self.maxclusterrank = nums[0]
            elif d in ("minnctapersm", "maxnctapersm", "noreturn", "pragma"):
                pass
            else:
                raise EmuError(f"{self.name}: unsupported entry directive .{d}")
        if self.reqntid and self.maxntid:
            raise EmuError(f"{self.name}: .reqntid cannot be used with .maxntid")


def _match_close(text, i, open_ch, close_ch):
    depth = 0
    for j in range(i, len(text)):
        if text[j] == open_ch:
            depth += 1
        elif text[j] == close_ch:
            depth -= 1
            if depth == 0:
                return j
    raise EmuError(f"unbalanced {open_ch}{close_ch}")


def parse_module(text):
    text = _strip_comments(text)
    mv = re.search(r"\.version\s+(\d+)\.(\d+)", text)
    version = (int(mv.group(1)), int(mv.group(2))) if mv else None
    mt = re.search(r"\.target\s+([\w, ]+?)\s*(?:\n|$|\.)", text)
    target = [t.strip() for t in mt.group(1).split(",")] if mt else None
    funcs = {}
    module_shared = []
    dyn_align = 16
    i = 0
    n = len(text)
    while i < n:
        m = re.compile(r"(?:\.visible\s+|\.weak\s+|\.extern\s+)*\.(entry|func)\b").search(text, i)
        # module-level declarations before this entry (or to the end)
        seg = text[i:m.start() if m else n]
        ext = re.compile(r"\.extern\s+\.shared\s+(?:\.align\s+(\d+)\s+)?\.\w+\s+(\w+)\s*\[\s*\]\s*;")
        for mm in ext.finditer(seg):
            module_shared.append(mm.group(2))
            if mm.group(1):
                dyn_align = max(dyn_align, int(mm.group(1)))
        rest = ext.sub("", seg)
        if re.search(r"\.shared\b", rest):
            raise EmuError("module-scope static shared variables are not supported")
        if not m:
            break
        kind = m.group(1)
        j = m.end()
        mn = re.compile(r"\s*(?:\([^)]*\)\s*)?([\w$]+)\s*").match(text, j)
        name = mn.group(1)
        j = mn.end()
        params = []
        if j < n and text[j] == "(":
            k = _match_close(text, j, "(", ")")
            for p in split_args(text[j + 1:k]):
                toks = p.replace(",", " ").split()
                if not toks:
                    continue
                mt = re.fullmatch(r"\.param\s+\.align\s+(\d+)\s+\.b8\s+([\w$]+)\s*\[\s*(\d+)\s*\]", p.strip())
                if mt:   # an opaque by-value byte array: a CUtensorMap
                    if int(mt.group(3)) != 128 or int(mt.group(1)) not in (64, 128):
                        raise EmuError(f"{name}: unsupported parameter `{p}` (byte-array parameters must be "
                                       f"`.param .align 64 .b8 name[128]`, a tensor map)")
                    params.append(("tmap", mt.group(2)))
                    continue
                if toks[0] != ".param" or "[" in p:
                    raise EmuError(f"{name}: unsupported parameter `{p}`")
                ty = next((t[1:] for t in toks[1:] if t[1:] in _BITS), None)
                if ty is None:
                    raise EmuError(f"{name}: parameter without a type `{p}`")
                params.append((ty, toks[-1]))
            j = k + 1
        mb = re.compile(r"[{;]").search(text, j)
        if mb is None:
            raise EmuError(f"{name}: no body")
        if mb.group(0) == ";":   # a prototype (.extern .func ...;)
            i = mb.end()
            continue
        bo = mb.start()
        directives = text[j:bo]
        bc = _match_close(text, bo, "{", "}")
        body = text[bo + 1:bc]
        if kind == "entry":
            funcs[name] = Function(name, params, body, module_shared, directives, dyn_align,
                                   body_line=text[:bo].count("\n") + 1)
            funcs[name].version, funcs[name].target = version, target
        i = bc + 1
    return funcs


# ----------------------------------------------------------------------------- memory

class Memory:
    """Global memory: one byte array, allocations separated by guard gaps."""

    def __init__(self, size=1 << 26):
        self.mem = np.zeros(size, dtype=np.uint8)
        self.allocs = []  # (start, end)
        self.top = 4096
        self._starts = np.zeros(0, np.int64)
        self._ends = np.zeros(0, np.int64)

    def alloc(self, nbytes):
        start = self.top
        self.top = (start + max(nbytes, 1) + 256 + 255) // 256 * 256
        if self.top > len(self.mem):
            raise EmuError("emulator out of memory")
        self.allocs.append((start, start + nbytes))
        self._starts = np.array([s for s, _ in self.allocs], dtype=np.int64)
        self._ends = np.array([e for _, e in self.allocs], dtype=np.int64)
        return start

    def upload(self, arr):
        b = np.ascontiguousarray(arr).view(np.uint8).ravel()
        a = self.alloc(len(b))
        self.mem[a:a + len(b)] = b
        return a

    def download(self, addr, n, dtype):
        nb = n * np.dtype(dtype).itemsize
        return self.mem[addr:addr + nb].copy().view(dtype)

    def check(self, addrs, width, what):
        """Every access [a, a + width) must be width-aligned and inside one allocation."""
        if len(addrs) == 0:
            return
        a = np.asarray(addrs).astype(np.int64)
        bad = (a & (width - 1)) != 0 if width & (width - 1) == 0 else a % width != 0
        if np.count_nonzero(bad):
            raise EmuError(f"{what}: misaligned {width}-byte access at {a[bad][:4]}")
        self.check_range(a, width, what)

    def check_range(self, a, nbytes, what):
        """[a, a + nbytes) inside one allocation (nbytes scalar or per-address)."""
        if len(a) == 0:
            return
        if np.count_nonzero(a >= PARAM_SPACE_BASE):
            raise EmuError(f"{what}: address {int(a[a >= PARAM_SPACE_BASE][0]):#x} is a kernel-parameter address "
                           f"(mov / cvta.param of a parameter, e.g. a tensor map), not a global one")
        if len(self._starts) != len(self.allocs):  # allocs edited by hand
            self._starts = np.array([s for s, _ in self.allocs], dtype=np.int64)
            self._ends = np.array([e for _, e in self.allocs], dtype=np.int64)
        if not len(self._starts):
            raise EmuError(f"{what}: global access with no allocation at {a[:4]}")
        idx = np.searchsorted(self._starts, a, side="right") - 1
        ok = (idx >= 0) & (a + nbytes <= self._ends[np.maximum(idx, 0)])
        if not np.all(ok):
            raise EmuError(f"{what}: out-of-bounds global access at {a[~ok][:4]}")


# ----------------------------------------------------------------------------- launch

class BankStats:
    """Shared-memory bank accounting over launches: run_kernel(..., banks=stats).

    The model (NVIDIA, compute capability 5.x to 9.x): 32 banks of 4 bytes; a
    warp's access is served in phases of at most 128 bytes: the whole warp for
    accesses of up to 4 bytes per thread, half-warps (lanes 0-15, 16-31) for 8
    bytes, quarter-warps for 16 (for ldmatrix, each 8x8 matrix: the eight
    lanes giving its rows). A phase takes as many wavefronts as the most
    distinct 4-byte words any one bank holds among its accesses (threads
    reading one word share it: a broadcast); at best ceil(words / 32). Counted:
    ld/st.shared, ldmatrix and cp.async's shared writes, per warp-level request
    of the threads that issue together. Not counted: TMA writes and wgmma's
    descriptor reads (the async proxy, with its own swizzle hardware), and
    mbarrier objects. This is the request model of the bank conflicts Nsight
    Compute reports (l1tex__data_bank_conflicts_pipe_lsu_mem_shared); the
    hardware's scheduling of the wavefronts is not modelled."""

    def __init__(self):
        self.by_ins = {}   # (function, line, instruction text) -> [requests, wavefronts, ideal]

    def record(self, key, ad, nbytes, tids):
        """Tally one execution of instruction `key`: threads `tids` (for ldmatrix,
        the lanes giving row addresses) access `nbytes` each at shared `ad`."""
        lanes_per_phase = 32 if nbytes <= 4 else 128 // nbytes
        tids = np.asarray(tids, np.int64)
        phase = (tids // 32) * 32 + (tids % 32) // lanes_per_phase
        nw = max(nbytes // 4, 1)
        words = np.asarray(ad, np.int64) // 4
        if nw > 1:
            words = (words[:, None] + np.arange(nw)).ravel()
            phase = np.repeat(phase, nw)
        # distinct (phase, word) pairs, sorted by phase
        pw = np.unique(phase << np.int64(40) | words)
        ph = pw >> np.int64(40)
        first = np.r_[True, ph[1:] != ph[:-1]]
        idx = np.cumsum(first) - 1                     # phase number 0 .. nph-1
        nph = int(idx[-1]) + 1
        per_phase = np.bincount(idx, minlength=nph)
        per_bank = np.bincount(idx * 32 + (pw & np.int64(31)), minlength=nph * 32).reshape(nph, 32)
        wavefronts = int(per_bank.max(axis=1).sum())
        ideal = int(((per_phase + 31) // 32).sum())
        warps = ph[first] // 32
        requests = int(np.count_nonzero(np.r_[True, warps[1:] != warps[:-1]]))
        acc = self.by_ins.get(key)
        if acc is None:
            acc = self.by_ins[key] = [0, 0, 0]
        acc[0] += requests
        acc[1] += wavefronts
        acc[2] += ideal

    def totals(self, func=None):
        """(requests, wavefronts, ideal) summed over `func`'s instructions (all
        functions when None)."""
        t = [0, 0, 0]
        for (f, _, _), v in self.by_ins.items():
            if func is None or f == func:
                t = [a + b for a, b in zip(t, v)]
        return tuple(t)

    def conflicted(self, func=None):
        """Instructions whose wavefronts exceed the ideal, worst excess first:
        [(function, line, text, requests, wavefronts, ideal)]."""
        rows = [(f, ln, tx, *v) for (f, ln, tx), v in self.by_ins.items()
                if (func is None or f == func) and v[1] > v[2]]
        return sorted(rows, key=lambda r: (r[5] - r[4], r[0], r[1]))


def run_kernel(func, mem, grid, block, params, dyn_smem=0, max_steps=50_000_000, allow_large_smem=False,
               strict_async=True, check_nc=True, check_races=True, strict_waits=True, banks=None, cluster=None):
    """Run `func` over the whole grid, one block (or one cluster) after another.

    params: Python ints / floats in declaration order (pointers are addresses in
      `mem`); for a tensor-map parameter (`.param .align 64 .b8 p[128]`) a
      TensorMap or its 128 encoded bytes. dyn_smem: dynamic shared memory
      bytes. max_steps: per block.
    allow_large_smem: the host raised cudaFuncAttributeMaxDynamicSharedMemorySize,
      so static + dynamic shared memory may exceed 48 KiB (up to 227 KiB).
    strict_async: cp.async data is visible only to the issuing thread until a
      barrier (see the module doc); False makes it visible to all at the wait.
    check_nc: bytes read with ld.global.nc must not be written by the launch.
    check_races: barrier-interval race detection on shared memory (module doc).
    strict_waits: an mbarrier try_wait / test_wait returns false at a thread's
      first try even on a completed phase (module doc); False: true iff completed.
    banks: a BankStats that tallies the launch's shared-memory wavefronts.
    cluster: thread-block cluster dimensions (cx, cy, cz), at most 8 CTAs, each
      dividing the grid's; the CTAs of a cluster run together (module doc,
      Clusters). None: no cluster attribute at launch (a 1x1x1 cluster; an error
      for a kernel declaring .reqnctapercluster or .explicitcluster).
    Raises EmuError on any violation."""
    grid = tuple(int(x) for x in grid) + (1,) * (3 - len(grid))
    explicit = cluster is not None
    cl = (1, 1, 1) if cluster is None else tuple(int(x) for x in cluster) + (1,) * (3 - len(tuple(cluster)))
    if len(cl) != 3 or min(cl) < 1:
        raise EmuError(f"{func.name}: invalid cluster dimensions {cluster}")
    ncl = cl[0] * cl[1] * cl[2]
    if ncl > MAX_CLUSTER:
        raise EmuError(f"{func.name}: a cluster of {cl} = {ncl} CTAs exceeds the portable maximum of {MAX_CLUSTER}")
    if func.reqncluster is not None and cl != func.reqncluster:
        raise EmuError(f"{func.name}: declares .reqnctapercluster {', '.join(map(str, func.reqncluster))}: launch it "
                       f"with cluster={func.reqncluster}, not {cl if explicit else 'no cluster'}")
    if func.explicitcluster and not explicit:
        raise EmuError(f"{func.name}: declares .explicitcluster: it must be launched with cluster dimensions "
                       f"(run_kernel(..., cluster=(cx, cy, cz)))")
    if func.maxclusterrank is not None and ncl > func.maxclusterrank:
        raise EmuError(f"{func.name}: a cluster of {ncl} CTAs exceeds .maxclusterrank {func.maxclusterrank}")
    block = tuple(int(x) for x in block) + (1,) * (3 - len(block))
    if len(params) != len(func.params):
        raise EmuError(f"{func.name}: {len(params)} params given, {len(func.params)} declared")
    if min(block) < 1 or block[0] > 1024 or block[1] > 1024 or block[2] > 64 or \
            block[0] * block[1] * block[2] > 1024:
        raise EmuError(f"{func.name}: invalid block size {block}")
    if min(grid) < 1 or grid[0] > 2 ** 31 - 1 or grid[1] > 65535 or grid[2] > 65535:
        raise EmuError(f"{func.name}: invalid grid size {grid}")
    if any(g % c for g, c in zip(grid, cl)):
        raise EmuError(f"{func.name}: grid {grid} is not a multiple of the cluster dimensions {cl}")
    if func.reqntid is not None and tuple(block) != func.reqntid:
        raise EmuError(f"{func.name}: launched with block {block} but .reqntid {func.reqntid}")
    if func.maxntid is not None and block[0] * block[1] * block[2] > \
            func.maxntid[0] * func.maxntid[1] * func.maxntid[2]:
        raise EmuError(f"{func.name}: launched with block {block} exceeding .maxntid {func.maxntid}")
    if dyn_smem < 0:
        raise EmuError(f"{func.name}: negative dynamic shared memory")
    st = func.static_smem_bytes
    if st > SMEM_STATIC_LIMIT:
        raise EmuError(f"{func.name}: {st} B of static shared memory exceeds the 48 KiB limit")
    total = st + dyn_smem
    if total > SMEM_MAX_PER_BLOCK:
        raise EmuError(f"{func.name}: {st} B static + {dyn_smem} B dynamic shared memory exceeds "
                       f"the 227 KiB per-block limit")
    if total > SMEM_DEFAULT_LIMIT and not allow_large_smem:
        raise EmuError(f"{func.name}: {st} B static + {dyn_smem} B dynamic shared memory exceeds "
                       f"48 KiB without allow_large_smem (cudaFuncAttributeMaxDynamicSharedMemorySize)")
    key = (block, int(dyn_smem), bool(strict_async), cl)
    ex = func._cache.get(key)
    if ex is None:
        ex = _Exec(func, block, int(dyn_smem), bool(strict_async), cl)
        func._cache[key] = ex
    ex.explicit_cluster = explicit or func.reqncluster is not None or func.explicitcluster
    ex.races = bool(check_races)
    ex.strict_waits = bool(strict_waits)
    ex.banks = banks
    ex.launch(mem, grid, params, max_steps, check_nc)


_K_OP, _K_BRA, _K_RET, _K_BAR, _K_WAIT = 0, 1, 2, 3, 4
_TX_MAX = (1 << 20) - 1     # mbarrier counts and tx-counts


class _Mbar:
    """State of one mbarrier object (its completed-phase count lives in
    _Exec.mb_comp; the current phase parity is that count's low bit)."""
    __slots__ = ("addr", "expected", "pending", "tx", "init_tid", "init_time", "nwait", "tx_bytes", "rel", "joins")

    def __init__(self, addr, count, tid, time):
        self.addr, self.expected, self.pending, self.tx = addr, count, count, 0
        self.init_tid, self.init_time, self.nwait, self.tx_bytes = tid, time, 0, 0
        # happens-before (the race detector): the join of the releases (clock
        # rows) of the current phase's arrivals, and per completion number the
        # join of every phase's releases up to it (the last few)
        self.rel = None
        self.joins = {}


# fragment index tables (lane t, group g = t // 4, c = t % 4)
_T = np.arange(32)
_G, _C = _T // 4, _T % 4
# ldmatrix: lane t receives row t/4, columns 2(t%4), 2(t%4)+1 (low half first)
# mma.m16n8k16 A: register r, half h -> element a_i, i = 2r + h
_MA_R = np.zeros((4, 2, 32), np.int64)
_MA_C = np.zeros((4, 2, 32), np.int64)
for _r in range(4):
    for _h in range(2):
        _i = 2 * _r + _h
        _MA_R[_r, _h] = _G + 8 * ((_i >> 1) & 1)
        _MA_C[_r, _h] = 2 * _C + (_i & 1) + 8 * (_i >= 4)
_MB_R = np.zeros((2, 2, 32), np.int64)  # k
_MB_C = np.zeros((2, 2, 32), np.int64)  # n
for _r in range(2):
    for _h in range(2):
        _i = 2 * _r + _h
        _MB_R[_r, _h] = 2 * _C + (_i & 1) + 8 * (_i >= 2)
        _MB_C[_r, _h] = _G
_MC_R = np.stack([_G + 8 * (i >= 2) for i in range(4)])
_MC_C = np.stack([2 * _C + (i & 1) for i in range(4)])
# the same as gathers: element (row, col) of A / B / C from the flattened
# (register, half, lane) fragment values, and D's (register, lane) from D (row, col)
_PERM_A = np.zeros(256, np.int64)
_PERM_A[(_MA_R * 16 + _MA_C).ravel()] = np.arange(256)
_PERM_B = np.zeros(128, np.int64)
_PERM_B[(_MB_R * 8 + _MB_C).ravel()] = np.arange(128)
_PERM_C = np.zeros(128, np.int64)
_PERM_C[(_MC_R * 8 + _MC_C).ravel()] = np.arange(128)
_GATHER_D = (_MC_R * 8 + _MC_C).ravel()
# mma.m16n8k8 with .tf32 inputs: one element a register. A: a0 (g, c), a1 (g+8, c),
# a2 (g, c+4), a3 (g+8, c+4); B: b0 (k c, n g), b1 (k c+4, n g); C / D as m16n8k16.
_PERM_A8 = np.zeros(128, np.int64)
_PERM_A8[np.stack([(_G + 8 * (r & 1)) * 8 + _C + 4 * (r >> 1) for r in range(4)]).ravel()] = np.arange(128)
_PERM_B8 = np.zeros(64, np.int64)
_PERM_B8[np.stack([(_C + 4 * r) * 8 + _G for r in range(2)]).ravel()] = np.arange(64)


_ARANGE = np.arange(64)


def _short(text):
    """An instruction's text with long {register lists} elided (error messages)."""
    def sub(m):
        items = [x.strip() for x in m.group(1).split(",")]
        return m.group(0) if len(items) <= 8 else f"{{{items[0]}, {items[1]}, ..., {items[-1]}}}"
    return re.sub(r"\{([^{}]*)\}", sub, text)


def _lowmask(n):
    """(1 << n) - 1 as uint64 for n in 0..64 (int array)."""
    n = np.asarray(n, np.int64)
    return np.where(n >= 64, np.uint64(0xFFFFFFFFFFFFFFFF),
                    (np.uint64(1) << np.minimum(n, 63).astype(np.uint64)) - np.uint64(1))


class _Exec:
    """Executor for one (function, block shape, dynamic smem) combination: the
    program compiled to closures over persistent per-thread arrays."""

    def __init__(self, func, block, dyn_smem, strict_async, cluster=(1, 1, 1)):
        self.f = func
        self.block = block
        bx, by, bz = block
        nt = bx * by * bz
        self.cluster = cluster
        C = cluster[0] * cluster[1] * cluster[2]
        self.C = C
        # thread slots per CTA: whole warps; in a cluster whole warpgroups, so that
        # warps and warpgroups never straddle two CTAs. Thread i of the emulated
        # block is thread i % ctp of CTA rank i // ctp.
        ctp = (nt + 31) // 32 * 32 if C == 1 else (nt + 127) // 128 * 128
        ntp = C * ctp
        self.nt, self.ntp, self.nw = nt, ntp, ntp // 32
        self.ctp, self.cwp = ctp, ctp // 32
        self.cta_nw = (nt + 31) // 32          # real warps of a CTA
        self.cta_ntp = self.cta_nw * 32        # a CTA's threads in whole warps
        self.strict = strict_async
        t = np.arange(ntp, dtype=np.uint32)
        tl = t % np.uint32(ctp)                # CTA-local thread index
        self.rank_of = (t // np.uint32(ctp)).astype(np.int64)
        self.real = tl < nt
        self.tids = t.astype(np.int64)
        self.lane = t % np.uint32(32)
        self.warp_of = (t // np.uint32(32)).astype(np.int64)
        self.all_warps = np.arange(self.nw)
        self.regs = {nm: np.zeros(ntp, _STORE[kind]) for nm, kind in func.regs.items()}
        sp = {}
        sp["%tid.x"] = (tl % np.uint32(bx)).astype(np.uint32)
        sp["%tid.y"] = ((tl // np.uint32(bx)) % np.uint32(by)).astype(np.uint32)
        sp["%tid.z"] = (tl // np.uint32(bx * by)).astype(np.uint32)
        for d, v in zip("xyz", block):
            sp[f"%ntid.{d}"] = np.full(ntp, v, np.uint32)
        sp["%laneid"] = self.lane.copy()
        sp["%warpid"] = (tl // np.uint32(32)).astype(np.uint32)
        for d in "xyz":
            sp[f"%ctaid.{d}"] = np.zeros(ntp, np.uint32)
            sp[f"%nctaid.{d}"] = np.zeros(ntp, np.uint32)
            sp[f"%clusterid.{d}"] = np.zeros(ntp, np.uint32)
            sp[f"%nclusterid.{d}"] = np.zeros(ntp, np.uint32)
        cx, cy, _ = cluster
        r32 = self.rank_of.astype(np.uint32)
        self.cl_ctaid = [r32 % np.uint32(cx), (r32 // np.uint32(cx)) % np.uint32(cy), r32 // np.uint32(cx * cy)]
        for d, v, n in zip("xyz", self.cl_ctaid, cluster):
            sp[f"%cluster_ctaid.{d}"] = v.copy()
            sp[f"%cluster_nctaid.{d}"] = np.full(ntp, n, np.uint32)
        sp["%cluster_ctarank"] = r32.copy()
        sp["%cluster_nctarank"] = np.full(ntp, C, np.uint32)
        self.special_pred = {"%is_explicit_cluster": np.zeros(ntp, bool)}
        self.explicit_cluster = False
        ln = self.lane.astype(np.uint64)
        one = np.uint64(1)
        sp["%lanemask_eq"] = (one << ln).astype(np.uint32)
        sp["%lanemask_lt"] = ((one << ln) - one).astype(np.uint32)
        sp["%lanemask_le"] = ((one << (ln + one)) - one).astype(np.uint32)
        sp["%lanemask_ge"] = (~((one << ln) - one) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        sp["%lanemask_gt"] = (~((one << (ln + one)) - one) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        for v in sp.values():
            v.setflags(write=False)
        self.special = sp
        self.ctaid_arrays = [sp["%ctaid.x"], sp["%ctaid.y"], sp["%ctaid.z"]]
        self.nctaid_arrays = [sp["%nctaid.x"], sp["%nctaid.y"], sp["%nctaid.z"]]
        self.clusterid_arrays = [sp["%clusterid.x"], sp["%clusterid.y"], sp["%clusterid.z"]]
        self.nclusterid_arrays = [sp["%nclusterid.x"], sp["%nclusterid.y"], sp["%nclusterid.z"]]
        # shared memory: one window of W bytes per CTA of the cluster (rank r's at
        # r * W of the flat array); shared::cta addresses are window offsets
        self.dyn_base = (func.static_smem_bytes + func.dyn_align - 1) // func.dyn_align * func.dyn_align
        self.smem_size = (self.dyn_base + dyn_smem) if dyn_smem else func.static_smem_bytes
        nsm = max((self.smem_size + 15) // 16 * 16, 16)
        if C > 1:
            self.W = max((self.smem_size + 1023) // 1024 * 1024, 1024)
            nsm = C * self.W
        else:
            self.W = nsm
        self.wbase = self.rank_of * self.W if C > 1 else np.zeros(ntp, np.int64)
        self.gone = np.zeros(C, bool)                   # CTAs all of whose threads have exited
        # (messages) across the CTAs of a cluster, what orders accesses
        self._xhint = "; between CTAs: barrier.cluster.arrive{.release} + barrier.cluster.wait" if C > 1 else ""
        self.smem = np.full(nsm, 0xFF, np.uint8)
        self.pend = np.full(nsm, -1, np.int32)   # owner tid of a pending cp.async
        # happens-before through barriers (see _race): the time G counts barrier
        # completions (never reset: a block's start is one); vc[w, x] is the latest
        # time such that everything warp x did before it is ordered before warp w's
        # next access; vmin[w] is the minimum of row w
        self.G = 0
        self.vc = np.zeros((self.nw, self.nw), np.int32)
        self.vmin = np.zeros(self.nw, np.int32)
        self.vdiag = np.zeros(self.nw, np.int32)       # vc's diagonal: each warp's latest barrier
        self.vc_floor = 0
        # race detection (per granule): the last writer (tid, time, warp epoch); the
        # reads, per (granule, warp), are allocated once the granule is known
        self.rw_w = np.zeros(nsm, np.int32)
        self.rw_wt = np.full(nsm, -1, np.int32)
        self.rw_wwep = np.zeros(nsm, np.int32)
        self.wepoch = np.zeros(self.nw, np.int32)      # full-mask bar.warp.sync count of each warp
        self.races = True
        self.vis = np.full(nsm, -1, np.int32)    # -1 all, t >= 0 thread t only, -2-w warp w
        self.scratch = np.zeros(nsm, np.int64)
        self.symbols = {nm: off for nm, (off, _) in func.shared.items()}
        for nm in func.module_shared:
            self.symbols[nm] = self.dyn_base
        # params
        self.param_off = {}
        off = 0
        for ty, nm in func.params:
            sz, al = (128, 64) if ty == "tmap" else (_BITS[ty] // 8, _BITS[ty] // 8)
            off = (off + al - 1) // al * al
            self.param_off[nm] = (off, ty)
            off += sz
        self.pbuf = np.zeros(max(off, 8), np.uint8)
        self.tmap_offs = {o for o, ty in self.param_off.values() if ty == "tmap"}
        self.tmap_cache = {}
        self._async_init()
        self.pc = np.zeros(ntp, np.int64)
        self.alive = np.zeros(ntp, bool)
        self.cp_seq = np.zeros(ntp, np.int64)
        self.has_bstore = False                           # a TMA store in the program (compile)
        self.uses_nc = False
        self.nc_read = self.g_written = None
        self.vis_dirty = False
        self.npend = 0
        self.cp_recs = []
        self.mem = None
        self.banks = None     # a BankStats while run_kernel is given one
        self.widths = set()   # shared access sizes: race tracking granule = the smallest
        self.cl_used = False  # barrier.cluster in the program (compile)
        self._cl_reset()
        self.code = []
        for ins in func.prog:
            try:
                self.code.append(self._compile(ins))
            except EmuError as e:
                raise EmuError(f"{func.name}: line {ins.line}: `{ins.text}`: {e}") from None
        self.granule = min(self.widths) if self.widths else 16
        ngr = nsm // self.granule
        self.rd_last = np.full(ngr, -1, np.int32)              # latest read time of a granule, any warp
        self.rd_t = np.full((ngr, self.nw), -1, np.int32)      # latest read time per (granule, warp)
        self.rd_lo = np.zeros((ngr, self.nw), np.int8)         # lanes that read it since the warp's last
        self.rd_hi = np.zeros((ngr, self.nw), np.int8)         # barrier: smallest, largest,
        self.rd_we = np.zeros((ngr, self.nw), np.int32)        # and their latest warp epoch
        self.rd_tf, self.rd_lof, self.rd_hif, self.rd_wef = (a.reshape(-1) for a in (self.rd_t, self.rd_lo,
                                                                                    self.rd_hi, self.rd_we))
        self.lane8 = (np.arange(ntp) % 32).astype(np.int8)
        # TMA stores: generic shared stores not yet made visible to the async proxy
        # (per byte: writer, time of its fence.proxy.async or -1, warp epoch then)
        self.pxy_on = self.has_bstore
        if self.pxy_on:
            self.pxy_w = np.full(nsm, -1, np.int32)
            self.pxy_t = np.zeros(nsm, np.int32)
            self.pxy_we = np.zeros(nsm, np.int32)
        self.pxy_dirty = False
        if self.acc_regs:   # instructions touching wgmma accumulators (see _acc_guard)
            for p, (kind, fn, gv, gneg, tgt, ins) in enumerate(self.code):
                if kind != _K_OP or ins.op == "wgmma":
                    continue
                names = frozenset(re.findall(r"%[\w$]+", " ".join(ins.args))) & self.acc_regs
                if names:
                    self.code[p] = (kind, self._acc_guard(fn, names, ins), gv, gneg, tgt, ins)
        for p, (kind, fn, gv, gneg, tgt, ins) in enumerate(self.code):
            if kind == _K_BRA and tgt is None:
                raise EmuError(f"{func.name}: unknown label in `{ins.text}`")

    # ------------------------------------------------------------------ operands
    def _view(self, arr, ty):
        """Typed view of storage `arr` as PTX type `ty` (low bits when narrower)."""
        if ty == "pred":
            return arr
        dt = np.dtype(_NP[ty])
        if dt.itemsize == arr.itemsize:
            return arr.view(dt)
        if dt.itemsize < arr.itemsize:
            return arr.view(dt)[::arr.itemsize // dt.itemsize]
        raise EmuError(f"{ty} operand wider than its register")

    def _const(self, value, dtype):
        a = np.full(self.ntp, value, dtype)
        a.setflags(write=False)
        return a

    def imm(self, a, ty):
        """Immediate operand as a constant typed array, or None if `a` is not one."""
        s = a.strip()
        c = _cls(ty)
        bits = _BITS[ty] if ty != "pred" else 1
        if re.fullmatch(r"[-]?0[fF][0-9a-fA-F]{8}", s):
            neg = s.startswith("-")
            v = int(s.lstrip("-")[2:], 16) ^ (0x80000000 if neg else 0)
            if c == "f" and bits == 64:
                return self._const(np.float64(np.array([v], np.uint32).view(np.float32)[0]), np.float64)
            if bits != 32:
                raise EmuError(f"f32 literal {a} for a .{ty} operand")
            return self._const(np.array([v], np.uint32).view(_NP[ty])[0], _NP[ty])
        if re.fullmatch(r"[-]?0[dD][0-9a-fA-F]{16}", s):
            v = int(s.lstrip("-")[2:], 16) ^ ((1 << 63) if s.startswith("-") else 0)
            if bits != 64:
                raise EmuError(f"f64 literal {a} for a .{ty} operand")
            return self._const(np.array([v], np.uint64).view(_NP[ty])[0], _NP[ty])
        if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", s) and \
                ("." in s or "e" in s.lower()) and not s.lower().startswith("0x"):
            if c != "f":
                raise EmuError(f"floating literal {a} for a .{ty} operand")
            return self._const(_NP[ty](float(s)), _NP[ty])
        try:
            v = _int_lit(s)
        except ValueError:
            return None
        if ty == "pred":
            return self._const(bool(v), np.bool_)
        if c == "f":
            return self._const(_NP[ty](v), _NP[ty])
        v &= (1 << bits) - 1
        return self._const(np.array([v], _UNS[bits]).view(_NP[ty])[0], _NP[ty])

    def symbol(self, a):
        m = re.fullmatch(r"([A-Za-z_$][\w$]*)\s*(?:([+-])\s*(\w+))?", a.strip())
        if not m or m.group(1) not in self.symbols:
            return None
        off = _int_lit(m.group(3)) if m.group(3) else 0
        return self.symbols[m.group(1)] + (-off if m.group(2) == "-" else off)

    def src(self, a, ty, relaxed=False):
        """Operand `a` as a read-only numpy array of PTX type `ty` (all threads)."""
        a = a.strip()
        if a in self.regs:
            rt = self.f.reg_types[a]
            if not _compat(ty, rt, relaxed):
                raise EmuError(f"register {a} (.{rt}) is not a .{ty} operand")
            return self._view(self.regs[a], ty)
        if a in self.special:
            if not _compat(ty, "u32", relaxed):
                raise EmuError(f"special register {a} (.u32) is not a .{ty} operand")
            return self._view(self.special[a], ty)
        if a in self.special_pred:
            if ty != "pred":
                raise EmuError(f"special register {a} (.pred) is not a .{ty} operand")
            return self.special_pred[a]
        if a.startswith("%"):
            raise EmuError(f"undeclared register {a}")
        sym = self.symbol(a)
        if sym is not None:
            if _cls(ty) == "f" or _BITS[ty] < 32:
                raise EmuError(f"address of {a} as a .{ty} operand")
            return self._const(sym, _NP[ty])
        v = self.imm(a, ty)
        if v is None:
            raise EmuError(f"cannot read operand `{a}`")
        return v

    def pred_src(self, a):
        """Predicate source with optional `!`: (array, negated)."""
        a = a.strip()
        neg = a.startswith("!")
        a = a[1:].strip() if neg else a
        arr = self.src(a, "pred")
        return arr, neg

    def dst(self, a, ty, relaxed=False, canon=False):
        """Writer w(values, mask) for destination `a` of PTX type `ty`."""
        a = a.strip()
        if a == "_":
            return lambda v, g: None
        if a not in self.regs:
            if a in self.special or a in self.special_pred:
                raise EmuError(f"special register {a} is read-only")
            raise EmuError(f"undeclared register {a}")
        rt = self.f.reg_types[a]
        if not _compat(ty, rt, relaxed):
            raise EmuError(f"register {a} (.{rt}) is not a .{ty} destination")
        r = self.regs[a]
        if ty == "pred":
            return lambda v, g: np.copyto(r, v, where=g)
        dt = np.dtype(_NP[ty])
        if dt.itemsize == r.itemsize:
            D = r.view(dt)
            if canon and dt == np.float32:
                return lambda v, g: np.copyto(D, _canon(v), where=g)
            return lambda v, g: np.copyto(D, v, where=g, casting="unsafe")
        bits = _BITS[ty]
        if _cls(ty) == "f":
            U = _UNS[bits]
            return lambda v, g: np.copyto(r, np.asarray(v, dt).view(U), where=g, casting="unsafe")
        # integer / bit types: sign-extend for signed types, zero-extend otherwise
        return lambda v, g: np.copyto(r, np.asarray(v).astype(dt, copy=False), where=g, casting="unsafe")

    def addr(self, a):
        """Address operand `[base+off]` -> function returning int64 addresses, plus
        whether the base is a parameter name (for ld.param)."""
        m = re.fullmatch(r"\[\s*([^\]+\-\s]+)\s*(?:([+-])\s*([-\w]+))?\s*\]", a.strip())
        if not m:
            raise EmuError(f"cannot parse address `{a}`")
        base = m.group(1)
        off = _int_lit(m.group(3)) if m.group(3) else 0
        if m.group(2) == "-":
            off = -off
        if base in self.regs:
            rt = self.f.reg_types[base]
            if _BITS[rt] not in (32, 64) or _cls(rt) == "f":
                raise EmuError(f"address register {base} must be a 32- or 64-bit integer")
            R = self.regs[base]
            if off:
                return (lambda: R.astype(np.int64) + off), None
            return (lambda: R.astype(np.int64)), None
        if base in self.param_off:
            return None, (base, off)
        if base in self.symbols:
            c = np.full(self.ntp, self.symbols[base] + off, np.int64)
            return (lambda: c), None
        try:
            c = np.full(self.ntp, _int_lit(base) + off, np.int64)
        except ValueError:
            raise EmuError(f"unknown address base `{base}`") from None
        return (lambda: c), None

    # ------------------------------------------------------------------ compile
    def _compile(self, ins):
        op, mods = ins.op, ins.mods
        gv, gneg = None, False
        if ins.pred is not None:
            if ins.pred not in self.regs or self.f.regs[ins.pred] != "pred":
                raise EmuError(f"guard {ins.pred} is not a declared predicate")
            gv, gneg = self.regs[ins.pred], ins.neg
        if op == "bra":
            tgt = self.f.labels.get(ins.args[0])
            if tgt is None:
                raise EmuError(f"unknown label {ins.args[0]}")
            return (_K_BRA, "uni" in mods, gv, gneg, tgt, ins)
        if op in ("ret", "exit"):
            return (_K_RET, None, gv, gneg, None, ins)
        if op == "trap":
            def trap(g):
                if np.count_nonzero(g):
                    raise EmuError("trap executed")
            return (_K_OP, trap, gv, gneg, None, ins)
        if (op == "bar" and mods and mods[0] in ("sync", "red", "arrive")) or \
                (op == "barrier" and mods and mods[0] in ("sync", "cta")):
            m2 = [m for m in mods if m not in ("aligned", "cta")]
            if m2 in (["red", "or", "pred"], ["red", "and", "pred"]):
                return (_K_BAR, self._c_barred(ins, m2[1]), gv, gneg, None, ins)
            if m2 == ["arrive"] and op == "bar":
                spec = self._c_barsync(ins)
                if len(ins.args) != 2 or spec[1] is None:
                    raise EmuError("bar.arrive takes a, b: a barrier id and a thread count below the block's size")
                return (_K_BAR, spec + ("arrive",), gv, gneg, None, ins)
            if m2 != ["sync"]:
                raise EmuError("only bar.sync / barrier.sync{.aligned} a{, b}, bar.arrive a, b and "
                               "bar.red.{or,and}.pred d, a, {!}c are supported (not bar.red.popc)")
            return (_K_BAR, self._c_barsync(ins), gv, gneg, None, ins)
        if op == "barrier" and mods and mods[0] == "cluster":
            kind, fn = self._c_cluster_barrier(ins)
            return (kind, fn, gv, gneg, None, ins)
        if (op == "fence" and not (mods and mods[0].startswith("proxy")) and
                any(m in ("cluster", "gpu", "sys") for m in mods)) or (op == "membar" and mods in (["gl"], ["sys"])):
            return (_K_OP, self._c_release_fence(ins), gv, gneg, None, ins)
        if op == "fence" and mods[:2] == ["proxy", "async"] and \
                all(m in ("shared::cta", "shared::cluster") for m in mods[2:]):
            return (_K_OP, self._c_fence_proxy(ins), gv, gneg, None, ins)
        if op == "prefetch" and mods[:1] == ["global"]:
            return (_K_OP, self._c_prefetch_global(ins), gv, gneg, None, ins)
        if op in ("membar", "fence", "nanosleep", "prefetch", "prefetchu"):
            return (_K_OP, lambda g: None, gv, gneg, None, ins)
        if op == "mbarrier" and mods and mods[0] in ("try_wait", "test_wait"):
            return (_K_WAIT, self._c_mbarrier(ins), gv, gneg, None, ins)
        name = "_c_" + op
        fn = getattr(self, name, None)
        if fn is None:
            raise EmuError("unsupported instruction")
        return (_K_OP, fn(ins), gv, gneg, None, ins)

    # -------------------------------------------------------------- data movement
    def _c_mov(self, ins):
        ty = ins.mods[-1]
        d, a = ins.args
        if d.startswith("{"):  # unpack: mov.b32 {lo, hi}, a
            parts = [x.strip() for x in d.strip("{}").split(",")]
            if _cls(ty) != "b":
                raise EmuError("vector mov needs a bit-size type")
            eb = _BITS[ty] // len(parts)
            if eb not in (8, 16, 32) or eb * len(parts) != _BITS[ty]:
                raise EmuError("bad unpack shape")
            A = self.src(a, ty)
            ws = [self.dst(p, f"b{eb}") if p != "_" else None for p in parts]
            U = _UNS[_BITS[ty]]
            mask = (1 << eb) - 1

            def unpack(g):
                v = A.astype(U, copy=False)
                outs = [(v >> U(eb * i)) & U(mask) for i in range(len(parts))]
                for w, o in zip(ws, outs):
                    if w is not None:
                        w(o, g)
            return unpack
        if a.startswith("{"):  # pack: mov.b32 d, {lo, hi}
            parts = [x.strip() for x in a.strip("{}").split(",")]
            if _cls(ty) != "b":
                raise EmuError("vector mov needs a bit-size type")
            eb = _BITS[ty] // len(parts)
            if eb not in (8, 16, 32) or eb * len(parts) != _BITS[ty]:
                raise EmuError("bad pack shape")
            srcs = [self.src(p, f"b{eb}") for p in parts]
            w = self.dst(d, ty)
            U = _UNS[_BITS[ty]]

            def pack(g):
                v = np.zeros(self.ntp, U)
                for i, s in enumerate(srcs):
                    v |= s.astype(U) << U(eb * i)
                w(v, g)
            return pack
        if a.strip() in self.param_off:   # the parameter's address in the .param window
            A = self._param_addr(a.strip(), ty, PARAM_SPACE_BASE)
        else:
            A = self.src(a, ty)
        w = self.dst(d, ty)
        return lambda g: w(A, g)

    def _param_addr(self, name, ty, base):
        if ty not in ("u64", "b64", "s64"):
            raise EmuError(f"the address of parameter {name} needs a 64-bit type")
        return self._const(base + self.param_off[name][0], _NP[ty])

    def _c_cvta(self, ins):
        ty = ins.mods[-1]
        if ty not in ("u32", "u64"):
            raise EmuError("cvta type must be .u32 or .u64")
        space = [m for m in ins.mods[:-1] if m != "to"]
        if space == ["param"]:
            # .param <-> generic: the two parameter windows (module doc)
            to = "to" in ins.mods
            frm, dst_base = (PARAM_GENERIC_BASE, PARAM_SPACE_BASE) if to else (PARAM_SPACE_BASE, PARAM_GENERIC_BASE)
            a = ins.args[1].strip()
            A = self._param_addr(a, ty, frm) if a in self.param_off else self.src(a, ty)
            w = self.dst(ins.args[0], ty)
            what = f"{self.f.name}: {ins.text}"
            if ty != "u64":
                raise EmuError("cvta.param needs .u64")

            def cvta_param(g):
                v = A.astype(np.int64)
                bad = g & ((v < frm) | (v >= frm + PARAM_WINDOW))
                if np.count_nonzero(bad):
                    raise EmuError(f"{what}: {int(v[bad][0]):#x} is not a {'generic' if to else '.param'}-window "
                                   f"parameter address (from mov.u64 %rd, param{' and cvta.param' if to else ''})")
                w((v - frm + dst_base).astype(np.uint64), g)
            return cvta_param
        A = self.src(ins.args[1], ty)
        w = self.dst(ins.args[0], ty)
        return lambda g: w(A, g)

    def _c_selp(self, ins):
        ty = ins.mods[-1]
        d, a, b, c = ins.args
        A, B = self.src(a, ty), self.src(b, ty)
        C, cn = self.pred_src(c)
        if cn:
            raise EmuError("selp predicate cannot be negated")
        w = self.dst(d, ty)
        return lambda g: w(np.where(C, A, B), g)

    def _space(self, mods):
        sp = [m.split("::")[0] for m in mods if m.split("::")[0] in
              ("global", "shared", "param", "local", "const", "generic")]
        return sp[0] if sp else "generic"

    def _c_ld(self, ins):
        return self._ldst(ins, True)

    def _c_prefetch_global(self, ins):
        """prefetch.global.{L1,L2}{::evict_*} [a]: no data moves, but the byte at
        a must lie in a buffer of the launch (a kernel that prefetches past its
        tensors has its bounds wrong, even where the hardware would drop it)."""
        afn, pinfo = self.addr(ins.args[0])
        if pinfo is not None:
            raise EmuError("parameter name used as a prefetch address")
        what = f"{self.f.name}: {ins.text}"

        def prefetch(g):
            act = g.nonzero()[0]
            if act.size:
                self.mem.check(afn()[act], 1, what)
        return prefetch

    def _c_ldu(self, ins):
        return self._ldst(ins, True)

    def _c_st(self, ins):
        return self._ldst(ins, False)

    def _ldst(self, ins, is_ld):
        mods = ins.mods
        space = self._space(mods)
        vec = 1
        for m in mods:
            if m in ("v2", "v4", "v8"):
                vec = int(m[1])
        ty = mods[-1]
        if ty not in _BITS or ty == "pred":
            raise EmuError("unsupported ld/st type")
        nc = "nc" in mods
        if space in ("local", "const", "generic"):
            raise EmuError(f"{space} state space not supported")
        width = _BITS[ty] // 8
        nbytes = width * vec
        if is_ld:
            dsts, mem_op = ins.args[0], ins.args[1]
        else:
            mem_op, dsts = ins.args[0], ins.args[1]
        names = [x.strip() for x in dsts.strip("{}").split(",")] if dsts.strip().startswith("{") else [dsts.strip()]
        if len(names) != vec:
            raise EmuError(f"{vec}-vector needs {vec} registers")
        afn, pinfo = self.addr(mem_op)
        ins_text = f"{self.f.name}: {ins.text}"
        if space == "param":
            if not is_ld or pinfo is None:
                raise EmuError("only ld.param of a kernel parameter is supported")
            pname, poff = pinfo
            off = self.param_off[pname][0] + poff
            ws = [self._ld_dst(n, ty) for n in names]
            dt = np.dtype(_UNS[_BITS[ty]]) if _cls(ty) != "s" else np.dtype(_NP[ty])

            def ldparam(g):
                act = g.nonzero()[0]
                for j, w in enumerate(ws):
                    o = off + j * width
                    if o + width > len(self.pbuf):
                        raise EmuError(f"{ins_text}: read past the parameters")
                    v = self.pbuf[o:o + width].view(dt)[0]
                    if w is not None:
                        w(act, np.full(act.size, v, dt))
            return ldparam
        if pinfo is not None:
            raise EmuError("parameter name used as a global/shared address")
        rdt = np.dtype(_UNS[_BITS[ty]]) if _cls(ty) != "s" else np.dtype(_NP[ty])
        ar = np.arange(vec)
        xl = None
        if space == "shared":
            self.widths.add(width)
            if "shared::cluster" in mods:
                self._need_sm90(ins, version=(7, 8))
                xl = self._xcluster
            elif self.C > 1:
                xl = self._xcta
        if is_ld:
            ws = [self._ld_dst(n, ty) for n in names]
            if nc:
                if space != "global":
                    raise EmuError(".nc needs the global state space")
                self.uses_nc = True

            def load(g):
                act = g.nonzero()[0]
                if not act.size:
                    return
                ad = afn()[act]
                if space == "global":
                    self.mem.check(ad, nbytes, ins_text)
                    store = self.mem.mem
                    if nc:
                        self._nc_mark(ad, nbytes)
                else:
                    if xl is not None:
                        ad = xl(ad, act, nbytes, ins_text)
                    self.shared_access(ad, nbytes, ins_text, act, write=False, ins=ins)
                    store = self.smem
                if vec == 1:
                    ws[0](act, store.view(rdt)[ad // width])
                    return
                vals = store.view(rdt)[(ad // width)[:, None] + ar]
                for j, w in enumerate(ws):
                    if w is not None:
                        w(act, vals[:, j])
            return load
        if "_" in names:
            raise EmuError("sink operand in a store")
        srcs = [self.src(n, ty, relaxed=True) for n in names]
        srcs = [s.view(rdt) if s.dtype.itemsize == rdt.itemsize else s.astype(rdt) for s in srcs]

        def store_(g):
            act = g.nonzero()[0]
            if not act.size:
                return
            ad = afn()[act]
            if space == "global":
                self.mem.check(ad, nbytes, ins_text)
                store = self.mem.mem
                if self.uses_nc:
                    self._w_mark(ad, nbytes)
            else:
                if xl is not None:
                    ad = xl(ad, act, nbytes, ins_text)
                self.shared_access(ad, nbytes, ins_text, act, write=True, ins=ins)
                store = self.smem
                if self.pxy_on:   # generic-proxy data: a TMA store needs a fence.proxy.async first
                    pi = ad[:, None] + np.arange(nbytes)
                    self.pxy_w[pi] = act[:, None]
                    self.pxy_t[pi] = -1
                    self.pxy_dirty = True
            if vec == 1:
                ix, vals = ad // width, srcs[0][act]
            else:
                ix, vals = (ad // width)[:, None] + ar, np.stack([s[act] for s in srcs], 1)
            view = store.view(rdt)
            view[ix] = vals
            if self.races and act.size > 1 and np.count_nonzero(view[ix] != vals):
                k = np.argwhere(view[ix] != vals)[0][0]
                raise EmuError(f"{ins_text}: threads store different values to the same address {ad[k]} in one "
                               f"instruction (which one lands is undefined)")
        return store_

    def _ld_dst(self, name, ty):
        """Destination of a load: a register of at least the type's size (zero- or
        sign-extended), checked with the relaxed ld/st rules."""
        if name == "_":
            return None
        if name not in self.regs:
            raise EmuError(f"undeclared register {name}")
        rt = self.f.reg_types[name]
        if not _compat(ty, rt, relaxed=True):
            raise EmuError(f"register {name} (.{rt}) is not a .{ty} destination")
        r = self.regs[name]

        def w(act, v):
            # same size: bit copy; wider register: numpy's C cast sign-extends
            # signed values and zero-extends unsigned ones
            r[act] = v.view(r.dtype) if v.dtype.itemsize == r.itemsize else v
        return w

    def _nc_mark(self, ad, n):
        if self.nc_read is None:
            self.nc_read = np.zeros(self.mem.top, bool)
        self.nc_read[ad[:, None] + np.arange(n)] = True

    def _w_mark(self, ad, n):
        if self.g_written is None:
            self.g_written = np.zeros(self.mem.top, bool)
        self.g_written[ad[:, None] + np.arange(n)] = True

    # -------------------------------------------------------- clusters: shared windows
    def _cluster_addr(self, a):
        """(rank, offset) of a shared::cluster address (mapa's form), else None."""
        o = int(a) - CLUSTER_WINDOW
        if 0 <= o < self.C * self.W:
            return divmod(o, self.W)
        return None

    def _xcta(self, ad, tids, nbytes, what, role="shared::cta access"):
        """shared::cta addresses `ad` (offsets in the CTA's shared memory) of
        threads `tids` -> flat addresses, in the window of each thread's CTA."""
        bad = (ad < 0) | (ad > self.smem_size - nbytes)
        if np.count_nonzero(bad):
            k = int(np.flatnonzero(bad)[0])
            a, t = int(ad[k]), int(tids[k])
            r = t // self.ctp
            ca = self._cluster_addr(a)
            if ca is not None:
                raise EmuError(f"{what}: thread {self._who(t)}: {role} at {a:#x}, a shared::cluster address (from "
                               f"mapa: offset {ca[1]} of rank {ca[0]}'s shared memory): a .shared::cta access must "
                               f"stay in the shared memory of the thread's own CTA (rank {r}), at a shared::cta "
                               f"address; rank {ca[0]}'s memory needs the .shared::cluster form")
            raise EmuError(f"{what}: {role} out of bounds: {ad[bad][:4]} (thread {self._who(t)}; shared memory is "
                           f"{self.smem_size} B{' per CTA' if self.C > 1 else ''})")
        if self.C == 1:
            return ad
        return ad + self.wbase[tids]

    def _xcluster(self, ad, tids, nbytes, what, role="shared::cluster access"):
        """shared::cluster addresses of threads `tids` -> flat addresses: mapa's
        results (CLUSTER_WINDOW + rank * W + offset: any CTA of the cluster) or a
        thread's own shared::cta addresses. Into a CTA that has exited: an error."""
        rem = ad >= CLUSTER_WINDOW
        if not np.count_nonzero(rem):
            return self._xcta(ad, tids, nbytes, what, role)
        out = np.empty_like(ad)
        own = ~rem
        if np.count_nonzero(own):
            out[own] = self._xcta(ad[own], tids[own], nbytes, what, role)
        off = ad[rem] - CLUSTER_WINDOW
        r, o = off // self.W, off % self.W
        bad = (r >= self.C) | (o > self.smem_size - nbytes)
        if np.count_nonzero(bad):
            k = int(np.flatnonzero(bad)[0])
            raise EmuError(f"{what}: {role} of thread {self._who(tids[rem][k])} at {int(ad[rem][k]):#x}: not a shared "
                           f"memory address of the cluster's {self.C} CTA(s) ({self.smem_size} B each)")
        gone = self.gone[r]
        if np.count_nonzero(gone):
            k = int(np.flatnonzero(gone)[0])
            raise EmuError(f"{what}: thread {self._who(tids[rem][k])}: {role} at offset {int(o[k])} of rank "
                           f"{int(r[k])}'s shared memory, but rank {int(r[k])} has exited: its shared memory is gone "
                           f"(a CTA must not exit while its peers may still use its shared memory: "
                           f"barrier.cluster.arrive / wait before exiting)")
        out[rem] = off
        if self.C > 1:
            self._racc_note(r, tids[rem], what)
        return out

    def _racc_note(self, r, tids, what):
        """Accesses by threads `tids` to the shared memory of ranks r (peers:
        they must be ordered before r's exit, see _cta_exit)."""
        peer = r != tids // self.ctp
        if not np.count_nonzero(peer):
            return
        r, x = r[peer], tids[peer] >> 5
        np.maximum.at(self.racc, (r, x), self.G)
        for key in set(zip(r.tolist(), x.tolist())):
            self.racc_what[key] = what[len(self.f.name) + 2:] if what.startswith(self.f.name + ": ") else what

    def _cta_exit(self, r, g):
        """The last threads of CTA r (g) exit: its shared memory goes. Every access
        of a peer to it must be ordered before (a cluster barrier before exiting)."""
        self.gone[r] = True
        acc = self.racc[r]
        xs = np.flatnonzero(acc >= 0)
        if not xs.size:
            return
        ws = np.unique(np.flatnonzero(g) >> 5)
        seen = self.vc[ws][:, xs].max(0)
        bad = acc[xs] >= seen
        if np.count_nonzero(bad):
            x = int(xs[bad][0])
            raise EmuError(f"{self.f.name}: the last threads of rank {r} exit, but warp {x}'s (rank {x // self.cwp}) "
                           f"access to rank {r}'s shared memory (`{_short(self.racc_what[(r, x)])}`) is not ordered "
                           f"before the exit: rank {r}'s shared memory may be gone when it lands (every CTA of the "
                           f"cluster must barrier.cluster.arrive.release / barrier.cluster.wait.acquire before exiting "
                           f"while peers may still use its shared memory)")

    def shared_access(self, ad, nbytes, what, tids, write, collective=False, ins=None):
        """Alignment, bounds, pending cp.async, (strict) visibility and races of the
        bytes [ad, ad + nbytes) touched by threads `tids` (for a warp-collective
        read, `tids` are lanes of the reading warps); bank accounting of the
        instruction `ins` when a BankStats is attached."""
        if np.count_nonzero(ad & (nbytes - 1)):
            bad = ad[ad % nbytes != 0]
            if self.C > 1:
                bad = bad % self.W
            raise EmuError(f"{what}: misaligned {nbytes}-byte shared access at {bad[:4]}")
        if self.C == 1 and np.count_nonzero((ad < 0) | (ad > self.smem_size - nbytes)):   # (clusters: _xcta)
            raise EmuError(f"{what}: shared access out of bounds: {ad[(ad < 0) | (ad + nbytes > self.smem_size)][:4]}"
                           f" (shared memory is {self.smem_size} B)")
        if self.banks is not None and ins is not None:
            self.banks.record((self.f.name, ins.line, ins.text), ad, nbytes, tids)
        if self.async_on:
            self._async_generic(ad, nbytes, what, tids, write, collective)
        if write and self.n_bstore:
            if nbytes <= 16:
                self._bs_hit(ad >> 4, np.asarray(tids), what)
            else:
                self._bs_hit(((ad[:, None] + np.arange(0, nbytes, 16)) >> 4).ravel(),
                             np.repeat(np.asarray(tids), nbytes // 16), what)
        if self.npend or self.vis_dirty:
            idx = ad[:, None] + np.arange(nbytes)
            if self.npend:
                pv = self.pend[idx]
                if np.count_nonzero((pv >= 0)):
                    k = np.argwhere(pv >= 0)[0]
                    verb = "write to" if write else "read of"
                    raise EmuError(f"{what}: {verb} shared memory with a pending cp.async: byte "
                                   f"{self._loc(idx[k[0], k[1]])} (thread {tids[k[0]]}; cp.async issued by thread "
                                   f"{pv[k[0], k[1]]} not yet retired by cp.async.wait_group/wait_all)")
            if self.vis_dirty:
                if write:
                    self.vis[idx] = -1
                else:
                    vv = self.vis[idx]
                    t = np.asarray(tids, np.int64)[:, None]
                    ok = (vv == -1) | (vv == t) | (vv == -2 - t // 32)
                    if not ok.all():
                        k = np.argwhere(~ok)[0]
                        raise EmuError(f"{what}: thread {t[k[0], 0]} reads shared byte {self._loc(idx[k[0], k[1]])} "
                                       f"written by a cp.async of thread {vv[k[0], k[1]]} with no barrier since its "
                                       f"cp.async.wait (bar.sync, or bar.warp.sync within the warp)")
        if self.races:
            gr = self.granule
            k = nbytes // gr
            gi = (ad // gr)[:, None] if k == 1 else (ad // gr)[:, None] + _ARANGE[:k]
            self._race(gi, tids, write, what, collective)

    def _race(self, idx, tids, write, what, collective):
        """Shared-memory race detection, per granule (the function's smallest shared
        access size). Happens-before comes from barriers: each completion (time G
        += 1) orders everything its warps did before it before everything they do
        after it, transitively (warp-level vector clocks vc: warp x's accesses
        before time vc[w, x] are ordered before warp w's next ones; barriers count
        whole warps, so warp granularity is exact); within a warp, a full-mask
        bar.warp.sync orders its lanes (warp epochs). Conflicting accesses (a write
        and a read or write) by different threads not ordered that way are an
        error. Per granule: the last writer (tid, time, warp epoch) - a write
        unordered with it is itself an error, so by transitivity it stands for
        all earlier writes - and per (granule, warp) the latest read time and the
        lanes (smallest, largest, latest warp epoch) that read it since that
        warp's last barrier. A warp-collective read (ldmatrix) reads for every
        lane of its warp."""
        G = self.G
        Wf = tids >> 5
        W = Wf[:, None]
        WE = self.wepoch[W]
        vmin = self.vmin[W]
        gr = self.granule
        wt = self.rw_wt[idx]
        cand = wt >= vmin
        if np.count_nonzero(cand):
            r, c = np.nonzero(cand)
            gi = idx[r, c]
            ww = self.rw_w[gi]
            xw = ww // 32
            bad = wt[r, c] >= self.vc[Wf[r], xw]
            if np.count_nonzero(bad):
                bad &= ~((xw == Wf[r]) & (self.rw_wwep[gi] < WE[r, 0]))
                if not collective:
                    bad &= ww != tids[r]
                if np.count_nonzero(bad):
                    k = int(np.flatnonzero(bad)[0])
                    kind = "writes" if write else "reads"
                    raise EmuError(f"{what}: shared-memory race: thread {self._who(tids[r[k]])} {kind} byte "
                                   f"{self._loc(int(gi[k]) * gr)} written by thread {self._who(ww[k])} with no barrier "
                                   f"between them (bar.sync, or a bar.sync with a thread count both took part "
                                   f"in{self._xhint})")
        if write:
            cand = self.rd_last[idx] >= vmin
            if np.count_nonzero(cand):
                r, c = np.nonzero(cand)
                gi = idx[r, c]
                Wr = Wf[r]
                ar = np.arange(r.size)
                live = self.rd_t[gi] >= self.vc[Wr]          # unordered reads, per reader warp
                own = live[ar, Wr]
                live[ar, Wr] = False
                bad = live.any(1)
                if np.count_nonzero(own):
                    L = self.lane8[tids[r]]
                    lo, hi = self.rd_lo[gi, Wr], self.rd_hi[gi, Wr]
                    bad |= own & ~((lo == L) & (hi == L)) & ~(self.rd_we[gi, Wr] < WE[r, 0])
                if np.count_nonzero(bad):
                    k = int(np.flatnonzero(bad)[0])
                    x = int(np.flatnonzero(live[k])[0]) if live[k].any() else int(Wr[k])
                    raise EmuError(f"{what}: shared-memory race: thread {self._who(tids[r[k]])} writes byte "
                                   f"{self._loc(int(gi[k]) * gr)} read by {self._readers(int(gi[k]), x)} with no "
                                   f"barrier between them (bar.sync, or a bar.sync with a thread count both took part "
                                   f"in{self._xhint})")
            shape = idx.shape
            self.rw_w[idx] = np.broadcast_to(tids[:, None], shape)
            self.rw_wt[idx] = G
            self.rw_wwep[idx] = np.broadcast_to(WE, shape)
            return
        n = idx.shape[1]
        fi = (idx * self.nw + W).ravel()
        rt, lo, hi, we = self.rd_tf, self.rd_lof, self.rd_hif, self.rd_wef
        d, we1 = self.vdiag[Wf], WE[:, 0]
        if n > 1:
            d, we1 = np.repeat(d, n), np.repeat(we1, n)
        stale = rt[fi] < d              # the earlier reads precede the warp's last barrier
        if np.count_nonzero(stale):
            si = fi[stale]
            lo[si] = 127
            hi[si] = -1
            we[si] = -1
        if collective:
            lo[fi] = 0
            hi[fi] = 31
        else:
            ln = self.lane8[tids]
            if n > 1:
                ln = np.repeat(ln, n)
            np.minimum.at(lo, fi, ln)
            np.maximum.at(hi, fi, ln)
        np.maximum.at(we, fi, we1)
        rt[fi] = G
        self.rd_last[idx] = G

    def _readers(self, gi, x):
        """Who read granule gi in warp x (for messages)."""
        if self.rd_t[gi, x] >= self.vc[x, x] and self.rd_hi[gi, x] >= 0:
            a, b = 32 * x + int(self.rd_lo[gi, x]), 32 * x + int(self.rd_hi[gi, x])
            return f"thread {a}" if a == b else f"threads {a}..{b}"
        return f"warp {x}"

    def _hb_all(self):
        """A barrier of the whole block completes (also a block's start): every
        warp is ordered after everything before it."""
        self.G += 1
        self.vc.fill(self.G)
        self.vmin.fill(self.G)
        self.vdiag.fill(self.G)
        self.vc_floor = self.G

    def _hb_warps(self, P):
        """A barrier of the warps P completes: each is ordered after everything
        that any of them is ordered after (join of their clocks)."""
        self.G += 1
        j = self.vc[P].max(0)
        j[P] = self.G
        self.vc[P] = j
        self.vmin[P] = j.min()
        self.vdiag[P] = self.G
        self.vc_floor = int(self.vmin.min())

    def _hb_release(self, w):
        """Warp w's release at time G (the caller advanced it): a clock row
        ordering everything w did so far before whoever acquires it."""
        snap = self.vc[w].copy()
        snap[w] = self.G
        return snap

    def _hb_acquire(self, ws, join):
        """Warps ws acquire `join` (a clock row: the releases of a barrier phase,
        cluster barrier or mbarrier): each is ordered after everything it is."""
        self.G += 1
        v = np.maximum(self.vc[ws], join[None, :])
        v[np.arange(ws.size), ws] = self.G
        self.vc[ws] = v
        self.vdiag[ws] = self.G
        self.vmin[ws] = v.min(1)
        self.vc_floor = int(self.vmin.min())

    # ------------------------------------------------------------------ cp.async
    def _c_cp(self, ins):
        if ins.mods[:2] == ["async", "bulk"]:
            return self._c_bulk(ins)
        mods = [m.split("::")[0] if m.startswith("shared") else m for m in ins.mods]
        if not mods or mods[0] != "async":
            raise EmuError("only cp.async is supported")
        rest = mods[1:]
        if rest in (["commit_group"],):
            def commit(g):
                self.cp_seq[g] += 1
            return commit
        if rest and rest[0] == "wait_group":
            n = _int_lit(ins.args[0])

            def wait_group(g):
                if np.count_nonzero(g):
                    self._cp_retire(g, self.cp_seq - n)
            return wait_group
        if rest == ["wait_all"]:
            def wait_all(g):
                self.cp_seq[g] += 1
                if np.count_nonzero(g):
                    self._cp_retire(g, self.cp_seq)
            return wait_all
        if not rest or rest[0] not in ("ca", "cg") or "shared" not in rest or "global" not in rest:
            raise EmuError("unsupported cp.async form")
        args = list(ins.args)
        if any(m.startswith("L2::cache_hint") for m in rest):
            args = args[:-1]   # cache-policy operand: a hint only
        if len(args) not in (3, 4):
            raise EmuError("cp.async takes [dst], [src], cp-size{, src-size | ignore-src}")
        cp = _int_lit(args[2])
        if cp not in (4, 8, 16):
            raise EmuError(f"cp-size {cp} not in 4, 8, 16")
        if rest[0] == "cg" and cp != 16:
            raise EmuError("cp.async.cg needs cp-size 16")
        self.widths.add(cp)
        dfn, dp = self.addr(args[0])
        sfn, sp = self.addr(args[1])
        if dp is not None or sp is not None:
            raise EmuError("parameter used as a cp.async address")
        srcsize = None
        ignore = None
        if len(args) == 4:
            a4 = args[3].strip()
            nm = a4.lstrip("!").strip()
            if nm in self.regs and self.f.regs[nm] == "pred":
                ignore = self.pred_src(a4)
            else:
                srcsize = self.src(a4, "u32")
        what = f"{self.f.name}: {ins.text}"
        ar = np.arange(cp)

        def cp_async(g):
            act = g.nonzero()[0]
            if not act.size:
                return
            dst = dfn()[act]
            src = sfn()[act]
            if srcsize is not None:
                n = srcsize[act].astype(np.int64)
                if np.count_nonzero((n > cp)):
                    raise EmuError(f"{what}: src-size {n[n > cp][:4]} larger than cp-size {cp} (undefined)")
            elif ignore is not None:
                pr, pneg = ignore
                ig = pr[act] if not pneg else ~pr[act]
                n = np.where(ig, 0, cp).astype(np.int64)
            else:
                n = np.full(act.size, cp, np.int64)
            # destination: aligned, in bounds, not pending
            if self.C > 1:
                dst = self._xcta(dst, act, cp, what)
            self.shared_access(dst, cp, what, act, write=True, ins=ins)
            idx = dst[:, None] + ar
            if self.npend:
                pv = self.pend[idx]
                if np.count_nonzero((pv >= 0)):
                    raise EmuError(f"{what}: cp.async onto shared bytes of another pending cp.async")
            # two copies of this instruction onto the same bytes (aligned blocks of
            # cp bytes overlap only if equal)
            sc = self.scratch
            sc[dst // cp] = act
            if np.count_nonzero(sc[dst // cp] != act):
                raise EmuError(f"{what}: cp.async destinations of different threads overlap")
            data = np.zeros((act.size, cp), np.uint8)
            rd = n > 0
            if np.count_nonzero(rd):
                s = src[rd]
                bad = s % cp != 0
                if np.count_nonzero(bad):
                    raise EmuError(f"{what}: misaligned {cp}-byte cp.async source at {s[bad][:4]}")
                self.mem.check_range(s, n[rd], what)
                sidx = s[:, None] + ar
                valid = ar[None, :] < n[rd][:, None]
                block_ = np.zeros((s.size, cp), np.uint8)
                block_[valid] = self.mem.mem[sidx[valid]]
                data[rd] = block_
            self.pend[idx] = act[:, None]
            self.npend += act.size * cp
            self.cp_recs.append((act, self.cp_seq[act].copy(), dst, data))
        return cp_async

    def _cp_retire(self, g, limit):
        """Retire copies of threads in g whose group id < limit[thread]."""
        keep = []
        for tids, gids, dst, data in self.cp_recs:
            sel = g[tids] & (gids < limit[tids])
            if not np.count_nonzero(sel):
                keep.append((tids, gids, dst, data))
                continue
            cp = data.shape[1]
            idx = dst[sel][:, None] + np.arange(cp)
            self.smem[idx] = data[sel]
            self.pend[idx] = -1
            if self.pxy_on:   # generic-proxy data, as a st.shared of the issuing thread
                self.pxy_w[idx] = tids[sel][:, None]
                self.pxy_t[idx] = -1
                self.pxy_dirty = True
            self.npend -= int(sel.sum()) * cp
            if self.strict:
                self.vis[idx] = tids[sel][:, None]
                self.vis_dirty = True
            else:
                self.vis[idx] = -1
            if not sel.all():
                k = ~sel
                keep.append((tids[k], gids[k], dst[k], data[k]))
        self.cp_recs = keep

    # ------------------------------------------------------------------ warp ops
    def _warp_words(self, g):
        """Per-warp bit mask of the lanes in g."""
        return (g.reshape(self.nw, 32).astype(np.uint64) << np.arange(32, dtype=np.uint64)).sum(1).astype(np.uint64)

    def _aligned_warps(self, g, what):
        """Warps executing an .aligned warp-collective: each must be complete."""
        if np.count_nonzero(g) == self.ntp:
            return self.all_warps
        gw = g.reshape(self.nw, 32)
        anyw = gw.any(1)
        if not np.count_nonzero(anyw):
            return np.zeros(0, np.int64)
        partial = anyw & ~gw.all(1)
        if np.count_nonzero(partial):
            w = int(np.flatnonzero(partial)[0])
            missing = np.flatnonzero(~gw[w])
            raise EmuError(f"{what}: divergent warp {w} (lanes {missing[:8]} not at this instruction or exited)")
        return np.flatnonzero(anyw)

    def _member_check(self, g, M, what):
        """shfl/vote/bar.warp.sync: every lane of membermask at the instruction,
        every executing lane in its membermask; returns per-warp active words."""
        words = self._warp_words(g)
        act = g.nonzero()[0]
        m = M[act].astype(np.uint64)
        lane = self.lane[act].astype(np.uint64)
        if ((m >> lane) & np.uint64(1) == 0).any():
            t = act[((m >> lane) & np.uint64(1)) == 0][0]
            raise EmuError(f"{what}: thread {t} is not in its membermask (undefined)")
        w = self.warp_of[act]
        missing = m & ~words[w]
        if np.count_nonzero(missing):
            k = np.flatnonzero(missing)[0]
            raise EmuError(f"{what}: membermask {int(m[k]):#010x} of thread {act[k]} names lanes that are not "
                           f"executing this instruction (divergent or exited): {int(missing[k]):#010x}")
        return words

    def _c_shfl(self, ins):
        mods = ins.mods
        if "sync" not in mods:
            raise EmuError("shfl without .sync is not supported (sm_70+)")
        mode = next((m for m in mods if m in ("up", "down", "bfly", "idx")), None)
        if mode is None or mods[-1] != "b32" or len(ins.args) != 5:
            raise EmuError("shfl.sync.{up,down,bfly,idx}.b32 d[|p], a, b, c, membermask")
        d = ins.args[0]
        pd = None
        if "|" in d:
            d, pd = [x.strip() for x in d.split("|")]
        A = self.src(ins.args[1], "b32")
        B = self.src(ins.args[2], "b32")
        C = self.src(ins.args[3], "b32")
        M = self.src(ins.args[4], "b32")
        wd = self.dst(d, "b32")
        wp = self.dst(pd, "pred") if pd else None
        what = f"{self.f.name}: {ins.text}"
        lane = self.lane.astype(np.int64)
        base = self.warp_of * 32

        def shfl(g):
            if not np.count_nonzero(g):
                return
            words = self._member_check(g, M, what)
            bval = (B & np.uint32(31)).astype(np.int64)
            cval = (C & np.uint32(31)).astype(np.int64)
            seg = ((C >> np.uint32(8)) & np.uint32(31)).astype(np.int64)
            maxl = (lane & seg) | (cval & ~seg)
            minl = lane & seg
            if mode == "up":
                j = lane - bval
                pv = j >= maxl
            elif mode == "down":
                j = lane + bval
                pv = j <= maxl
            elif mode == "bfly":
                j = lane ^ bval
                pv = j <= maxl
            else:
                j = minl | (bval & ~seg)
                pv = j <= maxl
            j = np.where(pv, j, lane)
            act = g.nonzero()[0]
            ja = j[act]
            srcok = (words[self.warp_of[act]] >> ja.astype(np.uint64)) & np.uint64(1)
            if np.count_nonzero((srcok == 0)):
                k = np.flatnonzero(srcok == 0)[0]
                raise EmuError(f"{what}: thread {act[k]} reads lane {ja[k]}, which is not executing the shfl")
            out = A[base + j]
            wd(out, g)
            if wp is not None:
                wp(pv, g)
        return shfl

    def _c_vote(self, ins):
        mods = ins.mods
        if "sync" not in mods:
            raise EmuError("vote without .sync is not supported")
        mode = next((m for m in mods if m in ("all", "any", "uni", "ballot")), None)
        P, pneg = self.pred_src(ins.args[1])
        M = self.src(ins.args[2], "b32")
        what = f"{self.f.name}: {ins.text}"
        w = self.dst(ins.args[0], "b32" if mode == "ballot" else "pred")

        def vote(g):
            if not np.count_nonzero(g):
                return
            self._member_check(g, M, what)
            p = (~P if pneg else P) & g
            pw = self._warp_words(p)[self.warp_of]
            m = M.astype(np.uint64)
            if mode == "ballot":
                w((pw & m).astype(np.uint32), g)
            elif mode == "all":
                w((pw & m) == m, g)
            elif mode == "any":
                w((pw & m) != 0, g)
            else:
                w(((pw & m) == m) | ((pw & m) == 0), g)
        return vote

    def _c_activemask(self, ins):
        w = self.dst(ins.args[0], "b32")
        return lambda g: w(self._warp_words(g)[self.warp_of].astype(np.uint32), g)

    def _c_bar(self, ins):
        if ins.mods and ins.mods[0] == "warp" and "sync" in ins.mods:
            M = self.src(ins.args[0], "b32")
            what = f"{self.f.name}: {ins.text}"

            def warp_sync(g):
                if not np.count_nonzero(g):
                    return
                words = self._member_check(g, M, what)
                # a full-mask warp barrier orders the accesses of all its lanes
                fullw = (words == np.uint64(0xFFFFFFFF)) & \
                    (M.reshape(self.nw, 32)[:, 0].astype(np.uint64) == np.uint64(0xFFFFFFFF))
                self.wepoch[fullw] += 1
                if self.vis_dirty:
                    # cp.async data retired by these lanes becomes visible to their warp
                    vs = self.vis
                    sel = vs >= 0
                    if np.count_nonzero(sel):
                        owners = vs[sel]
                        ok = g[owners]
                        # and the reader lanes are named by the owner's membermask: require
                        # the whole warp named (a partial mask keeps the data private)
                        full = M[owners].astype(np.uint64) == np.uint64(0xFFFFFFFF)
                        upd = ok & full
                        if np.count_nonzero(upd):
                            idx = np.flatnonzero(sel)[upd]
                            vs[idx] = -2 - owners[upd] // 32
            return warp_sync
        raise EmuError("unsupported bar form")

    def _c_barrier(self, ins):
        raise EmuError("unsupported barrier form")

    def _c_barsync(self, ins):
        """bar.sync / barrier.sync{.aligned} a{, b}: (ids, counts or None for the
        whole block, the id when an immediate)."""
        if not 1 <= len(ins.args) <= 2:
            raise EmuError("bar.sync takes a{, b}: a barrier id 0..15 and an optional thread count")
        a = ins.args[0].strip()
        imm = None
        if a not in self.regs:
            try:
                imm = _int_lit(a)
            except ValueError:
                raise EmuError(f"barrier id `{a}` is neither an immediate nor a register") from None
            if not 0 <= imm <= 15:
                raise EmuError(f"barrier id {imm} not in 0..15")
        A = self.src(a, "u32")
        B = None
        if len(ins.args) == 2:
            b = ins.args[1].strip()
            if b in self.regs:
                B = self.src(b, "u32")
            else:
                try:
                    n = _int_lit(b)
                except ValueError:
                    raise EmuError(f"thread count `{b}` is neither an immediate nor a register") from None
                if n <= 0 or n % 32:
                    raise EmuError(f"thread count {n} is not a positive multiple of the warp size (32)")
                if n > self.cta_ntp:
                    raise EmuError(f"thread count {n} exceeds the block's {self.nt} threads")
                if n < self.cta_ntp:   # else the block's size (in whole warps): the whole-block barrier
                    B = self._const(n, np.uint32)
        return (A, B, imm)

    def _c_barred(self, ins, op):
        """bar.red.{or,and}.pred d, a, {!}c: the whole block's barrier a (no thread
        count), and d ← the OR / AND of c over every thread of the block. Supported
        where the whole block reaches it together (converged, none exited)."""
        if len(ins.args) != 3:
            raise EmuError("bar.red.{or,and}.pred takes d, a, {!}c (a thread count is not supported)")
        bar = Instr()
        for slot in Instr.__slots__:
            setattr(bar, slot, getattr(ins, slot))
        bar.args = [ins.args[1]]
        A, B, imm = self._c_barsync(bar)
        C, cneg = self.pred_src(ins.args[2])
        w = self.dst(ins.args[0], "pred")

        def reduce(g):
            c = (~C if cneg else C)[g]
            v = bool(c.any()) if op == "or" else bool(c.all())
            w(np.full(self.nt, v), g)
        return (A, B, imm, reduce)

    # ------------------------------------------------------------------ clusters
    def _c_mapa(self, ins):
        """mapa.shared::cluster.{u32,u64} d, a, rank: the shared::cluster address of
        the shared memory location a (a shared::cta address of the executing
        thread, or a shared::cluster one) in the CTA of that rank."""
        mods = ins.mods
        ty = mods[-1] if mods else None
        if ty not in ("u32", "u64") or mods[:-1] != ["shared::cluster"] or len(ins.args) != 3:
            raise EmuError("only mapa.shared::cluster.{u32,u64} d, a, rank is supported (not the generic-address form)")
        self._need_sm90(ins, version=(7, 8))
        A = self.src(ins.args[1], ty)
        R = self.src(ins.args[2], "u32")
        w = self.dst(ins.args[0], ty)
        what = f"{self.f.name}: {ins.text}"
        U = _NP[ty]

        def mapa(g):
            act = g.nonzero()[0]
            if not act.size:
                return
            a = A[act].astype(np.int64)
            r = R[act].astype(np.int64)
            bad = r >= self.C
            if np.count_nonzero(bad):
                k = int(np.flatnonzero(bad)[0])
                raise EmuError(f"{what}: thread {self._who(act[k])} maps to CTA rank {int(r[k])}, outside the "
                               f"cluster's {self.C} CTA(s) (ranks 0..{self.C - 1})")
            cl = a >= CLUSTER_WINDOW
            off = np.where(cl, (a - CLUSTER_WINDOW) % self.W, a)
            bad = (off < 0) | (off >= self.smem_size) | (cl & (a - CLUSTER_WINDOW >= self.C * self.W))
            if np.count_nonzero(bad):
                k = int(np.flatnonzero(bad)[0])
                raise EmuError(f"{what}: thread {self._who(act[k])}: {int(a[k]):#x} is not a shared memory address "
                               f"(shared memory is {self.smem_size} B{' per CTA' if self.C > 1 else ''})")
            out = np.zeros(self.ntp, U)
            out[act] = (CLUSTER_WINDOW + r * self.W + off).astype(U)
            w(out, g)
        return mapa

    def _live_warps_whole(self, g, what):
        """.aligned: every live lane of a warp executing the instruction executes it."""
        gw = g.reshape(self.nw, 32)
        lw = self.alive.reshape(self.nw, 32)
        part = gw.any(1) & (gw != lw).any(1)
        if np.count_nonzero(part):
            w = int(np.flatnonzero(part)[0])
            miss = np.flatnonzero(lw[w] & ~gw[w]) + 32 * w
            raise EmuError(f"{what}: warp {w} executes this .aligned instruction without its live threads "
                           f"{miss[:8].tolist()}{'...' if miss.size > 8 else ''} (divergent or predicated off)")

    def _c_cluster_barrier(self, ins):
        """barrier.cluster.arrive{.release|.relaxed}{.aligned} and
        barrier.cluster.wait{.acquire}{.aligned} (module doc, Clusters)."""
        mods = ins.mods[1:]
        sub, rest = (mods[0] if mods else ""), mods[1:]
        if sub == "arrive":
            ok = set(rest) <= {"release", "relaxed", "aligned"} and not {"release", "relaxed"} <= set(rest)
        elif sub == "wait":
            ok = set(rest) <= {"acquire", "aligned"}
        else:
            ok = False
        if not ok or ins.args:
            raise EmuError("barrier.cluster.arrive{.release|.relaxed}{.aligned} / barrier.cluster.wait{.acquire}"
                           "{.aligned} (no operands)")
        self._need_sm90(ins, version=(7, 8))
        self.cl_used = True
        what = f"{self.f.name}: {ins.text}"
        aligned = "aligned" in rest
        relaxed = "relaxed" in rest
        line = ins.line
        if sub == "arrive":
            def cl_arrive(g):
                act = np.flatnonzero(g)
                if not act.size:
                    return
                if aligned:
                    self._live_warps_whole(g, what)
                twice = self.cl_arr[act] >= 0
                if np.count_nonzero(twice):
                    t = int(act[twice][0])
                    raise EmuError(f"{what}: thread {self._who(t)} arrives at the cluster barrier again without a "
                                   f"barrier.cluster.wait since its arrival (line {int(self.cl_line[t])})")
                self.cl_arr[act] = self.cl_phase
                self.cl_line[act] = line
                # the release: what these warps did so far (.relaxed: up to their latest release fence)
                self.G += 1
                for w in np.unique(act >> 5).tolist():
                    if relaxed:
                        snap = self.fsnap.get(w)
                    else:
                        snap = self._hb_release(w)
                    if snap is not None:
                        old = self.cl_snap.get(w)
                        self.cl_snap[w] = snap if old is None else np.maximum(old, snap)
                self._cl_check()
            return _K_OP, cl_arrive

        def cl_wait(g):
            act = np.flatnonzero(g)
            if not act.size:
                return False
            if aligned:
                self._live_warps_whole(g, what)
            no = self.cl_arr[act] < 0
            if np.count_nonzero(no):
                t = int(act[no][0])
                raise EmuError(f"{what}: thread {self._who(t)} waits at the cluster barrier without having arrived "
                               f"(barrier.cluster.arrive first: the wait would never complete)")
            done = self.cl_arr[act] < self.cl_phase
            if np.count_nonzero(done):
                self._cl_acquire(act[done])
            wt = act[~done]
            if not wt.size:
                return False
            self.parked[wt] = True
            self.park_kind[wt] = 5
            self.park_line[wt] = line
            self.n_parked += wt.size
            return True
        return _K_WAIT, cl_wait

    def _cl_reset(self):
        self.cl_arr = np.full(self.ntp, -1, np.int64)     # the cluster-barrier phase each thread arrived on
        self.cl_line = np.zeros(self.ntp, np.int64)
        self.cl_phase = 0
        self.cl_snap = {}     # warp -> its release (clock row) in the current phase
        self.cl_join = np.zeros(self.nw, np.int32)
        self.fsnap = {}       # warp -> clock row at its latest release fence (for .relaxed arrivals)

    def _cl_check(self):
        """Complete the cluster barrier's phase once every live thread has arrived
        on it: the waiting threads go on, ordered after every arrival's release."""
        al = self.alive
        if not np.count_nonzero(al) or np.count_nonzero(self.cl_arr[al] != self.cl_phase):
            return
        J = np.zeros(self.nw, np.int32)
        for snap in self.cl_snap.values():
            np.maximum(J, snap, out=J)
        self.cl_join = J
        self.cl_snap = {}
        self.cl_phase += 1
        if self.vis_dirty:    # retired cp.async data: visible to all, as after bar.sync
            self.vis.fill(-1)
            self.vis_dirty = False
        wt = self.parked & (self.park_kind == 5)
        if np.count_nonzero(wt):
            tt = np.flatnonzero(wt)
            self._unpark(wt)
            self._cl_acquire(tt)

    def _cl_acquire(self, tids):
        """Threads tids pass barrier.cluster.wait: their warps are ordered after
        every release of the completed phase."""
        self.cl_arr[tids] = -1
        self._hb_acquire(np.unique(tids >> 5), self.cl_join)

    def _c_release_fence(self, ins):
        """fence.{sc,acq_rel,release,mbarrier_init}.{cluster,gpu,sys}, membar.{gl,sys}:
        no effect but one: a later barrier.cluster.arrive.relaxed of the warp
        releases what it did before its latest such fence."""
        def rel_fence(g):
            ws = np.unique(np.flatnonzero(g) >> 5)
            if not ws.size:
                return
            self.G += 1
            for w in ws.tolist():
                self.fsnap[w] = self._hb_release(w)
        return rel_fence

    def _c_fence_proxy(self, ins):
        """fence.proxy.async{.shared::cta}: this thread's generic shared-memory
        stores so far become visible to the async proxy (TMA stores issued after
        the fence in happens-before order: by this thread, or after a barrier)."""
        def fence_proxy(g):
            if not self.pxy_dirty:
                return
            m = np.flatnonzero(self.pxy_t < 0)
            if not m.size:
                self.pxy_dirty = False
                return
            sel = m[g[self.pxy_w[m]]]
            if sel.size:
                self.pxy_t[sel] = self.G
                self.pxy_we[sel] = self.wepoch[self.pxy_w[sel] // 32]
        return fence_proxy

    def _bar_id(self, spec, g, ins):
        """The barrier id of a whole-block bar.sync executed by threads g (one id)."""
        if spec[2] is not None:
            return spec[2]
        ids = spec[0][g]
        if np.count_nonzero(ids > 15):
            raise EmuError(f"{self.f.name}: {ins.text}: barrier id {int(ids[ids > 15][0])} not in 0..15")
        if np.count_nonzero(ids != ids[0]):
            raise EmuError(f"{self.f.name}: {ins.text}: threads name different barriers ({sorted(set(ids.tolist()))})"
                           f" at a bar.sync of the whole block")
        return int(ids[0])

    def _cta_barsync(self, spec, g, group, ins):
        """A cluster launch: threads `group` (g: those with the guard true) reach a
        bar.sync of the whole CTA, their pc already past it. The threads of each
        CTA wait there until every live thread of that CTA does; then its barrier
        completes (the other CTAs run on)."""
        what = f"{self.f.name}: {ins.text}"
        for r in np.unique(self.rank_of[group]).tolist():
            sl = slice(r * self.ctp, (r + 1) * self.ctp)
            gg = g[sl]
            ng = int(np.count_nonzero(gg))
            if not ng:
                continue
            if ng != np.count_nonzero(group[sl]):
                raise EmuError(f"{what}: predicated bar.sync taken by only some threads of rank {r}")
            gfull = np.zeros(self.ntp, bool)
            gfull[sl] = gg
            bid = self._bar_id(spec, gfull, ins)
            key = r * 16 + bid
            if self.nb_exp[key]:
                raise EmuError(f"{what}: threads of rank {r} wait at barrier {bid} for the whole block while "
                               f"{self.nb_arr[key]} threads wait at it with thread count {self.nb_exp[key]} (different "
                               f"thread counts)")
            self.parked[gfull] = True
            self.park_kind[gfull] = 3
            self.park_bid[gfull] = key
            self.park_line[gfull] = ins.line
            self.n_parked += ng
            al = self.alive[sl]
            if np.count_nonzero(al & ~(self.parked[sl] & (self.park_kind[sl] == 3))):
                continue    # threads of this CTA still to come
            tt = np.flatnonzero(al) + r * self.ctp
            pcs = np.unique(self.pc[tt])
            if pcs.size > 1:
                lines = ", ".join(str(self.code[int(q) - 1][5].line) for q in pcs)
                raise EmuError(f"{self.f.name}: bar.sync reached by a subset of the block: the live threads of rank "
                               f"{r} wait at different bar.sync instructions (lines {lines})")
            keys = np.unique(self.park_bid[tt])
            if keys.size > 1:
                raise EmuError(f"{self.f.name}: deadlock: the threads of rank {r} wait at one bar.sync (line "
                               f"{ins.line}) naming different barriers {(keys % 16).tolist()}")
            sel = np.zeros(self.ntp, bool)
            sel[tt] = True
            self._unpark(sel)
            self._bar_cta(r)

    def _bar_cta(self, r):
        """A barrier of every warp of CTA r completes (in a cluster: its warps are
        ordered; retired cp.async data of its shared memory becomes visible; a
        retired read is released for a TMA through happens-before, see
        _tma_read_checks, as a peer's multicast may still overwrite it)."""
        if self.C == 1:
            self._bar_all()
            return
        self._hb_warps(r * self.cwp + np.arange(self.cta_nw))
        if self.vis_dirty:
            self.vis[r * self.W:(r + 1) * self.W] = -1

    def _bar_all(self):
        """A barrier of the whole block completes: every access before it is ordered
        before every access after it; retired cp.async data becomes visible to all;
        retired reads of TMA data are released."""
        self._hb_all()
        if self.vis_dirty:
            self.vis.fill(-1)
            self.vis_dirty = False
        if self.async_on:
            self._bar_release()

    def _nbar(self, g, spec, ins, arrive=False):
        """Threads g arrive at a bar.sync with a thread count (whole warps: every
        live lane of an arriving warp arrives with it; a warp counts 32 threads),
        or with `arrive` at a bar.arrive: counted, but they go on. A barrier
        completes when its count is reached: its waiting threads are released
        and it resets. The waiting warps are then ordered after everything each
        warp that arrived at it (waiting or not) did before arriving; a warp that
        only arrived is ordered after nothing new. Returns whether some threads
        of g now wait."""
        act = np.flatnonzero(g)
        if not act.size:
            return False
        what = f"{self.f.name}: {ins.text}"
        A, B, imm = spec
        gw = g.reshape(self.nw, 32)
        lw = self.alive.reshape(self.nw, 32)
        anyw = gw.any(1)
        part = anyw & (gw != lw).any(1)
        if np.count_nonzero(part):
            w = int(np.flatnonzero(part)[0])
            miss = np.flatnonzero(lw[w] & ~gw[w]) + 32 * w
            raise EmuError(f"{what}: warp {w} arrives at a barrier with a thread count without threads "
                           f"{miss[:8].tolist()}{'...' if miss.size > 8 else ''} (divergent, waiting or predicated "
                           f"off): bar.sync counts whole warps, all lanes arriving together (.aligned)")
        warps = np.flatnonzero(anyw)
        lead = warps * 32 + np.argmax(gw[warps], 1)
        ids = A[lead].astype(np.int64)
        cnts = B[lead].astype(np.int64)
        if imm is None and np.count_nonzero(A[act] != np.repeat(A[lead], gw[warps].sum(1))):
            raise EmuError(f"{what}: the barrier id differs within a warp")
        if np.count_nonzero(B[act] != np.repeat(B[lead], gw[warps].sum(1))):
            raise EmuError(f"{what}: the thread count differs within a warp")
        if np.count_nonzero(ids > 15):
            raise EmuError(f"{what}: barrier id {int(ids[ids > 15][0])} not in 0..15")
        badc = (cnts <= 0) | (cnts % 32 != 0) | (cnts > self.cta_ntp)
        if np.count_nonzero(badc):
            raise EmuError(f"{what}: thread count {int(cnts[badc][0])} is not a positive multiple of the warp size "
                           f"(32) up to the block's {self.nt} threads")
        waiting = False
        keys = (warps // self.cwp) * 16 + ids     # barrier ids are per CTA: (rank, id)
        for key in np.unique(keys).tolist():
            bid, rk = key % 16, (f" of rank {key // 16}" if self.C > 1 else "")
            sel = keys == key
            ws, c = warps[sel], cnts[sel]
            if np.count_nonzero(c != c[0]):
                raise EmuError(f"{what}: warps arrive at barrier {bid}{rk} with different thread counts "
                               f"({sorted(set(c.tolist()))})")
            c = int(c[0])
            exp = self.nb_exp[key]
            if exp and exp != c:
                raise EmuError(f"{what}: warp {int(ws[0])} arrives at barrier {bid}{rk} with thread count {c} while "
                               f"{self.nb_arr[key]} threads wait at it with thread count {exp} (different counts)")
            if self.n_parked:
                wb = self.parked & (self.park_kind == 3) & (self.park_bid == key)
                if np.count_nonzero(wb):
                    raise EmuError(f"{what}: warp {int(ws[0])} arrives at barrier {bid}{rk} with thread count {c} "
                                   f"while threads {np.flatnonzero(wb)[:4].tolist()}... wait at it for the whole block "
                                   f"(different counts)")
            n = self.nb_arr[key] + 32 * ws.size
            if n > c:
                raise EmuError(f"{what}: {n} threads (warps {ws.tolist()}{' and earlier' if self.nb_arr[key] else ''}) "
                               f"arrive at barrier {bid}{rk} before it completes: more than its thread count {c}")
            # the releases of this phase's arrivals (bar.arrive), these warps' too
            rel = self.nb_rel.pop(key, None) if n == c else self.nb_rel.get(key)
            if arrive:
                for w in ws.tolist():
                    self.G += 1
                    r = self._hb_release(w)
                    rel = r if rel is None else np.maximum(rel, r)
            if n == c:
                P = np.empty(0, np.int64) if arrive else ws
                if self.nb_arr[key]:
                    wait = self.parked & (self.park_kind == 4) & (self.park_bid == key)
                    P = np.union1d(P, np.flatnonzero(wait.reshape(self.nw, 32).any(1)))
                    self.parked[wait] = False
                    self.park_kind[wait] = 0
                    self.park_bid[wait] = -1
                    self.n_parked -= int(np.count_nonzero(wait))
                self.nb_exp[key] = self.nb_arr[key] = 0
                if rel is None and P.size == self.cta_nw:   # every warp of the block waited: a whole-block barrier
                    self._bar_cta(key // 16)
                elif P.size:
                    if rel is None:
                        self._hb_warps(P)
                    else:   # the waiters join each other and the arrivals' releases
                        join = np.maximum(self.vc[P].max(0), rel)
                        self._hb_acquire(P, join)
            elif arrive:
                self.nb_exp[key], self.nb_arr[key] = c, n
                self.nb_rel[key] = rel
            else:
                tt = act[sel[np.searchsorted(warps, act // 32)]]
                self.nb_exp[key], self.nb_arr[key] = c, n
                self.parked[tt] = True
                self.park_kind[tt] = 4
                self.park_bid[tt] = key
                self.park_line[tt] = ins.line
                self.n_parked += tt.size
                waiting = True
        return waiting

    def _m8n8(self, ins, op, regs, address):
        """The operands of ldmatrix / stmatrix (`op`): (.num, .trans, the register
        names, the address function, the message prefix), the qualifiers checked."""
        mods = ins.mods
        if "m8n8" not in mods or mods[-1] != "b16" or "sync" not in mods or "aligned" not in mods:
            raise EmuError(f"only {op}.sync.aligned.m8n8.{{x1,x2,x4}}{{.trans}}.shared.b16")
        if self._space(mods) not in ("shared",):
            raise EmuError(f"{op} needs .shared")
        num = next((int(m[1]) for m in mods if m in ("x1", "x2", "x4")), None)
        if num is None:
            raise EmuError(f"{op} needs .x1/.x2/.x4")
        self.widths.add(16)
        names = [x.strip() for x in regs.strip("{}").split(",")]
        if len(names) != num:
            raise EmuError(f".x{num} needs {num} registers")
        afn, pinfo = self.addr(address)
        if pinfo is not None:
            raise EmuError(f"parameter as {op} address")
        return num, "trans" in mods, names, afn, f"{self.f.name}: {ins.text}"

    def _m8n8_rows(self, g, afn, num, what):
        """The row addresses of an ldmatrix / stmatrix of `num` matrices in the
        warps that execute it (each complete): (warps, addresses (k, 8·num),
        the same flat (in a cluster: this CTA's window), the lanes giving
        them), or None where no warp executes it."""
        warps = self._aligned_warps(g, what)
        if not warps.size:
            return None
        ad = afn().reshape(self.nw, 32)[warps][:, :8 * num]
        flat = ad.ravel()
        lanes = (warps[:, None] * 32 + np.arange(8 * num)[None, :]).ravel()
        if self.C > 1:
            flat = self._xcta(flat, lanes, 16, what)
            ad = flat.reshape(ad.shape)
        return warps, ad, flat, lanes

    def _c_ldmatrix(self, ins):
        num, trans, dl, afn, what = self._m8n8(ins, "ldmatrix", ins.args[0], ins.args[1])
        ws = [self.dst(x, "b32") for x in dl]
        Ds = [self.regs[x].view(np.uint32) for x in dl]
        lr, lc = _G, 2 * _C
        ar8 = np.arange(8)

        def ldmatrix(g):
            rows = self._m8n8_rows(g, afn, num, what)
            if rows is None:
                return
            warps, ad, flat, lanes = rows
            k = warps.size
            # reads on behalf of the whole warp: visibility is checked for every lane
            self.shared_access(flat, 16, what, lanes, write=False, collective=True, ins=ins)
            if self.vis_dirty:
                idx = flat[:, None] + np.arange(16)
                vv = self.vis[idx]
                wv = (lanes // 32)[:, None]
                if not ((vv == -1) | (vv == -2 - wv)).all():
                    kk = np.argwhere(~((vv == -1) | (vv == -2 - wv)))[0]
                    raise EmuError(f"{what}: ldmatrix reads shared byte {self._loc(idx[kk[0], kk[1]])} written by a "
                                   f"cp.async of thread {vv[kk[0], kk[1]]} with no bar.sync / bar.warp.sync since its "
                                   f"wait (the rows go to other lanes)")
            u16 = self.smem.view(np.uint16)
            M = u16[(ad.reshape(k, num, 8) // 2)[..., None] + ar8]          # (k, num, row, col)
            if trans:
                lo, hi = M[:, :, lc, lr], M[:, :, lc + 1, lr]
            else:
                lo, hi = M[:, :, lr, lc], M[:, :, lr, lc + 1]
            val = lo.astype(np.uint32) | (hi.astype(np.uint32) << np.uint32(16))  # (k, num, 32)
            for i in range(num):
                Ds[i].reshape(self.nw, 32)[warps] = val[:, i, :]
        del ws
        return ldmatrix

    def _c_stmatrix(self, ins):
        """stmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared{::cta}.b16 [p], {r..}
        (sm_90): ldmatrix's inverse. Register i of lane t holds row t/4, columns
        2(t%4), 2(t%4)+1 (low half first) of matrix i (the transpose with
        .trans); lanes 8i..8i+7 give the addresses of its rows 0..7 (16 bytes
        each). The write is the warp's (a collective, like ldmatrix's read);
        for the TMA-store proxy rule each row counts as written by the lane that
        gave its address. Two rows at one address in one instruction raise."""
        self._need_sm90(ins, version=(7, 8))
        num, trans, sl, afn, what = self._m8n8(ins, "stmatrix", ins.args[1], ins.args[0])
        srcs = [self.src(x, "b32") for x in sl]
        lr, lc = _G, 2 * _C
        ar8 = np.arange(8)

        def stmatrix(g):
            rows = self._m8n8_rows(g, afn, num, what)
            if rows is None:
                return
            warps, ad, flat, lanes = rows
            k = warps.size
            srt = np.sort(ad, 1)
            if np.count_nonzero(srt[:, 1:] == srt[:, :-1]):
                raise EmuError(f"{what}: two rows of one stmatrix at the same address (which lands is undefined)")
            self.shared_access(flat, 16, what, lanes, write=True, collective=True, ins=ins)
            if self.pxy_on:   # generic-proxy data: a TMA store needs a fence.proxy.async first
                pi = flat[:, None] + np.arange(16)
                self.pxy_w[pi] = lanes[:, None]
                self.pxy_t[pi] = -1
                self.pxy_dirty = True
            M = np.zeros((k, num, 8, 8), np.uint16)                        # (k, num, row, col)
            for i, src in enumerate(srcs):
                v = np.asarray(src).view(np.uint32).reshape(self.nw, 32)[warps]  # (k, 32)
                lo, hi = (v & 0xFFFF).astype(np.uint16), (v >> 16).astype(np.uint16)
                if trans:
                    M[:, i, lc, lr], M[:, i, lc + 1, lr] = lo, hi
                else:
                    M[:, i, lr, lc], M[:, i, lr, lc + 1] = lo, hi
            u16 = self.smem.view(np.uint16)
            u16[(ad.reshape(k, num, 8) // 2)[..., None] + ar8] = M
        return stmatrix

    def _c_mma(self, ins):
        """mma.sync.aligned.row.col with f32 accumulators: m16n8k16 with bf16 / f16
        inputs (two a register, the lower column in the low half) or m16n8k8 with
        tf32 inputs (one a register: the hardware reads its top 19 bits, sign,
        exponent and 10 mantissa bits, and ignores the low 13). The product sum
        is formed exactly (float64) and rounded once to f32."""
        mods = ins.mods
        shape = "m16n8k8" if "m16n8k8" in mods else "m16n8k16"
        if shape not in mods or "row" not in mods or "col" not in mods or "sync" not in mods:
            raise EmuError("only mma.sync.aligned.m16n8k16.row.col and m16n8k8.row.col are supported")
        types = [m for m in mods if m in ("f32", "bf16", "f16", "tf32")]
        ab = types[1] if len(types) == 4 else None
        if len(types) != 4 or types[0] != "f32" or types[3] != "f32" or types[1] != types[2] or \
                (shape, ab) not in (("m16n8k16", "bf16"), ("m16n8k16", "f16"), ("m16n8k8", "tf32")):
            raise EmuError("only m16n8k16 .f32.bf16.bf16.f32 / .f32.f16.f16.f32 and m16n8k8 "
                           ".f32.tf32.tf32.f32 are supported")
        lists = [[x.strip() for x in a.strip("{}").split(",")] for a in ins.args]
        if [len(x) for x in lists] != [4, 4, 2, 4]:
            raise EmuError(f"{shape} takes {{4 d}}, {{4 a}}, {{2 b}}, {{4 c}}")
        for x in lists[0]:
            self.dst(x, "f32")
        Dv = [self.regs[x].view(np.float32) for x in lists[0]]
        regs_ab = [self.src(x, "b32") for x in lists[1] + lists[2]]
        Cs = [self.src(x, "f32") for x in lists[3]]
        what = f"{self.f.name}: {ins.text}"
        nw = self.nw

        def values(v):
            """(k, 6, 32) u32 registers -> (k, values) float64, by (reg, half, lane)."""
            if ab == "tf32":
                return (v & np.uint32(0xFFFFE000)).view(np.float32).astype(np.float64).reshape(len(v), 192)
            if ab == "bf16":   # bf16 bits are the top half of an f32
                vals = np.stack([(v << np.uint32(16)).view(np.float32),
                                 (v & np.uint32(0xFFFF0000)).view(np.float32)], 2)
            else:
                vals = np.stack([(v & np.uint32(0xFFFF)).astype(np.uint16).view(np.float16),
                                 (v >> np.uint32(16)).astype(np.uint16).view(np.float16)], 2)
            return vals.astype(np.float64).reshape(len(v), 384)

        kk = 8 if ab == "tf32" else 16
        perm_a, perm_b = (_PERM_A8, _PERM_B8) if ab == "tf32" else (_PERM_A, _PERM_B)

        def mma(g):
            warps = self._aligned_warps(g, what)
            if not warps.size:
                return
            k = warps.size
            sel = slice(None) if k == nw else warps
            vals = values(np.stack([r.reshape(nw, 32)[sel] for r in regs_ab], 1))
            A = vals[:, perm_a].reshape(k, 16, kk)
            B = vals[:, 16 * kk + perm_b].reshape(k, kk, 8)
            C = np.stack([c.reshape(nw, 32)[sel] for c in Cs], 1).reshape(k, 128)
            with np.errstate(invalid="ignore", over="ignore"):
                D = np.matmul(A, B).reshape(k, 128) + C[:, _PERM_C]
            D = _canon(D[:, _GATHER_D]).reshape(k, 4, 32)                        # (reg, lane) f32
            for i in range(4):
                if k == nw:
                    Dv[i][:] = D[:, i, :].ravel()
                else:
                    Dv[i].reshape(nw, 32)[warps] = D[:, i, :]
        return mma

    # ------------------------------------------------------------------ Hopper: mbarrier, TMA, wgmma
    def _async_init(self):
        """Per-executor arrays of the asynchronous (sm_90) machinery; reset per block."""
        nsm = len(self.smem)
        self.nch = nsm // 16                               # 16-byte chunks
        self.mb_at = np.full(nsm // 8, -1, np.int32)       # mbarrier index of each 8-byte word
        self.tma_bar = np.full(self.nch, -1, np.int32)     # TMA data: completing mbarrier
        self.tma_n = np.zeros(self.nch, np.int64)          # ... and its completion number
        self.nrd = np.zeros(self.nch, np.int32)            # read-record elements on each chunk (rd_recs)
        self.hitbuf = np.zeros(self.nch, bool)             # scratch: chunks of one TMA
        self.inuse = np.zeros(self.nch, np.int32)          # unretired wgmma reads
        self.parked = np.zeros(self.ntp, bool)
        self.park_kind = np.zeros(self.ntp, np.int8)       # 1 try_wait, 2 test_wait, 3 bar.sync, 4 named
        self.park_on = np.full(self.ntp, -1, np.int32)
        self.park_par = np.zeros(self.ntp, np.int8)
        self.park_line = np.zeros(self.ntp, np.int64)
        self.park_bid = np.full(self.ntp, -1, np.int32)    # 3, 4: the barrier id (0..15)
        self.bs_commit = np.zeros(self.ntp, np.int64)      # bulk async-groups committed per thread
        self.bs_src = np.zeros(self.nch, np.int32)         # pending TMA stores reading each 16-byte chunk
        self.wait_retry = np.zeros(self.ntp, np.int64)     # strict_waits: id of the wait that returned false
        self.n_waits = 0
        self.strict_waits = True
        self.nwg = (self.nw + 3) // 4
        self.acc_regs = set()
        self._wg_tabs = {}
        self._async_reset()

    def _async_reset(self):
        self.async_on = False
        self.mbs = []
        self.mb_comp = np.zeros(8, np.int64)               # completed phases of each mbarrier
        self.mb_obs = np.zeros((8, self.ntp), np.int64)    # phases each thread has observed
        self.mb_at.fill(-1)
        self.tma_bar.fill(-1)
        self.nrd.fill(0)
        self.inuse.fill(0)
        self.parked.fill(False)
        self.park_kind.fill(0)
        self.park_on.fill(-1)
        self.park_bid.fill(-1)
        self.n_parked = 0
        self.nb_exp = [0] * (16 * self.C)   # barriers with a thread count, per (CTA rank, id): expected threads
        self.nb_arr = [0] * (16 * self.C)   # (0: idle) and threads arrived (whole warps)
        self.nb_rel = {}                     # per (rank, id): the releases of the warps that only arrived (bar.arrive)
        self.bs_recs = []            # TMA stores: [tid, bulk group or None, map, src, chunk offsets, extent,
        #                              chunks, line] (_tma_store)
        self.bs_commit.fill(0)
        self.bs_src.fill(0)
        self.n_bstore = 0
        self.wait_retry.fill(0)
        self.rd_recs = []            # [kind (0 thread, 1 warp, 2 warpgroup), reader ids, chunks, retired, time
        #                              retired, releases {mbarrier: completion number per element, 0 none}]
        self.wg_recs = [[] for _ in range(self.nwg)]      # [group seq or None, read record, chunks, regs
        #                                                    (accumulators and A registers), A registers]
        self.wg_commit = [0] * self.nwg
        self.wg_need_fence = np.ones(self.nwg, bool)
        self.wg_live = [frozenset()] * self.nwg
        self.n_inflight = 0

    def _need_sm90(self, ins, arch_a=False, version=(8, 0)):
        f = self.f
        if f.version is not None and f.version < version:
            raise EmuError(f"needs .version {version[0]}.{version[1]} or later (the module has .version "
                           f"{f.version[0]}.{f.version[1]})")
        if f.target:
            t = f.target[0]
            if arch_a:
                if t != "sm_90a":
                    raise EmuError(f"{ins.op} needs .target sm_90a (the module has .target {t})")
            else:
                m = re.fullmatch(r"sm_(\d+)a?", t)
                if not m or int(m.group(1)) < 90:
                    raise EmuError(f"needs .target sm_90 or later (the module has .target {t})")

    def _sym_name(self, off):
        rk = ""
        if self.C > 1:
            r, off = divmod(int(off), self.W)
            rk = f" of rank {r}"
        best = None
        for nm, o in self.symbols.items():
            if o <= off and (best is None or o > best[1]):
                best = (nm, o)
        if best is None:
            return f"shared offset {off}{rk}"
        return f"`{best[0]}+{off - best[1]}` (shared offset {off}{rk})"

    def _loc(self, a):
        """A flat shared-memory byte address for messages (in a cluster: its CTA
        and the offset in that CTA's shared memory)."""
        if self.C == 1:
            return f"{int(a)}"
        r, o = divmod(int(a), self.W)
        return f"{o} of rank {r}"

    def _who(self, t):
        """Thread t for messages (in a cluster: with its rank and %tid)."""
        t = int(t)
        if self.C == 1:
            return f"{t}"
        return f"{t} (rank {t // self.ctp}, tid {t % self.ctp})"

    def _mb_name(self, b):
        return "mbarrier " + self._sym_name(self.mbs[b].addr)

    def _mb_state(self, b):
        mb = self.mbs[b]
        c = int(self.mb_comp[b])
        return (f"{c} phases completed, current parity {c & 1}, {mb.pending} of {mb.expected} arrivals pending, "
                f"tx-count {mb.tx}")

    def _mb_lookup(self, ad, tids, what):
        """mbarrier indices of addresses `ad` used by threads `tids`."""
        if np.count_nonzero(ad & 7):
            raise EmuError(f"{what}: mbarrier address {int(ad[(ad & 7) != 0][0])} is not 8-byte aligned")
        oob = (ad < 0) | (ad + 8 > self.smem_size) if self.C == 1 else ad < 0   # (clusters: _xcta)
        if np.count_nonzero(oob):
            raise EmuError(f"{what}: mbarrier address {int(ad[oob][0])} outside shared memory "
                           f"({self.smem_size} B)")
        b = self.mb_at[ad >> 3]
        if np.count_nonzero(b < 0):
            raise EmuError(f"{what}: no initialised mbarrier at {self._sym_name(int(ad[b < 0][0]))} "
                           f"(mbarrier.init first)")
        for bi in np.unique(b):
            mb = self.mbs[bi]
            if mb.init_time >= self.vc_floor:   # some warp may not be ordered after the init yet
                other = (b == bi) & (tids != mb.init_tid)
                other[other] = self.vc[tids[other] // 32, mb.init_tid // 32] <= mb.init_time
                if np.count_nonzero(other):
                    raise EmuError(f"{what}: thread {int(tids[other][0])} uses {self._mb_name(bi)} in the barrier "
                                   f"interval of its mbarrier.init by thread {mb.init_tid} (bar.sync after the init, "
                                   f"and fence.mbarrier_init, before other threads use it{self._xhint})")
        return b.astype(np.int64)

    def _mb_new(self, addr, count, tid):
        b = len(self.mbs)
        if b >= len(self.mb_comp):
            self.mb_comp = np.concatenate([self.mb_comp, np.zeros(len(self.mb_comp), np.int64)])
            self.mb_obs = np.concatenate([self.mb_obs, np.zeros_like(self.mb_obs)])
        self.mb_comp[b] = 0
        self.mb_obs[b] = 0
        self.mbs.append(_Mbar(addr, count, tid, self.G))
        self.mb_at[addr >> 3] = b
        self.async_on = True
        return b

    def _mb_after(self, b):
        """Complete the current phase of mbarrier b if nothing is pending."""
        mb = self.mbs[b]
        if abs(mb.tx) > _TX_MAX:
            raise EmuError(f"tx-count {mb.tx} of {self._mb_name(b)} out of range (|tx| < 2^20)")
        if mb.pending == 0 and mb.tx == 0:
            self.mb_comp[b] += 1
            mb.pending = mb.expected
            mb.tx_bytes = 0
            c = int(self.mb_comp[b])
            prev = mb.joins.get(c - 1)
            if mb.rel is not None or prev is not None:
                j = mb.rel if prev is None else prev if mb.rel is None else np.maximum(prev, mb.rel)
                mb.joins = {n: v for n, v in mb.joins.items() if n > c - 4}
                mb.joins[c] = j
            mb.rel = None
            if mb.nwait:
                sel = self.parked & (self.park_on == b)
                k = int(np.count_nonzero(sel))
                self.parked[sel] = False
                self.park_on[sel] = -1
                self.park_kind[sel] = 0
                self.n_parked -= k
                mb.nwait = 0

    def _mb_arrive(self, b, tids, cnt, tx, what):
        """Arrivals (in thread order) of `tids` on mbarrier b, with counts `cnt` and
        (expect-tx before each arrival) tx; returns the completion number each
        arrival belongs to."""
        mb = self.mbs[b]
        tot = int(cnt.sum())
        if tot <= mb.pending and (mb.pending > 0):
            n = int(self.mb_comp[b]) + 1
            if tx is not None:
                mb.tx += int(tx.sum())
            mb.pending -= tot
            self._mb_after(b)
            return np.full(tids.size, n, np.int64)
        ns = np.zeros(tids.size, np.int64)
        for i in range(tids.size):
            if tx is not None:
                mb.tx += int(tx[i])
            c = int(cnt[i])
            if c > mb.pending:
                raise EmuError(f"{what}: thread {int(tids[i])} arrives (count {c}) on {self._mb_name(b)} whose "
                               f"current phase expects only {mb.pending} more arrival(s) ({self._mb_state(b)}): more "
                               f"arrivals than the phase's expected count")
            ns[i] = int(self.mb_comp[b]) + 1
            mb.pending -= c
            self._mb_after(b)
        return ns

    def _mb_release(self, b, tids):
        """Arrivals of threads tids on mbarrier b (.release, the default): what
        their warps did so far is ordered before whoever observes the phase's
        completion (warp granularity, as the barriers: one lane's arrival
        releases its warp)."""
        mb = self.mbs[b]
        self.G += 1
        for w in np.unique(tids >> 5).tolist():
            snap = self._hb_release(w)
            mb.rel = snap if mb.rel is None else np.maximum(mb.rel, snap)

    def _mb_acquire(self, bs, tids, comps):
        """Threads tids observe completion comps of mbarriers bs (try_wait /
        test_wait returning true, .acquire by default): their warps are ordered
        after every release of that phase and the phases before it."""
        for bi, n in set(zip(bs.tolist(), comps.tolist())):
            j = self.mbs[bi].joins.get(n)
            if j is None:
                continue
            self._hb_acquire(np.unique(tids[(bs == bi) & (comps == n)] >> 5), j)

    def _mb_complete_tx(self, b, nbytes, what):
        mb = self.mbs[b]
        if mb.pending == 0 and mb.tx < nbytes:
            raise EmuError(f"{what}: complete-tx of {nbytes} bytes on {self._mb_name(b)} exceeds its expected "
                           f"transaction count ({self._mb_state(b)}): more bytes than expect_tx announced")
        mb.tx -= nbytes
        mb.tx_bytes += nbytes
        self._mb_after(b)

    def _release(self, tids, ns, bs):
        """Arrivals by threads `tids` (completion numbers ns on mbarriers bs)
        release the retired reads of those threads, of their warps (ldmatrix) and
        of their warpgroups (wgmma): each read element keeps, per mbarrier, the
        first completion number an arrival of its reader after the retirement
        belongs to (any of them, once observed, orders the read before a TMA)."""
        if not self.rd_recs:
            return
        for b in np.unique(bs).tolist():
            sel = bs == b
            tt, nn = tids[sel], ns[sel]
            idx = np.arange(tt.size)
            rep = [np.full(self.ntp, -1, np.int64), np.full(self.nw, -1, np.int64), np.full(self.nwg, -1, np.int64)]
            rep[0][tt] = idx
            rep[1][(tt // 32)[::-1]] = idx[::-1]
            rep[2][(tt // 128)[::-1]] = idx[::-1]
            for rec in self.rd_recs:
                if not rec[3]:
                    continue
                r = rep[rec[0]][rec[1]]
                m = r >= 0
                if not np.count_nonzero(m):
                    continue
                arr = rec[5].get(b)
                if arr is None:
                    arr = rec[5][b] = np.zeros(rec[2].size, np.int64)
                upd = m & (arr == 0)
                arr[upd] = nn[r[upd]]

    def _rd_add(self, kind, ids, ch, retired, time):
        """A new read record (reader ids and 16-byte chunks per element). An older
        wgmma record of the same warpgroup on a chunk is subsumed by the new one
        (every release of the newer read releases the older) and dropped there."""
        if kind == 2 and self.rd_recs:
            wg = int(ids[0])
            hit = self.hitbuf
            hit[ch] = True
            drop = False
            for rec in self.rd_recs:
                if rec[0] == 2 and rec[1].size and rec[1][0] == wg:
                    m = hit[rec[2]]
                    if np.count_nonzero(m):
                        self._rd_drop(rec, m)
                        drop = True
            hit[ch] = False
            if drop:
                self.rd_recs = [r for r in self.rd_recs if r[2].size]
        rec = [kind, ids, ch, retired, time, {}]
        self.rd_recs.append(rec)
        np.add.at(self.nrd, ch, 1)
        return rec

    def _rd_drop(self, rec, m):
        """Remove the elements m of read record rec (in place: wg_recs refer to it)."""
        np.subtract.at(self.nrd, rec[2][m], 1)
        k = ~m
        rec[1] = rec[1][k]
        rec[2] = rec[2][k]
        for b in list(rec[5]):
            rec[5][b] = rec[5][b][k]

    def _bar_release(self):
        """A whole-block barrier orders every retired read before everything after it."""
        keep = []
        for rec in self.rd_recs:
            if rec[3]:
                np.subtract.at(self.nrd, rec[2], 1)
            else:
                keep.append(rec)
        self.rd_recs = keep

    def _reader_name(self, rec, i=None):
        kind = rec[0]
        i = int(rec[1][0]) if i is None else int(i)
        rk = f" (rank {i * [1, 32, 128][kind] // self.ctp})" if self.C > 1 else ""
        return [f"thread {i}'s ld.shared", f"warp {i}'s ldmatrix", f"warpgroup {i}'s wgmma"][kind] + rk

    def _mb_words_hit(self, ad, nbytes):
        w8 = ad >> 3
        hit = self.mb_at[w8] >= 0
        for k in range(1, nbytes // 8):
            hit |= self.mb_at[w8 + k] >= 0
        return hit

    def _async_generic(self, ad, nbytes, what, tids, write, collective):
        """Generic shared accesses (ld / st / cp.async / ldmatrix) against
        mbarrier objects, in-flight wgmma operands and TMA-written bytes."""
        tids = np.asarray(tids, np.int64)
        if self.mbs:
            hit = self._mb_words_hit(ad, max(nbytes, 8))
            if np.count_nonzero(hit):
                a = int(ad[hit][0])
                raise EmuError(f"{what}: {'writes' if write else 'reads'} shared byte {self._loc(a)}, part of "
                               f"{self._mb_name(int(self.mb_at[a >> 3]))} (only mbarrier instructions may access an "
                               f"initialised mbarrier object)")
        ch = ad >> 4
        if write and self.n_inflight:
            iu = self.inuse[ch] > 0
            if np.count_nonzero(iu):
                c = int(ch[iu][0])
                raise EmuError(f"{what}: thread {int(tids[iu][0])} writes shared byte {self._loc(16 * c)}, an operand "
                               f"of {self._inflight_name(c)} not yet retired by wgmma.wait_group")
        tb = self.tma_bar[ch]
        m = tb >= 0
        if not np.count_nonzero(m):
            return
        T, chm, tbm = tids[m], ch[m], tb[m].astype(np.int64)
        need = self.tma_n[chm]
        if collective:
            lanes = (T // 32 * 32)[:, None] + np.arange(32)
            obs = self.mb_obs[tbm[:, None], lanes]
            who = lanes[np.arange(lanes.shape[0]), obs.argmin(1)]
            obs = obs.min(1)
        else:
            obs = self.mb_obs[tbm, T]
            who = T
        bad = obs < need
        if np.count_nonzero(bad):
            k = int(np.flatnonzero(bad)[0])
            b, n = int(tbm[k]), int(need[k])
            state = "which has not completed" if self.mb_comp[b] < n else \
                f"which thread {int(who[k])} has not observed (mbarrier.try_wait / test_wait on it)"
            raise EmuError(f"{what}: thread {self._who(who[k])} {'writes' if write else 'reads'} shared byte "
                           f"{self._loc(16 * int(chm[k]))} written by a TMA (cp.async.bulk.tensor) completing phase "
                           f"{n} of {self._mb_name(b)}, {state}")
        if not write:
            kind = 1 if collective else 0
            self._rd_add(kind, T // 32 if collective else T, chm, True, self.G)
        elif nbytes == 16:   # the whole chunk is generic data now
            self.tma_bar[chm] = -1

    def _inflight_name(self, c):
        for wg, recs in enumerate(self.wg_recs):
            for rec in recs:
                if np.count_nonzero(rec[2] == c):
                    st = "uncommitted" if rec[0] is None else f"wgmma-group {rec[0]}"
                    return f"a wgmma.mma_async of warpgroup {wg} ({st})"
        return "an in-flight wgmma"

    # -- mbarrier
    def _c_mbarrier(self, ins):
        mods = ins.mods
        sub = mods[0] if mods else ""
        rest = mods[1:]
        allowed = {"release", "acquire", "relaxed", "cta", "cluster", "shared", "shared::cta", "shared::cluster",
                   "b64", "parity", "expect_tx"}
        bad = [m for m in rest if m not in allowed]
        if sub not in ("init", "inval", "arrive", "expect_tx", "complete_tx", "try_wait", "test_wait") or bad:
            raise EmuError(f"unsupported mbarrier form (.{'.'.join(bad) if bad else sub})")
        if rest[-1:] != ["b64"]:
            raise EmuError("mbarrier instructions take .b64")
        if not any(m.startswith("shared") for m in rest):
            raise EmuError("generic-address mbarrier operations are not supported: use .shared::cta")
        if "shared::cluster" in rest and sub not in ("arrive", "expect_tx", "complete_tx"):
            raise EmuError(".shared::cluster is supported on mbarrier.arrive / expect_tx / complete_tx only")
        if "expect_tx" in rest and sub != "arrive":
            raise EmuError(".expect_tx qualifies mbarrier.arrive only")
        if sub in ("expect_tx", "complete_tx", "try_wait") or "expect_tx" in rest:
            self._need_sm90(ins)
        what = f"{self.f.name}: {ins.text}"
        args = ins.args
        # arrive is .release and try_wait / test_wait .acquire unless .relaxed
        release = acquire = "relaxed" not in rest

        xl = self._xcluster if "shared::cluster" in rest else (self._xcta if self.C > 1 else None)

        def address(a):
            afn, pinfo = self.addr(a)
            if pinfo is not None:
                raise EmuError("parameter used as an mbarrier address")
            if xl is None:
                return afn
            # the addresses of the executing threads, as flat addresses (their windows)
            return lambda act: xl(afn()[act], act, 8, what, "mbarrier access")

        if sub == "init":
            if len(args) != 2:
                raise EmuError("mbarrier.init takes [addr], count")
            afn, C = address(args[0]), self.src(args[1], "u32")

            def init(g):
                act = g.nonzero()[0]
                if not act.size:
                    return
                ad = afn(act) if xl is not None else afn()[act]
                if np.count_nonzero(ad & 7) or (self.C == 1 and np.count_nonzero((ad < 0) | (ad + 8 > self.smem_size))):
                    raise EmuError(f"{what}: mbarrier address {ad[:4]} not 8-byte aligned or outside shared memory")
                if np.unique(ad).size != ad.size:
                    raise EmuError(f"{what}: several threads initialise one mbarrier in one instruction")
                cnt = C[act].astype(np.int64)
                if np.count_nonzero((cnt < 1) | (cnt > _TX_MAX)):
                    raise EmuError(f"{what}: mbarrier count {int(cnt[(cnt < 1) | (cnt > _TX_MAX)][0])} not in "
                                   f"1..2^20-1")
                for a, c, t in zip(ad.tolist(), cnt.tolist(), act.tolist()):
                    if self.mb_at[a >> 3] >= 0:
                        raise EmuError(f"{what}: mbarrier.init of the live {self._mb_name(int(self.mb_at[a >> 3]))}"
                                       f" (mbarrier.inval it first)")
                    if self.npend and np.count_nonzero(self.pend[a:a + 8] >= 0):
                        raise EmuError(f"{what}: mbarrier.init onto bytes of a pending cp.async")
                    if self.inuse[a >> 4]:
                        raise EmuError(f"{what}: mbarrier.init onto an operand of an in-flight wgmma")
                    if self.n_bstore:
                        self._bs_hit(np.array([a >> 4]), np.array([t]), what)
                    self._mb_new(a, c, t)
            return init

        if sub == "inval":
            afn = address(args[0])

            def inval(g):
                act = g.nonzero()[0]
                if not act.size:
                    return
                b = self._mb_lookup(afn(act) if xl is not None else afn()[act], act, what)
                for bi in np.unique(b):
                    if self.mbs[bi].nwait:
                        raise EmuError(f"{what}: mbarrier.inval of {self._mb_name(bi)} while threads wait on it")
                    self.mb_at[self.mbs[bi].addr >> 3] = -1
            return inval

        if sub in ("expect_tx", "complete_tx"):
            if len(args) != 2:
                raise EmuError(f"mbarrier.{sub} takes [addr], txCount")
            afn, X = address(args[0]), self.src(args[1], "u32")

            def tx_op(g):
                act = g.nonzero()[0]
                if not act.size:
                    return
                b = self._mb_lookup(afn(act) if xl is not None else afn()[act], act, what)
                x = X[act].astype(np.int64)
                if np.count_nonzero(x > _TX_MAX):
                    raise EmuError(f"{what}: txCount {int(x.max())} not in 0..2^20-1")
                for bi, xi in zip(b.tolist(), x.tolist()):
                    if sub == "expect_tx":
                        self.mbs[bi].tx += xi
                        self._mb_after(bi)
                    else:
                        self._mb_complete_tx(bi, xi, what)
            return tx_op

        if sub == "arrive":
            has_tx = "expect_tx" in rest
            if len(args) not in (2, 3) or (has_tx and len(args) != 3):
                raise EmuError("mbarrier.arrive takes state, [addr]{, count}; .expect_tx: state, [addr], txCount")
            sa = args[0].strip()
            if "shared::cluster" in rest and sa != "_":
                raise EmuError("mbarrier.arrive.shared::cluster needs the sink `_` as its state operand")
            ws = self.dst(sa, "b64")
            afn = address(args[1])
            X = self.src(args[2], "u32") if len(args) == 3 else None

            def arrive(g):
                act = g.nonzero()[0]
                if not act.size:
                    return
                b = self._mb_lookup(afn(act) if xl is not None else afn()[act], act, what)
                x = X[act].astype(np.int64) if X is not None else np.ones(act.size, np.int64)
                if has_tx:
                    if np.count_nonzero(x > _TX_MAX):
                        raise EmuError(f"{what}: txCount {int(x.max())} not in 0..2^20-1")
                    cnt, tx = np.ones(act.size, np.int64), x
                else:
                    if np.count_nonzero((x < 1) | (x > _TX_MAX)):
                        raise EmuError(f"{what}: arrival count {int(x[(x < 1) | (x > _TX_MAX)][0])} not in 1..2^20-1")
                    cnt, tx = x, None
                ns = np.zeros(act.size, np.int64)
                for bi in np.unique(b):
                    sel = np.flatnonzero(b == bi)
                    if release and self.races:
                        self._mb_release(int(bi), act[sel])
                    ns[sel] = self._mb_arrive(int(bi), act[sel], cnt[sel], None if tx is None else tx[sel], what)
                if self.rd_recs:
                    self._release(act, ns, b)
                state = np.zeros(self.ntp, np.uint64)
                state[act] = (ns - 1).astype(np.uint64)   # the phase arrived on (any value would do)
                ws(state, g)
            return arrive

        # try_wait / test_wait
        if "parity" not in rest:
            raise EmuError(f"only mbarrier.{sub}.parity is supported (not the state-token form)")
        if len(args) not in (3, 4):
            raise EmuError(f"mbarrier.{sub}.parity takes p, [addr], phaseParity{{, suspendTimeHint}}")
        wp = self.dst(args[0], "pred")
        afn = address(args[1])
        Q = self.src(args[2], "u32")
        soft = sub == "test_wait"
        self.n_waits += 1
        wid = self.n_waits     # this instruction, for strict_waits' retry test
        line = ins.line

        def wait(g):
            act = g.nonzero()[0]
            if not act.size:
                return False
            b = self._mb_lookup(afn(act) if xl is not None else afn()[act], act, what)
            q = Q[act].astype(np.int64)
            if np.count_nonzero(q > 1):
                raise EmuError(f"{what}: phase parity operand {int(q[q > 1][0])} is not 0 or 1")
            comp = self.mb_comp[b]
            ok = (comp & 1) != q
            if self.strict_waits:
                # a first try returns false even on a completed phase (the thread may
                # have come before the completion); the retry sees the real state
                first = self.wait_retry[act] != wid
                self.wait_retry[act] = np.where(ok & ~first, 0, wid)
                done = ok & ~first
            else:
                done = ok
            if np.count_nonzero(done):
                self.mb_obs[b[done], act[done]] = comp[done]
                if acquire and self.races:
                    self._mb_acquire(b[done], act[done], comp[done])
            res = np.zeros(self.ntp, bool)
            res[act[done]] = True
            wp(res, g)
            wait_ = ~ok
            if not np.count_nonzero(wait_):
                return False
            # false on an incomplete phase: the thread goes on (its pc advances)
            # once the phase completes
            fail = act[wait_]
            for bi in np.unique(b[wait_]):
                sel = b[wait_] == bi
                tt = fail[sel]
                self.parked[tt] = True
                self.park_kind[tt] = 2 if soft else 1
                self.park_on[tt] = bi
                self.park_par[tt] = q[wait_][sel]
                self.park_line[tt] = line
                self.mbs[bi].nwait += tt.size
                self.n_parked += tt.size
            return True
        return wait

    # -- TMA
    def _c_bulk(self, ins):
        mods = ins.mods
        rest = mods[2:]
        what = f"{self.f.name}: {ins.text}"
        if rest == ["commit_group"]:
            self._need_sm90(ins)
            if ins.args:
                raise EmuError("cp.async.bulk.commit_group takes no operands")

            def bulk_commit(g):
                if self.bs_recs:
                    for rec in self.bs_recs:
                        if rec[1] is None and g[rec[0]]:
                            rec[1] = int(self.bs_commit[rec[0]])
                self.bs_commit[g] += 1
            return bulk_commit
        if rest[:1] == ["wait_group"]:
            self._need_sm90(ins)
            if rest[1:] not in ([], ["read"]):
                raise EmuError("cp.async.bulk.wait_group{.read} N")
            try:
                nkeep = _int_lit(ins.args[0]) if len(ins.args) == 1 else -1
            except ValueError:
                nkeep = -1
            if nkeep < 0:
                raise EmuError("cp.async.bulk.wait_group{.read} takes an immediate N >= 0")

            def bulk_wait(g):
                if self.bs_recs:
                    self._bs_retire(g, self.bs_commit - nkeep)
            return bulk_wait
        if rest[:1] != ["tensor"]:
            raise EmuError("only cp.async.bulk.tensor, cp.async.bulk.commit_group and cp.async.bulk.wait_group{.read} "
                           "are supported")
        self._need_sm90(ins)
        sp = [m for m in rest if m in ("global", "shared::cluster", "shared::cta")]
        if sp[:1] == ["global"]:
            return self._c_tma_store(ins, rest)
        known = {"tensor", "2d", "shared::cluster", "shared::cta", "global", "tile", "mbarrier::complete_tx::bytes",
                 "L2::cache_hint", "multicast::cluster"}
        bad = [m for m in rest if m not in known]
        if bad:
            raise EmuError(f"unsupported cp.async.bulk.tensor qualifier .{bad[0]} (supported: .2d, shared::cluster / "
                           f"shared::cta <- global, .tile, .mbarrier::complete_tx::bytes, .multicast::cluster; global "
                           f"<- shared::cta, .tile, .bulk_group)")
        if "2d" not in rest or "global" not in rest or "mbarrier::complete_tx::bytes" not in rest or \
                not ("shared::cluster" in rest or "shared::cta" in rest):
            raise EmuError("cp.async.bulk.tensor needs .2d.shared::cluster.global{.tile}.mbarrier::complete_tx::bytes")
        args = list(ins.args)
        if "L2::cache_hint" in rest:
            args = args[:-1]
        mcast = "multicast::cluster" in rest
        if mcast and "shared::cluster" not in rest:
            raise EmuError(".multicast::cluster needs the .shared::cluster destination")
        if len(args) != 3 + mcast:
            raise EmuError("cp.async.bulk.tensor takes [dstMem], [tensorMap, {c0, c1}], [mbar]" +
                           (", ctaMask" if mcast else ""))
        dfn, dp = self.addr(args[0])
        bfn, bp = self.addr(args[2])
        if dp is not None or bp is not None:
            raise EmuError("parameter used as a shared address")
        T, C0, C1 = self._tensor_operand(args[1])
        M = self.src(args[3], "b16", relaxed=True) if mcast else None
        xl = self._xcluster if "shared::cluster" in rest else (self._xcta if self.C > 1 else None)

        def tma(g):
            act = g.nonzero()[0]
            if not act.size:
                return
            dst, mb, ta = dfn()[act], bfn()[act], T[act]
            if xl is not None:
                dst = xl(dst, act, 1, what, "TMA destination")
                mb = xl(mb, act, 8, what, "TMA mbarrier access")
            if self.C > 1:
                other = dst // self.W != mb // self.W
                if np.count_nonzero(other):
                    k = int(np.flatnonzero(other)[0])
                    raise EmuError(f"{what}: thread {self._who(act[k])}: the TMA's destination (rank "
                                   f"{int(dst[k]) // self.W}) and its mbarrier (rank {int(mb[k]) // self.W}) are in "
                                   f"different CTAs")
            if mcast:
                for i, t in enumerate(act.tolist()):
                    self._tma_multicast(self._tmap(int(ta[i]), what), int(C0[t]), int(C1[t]), int(dst[i]), int(mb[i]),
                                        int(M[t]), t, what)
                return
            bars = self._mb_lookup(mb, act, what)
            for i, t in enumerate(act.tolist()):
                self._tma_load(self._tmap(int(ta[i]), what), int(C0[t]), int(C1[t]), int(dst[i]), int(bars[i]), t,
                               what)
        return tma

    def _tma_multicast(self, tm, c0, c1, d, mb, mask, t, what):
        """A multicast TMA load by thread t: the box lands at the destination's
        offset d % W in the shared memory of every CTA in the ctaMask, each
        signalling complete_tx on its mbarrier at the offset mb % W."""
        if mask == 0:
            raise EmuError(f"{what}: thread {self._who(t)}: the multicast's ctaMask is 0 (no destination CTA)")
        if mask >> self.C:
            raise EmuError(f"{what}: thread {self._who(t)}: ctaMask {mask:#06x} names CTA rank "
                           f"{mask.bit_length() - 1}, outside the cluster's {self.C} CTA(s) (ranks 0..{self.C - 1})")
        od, ob = d % self.W, mb % self.W
        for r in range(self.C):
            if not mask >> r & 1:
                continue
            if self.gone[r]:
                raise EmuError(f"{what}: thread {self._who(t)}'s multicast TMA lands in rank {r}'s shared memory, but "
                               f"rank {r} has exited: its shared memory is gone (a CTA must not exit while its peers "
                               f"may still use its shared memory: barrier.cluster.arrive / wait before exiting)")
            b = int(self._mb_lookup(np.array([r * self.W + ob]), np.array([t]), what)[0])
            self._tma_load(tm, c0, c1, r * self.W + od, b, t, what)
            if r != t // self.ctp:
                self._racc_note(np.array([r]), np.array([t]), what)

    def _tensor_operand(self, a):
        """`[tensorMap, {c0, c1}]` -> (map address, c0, c1) operand arrays."""
        m = re.fullmatch(r"\[\s*([^,\s]+)\s*,\s*\{(.*)\}\s*\]", a.strip())
        if not m:
            raise EmuError(f"cannot parse the tensor operand `{a}`")
        tm = m.group(1)
        T = self._param_addr(tm, "u64", PARAM_GENERIC_BASE) if tm in self.param_off else self.src(tm, "u64")
        cs = [c.strip() for c in m.group(2).split(",")]
        if len(cs) != 2:
            raise EmuError(".2d needs two coordinates {c0, c1}")
        C0, C1 = (self.src(c, "s32") for c in cs)
        return T, C0, C1

    def _c_tma_store(self, ins, rest):
        """cp.async.bulk.tensor.2d.global.shared::cta{.tile}.bulk_group{.L2::cache_hint}
        [tensorMap, {c0, c1}], [srcMem]{, cache-policy}."""
        known = {"tensor", "2d", "global", "shared::cta", "tile", "bulk_group", "L2::cache_hint"}
        bad = [m for m in rest if m not in known]
        if bad:
            raise EmuError(f"unsupported qualifier .{bad[0]} for a TMA store (supported: "
                           f"cp.async.bulk.tensor.2d.global.shared::cta{{.tile}}.bulk_group{{.L2::cache_hint}})")
        if "2d" not in rest or "shared::cta" not in rest or "bulk_group" not in rest:
            raise EmuError("a TMA store needs cp.async.bulk.tensor.2d.global.shared::cta{.tile}.bulk_group")
        args = list(ins.args)
        if "L2::cache_hint" in rest:
            args = args[:-1]
        if len(args) != 2:
            raise EmuError("a TMA store takes [tensorMap, {c0, c1}], [srcMem]{, cache-policy}")
        T, C0, C1 = self._tensor_operand(args[0])
        sfn, sp = self.addr(args[1])
        if sp is not None:
            raise EmuError("parameter used as a shared address")
        self.has_bstore = True
        what = f"{self.f.name}: {ins.text}"
        line = ins.line

        def tma_store(g):
            act = g.nonzero()[0]
            if not act.size:
                return
            src, ta = sfn()[act], T[act]
            if self.C > 1:
                src = self._xcta(src, act, 1, what, "TMA store source")
            for i, t in enumerate(act.tolist()):
                self._tma_store(self._tmap(int(ta[i]), what), int(C0[t]), int(C1[t]), int(src[i]), t, what, line)
        return tma_store

    def _tma_store(self, tm, c0, c1, s, t, what, line):
        """Issue of a TMA store by thread t: the checks of its source read (as an
        ld.shared of thread t now) and destination; the copy itself waits for
        the retirement of its bulk async-group (_bs_retire)."""
        co, _ = self._tma_box(tm, s, what, "source")
        ext = self._tma_extent(tm, c0, c1)
        if ext is not None:
            self.mem.check_range(ext[3], ext[4], f"{what}: TMA store destination")
        ad = s + co
        self.shared_access(ad, 16, what, np.full(ad.size, t, np.int64), write=False)
        if self.pxy_on:
            idx = ad[:, None] + _ARANGE[:16]
            pw = self.pxy_w[idx]
            m = pw >= 0
            if np.count_nonzero(m):
                pw, pt, pe = pw[m], self.pxy_t[idx][m], self.pxy_we[idx][m]
                Wt = t // 32
                ok = (pt >= 0) & ((pw == t) | (self.vc[Wt, pw // 32] > pt) |
                                  ((pw // 32 == Wt) & (self.wepoch[Wt] > pe)))
                if not ok.all():
                    k = int(np.flatnonzero(~ok)[0])
                    b = int(idx[m][k])
                    why = "" if pt[k] < 0 else (f": thread {int(pw[k])}'s fence.proxy.async is not ordered before "
                                                f"the store (a barrier must come between the fence and the issue)")
                    raise EmuError(f"{what}: TMA store by thread {t} reads shared byte {self._loc(b)}, stored by "
                                   f"thread {int(pw[k])} without fence.proxy.async before the TMA store{why} (the "
                                   f"generic stores must be made visible to the async proxy: "
                                   f"fence.proxy.async.shared::cta by each writing thread, then a barrier with the "
                                   f"issuing thread)")
        ch = ad >> 4
        self.bs_recs.append([t, None, tm, s, co, ext, ch, line])
        self.bs_src[ch] += 1
        self.n_bstore += 1

    def _bs_retire(self, g, limit):
        """cp.async.bulk.wait_group{.read}: the TMA stores of threads g in bulk
        groups < limit[thread] read their source and write global memory, oldest
        first (both at once: .read only releases the source, but global memory is
        not checked for races)."""
        keep = []
        for rec in self.bs_recs:
            t, grp = rec[0], rec[1]
            if not (g[t] and grp is not None and grp < limit[t]):
                keep.append(rec)
                continue
            _, _, tm, s, co, ext, ch, _ = rec
            if ext is not None:
                rows, x0, x1, starts, ln = ext
                e = tm.elem
                data = self.smem[(s + co)[:, None] + _ARANGE[:16]].reshape(tm.box[1], tm.box[0] * e)
                self.mem.mem[starts[:, None] + np.arange(ln)] = data[rows, x0 * e:x1 * e]
                if self.uses_nc:
                    self._w_mark(starts, ln)
            self.bs_src[ch] -= 1
            self.n_bstore -= 1
        self.bs_recs = keep

    def _bs_hit(self, chunks, tids, what):
        """Writes to the 16-byte chunks `chunks` by threads `tids`: an error on the
        source of a TMA store not yet retired."""
        hit = self.bs_src[chunks] > 0
        if np.count_nonzero(hit):
            k = int(np.flatnonzero(hit)[0])
            c = int(chunks[k])
            rec = next(r for r in self.bs_recs if np.count_nonzero(r[6] == c))
            st = "not committed" if rec[1] is None else f"bulk group {rec[1]}"
            raise EmuError(f"{what}: thread {int(tids[k])} writes shared byte {self._loc(16 * c)}: overwrites the "
                           f"source of a TMA store not yet read (cp.async.bulk.wait_group.read): the store of thread "
                           f"{rec[0]} (line {rec[7]}, {st})")

    def _bs_exit_checks(self, g, ins):
        for rec in self.bs_recs:
            if g[rec[0]]:
                st = "not committed (cp.async.bulk.commit_group)" if rec[1] is None else \
                    f"in bulk group {rec[1]}, not retired (cp.async.bulk.wait_group{{.read}})"
                raise EmuError(f"{self.f.name}: line {ins.line}: thread {rec[0]} exits with a TMA store (line "
                               f"{rec[7]}) {st}: its shared-memory source may be gone before the copy reads it")

    def _tmap(self, ga, what):
        off = ga - PARAM_GENERIC_BASE
        if off not in self.tmap_offs:
            raise EmuError(f"{what}: tensor-map operand {ga:#x} is not the generic address of a tensor-map kernel "
                           f"parameter (mov.u64 %rd, p_map; cvta.param.u64 %rd, %rd)")
        raw = self.pbuf[off:off + 128].tobytes()
        tm = self.tmap_cache.get(raw)
        if tm is None:
            try:
                tm = TensorMap.decode(raw)
            except EmuError as e:
                raise EmuError(f"{what}: {e}") from None
            self.tmap_cache[raw] = tm
        return tm

    def _tma_box(self, tm, d, what, role):
        """Shared-memory layout of a TMA box at d (the TMA's destination or source):
        the byte offset of each 16-byte chunk of the box in row-major order (after
        the 128-byte swizzle), and the box's size in bytes."""
        nb = tm.box[0] * tm.elem * tm.box[1]
        al = 1024 if tm.swizzle else 128
        if self.C > 1:   # a flat address: its offset in its CTA's shared memory
            d = d % self.W
        if d % al:
            raise EmuError(f"{what}: TMA {role} {d} is not {al}-byte aligned"
                           f"{' (128-byte swizzle)' if tm.swizzle else ''}")
        co = np.arange(nb // 16, dtype=np.int64) * 16
        if tm.swizzle:
            co ^= ((co >> 7) & 7) << 4
        if d < 0 or d + int(co.max()) + 16 > self.smem_size:
            raise EmuError(f"{what}: TMA {role} [{d}, {d + nb}) outside shared memory ({self.smem_size} "
                           f"B{' per CTA' if self.C > 1 else ''})")
        return co, nb

    @staticmethod
    def _tma_extent(tm, c0, c1):
        """The in-bounds part of the box at (c0, c1): (its rows within the box,
        first and last + 1 column within the box, global address of each row's
        first in-bounds element, bytes per row), or None when it is empty."""
        bx, by = tm.box
        xs = c0 + np.arange(bx, dtype=np.int64)
        ys = c1 + np.arange(by, dtype=np.int64)
        okx = np.flatnonzero((xs >= 0) & (xs < tm.dims[0]))
        rows = np.flatnonzero((ys >= 0) & (ys < tm.dims[1]))
        if not (okx.size and rows.size):
            return None
        x0, x1 = int(okx[0]), int(okx[-1]) + 1
        starts = tm.addr + ys[rows] * tm.stride + (c0 + x0) * tm.elem
        return rows, x0, x1, starts, (x1 - x0) * tm.elem

    def _tma_load(self, tm, c0, c1, d, b, t, what):
        e = tm.elem
        co, nb = self._tma_box(tm, d, what, "destination")
        # the box from global memory, zero outside the tensor
        data = np.zeros((tm.box[1], tm.box[0] * e), np.uint8)
        ext = self._tma_extent(tm, c0, c1)
        if ext is not None:
            rows, x0, x1, starts, ln = ext
            self.mem.check_range(starts, ln, f"{what}: TMA source")
            data[rows, x0 * e:x1 * e] = self.mem.mem[starts[:, None] + np.arange(ln)]
        ch = (d + co) >> 4
        idx = (d + co)[:, None] + _ARANGE[:16]
        self._tma_write_checks(ch, idx, t, what)
        self.smem[idx] = data.reshape(-1, 16)
        n = int(self.mb_comp[b]) + 1
        self.tma_bar[ch] = b
        self.tma_n[ch] = n
        if self.rd_recs and np.count_nonzero(self.nrd[ch]):
            self._rd_forget(ch)
        gr = self.granule
        gi = ((ch * 16 // gr)[:, None] + _ARANGE[:16 // gr]).ravel()
        self.rw_wt[gi] = -1
        self.rd_last[gi] = -1
        self.rd_t[gi] = -1
        if self.vis_dirty:
            self.vis[idx] = -1
        if self.pxy_on:   # async-proxy data
            self.pxy_w[idx] = -1
            self.pxy_t[idx] = 0
        self.async_on = True
        self._mb_complete_tx(b, nb, what)

    def _tma_write_checks(self, ch, idx, t, what):
        """May thread t's TMA write the chunks `ch` (bytes idx) now?"""
        if self.mbs:
            hit = (self.mb_at[ch * 2] >= 0) | (self.mb_at[ch * 2 + 1] >= 0)
            if np.count_nonzero(hit):
                c = int(ch[hit][0])
                bi = int(self.mb_at[2 * c]) if self.mb_at[2 * c] >= 0 else int(self.mb_at[2 * c + 1])
                raise EmuError(f"{what}: TMA destination overlaps {self._mb_name(bi)}")
        if self.npend and np.count_nonzero(self.pend[idx] >= 0):
            raise EmuError(f"{what}: TMA onto shared bytes of a pending cp.async")
        if self.n_inflight:
            iu = self.inuse[ch] > 0
            if np.count_nonzero(iu):
                c = int(ch[iu][0])
                raise EmuError(f"{what}: TMA overwrites shared byte {self._loc(16 * c)}, an operand of "
                               f"{self._inflight_name(c)} not yet retired by wgmma.wait_group (and released by an "
                               f"mbarrier arrive)")
        if self.rd_recs and np.count_nonzero(self.nrd[ch]):
            self._tma_read_checks(ch, t, what)
        tb = self.tma_bar[ch]
        m = tb >= 0
        if np.count_nonzero(m):
            tbm = tb[m].astype(np.int64)
            bad = self.mb_comp[tbm] < self.tma_n[ch[m]]
            if np.count_nonzero(bad):
                k = int(np.flatnonzero(bad)[0])
                raise EmuError(f"{what}: TMA onto shared byte {self._loc(16 * int(ch[m][k]))} written by an earlier "
                               f"TMA whose {self._mb_name(int(tbm[k]))} phase has not completed")
        if self.n_bstore:
            self._bs_hit(ch, np.full(ch.size, t), what)
        if self.races:
            gr = self.granule
            gi = (ch * 16 // gr)[:, None] + _ARANGE[:16 // gr]
            Wt = t // 32
            vm = self.vmin[Wt]
            wt = self.rw_wt[gi]
            ww = self.rw_w[gi]
            bad = (wt >= vm) & (ww != t)
            if np.count_nonzero(bad):
                bad &= wt >= self.vc[Wt, ww // 32]
                if np.count_nonzero(bad):
                    k = np.argwhere(bad)[0]
                    raise EmuError(f"{what}: TMA by thread {t} overwrites shared byte "
                                   f"{self._loc(int(gi[k[0], k[1]]) * gr)} stored by thread {int(ww[k[0], k[1]])} with "
                                   f"no barrier between them (bar.sync, or a bar.sync with a thread count both took "
                                   f"part in{self._xhint})")
            fresh = (self.tma_bar[ch] < 0)[:, None]
            cand = fresh & (self.rd_last[gi] >= vm)
            if np.count_nonzero(cand):
                gg = gi[cand]
                live = self.rd_t[gg] >= self.vc[Wt]
                own = live[:, Wt].copy()
                live[:, Wt] = False
                L = t % 32
                bad = live.any(1) | (own & ~((self.rd_lo[gg, Wt] == L) & (self.rd_hi[gg, Wt] == L)))
                if np.count_nonzero(bad):
                    k = int(np.flatnonzero(bad)[0])
                    x = int(np.flatnonzero(live[k])[0]) if live[k].any() else Wt
                    raise EmuError(f"{what}: TMA by thread {t} overwrites shared byte {self._loc(int(gg[k]) * gr)} "
                                   f"read by {self._readers(int(gg[k]), x)} with no barrier between them (bar.sync, or "
                                   f"a bar.sync with a thread count both took part in{self._xhint})")

    def _tma_read_checks(self, ch, t, what):
        """The recorded reads of the chunks ch, which thread t's TMA is about to
        overwrite: each must have retired and be ordered before the issue: by
        program order (t's own ld.shared), by a barrier (the reading thread's /
        warp's / one of the warpgroup's warps' clock, as t's warp knows it, passed
        the retirement), or by an mbarrier arrival of its reader after the
        retirement whose phase t has observed."""
        hit = self.hitbuf
        hit[ch] = True
        try:
            vct = self.vc[t // 32]
            unrel = unobs = None
            for rec in self.rd_recs:
                m = hit[rec[2]]
                if not np.count_nonzero(m):
                    continue
                kind, ids = rec[0], rec[1][m]
                if not rec[3]:
                    c = int(rec[2][m][0])
                    raise EmuError(f"{what}: TMA overwrites shared byte {self._loc(16 * c)}, an operand of "
                                   f"{self._inflight_name(c)} not yet retired by wgmma.wait_group (and released by an "
                                   f"mbarrier arrive)")
                if kind == 2:
                    seen = vct[ids[:, None] * 4 + np.arange(4)].max(1)
                else:
                    seen = vct[ids // 32 if kind == 0 else ids]
                ok = seen > rec[4]
                if kind == 0:
                    ok |= ids == t
                if ok.all():
                    continue
                rel = np.zeros(ok.size, bool)
                for b, arr in rec[5].items():
                    nb = arr[m]
                    has = nb > 0
                    if np.count_nonzero(has):
                        rel |= has
                        ok |= has & (self.mb_obs[b, t] >= nb)
                if ok.all():
                    continue
                bad = ~ok & ~rel
                if np.count_nonzero(bad):
                    if unrel is None:
                        k = int(np.flatnonzero(bad)[0])
                        unrel = (int(rec[2][m][k]), self._reader_name(rec, ids[k]))
                elif unobs is None:
                    k = int(np.flatnonzero(~ok)[0])
                    b = next(b for b, arr in rec[5].items() if arr[m][k] > 0)
                    unobs = (int(rec[2][m][k]), b, int(rec[5][b][m][k]), self._reader_name(rec, ids[k]),
                             sum(1 for arr in rec[5].values() if arr[m][k] > 0))
            if unrel is not None:
                c, who = unrel
                raise EmuError(f"{what}: TMA overwrites shared byte {self._loc(16 * c)} whose read by {who} was not "
                               f"released: the reader must mbarrier.arrive after the read retired (after "
                               f"wgmma.wait_group for wgmma), and the TMA's issuer must wait for that phase")
            if unobs is not None:
                c, b, n, who, nrel = unobs
                more = f" (or on {nrel - 1} other mbarrier(s), none observed either)" if nrel > 1 else ""
                raise EmuError(f"{what}: TMA by thread {self._who(t)} overwrites shared byte {self._loc(16 * c)}, "
                               f"whose readers ({who}) released it on phase {n} of {self._mb_name(b)}{more}, which "
                               f"thread {t} has not observed (its latest observed phase: {int(self.mb_obs[b, t])}; "
                               f"{self._mb_state(b)})")
        finally:
            hit[ch] = False

    def _rd_forget(self, ch):
        """A TMA overwrote the chunks ch: the reads recorded on them are over."""
        hit = self.hitbuf
        hit[ch] = True
        drop = False
        for rec in self.rd_recs:
            m = hit[rec[2]]
            if np.count_nonzero(m):
                self._rd_drop(rec, m)
                drop = True
        hit[ch] = False
        if drop:
            self.rd_recs = [r for r in self.rd_recs if r[2].size]

    # -- wgmma
    def _aligned_wgs(self, g, what):
        """Warpgroups executing a warpgroup-collective .sync.aligned instruction:
        each must be complete (all 128 threads at the instruction)."""
        gw = g.reshape(self.nw, 32)
        anyw = gw.any(1)
        if not np.count_nonzero(anyw):
            return np.zeros(0, np.int64)
        allw = gw.all(1)
        pad = self.nwg * 4 - self.nw
        if pad:
            anyw = np.concatenate([anyw, np.zeros(pad, bool)])
            allw = np.concatenate([allw, np.zeros(pad, bool)])
        wa = anyw.reshape(self.nwg, 4).any(1)
        wl = allw.reshape(self.nwg, 4).all(1)
        partial = wa & ~wl
        if np.count_nonzero(partial):
            wg = int(np.flatnonzero(partial)[0])
            t0 = 128 * wg
            missing = [t for t in range(t0, t0 + 128) if t >= self.ntp or not g[t]]
            extra = " or not in the block" if t0 % self.ctp + 128 > self.nt else ""
            raise EmuError(f"{what}: warpgroup {wg} (threads {t0}..{t0 + 127}) only partly executes this warpgroup-"
                           f"collective instruction: threads {missing[:8]}{'...' if len(missing) > 8 else ''} are not "
                           f"at it (divergent, waiting or exited{extra})")
        return np.flatnonzero(wa)

    def _wg_tab(self, n):
        """Accumulator fragment of m64nNk16: (row, col) of register j, thread t of
        the warpgroup, as two (N/2, 128) arrays."""
        tab = self._wg_tabs.get(n)
        if tab is None:
            j = np.arange(n // 2)[:, None]
            t = np.arange(128)[None, :]
            w, ln = t // 32, t % 32
            rows = 16 * w + ln // 4 + 8 * ((j >> 1) & 1)
            cols = 8 * (j >> 2) + 2 * (ln % 4) + (j & 1)
            tab = (np.broadcast_to(rows, (n // 2, 128)).copy(), np.broadcast_to(cols, (n // 2, 128)).copy())
            self._wg_tabs[n] = tab
        return tab

    def _gmma_operand(self, desc, rows, what, which, mn=False, wbase=0, esize=2):
        """Element (i, k), i < rows, k < 32 / esize, of an operand of `esize`-byte
        elements through matrix descriptor `desc`, K-major (mn False: the k of a
        row i contiguous) or MN-major (mn True, imm-trans 1, 2-byte elements only:
        rows i contiguous for each k): (u16 or u32 values (rows, 32 / esize), the
        16-byte chunks read)."""
        assert esize in (2, 4) and not (mn and esize != 2)
        kn, kc = 32 // esize, 16 // esize     # k per row slice, k per 16-byte core row
        rsv = desc & ~(0x3FFF | (0x3FFF << 16) | (0x3FFF << 32) | (7 << 49) | (3 << 62))
        if rsv:
            raise EmuError(f"{what}: {which} descriptor {desc:#018x} has reserved bits set ({rsv:#x})")
        start = (desc & 0x3FFF) << 4
        lbo = ((desc >> 16) & 0x3FFF) << 4
        sbo = ((desc >> 32) & 0x3FFF) << 4
        base = (desc >> 49) & 7
        mode = desc >> 62
        if base:
            raise EmuError(f"{what}: {which} descriptor base offset {base} (only 0 is supported)")
        i = np.arange(rows, dtype=np.int64)[:, None]
        k = np.arange(kn, dtype=np.int64)[None, :]
        if mode == 1:
            if (start >> 7) & 7:
                raise EmuError(f"{what}: {which} descriptor start address {start} is not within the first 128 bytes "
                               f"of a 1024-byte swizzle atom (128-byte swizzle, base offset 0)")
            if mn:      # 64 MN elements per 128-byte row, 8 k rows per atom; SBO: k / 8, LBO: i / 64
                lin = start + (i // 64) * lbo + 2 * (i % 64) + (k // 8) * sbo + (k % 8) * 128
            else:
                lin = start + (i // 8) * sbo + (i % 8) * 128 + esize * k
            phys = lin ^ (((lin >> 7) & 7) << 4)
        elif mode == 0:
            if mn:      # core matrices of 8 MN elements (16 bytes) x 8 k at a 16-byte pitch
                phys = start + (i // 8) * sbo + 2 * (i % 8) + (k // 8) * lbo + 16 * (k % 8)
            else:
                phys = start + (i // 8) * sbo + (k // kc) * lbo + (i % 8) * 16 + esize * (k % kc)
        else:
            raise EmuError(f"{what}: {which} descriptor swizzle mode {mode} ({ {2: '64B', 3: '32B'}[mode] }) is not "
                           f"supported (0 = none, 1 = 128B)")
        if int(phys.max()) + esize > self.smem_size:
            raise EmuError(f"{what}: {which} operand reaches shared byte {int(phys.max())}, outside shared memory "
                           f"({self.smem_size} B{' per CTA' if self.C > 1 else ''})")
        if wbase:   # the warpgroup's CTA's shared memory (a cluster)
            phys = phys + wbase
        if esize == 4:
            return self.smem.view(np.uint32)[phys >> 2], np.unique(phys >> 4)
        return self.smem.view(np.uint16)[phys >> 1], np.unique(phys >> 4)

    def _wgmma_read_checks(self, ch, wg, what):
        t0 = 128 * wg
        if self.mbs:
            hit = (self.mb_at[ch * 2] >= 0) | (self.mb_at[ch * 2 + 1] >= 0)
            if np.count_nonzero(hit):
                raise EmuError(f"{what}: wgmma operand overlaps an mbarrier (shared byte "
                               f"{self._loc(16 * int(ch[hit][0]))})")
        if self.npend or self.vis_dirty:
            idx = (ch * 16)[:, None] + _ARANGE[:16]
            if self.npend and np.count_nonzero(self.pend[idx] >= 0):
                raise EmuError(f"{what}: wgmma reads shared bytes of a pending cp.async")
            if self.vis_dirty and np.count_nonzero(self.vis[idx] != -1):
                raise EmuError(f"{what}: wgmma reads shared bytes written by a cp.async with no bar.sync since its "
                               f"cp.async.wait")
        tb = self.tma_bar[ch]
        m = tb >= 0
        if np.count_nonzero(m):
            tbm = tb[m].astype(np.int64)
            obs = self.mb_obs[tbm, t0:t0 + 128]
            need = self.tma_n[ch[m]]
            bad = obs.min(1) < need
            if np.count_nonzero(bad):
                k = int(np.flatnonzero(bad)[0])
                b, n = int(tbm[k]), int(need[k])
                who = t0 + int(obs[k].argmin())
                state = "which has not completed" if self.mb_comp[b] < n else \
                    f"which thread {who} has not observed (every thread of the warpgroup must wait on it)"
                raise EmuError(f"{what}: warpgroup {wg}'s wgmma reads shared byte {self._loc(16 * int(ch[m][k]))} "
                               f"written by a TMA completing phase {n} of {self._mb_name(b)}, {state}")
        if self.races:
            gr = self.granule
            gi = ((ch * 16 // gr)[:, None] + _ARANGE[:16 // gr]).ravel()
            ws = 4 * wg + np.arange(4)
            wt = self.rw_wt[gi]
            cand = wt >= self.vmin[ws].min()
            if np.count_nonzero(cand):
                sub = gi[cand]
                ww = self.rw_w[sub]
                # ordered if any warp of the warpgroup is (the wgmma waits for all four)
                bad = (self.vc[ws][:, ww // 32].max(0) <= wt[cand]) & (ww // 128 != wg)
                if np.count_nonzero(bad):
                    k = int(np.flatnonzero(bad)[0])
                    raise EmuError(f"{what}: shared-memory race: warpgroup {wg}'s wgmma reads byte "
                                   f"{self._loc(int(sub[k]) * gr)} written by thread {self._who(ww[k])} with no "
                                   f"barrier between them (bar.sync, or a bar.sync with a thread count both took part "
                                   f"in{self._xhint})")
            # a read by every lane of the warpgroup's four warps
            nw = self.nw
            fi = (gi[:, None] * nw + ws).ravel()        # gi are distinct: no duplicates
            rt, we = self.rd_tf, self.rd_wef
            WE = np.tile(self.wepoch[ws], gi.size)
            stale = rt[fi] < np.tile(self.vdiag[ws], gi.size)
            we[fi] = np.where(stale, WE, np.maximum(we[fi], WE))
            self.rd_lof[fi] = 0
            self.rd_hif[fi] = 31
            rt[fi] = self.G
            self.rd_last[gi] = self.G

    def _c_wgmma(self, ins):
        mods = ins.mods
        sub = mods[0] if mods else ""
        if "sync" not in mods or "aligned" not in mods:
            raise EmuError("wgmma instructions are .sync.aligned")
        self._need_sm90(ins, arch_a=True)
        what = f"{self.f.name}: {ins.text}"
        if sub == "fence":
            def fence(g):
                self.wg_need_fence[self._aligned_wgs(g, what)] = False
            return fence
        if sub == "commit_group":
            def commit(g):
                for wg in self._aligned_wgs(g, what):
                    for rec in self.wg_recs[wg]:
                        if rec[0] is None:
                            rec[0] = self.wg_commit[wg]
                    self.wg_commit[wg] += 1
            return commit
        if sub == "wait_group":
            try:
                nkeep = _int_lit(ins.args[0]) if len(ins.args) == 1 else -1
            except ValueError:
                nkeep = -1
            if not 0 <= nkeep <= 7:
                raise EmuError("wgmma.wait_group takes an immediate N in 0..7")

            def wait_group(g):
                for wg in self._aligned_wgs(g, what):
                    lim = self.wg_commit[wg] - nkeep
                    keep = []
                    for rec in self.wg_recs[wg]:
                        if rec[0] is not None and rec[0] < lim:
                            self.inuse[rec[2]] -= 1
                            rec[1][3] = True
                            rec[1][4] = self.G
                            self.n_inflight -= 1
                        else:
                            keep.append(rec)
                    self.wg_recs[wg] = keep
                    self.wg_live[wg] = frozenset().union(*[r[3] for r in keep])
            return wait_group
        if sub != "mma_async":
            raise EmuError(f"unsupported wgmma form .{sub}")
        shp = next((re.fullmatch(r"m64n(\d+)k(16|8)", m) for m in mods if re.fullmatch(r"m64n(\d+)k(16|8)", m)),
                   None)
        if shp is None:
            raise EmuError("only wgmma.mma_async.sync.aligned.m64nNk16 / m64nNk8 are supported")
        n = int(shp.group(1))
        if n % 8 or not 8 <= n <= 256:
            raise EmuError(f"N = {n} is not a multiple of 8 in 8..256")
        types = mods[mods.index(shp.group(0)) + 1:]
        kshape = int(shp.group(2))
        if (kshape, types) not in ((16, ["f32", "bf16", "bf16"]), (16, ["f32", "f16", "f16"]),
                                   (8, ["f32", "tf32", "tf32"])):
            raise EmuError("only m64nNk16 .f32.bf16.bf16 / .f32.f16.f16 and m64nNk8 .f32.tf32.tf32 are supported")
        ab = types[1]
        args = ins.args
        a_regs = args[1].strip().startswith("{") if len(args) > 1 else False
        if ab == "tf32":
            # No transposes: K-major operands only, so no imm-trans operands.
            if len(args) != 6:
                raise EmuError("wgmma.mma_async .tf32 takes {d}, a-desc, b-desc, scale-d, imm-scale-a, imm-scale-b "
                               "or, A from registers, {d}, {a0, a1, a2, a3}, b-desc, scale-d, imm-scale-a, "
                               "imm-scale-b (K-major operands: no imm-trans)")
            args = list(args) + (["0"] if a_regs else ["0", "0"])
        if len(args) == 8 and a_regs:
            raise EmuError("wgmma.mma_async with A from registers takes {d}, {a0, a1, a2, a3}, b-desc, scale-d, "
                           "imm-scale-a, imm-scale-b, imm-trans-b (7 operands: no imm-trans-a)")
        if len(args) == 7 and not a_regs:
            raise EmuError("wgmma.mma_async with 7 operands takes A from registers: {d}, {a0, a1, a2, a3}, b-desc, "
                           f"scale-d, imm-scale-a, imm-scale-b, imm-trans-b (`{args[1].strip()}` is not a "
                           f"{{...}} register list)")
        if len(args) not in (7, 8):
            raise EmuError("wgmma.mma_async takes {d}, a-desc, b-desc, scale-d, imm-scale-a, imm-scale-b, "
                           "imm-trans-a, imm-trans-b (or {d}, {a0, a1, a2, a3}, b-desc, scale-d, imm-scale-a, "
                           "imm-scale-b, imm-trans-b: A from registers)")
        if not args[0].startswith("{"):
            raise EmuError("the accumulator operand is a {...} register list")
        dl = [x.strip() for x in args[0].strip("{}").split(",")]
        if len(dl) != n // 2:
            raise EmuError(f"m64n{n}k16 with .f32 accumulators takes {n // 2} registers, not {len(dl)}")
        if len(set(dl)) != len(dl):
            raise EmuError("an accumulator register is listed twice")
        for x in dl:
            self.dst(x, "f32")
        Dv = [self.regs[x].view(np.float32) for x in dl]
        if a_regs:
            al = [x.strip() for x in args[1].strip().strip("{}").split(",")]
            if len(al) != 4 or not all(al):
                raise EmuError(f"A from registers (m64n{n}k{kshape} .{ab}) is a list of four .b32 registers "
                               f"{{a0, a1, a2, a3}}, each holding {'one' if ab == 'tf32' else 'two'} .{ab} "
                               f"value(s), not {args[1].strip()}")
            if set(al) & set(dl):
                raise EmuError(f"{sorted(set(al) & set(dl))[0]} is both an A register and an accumulator")
            Av = [self.src(x, "b32") for x in al]
            DA = None
        else:
            al = []
            DA = self.src(args[1], "b64")
        DB = self.src(args[2], "b64")
        def imm(a, nm):
            try:
                return _int_lit(a)
            except ValueError:
                raise EmuError(f"{nm} `{a.strip()}` must be an immediate") from None

        sd = args[3].strip()
        if sd in self.regs:
            if self.f.regs[sd] != "pred":
                raise EmuError(f"scale-d {sd} must be a predicate or 0 / 1")
            S = self.regs[sd]
        else:
            v = imm(sd, "scale-d")
            if v not in (0, 1):
                raise EmuError(f"scale-d {sd} must be a predicate or 0 / 1")
            S = self._const(bool(v), np.bool_)
        for a, nm in ((args[4], "imm-scale-a"), (args[5], "imm-scale-b")):
            if imm(a, nm) != 1:
                raise EmuError(f"{nm} {a.strip()} is not supported (only 1)")
        trans = {}
        for a, nm in (((args[6], "imm-trans-a"), (args[7], "imm-trans-b")) if not a_regs else
                      ((args[6], "imm-trans-b"),)):
            v = imm(a, nm)
            if v not in (0, 1):
                raise EmuError(f"{nm} {a.strip()} must be 0 (K-major) or 1 (MN-major)")
            trans[nm] = bool(v)
        mn_a, mn_b = trans.get("imm-trans-a", False), trans["imm-trans-b"]
        aset = frozenset(al)
        regs = frozenset(dl) | aset          # guarded while in flight (accumulators and A registers)
        self.acc_regs |= regs
        nh = n // 2
        if a_regs:   # A fragment: register r of lane l of warp w, (row, column) of its (low) value
            t = np.arange(128)[None, :]
            r = np.arange(4)[:, None]
            a_rows = np.broadcast_to(16 * (t // 32) + (t % 32) // 4 + 8 * (r & 1), (4, 128))
            if ab == "tf32":
                a_cols = np.broadcast_to(4 * (r >> 1) + t % 4, (4, 128))
            else:
                a_cols = np.broadcast_to(8 * (r >> 1) + 2 * (t % 4), (4, 128))
        esize = 4 if ab == "tf32" else 2

        def operand_values(u):
            if ab == "tf32":    # as mma: the top 19 bits
                return (u.astype(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32).astype(np.float64)
            if ab == "bf16":
                return (u.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)
            return u.view(np.float16).astype(np.float64)

        def mma_async(g):
            for wg in self._aligned_wgs(g, what):
                t0 = 128 * wg
                sl = slice(t0, t0 + 128)
                if self.wg_need_fence[wg]:
                    raise EmuError(f"{what}: warpgroup {wg} issues wgmma.mma_async with no wgmma.fence since the start "
                                   f"or since its accumulator / A registers were accessed by other instructions")
                for rec in self.wg_recs[wg]:      # another in-flight wgmma's A as accumulators, or the reverse
                    clash = (rec[3] - rec[4]) & aset or rec[4] & (regs - aset)
                    if clash:
                        raise EmuError(f"{what}: uses {sorted(clash)[0]}, "
                                       f"{'an accumulator' if clash & aset else 'an A operand'} of an in-flight "
                                       f"wgmma.mma_async of warpgroup {wg}, in another role (wgmma.wait_group first)")
                ds = []
                for Dsc, nm in ((DA, "a-desc"), (DB, "b-desc"), (S, "scale-d")):
                    if Dsc is None:
                        ds.append(None)
                        continue
                    v = Dsc[sl]
                    if np.count_nonzero(v != v[0]):
                        k = int(np.flatnonzero(v != v[0])[0])
                        raise EmuError(f"{what}: {nm} differs across warpgroup {wg}: thread {t0} has {v[0]!r}, "
                                       f"thread {t0 + k} has {v[k]!r}")
                    ds.append(v[0])
                wb = int(self.wbase[t0])
                B, chb = self._gmma_operand(int(ds[1]), n, what, "B", mn_b, wb, esize)
                if a_regs:
                    u = np.stack([x[sl] for x in Av]).astype(np.uint32)                 # (4, 128)
                    if ab == "tf32":
                        A = np.empty((64, 8), np.uint32)
                        A[a_rows, a_cols] = u
                    else:
                        A = np.empty((64, 16), np.uint16)
                        A[a_rows, a_cols] = (u & np.uint32(0xFFFF)).astype(np.uint16)
                        A[a_rows, a_cols + 1] = (u >> np.uint32(16)).astype(np.uint16)
                    ch = chb
                else:
                    A, cha = self._gmma_operand(int(ds[0]), 64, what, "A", mn_a, wb, esize)
                    ch = np.union1d(cha, chb)
                self._wgmma_read_checks(ch, wg, what)
                rows, cols = self._wg_tab(n)
                R = operand_values(A) @ operand_values(B).T
                if ds[2]:
                    cur = np.empty((64, n), np.float64)
                    cur[rows, cols] = np.stack([Dv[j][sl] for j in range(nh)])
                    R += cur
                out = _canon(R)[rows, cols]
                for j in range(nh):
                    Dv[j][sl] = out[j]
                rd = self._rd_add(2, np.full(ch.size, wg, np.int64), ch, False, -1)
                self.inuse[ch] += 1
                self.wg_recs[wg].append([None, rd, ch, regs, aset])
                self.wg_live[wg] = self.wg_live[wg] | regs
                self.n_inflight += 1
                self.async_on = True
        return mma_async

    def _acc_guard(self, fn, names, ins):
        """Wrap an instruction that reads or writes wgmma accumulator registers
        or A-operand registers: an error while a wgmma of the thread's
        warpgroup writing (reading) them is in flight; afterwards the warpgroup
        needs a wgmma.fence before its next wgmma.mma_async."""
        what = f"{self.f.name}: {ins.text}"

        def guarded(g):
            act = np.flatnonzero(g)
            if not act.size:
                return fn(g)
            wgs = np.unique(act // 128)
            if self.n_inflight:
                for wg in wgs:
                    live = self.wg_live[wg] & names
                    if live:
                        x = sorted(live)[0]
                        role = "an A operand" if any(x in rec[4] for rec in self.wg_recs[wg]) else "an accumulator"
                        raise EmuError(f"{what}: accesses {x}, {role} of an in-flight "
                                       f"wgmma.mma_async of warpgroup {wg} (wgmma.wait_group first)")
            fn(g)
            self.wg_need_fence[wgs] = True
        return guarded

    def _unpark(self, sel):
        for b in np.unique(self.park_on[sel]):
            if b >= 0:
                self.mbs[b].nwait -= int(np.count_nonzero(sel & (self.park_on == b)))
        self.parked[sel] = False
        self.park_kind[sel] = 0
        self.park_on[sel] = -1
        self.park_bid[sel] = -1
        self.n_parked -= int(np.count_nonzero(sel))

    def _all_waiting(self, pc, alive):
        """Every live thread waits: release test_wait pollers (their false result
        stands), or a bar.sync every live thread reached; else a deadlock."""
        fn = self.f.name
        soft = alive & (self.park_kind == 2)
        if np.count_nonzero(soft):
            self._unpark(soft)
            return
        bar = alive & (self.park_kind == 3)
        if self.C == 1 and np.count_nonzero(bar) == np.count_nonzero(alive):   # (clusters: _cta_barsync)
            pcs = np.unique(pc[alive])
            if pcs.size == 1:
                bids = np.unique(self.park_bid[alive])
                if bids.size > 1:
                    raise EmuError(f"{fn}: deadlock: the block's threads wait at one bar.sync (line "
                                   f"{self.code[int(pcs[0])][5].line}) naming different barriers {bids.tolist()}")
                self._unpark(alive.copy())
                return
            lines = ", ".join(str(self.code[q][5].line) for q in pcs)
            raise EmuError(f"{fn}: bar.sync reached by a subset of the block: live threads wait at different "
                           f"bar.sync instructions (lines {lines})")
        parts = []
        wait = alive & (self.park_kind == 1)
        for b in np.unique(self.park_on[wait]):
            tt = np.flatnonzero(wait & (self.park_on == b))
            q = int(self.park_par[tt[0]])
            who = f"thread {self._who(tt[0])}" if tt.size == 1 else f"{tt.size} threads ({tt[0]}..{tt[-1]})"
            parts.append(f"{who} wait (line {int(self.park_line[tt[0]])}) for the phase of parity {q} of "
                         f"{self._mb_name(int(b))} ({self._mb_state(int(b))})")
        if np.count_nonzero(bar):
            for key in np.unique(self.park_bid[bar]).tolist():
                tt = np.flatnonzero(bar & (self.park_bid == key))
                rk = f" of rank {key // 16}" if self.C > 1 else ""
                parts.append(f"{tt.size} threads ({tt[0]}..{tt[-1]}) wait at bar.sync{rk} (line "
                             f"{int(self.park_line[tt[0]])})")
        nb = alive & (self.park_kind == 4)
        for key in np.unique(self.park_bid[nb]).tolist():
            tt = np.flatnonzero(nb & (self.park_bid == key))
            bid, rk = key % 16, (f" of rank {key // 16}" if self.C > 1 else "")
            parts.append(f"{tt.size} threads ({tt[0]}..{tt[-1]}) wait at barrier {bid}{rk} (bar.sync {bid}, "
                         f"{self.nb_exp[key]}; line {int(self.park_line[tt[0]])}): {self.nb_arr[key]} of "
                         f"{self.nb_exp[key]} threads arrived")
        cw = alive & (self.park_kind == 5)
        if np.count_nonzero(cw):
            tt = np.flatnonzero(cw)
            n_arr = int(np.count_nonzero(alive & (self.cl_arr == self.cl_phase)))
            parts.append(f"{tt.size} threads ({tt[0]}..{tt[-1]}) wait at barrier.cluster.wait (line "
                         f"{int(self.park_line[tt[0]])}): {n_arr} of the cluster's {int(np.count_nonzero(alive))} live "
                         f"threads arrived")
        raise EmuError(f"{fn}: deadlock: every live thread waits and nothing can complete their barriers: "
                       + "; ".join(parts))

    def _exit_checks(self, g, ins):
        fn = self.f.name
        act = np.flatnonzero(g)
        if self.n_inflight:
            for wg in np.unique(act // 128):
                if self.wg_recs[wg]:
                    t = int(act[act // 128 == wg][0])
                    raise EmuError(f"{fn}: line {ins.line}: thread {t} exits while warpgroup {wg} has "
                                   f"wgmma.mma_async operations not waited for (wgmma.commit_group and "
                                   f"wgmma.wait_group before exiting)")
        bar = self.parked & (self.park_kind == 3)
        if self.C > 1 and np.count_nonzero(bar):   # the barrier of the exiting threads' CTAs
            bar &= np.isin(self.rank_of, np.unique(self.rank_of[act]))
        if np.count_nonzero(bar):
            tt = np.flatnonzero(bar)
            raise EmuError(f"{fn}: bar.sync reached by a subset of the block: thread {self._who(act[0])} exits (line "
                           f"{ins.line}) while threads {tt[0]}..{tt[-1]} wait at bar.sync (line "
                           f"{int(self.park_line[tt[0]])})")

    def _block_end_checks(self):
        for b, mb in enumerate(self.mbs):
            if mb.tx_bytes and self.mb_at[mb.addr >> 3] == b:
                raise EmuError(f"{self.f.name}: the block exits while the phase of {self._mb_name(b)} that TMA copies "
                               f"({mb.tx_bytes} bytes) complete on has not completed ({self._mb_state(b)})")

    def _c_setmaxnreg(self, ins):
        if ins.mods[:1] not in (["inc"], ["dec"]) or "sync" not in ins.mods or "aligned" not in ins.mods:
            raise EmuError("setmaxnreg.{inc,dec}.sync.aligned.u32 imm")
        self._need_sm90(ins, arch_a=True)
        n = _int_lit(ins.args[0])
        if n % 8 or not 24 <= n <= 256:
            raise EmuError(f"setmaxnreg count {n} must be a multiple of 8 in 24..256")
        what = f"{self.f.name}: {ins.text}"

        def setmaxnreg(g):
            self._aligned_wgs(g, what)
        return setmaxnreg

    def _c_elect(self, ins):
        if ins.mods != ["sync"] or len(ins.args) != 2:
            raise EmuError("elect.sync d|p, membermask")
        self._need_sm90(ins)
        d = ins.args[0]
        dd, pd = (x.strip() for x in d.split("|")) if "|" in d else (d.strip(), None)
        wd = self.dst(dd, "b32")
        wp = self.dst(pd, "pred") if pd else None
        M = self.src(ins.args[1], "b32")
        what = f"{self.f.name}: {ins.text}"

        def elect(g):
            if not np.count_nonzero(g):
                return
            words = self._member_check(g, M, what)
            m = (words[self.warp_of] & M.astype(np.uint64)).astype(np.uint64)
            low = m & (~m + np.uint64(1))              # lowest set bit
            leader = np.zeros(self.ntp, np.uint32)
            nz = low != 0
            leader[nz] = np.log2(low[nz].astype(np.float64)).astype(np.uint32)
            wd(leader, g)
            if wp is not None:
                wp(nz & (leader == self.lane), g)
        return elect

    def _c_bfe(self, ins):
        ty = ins.mods[-1] if ins.mods else None
        if ty not in ("u32", "s32", "u64", "s64") or len(ins.mods) != 1:
            raise EmuError("bfe.{u32,s32,u64,s64} d, a, pos, len")
        bits = _BITS[ty]
        A = self.src(ins.args[1], ty)
        P, L = self.src(ins.args[2], "u32"), self.src(ins.args[3], "u32")
        w = self.dst(ins.args[0], ty)
        U = _UNS[bits]

        def bfe(g):
            v = A.view(U).astype(np.uint64)
            pos = (P & np.uint32(0xFF)).astype(np.int64)
            ln = (L & np.uint32(0xFF)).astype(np.int64)
            eff = np.clip(np.minimum(ln, bits - pos), 0, bits)           # bits taken from a
            sh = np.where(pos < bits, v >> np.minimum(pos, bits - 1).astype(np.uint64), np.uint64(0))
            r = sh & _lowmask(eff)
            if ty[0] == "s":   # the sign bit a[min(pos + len - 1, msb)] fills the rest (len > 0)
                sb = (v >> np.minimum(pos + ln - 1, bits - 1).clip(0).astype(np.uint64)) & np.uint64(1)
                fill = (ln > 0) & (sb == 1)
                r = np.where(fill, r | (~_lowmask(eff) & _lowmask(np.full_like(eff, bits))), r)
            w(r.astype(U).view(_NP[ty]), g)
        return bfe

    def _c_bfi(self, ins):
        ty = ins.mods[-1] if ins.mods else None
        if ty not in ("b32", "b64") or len(ins.mods) != 1:
            raise EmuError("bfi.{b32,b64} d, f, b, pos, len")
        bits = _BITS[ty]
        F, B = self.src(ins.args[1], ty), self.src(ins.args[2], ty)
        P, L = self.src(ins.args[3], "u32"), self.src(ins.args[4], "u32")
        w = self.dst(ins.args[0], ty)
        U = _UNS[bits]

        def bfi(g):
            pos = (P & np.uint32(0xFF)).astype(np.int64)
            ln = (L & np.uint32(0xFF)).astype(np.int64)
            eff = np.clip(np.minimum(ln, bits - pos), 0, bits)
            p = np.minimum(pos, bits - 1).astype(np.uint64)
            mask = np.where(eff > 0, _lowmask(eff) << p, np.uint64(0))
            f = F.astype(np.uint64) << p
            r = (B.astype(np.uint64) & ~mask) | (f & mask)
            w(r.astype(U), g)
        return bfi

    # ------------------------------------------------------------------ integer / float ALU
    def _c_add(self, ins):
        return self._alu(ins)

    _c_sub = _c_mul = _c_mad = _c_fma = _c_div = _c_rem = _c_min = _c_max = _c_add
    _c_and = _c_or = _c_xor = _c_not = _c_shl = _c_shr = _c_neg = _c_abs = _c_add
    _c_rcp = _c_sqrt = _c_rsqrt = _c_ex2 = _c_lg2 = _c_sin = _c_cos = _c_tanh = _c_add
    _c_popc = _c_clz = _c_cnot = _c_add

    def _alu(self, ins):
        op, mods, args = ins.op, ins.mods, ins.args
        ty = mods[-1] if mods else None
        if ty not in _BITS:
            raise EmuError("missing or unknown type")
        c = _cls(ty)
        if c == "f":
            return self._falu(ins)
        if c == "pred":
            if op not in ("and", "or", "xor", "not"):
                raise EmuError("unsupported predicate op")
            srcs = [self.src(a, "pred") for a in args[1:]]
            w = self.dst(args[0], "pred")
            f = {"and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b}.get(op)
            if op == "not":
                return lambda g: w(~srcs[0], g)
            return lambda g: w(f(srcs[0], srcs[1]), g)
        bits = _BITS[ty]
        if bits not in (16, 32, 64):
            raise EmuError("unsupported integer width")
        signed = c == "s"
        U, S = _UNS[bits], _SGN[bits]
        T = S if signed else U
        what = f"{self.f.name}: {ins.text}"
        mode = next((m for m in mods if m in ("lo", "hi", "wide")), None)
        sat = "sat" in mods
        if op in ("mul", "mad") and mode is None:
            raise EmuError(f"{op} on integers needs .lo, .hi or .wide")
        if mode == "wide" and bits == 64:
            raise EmuError(".wide needs a 16- or 32-bit type")
        dty = (("s" if signed else "u") + str(2 * bits)) if mode == "wide" else ty
        w = self.dst(args[0], dty)
        if op in ("shl", "shr"):
            if c == "s" and op == "shl":
                raise EmuError("shl takes .b16/.b32/.b64")
            A = self.src(args[1], ty)
            Bsh = self.src(args[2], "u32")
            if op == "shl":
                def shl(g):
                    b = np.minimum(Bsh, np.uint32(bits)).astype(np.uint64)
                    v = A.astype(np.uint64)
                    r = np.where(b >= 64, np.uint64(0), v << np.minimum(b, np.uint64(63)))
                    w(r.astype(U), g)
                return shl
            if signed:
                def sar(g):
                    b = np.minimum(Bsh, np.uint32(bits - 1)).astype(np.int64)
                    w((A.astype(np.int64) >> b).astype(S), g)
                return sar

            def shr(g):
                b = np.minimum(Bsh, np.uint32(bits)).astype(np.uint64)
                v = A.astype(U).astype(np.uint64)
                r = np.where(b >= 64, np.uint64(0), v >> np.minimum(b, np.uint64(63)))
                w(r.astype(U), g)
            return shr
        if op in ("not", "cnot", "neg", "abs", "popc", "clz"):
            A = self.src(args[1], ty)
            if op == "not":
                if c != "b":
                    raise EmuError("not takes a bit-size type")
                return lambda g: w(~A, g)
            if op == "cnot":
                return lambda g: w((A == 0).astype(T), g)
            if op in ("neg", "abs"):
                if not signed:
                    raise EmuError(f"{op} takes a signed type")
                return (lambda g: w(-A, g)) if op == "neg" else (lambda g: w(np.where(A < 0, -A, A), g))
            if op == "popc":
                w = self.dst(args[0], "u32")
                return lambda g: w(np.bitwise_count(A).astype(np.uint32), g)
            w = self.dst(args[0], "u32")

            def clz(g):
                v = A.astype(U).astype(np.uint64)
                n = np.zeros(self.ntp, np.uint32)
                cur = v.copy()
                for _ in range(bits):
                    z = cur == 0
                    if z.all():
                        break
                    n += (~z).astype(np.uint32)
                    cur >>= np.uint64(1)
                w(np.uint32(bits) - n, g)
            return clz
        if op in ("and", "or", "xor"):
            if c != "b":
                raise EmuError(f"{op} takes a bit-size type")
            A, B = self.src(args[1], ty), self.src(args[2], ty)
            f = {"and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}[op]
            return lambda g: w(f(A, B), g)
        if c == "b" and op not in ("add", "sub"):
            raise EmuError(f"{op} needs a .u or .s type")
        if mode == "wide":
            A, B = self.src(args[1], ty), self.src(args[2], ty)
            W = _SGN[2 * bits] if signed else _UNS[2 * bits]
            if op == "mul":
                return lambda g: w(A.astype(W) * B.astype(W), g)
            Cw = self.src(args[3], dty)
            return lambda g: w(A.astype(W) * B.astype(W) + Cw, g)
        if op in ("add", "sub"):
            A, B = self.src(args[1], ty), self.src(args[2], ty)
            if sat:
                if ty != "s32":
                    raise EmuError(".sat needs .s32")
                f = np.add if op == "add" else np.subtract
                return lambda g: w(np.clip(f(A.astype(np.int64), B.astype(np.int64)), -2 ** 31, 2 ** 31 - 1), g)
            return (lambda g: w(A + B, g)) if op == "add" else (lambda g: w(A - B, g))
        if op in ("mul", "mad"):
            A, B = self.src(args[1], ty), self.src(args[2], ty)
            Cm = self.src(args[3], ty) if op == "mad" else None
            if mode == "lo":
                if op == "mul":
                    return lambda g: w(A * B, g)
                return lambda g: w(A * B + Cm, g)
            # .hi
            if bits < 64:
                W = np.int64 if signed else np.uint64

                def hi(A=A, B=B):
                    return ((A.astype(W) * B.astype(W)) >> W(bits)).astype(T)
            else:
                def hi(A=A, B=B):
                    out = np.array([(int(x) * int(y)) >> 64 for x, y in zip(A, B)], dtype=object)
                    return np.array([int(v) & (2 ** 64 - 1) for v in out], np.uint64).view(T)
            if op == "mul":
                return lambda g: w(hi(), g)
            if sat:
                raise EmuError("mad.hi.sat unsupported")
            return lambda g: w(hi() + Cm, g)
        if op in ("div", "rem"):
            A, B = self.src(args[1], ty), self.src(args[2], ty)

            def divrem(g):
                act = g
                if np.count_nonzero((B[act] == 0)):
                    raise EmuError(f"{what}: integer division by zero (unspecified result)")
                b = np.where(B == 0, T(1), B)
                if signed:
                    a64, b64 = A.astype(np.int64), b.astype(np.int64)
                    if bits == 64:
                        a64, b64 = A.astype(object), b.astype(object)
                        q = np.array([abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1) for x, y in zip(a64, b64)],
                                     dtype=object)
                        r = a64 - q * b64
                        res = q if op == "div" else r
                        w(np.array([int(v) & (2 ** 64 - 1) for v in res], np.uint64).view(S), g)
                        return
                    q = np.abs(a64) // np.abs(b64)
                    q = np.where((a64 < 0) != (b64 < 0), -q, q)
                    res = q if op == "div" else a64 - q * b64
                    w(res.astype(S), g)
                else:
                    w((A // b) if op == "div" else (A % b), g)
            return divrem
        if op in ("min", "max"):
            A, B = self.src(args[1], ty), self.src(args[2], ty)
            f = np.minimum if op == "min" else np.maximum
            if "relu" in mods:
                return lambda g: w(np.maximum(f(A, B), T(0)), g)
            return lambda g: w(f(A, B), g)
        raise EmuError("unsupported integer op")

    def _falu(self, ins):
        op, mods, args = ins.op, ins.mods, ins.args
        ty = mods[-1]
        if ty not in ("f32", "f64"):
            raise EmuError("only .f32 / .f64 floating point")
        if ty == "f64" and op not in ("add", "sub", "mul", "div", "neg", "abs", "min", "max"):
            raise EmuError(f"{op}.f64 not supported")
        F = _NP[ty]
        ftz = "ftz" in mods
        sat = "sat" in mods
        approx = "approx" in mods or "full" in mods
        rnd = [m for m in mods if m in ("rn", "rz", "rm", "rp")]
        if rnd and rnd[0] != "rn":
            raise EmuError(f"rounding mode .{rnd[0]} not supported")
        nsrc = {"add": 2, "sub": 2, "mul": 2, "fma": 3, "mad": 3, "div": 2, "min": None, "max": None}.get(op, 1)
        srcs = [self.src(a, ty) for a in args[1:]]
        if nsrc is not None and len(srcs) != nsrc:
            raise EmuError(f"{op} takes {nsrc} sources")
        if op in ("div", "rcp", "sqrt") and not (rnd or approx):
            raise EmuError(f"{op}.{ty} needs .rn or .approx")
        if op in ("rsqrt", "ex2", "lg2", "sin", "cos", "tanh") and "approx" not in mods:
            raise EmuError(f"{op} needs .approx")
        if op == "tanh" and ftz:
            raise EmuError("tanh.approx has no .ftz")
        if op == "mad" and not rnd:
            raise EmuError("mad.f32 needs a rounding modifier (it is fma)")
        w = self.dst(args[0], ty, canon=True)
        if ty == "f64":
            w64 = self.dst(args[0], ty)

        def inputs():
            if ftz:
                return [_ftz(s) for s in srcs]
            return srcs

        def out(r, g):
            r = np.asarray(r)
            if ty == "f32":
                r = r.astype(np.float32)
                if ftz:
                    r = _ftz(r)
                if sat:
                    r = np.where(r != r, np.float32(0), np.clip(r, np.float32(0), np.float32(1)))
                w(r, g)
            else:
                w64(r.astype(np.float64), g)

        if sat and op not in ("add", "sub", "mul", "fma", "mad"):
            raise EmuError(f".sat not supported on {op}")
        if op == "add":
            return lambda g: out(np.add(*inputs()), g)
        if op == "sub":
            return lambda g: out(np.subtract(*inputs()), g)
        if op == "mul":
            return lambda g: out(np.multiply(*inputs()), g)
        if op in ("fma", "mad"):
            return lambda g: out(_fma_f32(*inputs()), g)
        if op == "div":
            if approx:
                full = "full" in mods

                def div_approx(g):
                    a, b = inputs()
                    r = a.astype(np.float64) / b.astype(np.float64)
                    if not full:
                        # computed as a * (1/b): 1/b flushes to zero for |b| > 2^126
                        big = np.isfinite(b) & (np.abs(b) > np.float32(2.0 ** 126))
                        if np.count_nonzero(big):
                            z = np.where(np.isinf(a), np.nan, np.copysign(0.0, r))
                            r = np.where(big, z, r)
                    out(r, g)
                return div_approx
            return lambda g: out(np.divide(*inputs()), g)
        if op in ("min", "max"):
            nan_mode = "NaN" in mods
            if "abs" in mods or "xorsign" in mods:
                raise EmuError(".abs/.xorsign not supported")

            def minmax(g):
                vals = inputs()
                r = vals[0]
                for b in vals[1:]:
                    a = r
                    if op == "min":
                        m = np.where(a < b, a, b)
                    else:
                        m = np.where(a > b, a, b)
                    z = (a == 0) & (b == 0)
                    if np.count_nonzero(z):
                        sa = np.signbit(a)
                        if op == "min":
                            m = np.where(z, np.where(sa, a, b), m)
                        else:
                            m = np.where(z, np.where(sa, b, a), m)
                    na, nb = a != a, b != b
                    if nan_mode:
                        m = np.where(na | nb, F(np.nan), m)
                    else:
                        m = np.where(na, b, np.where(nb, a, m))
                    r = m
                out(r, g)
            return minmax
        if op in ("neg", "abs"):
            self.dst(args[0], ty)
        if op == "neg":
            if ty == "f32":
                A = srcs[0]
                Ab = A.view(np.uint32)

                def neg(g):
                    v = (Ab ^ np.uint32(0x80000000)).view(np.float32)
                    if ftz:
                        v = _ftz(v)
                    np.copyto(self._fdst(args[0]), v, where=g)
                return neg
            return lambda g: out(-srcs[0], g)
        if op == "abs":
            if ty == "f32":
                Ab = srcs[0].view(np.uint32)

                def fabs(g):
                    v = (Ab & np.uint32(0x7FFFFFFF)).view(np.float32)
                    if ftz:
                        v = _ftz(v)
                    np.copyto(self._fdst(args[0]), v, where=g)
                return fabs
            return lambda g: out(np.abs(srcs[0]), g)
        if op == "rcp":
            if approx:
                return lambda g: out(1.0 / inputs()[0].astype(np.float64), g)
            return lambda g: out(np.float32(1) / inputs()[0], g)
        if op == "sqrt":
            if approx:
                return lambda g: out(np.sqrt(inputs()[0].astype(np.float64)), g)
            return lambda g: out(np.sqrt(inputs()[0]), g)
        f64 = {"rsqrt": lambda x: 1.0 / np.sqrt(x), "ex2": np.exp2, "lg2": np.log2, "sin": np.sin,
               "cos": np.cos, "tanh": np.tanh}[op]
        return lambda g: out(f64(inputs()[0].astype(np.float64)), g)

    def _fdst(self, name):
        if name not in self.regs:
            raise EmuError(f"undeclared register {name}")
        return self.regs[name].view(np.float32)

    # ------------------------------------------------------------------ setp / cvt
    def _c_setp(self, ins):
        mods = ins.mods
        ty = mods[-1]
        cmp = mods[0]
        boolop = next((m for m in mods[1:-1] if m in ("and", "or", "xor")), None)
        ftz = "ftz" in mods
        c = _cls(ty)
        d = ins.args[0]
        pd = None
        if "|" in d:
            d, pd = [x.strip() for x in d.split("|")]
        wp = self.dst(d, "pred")
        wq = self.dst(pd, "pred") if pd else None
        A, B = self.src(ins.args[1], ty), self.src(ins.args[2], ty)
        Cp = None
        if boolop:
            if len(ins.args) != 4:
                raise EmuError("setp with a boolean op takes a predicate c")
            Cp = self.pred_src(ins.args[3])
        elif len(ins.args) != 3:
            raise EmuError("setp takes p[|q], a, b")
        ordered = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
                   "gt": np.greater, "ge": np.greater_equal}
        unsigned_alias = {"lo": "lt", "ls": "le", "hi": "gt", "hs": "ge"}
        if c == "f":
            if cmp not in ordered and cmp not in ("equ", "neu", "ltu", "leu", "gtu", "geu", "num", "nan"):
                raise EmuError(f"bad float comparison {cmp}")

            def cmpf():
                a, b = (_ftz(A), _ftz(B)) if ftz else (A, B)
                un = (a != a) | (b != b)
                if cmp == "num":
                    return ~un
                if cmp == "nan":
                    return un
                if cmp in ordered:
                    return ordered[cmp](a, b) & ~un
                return ordered[cmp[:-1]](a, b) | un
            t_fn = cmpf
        else:
            if ftz:
                raise EmuError(".ftz applies only to .f32 comparisons")
            if cmp in unsigned_alias:
                if c == "s":
                    raise EmuError(f"{cmp} is an unsigned comparison")
                cmp = unsigned_alias[cmp]
            if cmp not in ordered:
                raise EmuError(f"bad integer comparison {cmp}")
            if c == "b" and cmp not in ("eq", "ne"):
                raise EmuError("bit-size types compare only eq/ne")
            f = ordered[cmp]
            t_fn = lambda: f(A, B)  # noqa: E731

        def setp(g):
            t = t_fn()
            if Cp is not None:
                cv = ~Cp[0] if Cp[1] else Cp[0]
                f2 = {"and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor}[boolop]
                p, q = f2(t, cv), f2(~t, cv)
            else:
                p, q = t, ~t
            wp(p, g)
            if wq is not None:
                wq(q, g)
        return setp

    def _c_cvt(self, ins):
        mods = ins.mods
        types = [m for m in mods if m in _BITS]
        if len(types) != 2:
            raise EmuError("cvt needs .dtype.atype")
        dty, aty = types
        rnd = next((m for m in mods if m in ("rn", "rz", "rm", "rp", "rna", "rs")), None)
        irnd = next((m for m in mods if m in ("rni", "rzi", "rmi", "rpi")), None)
        ftz = "ftz" in mods
        sat = "sat" in mods
        relu = "relu" in mods
        satfinite = "satfinite" in mods
        dc, ac = _cls(dty), _cls(aty)
        if dty in ("bf16", "f16") or dty in ("bf16x2", "f16x2"):
            dc = "f"
        if aty == "bf16":
            ac = "f"
        d = ins.args[0]
        # packed pair: cvt.rn.bf16x2.f32 d, a, b -> d[31:16] = cvt(a), d[15:0] = cvt(b)
        if dty in ("bf16x2", "f16x2"):
            if aty != "f32" or len(ins.args) != 3:
                raise EmuError(f"cvt.{dty}.f32 takes d, a, b")
            if rnd not in ("rn", "rz"):
                raise EmuError(f"cvt.{dty} needs .rn or .rz")
            A, B = self.src(ins.args[1], "f32"), self.src(ins.args[2], "f32")
            w = self.dst(d, "b32")
            half = dty[:-2]

            def cvt2(g):
                hi = self._to_half(A, half, rnd, relu, satfinite).astype(np.uint32)
                lo = self._to_half(B, half, rnd, relu, satfinite).astype(np.uint32)
                w((hi << np.uint32(16)) | lo, g)
            return cvt2
        if len(ins.args) != 2:
            raise EmuError("cvt takes d, a")
        A = self.src(ins.args[1], aty, relaxed=True)
        w = self.dst(d, dty if dty not in ("bf16", "f16") else "b16", relaxed=True)
        what = f"{self.f.name}: {ins.text}"
        if dty in ("bf16", "f16"):
            if ac != "f":
                if rnd != "rn":
                    raise EmuError("int -> half conversions need .rn")

                def i2h(g):
                    v = A.astype(np.float64).astype(np.float32)  # exact for |v| < 2^24 (16-bit ints)
                    w(self._to_half(v, dty, "rn", relu, satfinite), g)
                return i2h
            if aty == "f32":
                if rnd not in ("rn", "rz"):
                    raise EmuError(f"cvt.{dty}.f32 needs .rn or .rz")
                return lambda g: w(self._to_half(A, dty, rnd, relu, satfinite), g)
            if aty == dty:
                return lambda g: w(A, g)
            raise EmuError("unsupported half conversion")
        if aty in ("bf16", "f16") and dty in ("f32", "f64"):
            if aty == "bf16":
                return lambda g: w((A.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(_NP[dty]), g)
            return lambda g: w(A.astype(_NP[dty]), g)
        if dc == "f" and ac == "f":   # f32 <-> f64, f32 -> f32 (integer rounding)
            if dty == aty:
                if irnd:
                    f = {"rni": np.rint, "rzi": np.trunc, "rmi": np.floor, "rpi": np.ceil}[irnd]

                    def fround(g):
                        v = _ftz(A) if ftz else A
                        r = f(v)
                        if ftz:
                            r = _ftz(r)
                        w(_canon(r) if dty == "f32" else r, g)
                    return fround
                if sat:
                    return lambda g: w(np.where(A != A, 0, np.clip(_ftz(A) if ftz else A, 0, 1)).astype(A.dtype), g)
                return lambda g: w(_ftz(A) if ftz else A, g)
            if dty == "f32":
                if rnd != "rn":
                    raise EmuError("cvt.f32.f64 needs .rn")
                return lambda g: w(_canon(A.astype(np.float32)), g)
            return lambda g: w((_ftz(A) if ftz else A).astype(np.float64), g)
        if dc == "f":                 # int -> float
            if rnd != "rn":
                raise EmuError("int -> float conversions need .rn (others not supported)")
            if _BITS[aty] == 64 and dty == "f32":
                def i64f(g):
                    w(np.array([_round_int_to_f32(int(x)) for x in A], np.float32), g)
                return i64f
            return lambda g: w(A.astype(np.float64).astype(_NP[dty]), g)
        if ac == "f":                 # float -> int
            if not irnd:
                raise EmuError("float -> int conversions need .rni/.rzi/.rmi/.rpi")
            f = {"rni": np.rint, "rzi": np.trunc, "rmi": np.floor, "rpi": np.ceil}[irnd]
            bits = _BITS[dty]
            lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if dc == "s" else (0, 2 ** bits - 1)
            nanv = 0 if not (bits == 64 and aty == "f64") else 1 << (bits - 1)

            def f2i(g):
                v = (_ftz(A) if ftz else A).astype(np.float64)
                r = f(v)
                nan = r != r
                r = np.clip(np.where(nan, 0, r), lo, hi)
                if bits == 64:
                    out = np.array([int(x) for x in r], dtype=object)
                    out = np.array([int(x) & (2 ** 64 - 1) for x in out], np.uint64)
                    out = np.where(nan, np.uint64(nanv), out)
                    w(out.view(_NP[dty]), g)
                else:
                    out = np.where(nan, nanv, r).astype(np.int64)
                    w(out.astype(_NP[dty]) if dc == "s" else (out & (2 ** bits - 1)).astype(_NP[dty]), g)
            return f2i
        # int -> int: chop the source to its type, extend per its signedness,
        # chop to the destination type (.sat clamps), extend into the register
        ab, db = _BITS[aty], _BITS[dty]
        if sat:
            lo, hi = (-(2 ** (db - 1)), 2 ** (db - 1) - 1) if dc == "s" else (0, 2 ** db - 1)

            def i2i_sat(g):
                v = A.astype(np.int64) if not (ac == "u" and ab == 64) else A.astype(object)
                r = np.clip(v, lo, hi)
                w(np.array(r).astype(np.int64).astype(_NP[dty]) if db < 64 else
                  np.array([int(x) & (2 ** 64 - 1) for x in r], np.uint64).view(_NP[dty]), g)
            return i2i_sat
        del what
        return lambda g: w(A.astype(_NP[dty]), g)

    def _to_half(self, x, ty, rnd, relu, satfinite):
        """f32 -> bf16 / f16 bits."""
        x = np.asarray(x, np.float32)
        if relu:
            x = np.where(x != x, x, np.maximum(x, np.float32(0)))
        if ty == "bf16":
            if rnd == "rn":
                h = f32_to_bf16_bits(x)
            else:  # rz: truncate
                h = np.where(x != x, np.uint16(0x7FFF), (x.view(np.uint32) >> np.uint32(16)).astype(np.uint16))
            if satfinite:
                inf = (h & np.uint16(0x7FFF)) == np.uint16(0x7F80)
                h = np.where(inf, (h & np.uint16(0x8000)) | np.uint16(0x7F7F), h)
            return h.astype(np.uint16)
        if rnd != "rn":
            raise EmuError("cvt.rz.f16 not supported")
        h = x.astype(np.float16)
        if satfinite:
            h = np.where(np.isinf(h), np.copysign(np.float16(65504), h), h)
        bits = h.view(np.uint16)
        return np.where(x != x, np.uint16(0x7FFF), bits).astype(np.uint16)

    def _c_prmt(self, ins):
        if ins.mods != ["b32"]:
            raise EmuError("only prmt.b32 (default mode)")
        A, B, C = (self.src(a, "b32") for a in ins.args[1:4])
        w = self.dst(ins.args[0], "b32")

        def prmt(g):
            src = (B.astype(np.uint64) << np.uint64(32)) | A.astype(np.uint64)
            r = np.zeros(self.ntp, np.uint64)
            for i in range(4):
                sel = (C.astype(np.uint64) >> np.uint64(4 * i)) & np.uint64(0xF)
                byte = (src >> ((sel & np.uint64(7)) * np.uint64(8))) & np.uint64(0xFF)
                byte = np.where(sel & np.uint64(8), np.where(byte & np.uint64(0x80), np.uint64(0xFF), np.uint64(0)),
                                byte)
                r |= byte << np.uint64(8 * i)
            w(r.astype(np.uint32), g)
        return prmt

    def _c_lop3(self, ins):
        if ins.mods != ["b32"]:
            raise EmuError("only lop3.b32")
        A, B, C = (self.src(a, "b32") for a in ins.args[1:4])
        lut = _int_lit(ins.args[4]) & 0xFF
        w = self.dst(ins.args[0], "b32")

        def lop3(g):
            r = np.zeros(self.ntp, np.uint32)
            for i in range(8):
                if lut >> i & 1:
                    r |= (A if i & 4 else ~A) & (B if i & 2 else ~B) & (C if i & 1 else ~C)
            w(r, g)
        return lop3

    # ------------------------------------------------------------------ run
    def launch(self, mem, grid, params, max_steps, check_nc=True):
        self.mem = mem
        self.nc_read = None
        self.g_written = None
        for (ty, nm), v in zip(self.f.params, params):
            off, _ = self.param_off[nm]
            if ty == "tmap":
                if isinstance(v, TensorMap):
                    b = v.encode()
                elif isinstance(v, (bytes, bytearray, np.ndarray)) and len(bytes(v)) == 128:
                    b = bytes(v)
                else:
                    raise EmuError(f"{self.f.name}: parameter {nm} is a tensor map: pass a TensorMap or 128 bytes, "
                                   f"not {type(v).__name__}")
                self.pbuf[off:off + 128] = np.frombuffer(b, np.uint8)
                continue
            if isinstance(v, (TensorMap, bytes, bytearray)):
                raise EmuError(f"{self.f.name}: parameter {nm} is a .{ty}, not a tensor map")
            sz = _BITS[ty] // 8
            if _cls(ty) == "f":
                b = np.array([v], _NP[ty]).view(np.uint8)
            else:
                b = np.array([int(v) & ((1 << (8 * sz)) - 1)], _UNS[8 * sz]).view(np.uint8)
            self.pbuf[off:off + sz] = b
        ncl = tuple(g // c for g, c in zip(grid, self.cluster))
        for arrs, vals in ((self.nctaid_arrays, grid), (self.nclusterid_arrays, ncl)):
            for arr, n in zip(arrs, vals):
                arr.setflags(write=True)
                arr.fill(n)
                arr.setflags(write=False)
        ex = self.special_pred["%is_explicit_cluster"]
        ex.setflags(write=True)
        ex.fill(self.explicit_cluster)
        ex.setflags(write=False)
        with np.errstate(all="ignore"):
            for gz in range(ncl[2]):
                for gy in range(ncl[1]):
                    for gx in range(ncl[0]):
                        self.run_block((gx, gy, gz), max_steps)
        if check_nc and self.nc_read is not None and self.g_written is not None:
            both = self.nc_read & self.g_written
            if both.any():
                raise EmuError(f"{self.f.name}: global bytes read with ld.global.nc are written by the same "
                               f"kernel (ld.global.nc needs read-only data): {np.flatnonzero(both)[:4]}")

    def run_block(self, clid, max_steps):
        """Run one block (a cluster launch: the cluster `clid`, all its CTAs)."""
        for arr, v in zip(self.clusterid_arrays, clid):
            arr.setflags(write=True)
            arr.fill(v)
            arr.setflags(write=False)
        for arr, v, n, loc in zip(self.ctaid_arrays, clid, self.cluster, self.cl_ctaid):
            arr.setflags(write=True)
            if self.C == 1:
                arr.fill(v)
            else:
                np.add(loc, np.uint32(v * n), out=arr)
            arr.setflags(write=False)
        if self.C == 1:
            blk = f"[block {clid}]"
        else:
            cx, cy, cz = self.cluster
            blocks = [(clid[0] * cx + r % cx, clid[1] * cy + r // cx % cy, clid[2] * cz + r // (cx * cy))
                      for r in range(self.C)]
            blk = f"[cluster {clid}: blocks {', '.join(f'{b} (rank {r})' for r, b in enumerate(blocks))}]"
        self.gone.fill(False)
        self._cl_reset()
        if self.C > 1:
            self.racc = np.full((self.C, self.nw), -1, np.int32)   # latest access of each warp to each CTA's memory
            self.racc_what = {}
        for r in self.regs.values():
            r.fill(0)
        self.smem.fill(0xFF)
        self.pend.fill(-1)
        self.vis.fill(-1)
        self.vis_dirty = False
        self.npend = 0
        self.cp_recs = []
        self.cp_seq.fill(0)
        self._hb_all()     # the block's start: the race records of earlier blocks go stale
        self.wepoch.fill(0)
        self._async_reset()
        if self.pxy_on:
            self.pxy_w.fill(-1)
            self.pxy_t.fill(0)
            self.pxy_dirty = False
        alive = self.alive
        np.copyto(alive, self.real)
        pc = self.pc
        parked = self.parked
        code = self.code
        ncode = len(code)
        n_alive = int(np.count_nonzero(alive))
        conv, cur = True, 0
        steps = 0
        p = 0
        f = self.f
        try:
            while n_alive:
                steps += 1
                if steps > max_steps:
                    raise EmuError(f"{f.name}: step limit ({max_steps}) exceeded")
                if conv:   # every live thread at `cur`, none waiting
                    p = cur
                    group = alive
                else:
                    if self.n_parked:
                        run = alive & ~parked
                        if not np.count_nonzero(run):
                            self._all_waiting(pc, alive)
                            continue
                    else:
                        run = alive
                    p = int(pc[run].min())
                    group = run & (pc == p)
                    if np.count_nonzero(group) == n_alive:
                        conv, cur, group = True, p, alive
                if p >= ncode:
                    raise EmuError(f"{f.name}: threads ran past the end of the program without ret")
                kind, fn, gv, gneg, tgt, ins = code[p]
                if gv is None:
                    g = group
                elif gneg:
                    g = group & ~gv
                else:
                    g = group & gv
                if kind == _K_OP:
                    fn(g)
                    if conv:
                        cur = p + 1
                    else:
                        pc[group] = p + 1
                elif kind == _K_WAIT:   # an mbarrier wait: may leave threads waiting
                    if fn(g) and conv:
                        pc[alive] = p + 1
                        conv = False
                    elif conv:
                        cur = p + 1
                    else:
                        pc[group] = p + 1
                elif kind == _K_BRA:
                    if gv is not None and fn:  # bra.uni: the predicate must be warp-uniform
                        gw, grw = g.reshape(self.nw, 32), group.reshape(self.nw, 32)
                        if (gw.any(1) & (gw != grw).any(1)).any():
                            raise EmuError(f"{f.name}: line {ins.line}: `{ins.text}`: bra.uni with a predicate "
                                           f"that differs within a warp")
                    if conv:
                        if gv is None:
                            cur = tgt
                        else:
                            ng = np.count_nonzero(g)
                            if ng == 0:
                                cur = p + 1
                            elif ng == n_alive:
                                cur = tgt
                            else:
                                pc[:] = p + 1
                                pc[g] = tgt
                                conv = False
                    else:
                        pc[group] = p + 1
                        pc[g] = tgt
                elif kind == _K_RET:
                    ng = np.count_nonzero(g)
                    if ng:
                        if self.cp_recs:
                            for tids, _, _, _ in self.cp_recs:
                                if np.count_nonzero(g[tids]):
                                    t = tids[g[tids]][0]
                                    raise EmuError(f"{f.name}: line {ins.line}: thread {t} exits with cp.async "
                                                   f"copies still pending (no cp.async.wait_group/wait_all)")
                        if self.bs_recs:
                            self._bs_exit_checks(g, ins)
                        if self.n_inflight or self.n_parked:
                            self._exit_checks(g, ins)
                        stay = group & ~g
                        if self.C > 1:
                            gx = g.copy()    # (g may be `alive` itself)
                        alive[g] = False
                        n_alive -= ng
                        if self.C > 1:
                            for r in np.unique(self.rank_of[gx]).tolist():
                                if not alive[r * self.ctp:(r + 1) * self.ctp].any():
                                    self._cta_exit(r, gx & (self.rank_of == r))
                        if self.cl_used and n_alive:
                            self._cl_check()
                        if conv:
                            cur = p + 1
                        else:
                            pc[stay] = p + 1
                    else:
                        if conv:
                            cur = p + 1
                        else:
                            pc[group] = p + 1
                else:  # _K_BAR
                    if len(fn) > 3 and fn[3] == "arrive":   # bar.arrive: counted, nobody waits
                        self._nbar(g, fn[:3], ins, arrive=True)
                        if conv:
                            cur = p + 1
                        else:
                            pc[group] = p + 1
                        continue
                    if len(fn) > 3:   # bar.red: the whole block, converged
                        if not conv or self.C > 1 or np.count_nonzero(g) != n_alive or \
                                n_alive != int(np.count_nonzero(self.real)):
                            raise EmuError(f"{f.name}: line {ins.line}: `{ins.text}`: bar.red is supported only "
                                           f"where every thread of the block reaches it together")
                        if fn[2] is None:
                            self._bar_id(fn, g, ins)
                        self._bar_all()
                        fn[3](g)
                        cur = p + 1
                        continue
                    if fn[1] is not None:   # a thread count: the barrier of some warps
                        if self._nbar(g, fn, ins):   # some of them wait (pc advanced, out of the scheduler)
                            if conv:
                                pc[alive] = p + 1
                                conv = False
                            else:
                                pc[group] = p + 1
                        elif conv:
                            cur = p + 1
                        else:
                            pc[group] = p + 1
                        continue
                    if self.C > 1:   # the barrier of each CTA whose threads reach it
                        if conv:
                            group = alive.copy()
                            conv = False
                        pc[group] = p + 1
                        self._cta_barsync(fn, g, group, ins)
                        continue
                    if not conv:
                        ng = np.count_nonzero(g)
                        if not ng:
                            pc[group] = p + 1
                            continue
                        if ng != np.count_nonzero(group):
                            raise EmuError(f"{f.name}: predicated bar.sync taken by only some threads: `{ins.text}`")
                        bid = self._bar_id(fn, g, ins)
                        if self.nb_exp[bid]:
                            raise EmuError(f"{f.name}: line {ins.line}: `{ins.text}`: threads wait at barrier {bid} "
                                           f"for the whole block while {self.nb_arr[bid]} threads wait at it with "
                                           f"thread count {self.nb_exp[bid]} (different thread counts)")
                        # these threads wait here for the others (an error if one of those
                        # exits or waits at another bar.sync: _exit_checks, _all_waiting)
                        self.parked[group] = True
                        self.park_kind[group] = 3
                        self.park_bid[group] = bid
                        self.park_line[group] = ins.line
                        self.n_parked += int(np.count_nonzero(group))
                        continue
                    ng = np.count_nonzero(g)
                    if ng and ng != n_alive:
                        raise EmuError(f"{f.name}: predicated bar.sync taken by only some threads: `{ins.text}`")
                    if ng:
                        if fn[2] is None:
                            self._bar_id(fn, g, ins)
                        self._bar_all()
                    cur = p + 1
            if self.async_on:
                self._block_end_checks()
        except EmuError as e:
            msg = str(e)
            ins = code[p][5]
            plain = f"{f.name}: {ins.text}: "
            where = f"{f.name}: line {ins.line}: `{_short(ins.text)}`: "
            if msg.startswith(plain):
                msg = where + msg[len(plain):]
            elif not msg.startswith(f.name):
                msg = where + msg
            raise EmuError(f"{msg} {blk}") from None
        except Exception as e:  # noqa: BLE001
            ins = code[p][5]
            raise EmuError(f"{f.name}: while executing line {ins.line} `{ins.text}` {blk}: {e!r}") from e


def _round_int_to_f32(v):
    """Exact round-to-nearest-even of a Python int to f32."""
    if v == 0:
        return np.float32(0.0)
    s = -1 if v < 0 else 1
    m = abs(v)
    n = m.bit_length()
    if n <= 24:
        return np.float32(s * m)
    sh = n - 24
    q, r = m >> sh, m & ((1 << sh) - 1)
    half = 1 << (sh - 1)
    if r > half or (r == half and q & 1):
        q += 1
    return np.float32(s * float(q << sh))
