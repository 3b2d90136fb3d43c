"""The memory-gated attention's read and write steps (MODEL.md).

memory_read_gate_{dt}(h, rw, rb, gate, n, e, d): one block of 256 threads per batch
  b (ctaid.x). Dynamic shared memory: mean[D] f32, then logits[E] f32 — the host
  passes (D + E)·4 bytes (at most 48 KiB); with this kernel's static bytes that
  can pass 48 KiB, so the host opts in (launch.rs, smem_opt_in) and checks the sum
  against the GPU's per-block limit.
  1. mean[c] = (Σ_t h[b,t,c]) / N, thread t owns columns t, t + 256, ...;
  2. for each expert e: logit = rb[e] + Σ_c rw[e,c]·mean[c] (block reduction);
  3. thread 0: gate[b,e] = softmax over e (max-subtracted, ex2.approx), f32 out.
memory_read_mix_{dt}(h, bank, gate, joint, b, n, e, m, d): grid-stride over joint
  [B, M+N, D]; row s < M: Σ_e gate[b,e]·bank[b,e,s,c]; else h[b,s−M,c].
memory_write_{dt}(bank, gate, o, res, out, b, n, e, m, d): grid-stride over
  B·E·M·D + B·N·D; first bank[b,e,s,c] = (1−g)·bank + g·o[b,s,c] in place, then
  out[b,t,c] = res[b,t,c] + o[b,M+t,c]."""

from ..asm import In, Kernel, Out, U32
from ..lib import (DTYPES, LOG2E, NEG_INF, ONE, SIZE, ZERO, addr, block_sum, counted_loop,
                   grid_stride, lane_warp, ld_elem, st_elem)

THREADS = 256


ROWS = 32    # tokens per block of memory_read_gate_part (the host splits N by it)
UNROLL = 8   # independent loads in flight per column before they are added


def column_means(k, dt, h, d, n, mean_s, tid, t0, t1):
    """mean[c] (shared, f32) = (Σ_{t0 ≤ t < t1} h[b,t,c]) / N for the columns c this
    thread owns (tid, tid + THREADS, ...), where `h` already points at batch b's
    rows. UNROLL predicated loads are issued before any is added, so a thread has
    that many in flight (a chain of single loads waits out the memory latency once
    per token: 0.165 ms for one so400m sequence, measured on an H100)."""
    z = SIZE[dt]
    nf, stride = k.reg("f32", "nf"), k.reg("b64", "stride")
    k(f"cvt.rn.f32.u32 {nf}, {n};")
    k(f"mul.wide.u32 {stride}, {d}, {z};")

    def column(c):
        s, j, idx = k.reg("f32", "cs"), k.reg("u32", "tok"), k.reg("u32", "idx")
        k(f"mov.f32 {s}, {ZERO};")
        k(f"mov.u32 {j}, {t0};")
        if t0 == 0:
            k(f"mov.u32 {idx}, {c};")
        else:
            k(f"mad.lo.u32 {idx}, {t0}, {d}, {c};")
        ptr = addr(k, h, idx, z, "hp")
        top, end = k.label("tok_loop"), k.label("tok_end")
        done = k.reg("pred", "tok_done")
        k.place(top)
        k(f"setp.ge.u32 {done}, {j}, {t1};")
        k(f"@{done} bra {end};")
        vs, pu, ju, at = [], k.reg("pred", "in"), k.reg("u32", "ju"), k.reg("b64", "at")
        k(f"mov.b64 {at}, {ptr};")
        for u in range(UNROLL):
            v = k.reg("f32", "v")
            k(f"mov.f32 {v}, {ZERO};")
            k(f"add.u32 {ju}, {j}, {u};")
            k(f"setp.lt.u32 {pu}, {ju}, {t1};")
            ld_elem(k, dt, v, at, pred=pu)
            if u + 1 < UNROLL:
                k(f"add.s64 {at}, {at}, {stride};")
            vs.append(v)
        for v in vs:
            k(f"add.f32 {s}, {s}, {v};")
        k(f"add.s64 {at}, {at}, {stride};")
        k(f"mov.b64 {ptr}, {at};")
        k(f"add.u32 {j}, {j}, {UNROLL};")
        k(f"bra.uni {top};")
        k.place(end)
        k(f"div.rn.f32 {s}, {s}, {nf};")
        sa = k.reg("u32", "sa")
        k(f"mad.lo.u32 {sa}, {c}, 4, {mean_s};")
        k(f"st.shared.f32 [{sa}], {s};")

    counted_loop(k, tid, d, THREADS, column, "c")
    k("bar.sync 0;")


def sum_to_thread0(k, acc, threads, tid, lane, warp, emit):
    """Σ acc over the block (`threads` threads); thread 0 alone then calls
    emit(total)."""
    total = block_sum(k, acc, threads // 32, lane, warp)
    first, skip = k.reg("pred", "t0"), k.label("not_t0")
    k(f"setp.ne.u32 {first}, {tid}, 0;")
    k(f"@{first} bra {skip};")
    emit(total)
    k.place(skip)


def expert_dots(k, dt, rw, d, e, mean_s, tid, lane, warp, emit):
    """For each expert e: Σ_c rw[e,c]·mean[c] over the block; thread 0 then calls
    emit(e, total)."""
    z = SIZE[dt]

    def expert(ei):
        acc, row = k.reg("f32", "acc"), k.reg("u32", "erow")
        k(f"mov.f32 {acc}, {ZERO};")
        k(f"mul.lo.u32 {row}, {ei}, {d};")

        def dot(c):
            wv, mv, wi, sa = k.reg("f32", "wv"), k.reg("f32", "mv"), k.reg("u32", "wi"), k.reg("u32", "sa")
            k(f"add.u32 {wi}, {row}, {c};")
            ld_elem(k, dt, wv, addr(k, rw, wi, z))
            k(f"mad.lo.u32 {sa}, {c}, 4, {mean_s};")
            k(f"ld.shared.f32 {mv}, [{sa}];")
            k(f"fma.rn.f32 {acc}, {wv}, {mv}, {acc};")

        counted_loop(k, tid, d, THREADS, dot, "c")
        sum_to_thread0(k, acc, THREADS, tid, lane, warp, lambda total: emit(ei, total))

    counted_loop(k, 0, e, 1, expert, "ex")


def store_logit(k, dt, rb, logit_s):
    """emit for expert_dots: logits[e] (shared) = total + rb[e]."""
    def emit(ei, total):
        bias, sa = k.reg("f32", "bias"), k.reg("u32", "sa")
        ld_elem(k, dt, bias, addr(k, rb, ei, SIZE[dt]))
        k(f"add.f32 {total}, {total}, {bias};")
        k(f"mad.lo.u32 {sa}, {ei}, 4, {logit_s};")
        k(f"st.shared.f32 [{sa}], {total};")
    return emit


def softmax_to_gate(k, gt, b, e, logit_s, tid):
    """Thread 0: gate[b, :] (f32, global) = softmax of logits[0..E) (shared),
    max-subtracted, ex2.approx (E is small)."""
    not0, done = k.reg("pred", "not0"), k.label("done")
    k(f"setp.ne.u32 {not0}, {tid}, 0;")
    k(f"@{not0} bra {done};")
    mx, tot = k.reg("f32", "mx"), k.reg("f32", "tot")
    k(f"mov.f32 {mx}, {NEG_INF};")

    def find_max(ei):
        v, sa = k.reg("f32", "v"), k.reg("u32", "sa")
        k(f"mad.lo.u32 {sa}, {ei}, 4, {logit_s};")
        k(f"ld.shared.f32 {v}, [{sa}];")
        k(f"max.f32 {mx}, {mx}, {v};")

    counted_loop(k, 0, e, 1, find_max, "ex")
    k(f"mov.f32 {tot}, {ZERO};")

    def exp(ei):
        v, sa = k.reg("f32", "v"), k.reg("u32", "sa")
        k(f"mad.lo.u32 {sa}, {ei}, 4, {logit_s};")
        k(f"ld.shared.f32 {v}, [{sa}];")
        k(f"sub.f32 {v}, {v}, {mx};")
        k(f"mul.f32 {v}, {v}, {LOG2E};")
        k(f"ex2.approx.f32 {v}, {v};")
        k(f"st.shared.f32 [{sa}], {v};")
        k(f"add.f32 {tot}, {tot}, {v};")

    counted_loop(k, 0, e, 1, exp, "ex")
    be = k.reg("u32", "be")
    k(f"mul.lo.u32 {be}, {b}, {e};")

    def write(ei):
        v, sa, gi = k.reg("f32", "v"), k.reg("u32", "sa"), k.reg("u32", "gi")
        k(f"mad.lo.u32 {sa}, {ei}, 4, {logit_s};")
        k(f"ld.shared.f32 {v}, [{sa}];")
        k(f"div.rn.f32 {v}, {v}, {tot};")
        k(f"add.u32 {gi}, {be}, {ei};")
        k(f"st.global.f32 [{addr(k, gt, gi, 4)}], {v};")

    counted_loop(k, 0, e, 1, write, "ex")
    k.place(done)


def gate_prologue(k, dt, h, n, d):
    """(tid, lane, warp, b, mean_s, logit_s, hb): batch b = ctaid.x, the shared
    arrays mean[D] and logits[E] in dynamic shared memory, and h's row 0 of b."""
    tid, lane, warp = lane_warp(k)
    b = k.reg("u32", "b")
    k(f"mov.u32 {b}, %ctaid.x;")
    mean_s, logit_s = k.reg("u32", "mean_s"), k.reg("u32", "logit_s")
    k(f"mov.u32 {mean_s}, dyn_smem;")
    k(f"shl.b32 {logit_s}, {d}, 2;")
    k(f"add.u32 {logit_s}, {mean_s}, {logit_s};")
    base = k.reg("u32", "hb")
    k(f"mul.lo.u32 {base}, {b}, {n};")
    k(f"mul.lo.u32 {base}, {base}, {d};")
    hb = addr(k, h, base, SIZE[dt], "hrow")
    return tid, lane, warp, b, mean_s, logit_s, hb


def gate(dt):
    k = Kernel("memory", f"memory_read_gate_{dt}", THREADS,
               [In("h"), In("rw"), In("rb"), Out("gate"), U32("n"), U32("e"), U32("d")],
               "memory_gate", doc=f"The memory gate of batch ctaid.x in one block ({dt} in, f32 gate out).",
               dyn_smem_doc="(D + E)·4 bytes: mean[D], logits[E]", max_dyn_smem=48 * 1024)
    h, rw, rb, gt = (k.param(p) for p in ("h", "rw", "rb", "gate"))
    n, e, d = k.param("n"), k.param("e"), k.param("d")
    tid, lane, warp, b, mean_s, logit_s, hb = gate_prologue(k, dt, h, n, d)
    column_means(k, dt, hb, d, n, mean_s, tid, 0, n)
    expert_dots(k, dt, rw, d, e, mean_s, tid, lane, warp, store_logit(k, dt, rb, logit_s))
    softmax_to_gate(k, gt, b, e, logit_s, tid)
    return k


def gate_part(dt):
    k = Kernel("memory", f"memory_read_gate_part_{dt}", THREADS,
               [In("h"), In("rw"), Out("part"), U32("n"), U32("e"), U32("d")],
               "memory_gate_part",
               doc=f"Partial gate logits of batch ctaid.x over tokens [ROWS·ctaid.y, +ROWS) ({dt} in, f32 out).",
               dyn_smem_doc="(D + E)·4 bytes: mean[D], logits[E]", max_dyn_smem=48 * 1024)
    k.const("ROWS", ROWS)
    h, rw, part = (k.param(p) for p in ("h", "rw", "part"))
    n, e, d = k.param("n"), k.param("e"), k.param("d")
    tid, lane, warp, b, mean_s, _, hb = gate_prologue(k, dt, h, n, d)
    y, t0, t1, splits = k.reg("u32", "y"), k.reg("u32", "t0"), k.reg("u32", "t1"), k.reg("u32", "splits")
    k(f"mov.u32 {y}, %ctaid.y;")
    k(f"mov.u32 {splits}, %nctaid.y;")
    k(f"mul.lo.u32 {t0}, {y}, {ROWS};")
    k(f"add.u32 {t1}, {t0}, {ROWS};")
    k(f"min.u32 {t1}, {t1}, {n};")
    column_means(k, dt, hb, d, n, mean_s, tid, t0, t1)
    # part[(b·S + y)·E + e] = this block's share of logit e (no bias).
    row = k.reg("u32", "prow")
    k(f"mad.lo.u32 {row}, {b}, {splits}, {y};")
    k(f"mul.lo.u32 {row}, {row}, {e};")

    def emit(ei, total):
        pi = k.reg("u32", "pi")
        k(f"add.u32 {pi}, {row}, {ei};")
        k(f"st.global.f32 [{addr(k, part, pi, 4)}], {total};")

    expert_dots(k, dt, rw, d, e, mean_s, tid, lane, warp, emit)
    return k


FINISH_THREADS = 128


def gate_finish(dt):
    k = Kernel("memory", f"memory_read_gate_finish_{dt}", FINISH_THREADS,
               [In("part"), In("rb"), Out("gate"), U32("s"), U32("e")],
               "memory_gate_finish",
               doc=f"gate[b] = softmax(rb + Σ_y part[b, y]) for batch ctaid.x ({dt} bias, f32 out).",
               dyn_smem_doc="E·4 bytes: logits[E]", max_dyn_smem=48 * 1024)
    part, rb, gt = (k.param(p) for p in ("part", "rb", "gate"))
    s, e = k.param("s"), k.param("e")
    tid, lane, warp = lane_warp(k)
    b, logit_s, base = k.reg("u32", "b"), k.reg("u32", "logit_s"), k.reg("u32", "pbase")
    k(f"mov.u32 {b}, %ctaid.x;")
    k(f"mov.u32 {logit_s}, dyn_smem;")
    k(f"mul.lo.u32 {base}, {b}, {s};")
    emit = store_logit(k, dt, rb, logit_s)

    def expert(ei):
        acc = k.reg("f32", "acc")
        k(f"mov.f32 {acc}, {ZERO};")

        def add(y):
            pi, v = k.reg("u32", "pi"), k.reg("f32", "pv")
            k(f"add.u32 {pi}, {base}, {y};")
            k(f"mad.lo.u32 {pi}, {pi}, {e}, {ei};")
            k(f"ld.global.f32 {v}, [{addr(k, part, pi, 4)}];")
            k(f"add.f32 {acc}, {acc}, {v};")

        counted_loop(k, tid, s, FINISH_THREADS, add, "y")
        sum_to_thread0(k, acc, FINISH_THREADS, tid, lane, warp, lambda total: emit(ei, total))

    counted_loop(k, 0, e, 1, expert, "ex")
    softmax_to_gate(k, gt, b, e, logit_s, tid)
    return k


def mix(dt):
    z = SIZE[dt]
    k = Kernel("memory", f"memory_read_mix_{dt}", THREADS,
               [In("h"), In("bank"), In("gate"), Out("joint"), U32("b"), U32("n"), U32("e"),
                U32("m"), U32("d")],
               "memory_mix", doc=f"joint[b] = [Σ_e gate·bank[b,e]; h[b]] ({dt}), grid-stride.")
    h, bank, gt, joint = (k.param(p) for p in ("h", "bank", "gate", "joint"))
    bb, n, e, m, d = (k.param(p) for p in ("b", "n", "e", "m", "d"))
    mn, total = k.reg("u32", "mn"), k.reg("u32", "total")
    k(f"add.u32 {mn}, {m}, {n};")
    k(f"mul.lo.u32 {total}, {bb}, {mn};")
    k(f"mul.lo.u32 {total}, {total}, {d};")

    def body(i):
        row, c, b, s, t = (k.reg("u32", x) for x in ("row", "c", "b", "s", "t"))
        k(f"div.u32 {row}, {i}, {d};")
        k(f"mul.lo.u32 {t}, {row}, {d};")
        k(f"sub.u32 {c}, {i}, {t};")
        k(f"div.u32 {b}, {row}, {mn};")
        k(f"mul.lo.u32 {t}, {b}, {mn};")
        k(f"sub.u32 {s}, {row}, {t};")
        v, is_mem = k.reg("f32", "v"), k.reg("pred", "is_mem")
        mem_l, store_l = k.label("mem"), k.label("store")
        k(f"setp.lt.u32 {is_mem}, {s}, {m};")
        k(f"@{is_mem} bra {mem_l};")
        src = k.reg("u32", "src")
        k(f"sub.u32 {src}, {s}, {m};")
        k(f"mad.lo.u32 {src}, {b}, {n}, {src};")
        k(f"mad.lo.u32 {src}, {src}, {d}, {c};")
        ld_elem(k, dt, v, addr(k, h, src, z))
        k(f"bra.uni {store_l};")
        k.place(mem_l)
        k(f"mov.f32 {v}, {ZERO};")
        be = k.reg("u32", "be")
        k(f"mul.lo.u32 {be}, {b}, {e};")

        def expert(ei):
            g, x, gi, bi = k.reg("f32", "g"), k.reg("f32", "x"), k.reg("u32", "gi"), k.reg("u32", "bi")
            k(f"add.u32 {gi}, {be}, {ei};")
            k(f"ld.global.f32 {g}, [{addr(k, gt, gi, 4)}];")
            k(f"mad.lo.u32 {bi}, {gi}, {m}, {s};")
            k(f"mad.lo.u32 {bi}, {bi}, {d}, {c};")
            ld_elem(k, dt, x, addr(k, bank, bi, z))
            k(f"fma.rn.f32 {v}, {g}, {x}, {v};")

        counted_loop(k, 0, e, 1, expert, "ex")
        k.place(store_l)
        st_elem(k, dt, addr(k, joint, i, z), v)

    grid_stride(k, total, body)
    return k


def write(dt):
    z = SIZE[dt]
    k = Kernel("memory", f"memory_write_{dt}", THREADS,
               [Out("bank"), In("gate"), In("o"), In("res"), Out("out"), U32("b"), U32("n"),
                U32("e"), U32("m"), U32("d")],
               "memory_write", doc=f"Gated write of the bank in place, then out = res + o[:, M:] ({dt}).")
    bank, gt, o, res, out = (k.param(p) for p in ("bank", "gate", "o", "res", "out"))
    bb, n, e, m, d = (k.param(p) for p in ("b", "n", "e", "m", "d"))
    mn, banklen, total = k.reg("u32", "mn"), k.reg("u32", "banklen"), k.reg("u32", "total")
    k(f"add.u32 {mn}, {m}, {n};")
    k(f"mul.lo.u32 {banklen}, {bb}, {e};")
    k(f"mul.lo.u32 {banklen}, {banklen}, {m};")
    k(f"mul.lo.u32 {banklen}, {banklen}, {d};")
    k(f"mul.lo.u32 {total}, {bb}, {n};")
    k(f"mul.lo.u32 {total}, {total}, {d};")
    k(f"add.u32 {total}, {total}, {banklen};")

    def body(i):
        in_out, out_l, next_l = k.reg("pred", "in_out"), k.label("out"), k.label("next")
        k(f"setp.ge.u32 {in_out}, {i}, {banklen};")
        k(f"@{in_out} bra {out_l};")
        # bank element i = ((b·E + e)·M + s)·D + c
        q, c, be, s, b, t = (k.reg("u32", x) for x in ("q", "c", "be", "s", "b", "t"))
        k(f"div.u32 {q}, {i}, {d};")
        k(f"mul.lo.u32 {t}, {q}, {d};")
        k(f"sub.u32 {c}, {i}, {t};")
        k(f"div.u32 {be}, {q}, {m};")
        k(f"mul.lo.u32 {t}, {be}, {m};")
        k(f"sub.u32 {s}, {q}, {t};")
        k(f"div.u32 {b}, {be}, {e};")
        g, old, new, oi = k.reg("f32", "g"), k.reg("f32", "old"), k.reg("f32", "new"), k.reg("u32", "oi")
        k(f"ld.global.f32 {g}, [{addr(k, gt, be, 4)}];")
        at = addr(k, bank, i, z)
        ld_elem(k, dt, old, at)
        k(f"mad.lo.u32 {oi}, {b}, {mn}, {s};")
        k(f"mad.lo.u32 {oi}, {oi}, {d}, {c};")
        ld_elem(k, dt, new, addr(k, o, oi, z))
        keep = k.reg("f32", "keep")
        k(f"sub.f32 {keep}, {ONE}, {g};")
        k(f"mul.f32 {new}, {g}, {new};")
        k(f"fma.rn.f32 {new}, {keep}, {old}, {new};")
        st_elem(k, dt, at, new)
        k(f"bra.uni {next_l};")
        k.place(out_l)
        j, row, c2, b2, t2, oj = (k.reg("u32", x) for x in ("j", "row", "c", "b", "t", "oj"))
        k(f"sub.u32 {j}, {i}, {banklen};")  # j = (b·N + t)·D + c
        k(f"div.u32 {row}, {j}, {d};")
        k(f"mul.lo.u32 {t2}, {row}, {d};")
        k(f"sub.u32 {c2}, {j}, {t2};")
        k(f"div.u32 {b2}, {row}, {n};")
        k(f"mul.lo.u32 {t2}, {b2}, {n};")
        k(f"sub.u32 {t2}, {row}, {t2};")  # token t
        k(f"mad.lo.u32 {oj}, {b2}, {mn}, {m};")
        k(f"add.u32 {oj}, {oj}, {t2};")
        k(f"mad.lo.u32 {oj}, {oj}, {d}, {c2};")
        ov, rv = k.reg("f32", "ov"), k.reg("f32", "rv")
        ld_elem(k, dt, ov, addr(k, o, oj, z))
        ld_elem(k, dt, rv, addr(k, res, j, z))
        k(f"add.f32 {rv}, {rv}, {ov};")
        st_elem(k, dt, addr(k, out, j, z), rv)
        k.place(next_l)

    grid_stride(k, total, body)
    return k


def modules():
    ks = []
    for dt in DTYPES:
        ks += [gate(dt), gate_part(dt), gate_finish(dt), mix(dt), write(dt)]
    return [("memory", "memory_read_gate*_*, memory_read_mix_*, memory_write_*: the memory-gated\n"
             "attention's read and write steps (see tools/ptxgen/kernels/memory.py).", ks)]
