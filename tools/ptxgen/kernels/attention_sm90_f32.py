"""attention_f32_sm90_hd{HD}: f32 attention on Hopper (sm_90a) in 3xTF32 on
wgmma, fed by TMA; for exactly head dim HD (64: SigLIP-base, 72: so400m), the
parameters and semantics of attention_bf16_sm90_hd* (the same signature; its
tensor maps over f32). The host picks it on compute capability 9.0 where f32
attention runs on tensor cores (F32Gemm::Tf32x3). f32-accurate as
attention_f32_hd*: each product x·y is small_x·big_y + big_x·small_y +
big_x·big_y of tf32 parts (frag.py).

Block: 384 threads, persistent like the bf16 kernel (one block an SM walks
  (query block, head, sequence) items, attention_sm90.Item). Warpgroups 0 and 1
  are consumers (warpgroup g: query rows 64g..64g+63 of the item's 128);
  thread 256 is the producer (TMA: Q per item, then K and V tiles of BC = 64
  keys through STAGES = 2 stages); threads 288..383 (warps 9-11) are the
  converters; the rest of warp 8 exits. setmaxnreg: 56 for the producer
  warpgroup, 224 for the consumers.
Why converters: tf32 wgmma reads B only from shared memory, only K-major, and
  as tf32 (the low 13 bits ignored), so B's parts must be in shared memory and
  V must be transposed. Per stage, once its TMA lands (`full`), the converters
  - split K in place into big (±inf, and NaN as x + x, kept) and into its small
    tile (x − big; 0 where x is not finite), 16-byte chunks, conflict-free;
  - write Vᵀ big and small (dims as rows, keys contiguous: K-major for P·V)
    from the V tile, with the keys of every 8 relabelled (position c ↔ key 2c,
    c + 4 ↔ key 2c + 1, so P's accumulator registers are P·V's A fragment as
    they stand: a0..a3 = P(g, 2t), P(g + 8, 2t), P(g, 2t + 1), P(g + 8, 2t + 1))
    and zeros for the keys past kv_len (0·NaN must not reach O): a thread takes
    one dim and four keys of one parity and stores 16 bytes of each part;
  then fence.proxy.async and arrive on the stage's `ready` (count 96).
Shared (dynamic, 1024-aligned): Q [128 rows], then 2 stages of (K, K small,
  V, Vᵀ big, Vᵀ small), then the mbarriers. Q, K and V as TMA lands them: a
  head's columns split as hd = 32·A + 4·C, A atoms of 32 columns (128-byte rows,
  the 128-byte swizzle; tensor maps tmap_q / tmap_k / tmap_v, boxes of 128 or
  64 rows × 32) and C chunks of 4 columns (16-byte rows, no swizzle: wgmma's
  core matrices; tmap_*_tail, boxes of rows × 4). Vᵀ: 2 atoms of 32 keys (HD
  rows of 128 bytes, the 128-byte swizzle). At hd 72: Q 36 KiB, a stage 90 KiB:
  217 KiB with the barriers.
Pipeline: full[s] (count 1 + the K and V bytes), ready[s] (the converters),
  empty[s] (count 256: every consumer thread, once its P·V of the stage
  retired), fullq / emptyq for the one Q buffer (the producer waits for the
  item's last wgmma before loading the next item's Q; its K/V tiles need not
  wait).
Per tile j, warpgroup g (FlashAttention-3's intra-warpgroup order, as the bf16
  kernel): S_j = Q·K_jᵀ in hd/8 k-steps, each a wgmma group of three m64n64k8
  with A from registers (Q's 4 f32 of the step by ldmatrix from the Q tile,
  split in registers: frag.split_tf32_rs; a group's registers stay untouched
  until it retires, so wait_group 1 before the next step's); then
  P_{j−1}·V_{j−1} (8 k-steps × three m64n{HD}k8, one group) is issued and
  the softmax of S_j (scaled by hd^-0.5·log2(e), keys past kv_len −∞, online
  with the −∞ guard) runs while it is on the tensor cores; once it retired,
  the stage j − 1 is released, O rescaled and P_j split (big and small
  registers, small = big·2^-40 where it would be 0, so that 1·inf in V is inf,
  not 1·inf + 0·inf).
End: l summed over the quad, O / l stored as f32 pairs for rows < q_len."""

from types import SimpleNamespace

from ..asm import F32, In, Kernel, Opt, Out, TMap, U32
from ..frag import (TF32_MASK, TINY, fence_proxy_async_shared, ldmatrix_x4, mbar_arrive, mbar_init, mbar_wait,
                    setmaxnreg, split_tf32_rs, split_tf32_specials, warpgroup_ids, wgmma_commit, wgmma_desc,
                    wgmma_desc_sw128, wgmma_fence, wgmma_tf32_rs, wgmma_wait)
from ..lib import ZERO, aligned_dyn_smem
from .attention_common import softmax_state
from .attention_sm90 import Item, Ring, consumer_tiles, producer, rescale_rows, softmax_tile, store_item

HEAD_DIMS = (64, 72)
BR = ROWS = 128                    # query rows per item
BC = 64                            # keys per K/V tile
STAGES = 2
CONSUMERS = 2
CONVERTERS = 96                    # threads 288..383
CONV0 = 128 * CONSUMERS + 32
THREADS = 128 * (CONSUMERS + 1)
PRODUCER_REGS, CONSUMER_REGS = 56, 224
assert 128 * PRODUCER_REGS + 128 * CONSUMERS * CONSUMER_REGS <= 65536
ACOLS, CCOLS = 32, 4               # f32 columns of an atom's 128-byte row, of a chunk's 16
SMEM_LIMIT = 227 * 1024

PARAMS = ([In("q"), In("k"), In("v")]
          + [TMap(f"tmap_{t}", t, (BR if t == "q" else BC, ACOLS), dtype="f32") for t in "qkv"]
          + [TMap(f"tmap_{t}_tail", t, (BR if t == "q" else BC, CCOLS), swizzle=0, dtype="f32") for t in "qkv"]
          + [Out("out"), Opt("cu"), U32("nq"), U32("nk"), U32("heads"), U32("hd"), U32("ldq"), U32("ldkv"),
             U32("ldo"), U32("q_col"), U32("k_col"), U32("v_col"), U32("q_bstride"), U32("q_varlen"),
             F32("scale"), U32("qblocks"), U32("items"), U32("turns")])   # turns: the bf16 kernel's; unused here


def split(hd):
    """(atoms, chunks) of head dim hd: hd = 32·atoms + 4·chunks, chunks even (a
    k-step of 8 reads two)."""
    assert hd % 8 == 0 and 0 < hd <= 128
    return hd // ACOLS, (hd % ACOLS) // CCOLS


def vt_position(key):
    """Where key `key` of a tile lies in a row of Vᵀ (the relabelling)."""
    w = key % 8
    return key - w + (w >> 1) + 4 * (w & 1)


def attention_sm90_f32(HD):  # noqa: N803 (the head dim's name)
    A, C = split(HD)
    QATOM, QCHUNK = BR * 128, BR * 16          # noqa: N806
    KATOM, KCHUNK = BC * 128, BC * 16          # noqa: N806
    Q_BYTES = A * QATOM + C * QCHUNK           # noqa: N806
    T = A * KATOM + C * KCHUNK                 # noqa: N806 (K, K small, V, Vᵀ big, Vᵀ small: each T bytes)
    VT_ATOM = HD * 128                         # noqa: N806 (32 keys of Vᵀ)
    assert T == 2 * VT_ATOM == 4 * BC * HD and T % 1024 == 0 and VT_ATOM % 1024 == 0 and Q_BYTES % 1024 == 0
    K_S, V_RAW, VT_BIG, VT_SMALL = T, 2 * T, 3 * T, 4 * T  # noqa: N806 (offsets in a stage)
    STAGE = 5 * T                              # noqa: N806
    KOFF = Q_BYTES                             # noqa: N806
    BARS = KOFF + STAGES * STAGE               # noqa: N806
    SMEM = 1024 + BARS + 16 + 24 * STAGES      # noqa: N806
    assert SMEM <= SMEM_LIMIT, (HD, SMEM)
    KSTEPS = HD // 8                           # noqa: N806 (of S = Q·Kᵀ)
    name = f"attention_f32_sm90_hd{HD}"
    k = Kernel("attention_sm90_f32", name, THREADS, PARAMS, "attention_sm90",
               doc=f"{name}: Hopper f32 attention in 3xTF32, hd {HD}, wgmma fed by TMA through\n"
                   f"{STAGES} stages of {BC}-key K/V tiles (converter warps split K and transpose V),\n"
                   f"{BR} query rows per item (two consumer warpgroups).",
               dyn_smem=SMEM)
    k.const("ROWS", BR)
    k.const("HD", HD)
    k.const("DYN_SMEM", SMEM)
    out = k.param("out")
    ldo, scale = (k.param(p) for p in ("ldo", "scale"))
    tid = k.reg("u32", "tid")
    k(f"mov.u32 {tid}, %tid.x;")
    p = k.reg("pred", "p")
    t = k.reg("u32", "t")
    # Parameters load where first used: those every role reads, here.
    for pname in ("items", "qblocks", "heads", "hd", "cu", "nq", "nk", "q_bstride", "q_varlen"):
        k.param(pname)

    base, fullq, emptyq, full0, ready0, empty0 = (k.reg("u32", s) for s in (
        "base", "fullq0", "emptyq0", "full0", "ready0", "empty0"))
    aligned_dyn_smem(k, base)
    k(f"add.u32 {fullq}, {base}, {BARS};")
    k(f"add.u32 {emptyq}, {fullq}, 8;")
    k(f"add.u32 {full0}, {emptyq}, 8;")
    k(f"add.u32 {ready0}, {full0}, {8 * STAGES};")
    k(f"add.u32 {empty0}, {ready0}, {8 * STAGES};")

    skip = k.label("no_init")
    k(f"setp.ne.u32 {p}, {tid}, 0;")
    k(f"@{p} bra {skip};")
    mbar_init(k, fullq, 1)
    mbar_init(k, emptyq, 128 * CONSUMERS)
    for s in range(STAGES):
        mbar_init(k, f"{full0}+{8 * s}", 1)
        mbar_init(k, f"{ready0}+{8 * s}", CONVERTERS)
        mbar_init(k, f"{empty0}+{8 * s}", 128 * CONSUMERS)
    k("fence.mbarrier_init.release.cluster;")
    k.place(skip)
    k("bar.sync 0;")

    stage, phase = k.reg("u32", "stage"), k.reg("u32", "phase")
    k(f"mov.u32 {stage}, 0;")
    k(f"mov.u32 {phase}, 0;")

    ring = Ring(k, p, stage, phase, STAGES, base, KOFF, STAGE, full0, empty0)

    def item():
        return Item(k, p, BR, BC, 1, Q_BYTES, base, fullq, emptyq)

    consumer, done = k.label("consumer"), k.label("done")
    k(f"setp.lt.u32 {p}, {tid}, {128 * CONSUMERS};")
    k(f"@{p} bra {consumer};")
    # ---- producer warpgroup ---------------------------------------------------------
    setmaxnreg(k, PRODUCER_REGS, grow=False)
    conv = k.label("converter")
    k(f"setp.gt.u32 {p}, {tid}, {128 * CONSUMERS};")
    k(f"@{p} bra {conv};")
    # Thread 256: TMA.
    maps = {x: (k.param(f"tmap_{x}"), k.param(f"tmap_{x}_tail")) for x in "qkv"}
    producer(k, p, item(), ring, maps, (A, ACOLS, QATOM, C, CCOLS, QCHUNK), (A, ACOLS, KATOM, C, CCOLS, KCHUNK),
             Q_BYTES, V_RAW)
    k(f"bra.uni {done};")

    # ---- converters: threads 288..383 -------------------------------------------------
    k.place(conv)
    k(f"setp.lt.u32 {p}, {tid}, {CONV0};")
    k(f"@{p} bra {done};")
    ct = k.reg("u32", "ctid")
    k(f"sub.u32 {ct}, {tid}, {CONV0};")
    # K: 16-byte chunk ct + 96 i of the tile (each warp 512 contiguous bytes).
    k_chunks = T // 16
    k_passes = -(-k_chunks // CONVERTERS)
    # V: unit u = ct + 96 i is dim u % HD of keys 8G + 2i' + par (i' < 4), G =
    # (u / HD) / 2, par = (u / HD) % 2: 32 neighbouring units are (mostly)
    # neighbouring dims, whose V words share a 128-byte row and whose Vᵀ
    # stores hit distinct 16-byte chunks of 8 rows.
    v_units = HD * (BC // 8) * 2
    v_passes = -(-v_units // CONVERTERS)
    it = item().begin("conv")
    cj = k.reg("u32", "cj")

    def guarded(i, total):
        """The predicate of pass i when the last pass is partial (else None)."""
        if (i + 1) * CONVERTERS <= total:
            return None
        g = k.reg("pred", "cg")
        k(f"setp.lt.u32 {g}, {ct}, {total - i * CONVERTERS};")
        return g

    def convert():
        full, ready, sk, left = (k.reg("u32", s) for s in ("vfull", "vready", "vsk", "vleft"))
        ring.bar(full, full0)
        mbar_wait(k, full, phase)
        ring.tile(sk)
        # Keys of this tile inside the sequence (≥ BC but for the last tile).
        k(f"shl.b32 {left}, {cj}, {BC.bit_length() - 1};")
        k(f"sub.u32 {left}, {it.kl}, {left};")
        ka = k.reg("u32", "vka")
        k(f"shl.b32 {ka}, {ct}, 4;")
        k(f"add.u32 {ka}, {ka}, {sk};")
        for i in range(k_passes):
            g = guarded(i, k_chunks)
            gp = f"@{g} " if g is not None else ""
            x = k.regs_n("b32", "vx", 4)
            off = 16 * CONVERTERS * i
            k(f"{gp}ld.shared.v4.b32 {{{', '.join(map(str, x))}}}, [{ka}+{off}];")
            parts = [split_tf32_specials(k, r, "ks", round_small=False) for r in x]
            k(f"{gp}st.shared.v4.b32 [{ka}+{off}], {{{', '.join(str(q[0]) for q in parts)}}};")
            k(f"{gp}st.shared.v4.b32 [{ka}+{off + K_S}], {{{', '.join(str(q[2]) for q in parts)}}};")
        for i in range(v_passes):
            g = guarded(i, v_units)
            gp = f"@{g} " if g is not None else ""
            u, d, gpar, grp, pr = (k.reg("u32", s) for s in ("vu", "vd", "vgp", "vg", "vpar"))
            k(f"add.u32 {u}, {ct}, {CONVERTERS * i};")
            k(f"rem.u32 {d}, {u}, {HD};")
            k(f"div.u32 {gpar}, {u}, {HD};")
            k(f"shr.u32 {grp}, {gpar}, 1;")
            k(f"and.b32 {pr}, {gpar}, 1;")
            # V word (key 8G + par + 2i', dim d): atoms (d < 32A) at
            # a·KATOM + 128·key + 16·((d % 32 / 4) ^ (key % 8)) + 4·(d % 4), key % 8 =
            # 2i' + par, so the chunk is (cx ^ 2i'), cx = (d % 32 / 4) ^ par; chunks at
            # A·KATOM + (d − 32A) / 4 · KCHUNK + 16·key + 4·(d % 4): the same form with
            # cx = 0 and 16-byte rows. r0 is the word of i' = 0 but its chunk bits.
            r0, cx, rstep, tail, t2 = (k.reg("u32", s) for s in ("vr0", "vcx", "vrs", "vtl", "vt2"))
            tl = k.reg("pred", "vtail")
            k(f"setp.ge.u32 {tl}, {d}, {ACOLS * A};")
            k(f"and.b32 {t2}, {d}, 3;")
            k(f"mad.lo.u32 {r0}, {t2}, 4, {sk};")
            k(f"add.u32 {r0}, {r0}, {V_RAW};")
            k(f"shl.b32 {t2}, {grp}, 3;")
            k(f"add.u32 {t2}, {t2}, {pr};")               # 8G + par: the first key
            # atoms
            k(f"shr.u32 {cx}, {d}, 5;")
            k(f"mad.lo.u32 {rstep}, {cx}, {KATOM}, {r0};")
            k(f"mad.lo.u32 {rstep}, {t2}, 128, {rstep};")
            k(f"bfe.u32 {cx}, {d}, 2, 3;")
            k(f"xor.b32 {cx}, {cx}, {pr};")
            k(f"shl.b32 {cx}, {cx}, 4;")
            # chunks
            k(f"sub.u32 {tail}, {d}, {ACOLS * A};")
            k(f"shr.u32 {tail}, {tail}, 2;")
            k(f"mad.lo.u32 {tail}, {tail}, {KCHUNK}, {r0};")
            k(f"add.u32 {tail}, {tail}, {A * KATOM};")
            k(f"mad.lo.u32 {tail}, {t2}, 16, {tail};")
            k(f"selp.b32 {r0}, {tail}, {rstep}, {tl};")
            k(f"selp.b32 {cx}, 0, {cx}, {tl};")
            k(f"selp.b32 {rstep}, 0, 256, {tl};")         # key + 2: 2 rows of 128 bytes (atoms)
            vals = k.regs_n("b32", "vv", 4)
            for i2 in range(4):
                a, kin = k.reg("u32", "vad"), k.reg("pred", "vin")
                k(f"xor.b32 {a}, {cx}, {32 * i2};")
                k(f"add.u32 {a}, {a}, {r0};")
                if i2:
                    k(f"mad.lo.u32 {a}, {rstep}, {i2}, {a};")
                k(f"{gp}ld.shared.b32 {vals[i2]}, [{a}];")
                # Keys past kv_len: zeros.
                k(f"add.u32 {a}, {t2}, {2 * i2};")
                k(f"setp.lt.u32 {kin}, {a}, {left};")
                k(f"selp.b32 {vals[i2]}, {vals[i2]}, 0, {kin};")
            parts = [split_tf32_specials(k, r, "vs", round_small=False) for r in vals]
            # Vᵀ: atom G / 4, row d, chunk (2 (G % 4) + par) ^ (d % 8): the
            # positions 8G + 4 par + i' of the keys 8G + 2i' + par read above.
            assert all(vt_position(8 * g_ + 2 * i_ + p_) == 8 * g_ + 4 * p_ + i_
                       for g_ in range(BC // 8) for p_ in range(2) for i_ in range(4))
            w, c16 = k.reg("u32", "vw"), k.reg("u32", "vc")
            k(f"shr.u32 {w}, {grp}, 2;")
            k(f"mul.lo.u32 {w}, {w}, {VT_ATOM};")
            k(f"mad.lo.u32 {w}, {d}, 128, {w};")
            k(f"add.u32 {w}, {w}, {sk};")
            k(f"and.b32 {c16}, {grp}, 3;")
            k(f"shl.b32 {c16}, {c16}, 1;")
            k(f"add.u32 {c16}, {c16}, {pr};")
            k(f"xor.b32 {c16}, {c16}, {d};")
            k(f"and.b32 {c16}, {c16}, 7;")
            k(f"mad.lo.u32 {w}, {c16}, 16, {w};")
            k(f"{gp}st.shared.v4.b32 [{w}+{VT_BIG}], {{{', '.join(str(q[0]) for q in parts)}}};")
            k(f"{gp}st.shared.v4.b32 [{w}+{VT_SMALL}], {{{', '.join(str(q[2]) for q in parts)}}};")
        fence_proxy_async_shared(k)
        ring.bar(ready, ready0)
        mbar_arrive(k, ready)

    ring.loop(cj, it.ntiles, convert, "conv")
    it.finish()
    k(f"bra.uni {done};")

    # ---- consumers ------------------------------------------------------------------
    k.place(consumer)
    setmaxnreg(k, CONSUMER_REGS, grow=True)
    wg, warp, lane = warpgroup_ids(k, tid)
    c2 = k.reg("u32", "c2")  # 2·(lane % 4): this lane's first column in an 8-column group
    k(f"and.b32 {c2}, {lane}, 3;")
    k(f"shl.b32 {c2}, {c2}, 1;")
    # Q's A fragment of k-step s by ldmatrix.x4 (as linear_f32_sm90's x tile):
    # lane l gives row r = 64 wg + 16 warp + l % 8 + 8 ((l >> 3) & 1) of the item's
    # Q, 16-byte chunk 2s + (l >> 4) of the head's columns: in atom s / 4 at 128 r
    # + (16 ((l >> 4) ^ (l % 8))) ^ 32 (s % 4) (r % 8 = l % 8), past the atoms in
    # chunk 2 (s − 4A) + (l >> 4) at 16 r.
    qrow, achunk, qtail, t2 = (k.reg("u32", s) for s in ("qrow", "achunk", "qtail", "qt2"))
    k(f"and.b32 {t2}, {lane}, 7;")
    k(f"shr.u32 {achunk}, {lane}, 4;")
    k(f"mul.lo.u32 {qtail}, {achunk}, {QCHUNK};")
    k(f"xor.b32 {achunk}, {achunk}, {t2};")
    k(f"shl.b32 {achunk}, {achunk}, 4;")
    k(f"mad.lo.u32 {qrow}, {warp}, 16, {t2};")
    k(f"and.b32 {t2}, {lane}, 8;")
    k(f"add.u32 {qrow}, {qrow}, {t2};")
    k(f"mad.lo.u32 {qrow}, {wg}, 64, {qrow};")
    k(f"mad.lo.u32 {qtail}, {qrow}, 16, {qtail};")
    k(f"add.u32 {qtail}, {qtail}, {A * QATOM};")
    k(f"shl.b32 {qrow}, {qrow}, 7;")

    it = item().begin("cons")
    kl = it.kl
    qa, qt_ = k.reg("u32", "qa"), k.reg("u32", "qtl")
    k(f"add.u32 {qa}, {qrow}, {it.qbuf};")
    k(f"add.u32 {qt_}, {qtail}, {it.qbuf};")

    S = [k.regs_n("f32", f"s{n}_", 4) for n in range(BC // 8)]
    O = [k.regs_n("f32", f"o{n}_", 4) for n in range(HD // 8)]
    # P of key step s: its big and small parts (A registers of P·V).
    PB = [k.regs_n("b32", f"pb{s}_", 4) for s in range(BC // 8)]
    PS = [k.regs_n("b32", f"ps{s}_", 4) for s in range(BC // 8)]
    for r in (x for f in O for x in f):
        k(f"mov.f32 {r}, {ZERO};")
    m, lsum = softmax_state(k, 2)
    mbar_wait(k, it.qfull, it.qphase)

    j = k.reg("u32", "j")
    sk, left = k.reg("u32", "sk"), k.reg("u32", "left")
    partial = k.reg("pred", "partial")
    s_flat = [x for f in S for x in f]

    def tile_start():
        """Wait for the current stage's K and V and their parts (TMA, then the
        converters); its K tile's address in sk; `left` and `partial`."""
        full, ready = k.reg("u32", "cfull"), k.reg("u32", "cready")
        ring.bar(full, full0)
        mbar_wait(k, full, phase)
        ring.bar(ready, ready0)
        mbar_wait(k, ready, phase)
        ring.tile(sk)
        k(f"shl.b32 {left}, {j}, {BC.bit_length() - 1};")
        k(f"sub.u32 {left}, {kl}, {left};")
        k(f"setp.lt.u32 {partial}, {left}, {BC};")

    def issue_s():
        """S = Q·Kᵀ for the stage at sk: a wgmma group per k-step of 8, its Q
        parts split from ldmatrix; wait_group 1 before each step's but the first,
        so a step's registers are rewritten only once its group has retired."""
        for s in range(KSTEPS):
            if s:
                wgmma_wait(k, 1)
            raw = k.regs_n("b32", "qx", 4)
            a = k.reg("u32", "qad")
            if s < 4 * A:
                k(f"xor.b32 {a}, {achunk}, {32 * (s % 4)};")
                k(f"add.u32 {a}, {a}, {qa};")
                ldmatrix_x4(k, raw, f"{a}+{(s // 4) * QATOM}" if s // 4 else a)
                kb = k.reg("u32", "kb")
                k(f"add.u32 {kb}, {sk}, {(s // 4) * KATOM + 32 * (s % 4)};")
                d_big = wgmma_desc_sw128(k, kb)
                k(f"add.u32 {kb}, {kb}, {K_S};")
                d_small = wgmma_desc_sw128(k, kb)
            else:
                c = 2 * (s - 4 * A)
                ldmatrix_x4(k, raw, f"{qt_}+{c * QCHUNK}" if c else qt_)
                kb = k.reg("u32", "kb")
                k(f"add.u32 {kb}, {sk}, {A * KATOM + c * KCHUNK};")
                d_big = wgmma_desc(k, kb, KCHUNK, 128, False)
                k(f"add.u32 {kb}, {kb}, {K_S};")
                d_small = wgmma_desc(k, kb, KCHUNK, 128, False)
            parts = [split_tf32_rs(k, r, "qp") for r in raw]
            big, small, bigc = ([q[i] for q in parts] for i in range(3))
            wgmma_fence(k)
            wgmma_tf32_rs(k, s_flat, small, d_big, 1 if s else 0)
            wgmma_tf32_rs(k, s_flat, bigc, d_small, 1)
            wgmma_tf32_rs(k, s_flat, big, d_big, 1)
            wgmma_commit(k)

    def issue_pv(v):
        """O += P·V for the stage whose Vᵀ big tile is at shared address v (one
        wgmma group)."""
        o_flat = [x for f in O for x in f]
        for s in range(BC // 8):
            va = k.reg("u32", "va")
            k(f"add.u32 {va}, {v}, {(s // 4) * VT_ATOM + 32 * (s % 4)};")
            d_big = wgmma_desc_sw128(k, va)
            k(f"add.u32 {va}, {va}, {VT_SMALL - VT_BIG};")
            d_small = wgmma_desc_sw128(k, va)
            wgmma_tf32_rs(k, o_flat, PS[s], d_big, 1)
            wgmma_tf32_rs(k, o_flat, PB[s], d_small, 1)
            wgmma_tf32_rs(k, o_flat, PB[s], d_big, 1)
        wgmma_commit(k)

    alpha = [k.reg("f32", f"alpha{i}") for i in range(2)]

    def rescale_and_split():
        """O ·= alpha; P ← S's parts (O and P are free: their wgmma retired). The
        accumulator registers of key step s, in the relabelled order, are its A
        fragment: a0..a3 = S[s][0], S[s][2], S[s][1], S[s][3]. P is ≥ 0 or NaN:
        big = P truncated, small = P − big, or big·2^-40 where that is 0."""
        rescale_rows(k, O, alpha)
        for s in range(BC // 8):
            for i, q in enumerate((0, 2, 1, 3)):
                x, big, small = S[s][q], PB[s][i], PS[s][i]
                zt, z = k.reg("f32", "pz"), k.reg("pred", "pzero")
                k(f"and.b32 {big}, {x}, {TF32_MASK};")
                k(f"sub.f32 {small}, {x}, {big};")
                k(f"setp.eq.f32 {z}, {small}, {ZERO};")
                k(f"mul.f32 {zt}, {big}, {TINY};")
                k(f"selp.b32 {small}, {zt}, {small}, {z};")

    # S_j's groups fence their own P and O writes (its first step's wgmma.fence).
    ops = SimpleNamespace(
        tile_start=tile_start, fence_s=False, issue_s=issue_s, issue_pv=issue_pv, after_issue=None,
        softmax=lambda: softmax_tile(k, p, S, scale, partial, left, c2, m, lsum, alpha),
        rescale=rescale_and_split, keep_v=lambda dst: k(f"add.u32 {dst}, {sk}, {VT_BIG};"))
    consumer_tiles(k, p, ring, j, it, ops)
    store_item(k, O, lsum, (wg, warp, lane, t), it, out, ldo, c2, "f32")
    it.finish()
    k.place(done)
    return k


def kernels():
    return [attention_sm90_f32(hd) for hd in HEAD_DIMS]
