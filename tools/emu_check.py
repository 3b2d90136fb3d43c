#!/usr/bin/env python3
"""Run tessera's PTX kernels in tools/ptx_emu.py on the op suite's shapes and
compare with float64 references (same bars as tests/common: rel. L2 1e-5 f32,
2e-2 bf16; cast bit-exact). Launch geometry and parameters mirror
src/cuda/backend.rs. Needs numpy (e.g. pip install --target .cache/pylib numpy,
then PYTHONPATH=.cache/pylib).

    python3 tools/emu_check.py [op ...]      # ops: add cast layer_norm linear
                                             #      patch_embed attention memory
"""
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ptx_emu import Memory, bf16_bits_to_f32, f32_to_bf16_bits, parse_module, run_kernel  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kernels")
MODS = {}
RNG = np.random.default_rng(int(os.environ.get("TESSERA_TEST_SEED", "1234")))
FAILS = []


def module(name):
    if name not in MODS:
        with open(os.path.join(ROOT, name + ".ptx")) as f:
            MODS[name] = parse_module(f.read())
    return MODS[name]


def rnd(n, scale, dt):
    x = (RNG.random(n, dtype=np.float32) * 2 - 1) * np.float32(scale)
    if dt == "bf16":
        return f32_to_bf16_bits(x)
    return x.astype(np.float32)


def as64(arr, dt):
    if dt == "bf16":
        return bf16_bits_to_f32(arr).astype(np.float64)
    return arr.astype(np.float64)


def poison(mem, n, dt):
    if dt == "bf16":
        return mem.upload(np.full(max(n, 1), 0x7FC0, np.uint16)[:n] if n else np.zeros(0, np.uint16))
    return mem.upload(np.full(n, np.nan, np.float32))


def read(mem, addr, n, dt):
    if dt == "bf16":
        return bf16_bits_to_f32(mem.download(addr, n, np.uint16)).astype(np.float64)
    return mem.download(addr, n, np.float32).astype(np.float64)


def check(what, out, ref, dt, bar=None):
    bar = bar or (1e-5 if dt == "f32" else 2e-2)
    if not np.all(np.isfinite(out)):
        err = math.inf
    else:
        den = np.sqrt(np.sum(ref * ref))
        num = np.sqrt(np.sum((out - ref) ** 2))
        err = num / den if den > 0 else num
    ok = err <= bar
    print(f"{'ok  ' if ok else 'FAIL'} {what} [{dt}] rel L2 {err:.3e}", flush=True)
    if not ok:
        FAILS.append(what)


def gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def t_add():
    for dt in ("f32", "bf16"):
        for n in (1, 17, 1023, 4097):
            mem = Memory()
            a, b = rnd(n, 3, dt), rnd(n, 3, dt)
            pa, pb, po = mem.upload(a), mem.upload(b), poison(mem, n, dt)
            blocks = min(max((n + 255) // 256, 1), 65535)
            run_kernel(module("add")[f"add_{dt}"], mem, (blocks, 1, 1), (256, 1, 1), [pa, pb, po, n])
            check(f"add n={n}", read(mem, po, n, dt), as64(a, dt) + as64(b, dt), dt)


def t_cast():
    for n in (1, 2, 17, 1023, 4097):
        mem = Memory()
        x = rnd(n, 100, "f32")
        specials = [1 + 1 / 256, 1 + 3 / 256, -0.0, np.inf, 65504.0, 1e-40]
        for i, s in enumerate(specials[:n]):
            x[i] = s
        px, py = mem.upload(x), poison(mem, n, "bf16")
        blocks = min(max((n + 255) // 256, 1), 65535)
        run_kernel(module("cast")["cast_f32_bf16"], mem, (blocks, 1, 1), (256, 1, 1), [px, py, n])
        got = mem.download(py, n, np.uint16)
        want = f32_to_bf16_bits(x)
        ok = np.array_equal(got, want)
        pb = poison(mem, n, "f32")
        run_kernel(module("cast")["cast_bf16_f32"], mem, (blocks, 1, 1), (256, 1, 1), [py, pb, n])
        back = mem.download(pb, n, np.uint32)
        ok2 = np.array_equal(back, bf16_bits_to_f32(got).view(np.uint32))
        print(f"{'ok  ' if ok and ok2 else 'FAIL'} cast n={n} f32->bf16 exact={ok} bf16->f32 exact={ok2}")
        if not (ok and ok2):
            FAILS.append(f"cast n={n}")


def t_layer_norm():
    for dt in ("f32", "bf16"):
        for rows, cols in ((1, 1), (3, 17), (65, 64), (7, 1152), (2, 4304), (129, 3)):
            mem = Memory()
            x = rnd(rows * cols, 2, "f32") + 3
            x = f32_to_bf16_bits(x) if dt == "bf16" else x
            w, b = rnd(cols, 1.5, dt), rnd(cols, 0.5, dt)
            px, pw, pb, po = mem.upload(x), mem.upload(w), mem.upload(b), poison(mem, rows * cols, dt)
            run_kernel(module("layer_norm")[f"layer_norm_{dt}"], mem, (min(rows, 65535), (rows + 65534) // 65535, 1),
                       (256, 1, 1), [px, pw, pb, po, rows, cols, 1e-6])
            X = as64(x, dt).reshape(rows, cols)
            mu = X.mean(1, keepdims=True)
            var = ((X - mu) ** 2).mean(1, keepdims=True)
            ref = (X - mu) / np.sqrt(var + 1e-6) * as64(w, dt) + as64(b, dt)
            check(f"layer_norm rows={rows} cols={cols}", read(mem, po, rows * cols, dt), ref.ravel(), dt)


def gemm_launch(dt, m, n):
    return ((n + 63) // 64, (m + 63) // 64, 1), ((256 if dt == "f32" else 128), 1, 1)


def t_linear():
    shapes = [(1, 1, 1), (3, 17, 5), (17, 64, 65), (65, 129, 33), (129, 72, 130), (2, 300, 7),
              (70, 256, 72)]  # the last: many k-tiles through the pipelined K % 8 == 0 path
    if os.environ.get("EMU_QUICK"):
        shapes = shapes[:4]
    for dt in ("f32", "bf16"):
        for rows, k, n in shapes:
            for act, with_bias, with_res in ((0, True, False), (1, True, False), (0, True, True), (0, False, False)):
                mem = Memory()
                x, w = rnd(rows * k, 1, dt), rnd(n * k, 1 / math.sqrt(k), dt)
                b, r = rnd(n, 0.5, dt), rnd(rows * n, 1, dt)
                px, pw, pb, pr = mem.upload(x), mem.upload(w), mem.upload(b), mem.upload(r)
                po = poison(mem, rows * n, dt)
                flags = int(with_bias) | (act << 1) | (int(with_res) << 2)
                grid, block = gemm_launch(dt, rows, n)
                run_kernel(module("linear")[f"linear_{dt}"], mem, grid, block,
                           [px, pw, pb if with_bias else 0, pr if with_res else 0, po, rows, n, k, flags])
                ref = as64(x, dt).reshape(rows, k) @ as64(w, dt).reshape(n, k).T
                if with_bias:
                    ref = ref + as64(b, dt)
                if act:
                    ref = gelu(ref)
                if with_res:
                    ref = ref + as64(r, dt).reshape(rows, n)
                check(f"linear rows={rows} k={k} n={n} gelu={act} bias={with_bias} res={with_res}",
                      read(mem, po, rows * n, dt), ref.ravel(), dt)


def t_patch_embed():
    for dt in ("f32", "bf16"):
        # The last three sides are not multiples of the patch: the last I mod P pixels are dropped.
        for b, c, img, p, d in ((1, 3, 8, 4, 5), (2, 3, 32, 8, 64), (1, 1, 6, 3, 17), (2, 3, 12, 2, 1), (3, 2, 15, 5, 33),
                                (2, 3, 30, 8, 17), (1, 3, 13, 4, 9), (1, 2, 45, 14, 24)):
            mem = Memory()
            k = c * p * p
            g = img // p
            n = g * g
            px = rnd(b * c * img * img, 1, dt)
            w = rnd(d * k, 1 / math.sqrt(k), dt)
            bias, pos = rnd(d, 0.5, dt), rnd(n * d, 0.5, dt)
            a = [mem.upload(v) for v in (px, w, bias, pos)]
            po = poison(mem, b * n * d, dt)
            grid, block = gemm_launch(dt, b * n, d)
            run_kernel(module("patch_embed")[f"patch_embed_{dt}"], mem, grid, block,
                       a + [po, b * n, d, k, c, img, p, g])
            used = as64(px, dt).reshape(b, c, img, img)[:, :, :g * p, :g * p]
            P = used.reshape(b, c, g, p, g, p).transpose(0, 2, 4, 1, 3, 5).reshape(b * n, k)
            ref = P @ as64(w, dt).reshape(d, k).T + as64(bias, dt)
            ref = ref.reshape(b, n, d) + as64(pos, dt).reshape(n, d)
            check(f"patch_embed b={b} c={c} i={img} p={p} d={d}", read(mem, po, b * n * d, dt), ref.ravel(), dt)


def t_attention():
    cases = [(1, 1, 1, 1, 1, False), (2, 3, 17, 5, 33, False), (1, 2, 64, 65, 65, False),
             (2, 4, 72, 3, 129, False), (1, 1, 128, 17, 40, False), (3, 2, 16, 1, 17, True),
             (2, 12, 64, 7, 203, False)]
    if os.environ.get("EMU_QUICK"):
        cases = cases[:3] + cases[4:6]
    for dt in ("f32", "bf16"):
        for b, h, hd, nq, nk, bc in cases:
            mem = Memory()
            wd = h * hd
            bq = 1 if bc else b
            q, k, v = rnd(bq * nq * wd, 1, dt), rnd(b * nk * wd, 1, dt), rnd(b * nk * wd, 1, dt)
            a = [mem.upload(t) for t in (q, k, v)]
            po = poison(mem, b * nq * wd, dt)
            scale = hd ** -0.5
            run_kernel(module("attention")[f"attention_{dt}"], mem, ((nq + 7) // 8, h, b), (256, 1, 1),
                       a + [po, nq, nk, h, hd, 0 if bc else nq * wd, float(np.float32(scale) * np.float32(math.log2(math.e)))])
            Q = as64(q, dt).reshape(bq, nq, h, hd)
            K = as64(k, dt).reshape(b, nk, h, hd)
            V = as64(v, dt).reshape(b, nk, h, hd)
            if bc:
                Q = np.broadcast_to(Q, (b, nq, h, hd))
            S = np.einsum("bqhd,bkhd->bhqk", Q, K) * scale
            S = np.exp(S - S.max(-1, keepdims=True))
            S /= S.sum(-1, keepdims=True)
            ref = np.einsum("bhqk,bkhd->bqhd", S, V)
            check(f"attention b={b} h={h} hd={hd} nq={nq} nk={nk} bc={bc}", read(mem, po, b * nq * wd, dt), ref.ravel(), dt)


def t_memory():
    for dt in ("f32", "bf16"):
        for b, n, e, m, d in ((1, 1, 1, 1, 1), (2, 5, 4, 8, 17), (1, 17, 3, 1, 64), (2, 3, 1, 0, 8), (3, 16, 4, 32, 72)):
            mem = Memory()
            h, bank = rnd(b * n * d, 1, dt), rnd(b * e * m * d, 1, dt)
            rw, rb = rnd(e * d, 1, dt), rnd(e, 0.5, dt)
            ph, pbank, prw, prb = (mem.upload(t) for t in (h, bank, rw, rb))
            pj = poison(mem, b * (m + n) * d, dt)
            pg = poison(mem, b * e, "f32")
            fam = module("memory")
            run_kernel(fam[f"memory_read_gate_{dt}"], mem, (b, 1, 1), (256, 1, 1), [ph, prw, prb, pg, n, e, d],
                       dyn_smem=(d + e) * 4)
            jl = b * (m + n) * d
            run_kernel(fam[f"memory_read_mix_{dt}"], mem, (min(max((jl + 255) // 256, 1), 65535), 1, 1), (256, 1, 1),
                       [ph, pbank, pg, pj, b, n, e, m, d])
            H = as64(h, dt).reshape(b, n, d)
            logits = H.mean(1) @ as64(rw, dt).reshape(e, d).T + as64(rb, dt)
            G = np.exp(logits - logits.max(1, keepdims=True))
            G /= G.sum(1, keepdims=True)
            B = as64(bank, dt).reshape(b, e, m, d)
            J = np.concatenate([np.einsum("be,bemd->bmd", G, B), H], axis=1)
            gate = mem.download(pg, b * e, np.float32).astype(np.float64)
            check(f"memory gate b={b} n={n} e={e} m={m} d={d}", gate, G.ravel(), "f32")
            check(f"memory joint b={b} n={n} e={e} m={m} d={d}", read(mem, pj, jl, dt), J.ravel(), dt)
            o, res = rnd(b * (m + n) * d, 1, dt), rnd(b * n * d, 1, dt)
            pbank2 = mem.upload(bank)
            po_, pres = mem.upload(o), mem.upload(res)
            pout = poison(mem, b * n * d, dt)
            total = b * e * m * d + b * n * d
            run_kernel(fam[f"memory_write_{dt}"], mem, (min(max((total + 255) // 256, 1), 65535), 1, 1), (256, 1, 1),
                       [pbank2, pg, po_, pres, pout, b, n, e, m, d])
            g64 = gate.reshape(b, e, 1, 1)
            O = as64(o, dt).reshape(b, m + n, d)
            NB = (1 - g64) * B + g64 * O[:, None, :m, :]
            OUT = as64(res, dt).reshape(b, n, d) + O[:, m:, :]
            check(f"memory out b={b} n={n} e={e} m={m} d={d}", read(mem, pout, b * n * d, dt), OUT.ravel(), dt)
            if m > 0:
                check(f"memory bank b={b} n={n} e={e} m={m} d={d}", read(mem, pbank2, b * e * m * d, dt), NB.ravel(), dt)


TESTS = {"add": t_add, "cast": t_cast, "layer_norm": t_layer_norm, "linear": t_linear,
         "patch_embed": t_patch_embed, "attention": t_attention, "memory": t_memory}

if __name__ == "__main__":
    for name in sys.argv[1:] or TESTS:
        TESTS[name]()
    if FAILS:
        print(f"{len(FAILS)} FAILED")
        sys.exit(1)
    print("all passed")
