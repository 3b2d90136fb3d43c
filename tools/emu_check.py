#!/usr/bin/env python3
"""Run tessera's PTX kernels (kernels/*.ptx) in the emulator (tools/ptx_emu.py) at
shapes no tile divides, outputs poisoned first, and compare with float64
references (the bars of tests/it: rel. L2 1e-5 f32, 2e-2 bf16; casts bit-exact).
Inputs (and the tensor-core attention's lengths) are random, fresh each run:
seeded from the clock, or from TESSERA_TEST_SEED to replay a run; the seed is
printed first.

The launch contract comes from the generator's own kernel objects — block size,
parameter order, tile sizes, dynamic shared memory — exactly as the Rust host
takes it from src/cuda/manifest.rs, so this checks the kernels as the host
launches them. Every launch also counts its shared-memory wavefronts
(ptx_emu.BankStats); at the end each kernel's count is printed, and any
instruction that takes more wavefronts than a conflict-free access would is a
failure: every kernel's shared-memory layout is meant to be free of bank
conflicts, and this keeps it so. Needs numpy (pip install --target .cache/pylib
numpy; then PYTHONPATH=.cache/pylib).

    python3 tools/emu_check.py [group ...]   # groups: see GROUPS at the bottom
    python3 tools/emu_check.py plans PLAN.json   # the host's launch plans (below)
"""
import math
import os
import re
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_ptx  # noqa: E402
from ptxgen.kernels import attention_fa2, attention_sm90, attention_sm90_f32  # noqa: E402
from ptxgen.kernels.attention_common import attention_module  # noqa: E402
from ptxgen.kernels.gemm_common import FLAG_BIAS, FLAG_GELU, FLAG_RES  # noqa: E402
from ptx_emu import (BankStats, Memory, TensorMap, bf16_bits_to_f32, f32_to_bf16_bits, parse_module,  # noqa: E402
                     run_kernel)

KERNELS_DIR = os.path.join(HERE, "..", "kernels")
SPECS = {k.name: k for _, _, ks in gen_ptx.modules() for k in ks}
MODS = {}


def _seed():
    """TESSERA_TEST_SEED when set (a replay), else fresh from the clock, as the Rust
    tests do (tests/it/common/rng.rs); printed first so a failure can be replayed."""
    env = os.environ.get("TESSERA_TEST_SEED", "").strip()
    if not env:
        return time.time_ns() % 2 ** 64
    try:
        seed = int(env)
    except ValueError:
        seed = -1
    if not 0 <= seed < 2 ** 64:
        raise SystemExit(f"TESSERA_TEST_SEED={env!r} is not an integer in [0, 2^64)")
    return seed


SEED = _seed()
RNG = np.random.default_rng(SEED)
FAILS = []
QUICK = bool(os.environ.get("EMU_QUICK"))
BANKS = BankStats()  # every launch's shared-memory wavefronts


def module(name):
    if name not in MODS:
        with open(os.path.join(KERNELS_DIR, name + ".ptx")) as f:
            MODS[name] = parse_module(f.read())
    return MODS[name]


def launch(mem, entry, grid, dyn_smem=0, **args):
    """Launch `entry` as the host does: its block size and parameter order from the
    generator, arguments by parameter name (pointers are addresses, None is null)."""
    spec = SPECS[entry]
    missing = [p.name for p in spec.params if p.name not in args]
    extra = [a for a in args if a not in {p.name for p in spec.params}]
    if missing or extra:
        raise SystemExit(f"{entry}: missing {missing}, unknown {extra}")
    params = [0 if args[p.name] is None else args[p.name] for p in spec.params]
    if dyn_smem > max(spec.dyn_smem, spec.max_dyn_smem):
        raise SystemExit(f"{entry}: {dyn_smem} bytes of dynamic shared memory above its limit")
    # The host's rule (src/cuda/launch.rs, smem_opt_in): a kernel whose static and
    # largest dynamic shared memory pass 48 KiB together is allowed its largest.
    opt_in = spec.static_smem + max(spec.dyn_smem, spec.max_dyn_smem) > 48 * 1024
    # A clustered entry runs in clusters of its `.reqnctapercluster` (the grid a
    # multiple of it, as src/cuda/launch.rs checks).
    cluster = {"cluster": (spec.cluster, 1, 1)} if spec.cluster > 1 else {}
    run_kernel(module(spec.module)[entry], mem, grid, (spec.threads, 1, 1), params,
               dyn_smem=dyn_smem, allow_large_smem=opt_in, banks=BANKS, **cluster)


def grid_stride(entry, n):
    return (min(max((n + SPECS[entry].threads - 1) // SPECS[entry].threads, 1), 65535), 1, 1)


def rnd(n, scale, dt):
    x = (RNG.random(n, dtype=np.float32) * 2 - 1) * np.float32(scale)
    return f32_to_bf16_bits(x) if dt == "bf16" else x.astype(np.float32)


def as64(arr, dt):
    return (bf16_bits_to_f32(arr) if dt == "bf16" else arr).astype(np.float64)


def poison(mem, n, dt):
    if dt == "bf16":
        return mem.upload(np.full(n, 0x7FC0, np.uint16))
    return mem.upload(np.full(n, np.nan, np.float32))


def read(mem, addr, n, dt):
    if dt == "bf16":
        return bf16_bits_to_f32(mem.download(addr, n, np.uint16)).astype(np.float64)
    return mem.download(addr, n, np.float32).astype(np.float64)


def check(what, out, ref, dt, bar=None, magnitude=None):
    """Relative L2 error of out against ref, measured against ‖magnitude‖ when given:
    for sums of terms (linear, patch embedding), the same sum over the terms' absolute
    values, as assert_close_sum of tests/it/common/compare.rs (rounding errors scale
    with the terms, so a 1 x 1 x 1 x·w + b + r that cancels is not held to its tiny
    result)."""
    bar = bar or (1e-5 if dt == "f32" else 2e-2)
    scale = ref if magnitude is None else magnitude
    if not np.all(np.isfinite(out)):
        err = math.inf
    else:
        den = np.sqrt(np.sum(scale * scale))
        num = np.sqrt(np.sum((out - ref) ** 2))
        err = num / den if den > 0 else num
    ok = err <= bar
    print(f"{'ok  ' if ok else 'FAIL'} {what} [{dt}] rel L2 {err:.3e}", flush=True)
    if not ok:
        FAILS.append(what)


def gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


# ---------------------------------------------------------------------------

def t_add():
    for dt in ("f32", "bf16"):
        for n in (1, 17, 1023, 4097):
            mem = Memory()
            a, b = rnd(n, 3, dt), rnd(n, 3, dt)
            out = poison(mem, n, dt)
            e = f"add_{dt}"
            launch(mem, e, grid_stride(e, n), a=mem.upload(a), b=mem.upload(b), out=out, n=n)
            check(f"add n={n}", read(mem, out, n, dt), as64(a, dt) + as64(b, dt), dt)


# The rule of every backend: nearest even, NaN -> 0x7FFF (tests/it/common/suite.rs).
CAST_SPECIALS = [0x3F808000, 0x3F818000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000,
                 0xFFC00000, 0x7F800001, 0x00000001, 0x80011234, 0x00408000, 0x7F7F7FFF,
                 0x7F7F8000, 0xFF7F8001, 0x477FE000, 0x3EAAAAAB]


def bf16_rule(x):
    b = x.view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where((b & 0x7FFFFFFF) > 0x7F800000, np.uint16(0x7FFF), r)


def t_cast():
    for n in (1, 2, 17, 1023, 4097):
        mem = Memory()
        x = rnd(n, 100, "f32")
        sp = np.array(CAST_SPECIALS, np.uint32).view(np.float32)
        x[:min(n, len(sp))] = sp[:n]
        px, py = mem.upload(x), poison(mem, n, "bf16")
        launch(mem, "cast_f32_bf16", grid_stride("cast_f32_bf16", n), x=px, out=py, n=n)
        got = mem.download(py, n, np.uint16)
        ok = np.array_equal(got, bf16_rule(x))
        pb = poison(mem, n, "f32")
        launch(mem, "cast_bf16_f32", grid_stride("cast_bf16_f32", n), x=py, out=pb, n=n)
        back = mem.download(pb, n, np.uint32)
        ok2 = np.array_equal(back, got.astype(np.uint32) << np.uint32(16))
        print(f"{'ok  ' if ok and ok2 else 'FAIL'} cast n={n} f32->bf16 exact={ok} bf16->f32 exact={ok2}")
        if not (ok and ok2):
            FAILS.append(f"cast n={n}")


def layer_norm_entries(dt, cols):
    """The layer-norm entries for rows of `cols`: the block-a-row kernel always (the
    host's fallback), and the warp-a-row one where the host would take it (cols a
    multiple of its vector and at most its MAX_COLS; the emulator's buffers are
    16-byte aligned)."""
    rows_e = f"layer_norm_rows_{dt}"
    c = SPECS[rows_e].consts
    fits = cols % c["VEC"] == 0 and cols <= c["MAX_COLS"]
    return [f"layer_norm_{dt}"] + ([rows_e] if fits else [])


def layer_norm_launch(mem, dt, x, w, b, rows, cols, rms, entry=None):
    """layer_norm_{dt} (rms_norm when rms), or `entry`, as the host launches it, eps
    1e-6; returns the (poisoned first) output's address."""
    out = poison(mem, rows * cols, dt)
    e = entry or f"layer_norm_{dt}"
    gx = SPECS[e].consts["GRID_X"]
    per_block = SPECS[e].consts.get("ROWS_PER_BLOCK", 1)
    blocks = (rows + per_block - 1) // per_block
    launch(mem, e, (min(blocks, gx), (blocks + gx - 1) // gx, 1), x=mem.upload(x),
           w=mem.upload(w), b=mem.upload(b), out=out, rows=rows, cols=cols, eps=1e-6,
           rms=rms)
    return out


def t_layer_norm():
    for dt in ("f32", "bf16"):
        for rms in (0, 1):
            # The warp-a-row kernel takes (65, 64), (7, 1152) in bf16, (9, 40): 5 vectors
            # of 8 or 10 of 4 (lanes without one), (10, 2048) bf16 / (3, 1024) f32:
            # its largest rows (8 vectors a lane), and partial last blocks.
            for rows, cols in ((1, 1), (3, 17), (65, 64), (7, 1152), (2, 4304), (129, 3), (9, 40),
                               (10, 2048), (3, 1024)):
                X = as64(f32_to_bf16_bits(rnd(rows * cols, 2, "f32") + 3), "bf16").reshape(rows, cols)
                x = f32_to_bf16_bits(X.ravel()) if dt == "bf16" else X.ravel().astype(np.float32)
                w, b = rnd(cols, 1.5, dt), rnd(cols, 0.5, dt)
                if rms:
                    # RMS norm: no mean, no bias (b is passed but must not be read into y).
                    ref = X / np.sqrt((X ** 2).mean(1, keepdims=True) + 1e-6) * as64(w, dt)
                else:
                    mu = X.mean(1, keepdims=True)
                    var = ((X - mu) ** 2).mean(1, keepdims=True)
                    ref = (X - mu) / np.sqrt(var + 1e-6) * as64(w, dt) + as64(b, dt)
                name = "rms_norm" if rms else "layer_norm"
                for e in layer_norm_entries(dt, cols):
                    mem = Memory()
                    out = layer_norm_launch(mem, dt, x, w, b, rows, cols, rms, e)
                    check(f"{e} ({name}) rows={rows} cols={cols}", read(mem, out, rows * cols, dt),
                          ref.ravel(), dt)


# The sm_80 tensor-core GEMMs: entry -> (its split-K form, the split-K reduction).
SM80_SPLITK = {"linear_bf16": ("linear_bf16_splitk", "linear_splitk_reduce_bf16"),
               "linear_f32_3xtf32": ("linear_f32_3xtf32_splitk", "linear_splitk_reduce_f32")}


def linear_dtype(entry):
    return "f32" if entry.startswith("linear_f32") else "bf16"


def linear_launch(mem, entry, rows, k, n, x, w, b, r, act, with_bias, with_res, splits=1, res_rows=None):
    """Run `entry` (split-K through its split-K form + the reduction when splits > 1)
    as the host does on host arrays x [rows, k], w [n, k], b [n], r [res_rows, n]
    (output row i adds residual row i mod res_rows; res_rows is rows unless
    given); returns the (poisoned first) output's address."""
    dt = linear_dtype(entry)
    out = poison(mem, rows * n, dt)
    spec = SPECS[entry]
    tm, tn = spec.consts["TILE_M"], spec.consts["TILE_N"]
    tiles = ((rows + tm - 1) // tm) * ((n + tn - 1) // tn)
    maps = {}
    if entry in SM80_SPLITK:  # rasterised 1-D grid
        grid = (tiles, 1, 1)
    elif "_sm90" in entry:  # persistent: fewer blocks than tiles, as on a busy GPU
        # Clustered: units of CM tile rows, one per cluster of CM CTAs (src/cuda/linear.rs).
        cm = spec.cluster
        units = ((rows + tm - 1) // tm + cm - 1) // cm * ((n + tn - 1) // tn)
        grid = (min(units, SM90_BLOCKS) * cm, 1, 1)
    else:
        grid = ((n + tn - 1) // tn, (rows + tm - 1) // tm, 1)
    # The bits the host passes (src/cuda/manifest.rs's LINEAR_FLAG_*, from the same names).
    flags = (FLAG_BIAS if with_bias else 0) | (FLAG_GELU if act else 0) | (FLAG_RES if with_res else 0)
    res_rows = rows if res_rows is None else res_rows
    px, pw = mem.upload(x), mem.upload(w)
    if splits > 1:
        # Split-K as the host runs it: the partial GEMM over (tiles, splits), then the
        # reduction with the epilogue. The partials are poisoned too.
        part = poison(mem, splits * rows * n, "f32")
        partial, reduce_ = SM80_SPLITK[entry]
        launch(mem, partial, (tiles, splits, 1), SPECS[partial].consts["DYN_SMEM"], x=px, w=pw,
               part=part, m=rows, n=n, k=k)
        launch(mem, reduce_, grid_stride(reduce_, rows * n // 2),
               part=part, bias=mem.upload(b) if with_bias else None,
               res=mem.upload(r) if with_res else None, out=out, m=rows, n=n, splits=splits, flags=flags,
               res_rows=res_rows)
    elif "_sm90" in entry:
        maps = {"tmap_x": tensor_map(spec, "tmap_x", px, rows, k),
                "tmap_w": tensor_map(spec, "tmap_w", pw, n, k),
                "tmap_out": tensor_map(spec, "tmap_out", out, rows, n)}
    if splits == 1:
        launch(mem, entry, grid, spec.consts.get("DYN_SMEM", 0), x=px, w=pw,
               bias=mem.upload(b) if with_bias else None, res=mem.upload(r) if with_res else None,
               out=out, m=rows, n=n, k=k, flags=flags, res_rows=res_rows, **maps)
    return out


def linear_case(entry, dt, rows, k, n, act, with_bias, with_res, splits=1, res_rows=None):
    mem = Memory()
    rr = rows if res_rows is None else res_rows
    x, w = rnd(rows * k, 1, dt), rnd(n * k, 1 / math.sqrt(k), dt)
    b, r = rnd(n, 0.5, dt), rnd(rr * n, 1, dt)
    out = linear_launch(mem, entry, rows, k, n, x, w, b, r, act, with_bias, with_res, splits, res_rows)
    X, W = as64(x, dt).reshape(rows, k), as64(w, dt).reshape(n, k)
    ref, mag = X @ W.T, np.abs(X) @ np.abs(W).T
    if with_bias:
        ref, mag = ref + as64(b, dt), mag + np.abs(as64(b, dt))
    if act:
        ref = gelu(ref)
    if with_res:
        R = as64(r, dt).reshape(rr, n)[np.arange(rows) % rr]
        ref, mag = ref + R, mag + np.abs(R)
    what = f"{entry} split-K x{splits}" if splits > 1 else entry
    if res_rows is not None:
        what += f" res_rows={res_rows}"
    check(f"{what} rows={rows} k={k} n={n} gelu={act} bias={with_bias} res={with_res}",
          read(mem, out, rows * n, dt), ref.ravel(), dt, magnitude=mag.ravel())


EPILOGUES = ((0, True, False), (1, True, False), (0, True, True), (1, True, True), (0, False, False))


def t_linear():
    shapes = [(1, 1, 1), (3, 17, 5), (17, 64, 65), (65, 129, 33), (129, 72, 130), (2, 300, 7)]
    if QUICK:
        shapes = shapes[:4]
    for rows, k, n in shapes:
        for epi in EPILOGUES:
            linear_case("linear_f32", "f32", rows, k, n, *epi)
            linear_case("linear_bf16_any", "bf16", rows, k, n, *epi)
    # A residual of fewer rows, repeating (see t_linear_sm90).
    for entry, dt in (("linear_f32", "f32"), ("linear_bf16_any", "bf16")):
        linear_case(entry, dt, 129, 72, 130, 0, True, True, res_rows=7)


def t_linear_sm80():
    # K and N multiples of 8 (bf16) or 4 (f32: the host's conditions), M, N, K not
    # tile multiples; the 200 / 264 case has several k-tiles through the 4-stage
    # pipeline (13 of them in f32, whose k-tile is 16).
    for entry, dt, shapes in (("linear_bf16", "bf16", [(1, 8, 8), (130, 72, 136), (257, 200, 264)]),
                              ("linear_f32_3xtf32", "f32", [(1, 4, 4), (130, 76, 132), (257, 200, 268)])):
        for rows, k, n in shapes[:2] if QUICK else shapes:
            for epi in EPILOGUES:
                linear_case(entry, dt, rows, k, n, *epi)
    # Split-K: 3 slices of 520 (17 bf16 k-tiles: 6, 6, 5; 33 f32 ones: 11 each), and
    # more slices than k-tiles (the empty ones add zeros).
    for entry, dt, cases in (("linear_bf16", "bf16", ((130, 520, 136, 3), (5, 40, 8, 3))),
                             ("linear_f32_3xtf32", "f32", ((130, 520, 132, 3), (5, 20, 8, 3)))):
        for rows, k, n, splits in cases:
            for epi in EPILOGUES[:3] if QUICK else EPILOGUES:
                linear_case(entry, dt, rows, k, n, *epi, splits=splits)
    # A residual of fewer rows, repeating (see t_linear_sm90), in the kernel's
    # epilogue and in the split-K reduction.
    for entry, dt, n in (("linear_bf16", "bf16", 136), ("linear_f32_3xtf32", "f32", 132)):
        for res_rows in (45, 7):
            linear_case(entry, dt, 257, 200, n, 1, True, True, res_rows=res_rows)
        linear_case(entry, dt, 130, 520, n, 0, True, True, splits=3, res_rows=7)


# Blocks of the persistent Hopper GEMM in these runs (the host launches one per SM).
SM90_BLOCKS = 2


def tensor_map(spec, name, addr, rows, cols):
    """The tensor map the host encodes (src/cuda/launch.rs, tensor_map_args) for
    the matrix [rows, cols] at addr: the element type, box and swizzle the
    generator declares for parameter `name`, zero fill outside."""
    p = next(q for q in spec.params if q.name == name)
    box_rows, box_cols = p.box
    return TensorMap(addr, elem_bytes=p.elem_bytes, dims=(cols, rows), stride=cols * p.elem_bytes,
                     box=(box_cols, box_rows), swizzle=p.swizzle)


def attention_maps(entry, **bufs):
    """The tensor maps of an attention entry that takes them (the Hopper kernels),
    as src/cuda/attention.rs encodes them: each over the whole buffer of its
    pointer parameter, bufs[name] = (address, elements, ld), as rows of ld."""
    spec = SPECS[entry]
    return {p.name: tensor_map(spec, p.name, bufs[p.of][0], bufs[p.of][1] // bufs[p.of][2], bufs[p.of][2])
            for p in spec.params if p.kind == "tmap"}


def t_linear_sm90():
    # As t_linear_sm80: K and N multiples of 8; 300 x 200 x 520 gives 9 tiles of
    # 128 x 256 over 2 persistent blocks (4 k-tiles each: the 4-stage ring wraps
    # across tiles); 129 x 328 x 520 has 6 k-tiles, so it wraps within a tile too.
    # linear_bf16_sm90_n192 (128 x 192 tiles, 4 stages): 300 x 200 x 520 is 9 tiles
    # of 128 x 192, the last 136 columns wide; 129 x 392 x 200 wraps its ring within
    # a tile (7 k-tiles). The epilogue's TMA stores: row boxes past M (130, 300 rows),
    # column boxes past N (136), and at 192 wide (3 subtiles a tile) staging buffers
    # that alternate across tiles.
    # The clustered kernels (_c2: pairs of CTAs along M, W tiles multicast): 2
    # clusters of 2; at 300 rows the second unit's lower tile row lies past M (it
    # loads zeros, stores nothing, and still multicasts its half of W); at 130 x
    # 72 x 136 one unit; 129 x 328 x 520 wraps the ring within a tile and gives
    # each cluster several tiles.
    shapes = [(1, 8, 8), (130, 72, 136), (300, 200, 520), (129, 328, 520)]
    shapes192 = [(130, 72, 136), (300, 200, 520), (129, 392, 200)]
    shapes_c2 = [(1, 8, 8), (300, 200, 520), (129, 328, 520)]
    shapes192_c2 = [(300, 200, 520), (129, 392, 200)]
    # linear_f32_sm90 (128 x 192 tiles, K 32 a stage, 3 stages): 1 x 8 x 8 is one
    # partial k-tile; 130 x 72 x 136 three (the last 8 wide: TMA zero-fills K);
    # 129 x 100 x 392 has 4 k-tiles a tile and 6 tiles over 2 blocks, so the ring
    # wraps within and across tiles, and the last tile column is 8 wide; at
    # 33 x 12 x 196 it is 4 wide (N a multiple of 4, not 8: half of a column
    # group's threads lie past N).
    shapes_f32 = [(1, 8, 8), (130, 72, 136), (129, 100, 392), (33, 12, 196)]
    # The ping-pong kernels (linear_bf16_sm90_pp*: 128 x 128 tiles, each consumer
    # warpgroup on every other tile of its block, 6 stages): 1 x 8 x 8 leaves
    # warpgroup 1 without a tile; 300 x 200 x 520 is 15 tiles, 3-4 a warpgroup, of
    # 4 k-tiles (the ring wraps across tiles, each warpgroup skipping the other's
    # 4); 129 x 840 x 264 has 14 k-tiles a tile, over twice the stages, so a
    # warpgroup that waited on the ring before its turn would pass a full
    # barrier two phases early and take the other's stage (seen to fail with the
    # turn's wait left out, and to deadlock with the ring skip left out), and a
    # last tile column 8 wide. In pairs: 10 units over 2 clusters.
    shapes_pp = [(1, 8, 8), (300, 200, 520), (129, 840, 264)]
    shapes_pp_c2 = [(300, 200, 520), (129, 840, 264)]
    if QUICK:
        shapes, shapes192 = shapes[:2], shapes192[:1]
        shapes_c2, shapes192_c2 = shapes_c2[1:2], shapes192_c2[:1]
        shapes_f32 = shapes_f32[1:2]
        shapes_pp, shapes_pp_c2 = shapes_pp[1:2], shapes_pp_c2[1:2]
    for entry, cases in (("linear_bf16_sm90", shapes), ("linear_bf16_sm90_n192", shapes192),
                         ("linear_bf16_sm90_c2", shapes_c2), ("linear_bf16_sm90_n192_c2", shapes192_c2),
                         ("linear_bf16_sm90_pp", shapes_pp), ("linear_bf16_sm90_pp_c2", shapes_pp_c2),
                         ("linear_f32_sm90", shapes_f32)):
        for rows, k, n in cases:
            for epi in EPILOGUES:
                linear_case(entry, linear_dtype(entry), rows, k, n, *epi)
        # A residual of fewer rows, repeating (patch embedding's position
        # embedding, one table for every image): 45 and 7 rows wrap inside the
        # tiles' 128 rows, at different rows in each tile.
        rows, k, n = cases[-1]
        for res_rows in (45, 7) if rows > 45 else (7, 1):
            linear_case(entry, linear_dtype(entry), rows, k, n, 0, True, True, res_rows=res_rows)
        # The generic shared accesses (the epilogue's stores into the swizzled
        # staging buffers) must be free of bank conflicts.
        bad = bank_conflicts(entry)
        req, wav, _ = BANKS.totals(entry)
        print(f"{'FAIL' if bad or not req else 'ok  '} {entry}: {req} shared-memory requests, {wav} wavefronts"
              + "".join(f"\n       line {r[1]} `{r[2]}`: {r[4]} wavefronts for {r[3]} requests" for r in bad[:4]),
              flush=True)
        if bad or not req:
            FAILS.append(f"shared-memory bank conflicts of {entry}")


def patch_embed_launch(mem, dt, px, w, bias, pos, b, c, img, p, d):
    """patch_embed_{dt} as the host launches it; returns the (poisoned first) output's
    address."""
    g = img // p
    n = g * g
    out = poison(mem, b * n * d, dt)
    e = f"patch_embed_{dt}"
    tm, tn = SPECS[e].consts["TILE_M"], SPECS[e].consts["TILE_N"]
    launch(mem, e, ((d + tn - 1) // tn, (b * n + tm - 1) // tm, 1), x=mem.upload(px),
           w=mem.upload(w), bias=mem.upload(bias), res=mem.upload(pos), out=out,
           m=b * n, n=d, k=c * p * p, c=c, i=img, p=p, g=g)
    return out


def t_patch_embed():
    for dt in ("f32", "bf16"):
        # The last three sides are not multiples of the patch: the last I mod P pixels are dropped.
        for b, c, img, p, d in ((1, 3, 8, 4, 5), (2, 3, 32, 8, 64), (1, 1, 6, 3, 17), (2, 3, 12, 2, 1),
                                (3, 2, 15, 5, 33), (2, 3, 30, 8, 17), (1, 3, 13, 4, 9), (1, 2, 45, 14, 24)):
            mem = Memory()
            k = c * p * p
            g = img // p
            n = g * g
            px = rnd(b * c * img * img, 1, dt)
            w = rnd(d * k, 1 / math.sqrt(k), dt)
            bias, pos = rnd(d, 0.5, dt), rnd(n * d, 0.5, dt)
            e = f"patch_embed_{dt}"
            out = patch_embed_launch(mem, dt, px, w, bias, pos, b, c, img, p, d)
            used = as64(px, dt).reshape(b, c, img, img)[:, :, :g * p, :g * p]
            P = used.reshape(b, c, g, p, g, p).transpose(0, 2, 4, 1, 3, 5).reshape(b * n, k)
            W, B, PO = as64(w, dt).reshape(d, k), as64(bias, dt), as64(pos, dt).reshape(n, d)
            ref = (P @ W.T + B).reshape(b, n, d) + PO
            mag = (np.abs(P) @ np.abs(W).T + np.abs(B)).reshape(b, n, d) + np.abs(PO)
            check(f"{e} b={b} c={c} i={img} p={p} d={d}", read(mem, out, b * n * d, dt), ref.ravel(), dt,
                  magnitude=mag.ravel())


def patches_of(px, b, c, img, p):
    """The rows [b·g·g, c·p·p] of the patches of images px [b, c, img, img]."""
    g = img // p
    used = px.reshape(b, c, img, img)[:, :, :g * p, :g * p]
    return used.reshape(b, c, g, p, g, p).transpose(0, 2, 4, 1, 3, 5).reshape(b * g * g, c * p * p)


def patchify_launch(mem, dt, x, rows, kp, b_c_img_p):
    """patchify_{dt} as the host launches it over x (an address); returns the
    (poisoned first) output's address."""
    c, img, p = b_c_img_p
    out = poison(mem, rows * kp, dt)
    e = f"patchify_{dt}"
    launch(mem, e, grid_stride(e, rows * kp // SPECS[e].consts["VEC"]), x=x, out=out, rows=rows, kp=kp,
           k=c * p * p, c=c, i=img, p=p, g=img // p)
    return out


def t_patchify():
    """The patches as rows, padded with zeros to a multiple of the vector: a copy,
    so bit-exact (NaN and ±inf among the pixels); and a weight [d, c, p, p]
    padded the same way (images of one patch)."""
    for dt in ("f32", "bf16"):
        v = SPECS[f"patchify_{dt}"].consts["VEC"]
        for b, c, img, p in ((1, 3, 8, 4), (2, 3, 30, 14), (3, 1, 7, 3), (2, 2, 45, 14), (1, 3, 16, 16)):
            g = img // p
            rows, kk = b * g * g, c * p * p
            kp = -(-kk // v) * v
            mem = Memory()
            px = rnd(b * c * img * img, 1, dt)
            for j, special in enumerate((np.nan, np.inf, -np.inf)):
                put(px, 7 * j + 1, special, dt)
            out = patchify_launch(mem, dt, mem.upload(px), rows, kp, (c, img, p))
            want = np.zeros((rows, kp))
            want[:, :kk] = patches_of(as64(px, dt), b, c, img, p)
            got = read(mem, out, rows * kp, dt).reshape(rows, kp)
            ok = np.array_equal(got, want, equal_nan=True)
            what = f"patchify_{dt} b={b} c={c} i={img} p={p} kp={kp}"
            print(f"{'ok  ' if ok else 'FAIL'} {what} (bit-exact)", flush=True)
            if not ok:
                FAILS.append(what)
        # A weight [5, 3, 14, 14] as [5, KP].
        d, c, p = 5, 3, 14
        kk = c * p * p
        kp = -(-kk // v) * v
        mem = Memory()
        w = rnd(d * kk, 1, dt)
        out = patchify_launch(mem, dt, mem.upload(w), d, kp, (c, p, p))
        want = np.zeros((d, kp))
        want[:, :kk] = as64(w, dt).reshape(d, kk)
        ok = np.array_equal(read(mem, out, d * kp, dt).reshape(d, kp), want)
        print(f"{'ok  ' if ok else 'FAIL'} patchify_{dt} weight {d}x{kk} -> {d}x{kp} (bit-exact)", flush=True)
        if not ok:
            FAILS.append(f"patchify_{dt} weight")


def attention_ref(Q, K, V, scale):
    """Q [b, nq, h, hd], K/V [b, nk, h, hd] → [b, nq, h, hd], float64."""
    S = np.einsum("bqhd,bkhd->bhqk", Q, K) * scale
    S = np.exp(S - S.max(-1, keepdims=True))
    S /= S.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", S, V)


def attention_grid(entry, qblocks, h, b, turns=1):
    """The grid and the extra parameters of an attention launch over `qblocks`
    query blocks of `h` heads of `b` sequences, as the host sizes it: the Hopper
    kernels are persistent (SM90_BLOCKS blocks, fewer than the items, as on a busy
    GPU, so blocks run several items), the others one block an item. `turns`:
    the Hopper kernels' switch of the warpgroups' turns (the host's default 1)."""
    if "_sm90" in entry:
        items = qblocks * h * b
        return (min(items, SM90_BLOCKS), 1, 1), {"qblocks": qblocks, "items": items, "turns": turns}
    return (qblocks, h, b), {}


def attention_launch(mem, entry, dt, q, k, v, b, h, hd, nq, nk, bc=False, turns=1):
    """Run `entry` as the host does on host arrays q [b (1 when bc), nq, h·hd], k/v
    [b, nk, h·hd]; returns the (poisoned first) output's address."""
    wd = h * hd
    out = poison(mem, b * nq * wd, dt)
    spec = SPECS[entry]
    rows = spec.consts["ROWS"]
    qa, ka, va = mem.upload(q), mem.upload(k), mem.upload(v)
    maps = attention_maps(entry, q=(qa, q.size, wd), k=(ka, k.size, wd), v=(va, v.size, wd))
    grid, extra = attention_grid(entry, (nq + rows - 1) // rows, h, b, turns)
    launch(mem, entry, grid, spec.consts.get("DYN_SMEM", 0), **maps, **extra,
           q=qa, k=ka, v=va, out=out, cu=None, nq=nq, nk=nk,
           heads=h, hd=hd, ldq=wd, ldkv=wd, ldo=wd, q_col=0, k_col=0, v_col=0,
           q_bstride=0 if bc else nq, q_varlen=0,
           scale=float(np.float32(hd ** -0.5) * np.float32(math.log2(math.e))))
    return out


def attention_case(entry, dt, b, h, hd, nq, nk, bc=False, neg_inf=False, turns=1):
    mem = Memory()
    wd = h * hd
    bq = 1 if bc else b
    q, k, v = rnd(bq * nq * wd, 1, dt), rnd(b * nk * wd, 1, dt), rnd(b * nk * wd, 1, dt)
    if neg_inf:
        # Keys 0..69 score −∞ in every head (a whole first tile of any kernel).
        qv = q.reshape(bq * nq, h, hd)
        kv = k.reshape(b, nk, h, hd)
        if dt == "bf16":
            qv[:, :, 0] = f32_to_bf16_bits(np.float32(0.75))
            kv[:, :70, :, 0] = f32_to_bf16_bits(np.float32(-np.inf))
        else:
            qv[:, :, 0] = 0.75
            kv[:, :70, :, 0] = -np.inf
    out = attention_launch(mem, entry, dt, q, k, v, b, h, hd, nq, nk, bc, turns)
    scale = hd ** -0.5
    Q = as64(q, dt).reshape(bq, nq, h, hd)
    if bc:
        Q = np.broadcast_to(Q, (b, nq, h, hd))
    ref = attention_ref(Q, as64(k, dt).reshape(b, nk, h, hd), as64(v, dt).reshape(b, nk, h, hd), scale)
    tag = (" -inf rows" if neg_inf else "") + ("" if turns else " turns off")
    check(f"{entry} b={b} h={h} hd={hd} nq={nq} nk={nk} bc={bc}{tag}", read(mem, out, b * nq * wd, dt),
          ref.ravel(), dt)


def t_attention():
    cases = [(1, 1, 1, 1, 1, False), (2, 3, 17, 5, 33, False), (1, 2, 64, 65, 65, False),
             (2, 4, 72, 3, 129, False), (1, 1, 128, 17, 40, False), (3, 2, 16, 1, 17, True),
             (2, 12, 64, 7, 203, False)]
    if QUICK:
        cases = cases[:3] + cases[4:6]
    for dt in ("f32", "bf16"):
        for case in cases:
            attention_case(f"attention_{dt}", dt, *case)
        attention_case(f"attention_{dt}", dt, 1, 2, 40, 9, 100, neg_inf=True)
    t_attention_fused()


def fa2_entry(hd, dt="bf16"):
    """The host's choice (src/cuda/attention.rs, fa2_spec): the least padded head
    dim ≥ hd (bf16: hd rounded up to 16)."""
    return f"attention_{dt}_hd{min(d for d in attention_fa2.HEAD_DIMS[dt] if d >= hd)}"


def fa2_head_dims(dt="bf16"):
    """Every tensor-core attention entry of element type dt in the committed
    kernels/attention.ptx, by padded head dim: all are checked, whatever variants
    the generator emits. The generator's kernels must be the same set (an entry
    without a launch contract, or a contract whose entry is not committed, fails)."""
    name = re.compile(rf"attention_{dt}_hd(\d+)$")
    mod = attention_module(dt)
    committed = {int(m.group(1)) for e in module(mod) if (m := name.match(e))}
    gen = {e: k for e, k in SPECS.items() if k.module == mod and name.match(e)}
    spec = {int(name.match(e).group(1)) for e in gen}
    bad = [e for e, k in gen.items() if k.consts.get("HD") != int(name.match(e).group(1))]
    ok = bool(committed) and committed == spec == set(attention_fa2.HEAD_DIMS[dt]) and not bad
    print(f"{'ok  ' if ok else 'FAIL'} attention_{dt}_hd* entries: committed {sorted(committed)}, "
          f"generator {sorted(spec)}" + (f", HD const wrong: {bad}" if bad else ""))
    if not ok:
        FAILS.append(f"attention_{dt}_hd* entry list")
    return sorted(committed & spec)


def t_attention_fa2():
    # Head dims 64, 72 (so400m), 80, 128 and small ones; nk 1 and 64, nq 16 (the least
    # the host sends here).
    cases = [(1, 2, 64, 65, 130), (1, 1, 72, 17, 1), (2, 1, 80, 100, 64), (1, 1, 128, 20, 70),
             (1, 2, 24, 16, 33), (1, 1, 8, 70, 200)]
    if QUICK:
        cases = cases[:3]
    for b, h, hd, nq, nk in cases:
        attention_case(fa2_entry(hd), "bf16", b, h, hd, nq, nk)
    # Every generated entry, at both head dims the host sends it (hd a multiple of 8:
    # HD − 8, padded, and HD), at fresh lengths no tile divides: q_len ≥ 16 with a
    # partial query tile, kv_len with a partial last key tile — three key tiles for
    # the padded case (the double-buffered K/V stages wrap), two for the other.
    for dt in ("bf16", "f32"):
        kt = attention_fa2.BC[dt]  # keys per K/V tile
        # hd a multiple of 8 (bf16) or 4 (f32): the least the host sends an entry,
        # padded, and HD itself.
        step = 8 if dt == "bf16" else 4
        dims = fa2_head_dims(dt)
        for HD in dims:
            entry = f"attention_{dt}_hd{HD}"
            qt = SPECS[entry].consts["ROWS"]  # query rows per block
            below = max([d for d in attention_fa2.HEAD_DIMS[dt] if d < HD], default=0)
            for b, h, hd, nq_lo, nq_hi, tiles in ((1, 2, below + step, qt + 1, 2 * qt, 3),
                                                  (2, 1, HD, 16, qt, 2)):
                nq = int(RNG.integers(nq_lo, nq_hi))
                nk = int(RNG.integers((tiles - 1) * kt + 1, tiles * kt))
                assert fa2_entry(hd, dt) == entry and nq >= 16 and nq % qt and nk % kt
                attention_case(entry, dt, b, h, hd, nq, nk)
        attention_case(fa2_entry(64, dt), dt, 1, 2, 64, 20, 150, neg_inf=True)
    t_attention_varlen()
    t_attention_varlen(dt="f32", hd=72)


def t_attention_varlen(entry=None, h=2, hd=64, dt="bf16", lens=(5, 150, 33)):
    """Packed sequences of lengths `lens` in one fused qkv [T, 3·h·hd] tensor:
    q, k, v are column blocks (ld = 3·w), out [T, w]; attention stays inside each
    sequence."""
    wd = h * hd
    lens = list(lens)
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.uint32)
    total = int(cu[-1])
    mem = Memory()
    qkv = rnd(total * 3 * wd, 1, dt)
    base = mem.upload(qkv)
    out = poison(mem, total * wd, dt)
    entry = entry or fa2_entry(hd, dt)
    spec = SPECS[entry]
    rows = spec.consts["ROWS"]
    scale = hd ** -0.5
    maps = attention_maps(entry, **{x: (base, qkv.size, 3 * wd) for x in "qkv"})
    grid, extra = attention_grid(entry, (max(lens) + rows - 1) // rows, h, len(lens))
    launch(mem, entry, grid, spec.consts.get("DYN_SMEM", 0), **maps, **extra,
           q=base, k=base, v=base, out=out, cu=mem.upload(cu), nq=max(lens), nk=max(lens),
           heads=h, hd=hd, ldq=3 * wd, ldkv=3 * wd, ldo=wd, q_col=0, k_col=wd, v_col=2 * wd,
           q_bstride=0, q_varlen=1,
           scale=float(np.float32(scale) * np.float32(math.log2(math.e))))
    X = as64(qkv, dt).reshape(total, 3, h, hd)
    ref = np.zeros((total, h, hd))
    for s in range(len(lens)):
        a, e = cu[s], cu[s + 1]
        ref[a:e] = attention_ref(X[None, a:e, 0], X[None, a:e, 1], X[None, a:e, 2], scale)[0]
    check(f"{entry} varlen lens={lens} fused qkv", read(mem, out, total * wd, dt), ref.ravel(), dt)


def t_attention_packed_keys(entry, dt, h=2, hd=17, nq=1):
    """The pooling head over a packed batch: one shared probe q [1, nq, w] (q_varlen
    0, q_bstride 0) attends to each sequence's rows of a fused kv [T, 2·w]; out
    [B, nq, w]."""
    wd = h * hd
    lens = [5, 70, 33]
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.uint32)
    total, b = int(cu[-1]), len(lens)
    mem = Memory()
    q, kv = rnd(nq * wd, 1, dt), rnd(total * 2 * wd, 1, dt)
    out = poison(mem, b * nq * wd, dt)
    spec = SPECS[entry]
    rows = spec.consts["ROWS"]
    scale = hd ** -0.5
    kvb, qa = mem.upload(kv), mem.upload(q)
    maps = attention_maps(entry, q=(qa, q.size, wd), k=(kvb, kv.size, 2 * wd), v=(kvb, kv.size, 2 * wd))
    grid, extra = attention_grid(entry, (nq + rows - 1) // rows, h, b)
    launch(mem, entry, grid, spec.consts.get("DYN_SMEM", 0), **maps, **extra,
           q=qa, k=kvb, v=kvb, out=out, cu=mem.upload(cu), nq=nq, nk=max(lens),
           heads=h, hd=hd, ldq=wd, ldkv=2 * wd, ldo=wd, q_col=0, k_col=0, v_col=wd,
           q_bstride=0, q_varlen=0,
           scale=float(np.float32(scale) * np.float32(math.log2(math.e))))
    Q = as64(q, dt).reshape(1, nq, h, hd)
    KV = as64(kv, dt).reshape(total, 2, h, hd)
    ref = np.zeros((b, nq, h, hd))
    for s in range(b):
        a, e = cu[s], cu[s + 1]
        ref[s] = attention_ref(Q, KV[None, a:e, 0], KV[None, a:e, 1], scale)[0]
    check(f"{entry} packed keys lens={lens} shared probe nq={nq}", read(mem, out, b * nq * wd, dt),
          ref.ravel(), dt)


SM90_NAME = re.compile(r"attention_bf16_sm90_hd(\d+)$")


def committed_head_dims(mod, name, generator):
    """The head dims of the entries of kernels/`mod`.ptx whose names match `name`
    (a regex capturing the head dim); a failure unless they are the generator's."""
    committed = {int(m.group(1)) for e in module(mod) if (m := name.match(e))}
    ok = committed == set(generator)
    label = name.pattern.replace("(\\d+)$", "*")
    print(f"{'ok  ' if ok else 'FAIL'} {label} entries: committed {sorted(committed)}, generator {sorted(generator)}")
    if not ok:
        FAILS.append(f"{label} entry list")
    return committed


def t_attention_sm90():
    """The Hopper kernels (the host's choice on capability 9.0 for exactly these
    head dims): lengths no tile divides, enough key tiles for the 3-stage ring to
    wrap, a fused qkv packed batch (rows of the next sequence inside the last
    K/V tile), a −∞ first tile."""
    committed = committed_head_dims("attention_sm90", SM90_NAME, attention_sm90.HEAD_DIMS)
    kt = attention_sm90.BC
    for hd in sorted(committed):
        entry = f"attention_bf16_sm90_hd{hd}"
        nq = int(RNG.integers(kt + 1, 2 * kt))
        nk = int(RNG.integers(1, kt)) if QUICK else int(RNG.integers(3 * kt + 1, 4 * kt))
        assert nq % kt and nk % kt
        attention_case(entry, "bf16", 1, 2, hd, nq, nk)
        if not QUICK:
            attention_case(entry, "bf16", 2, 1, hd, 16, int(RNG.integers(kt + 1, 2 * kt)))
    for hd in (64, 72):
        t_attention_varlen(f"attention_bf16_sm90_hd{hd}", h=2, hd=hd, lens=(5, 150, 33))
    # Persistent: 3 items a block (of SM90_BLOCKS), so hd 128's one Q buffer turns
    # over twice; the varlen cases above run 6 items a block (two Q buffers, each
    # three times) and skip the query blocks past a short sequence.
    attention_case("attention_bf16_sm90_hd128", "bf16", 3, 1, 128, 130, 140)
    attention_case("attention_bf16_sm90_hd64", "bf16", 1, 2, 64, 20, 150, neg_inf=True)
    # The warpgroups' turns switched off (the host's TESSERA_CUDA_SM90_TURNS=off).
    attention_case("attention_bf16_sm90_hd72", "bf16", 3, 1, 72, 130, 300, turns=0)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        nf_attention("attention_bf16_sm90_hd72", "bf16", 2, 72, 20, 70)
        nf_next_sequence("attention_bf16_sm90_hd72")


SM90_F32_NAME = re.compile(r"attention_f32_sm90_hd(\d+)$")


def t_attention_sm90_f32():
    """The f32 Hopper kernels (3xTF32 wgmma; the host's choice on capability 9.0
    at head dims 64 and 72): lengths no tile divides, enough key tiles for the
    2-stage ring to wrap several times, several items a block (the one Q buffer
    turning over), a fused qkv packed batch, a −∞ first tile, ±inf and NaN in
    the inputs (the converters' exact split of K and V, P's small part where a
    tf32-exact P meets an infinite V) and in the next sequence's rows."""
    committed = committed_head_dims("attention_sm90_f32", SM90_F32_NAME, attention_sm90_f32.HEAD_DIMS)
    kt, qt = attention_sm90_f32.BC, attention_sm90_f32.ROWS
    for hd in sorted(committed):
        entry = f"attention_f32_sm90_hd{hd}"
        nq = int(RNG.integers(qt + 1, 2 * qt))
        nk = int(RNG.integers(1, kt)) if QUICK else int(RNG.integers(3 * kt + 1, 4 * kt))
        assert nq % qt and nk % kt
        attention_case(entry, "f32", 1, 2, hd, nq, nk)
        if QUICK:
            continue
        # 3 items a block (of SM90_BLOCKS): the Q buffer's phase flips and the
        # K/V ring runs on across items.
        attention_case(entry, "f32", 3, 1, hd, int(RNG.integers(qt + 1, 2 * qt)), int(RNG.integers(kt + 1, 3 * kt)))
        attention_case(entry, "f32", 2, 1, hd, 16, int(RNG.integers(kt + 1, 2 * kt)))
        t_attention_varlen(entry, h=2, hd=hd, dt="f32", lens=(5, 150, 33))
        attention_case(entry, "f32", 1, 2, hd, 20, 150, neg_inf=True)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            nf_attention(entry, "f32", 2, hd, 20, 70)
            nf_next_sequence(entry, hd=hd, dt="f32")


def nf_next_sequence(entry, h=2, hd=72, nq=20, nk=70, dt="bf16"):
    """Two fixed-length sequences: sequence 0's last K/V tile reads sequence 1's
    rows, whose keys and values hold NaN and ±inf; sequence 0 must not see them."""
    wd = h * hd
    q, k, v = rnd(2 * nq * wd, 1, dt), rnd(2 * nk * wd, 1, dt), rnd(2 * nk * wd, 1, dt)
    for row, val in ((nk + 1, np.nan), (nk + 2, np.inf), (nk + 5, -np.inf)):
        put(k, row * wd + 3, val, dt)
        put(v, row * wd + hd + 1, val, dt)
    mem = Memory()
    out = attention_launch(mem, entry, dt, q, k, v, 2, h, hd, nq, nk)
    Q, K, V = (as64(x, dt).reshape(2, -1, h, hd) for x in (q, k, v))
    ref = np.stack([nf_attention_ref(Q[i], K[i], V[i], hd ** -0.5) for i in range(2)])
    check_nonfinite(f"{entry} b=2 h={h} hd={hd} nq={nq} nk={nk}, NaN/±inf in sequence 1's keys and values",
                    read(mem, out, 2 * nq * wd, dt), ref, dt, ("nan", "finite"))


def t_attention_fused():
    """The exact SIMT kernels on the same fused, packed layout, and the pooling
    head's probe over a packed batch."""
    t_attention_varlen("attention_bf16", 2, 17)
    # The shipped f32 CUDA self-attention over a packed batch (SigLIP 2), a
    # sequence of one row included.
    t_attention_varlen("attention_f32", 2, 17, dt="f32", lens=(5, 70, 1, 33))
    for dt in ("f32", "bf16"):
        t_attention_packed_keys(f"attention_{dt}", dt)


def memory_read_launch(mem, dt, h, bank, rw, rb, b, n, e, m, d):
    """memory_read_gate_{dt} then memory_read_mix_{dt} as the host launches them;
    returns the (poisoned first) joint's and f32 gate's addresses."""
    ph, pbank = mem.upload(h), mem.upload(bank)
    pj = poison(mem, b * (m + n) * d, dt)
    pg = poison(mem, b * e, "f32")
    jl = b * (m + n) * d
    # The host's choice (src/cuda/memory.rs): split over the tokens, with the
    # partial logits in joint's first bytes, when there is more than one split and
    # they fit there; else one block per sequence.
    rows = SPECS[f"memory_read_gate_part_{dt}"].consts["ROWS"]
    splits = -(-n // rows)
    if 1 < splits <= 65535 and b * splits * e * 4 <= jl * (2 if dt == "bf16" else 4):
        prw = mem.upload(rw)
        launch(mem, f"memory_read_gate_part_{dt}", (b, splits, 1), (d + e) * 4, h=ph, rw=prw,
               part=pj, n=n, e=e, d=d)
        launch(mem, f"memory_read_gate_finish_{dt}", (b, 1, 1), e * 4, part=pj,
               rb=mem.upload(rb), gate=pg, s=splits, e=e)
    else:
        launch(mem, f"memory_read_gate_{dt}", (b, 1, 1), (d + e) * 4, h=ph, rw=mem.upload(rw),
               rb=mem.upload(rb), gate=pg, n=n, e=e, d=d)
    launch(mem, f"memory_read_mix_{dt}", grid_stride(f"memory_read_mix_{dt}", jl), h=ph,
           bank=pbank, gate=pg, joint=pj, b=b, n=n, e=e, m=m, d=d)
    return pj, pg


def memory_write_launch(mem, dt, bank, pg, o, res, b, n, e, m, d):
    """memory_write_{dt} on a fresh copy of `bank` with the device gate at pg;
    returns the updated bank's and the (poisoned first) output's addresses."""
    pbank = mem.upload(bank)
    pout = poison(mem, b * n * d, dt)
    total = b * e * m * d + b * n * d
    launch(mem, f"memory_write_{dt}", grid_stride(f"memory_write_{dt}", total), bank=pbank,
           gate=pg, o=mem.upload(o), res=mem.upload(res), out=pout, b=b, n=n, e=e, m=m, d=d)
    return pbank, pout


def t_memory():
    for dt in ("f32", "bf16"):
        # The last: (D + E)·4 = 48 KiB dynamic + the gate's static bytes, above the
        # default limit: launched only because the host's rule opts in (launch()).
        # Then the gate split over the tokens (N > ROWS, none a multiple of it, D
        # above the block's 256 threads), and a case whose partial logits do not
        # fit in joint (one block per sequence again).
        for b, n, e, m, d in ((1, 1, 1, 1, 1), (2, 5, 4, 8, 17), (1, 17, 3, 1, 64), (2, 3, 1, 0, 8), (3, 16, 4, 32, 72),
                              (1, 2, 4, 1, 12284), (2, 75, 4, 3, 40), (1, 300, 3, 2, 260), (1, 70, 64, 0, 1)):
            mem = Memory()
            h, bank = rnd(b * n * d, 1, dt), rnd(b * e * m * d, 1, dt)
            rw, rb = rnd(e * d, 1, dt), rnd(e, 0.5, dt)
            pj, pg = memory_read_launch(mem, dt, h, bank, rw, rb, b, n, e, m, d)
            jl = b * (m + n) * d
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
            pbank2, pout = memory_write_launch(mem, dt, bank, pg, o, res, b, n, e, m, d)
            g64 = gate.reshape(b, e, 1, 1)
            O = as64(o, dt).reshape(b, m + n, d)
            NB = (1 - g64) * B + g64 * O[:, None, :m, :]
            OUT = as64(res, dt).reshape(b, n, d) + O[:, m:, :]
            check(f"memory out b={b} n={n} e={e} m={m} d={d}", read(mem, pout, b * n * d, dt), OUT.ravel(), dt)
            if m > 0:
                check(f"memory bank b={b} n={n} e={e} m={m} d={d}", read(mem, pbank2, b * e * m * d, dt),
                      NB.ravel(), dt)

# --------------------------------------------------------------------------- NaN / ±inf
# Mirrors tests/it/common/nonfinite.rs: each kernel, given a few NaN / ±inf inputs
# placed as there, must give NaN exactly where the float64 reference (IEEE arithmetic
# on the formula written the obvious way) has NaN, +inf where it has +inf, −inf where
# it has −inf, element by element, and its finite elements within the usual bar.

KINDS = ("nan", "+inf", "-inf", "finite")


def kinds_of(a):
    """0 NaN, 1 +inf, 2 −inf, 3 finite, per element."""
    a = np.asarray(a, np.float64)
    return np.where(np.isnan(a), 0, np.where(a == np.inf, 1, np.where(a == -np.inf, 2, 3)))


def check_nonfinite(what, out, ref, dt, want=KINDS, bar=None):
    """assert_same_nonfinite of nonfinite.rs: the reference must hold every kind in
    `want` (so the case tests what it claims), the output the reference's kind at
    every element, its finite elements within the bar (rel. L2 over them)."""
    bar = bar or (1e-5 if dt == "f32" else 2e-2)
    what = f"{what} with NaN/±inf inputs"
    out, ref = np.asarray(out, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    ko, kr = kinds_of(out), kinds_of(ref)
    problems = [f"the case should produce {k} somewhere" for k in want
                if not np.any(kr == KINDS.index(k))]
    bad = np.flatnonzero(ko != kr)
    if bad.size:
        pairs = {}
        for i in bad:
            pairs.setdefault((KINDS[kr[i]], KINDS[ko[i]]), []).append(int(i))
        problems += [f"{len(ix)} elements {g} where the reference has {r} (first {ix[:6]}, got "
                     f"{[float(out[i]) for i in ix[:3]]})" for (r, g), ix in pairs.items()]
    fin = kr == 3
    o, r = out[fin & (ko == 3)], ref[fin & (ko == 3)]
    den = np.sqrt(np.sum(r * r))
    err = np.sqrt(np.sum((o - r) ** 2)) / den if den > 0 else np.sqrt(np.sum((o - r) ** 2))
    if err > bar:
        problems.append(f"finite elements off by rel L2 {err:.3e}")
    ok = not problems
    print(f"{'ok  ' if ok else 'FAIL'} {what} [{dt}] finite rel L2 {err:.3e}"
          + "".join(f"\n       {p}" for p in problems), flush=True)
    if not ok:
        FAILS.append(what)


def put(arr, i, val, dt):
    """arr[i] = val (an f32 value; bf16 arrays hold bits)."""
    arr[i] = f32_to_bf16_bits(np.float32(val)) if dt == "bf16" else np.float32(val)


def nf_linear_ref(X, W, B, R, act):
    """ref_linear of tests/it/common/reference.rs: residual + act(x Wᵀ + b), products
    summed elementwise (no BLAS, whose shortcuts need not follow IEEE)."""
    acc = B[None, :] + (X[:, None, :] * W[None, :, :]).sum(-1)
    if act:
        acc = gelu(acc)
    return acc + R


def nf_linear(entry, rows, k, n, splits=1):
    dt = linear_dtype(entry)
    for act in (0, 1):
        x, w = rnd(rows * k, 1, dt), rnd(n * k, 0.3, dt)
        b, r = rnd(n, 0.5, dt), rnd(rows * n, 1, dt)
        put(x, k + 3, np.nan, dt)         # row 1: NaN
        put(x, 2 * k, np.inf, dt)         # row 2: ±inf by the sign of w[j][0]
        put(x, 4 * k + 5, -np.inf, dt)    # row 4: ∓inf by the sign of w[j][5]
        put(w, 7 * k + 2, np.nan, dt)     # column 7: NaN
        put(b, 3, np.inf, dt)             # column 3: +inf (NaN where a row brings −inf)
        put(r, 5 * n + 6, -np.inf, dt)    # one element −inf
        put(w, 9 * k + 4, np.inf, dt)     # column 9: +inf at k 4, met by
        put(x, 3 * k + 4, 1.0, dt)        # row 3: x exactly 1 (no small part in 3xTF32)
        put(x, 5 * k + 4, 0.0, dt)        # row 5: x exactly 0 (0·inf = NaN)
        if dt == "f32":                   # row 6: a NaN whose payload is in the low 13 bits
            x.view(np.uint32)[6 * k + 1] = 0x7F800001  # (a tf32 operand would read it as inf)
        mem = Memory()
        out = linear_launch(mem, entry, rows, k, n, x, w, b, r, act, True, True, splits)
        ref = nf_linear_ref(as64(x, dt).reshape(rows, k), as64(w, dt).reshape(n, k), as64(b, dt),
                            as64(r, dt).reshape(rows, n), act)
        what = f"{entry} split-K x{splits}" if splits > 1 else entry
        check_nonfinite(f"{what} rows={rows} k={k} n={n} gelu={act} bias res",
                        read(mem, out, rows * n, dt), ref, dt)


def nf_norms(dt):
    # 40 columns: a multiple of both vectors, so the warp-a-row kernel runs as well.
    rows, cols = 7, 40
    x, w, b = rnd(rows * cols, 2, dt), rnd(cols, 1, dt), rnd(cols, 1, dt)
    put(x, cols + 4, np.nan, dt)          # row 1
    put(x, 3 * cols + 10, np.inf, dt)     # row 3
    put(x, 5 * cols, -np.inf, dt)         # row 5
    # Row 0 far above its mean at columns 2 and 6: both signs of inf appear whatever
    # the random values (as tests/it/common/nonfinite.rs).
    put(x, 2, 5.0, dt)
    put(x, 6, 5.0, dt)
    put(w, 2, np.inf, dt)                 # column 2: ±inf by the sign of the normalised value
    put(w, 6, -np.inf, dt)
    put(b, 4, np.nan, dt)                 # column 4
    X, Wt, Bs = as64(x, dt).reshape(rows, cols), as64(w, dt), as64(b, dt)
    eps = float(np.float32(1e-6))
    for rms in (0, 1):
        if rms:
            inv = 1 / np.sqrt((X * X).sum(1, keepdims=True) / cols + eps)
            ref = X * inv * Wt
        else:
            mean = X.sum(1, keepdims=True) / cols
            var = ((X - mean) * (X - mean)).sum(1, keepdims=True) / cols
            ref = (X - mean) * (1 / np.sqrt(var + eps)) * Wt + Bs
        name = "rms_norm" if rms else "layer_norm"
        for e in layer_norm_entries(dt, cols):
            mem = Memory()
            out = layer_norm_launch(mem, dt, x, w, b, rows, cols, rms, e)
            check_nonfinite(f"{e} ({name}) rows={rows} cols={cols}", read(mem, out, rows * cols, dt), ref, dt)


def nf_attention_ref(Q, K, V, scale):
    """ref_attention of reference.rs, Q [nq, h, hd], K/V [nk, h, hd]: the max over a
    row's scores ignores NaN (f64::max folded from −inf); a row whose max is −inf
    subtracts 0 instead (the guard; it cannot make a NaN finite)."""
    S = (Q.transpose(1, 0, 2)[:, :, None, :] * K.transpose(1, 0, 2)[:, None, :, :]).sum(-1) * scale
    mx = np.fmax.reduce(S, axis=-1, keepdims=True, initial=-np.inf)
    mx = np.where(mx == -np.inf, 0.0, mx)
    E = np.exp(S - mx)                                       # [h, nq, nk]
    Z = E.sum(-1, keepdims=True)
    acc = (E[:, :, :, None] * V.transpose(1, 0, 2)[:, None, :, :]).sum(2)  # [h, nq, hd]
    return (acc / Z).transpose(1, 0, 2)


def nf_attention(entry, dt, h, hd, nq, nk):
    wd = h * hd
    q, k, v = rnd(nq * wd, 1, dt), rnd(nk * wd, 1, dt), rnd(nk * wd, 1, dt)
    put(q, 3 * wd + 1, np.nan, dt)            # query 3, head 0: NaN
    put(q, (nq - 1) * wd + hd + 5, -np.inf, dt)  # the last query, head 1: −inf (a NaN row)
    # Key 5, head 1: score ±inf by the sign of each query's dim 0 there: +inf makes
    # that query NaN (inf − inf in the softmax), −inf drops the key.
    put(k, 5 * wd + hd, np.inf, dt)
    put(v, 7 * wd + 2, -np.inf, dt)           # head 0, dim 2: −inf for every query
    put(v, 9 * wd + 3, np.inf, dt)            # head 0, dim 3: +inf for every query but 3
    mem = Memory()
    out = attention_launch(mem, entry, dt, q, k, v, 1, h, hd, nq, nk)
    ref = nf_attention_ref(as64(q, dt).reshape(nq, h, hd), as64(k, dt).reshape(nk, h, hd),
                           as64(v, dt).reshape(nk, h, hd), hd ** -0.5)
    check_nonfinite(f"{entry} h={h} hd={hd} nq={nq} nk={nk}", read(mem, out, nq * wd, dt), ref, dt)


def nf_add(dt):
    n = 1029
    a, b = rnd(n, 3, dt), rnd(n, 3, dt)
    put(a, 1, np.nan, dt)
    put(b, 2, np.inf, dt)
    put(a, 3, -np.inf, dt)
    put(a, 4, np.inf, dt)
    put(b, 4, -np.inf, dt)   # inf − inf
    put(b, 1027, np.nan, dt)
    mem = Memory()
    out = poison(mem, n, dt)
    e = f"add_{dt}"
    launch(mem, e, grid_stride(e, n), a=mem.upload(a), b=mem.upload(b), out=out, n=n)
    check_nonfinite(f"add_{dt} n={n}", read(mem, out, n, dt), as64(a, dt) + as64(b, dt), dt)


def nf_patch_embed(dt):
    b, c, img, p, d = 2, 3, 10, 4, 13
    g = img // p
    n, k = g * g, c * p * p
    px, w = rnd(b * c * img * img, 1, dt), rnd(d * k, 0.2, dt)
    bias, pos = rnd(d, 0.5, dt), rnd(n * d, 0.5, dt)
    put(px, 1, np.nan, dt)                          # image 0, patch 0
    put(px, c * img * img + img * p + 1, np.inf, dt)  # image 1, patch (1, 0)
    put(w, 5 * k, -np.inf, dt)                      # channel 5: ∓inf where a patch has pixel 0 ≠ 0
    put(pos, 3 * d + 8, np.inf, dt)                 # token 3, channel 8
    mem = Memory()
    out = patch_embed_launch(mem, dt, px, w, bias, pos, b, c, img, p, d)
    used = as64(px, dt).reshape(b, c, img, img)[:, :, :g * p, :g * p]
    P = used.reshape(b, c, g, p, g, p).transpose(0, 2, 4, 1, 3, 5).reshape(b * n, k)
    ref = (as64(bias, dt) + as64(pos, dt).reshape(1, n, d)).reshape(1, n, d) \
        + (P[:, None, :] * as64(w, dt).reshape(1, d, k)).sum(-1).reshape(b, n, d)
    check_nonfinite(f"patch_embed_{dt} b={b} c={c} i={img} p={p} d={d}", read(mem, out, b * n * d, dt),
                    ref, dt)


def nf_memory(dt, n=5):
    b, e, m, d = 3, 4, 8, 17
    h, bank = rnd(b * n * d, 1, dt), rnd(b * e * m * d, 1, dt)
    rw, rb = rnd(e * d, 1, dt), rnd(e, 0.5, dt)
    tok = 40 if n > 40 else 0                         # past the first split where there are splits
    put(h, n * d + tok * d + 2, np.nan, dt)           # sequence 1: its gate, and with it its memory
    put(bank, 2 * e * m * d + 3 * d + 4, np.inf, dt)  # sequence 2, expert 0, slot 3
    mem = Memory()
    pj, pg = memory_read_launch(mem, dt, h, bank, rw, rb, b, n, e, m, d)
    H, B = as64(h, dt).reshape(b, n, d), as64(bank, dt).reshape(b, e, m, d)
    RW, RB = as64(rw, dt).reshape(e, d), as64(rb, dt)
    mean = (H / n).sum(1)                                        # [b, d]
    logits = RB + (RW[None, :, :] * mean[:, None, :]).sum(-1)    # [b, e]
    mx = np.fmax.reduce(logits, axis=1, keepdims=True, initial=-np.inf)
    ex = np.exp(logits - mx)
    G = ex / ex.sum(1, keepdims=True)
    slots = (G[:, :, None, None] * B).sum(1)                     # [b, m, d]
    J = np.concatenate([slots, H], axis=1)
    gate = mem.download(pg, b * e, np.float32).astype(np.float64)
    check_nonfinite(f"memory_read_gate_{dt} b={b} n={n} e={e} d={d}", gate, G, "f32", ("nan", "finite"))
    check_nonfinite(f"memory_read_mix_{dt} joint b={b} n={n} e={e} m={m} d={d}",
                    read(mem, pj, b * (m + n) * d, dt), J, dt, ("nan", "+inf", "finite"))
    # The write-back from the kernel's gate (finite for sequences 0 and 2, NaN for 1).
    o, res = rnd(b * (m + n) * d, 1, dt), rnd(b * n * d, 1, dt)
    put(o, 2 * (m + n) * d + m * d + 1, -np.inf, dt)  # sequence 2, token 0 (after the slots)
    pbank, pout = memory_write_launch(mem, dt, bank, pg, o, res, b, n, e, m, d)
    g64 = gate.reshape(b, e, 1, 1)
    O = as64(o, dt).reshape(b, m + n, d)
    NB = (1 - g64) * B + g64 * O[:, None, :m, :]
    OUT = as64(res, dt).reshape(b, n, d) + O[:, m:, :]
    check_nonfinite(f"memory_write_{dt} out b={b} n={n} e={e} m={m} d={d}",
                    read(mem, pout, b * n * d, dt), OUT, dt, ("-inf", "finite"))
    check_nonfinite(f"memory_write_{dt} bank b={b} n={n} e={e} m={m} d={d}",
                    read(mem, pbank, b * e * m * d, dt), NB, dt, ("nan", "finite"))


def t_nonfinite():
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        # linear: every GEMM entry the host picks: SIMT f32, linear_bf16_any (any
        # shape), the sm_80 mma GEMM and its split-K (K, N multiples of 8; 4 k-tiles
        # over 3 slices), the sm_90 wgmma GEMM.
        nf_linear("linear_f32", 9, 37, 21)
        nf_linear("linear_bf16_any", 9, 37, 21)
        nf_linear("linear_bf16", 9, 40, 24)
        nf_linear("linear_bf16", 9, 104, 24, splits=3)
        nf_linear("linear_f32_3xtf32", 9, 40, 24)
        nf_linear("linear_f32_3xtf32", 9, 52, 24, splits=3)
        nf_linear("linear_bf16_sm90", 9, 40, 24)
        nf_linear("linear_bf16_sm90_n192", 9, 40, 24)
        nf_linear("linear_bf16_sm90_c2", 9, 40, 24)
        nf_linear("linear_bf16_sm90_pp", 9, 40, 24)
        nf_linear("linear_f32_sm90", 9, 40, 24)
        for dt in ("f32", "bf16"):
            nf_norms(dt)
            nf_add(dt)
            nf_patch_embed(dt)
            nf_memory(dt)
            nf_memory(dt, n=70)
        # hd 64 with 20 queries: the tensor-core kernel for bf16; hd 24: the SIMT ones.
        nf_attention("attention_f32", "f32", 3, 24, 5, 37)
        nf_attention("attention_bf16", "bf16", 3, 24, 5, 37)
        nf_attention("attention_f32", "f32", 2, 64, 20, 70)
        nf_attention(fa2_entry(64), "bf16", 2, 64, 20, 70)
        # The 3xTF32 kernel: a non-finite value in Q (query 3) or in a K/V tile
        # takes the exact split for that tile; sequence 1's NaN / ±inf rows inside
        # sequence 0's last K/V tile take it too, and must not leak.
        nf_attention(fa2_entry(72, "f32"), "f32", 2, 72, 20, 70)
        nf_next_sequence(fa2_entry(72, "f32"), dt="f32")


# Shared-memory wavefronts per 1000 multiply-adds the tensor-core kernels may take
# in their steady state. An SM serves one 128-byte wavefront a cycle and its
# tensor cores about 1000 bf16 multiply-adds a cycle through mma.sync (A100:
# 1024; an H100's mma.sync rate is an estimate, below its 2048 through wgmma),
# so well above 1 a kernel waits on shared memory, not on the tensor cores.
# Attention with 16 query rows a warp took 1.28-1.56 (every K/V fragment fed one
# mma); with 32 rows, 0.67-0.78.
# The 3xTF32 GEMM reads the same bytes per k-tile for half the k (f32), so twice
# the wavefronts per multiply-add, against six times fewer multiply-adds a cycle
# (tf32 mma at half the bf16 rate, three per product).
# The 3xTF32 attention reads f32 K and V rows (twice the bytes of bf16) and V's
# fragments by scalar loads, and its non-finite scan reads each K/V tile once
# more, against the same six times fewer multiply-adds a cycle.
SMEM_PER_KMAC = {"attention_bf16_hd": 0.8, "attention_f32_hd": 2.3, "linear_bf16": 0.85,
                 "linear_f32_3xtf32": 1.8}


def t_smem_traffic():
    """Wavefronts per 1000 multiply-adds of the tensor-core kernels at shapes of
    whole tiles (the steady state), against SMEM_PER_KMAC."""
    def measure(entry, run, macs):
        before = BANKS.totals(entry)[1]
        run()
        w = BANKS.totals(entry)[1] - before
        per = 1000 * w / macs
        budget = next(v for k_, v in SMEM_PER_KMAC.items() if entry.startswith(k_))
        ok = per <= budget
        print(f"{'ok  ' if ok else 'FAIL'} shared-memory traffic {entry}: {per:.3f} wavefronts per 1000 "
              f"multiply-adds (at most {budget})", flush=True)
        if not ok:
            FAILS.append(f"shared-memory traffic of {entry}")

    nq = nk = 256
    for dt in ("bf16", "f32"):
        for HD in fa2_head_dims(dt):
            entry = f"attention_{dt}_hd{HD}"
            measure(entry, lambda: attention_case(entry, dt, 1, 1, HD, nq, nk), 2 * nq * nk * HD)
    m, kk, n = 256, 512, 256
    measure("linear_bf16", lambda: linear_case("linear_bf16", "bf16", m, kk, n, 0, True, False), m * kk * n)
    measure("linear_f32_3xtf32", lambda: linear_case("linear_f32_3xtf32", "f32", m, kk, n, 0, True, False),
            m * kk * n)


# --------------------------------------------------------------------------- launch plans
# The Rust launch code's own launches (src/cuda/plan_check.rs writes them down:
# entry, grid, shared memory, every argument, each tensor map's encoding), run
# here on random inputs and compared with float64 references computed from the
# op's sizes alone. The groups above launch as this file says the host does;
# this one launches as the host's code does.

def plan_arg(entry, p, a, addr):
    """The launch argument of parameter `p` from the plan's `a`."""
    kind = p.kind
    if a is None:
        if kind != "opt":
            raise SystemExit(f"{entry}: null for {kind} parameter {p.name}")
        return None
    if "buf" in a:
        if kind not in ("in", "opt", "out"):
            raise SystemExit(f"{entry}: buffer {a['buf']} for {kind} parameter {p.name}")
        return addr[a["buf"]]
    if "u32" in a:
        if kind != "u32":
            raise SystemExit(f"{entry}: u32 for {kind} parameter {p.name}")
        return int(a["u32"])
    if "f32" in a:
        if kind != "f32":
            raise SystemExit(f"{entry}: f32 for {kind} parameter {p.name}")
        return float(np.array([a["f32"]], np.uint32).view(np.float32)[0])
    t = a["tmap"]
    if kind != "tmap":
        raise SystemExit(f"{entry}: tensor map for {kind} parameter {p.name}")
    return TensorMap(addr[t["of"]], elem_bytes=t["elem_bytes"], dims=tuple(t["dims"]),
                     stride=t["stride"], box=tuple(t["box"]), swizzle=t["swizzle"])


def plan_launch(mem, l, addr):
    spec = SPECS[l["entry"]]
    if len(l["args"]) != len(spec.params):
        raise SystemExit(f"{l['entry']}: {len(l['args'])} arguments for {len(spec.params)} parameters")
    args = {p.name: plan_arg(l["entry"], p, a, addr) for p, a in zip(spec.params, l["args"])}
    launch(mem, l["entry"], tuple(l["grid"]), l["dyn_smem"], **args)


def plan_attention_ref(d, f):
    """Attention from the op's description over the float64 inputs `f` (by
    buffer name): per sequence and head, rows of q, k, v at their columns and
    strides (fixed, packed, or packed keys), out rows [rows, H·hd] at ldo;
    returns (indices in out, values)."""
    h, hd = d["heads"], d["head_dim"]
    q, k, v = (f[d[n]] for n in ("q", "k", "v"))
    off = d["offsets"]
    idx, val = [], []
    for b in range(d["batch"]):
        if d["packing"] == "Packed":
            qr = kr = orow = range(off[b], off[b + 1])
        else:
            qb = 0 if d["q_broadcast"] else b
            qr = range(qb * d["q_len"], (qb + 1) * d["q_len"])
            orow = range(b * d["q_len"], (b + 1) * d["q_len"])
            kr = (range(off[b], off[b + 1]) if d["packing"] == "PackedKeys"
                  else range(b * d["kv_len"], (b + 1) * d["kv_len"]))
        for hh in range(h):
            cols = np.arange(hh * hd, (hh + 1) * hd)
            Q = q[np.array(qr)[:, None] * d["ldq"] + d["q_col"] + cols]
            K = k[np.array(kr)[:, None] * d["ldkv"] + d["k_col"] + cols]
            V = v[np.array(kr)[:, None] * d["ldkv"] + d["v_col"] + cols]
            S = Q @ K.T * hd ** -0.5
            S = np.exp(S - S.max(-1, keepdims=True))
            S /= S.sum(-1, keepdims=True)
            idx.append((np.array(orow)[:, None] * d["ldo"] + cols).ravel())
            val.append((S @ V).ravel())
    return np.concatenate(idx), np.concatenate(val)


def plan_check_out(what, mem, addr, buf, n, idx, ref, dt, magnitude=None):
    """The elements `idx` of output `buf` against `ref`; every other element must
    still hold its poison (nothing written out of place)."""
    out = read(mem, addr[buf], n, dt)
    check(what, out[idx], ref, dt, magnitude=magnitude)
    rest = np.ones(n, bool)
    rest[idx] = False
    if not np.all(np.isnan(out[rest])):
        print(f"FAIL {what}: {int(np.sum(~np.isnan(out[rest])))} elements written outside the output")
        FAILS.append(what + " (written outside)")


def plan_reference(c, mem, addr, host):
    """Check case `c`'s outputs against its op's float64 reference."""
    d, dt, what = c["dims"], c["dtype"], c["name"]
    f = {n: as64(a, c["buffers"][n]["dtype"]) for n, a in host.items()}
    op = c["op"]
    if op == "attention":
        idx, ref = plan_attention_ref(d, f)
        plan_check_out(what, mem, addr, "out", c["buffers"]["out"]["len"], idx, ref, dt)
    elif op == "linear":
        rows, k, n = d["rows"], d["k"], d["n"]
        X, W = f["x"].reshape(rows, k), f["weight"].reshape(n, k)
        ref, mag = X @ W.T, np.abs(X) @ np.abs(W).T
        if "bias" in f:
            ref, mag = ref + f["bias"], mag + np.abs(f["bias"])
        if d["gelu"]:
            ref = gelu(ref)
        if "residual" in f:
            R = f["residual"].reshape(rows, n)
            ref, mag = ref + R, mag + np.abs(R)
        plan_check_out(what, mem, addr, "out", rows * n, np.arange(rows * n), ref.ravel(), dt, mag.ravel())
    elif op == "layer_norm":
        rows, cols = d["rows"], d["cols"]
        X = f["x"].reshape(rows, cols)
        if d["rms"]:
            ref = X / np.sqrt((X ** 2).mean(1, keepdims=True) + d["eps"]) * f["weight"]
        else:
            mu = X.mean(1, keepdims=True)
            ref = (X - mu) / np.sqrt(((X - mu) ** 2).mean(1, keepdims=True) + d["eps"]) * f["weight"] + f["bias"]
        plan_check_out(what, mem, addr, "out", rows * cols, np.arange(rows * cols), ref.ravel(), dt)
    elif op == "add":
        n = d["len"]
        plan_check_out(what, mem, addr, "out", n, np.arange(n), f["a"] + f["b"], dt)
    elif op == "cast":
        n, to = d["len"], d["to"]
        want = f["x"] if to == "f32" else as64(bf16_rule(f["x"].astype(np.float32)), "bf16")
        got = read(mem, addr["out"], n, to)
        ok = np.array_equal(got, want)
        print(f"{'ok  ' if ok else 'FAIL'} {what} (bit-exact)", flush=True)
        if not ok:
            FAILS.append(what)
    elif op == "patch_embed":
        b, ch, img, p, hid = d["batch"], d["channels"], d["image"], d["patch"], d["hidden"]
        g = img // p
        n, k = g * g, ch * p * p
        used = f["pixels"].reshape(b, ch, img, img)[:, :, :g * p, :g * p]
        P = used.reshape(b, ch, g, p, g, p).transpose(0, 2, 4, 1, 3, 5).reshape(b * n, k)
        W, B, PO = f["weight"].reshape(hid, k), f["bias"], f["position"].reshape(n, hid)
        ref = (P @ W.T + B).reshape(b, n, hid) + PO
        mag = (np.abs(P) @ np.abs(W).T + np.abs(B)).reshape(b, n, hid) + np.abs(PO)
        plan_check_out(what, mem, addr, "out", b * n * hid, np.arange(b * n * hid), ref.ravel(), dt, mag.ravel())
    elif op == "memory_read":
        b, n, e, m, hid = d["batch"], d["tokens"], d["experts"], d["slots"], d["hidden"]
        H = f["h"].reshape(b, n, hid)
        logits = H.mean(1) @ f["router_weight"].reshape(e, hid).T + f["router_bias"]
        G = np.exp(logits - logits.max(1, keepdims=True))
        G /= G.sum(1, keepdims=True)
        J = np.concatenate([np.einsum("be,bemd->bmd", G, f["bank"].reshape(b, e, m, hid)), H], axis=1)
        plan_check_out(what + " gate", mem, addr, "gate", b * e, np.arange(b * e), G.ravel(), "f32")
        jl = b * (m + n) * hid
        plan_check_out(what + " joint", mem, addr, "joint", jl, np.arange(jl), J.ravel(), dt)
    elif op == "memory_write":
        b, n, e, m, hid = d["batch"], d["tokens"], d["experts"], d["slots"], d["hidden"]
        g = f["gate"].reshape(b, e, 1, 1)
        O = f["o"].reshape(b, m + n, hid)
        NB = (1 - g) * f["bank"].reshape(b, e, m, hid) + g * O[:, None, :m, :]
        OUT = f["residual"].reshape(b, n, hid) + O[:, m:, :]
        plan_check_out(what + " out", mem, addr, "out", b * n * hid, np.arange(b * n * hid), OUT.ravel(), dt)
        check(what + " bank", read(mem, addr["bank"], b * e * m * hid, dt), NB.ravel(), dt)
    else:
        raise SystemExit(f"{what}: no reference for op {op}")


def t_plans(path):
    """Run every case of the launch plan at `path` (JSON from src/cuda/plan_check.rs)."""
    import json
    with open(path) as fh:
        cases = json.load(fh)
    for c in cases:
        mem = Memory()
        addr, host = {}, {}
        for name, b in c["buffers"].items():
            dt, n = b["dtype"], b["len"]
            if b["role"] == "out":
                addr[name] = poison(mem, n, dt)
            else:
                host[name] = rnd(n, 1, dt)
                addr[name] = mem.upload(host[name])
        for name, words in c["words"].items():
            addr[name] = mem.upload(np.array(words, np.uint32))
        for j, nbytes in enumerate(c["scratch"]):  # the most bytes asked of each scratch buffer
            addr[f"scratch{j}"] = poison(mem, (nbytes + 3) // 4, "f32")
        if not c["launches"]:
            print(f"FAIL {c['name']}: nothing launched")
            FAILS.append(c["name"])
            continue
        for l in c["launches"]:
            plan_launch(mem, l, addr)
        plan_reference(c, mem, addr, host)


GROUPS = {"add": t_add, "cast": t_cast, "layer_norm": t_layer_norm, "linear": t_linear,
          "linear_sm80": t_linear_sm80, "linear_sm90": t_linear_sm90, "patch_embed": t_patch_embed, "patchify": t_patchify,
          "attention": t_attention,
          "attention_fa2": t_attention_fa2, "attention_sm90": t_attention_sm90,
          "attention_sm90_f32": t_attention_sm90_f32, "memory": t_memory,
          "nonfinite": t_nonfinite, "smem_traffic": t_smem_traffic}


# Bank conflicts accepted, per kernel: (instruction prefix, most wavefronts as a
# multiple of the conflict-free count), with the reason.
# linear_f32_sm90's epilogue stores f32 pairs into the 128-byte-swizzled staging
# buffer: each half-warp of an 8-byte store holds 4 rows (g = 0..3) of the
# accumulator fragment, 2 chunks a row, and the swizzle (chunk ^ row % 8) maps
# rows g and g ^ 1 onto the same chunk pair: 2 wavefronts a half-warp, not 1.
# Conflict-free would need each lane to store another column group than its
# neighbours (3 selects a value); the stores are ~1 % of a tile at K 1152.
# attention_f32_sm90_hd72's converters read V word by word, 32 neighbouring
# dims of one key a warp: the 8 dims past the two 32-wide atoms lie in two
# 16-byte-row chunks 1 KiB apart (TMA's boxes, 128-byte aligned), so where a
# warp holds both, their words share banks: 2 wavefronts. Any one instruction
# reads keys of only two residues mod 8, so no assignment avoids it; these
# loads are ~1/4 of the converters' shared traffic and off the tensor cores'
# path.
BANK_ALLOWANCE = {"linear_f32_sm90": ("st.shared.v2.f32", 2),
                  "attention_f32_sm90_hd72": ("ld.shared.b32", 2)}


def bank_conflicts(f):
    """BANKS.conflicted(f) less the conflicts BANK_ALLOWANCE accepts."""
    prefix, factor = BANK_ALLOWANCE.get(f, (None, 1))
    return [r for r in BANKS.conflicted(f)
            if not (prefix and r[2].startswith(prefix) and r[4] <= factor * r[5])]


def bank_report():
    """Each launched kernel's shared-memory wavefronts against the conflict-free
    count; an instruction with more is a failure (named with its PTX line)."""
    for f in sorted({f for f, _, _ in BANKS.by_ins}):
        req, wav, ideal = BANKS.totals(f)
        bad = bank_conflicts(f)
        print(f"{'ok  ' if not bad else 'FAIL'} shared-memory banks {f}: {wav} wavefronts for {req} "
              f"warp requests, conflict-free {ideal}", flush=True)
        for _, line, text, r, w, i in bad[:8]:
            print(f"       line {line}: `{text}`: {w} wavefronts for {r} requests, conflict-free {i}")
        if bad:
            FAILS.append(f"bank conflicts in {f}")


if __name__ == "__main__":
    print(f"TESSERA_TEST_SEED={SEED}", flush=True)
    if sys.argv[1:2] == ["plans"]:
        # python3 tools/emu_check.py plans FILE: the launch plan of
        # src/cuda/plan_check.rs (cargo test runs it).
        if len(sys.argv) != 3:
            raise SystemExit("usage: emu_check.py plans PLAN.json")
        t_plans(sys.argv[2])
    else:
        for name in sys.argv[1:] or GROUPS:
            GROUPS[name]()
    bank_report()
    if FAILS:
        print(f"{len(FAILS)} FAILED (replay: TESSERA_TEST_SEED={SEED} python3 tools/emu_check.py)")
        sys.exit(1)
    print("all passed")
