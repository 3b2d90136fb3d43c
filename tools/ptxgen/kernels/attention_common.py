"""What both attention kernels share: the parameter list and the per-sequence
bounds.

attention_*(q, k, v, out, cu, nq, nk, heads, hd, ldq, ldkv, ldo, q_col, k_col, v_col,
q_bstride, q_varlen, scale):
per batch b (ctaid.z) and head h (ctaid.y), out = softmax(q kᵀ · scale) v over
that sequence, no mask.
- q, k, v, out are base pointers; row r of sequence b, head h starts at
  base + (row0(b) + r)·ld + col + h·hd elements, ld = ldq / ldkv / ldo and col =
  q_col / k_col / v_col (0 for out), so q, k and v may be column blocks of one fused
  [.., 3·H·hd] projection (or k and v of one [.., 2·H·hd]).
- Fixed-length batches (cu null): q rows start at b·q_bstride (q_bstride = nq, or
  0 when one set of queries serves the whole batch: the pooling probe), k/v rows at
  b·nk, out rows at b·nq; lengths nq and nk.
- Packed variable-length batches (cu non-null, u32 [B+1]): sequence b's keys are
  rows cu[b] .. cu[b+1] of k and v; with q_varlen = 1 its queries and outputs are
  the same rows of q and out (self-attention), with q_varlen = 0 they are nq rows at
  b·q_bstride / b·nq as for fixed lengths (the pooling head's probe over a packed
  batch). nq and nk then bound the grid only.
- scale = hd^-0.5 · log2(e): scores live in the log2 domain (ex2)."""

from ..asm import F32, In, Opt, Out, U32
from ..lib import NEG_INF, SIZE, ZERO, addr, pack_bf16x2, quad_reduce

ATTENTION_PARAMS = [In("q"), In("k"), In("v"), Out("out"), Opt("cu"), U32("nq"), U32("nk"),
                    U32("heads"), U32("hd"), U32("ldq"), U32("ldkv"), U32("ldo"),
                    U32("q_col"), U32("k_col"), U32("v_col"), U32("q_bstride"), U32("q_varlen"),
                    F32("scale")]


def attention_module(dt):
    """The module (kernels/NAME.ptx) of the attention kernels of element type dt:
    one per type, so that a model loads (and the driver JIT-compiles) only its
    own type's kernels."""
    return "attention" if dt == "bf16" else f"attention_{dt}"


def column_bases(k, size):
    """q, k, v moved to their first column (registers): base + col·size bytes."""
    out = []
    for name in ("q", "k", "v"):
        base, col = k.param(name), k.param(f"{name}_col")
        r, off = k.reg("b64", f"{name}0"), k.reg("b64", f"{name}off")
        k(f"mul.wide.u32 {off}, {col}, {size};")
        k(f"add.s64 {r}, {base}, {off};")
        out.append(r)
    return out


def sequence_bounds(k, b):
    """Registers (q_row0, kv_row0, o_row0, q_len, kv_len) of sequence b."""
    cu, nq, nk, qbs = k.param("cu"), k.param("nq"), k.param("nk"), k.param("q_bstride")
    q0, kv0, o0, ql, kl = (k.reg("u32", s) for s in ("q_row0", "kv_row0", "o_row0", "q_len", "kv_len"))
    fixed, done = k.label("fixed_len"), k.label("bounds")
    nullp, t64 = k.reg("pred", "cu_null"), k.reg("b64", "cua")
    k(f"setp.eq.u64 {nullp}, {cu}, 0;")
    k(f"@{nullp} bra {fixed};")
    k(f"mul.wide.u32 {t64}, {b}, 4;")
    k(f"add.s64 {t64}, {cu}, {t64};")
    k(f"ld.global.u32 {kv0}, [{t64}];")
    k(f"ld.global.u32 {kl}, [{t64}+4];")
    k(f"sub.u32 {kl}, {kl}, {kv0};")
    qv = k.reg("pred", "q_fixed")
    k(f"setp.eq.u32 {qv}, {k.param('q_varlen')}, 0;")
    k(f"mov.u32 {q0}, {kv0};")
    k(f"mov.u32 {o0}, {kv0};")
    k(f"mov.u32 {ql}, {kl};")
    k(f"@!{qv} bra.uni {done};")
    k(f"mul.lo.u32 {q0}, {b}, {qbs};")
    k(f"mul.lo.u32 {o0}, {b}, {nq};")
    k(f"mov.u32 {ql}, {nq};")
    k(f"bra.uni {done};")
    k.place(fixed)
    k(f"mul.lo.u32 {q0}, {b}, {qbs};")
    k(f"mul.lo.u32 {kv0}, {b}, {nk};")
    k(f"mul.lo.u32 {o0}, {b}, {nq};")
    k(f"mov.u32 {ql}, {nq};")
    k(f"mov.u32 {kl}, {nk};")
    k.place(done)
    return q0, kv0, o0, ql, kl


def query_block(k, rows):
    """This block's place in the grid (ctaid.x: its block of `rows` query rows,
    ctaid.y: the head, ctaid.z: the sequence) and its sequence's bounds; a block
    past the sequence's queries branches to the returned exit label (place it at
    the end). Returns (qb: the block's first query row, (q_row0, kv_row0,
    o_row0, q_len, kv_len), exit label, hoff: the head's first column h·hd, p: a
    scratch predicate)."""
    b, h, qb = k.reg("u32", "b"), k.reg("u32", "h"), k.reg("u32", "qb")
    k(f"mov.u32 {b}, %ctaid.z;")
    k(f"mov.u32 {h}, %ctaid.y;")
    k(f"mov.u32 {qb}, %ctaid.x;")
    k(f"mul.lo.u32 {qb}, {qb}, {rows};")  # first query row of the block
    bounds = sequence_bounds(k, b)
    exit_ = k.label("exit")
    p = k.reg("pred", "p")
    k(f"setp.ge.u32 {p}, {qb}, {bounds[3]};")
    k(f"@{p} bra {exit_};")
    hoff = k.reg("u32", "hoff")
    k(f"mul.lo.u32 {hoff}, {h}, {k.param('hd')};")
    return qb, bounds, exit_, hoff, p


def item_block(k, item, rows):
    """A persistent kernel's work item `item` (u32): query block item % qblocks of
    head (item / qblocks) % heads of sequence item / (qblocks · heads), so the
    items of one head and sequence, which read the same keys, run side by side.
    Returns (qb: the item's first query row, (q_row0, kv_row0, o_row0, q_len,
    kv_len), hoff: the head's first column h·hd); the caller skips an item with
    qb ≥ q_len (a packed sequence shorter than the longest)."""
    qblocks, heads = k.param("qblocks"), k.param("heads")
    b, h, qb = k.reg("u32", "b"), k.reg("u32", "h"), k.reg("u32", "qb")
    k(f"div.u32 {b}, {item}, {qblocks};")
    k(f"rem.u32 {qb}, {item}, {qblocks};")
    k(f"mul.lo.u32 {qb}, {qb}, {rows};")
    k(f"rem.u32 {h}, {b}, {heads};")
    k(f"div.u32 {b}, {b}, {heads};")
    bounds = sequence_bounds(k, b)
    hoff = k.reg("u32", "hoff")
    k(f"mul.lo.u32 {hoff}, {h}, {k.param('hd')};")
    return qb, bounds, hoff


def online_softmax_row(k, S, half, m, lsum, alpha, scale=None, chains=8):
    """The online-softmax update of one accumulator row of a tensor-core tile:
    `S` lists its m16n8 groups of 4 f32 registers, `half` picks the row (0:
    registers 0, 1 of each group, row g; 1: registers 2, 3, row g + 8), m and
    lsum are the row's running max (log2 domain) and sum. The scores are in the
    log2 domain already, or, given `scale` (> 0), are raw and scale times them
    is. m_new = max(m, rowmax over the quad) (with `scale`, scale · the raw
    rowmax: scale > 0 keeps the order, so this is the max of the scaled scores
    exactly); m_ref = m_new, or 0 when m_new = −∞ (the −∞ guard: no NaN from −∞
    − −∞ when every score so far is −∞); alpha ← 2^(m − m_ref); S ← 2^(S −
    m_ref) in place (with `scale`, 2^(scale·S − m_ref), one fma a score:
    FlashAttention's scale_apply_exp2, a multiply a score fewer than scaling
    first); l ← alpha·l + Σ S; m ← m_new. With `scale` the row max also runs
    `chains` independent chains, then a tree of them (32 scores in 8 chains: 6
    dependent max, where one chain was 31): the Hopper kernels, whose
    softmax latency bounds them (notes/h100-2026-11-25/profile.md); the
    mma.sync kernels keep the chain and the separate multiply (at hd 128 the
    bf16 one has no registers for more: ptxas spills it on sm_90a). The
    caller rescales O by alpha."""
    p = k.reg("pred", "mguard")
    mx, mn, mref, e = (k.reg("f32", s) for s in ("mx", "mn", "mref", "e"))
    regs = [g[q] for g in S for q in (2 * half, 2 * half + 1)]
    if scale is None:
        k(f"mov.f32 {mx}, {regs[0]};")
        for r in regs[1:]:
            k(f"max.f32 {mx}, {mx}, {r};")
    else:
        level = []
        for c in range(min(chains, len(regs))):
            part = regs[c::chains]
            if len(part) == 1:
                level.append(part[0])
                continue
            t = k.reg("f32", "mt")
            k(f"max.f32 {t}, {part[0]}, {part[1]};")
            for r in part[2:]:
                k(f"max.f32 {t}, {t}, {r};")
            level.append(t)
        while len(level) > 1:
            nxt = []
            for i in range(0, len(level) - 1, 2):
                t = mx if len(level) == 2 else k.reg("f32", "mt")
                k(f"max.f32 {t}, {level[i]}, {level[i + 1]};")
                nxt.append(t)
            level = nxt + level[len(nxt) * 2:]     # an odd one out goes up a level
        if level[0] is not mx:
            k(f"mov.f32 {mx}, {level[0]};")
    quad_reduce(k, mx, "max")
    if scale is not None:
        k(f"mul.f32 {mx}, {mx}, {scale};")
    k(f"max.f32 {mn}, {m}, {mx};")
    k(f"setp.eq.f32 {p}, {mn}, {NEG_INF};")
    k(f"selp.f32 {mref}, {ZERO}, {mn}, {p};")
    k(f"sub.f32 {e}, {m}, {mref};")
    k(f"ex2.approx.ftz.f32 {alpha}, {e};")
    k(f"mov.f32 {m}, {mn};")
    k(f"mul.f32 {lsum}, {lsum}, {alpha};")
    if scale is not None:
        k(f"neg.f32 {mref}, {mref};")
    for r in regs:
        if scale is None:
            k(f"sub.f32 {r}, {r}, {mref};")
        else:
            k(f"fma.rn.f32 {r}, {r}, {scale}, {mref};")
        k(f"ex2.approx.ftz.f32 {r}, {r};")
        k(f"add.f32 {lsum}, {lsum}, {r};")


def store_output_row(k, O, half, lsum, row, bounds, c2, hd=None, dt="bf16"):
    """Row `row` (u32, in the sequence) of the output tile: `O` lists its m16n8
    groups of 4 f32 registers, `half` picks registers 0, 1 (0) or 2, 3 (1) of
    each group; lsum is summed over the quad and O / l (rounded to bf16 once for
    dt bf16) stored as pairs at columns c2 + 8n of the head, when row < q_len
    (and, with `hd` given, only the columns below it: kernels whose tile is wider
    than the head; hd even). `bounds` = (out, o_row0, q_len, ldo, head offset)."""
    out, o0, ql, ldo, hoff = bounds
    p, inv, e = k.reg("pred", "orow_in"), k.reg("f32", "inv"), k.reg("u32", "oe")
    quad_reduce(k, lsum, "add")
    k(f"rcp.rn.f32 {inv}, {lsum};")
    skip = k.label("row_out")
    k(f"setp.ge.u32 {p}, {row}, {ql};")
    k(f"@{p} bra {skip};")
    k(f"add.u32 {e}, {o0}, {row};")
    k(f"mad.lo.u32 {e}, {e}, {ldo}, {hoff};")
    k(f"add.u32 {e}, {e}, {c2};")
    base = addr(k, out, e, SIZE[dt], "ob")
    for n, group in enumerate(O):
        x, y = group[2 * half], group[2 * half + 1]
        k(f"mul.f32 {x}, {x}, {inv};")
        k(f"mul.f32 {y}, {y}, {inv};")
        pk = None if dt == "f32" else pack_bf16x2(k, x, y)
        guard = ""
        if hd is not None:
            t = k.reg("u32", "ocol")
            k(f"add.u32 {t}, {c2}, {8 * n};")
            k(f"setp.lt.u32 {p}, {t}, {hd};")
            guard = f"@{p} "
        if pk is None:
            k(f"{guard}st.global.v2.f32 [{base}+{32 * n}], {{{x}, {y}}};")
        else:
            k(f"{guard}st.global.b32 [{base}+{16 * n}], {pk};")
    k.place(skip)


def softmax_state(k, rows):
    """The online softmax's running max (-inf) and sum (0) of each of a thread's
    `rows` query rows: the registers m and lsum, initialised."""
    m = [k.reg("f32", f"m{i}") for i in range(rows)]
    lsum = [k.reg("f32", f"l{i}") for i in range(rows)]
    for r in m:
        k(f"mov.f32 {r}, {NEG_INF};")
    for r in lsum:
        k(f"mov.f32 {r}, {ZERO};")
    return m, lsum
