"""attention_{f32,bf16}: the exact path on CUDA cores — f32 end to end (the f32
model's 1e-5 bar), and bf16 for shapes the tensor-core kernel does not take
(head dims not a multiple of 8, one query row: the pooling probe).

Grid (ceil(max q_len / NW), H, B), NW = 8 warps; warp w owns query row
  NW·ctaid.x + w (rows past q_len still help load tiles, then write nothing).
Shared (static): Qs[NW][128] f32 (the warp's q row, pre-scaled), Ks[32][129] f32
  (row stride hd | 1: odd, so lane j reading Ks[j·ks + d] hits 32 distinct banks),
  Vs[32][128] f32, Ps[NW][32] f32 (the warp's probabilities of the tile).
Tile loads: warp w fills K/V rows w, w + NW, ...; lane owns columns lane + 32r.
Per tile of 32 keys (the last one partial: missing keys score −∞ and V 0):
  lane j: s_j = Σ_d Qs[w][d]·Ks[j][d]; warp max → m_new; with m_ref = m_new, or 0
  when m_new = −∞ (a tile of −∞ scores so far: no NaN from −∞ − −∞):
  α = 2^(m − m_ref), p_j = 2^(s_j − m_ref); l = α·l + Σ_j p_j;
  lane owns output dims d = lane + 32r (r < 4): acc_r = α·acc_r + Σ_j p_j·V[j][d].
End: out = acc / l. Head dims up to 128 (checked on the host), any hd."""

from ..asm import Kernel
from ..lib import NEG_INF, SIZE, ZERO, addr, lane_warp, ld_elem, st_elem, warp_reduce
from .attention_common import ATTENTION_PARAMS, attention_module, column_bases, sequence_bounds

NW = 8
MAX_HD = 128
KT = 32


def attention_simt(dt):
    z = SIZE[dt]
    k = Kernel(attention_module(dt), f"attention_{dt}", 32 * NW, ATTENTION_PARAMS, "attention",
               doc=f"attention_{dt}: exact SIMT attention, one warp per query row, 32-key tiles.")
    k.const("ROWS", NW)
    k.const("MAX_HD", MAX_HD)
    q, kk, v = column_bases(k, z)
    out = k.param("out")
    hd, ldq, ldkv, ldo, scale = (k.param(p) for p in ("hd", "ldq", "ldkv", "ldo", "scale"))
    Qs = k.shared("Qs", 4 * MAX_HD * NW)
    Ks = k.shared("Ks", 4 * KT * (MAX_HD + 1))
    Vs = k.shared("Vs", 4 * KT * MAX_HD)
    Ps = k.shared("Ps", 4 * KT * NW)
    tid, lane, warp = lane_warp(k)
    b, h, qi, u, w_ = (k.reg("u32", s) for s in ("b", "h", "qi", "u", "w"))
    k(f"mov.u32 {b}, %ctaid.z;")
    k(f"mov.u32 {h}, %ctaid.y;")
    q0, kv0, o0, ql, kl = sequence_bounds(k, b)
    k(f"mov.u32 {qi}, %ctaid.x;")
    k(f"mad.lo.u32 {qi}, {qi}, {NW}, {warp};")
    exit_ = k.label("exit")
    # A block past this sequence's queries has nothing to do (whole block: no barrier issue).
    first, none = k.reg("u32", "first"), k.reg("pred", "none")
    k(f"mov.u32 {first}, %ctaid.x;")
    k(f"mul.lo.u32 {first}, {first}, {NW};")
    k(f"setp.ge.u32 {none}, {first}, {ql};")
    k(f"@{none} bra {exit_};")
    hoff, ks, pq = k.reg("u32", "hoff"), k.reg("u32", "ks"), k.reg("pred", "qvalid")
    k(f"mul.lo.u32 {hoff}, {h}, {hd};")
    k(f"setp.lt.u32 {pq}, {qi}, {ql};")
    k(f"or.b32 {ks}, {hd}, 1;")
    pd = []
    for r in range(4):
        p = k.reg("pred", f"pd{r}")
        k(f"add.u32 {u}, {lane}, {32 * r};")
        k(f"setp.lt.u32 {p}, {u}, {hd};")
        pd.append(p)
    # q row → Qs[warp] (scaled), zeros past q_len.
    k(f"add.u32 {u}, {q0}, {qi};")
    k(f"mad.lo.u32 {u}, {u}, {ldq}, {hoff};")
    k(f"add.u32 {u}, {u}, {lane};")
    qa = addr(k, q, u, z, "qa")
    sq, sqt = k.reg("u32", "sq"), k.reg("u32", "sqt")
    k(f"mov.u32 {sq}, {Qs};")
    k(f"mad.lo.u32 {sq}, {warp}, {4 * MAX_HD}, {sq};")
    k(f"mad.lo.u32 {sqt}, {lane}, 4, {sq};")
    f0, f1, pt = k.reg("f32", "f0"), k.reg("f32", "f1"), k.reg("pred", "pt")
    for r in range(4):
        k(f"mov.f32 {f0}, {ZERO};")
        k(f"and.pred {pt}, {pd[r]}, {pq};")
        ld_elem(k, dt, f0, qa, off=32 * r * z, pred=pt)
        k(f"mul.f32 {f0}, {f0}, {scale};")
        k(f"st.shared.f32 [{sqt}+{128 * r}], {f0};")
    # Per-thread shared addresses for the K/V tile loads: row warp + NW·rr, col lane + 32r.
    skw, svw, kstep, vstep = (k.reg("u32", s) for s in ("skw", "svw", "kstep", "vstep"))
    k(f"mad.lo.u32 {u}, {warp}, {ks}, {lane};")
    k(f"mov.u32 {skw}, {Ks};")
    k(f"mad.lo.u32 {skw}, {u}, 4, {skw};")
    k(f"mul.lo.u32 {kstep}, {ks}, {4 * NW};")
    k(f"mad.lo.u32 {u}, {warp}, {hd}, {lane};")
    k(f"mov.u32 {svw}, {Vs};")
    k(f"mad.lo.u32 {svw}, {u}, 4, {svw};")
    k(f"mul.lo.u32 {vstep}, {hd}, {4 * NW};")
    skl, sp, spl, svl = (k.reg("u32", s) for s in ("skl", "sp", "spl", "svl"))
    k(f"mul.lo.u32 {u}, {lane}, {ks};")
    k(f"mov.u32 {skl}, {Ks};")
    k(f"mad.lo.u32 {skl}, {u}, 4, {skl};")
    k(f"mov.u32 {sp}, {Ps};")
    k(f"mad.lo.u32 {sp}, {warp}, {4 * KT}, {sp};")
    k(f"mad.lo.u32 {spl}, {lane}, 4, {sp};")
    k(f"mov.u32 {svl}, {Vs};")
    k(f"mad.lo.u32 {svl}, {lane}, 4, {svl};")
    gstep = k.reg("b64", "gstep")
    k(f"mul.wide.u32 {gstep}, {ldkv}, {NW * z};")
    m, l = k.reg("f32", "m"), k.reg("f32", "l")
    acc = k.regs_n("f32", "acc", 4)
    k(f"mov.f32 {m}, {NEG_INF};")
    k(f"mov.f32 {l}, {ZERO};")
    for r in acc:
        k(f"mov.f32 {r}, {ZERO};")
    t0, j, pj = k.reg("u32", "t0"), k.reg("u32", "j"), k.reg("pred", "pj")
    tile, tdone = k.label("tile"), k.label("tiles_done")
    k(f"mov.u32 {t0}, 0;")
    k.place(tile)
    k(f"setp.ge.u32 {pt}, {t0}, {kl};")
    k(f"@{pt} bra {tdone};")
    k("bar.sync 0;")  # the previous tile is fully consumed
    k(f"add.u32 {u}, {kv0}, {t0};")
    k(f"add.u32 {u}, {u}, {warp};")
    k(f"mad.lo.u32 {u}, {u}, {ldkv}, {hoff};")
    k(f"add.u32 {u}, {u}, {lane};")
    gk, gv = addr(k, kk, u, z, "gk"), addr(k, v, u, z, "gv")
    k(f"mov.u32 {u}, {skw};")
    k(f"mov.u32 {w_}, {svw};")
    for rr in range(KT // NW):
        k(f"add.u32 {j}, {t0}, {warp};")
        k(f"add.u32 {j}, {j}, {NW * rr};")
        k(f"setp.lt.u32 {pj}, {j}, {kl};")
        for r in range(4):
            k(f"mov.f32 {f0}, {ZERO};")
            k(f"mov.f32 {f1}, {ZERO};")
            k(f"and.pred {pt}, {pj}, {pd[r]};")
            ld_elem(k, dt, f0, gk, off=32 * r * z, pred=pt)
            ld_elem(k, dt, f1, gv, off=32 * r * z, pred=pt)
            k(f"@{pd[r]} st.shared.f32 [{u}+{128 * r}], {f0};")
            k(f"@{pd[r]} st.shared.f32 [{w_}+{128 * r}], {f1};")
        if rr < KT // NW - 1:
            k(f"add.s64 {gk}, {gk}, {gstep};")
            k(f"add.s64 {gv}, {gv}, {gstep};")
            k(f"add.u32 {u}, {u}, {kstep};")
            k(f"add.u32 {w_}, {w_}, {vstep};")
    k("bar.sync 0;")
    # Score of key t0 + lane.
    s, d = k.reg("f32", "s"), k.reg("u32", "d")
    dot, dot_end = k.label("dot"), k.label("dot_end")
    k(f"mov.f32 {s}, {ZERO};")
    k(f"mov.u32 {u}, {sq};")
    k(f"mov.u32 {w_}, {skl};")
    k(f"mov.u32 {d}, 0;")
    k.place(dot)
    k(f"setp.ge.u32 {pt}, {d}, {hd};")
    k(f"@{pt} bra {dot_end};")
    k(f"ld.shared.f32 {f0}, [{u}];")
    k(f"ld.shared.f32 {f1}, [{w_}];")
    k(f"fma.rn.f32 {s}, {f0}, {f1}, {s};")
    k(f"add.u32 {u}, {u}, 4;")
    k(f"add.u32 {w_}, {w_}, 4;")
    k(f"add.u32 {d}, {d}, 1;")
    k(f"bra.uni {dot};")
    k.place(dot_end)
    k(f"add.u32 {j}, {t0}, {lane};")
    k(f"setp.lt.u32 {pj}, {j}, {kl};")
    k(f"@!{pj} mov.f32 {s}, {NEG_INF};")
    mt, mn, mref, alpha, p, ps = (k.reg("f32", x) for x in ("mt", "mn", "mref", "alpha", "p", "ps"))
    k(f"mov.f32 {mt}, {s};")
    warp_reduce(k, mt, "max")
    k(f"max.f32 {mn}, {m}, {mt};")
    # −∞ guard: with every score so far −∞, subtract 0 instead of −∞.
    k(f"setp.eq.f32 {pt}, {mn}, {NEG_INF};")
    k(f"selp.f32 {mref}, {ZERO}, {mn}, {pt};")
    k(f"sub.f32 {f0}, {m}, {mref};")
    k(f"ex2.approx.f32 {alpha}, {f0};")
    k(f"sub.f32 {f0}, {s}, {mref};")
    k(f"ex2.approx.f32 {p}, {f0};")
    k(f"st.shared.f32 [{spl}], {p};")
    k(f"mov.f32 {ps}, {p};")
    warp_reduce(k, ps, "add")
    k(f"fma.rn.f32 {l}, {l}, {alpha}, {ps};")
    k(f"mov.f32 {m}, {mn};")
    for r in acc:
        k(f"mul.f32 {r}, {r}, {alpha};")
    k("bar.warp.sync -1;")  # the Ps row is visible to the whole warp
    jn = k.reg("u32", "jn")
    pv, pv_end = k.label("pv"), k.label("pv_end")
    k(f"sub.u32 {jn}, {kl}, {t0};")
    k(f"min.u32 {jn}, {jn}, {KT};")
    k(f"mov.u32 {u}, {sp};")
    k(f"mov.u32 {w_}, {svl};")
    k(f"mov.u32 {j}, 0;")
    vrow = k.reg("u32", "vrow")
    k(f"shl.b32 {vrow}, {hd}, 2;")
    k.place(pv)
    k(f"setp.ge.u32 {pt}, {j}, {jn};")
    k(f"@{pt} bra {pv_end};")
    k(f"ld.shared.f32 {p}, [{u}];")
    for r in range(4):
        k(f"ld.shared.f32 {f0}, [{w_}+{128 * r}];")
        k(f"fma.rn.f32 {acc[r]}, {p}, {f0}, {acc[r]};")
    k(f"add.u32 {u}, {u}, 4;")
    k(f"add.u32 {w_}, {w_}, {vrow};")
    k(f"add.u32 {j}, {j}, 1;")
    k(f"bra.uni {pv};")
    k.place(pv_end)
    k("bar.warp.sync -1;")  # the Ps row is read before the next tile rewrites it
    k(f"add.u32 {t0}, {t0}, {KT};")
    k(f"bra.uni {tile};")
    k.place(tdone)
    k(f"@!{pq} bra {exit_};")
    k(f"add.u32 {u}, {o0}, {qi};")
    k(f"mad.lo.u32 {u}, {u}, {ldo}, {hoff};")
    k(f"add.u32 {u}, {u}, {lane};")
    oa = addr(k, out, u, z, "oa")
    for r in range(4):
        k(f"@!{pd[r]} bra {exit_};")
        k(f"div.rn.f32 {f0}, {acc[r]}, {l};")
        st_elem(k, dt, oa, f0, off=32 * r * z)
    k.place(exit_)
    return k


def kernels(dt):
    return [attention_simt(dt)]
