#!/usr/bin/env python3
"""Self-tests of tools/ptx_emu.py: small hand-written PTX kernels checked against
numpy and against the layouts the PTX ISA documents (ldmatrix: lane t receives
row t/4, columns 2(t%4), 2(t%4)+1 of each 8x8 matrix, the transpose with
.trans; mma.m16n8k16: "Matrix Fragments for mma.m16n8k16 with floating point
type"; cvt packing; cp.async group semantics), and the sm_90a machinery: TMA
boxes (zero fill, 128-byte swizzle), mbarrier phases / parity / tx-count,
wgmma m64nNk16 through matrix descriptors ("Register Fragments and Shared
Memory Matrix Layouts" for wgmma; K-major and MN-major, A from registers too),
a producer / consumer pipeline, and the
errors for unsynchronised or unreleased asynchronous accesses, named barriers
(bar.sync a, b: completion, happens-before through them, discipline errors),
TMA stores (the in-bounds box written, bulk async-groups, the proxy fence, a
two-warpgroup GEMM epilogue), the shared-memory bank accounting
(BankStats) against hand-counted patterns and a loop-by-loop count, and
thread-block clusters (run_kernel(..., cluster=...)): the cluster special
registers, distributed shared memory through mapa (ld / st.shared::cluster,
races across CTAs, exits), remote mbarrier arrivals, per-CTA barriers, the
cluster barrier, multicast TMA (negative tx-counts) and a two-CTA pipeline
whose consumers release each stage on both CTAs' barriers.

    PYTHONPATH=.cache/pylib python3 tools/test_ptx_emu.py

Prints one line per check; exits non-zero if any fails.
"""
import math
import os
import struct
import sys
from fractions import Fraction

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ptx_emu import (BankStats, EmuError, Memory, TensorMap, bf16_bits_to_f32, f32_to_bf16_bits,  # noqa: E402
                     parse_module, run_kernel)

FAILS = []
# Fresh random inputs each run (TESSERA_TEST_SEED replays one), seeded as
# tools/emu_check.py seeds (one rule, one place).
from emu_check import _seed  # noqa: E402

SEED = _seed()
RNG = np.random.default_rng(SEED)
HDR = ".version 7.8\n.target sm_80\n.address_size 64\n"
HDR90 = ".version 8.0\n.target sm_90a\n.address_size 64\n"
HDR80 = ".version 8.0\n.target sm_80\n.address_size 64\n"


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f"  [{detail}]" if detail and not ok else ""), flush=True)
    if not ok:
        FAILS.append(name)


def expect_error(name, fn, substr):
    try:
        fn()
    except EmuError as e:
        check(name, substr in str(e), f"wrong error: {e}")
        return
    except Exception as e:  # noqa: BLE001
        check(name, False, f"non-EmuError {e!r}")
        return
    check(name, False, "no error raised")


def build(name, params, body, directives="", pre="", hdr=HDR):
    """One-entry module; `params`: 'p_a' names (all .u64 unless 'name:type';
    'name:tmap' is a tensor map, `.param .align 64 .b8 name[128]`)."""
    ps = []
    for p in params:
        nm, _, ty = p.partition(":")
        ps.append(f".param .align 64 .b8 {nm}[128]" if ty == "tmap" else f".param .{ty or 'u64'} {nm}")
    src = f"{hdr}{pre}\n.visible .entry {name}({', '.join(ps)}) {directives}\n{{\n{body}\n}}\n"
    return parse_module(src)[name]


def f32bits(x):
    return np.array(x, np.float32).view(np.uint32)


def bits2f(x):
    return np.array(x, np.uint32).view(np.float32)


# ---------------------------------------------------------------------------- cp.async

CP_BODY = """
    .reg .pred %p;
    .reg .b32 %t, %sa, %sb, %n, %x<4>;
    .reg .b64 %src, %out, %sz, %a, %o;
    .shared .align 16 .b8 buf[1024];
    ld.param.u64 %src, [p_src];
    ld.param.u64 %out, [p_out];
    ld.param.u64 %sz, [p_sz];
    cvta.to.global.u64 %src, %src;
    cvta.to.global.u64 %out, %out;
    cvta.to.global.u64 %sz, %sz;
    mov.u32 %t, %tid.x;
    mul.wide.u32 %a, %t, 4;
    add.s64 %a, %sz, %a;
    ld.global.u32 %n, [%a];
    mul.wide.u32 %a, %t, 16;
    add.s64 %a, %src, %a;
    setp.eq.u32 %p, %n, 0;
    @%p add.s64 %a, %a, 1099511627776;      // src-size 0: a wild source address
    shl.b32 %sa, %t, 4;
    mov.u32 %x0, buf;
    add.u32 %sa, %sa, %x0;
    xor.b32 %sb, %t, 1;                      // the neighbour's chunk
    shl.b32 %sb, %sb, 4;
    add.u32 %sb, %sb, %x0;
    cp.async.cg.shared.global [%sa], [%a], 16, %n;
    cp.async.commit_group;
    {WAIT}
    ld.shared.v4.u32 {%x0, %x1, %x2, %x3}, [{READ}];
    mul.wide.u32 %o, %t, 16;
    add.s64 %o, %out, %o;
    st.global.v4.u32 [%o], {%x0, %x1, %x2, %x3};
    ret;
"""


def cp_kernel(wait, read="%sa"):
    return build("cp", ["p_src", "p_out", "p_sz"], CP_BODY.replace("{WAIT}", wait).replace("{READ}", read),
                 ".reqntid 32")


def cp_run(k, strict=True, sizes=None, races=True):
    mem = Memory()
    src = RNG.integers(1, 255, 32 * 16, dtype=np.uint8)
    sizes = np.array([16, 12, 8, 5, 4, 1, 0, 16] * 4, np.uint32) if sizes is None else sizes
    ps, po, pz = mem.upload(src), mem.upload(np.full(32 * 16, 0xEE, np.uint8)), mem.upload(sizes)
    run_kernel(k, mem, (1, 1, 1), (32, 1, 1), [ps, po, pz], strict_async=strict, check_races=races)
    want = np.zeros((32, 16), np.uint8)
    for t in range(32):
        n = int(sizes[t])
        want[t, :n] = src[16 * t:16 * t + n]
    return mem.download(po, 32 * 16, np.uint8).reshape(32, 16), want


def t_cp_async():
    got, want = cp_run(cp_kernel("cp.async.wait_group 0;"))
    check("cp.async.cg 16 with src-size 16/12/8/5/4/1/0: copied bytes then zero fill", np.array_equal(got, want))
    got, want = cp_run(cp_kernel("cp.async.wait_all;"))
    check("cp.async.wait_all retires the group", np.array_equal(got, want))
    expect_error("cp.async: ld.shared before cp.async.wait_group raises",
                 lambda: cp_run(cp_kernel("")), "pending cp.async")
    expect_error("cp.async: commit without wait, wait_group 1 leaves the only group pending",
                 lambda: cp_run(cp_kernel("cp.async.wait_group 1;")), "pending cp.async")
    # another thread's chunk: needs a barrier after the wait (the ISA makes the
    # data visible to the issuing thread only)
    expect_error("cp.async: reading another thread's copy without bar.sync raises",
                 lambda: cp_run(cp_kernel("cp.async.wait_group 0;", "%sb")), "no barrier")
    got, want = cp_run(cp_kernel("cp.async.wait_group 0;\n bar.sync 0;", "%sb"))
    check("cp.async: wait_group + bar.sync makes other threads' copies visible",
          np.array_equal(got, want.reshape(16, 2, 16)[:, ::-1].reshape(32, 16)))
    got, want = cp_run(cp_kernel("cp.async.wait_group 0;", "%sb"), strict=False, races=False)
    check("cp.async: strict_async=False, check_races=False allow it", np.array_equal(got, want.reshape(16, 2, 16)[:, ::-1].reshape(32, 16)))
    expect_error("cp.async: src-size > cp-size raises",
                 lambda: cp_run(cp_kernel("cp.async.wait_group 0;"), sizes=np.full(32, 17, np.uint32)), "src-size")

    # two groups: wait_group 1 retires the older one only
    body = """
    .reg .b32 %t, %sa, %x<4>, %b;
    .reg .b64 %src, %out, %a, %o;
    .shared .align 16 .b8 buf[1024];
    ld.param.u64 %src, [p_src];
    ld.param.u64 %out, [p_out];
    mov.u32 %t, %tid.x;
    mul.wide.u32 %a, %t, 16;
    add.s64 %a, %src, %a;
    mov.u32 %b, buf;
    shl.b32 %sa, %t, 4;
    add.u32 %sa, %sa, %b;
    cp.async.ca.shared.global [%sa], [%a], 16;
    cp.async.commit_group;
    add.s64 %a, %a, 512;
    cp.async.ca.shared.global [%sa+512], [%a], 8;
    cp.async.ca.shared.global [%sa+520], [%a+8], 4, 3;
    cp.async.ca.shared.global [%sa+524], [%a+12], 4;
    cp.async.commit_group;
    cp.async.wait_group 1;
    ld.shared.v4.u32 {%x0, %x1, %x2, %x3}, [%sa+{OFF}];
    {MORE}
    mul.wide.u32 %o, %t, 16;
    add.s64 %o, %out, %o;
    st.global.v4.u32 [%o], {%x0, %x1, %x2, %x3};
    ret;
"""

    def run2(off, more):
        k = build("cp2", ["p_src", "p_out"], body.replace("{OFF}", str(off)).replace("{MORE}", more))
        mem = Memory()
        src = RNG.integers(1, 255, 1024, dtype=np.uint8)
        ps, po = mem.upload(src), mem.upload(np.zeros(512, np.uint8))
        run_kernel(k, mem, (1, 1, 1), (32, 1, 1), [ps, po])
        return mem.download(po, 512, np.uint8).reshape(32, 16), src

    got, src = run2(0, "cp.async.wait_group 0;")
    check("cp.async: wait_group 1 retires the older group (ca, cp-size 16)", np.array_equal(got, src[:512].reshape(32, 16)))
    expect_error("cp.async: wait_group 1 leaves the newer group pending",
                 lambda: run2(512, "cp.async.wait_group 0;"), "pending cp.async")
    got, src = run2(0, "cp.async.wait_group 0;\n ld.shared.v4.u32 {%x0, %x1, %x2, %x3}, [%sa+512];")
    w = src[512:].reshape(32, 16).copy()
    w[:, 11] = 0      # the 4-byte copy with src-size 3 zero-fills its last byte
    check("cp.async.ca cp-size 8 and 4 (src-size 3) after wait_group 0", np.array_equal(got, w))
    expect_error("cp.async: exiting with copies pending raises",
                 lambda: run2(0, ""), "pending")

    # store onto a pending destination; second cp.async onto pending bytes
    bodyw = """
    .reg .b32 %t, %sa, %b;
    .reg .b64 %src, %a;
    .shared .align 16 .b8 buf[512];
    ld.param.u64 %src, [p_src];
    mov.u32 %t, %tid.x;
    mul.wide.u32 %a, %t, 16;
    add.s64 %a, %src, %a;
    mov.u32 %b, buf;
    shl.b32 %sa, %t, 4;
    add.u32 %sa, %sa, %b;
    cp.async.cg.shared.global [%sa], [%a], 16;
    {X}
    cp.async.wait_all;
    ret;
"""

    def runw(x):
        k = build("cpw", ["p_src"], bodyw.replace("{X}", x))
        mem = Memory()
        run_kernel(k, mem, (1, 1, 1), (32, 1, 1), [mem.upload(np.zeros(512, np.uint8))])

    expect_error("cp.async: st.shared onto a pending destination raises", lambda: runw("st.shared.u32 [%sa+4], %t;"),
                 "pending cp.async")
    expect_error("cp.async: second cp.async onto pending bytes raises",
                 lambda: runw("cp.async.ca.shared.global [%sa+8], [%a], 4;"), "pending cp.async")
    expect_error("cp.async: out-of-bounds source (src-size 16) raises",
                 lambda: runw("add.s64 %a, %a, 4096;\n cp.async.cg.shared.global [%sa+512], [%a], 16;"),
                 "shared access out of bounds")
    kk = build("cpo", ["p_src"], bodyw.replace("{X}", "").replace("[%a], 16;", "[%a+64], 16;"))
    mem = Memory()
    expect_error("cp.async: out-of-bounds global source raises",
                 lambda: run_kernel(kk, mem, (1, 1, 1), (32, 1, 1), [mem.upload(np.zeros(512, np.uint8))]),
                 "out-of-bounds global")
    kk = build("cpm", ["p_src"], bodyw.replace("{X}", "").replace("[%a], 16;", "[%a+8], 16;"))
    expect_error("cp.async: misaligned 16-byte source raises",
                 lambda: run_kernel(kk, mem, (1, 1, 1), (32, 1, 1), [mem.upload(np.zeros(1024, np.uint8))]),
                 "misaligned")


# ---------------------------------------------------------------------------- ldmatrix / mma

LOAD_IMAGE = """
    // copy the shared image (p_img, {NB} bytes) into img[] with 16-byte chunks
    mov.u32 %i, %tid.x;
$cp:
    setp.ge.u32 %p, %i, {NCH};
    @%p bra $cpd;
    mul.wide.u32 %a, %i, 16;
    add.s64 %a, %img, %a;
    ld.global.v4.b32 {%x0, %x1, %x2, %x3}, [%a];
    shl.b32 %s, %i, 4;
    mov.u32 %b, img;
    add.u32 %s, %s, %b;
    st.shared.v4.b32 [%s], {%x0, %x1, %x2, %x3};
    mov.u32 %s, %ntid.x;
    add.u32 %i, %i, %s;
    bra $cp;
$cpd:
    bar.sync 0;
"""


def ldm_expected(img_u16, addrs, num, trans):
    """The documented fragment: lane t, register i <- matrix i (rows at addrs[8i..8i+7])."""
    out = np.zeros((32, num), np.uint32)
    for i in range(num):
        M = np.stack([img_u16[addrs[8 * i + r] // 2: addrs[8 * i + r] // 2 + 8] for r in range(8)])
        for t in range(32):
            if trans:
                lo, hi = M[2 * (t % 4), t // 4], M[2 * (t % 4) + 1, t // 4]
            else:
                lo, hi = M[t // 4, 2 * (t % 4)], M[t // 4, 2 * (t % 4) + 1]
            out[t, i] = int(lo) | (int(hi) << 16)
    return out


def matrix_rows(num):
    """Row addresses for an ldmatrix / stmatrix of `num` matrices: rows of matrix i
    at 512 + 1024 i + 48 perm[r] + 16 (i % 2) (16-byte aligned, not contiguous),
    and the table the kernel reads them from (lanes beyond the .num matrices get
    a wild address: ignored, sm_80+)."""
    addrs = np.zeros(32, np.int64)
    for i in range(4):
        perm = RNG.permutation(8)
        for r in range(8):
            addrs[8 * i + r] = 512 + 1024 * i + 48 * perm[r] + 16 * (i % 2)
    tab = addrs.astype(np.uint32).copy()
    tab[8 * num:] = 0xFFFFF0
    return addrs, tab


def t_ldmatrix():
    nb = 4096
    for num in (1, 2, 4):
        for trans in (False, True):
            regs = ", ".join(f"%d{i}" for i in range(num))
            body = f"""
    .reg .pred %p;
    .reg .b32 %i, %s, %b, %x<4>, %d<4>, %ad;
    .reg .b64 %img, %tab, %out, %a;
    .shared .align 16 .b8 img[{nb}];
    ld.param.u64 %img, [p_img];
    ld.param.u64 %tab, [p_tab];
    ld.param.u64 %out, [p_out];
{LOAD_IMAGE.replace("{NB}", str(nb)).replace("{NCH}", str(nb // 16))}
    mov.u32 %i, %laneid;
    mul.wide.u32 %a, %i, 4;
    add.s64 %a, %tab, %a;
    ld.global.u32 %ad, [%a];
    mov.u32 %b, img;
    add.u32 %ad, %ad, %b;
    ldmatrix.sync.aligned.m8n8.x{num}{'.trans' if trans else ''}.shared.b16 {{{regs}}}, [%ad];
    mul.wide.u32 %a, %i, 16;
    add.s64 %a, %out, %a;
    {'; '.join(f'st.global.b32 [%a+{4 * j}], %d{j}' for j in range(num))};
    ret;
"""
            k = build("ldm", ["p_img", "p_tab", "p_out"], body)
            mem = Memory()
            img = RNG.integers(0, 65536, nb // 2, dtype=np.uint16)
            addrs, tab = matrix_rows(num)
            pi, pt, po = mem.upload(img), mem.upload(tab), mem.upload(np.zeros(32 * 4, np.uint32))
            run_kernel(k, mem, (1, 1, 1), (32, 1, 1), [pi, pt, po])
            got = mem.download(po, 32 * 4, np.uint32).reshape(32, 4)[:, :num]
            want = ldm_expected(img, addrs, num, trans)
            check(f"ldmatrix .x{num}{'.trans' if trans else ''} matches the documented fragment layout",
                  np.array_equal(got, want))
    # misaligned row address
    k = build("ldm_bad", [], """
    .reg .b32 %ad, %d0;
    .shared .align 16 .b8 img[512];
    mov.u32 %ad, img;
    add.u32 %ad, %ad, 8;
    ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%d0}, [%ad];
    ret;""")
    mem = Memory()
    expect_error("ldmatrix: 8-byte-aligned row address raises", lambda: run_kernel(k, mem, (1, 1, 1), (32, 1, 1), []),
                 "misaligned")
    k = build("ldm_div", [], """
    .reg .pred %p;
    .reg .b32 %ad, %d0, %t;
    .shared .align 16 .b8 img[512];
    mov.u32 %ad, img;
    mov.u32 %t, %tid.x;
    setp.eq.u32 %p, %t, 3;
    @%p bra $skip;
    ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%d0}, [%ad];
$skip:
    ret;""")
    expect_error("ldmatrix: a divergent warp raises", lambda: run_kernel(k, mem, (1, 1, 1), (32, 1, 1), []),
                 "divergent warp")


def t_stmatrix():
    """stmatrix: the inverse of ldmatrix's documented fragment (register i of
    lane t: row t/4, columns 2(t%4), 2(t%4)+1 of matrix i; lanes 8i..8i+7 give
    its rows' addresses), checked by reading shared memory back word by word."""
    nb = 4096
    for num in (1, 2, 4):
        for trans in (False, True):
            regs = ", ".join(f"%d{i}" for i in range(num))
            body = f"""
    .reg .pred %p;
    .reg .b32 %i, %b, %w, %d<4>, %ad;
    .reg .b64 %src, %tab, %out, %a;
    .shared .align 16 .b8 img[{nb}];
    ld.param.u64 %src, [p_src];
    ld.param.u64 %tab, [p_tab];
    ld.param.u64 %out, [p_out];
    mov.u32 %i, %laneid;
    mul.wide.u32 %a, %i, 16;
    add.s64 %a, %src, %a;
    {'; '.join(f'ld.global.b32 %d{j}, [%a+{4 * j}]' for j in range(num))};
    mul.wide.u32 %a, %i, 4;
    add.s64 %a, %tab, %a;
    ld.global.u32 %ad, [%a];
    mov.u32 %b, img;
    add.u32 %ad, %ad, %b;
    stmatrix.sync.aligned.m8n8.x{num}{'.trans' if trans else ''}.shared.b16 [%ad], {{{regs}}};
    bar.sync 0;
    mov.u32 %w, 0;
$copy:
    shl.b32 %ad, %w, 5;
    add.u32 %ad, %ad, %i;
    shl.b32 %ad, %ad, 2;
    add.u32 %ad, %ad, %b;
    ld.shared.b32 %d0, [%ad];
    shl.b32 %ad, %w, 5;
    add.u32 %ad, %ad, %i;
    mul.wide.u32 %a, %ad, 4;
    add.s64 %a, %out, %a;
    st.global.b32 [%a], %d0;
    add.u32 %w, %w, 1;
    setp.lt.u32 %p, %w, {nb // 128};
    @%p bra $copy;
    ret;
"""
            k = build("stm", ["p_src", "p_tab", "p_out"], body, hdr=HDR90)
            mem = Memory()
            src = RNG.integers(0, 2**32, (32, 4), dtype=np.uint32)
            addrs, tab = matrix_rows(num)
            ps, pt, po = mem.upload(src), mem.upload(tab), mem.upload(np.zeros(nb // 4, np.uint32))
            run_kernel(k, mem, (1, 1, 1), (32, 1, 1), [ps, pt, po])
            got = mem.download(po, nb // 4, np.uint32).view(np.uint16)
            want = np.full(nb // 2, 0xFFFF, np.uint16)   # the emulator's fill of shared memory
            for i in range(num):
                for t in range(32):
                    lo, hi = int(src[t, i]) & 0xFFFF, int(src[t, i]) >> 16
                    r, c = t // 4, 2 * (t % 4)
                    if trans:   # element (r, c) of the fragment is (c, r) of the matrix
                        want[addrs[8 * i + c] // 2 + r], want[addrs[8 * i + c + 1] // 2 + r] = lo, hi
                    else:
                        want[addrs[8 * i + r] // 2 + c], want[addrs[8 * i + r] // 2 + c + 1] = lo, hi
            check(f"stmatrix .x{num}{'.trans' if trans else ''} writes the documented fragment layout",
                  np.array_equal(got, want))
    same = build("stm_same", [], """
    .reg .b32 %ad, %d0;
    .shared .align 16 .b8 img[512];
    mov.u32 %ad, img;
    stmatrix.sync.aligned.m8n8.x1.shared.b16 [%ad], {%d0};
    ret;""", hdr=HDR90)
    expect_error("stmatrix: two rows at one address raise", lambda: run_kernel(same, Memory(), (1, 1, 1), (32, 1, 1), []),
                 "same address")
    old = build("stm_80", [], """
    .reg .b32 %ad, %d0;
    .shared .align 16 .b8 img[512];
    mov.u32 %ad, img;
    stmatrix.sync.aligned.m8n8.x1.shared.b16 [%ad], {%d0};
    ret;""", hdr=HDR80)
    expect_error("stmatrix: needs sm_90", lambda: run_kernel(old, Memory(), (1, 1, 1), (32, 1, 1), []), "sm_90")


def bf16_rand(shape):
    return f32_to_bf16_bits(RNG.standard_normal(shape).astype(np.float32))


def c_frag_index(t, i):
    """(row, column) of accumulator register i of lane t in an m16n8 C / D tile:
    row t / 4 + 8 (i >= 2), column 2 (t % 4) + (i & 1) (PTX ISA, mma.m16n8k*)."""
    return t // 4 + 8 * (i >= 2), 2 * (t % 4) + (i & 1)


def to_c_frag(Cm):
    """The (32, 4) per-lane C fragments of a 16×8 matrix."""
    return np.array([[Cm[c_frag_index(t, i)] for i in range(4)] for t in range(32)], np.float32)


def from_d_frag(frag):
    """The 16×8 matrix of (32, 4) per-lane D fragments."""
    D = np.zeros((16, 8), np.float32)
    for t in range(32):
        for i in range(4):
            D[c_frag_index(t, i)] = frag[t, i]
    return D


def ldm_w_rows(offset):
    """PTX: {%w0, %w1} <- ldmatrix.x2 of W[n][k] (8 rows of 32 bytes at img + offset;
    %l the lane, %b img's address): lanes 0-7 give rows n at byte 0, lanes 8-15 at
    byte 16 (bf16: k 0 and 8; f32: k 0 and 4)."""
    return f"""    and.b32 %r, %l, 7;
    shr.u32 %c, %l, 3;
    and.b32 %c, %c, 1;
    shl.b32 %c, %c, 4;
    mad.lo.u32 %ad, %r, 32, %c;
    add.u32 %ad, %ad, %b;
    ldmatrix.sync.aligned.m8n8.x2.shared.b16 {{%w0, %w1}}, [%ad+{offset}];
"""


def t_mma():
    """A (16x16 row-major) by ldmatrix.x4; B either from a row-major V[k][n] tile
    by ldmatrix.x4.trans (two n-tiles) or from a row-major W[n][k] tile by
    ldmatrix.x2 (non-trans); D = A·B + C must come out exactly."""
    # shared image: A at 0 (row stride 48 B), V at 1024 (16 x 16, stride 48 B),
    # W at 2048 (8 x 16, stride 32 B)
    nb = 4096
    body = f"""
    .reg .pred %p;
    .reg .b32 %i, %s, %b, %x<4>, %ad, %l, %r, %c, %a<4>, %v<4>, %w<2>;
    .reg .f32 %c<4>, %d<4>, %e<4>, %h<4>;
    .reg .b64 %img, %cin, %out, %a;
    .shared .align 16 .b8 img[{nb}];
    ld.param.u64 %img, [p_img];
    ld.param.u64 %cin, [p_c];
    ld.param.u64 %out, [p_out];
{LOAD_IMAGE.replace("{NB}", str(nb)).replace("{NCH}", str(nb // 16))}
    mov.u32 %l, %laneid;
    // lane -> row l % 16, column 8 * (l / 16): the x4 address pattern for A and V
    and.b32 %r, %l, 15;
    shr.u32 %c, %l, 4;
    shl.b32 %c, %c, 4;                  // 8 bf16 = 16 bytes
    mad.lo.u32 %ad, %r, 48, %c;
    mov.u32 %b, img;
    add.u32 %ad, %ad, %b;
    ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{%a0, %a1, %a2, %a3}}, [%ad];
    ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {{%v0, %v1, %v2, %v3}}, [%ad+1024];
{ldm_w_rows(2048)}    mov.u32 %i, %tid.x;
    mul.wide.u32 %a, %i, 16;
    add.s64 %a, %cin, %a;
    ld.global.v4.f32 {{%c0, %c1, %c2, %c3}}, [%a];
    mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {{%d0, %d1, %d2, %d3}}, {{%a0, %a1, %a2, %a3}}, {{%v0, %v1}}, {{%c0, %c1, %c2, %c3}};
    mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {{%e0, %e1, %e2, %e3}}, {{%a0, %a1, %a2, %a3}}, {{%v2, %v3}}, {{%c0, %c1, %c2, %c3}};
    mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {{%h0, %h1, %h2, %h3}}, {{%a0, %a1, %a2, %a3}}, {{%w0, %w1}}, {{%c0, %c1, %c2, %c3}};
    mul.wide.u32 %a, %i, 48;
    add.s64 %a, %out, %a;
    st.global.v4.f32 [%a], {{%d0, %d1, %d2, %d3}};
    st.global.v4.f32 [%a+16], {{%e0, %e1, %e2, %e3}};
    st.global.v4.f32 [%a+32], {{%h0, %h1, %h2, %h3}};
    ret;
"""
    k = build("mma", ["p_img", "p_c", "p_out"], body)
    for warps in (1, 4):
        mem = Memory()
        A, V, W = bf16_rand((16, 16)), bf16_rand((16, 16)), bf16_rand((8, 16))
        img = np.zeros(nb // 2, np.uint16)
        for r in range(16):
            img[r * 24:r * 24 + 16] = A[r]
            img[512 + r * 24:512 + r * 24 + 16] = V[r]
        for r in range(8):
            img[1024 + r * 16:1024 + r * 16 + 16] = W[r]
        Cm = RNG.standard_normal((16, 8)).astype(np.float32)
        pi, pc = mem.upload(img), mem.upload(np.tile(to_c_frag(Cm), (warps, 1)))
        po = mem.upload(np.full(warps * 32 * 12, np.nan, np.float32))
        # every warp reads the same shared image and C fragments
        run_kernel(k, mem, (1, 1, 1), (32 * warps, 1, 1), [pi, pc, po])
        got = mem.download(po, warps * 32 * 12, np.float32).reshape(warps, 32, 3, 4)
        Af, Vf, Wf = (bf16_bits_to_f32(x).astype(np.float64) for x in (A, V, W))
        refs = [Af @ Vf[:, :8] + Cm, Af @ Vf[:, 8:] + Cm, Af @ Wf.T + Cm]
        ok = True
        for wi in range(warps):
            for j, ref in enumerate(refs):
                D = from_d_frag(got[wi, :, j, :])
                ok &= np.allclose(D, ref.astype(np.float32), rtol=1e-6, atol=1e-6)
        check(f"mma m16n8k16 bf16 ({warps} warp{'s' if warps > 1 else ''}): ldmatrix A, .trans V tiles, W rows -> A@B + C",
              bool(ok))


def t_mma_tf32():
    """mma.m16n8k8 .tf32 fed by ldmatrix (non-trans) over f32 rows: A (16×8,
    row-major, 32-byte rows) by ldmatrix.x4 (lanes 0-7 rows 0-7 at k 0, 8-15 rows
    8-15 at k 0, 16-23 rows 0-7 at k 4, 24-31 rows 8-15 at k 4) and B from W[n][k]
    (8×8, 32-byte rows) by ldmatrix.x2 (lanes 0-7 at k 0, 8-15 at k 4) give the
    PTX ISA's tf32 fragments (a0 (g, c), a1 (g+8, c), a2 (g, c+4), a3 (g+8, c+4);
    b0 (k c, n g), b1 (k c+4, n g)); D = A·Wᵀ + C over the operands' top 19 bits.
    The expected D is formed here from the matrices, not from fragments."""
    body = """
    .reg .pred %p;
    .reg .b32 %i, %s, %b, %x<4>, %ad, %l, %r, %c, %a<4>, %w<2>;
    .reg .f32 %c<4>, %d<4>;
    .reg .b64 %img, %cin, %out, %a;
    .shared .align 16 .b8 img[1024];
    ld.param.u64 %img, [p_img];
    ld.param.u64 %cin, [p_c];
    ld.param.u64 %out, [p_out];
""" + LOAD_IMAGE.replace("{NB}", "1024").replace("{NCH}", "64") + """
    mov.u32 %l, %laneid;
    and.b32 %r, %l, 15;
    shr.u32 %c, %l, 4;
    shl.b32 %c, %c, 4;
    mad.lo.u32 %ad, %r, 32, %c;
    mov.u32 %b, img;
    add.u32 %ad, %ad, %b;
    ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%a0, %a1, %a2, %a3}, [%ad];
""" + ldm_w_rows(512) + """    mov.u32 %i, %tid.x;
    mul.wide.u32 %a, %i, 16;
    add.s64 %a, %cin, %a;
    ld.global.v4.f32 {%c0, %c1, %c2, %c3}, [%a];
    mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%d0, %d1, %d2, %d3}, {%a0, %a1, %a2, %a3}, {%w0, %w1}, {%c0, %c1, %c2, %c3};
    mul.wide.u32 %a, %i, 16;
    add.s64 %a, %out, %a;
    st.global.v4.f32 [%a], {%d0, %d1, %d2, %d3};
    ret;
"""
    k = build("mma_tf32", ["p_img", "p_c", "p_out"], body)

    def tf32(x):
        return (x.view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32).astype(np.float64)

    for warps, special in ((1, False), (2, False), (1, True)):
        mem = Memory()
        A = RNG.standard_normal((16, 8)).astype(np.float32)
        W = RNG.standard_normal((8, 8)).astype(np.float32)
        if special:   # inf times a zero gives NaN; inf times the rest inf; NaN spreads
            A[3, 5], W[2, 5], A[9, 1], W[6, 0] = np.inf, 0.0, np.nan, -np.inf
        img = np.zeros(256, np.float32)
        img[:128] = A.ravel()
        img[128:192] = W.ravel()
        Cm = RNG.standard_normal((16, 8)).astype(np.float32)
        pi, pc = mem.upload(img), mem.upload(np.tile(to_c_frag(Cm), (warps, 1)))
        po = mem.upload(np.full(warps * 32 * 4, np.nan, np.float32))
        run_kernel(k, mem, (1, 1, 1), (32 * warps, 1, 1), [pi, pc, po])
        got = mem.download(po, warps * 32 * 4, np.float32).reshape(warps, 32, 4)
        with np.errstate(invalid="ignore"):
            ref = (tf32(A) @ tf32(W).T + Cm).astype(np.float32)
        ok = not special or (np.isnan(ref[3, 2]) and np.isinf(ref[3, 0]) and np.isnan(ref[9, 4]))
        for wi in range(warps):
            D = from_d_frag(got[wi])
            ok &= np.allclose(D, ref, rtol=1e-6, atol=1e-6, equal_nan=True)
            ok &= bool(np.array_equal(np.isnan(D), np.isnan(ref)))
        # the operands really are cut to tf32: a full-precision product differs
        if not special:
            ok &= not np.allclose(ref, (A.astype(np.float64) @ W.T.astype(np.float64) + Cm).astype(np.float32),
                                  rtol=1e-6, atol=1e-6)
        check(f"mma m16n8k8 tf32 ({warps} warp{'s' if warps > 1 else ''}{', inf/NaN' if special else ''}): "
              "ldmatrix over f32 rows -> A@W^T + C on the top 19 bits", bool(ok))


# ---------------------------------------------------------------------------- scalar ALU

def alu_kernel(lines, nres, ftype=False, hdr=HDR):
    """Kernel over 32 threads: inputs a[t], b[t] (u32 bits); `lines` compute
    results %r0..%r{nres-1} (b32), stored to out[t * nres + j]."""
    body = f"""
    .reg .pred %p, %q, %pp<4>;
    .reg .b32 %t, %a, %b, %r<{nres}>, %u, %v;
    .reg .s32 %sa, %sb;
    .reg .f32 %fa, %fb, %fc, %fr;
    .reg .b16 %h, %h2;
    .reg .b64 %pa, %pb, %po, %ad, %w, %w2;
    ld.param.u64 %pa, [p_a];
    ld.param.u64 %pb, [p_b];
    ld.param.u64 %po, [p_out];
    mov.u32 %t, %tid.x;
    mul.wide.u32 %ad, %t, 4;
    add.s64 %w, %pa, %ad;
    ld.global.b32 %a, [%w];
    add.s64 %w, %pb, %ad;
    ld.global.b32 %b, [%w];
    mov.b32 %sa, %a;
    mov.b32 %sb, %b;
    mov.b32 %fa, %a;
    mov.b32 %fb, %b;
{chr(10).join('    ' + x for x in lines)}
    mul.lo.u32 %u, %t, {nres * 4};
    cvt.u64.u32 %ad, %u;
    add.s64 %w, %po, %ad;
{chr(10).join(f'    st.global.b32 [%w+{4 * j}], %r{j};' for j in range(nres))}
    ret;
"""
    return build("alu", ["p_a", "p_b", "p_out"], body, hdr=hdr)


def alu_run(lines, a, b, nres, hdr=HDR):
    k = alu_kernel(lines, nres, hdr=hdr)
    mem = Memory()
    pa, pb = mem.upload(np.asarray(a, np.uint32)), mem.upload(np.asarray(b, np.uint32))
    po = mem.upload(np.zeros(32 * nres, np.uint32))
    run_kernel(k, mem, (1, 1, 1), (32, 1, 1), [pa, pb, po])
    return mem.download(po, 32 * nres, np.uint32).reshape(32, nres)


def t_integer():
    vals = [0, 1, 2, 3, 7, 31, 32, 33, 100, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFF9C, 12345,
            0x80000001]
    a = np.array([vals[i % 16] for i in range(32)], np.uint32)
    b = np.array([vals[(i * 7 + 3) % 16] for i in range(32)], np.uint32)
    b = np.where(b == 0, np.uint32(5), b)
    sa, sb = a.view(np.int32).astype(np.int64), b.view(np.int32).astype(np.int64)
    ua, ub = a.astype(np.int64), b.astype(np.int64)
    cases = [
        ("setp.lt.s32 (signed)", ["setp.lt.s32 %p, %sa, %sb;", "selp.u32 %r{j}, 1, 0, %p;"], (sa < sb)),
        ("setp.lt.u32 (unsigned)", ["setp.lt.u32 %p, %a, %b;", "selp.u32 %r{j}, 1, 0, %p;"], (ua < ub)),
        ("setp.ge.s32", ["setp.ge.s32 %p, %a, %b;", "selp.u32 %r{j}, 1, 0, %p;"], (sa >= sb)),
        ("setp.hi.u32", ["setp.hi.u32 %p, %a, %b;", "selp.u32 %r{j}, 1, 0, %p;"], (ua > ub)),
        ("setp.le.s32 with immediate -1", ["setp.le.s32 %p, %a, -1;", "selp.u32 %r{j}, 1, 0, %p;"], (sa <= -1)),
        ("setp.lt.or.s32 p|q with !c", ["setp.ne.u32 %q, %t, 5;", "setp.lt.or.s32 %p|%pp0, %a, 0, !%q;",
                                        "selp.u32 %r{j}, 1, 0, %pp0;"],
         ((sa >= 0) | (np.arange(32) == 5))),
        ("shr.s32 (arithmetic)", ["and.b32 %u, %b, 31;", "shr.s32 %r{j}, %sa, %u;"], sa >> (ub & 31)),
        ("shr.u32 (logical)", ["and.b32 %u, %b, 31;", "shr.u32 %r{j}, %a, %u;"], ua >> (ub & 31)),
        ("shl.b32 clamps shifts >= 32 to 0", ["shl.b32 %r{j}, %a, 33;"], np.zeros(32, np.int64)),
        ("shr.s32 clamps shifts >= 32 to sign fill", ["shr.s32 %r{j}, %a, 40;"], np.where(sa < 0, -1, 0)),
        ("div.s32 truncates toward zero", ["div.s32 %r{j}, %sa, %sb;"],
         np.array([int(x / y) if abs(x) < 2 ** 52 else 0 for x, y in zip(sa, sb)]) * 0 +
         np.array([abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1) for x, y in zip(sa, sb)])),
        ("rem.s32 has the dividend's sign", ["rem.s32 %r{j}, %sa, %sb;"],
         np.array([x - abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1) * y for x, y in zip(sa, sb)])),
        ("div.u32 / rem.u32", ["div.u32 %u, %a, %b;", "rem.u32 %v, %a, %b;", "mad.lo.u32 %r{j}, %u, 1000, %v;"],
         (ua // ub) * 1000 + ua % ub),
        ("min.s32", ["min.s32 %r{j}, %sa, %sb;"], np.minimum(sa, sb)),
        ("max.u32", ["max.u32 %r{j}, %a, %b;"], np.maximum(ua, ub)),
        ("mul.hi.s32", ["mul.hi.s32 %r{j}, %sa, %sb;"], (sa * sb) >> 32),
        ("mul.hi.u32", ["mul.hi.u32 %r{j}, %a, %b;"], (ua * ub) >> 32),
        ("mul.lo.s32", ["mul.lo.s32 %r{j}, %sa, %sb;"], sa * sb),
        ("mul.wide.s32 (high word)", ["mul.wide.s32 %w, %sa, %sb;", "mov.b64 {%u, %r{j}}, %w;"], (sa * sb) >> 32),
        ("mul.wide.u32 (low word)", ["mul.wide.u32 %w, %a, %b;", "mov.b64 {%r{j}, _}, %w;"], ua * ub),
        ("mad.wide.u32 (high word)", ["cvt.u64.u32 %w2, %b;", "mad.wide.u32 %w, %a, %b, %w2;",
                                      "shr.u64 %w, %w, 32;", "cvt.u32.u64 %r{j}, %w;"], (ua * ub + ub) >> 32),
        ("mad.lo.u32 with immediate", ["mad.lo.u32 %r{j}, %a, 3, 7;"], ua * 3 + 7),
        ("neg.s32 / abs.s32", ["neg.s32 %u, %sa;", "abs.s32 %v, %sb;", "add.u32 %r{j}, %u, %v;"], -sa + np.abs(sb)),
        ("and/or/xor/not.b32", ["and.b32 %u, %a, %b;", "or.b32 %v, %a, 0x0F0F;", "xor.b32 %u, %u, %v;",
                                "not.b32 %r{j}, %u;"], ~((ua & ub) ^ (ua | 0x0F0F))),
        ("add.s64 / sub.s64 / shl.b64 / and.b64", ["cvt.u64.u32 %w, %a;", "cvt.s64.s32 %w2, %sb;",
                                                   "sub.s64 %w, %w, %w2;", "shl.b64 %w, %w, 3;",
                                                   "and.b64 %w, %w, 0xFFFFFFFFF;", "add.s64 %w, %w, 1;",
                                                   "shr.u64 %w, %w, 4;", "cvt.u32.u64 %r{j}, %w;"],
         ((((ua - sb) << 3) & 0xFFFFFFFFF) + 1) >> 4),
        ("selp.s32 / selp.f32", ["setp.gt.s32 %p, %sa, %sb;", "selp.s32 %u, %sa, -7, %p;",
                                 "selp.f32 %fr, 0f3F800000, 0f40000000, %p;", "cvt.rzi.s32.f32 %v, %fr;",
                                 "add.u32 %r{j}, %u, %v;"], np.where(sa > sb, sa + 1, -7 + 2)),
        ("and/or/xor/not.pred", ["setp.lt.u32 %p, %a, %b;", "setp.eq.u32 %q, %t, 4;", "xor.pred %pp0, %p, %q;",
                                 "not.pred %pp1, %pp0;", "or.pred %pp2, %pp1, %q;", "and.pred %pp3, %pp2, %p;",
                                 "selp.u32 %r{j}, 1, 0, %pp3;"],
         (~((ua < ub) ^ (np.arange(32) == 4)) | (np.arange(32) == 4)) & (ua < ub)),
        ("cvt.u32.u16 / cvt.s32.s16 / mov.b32 unpack", ["mov.b32 {%h, %h2}, %a;", "cvt.u32.u16 %u, %h2;",
                                                        "cvt.s32.s16 %v, %h;", "add.u32 %r{j}, %u, %v;"],
         (ua >> 16) + (a & 0xFFFF).astype(np.uint16).view(np.int16).astype(np.int64)),
        ("mov.b32 pack {lo, hi}", ["mov.b32 {%h, %h2}, %a;", "mov.b32 %r{j}, {%h2, %h};"],
         ((ua & 0xFFFF) << 16) | (ua >> 16)),
        ("mov.b64 pack / unpack", ["mov.b64 %w, {%a, %b};", "shr.u64 %w, %w, 16;", "mov.b64 {%u, %v}, %w;",
                                   "xor.b32 %r{j}, %u, %v;"], ((ua >> 16) | ((ub & 0xFFFF) << 16)) ^ (ub >> 16)),
        ("cvt.rn.f32.s32 / cvt.rn.f32.u32", ["cvt.rn.f32.s32 %fa, %sa;", "cvt.rn.f32.u32 %fb, %b;",
                                             "add.f32 %fr, %fa, %fb;", "mov.b32 %r{j}, %fr;"],
         f32bits(sa.astype(np.float32) + ub.astype(np.float32)).astype(np.int64)),
        ("special registers %laneid/%warpid", ["mov.u32 %u, %laneid;", "mov.u32 %v, %warpid;",
                                               "mad.lo.u32 %r{j}, %v, 100, %u;"], np.arange(32)),
        ("popc / clz", ["popc.b32 %u, %a;", "clz.b32 %v, %a;", "mad.lo.u32 %r{j}, %u, 100, %v;"],
         np.array([bin(int(x)).count("1") * 100 + (32 - int(x).bit_length()) for x in a])),
    ]
    lines = []
    for j, (_, ls, _) in enumerate(cases):
        lines += [x.replace("{j}", str(j)) for x in ls]
    got = alu_run(lines, a, b, len(cases))
    for j, (name, _, want) in enumerate(cases):
        want = (np.asarray(want).astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)
        ok = np.array_equal(got[:, j], want)
        check(name, ok, f"got {got[:6, j]} want {want[:6]}")
    # division by zero is unspecified: an error
    expect_error("div.u32 by zero raises", lambda: alu_run(["div.u32 %r0, %a, 0;"], a, b, 1), "division by zero")
    # operand-type checking
    expect_error("add.u32 on a 64-bit register is rejected",
                 lambda: alu_run(["add.u32 %r0, %w, 1;"], a, b, 1), "is not a .u32 operand")
    expect_error("add.f32 on a .s32 register is rejected",
                 lambda: alu_run(["add.f32 %fr, %sa, %fa;", "mov.b32 %r0, %fr;"], a, b, 1), "is not a .f32 operand")


def fbits(x):
    return int(np.array([x], np.float32).view(np.uint32)[0])


def t_float():
    inf, nan = float("inf"), float("nan")
    sub = bits2f(0x00000F00).item()       # subnormal
    fa = np.array([-inf, inf, nan, 0.0, -0.0, 1.0, -1.0, 2.0, 0.5, sub, -sub, 3.0, 1e30, -2.5, 7.0, nan] * 2, np.float32)
    fb = np.array([1.0, nan, 2.0, -0.0, 0.0, nan, 4.0, -3.0, 0.25, 1.0, 2.0, 2.0 ** 127, 1e-30, 0.0, inf, nan] * 2,
                  np.float32)
    a, b = fa.view(np.uint32), fb.view(np.uint32)
    cases = [
        ("ex2.approx: -inf -> +0, +inf -> +inf, NaN -> NaN, else 2^a", "ex2.approx.f32 %fr, %fa;",
         lambda x, y: np.exp2(x.astype(np.float64))),
        ("ex2.approx.ftz flushes a subnormal input (2^0 = 1)", "ex2.approx.ftz.f32 %fr, %fa;",
         lambda x, y: np.exp2(np.where(np.abs(x) < 2.0 ** -126, 0.0, x).astype(np.float64))),
        ("lg2.approx: -x -> NaN, +-0 -> -inf", "lg2.approx.f32 %fr, %fa;", lambda x, y: np.log2(x.astype(np.float64))),
        ("rsqrt.approx: -0 -> -inf, +inf -> 0", "rsqrt.approx.f32 %fr, %fa;",
         lambda x, y: 1.0 / np.sqrt(x.astype(np.float64))),
        ("rcp.approx / rcp.rn", "rcp.approx.f32 %fr, %fa;", lambda x, y: 1.0 / x.astype(np.float64)),
        ("sqrt.rn / sqrt.approx", "sqrt.rn.f32 %fr, %fa;", lambda x, y: np.sqrt(x)),
        ("tanh.approx keeps +-0 and subnormals", "tanh.approx.f32 %fr, %fa;", lambda x, y: np.tanh(x.astype(np.float64))),
        ("min.f32: NaN -> the other input, -0 < +0", "min.f32 %fr, %fa, %fb;", None),
        ("max.f32: NaN -> the other input, +0 > -0", "max.f32 %fr, %fa, %fb;", None),
        ("max.NaN.f32: NaN if either input is NaN", "max.NaN.f32 %fr, %fa, %fb;", None),
        ("add.ftz flushes subnormal inputs and results", "add.ftz.f32 %fr, %fa, %fb;",
         lambda x, y: np.where(np.abs(x) < 2.0 ** -126, np.copysign(0, x), x).astype(np.float32) + y),
        ("add.rn / sub / mul", "sub.f32 %fr, %fa, %fb;", lambda x, y: x - y),
        ("mul.f32", "mul.rn.f32 %fr, %fa, %fb;", lambda x, y: x * y),
        ("div.rn.f32", "div.rn.f32 %fr, %fa, %fb;", lambda x, y: x / y),
        ("div.approx.f32: zero for 2^126 < |b| < 2^128", "div.approx.f32 %fr, %fa, %fb;",
         lambda x, y: np.where(np.abs(y) > 2.0 ** 126, np.where(np.isinf(x), np.nan, np.copysign(0.0, x * y)),
                               x.astype(np.float64) / y)),
        ("add.sat.f32 clamps to [0, 1], NaN -> +0", "add.sat.f32 %fr, %fa, %fb;",
         lambda x, y: np.where(np.isnan(x + y), 0, np.clip(x + y, 0, 1))),
        ("neg.f32 / abs.f32", "neg.f32 %fc, %fa;\n    abs.f32 %fr, %fc;", lambda x, y: np.abs(x)),
        ("fma.rn.f32", "fma.rn.f32 %fr, %fa, %fb, %fa;", None),
        ("cvt.rzi.s32.f32 saturates, NaN -> 0", "cvt.rzi.s32.f32 %u, %fa;\n    mov.b32 %fr, %u;", None),
        ("cvt.rni.s32.f32 rounds half to even", "mul.f32 %fc, %fa, 0f3F000000;\n    cvt.rni.s32.f32 %u, %fc;\n"
                                                "    mov.b32 %fr, %u;", None),
    ]
    lines = []
    for j, (_, ins, _) in enumerate(cases):
        lines += [ins, f"mov.b32 %r{j}, %fr;"]
    got = alu_run(lines, a, b, len(cases)).view(np.float32)

    def same(x, y):
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
        return np.array_equal(x.view(np.uint32), y.view(np.uint32)) or \
            bool(np.all((np.isnan(x) & np.isnan(y)) | (x.view(np.uint32) == y.view(np.uint32))))

    def ref_minmax(x, y, mx, nanmode):
        out = []
        for p, q in zip(x, y):
            if math.isnan(p) or math.isnan(q):
                out.append(nan if nanmode or (math.isnan(p) and math.isnan(q)) else (q if math.isnan(p) else p))
            elif p == q == 0:
                out.append(p if (math.copysign(1, p) < 0) != mx else q)
            else:
                out.append(max(p, q) if mx else min(p, q))
        return np.array(out, np.float32)

    for j, (name, _, fn) in enumerate(cases):
        g = got[:, j]
        if name.startswith("min.f32"):
            want = ref_minmax(fa, fb, False, False)
        elif name.startswith("max.f32"):
            want = ref_minmax(fa, fb, True, False)
        elif name.startswith("max.NaN"):
            want = ref_minmax(fa, fb, True, True)
        elif name.startswith("fma"):
            want = np.array([float(_exact_fma(p, q, p)) for p, q in zip(fa, fb)], np.float32)
        elif name.startswith("cvt.rzi"):
            want = np.array([0 if math.isnan(p) else max(-2 ** 31, min(2 ** 31 - 1, int(p) if math.isfinite(p)
                                                                         else (2 ** 31 if p > 0 else -2 ** 32)))
                             for p in fa], np.int64).astype(np.int32).view(np.float32)
        elif name.startswith("cvt.rni"):
            want = np.array([0 if math.isnan(p) else max(-2 ** 31, min(2 ** 31 - 1, round(p * 0.5) if math.isfinite(p)
                                                                         else (2 ** 31 if p > 0 else -2 ** 32)))
                             for p in fa], np.int64).astype(np.int32).view(np.float32)
        else:
            with np.errstate(all="ignore"):
                want = np.asarray(fn(fa, fb)).astype(np.float32)
        check(name, same(g, want), f"got {g[:16]} want {want[:16]}")
    # signs of special results
    ex = got[:, 0]
    check("ex2.approx(-inf) is +0.0 (bit pattern 0)", int(ex.view(np.uint32)[0]) == 0)
    nanbits = got[:, cases.index(next(c for c in cases if c[0].startswith("add.rn")))].view(np.uint32)
    check("NaN results are the canonical 0x7fffffff", set(nanbits[np.isnan(got[:, 11])].tolist()) <= {0x7FFFFFFF}
          and int(nanbits[1]) == 0x7FFFFFFF)

    # fma: a case where rounding the f64 sum to f32 double-rounds
    a1, b1 = bits2f(0x3F800001), bits2f(0x3F7FFFFF)
    c1 = np.float32(2.0 ** -47 * (1 + 2.0 ** -13))
    g = alu_run(["fma.rn.f32 %fr, %fa, %fb, 0f" + format(fbits(c1), "08X") + ";", "mov.b32 %r0, %fr;"],
                np.full(32, f32bits(a1)), np.full(32, f32bits(b1)), 1)[0, 0]
    exact = _exact_fma(a1, b1, c1)
    naive = np.float32(np.float64(a1) * np.float64(b1) + np.float64(c1))
    check("fma.rn.f32 rounds once (where f64-then-f32 would double-round)",
          g == fbits(exact) and fbits(naive) != fbits(exact), f"got {g:#x} exact {fbits(exact):#x}")

    # setp on floats: ordered / unordered / num / nan
    cmps = ["eq", "ne", "lt", "le", "gt", "ge", "equ", "neu", "ltu", "leu", "gtu", "geu", "num", "nan"]
    lines = []
    for j, c in enumerate(cmps):
        lines += [f"setp.{c}.f32 %p, %fa, %fb;", f"selp.u32 %r{j}, 1, 0, %p;"]
    got = alu_run(lines, a, b, len(cmps))
    ok = True
    with np.errstate(all="ignore"):
        un = np.isnan(fa) | np.isnan(fb)
        base = {"eq": fa == fb, "ne": fa != fb, "lt": fa < fb, "le": fa <= fb, "gt": fa > fb, "ge": fa >= fb}
    for j, c in enumerate(cmps):
        if c == "num":
            want = ~un
        elif c == "nan":
            want = un
        elif c in base:
            want = base[c] & ~un
        else:
            want = base[c[:-1]] | un
        ok &= np.array_equal(got[:, j], want.astype(np.uint32))
    check("setp.f32 ordered (NaN -> false), unordered (NaN -> true), num, nan", bool(ok))
    got = alu_run(["setp.eq.ftz.f32 %p, %fa, 0f00000000;", "selp.u32 %r0, 1, 0, %p;"], a, b, 1)
    check("setp.ftz.f32 compares a subnormal as zero", bool(got[9, 0] == 1 and got[10, 0] == 1 and got[5, 0] == 0))

    t_cvt_bf16()


# f32 bits -> the bf16 bits tessera's rule gives (tools/ptxgen/lib.py, emu_check.py's
# bf16_rule, tests/it/common/suite.rs): nearest, ties to even; every NaN, of either
# sign, quiet or signalling, becomes 0x7FFF. Worked out by hand, not by any code.
BF16_TABLE = [
    (0x3F800000, 0x3F80),  # 1.0, exact
    (0x3F808000, 0x3F80),  # 1 + 2^-8: a tie, to the even 0x3F80 (down)
    (0x3F818000, 0x3F82),  # 1 + 3·2^-8: a tie, to the even 0x3F82 (up)
    (0x3F808001, 0x3F81),  # just above a tie: up
    (0x3F817FFF, 0x3F81),  # just below a tie: down
    (0xBF808000, 0xBF80),  # -(1 + 2^-8): the tie goes to even in magnitude
    (0xBF818000, 0xBF82),
    (0xC0200000, 0xC020),  # -2.5
    (0x3EAAAAAB, 0x3EAB),  # 1/3
    (0x477FE000, 0x4780),  # 65504
    (0x00000000, 0x0000), (0x80000000, 0x8000),  # ±0 keep their sign
    (0x7F800000, 0x7F80), (0xFF800000, 0xFF80),  # ±inf
    (0x7FC00000, 0x7FFF), (0xFFC00000, 0x7FFF),  # quiet NaN, both signs
    (0x7F800001, 0x7FFF), (0xFF800001, 0x7FFF),  # signalling NaN, both signs (not inf)
    (0x7F808000, 0x7FFF), (0xFF807FFF, 0x7FFF),  # NaNs that rounding the bits would make ±inf
    (0x7FFF8000, 0x7FFF), (0xFFFF8000, 0x7FFF),  # NaNs that rounding the bits would carry out of
    (0x7FFFFFFF, 0x7FFF), (0xFFFFFFFF, 0x7FFF),
    (0x7F7F7FFF, 0x7F7F), (0xFF7F7FFF, 0xFF7F),  # just below the midpoint to inf: the largest bf16
    (0x7F7F8000, 0x7F80), (0xFF7F8000, 0xFF80),  # the midpoint (a tie, odd below): ±inf
    (0x7F7FFFFF, 0x7F80), (0xFF7FFFFF, 0xFF80),  # the largest f32: ±inf
    (0x00000001, 0x0000), (0x80000001, 0x8000),  # the smallest subnormal: ±0
    (0x00008000, 0x0000), (0x80008000, 0x8000),  # a tie at 0: stays ±0 (even)
    (0x00018000, 0x0002),                        # a subnormal tie, odd below: up
    (0x00008001, 0x0001),                        # above the tie: the smallest bf16 subnormal
    (0x80010000, 0x8001),                        # a bf16 subnormal, exact
    (0x007F7FFF, 0x007F),                        # the largest bf16 subnormal
    (0x007FFFFF, 0x0080), (0x807F8000, 0x8080),  # to the smallest normal (carry into the exponent)
    (0x00800000, 0x0080),                        # the smallest normal, exact
]


def bf16_rne_ref(bits):
    """cvt.rn.bf16.f32 worked on the f32 bit pattern, one value at a time, written
    apart from ptx_emu.f32_to_bf16_bits: NaN (exponent all ones, mantissa not 0) ->
    0x7FFF; else keep the upper half, plus one if the dropped half is above 0x8000,
    or is exactly 0x8000 and the kept half is odd (the carry may run into the
    exponent: up to the smallest normal, or to inf)."""
    out = []
    for b in np.asarray(bits, np.uint32).tolist():
        if (b >> 23) & 0xFF == 0xFF and b & 0x7FFFFF:
            out.append(0x7FFF)
            continue
        hi, lo = b >> 16, b & 0xFFFF
        if lo > 0x8000 or (lo == 0x8000 and hi & 1):
            hi += 1
        out.append(hi)
    return np.array(out, np.uint32)


def t_cvt_bf16():
    """cvt.rn.bf16.f32, cvt.rn.bf16x2.f32 and cvt.f32.bf16 against the hand table
    and bf16_rne_ref on random bit patterns (every exponent, NaN and inf among
    them), ties (dropped half 0x8000) and their neighbours."""
    tin = np.array([t[0] for t in BF16_TABLE], np.uint32)
    tout = np.array([t[1] for t in BF16_TABLE], np.uint32)
    check("bf16 reference: agrees with the hand-worked table", np.array_equal(bf16_rne_ref(tin), tout),
          f"at {[hex(int(x)) for x in tin[bf16_rne_ref(tin) != tout]]}")
    n = 32 * 6
    rnd = RNG.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32)
    near = (rnd & np.uint32(0xFFFF0000)) | np.array([0x8000, 0x7FFF, 0x8001], np.uint32)[np.arange(n) % 3]
    x = np.concatenate([tin, near[: n // 2], rnd])[:n]
    want = bf16_rne_ref(x)
    scalar, pair, back = [], [], []
    for c in range(0, n, 32):
        a, b = x[c:c + 32], np.roll(x[c:c + 32], 5)
        g = alu_run(["cvt.rn.bf16.f32 %h, %fa;", "cvt.u32.u16 %r0, %h;", "cvt.rn.bf16x2.f32 %r1, %fa, %fb;",
                     "cvt.f32.bf16 %fr, %h;", "mov.b32 %r2, %fr;"], a, b, 3)
        scalar.append(g[:, 0]), pair.append(g[:, 1]), back.append(g[:, 2])
        if c == 0:
            g1 = alu_run(["cvt.rn.bf16x2.f32 %r0, %fa, %fb;"], np.full(32, 0x3F800000), np.full(32, 0x40000000), 1)
            check("cvt.rn.bf16x2.f32 d, 1.0, 2.0 -> 0x3f804000", int(g1[0, 0]) == 0x3F804000)
    scalar, pair, back = (np.concatenate(v) for v in (scalar, pair, back))
    y = np.concatenate([np.roll(x[c:c + 32], 5) for c in range(0, n, 32)])
    bad = np.flatnonzero(scalar != want)
    check("cvt.rn.bf16.f32: nearest even, ±inf, subnormals, overflow to inf, every NaN -> 0x7fff",
          bad.size == 0, ", ".join(f"{int(x[i]):#010x} -> {int(scalar[i]):#06x} want {int(want[i]):#06x}"
                                   for i in bad[:8]))
    check("cvt.rn.bf16x2.f32 d, a, b puts cvt(a) in the upper half, cvt(b) in the lower",
          np.array_equal(pair, (want << np.uint32(16)) | bf16_rne_ref(y)))
    check("cvt.f32.bf16 widens the rounded bits exactly", np.array_equal(back, want << np.uint32(16)))


def _exact_fma(a, b, c):
    """Correctly rounded f32 fma via fractions (finite inputs), numpy otherwise."""
    a, b, c = float(a), float(b), float(c)
    if not all(math.isfinite(v) for v in (a, b, c)):
        return np.float32(np.float64(a) * np.float64(b) + np.float64(c))
    x = Fraction(a) * Fraction(b) + Fraction(c)
    if x == 0:
        return np.float32(np.float64(a) * np.float64(b) + np.float64(c))
    # round x to f32: candidates around the f64 approximation
    if abs(x) >= Fraction(2 ** 128) - Fraction(2 ** 103):
        return np.float32(math.copysign(math.inf, x))
    f = np.float32(float(x))
    best = None
    for cand in (np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))):
        d = abs(Fraction(float(cand)) - x)
        key = (d, int(np.array([cand], np.float32).view(np.uint32)[0]) & 1)
        if best is None or key < best[0]:
            best = (key, cand)
    return np.float32(best[1])


# ---------------------------------------------------------------------------- shfl

def t_shfl():
    body = """
    .reg .pred %p;
    .reg .b32 %t, %v, %j, %r<6>;
    .reg .b64 %po, %w;
    ld.param.u64 %po, [p_out];
    mov.u32 %t, %tid.x;
    mad.lo.u32 %v, %t, 1000, 7;
    mul.lo.u32 %j, %t, 7;
    and.b32 %j, %j, 31;
    shfl.sync.idx.b32 %r0, %v, %j, 31, 0xffffffff;
    shfl.sync.bfly.b32 %r1, %v, 5, 31, -1;
    shfl.sync.down.b32 %r2|%p, %v, 3, 31, -1;
    selp.u32 %r5, 1, 0, %p;
    shfl.sync.up.b32 %r3, %v, 2, 0, -1;
    shfl.sync.idx.b32 %r4, %v, 3, 0x1807, -1;       // 8-lane segments: lane (t & ~7) + 3
    add.u32 %r4, %r4, %r5;
    mul.wide.u32 %w, %t, 32;
    add.s64 %w, %po, %w;
    st.global.v4.b32 [%w], {%r0, %r1, %r2, %r3};
    st.global.b32 [%w+16], %r4;
    ret;
"""
    k = build("shfl", ["p_out"], body)
    for nt in (32, 64):
        mem = Memory()
        po = mem.upload(np.zeros(nt * 8, np.uint32))
        run_kernel(k, mem, (1, 1, 1), (nt, 1, 1), [po])
        got = mem.download(po, nt * 8, np.uint32).reshape(nt, 8).astype(np.int64)
        t = np.arange(nt)
        base = t - t % 32
        ln = t % 32
        v = lambda lane: (base + lane) * 1000 + 7  # noqa: E731
        check(f"shfl.sync.idx (register lane) [{nt} threads]", np.array_equal(got[:, 0], v((ln * 7) % 32)))
        check(f"shfl.sync.bfly 5 [{nt} threads]", np.array_equal(got[:, 1], v(ln ^ 5)))
        check(f"shfl.sync.down 3, clamp 31: lanes 29-31 keep their own [{nt} threads]",
              np.array_equal(got[:, 2], v(np.where(ln + 3 <= 31, ln + 3, ln))))
        check(f"shfl.sync.up 2, c 0: lanes 0-1 keep their own [{nt} threads]",
              np.array_equal(got[:, 3], v(np.where(ln >= 2, ln - 2, ln))))
        check(f"shfl.sync.idx in 8-lane segments (c = 0x1807) + down's predicate [{nt} threads]",
              np.array_equal(got[:, 4], v((ln & ~7) + 3) + (ln + 3 <= 31)))
    kd = build("shfl_div", ["p_out"], """
    .reg .pred %p;
    .reg .b32 %t, %r;
    mov.u32 %t, %tid.x;
    setp.lt.u32 %p, %t, 16;
    @%p bra $x;
    shfl.sync.bfly.b32 %r, %t, 1, 31, -1;
$x:
    ret;""")
    mem = Memory()
    expect_error("shfl.sync with lanes of the membermask not executing raises",
                 lambda: run_kernel(kd, mem, (1, 1, 1), (32, 1, 1), [0]), "membermask")
    kh = build("shfl_half", ["p_out"], """
    .reg .pred %p;
    .reg .b32 %t, %r;
    mov.u32 %t, %tid.x;
    setp.lt.u32 %p, %t, 16;
    @%p bra $x;
    shfl.sync.bfly.b32 %r, %t, 1, 31, 0xffff0000;
$x:
    ret;""")
    try:
        run_kernel(kh, mem, (1, 1, 1), (32, 1, 1), [0])
        check("shfl.sync with a partial membermask naming only executing lanes", True)
    except EmuError as e:
        check("shfl.sync with a partial membermask naming only executing lanes", False, str(e))


# ---------------------------------------------------------------------------- vectors, memory

def t_vectors():
    body = """
    .reg .b32 %t, %s, %b, %x<4>;
    .reg .f32 %f<4>;
    .reg .b16 %h, %h2;
    .reg .b64 %pi, %po, %a, %o;
    .shared .align 16 .b8 sm[2048];
    ld.param.u64 %pi, [p_in];
    ld.param.u64 %po, [p_out];
    mov.u32 %t, %tid.x;
    mul.wide.u32 %a, %t, 16;
    add.s64 %a, %pi, %a;
    add.s64 %o, %po, %a;
    sub.s64 %o, %o, %pi;
    mov.u32 %b, sm;
    shl.b32 %s, %t, 4;
    add.u32 %s, %s, %b;
    ld.global.nc.v4.b32 {%x0, %x1, %x2, %x3}, [%a];
    st.shared.v4.b32 [%s], {%x3, %x2, %x1, %x0};
    ld.global.v2.f32 {%f0, %f1}, [%a+8];
    st.shared.v2.f32 [%s+512], {%f1, %f0};
    ld.global.nc.b32 %x0, [%a+4];
    st.shared.u32 [%s+520], %x0;
    ld.global.nc.u16 %h, [%a+2];
    st.shared.b16 [%s+524], %h;
    ld.global.u16 %x1, [%a+6];
    st.shared.b16 [%s+526], %x1;
    bar.sync 0;
    ld.shared.v4.u32 {%x0, %x1, %x2, %x3}, [%s];
    st.global.v4.u32 [%o], {%x0, %x1, %x2, %x3};
    ld.shared.v2.b32 {%x0, %x1}, [%s+512];
    ld.shared.u32 %x2, [%s+520];
    ld.shared.u16 %h, [%s+524];
    ld.shared.b16 %h2, [%s+526];
    mov.b32 %x3, {%h, %h2};
    st.global.v2.b32 [%o+512], {%x0, %x1};
    st.global.v2.u32 [%o+520], {%x2, %x3};
    ret;
"""
    k = build("vec", ["p_in", "p_out"], body)
    mem = Memory()
    src = RNG.integers(0, 2 ** 32, 32 * 4, dtype=np.uint32)
    pi, po = mem.upload(src), mem.upload(np.zeros(2 * 32 * 4, np.uint32))
    run_kernel(k, mem, (1, 1, 1), (32, 1, 1), [pi, po])
    got = mem.download(po, 2 * 32 * 4, np.uint32).reshape(2, 32, 4)
    s = src.reshape(32, 4)
    u16 = src.view(np.uint16).reshape(32, 8)
    want2 = np.stack([s[:, 3], s[:, 2], s[:, 1], (u16[:, 1].astype(np.uint32) | (u16[:, 3].astype(np.uint32) << 16))], 1)
    check("ld.global(.nc).v4/v2/b32/u16, st.shared.v4/v2/b16, ld.shared.v4/v2/u16/b16",
          np.array_equal(got[0], s[:, ::-1]) and np.array_equal(got[1], want2))
    kb = build("vec_bad", ["p_in", "p_out"], body.replace("ld.global.v2.f32 {%f0, %f1}, [%a+8];",
                                                         "ld.global.v2.f32 {%f0, %f1}, [%a+4];"))
    expect_error("ld.global.v2.f32 at a 4-byte-aligned address raises", lambda: run_kernel(kb, mem, (1, 1, 1), (32, 1, 1),
                                                                                           [pi, po]), "misaligned")
    kb = build("vec_bad2", ["p_in", "p_out"], body.replace("st.shared.v2.f32 [%s+512], {%f1, %f0};",
                                                          "st.shared.v2.f32 [%s+516], {%f1, %f0};"))
    expect_error("st.shared.v2.f32 at a 4-byte-aligned address raises", lambda: run_kernel(kb, mem, (1, 1, 1), (32, 1, 1),
                                                                                           [pi, po]), "misaligned")
    # ld.global.nc on data the kernel writes
    knc = build("nc", ["p_in", "p_out"], """
    .reg .b32 %t, %x;
    .reg .b64 %pi, %a;
    ld.param.u64 %pi, [p_in];
    mov.u32 %t, %tid.x;
    mul.wide.u32 %a, %t, 4;
    add.s64 %a, %pi, %a;
    ld.global.nc.b32 %x, [%a];
    add.u32 %x, %x, 1;
    st.global.b32 [%a], %x;
    ret;""")
    expect_error("ld.global.nc of bytes the same kernel writes raises",
                 lambda: run_kernel(knc, mem, (1, 1, 1), (32, 1, 1), [pi, po]), "ld.global.nc")


# ---------------------------------------------------------------------------- launch checks

def t_launch():
    body = """
    .reg .b32 %t, %y, %r;
    .reg .b64 %po, %a;
    ld.param.u64 %po, [p_out];
    mov.u32 %t, %tid.x;
    mov.u32 %y, %tid.y;
    mov.u32 %r, %ntid.x;
    mad.lo.u32 %t, %y, %r, %t;
    mov.u32 %r, %ctaid.y;
    mad.lo.u32 %r, %r, 1000, %t;
    mov.u32 %y, %nctaid.z;
    mad.lo.u32 %r, %y, 100000, %r;
    mov.u32 %y, %ntid.y;
    mad.lo.u32 %r, %y, 10000000, %r;
    mov.u32 %y, %ctaid.y;
    mul.lo.u32 %y, %y, 64;
    add.u32 %t, %t, %y;
    mul.wide.u32 %a, %t, 4;
    add.s64 %a, %po, %a;
    st.global.u32 [%a], %r;
    ret;
"""
    k = build("rq", ["p_out"], body, ".reqntid 32, 2")
    mem = Memory()
    po = mem.upload(np.zeros(128, np.uint32))
    run_kernel(k, mem, (1, 2, 1), (32, 2, 1), [po])
    got = mem.download(po, 128, np.uint32)
    t = np.arange(64)
    want = np.concatenate([t + 100000 + 20000000, 1000 + t + 100000 + 20000000])
    check("%tid.y / %ntid.y / %ctaid.y / %nctaid.z with a (32, 2) block and .reqntid 32, 2", np.array_equal(got, want))
    expect_error(".reqntid: launch with a different block raises",
                 lambda: run_kernel(k, mem, (1, 1, 1), (64, 1, 1), [po]), ".reqntid")
    # prefetch.global: no data moves, but the address must lie in a buffer
    pf = build("pf", ["p_out", "p_off:u32"], """
    .reg .b64 %po, %a;
    .reg .b32 %o;
    ld.param.u64 %po, [p_out];
    ld.param.u32 %o, [p_off];
    mul.wide.u32 %a, %o, 1;
    add.s64 %a, %po, %a;
    prefetch.global.L2 [%a];
    prefetch.global.L2::evict_last [%a];
    ret;""")
    run_kernel(pf, mem, (1, 1, 1), (32, 1, 1), [po, np.uint32(511)])
    check("prefetch.global.L2 inside a buffer is a no-op", True)
    expect_error("prefetch.global.L2 past a buffer raises",
                 lambda: run_kernel(pf, mem, (1, 1, 1), (32, 1, 1), [po, np.uint32(512)]), "out-of-bounds global access")
    k2 = build("mx", ["p_out"], "ret;", ".maxntid 128 .maxnreg 64")
    run_kernel(k2, mem, (1, 1, 1), (96, 1, 1), [po])
    check(".maxntid 128 / .maxnreg accepted with 96 threads", True)
    expect_error(".maxntid: launch with more threads raises", lambda: run_kernel(k2, mem, (1, 1, 1), (256, 1, 1), [po]),
                 ".maxntid")
    # shared memory limits
    big = build("big", [], ".shared .align 16 .b8 s[49160];\n ret;")
    expect_error("static shared memory > 48 KiB raises", lambda: run_kernel(big, mem, (1, 1, 1), (32, 1, 1), []),
                 "48 KiB")
    dyn = parse_module(HDR + """
.extern .shared .align 16 .b8 dyn_smem[];
.visible .entry dyn(.param .u32 p_n)
{
    .reg .pred %p;
    .reg .b32 %n, %a, %x, %t;
    .shared .align 16 .b8 st[40960];
    ld.param.u32 %n, [p_n];
    mov.u32 %a, dyn_smem;
    add.u32 %a, %a, %n;
    mov.u32 %t, %tid.x;
    shl.b32 %t, %t, 2;
    sub.u32 %a, %a, %t;
    sub.u32 %a, %a, 4;
    st.shared.u32 [%a], %n;
    ld.shared.u32 %x, [%a];
    ret;
}
""")["dyn"]
    expect_error("static 40 KiB + dynamic 10 KiB without allow_large_smem raises",
                 lambda: run_kernel(dyn, mem, (1, 1, 1), (32, 1, 1), [10240], dyn_smem=10240), "allow_large_smem")
    try:
        run_kernel(dyn, mem, (1, 1, 1), (32, 1, 1), [180 * 1024], dyn_smem=180 * 1024, allow_large_smem=True)
        check("static 40 KiB + dynamic 180 KiB with allow_large_smem runs (last dynamic byte writable)", True)
    except EmuError as e:
        check("static 40 KiB + dynamic 180 KiB with allow_large_smem runs (last dynamic byte writable)", False, str(e))
    expect_error("static + dynamic > 227 KiB raises even with allow_large_smem",
                 lambda: run_kernel(dyn, mem, (1, 1, 1), (32, 1, 1), [190 * 1024], dyn_smem=190 * 1024,
                                    allow_large_smem=True), "227 KiB")
    expect_error("access past the dynamic shared memory raises",
                 lambda: run_kernel(dyn, mem, (1, 1, 1), (32, 1, 1), [1028], dyn_smem=1024), "out of bounds")
    # barrier discipline
    kb = build("bars", [], """
    .reg .pred %p;
    .reg .b32 %t;
    mov.u32 %t, %tid.x;
    setp.lt.u32 %p, %t, 32;
    @%p bra $x;
    bar.sync 0;
$x:
    ret;""")
    expect_error("bar.sync reached by a subset of the block raises",
                 lambda: run_kernel(kb, mem, (1, 1, 1), (64, 1, 1), []), "subset")
    kbu = build("braun", [], """
    .reg .pred %p;
    .reg .b32 %t;
    mov.u32 %t, %tid.x;
    setp.lt.u32 %p, %t, 7;
    @%p bra.uni $x;
$x:
    ret;""")
    expect_error("bra.uni with a warp-divergent predicate raises",
                 lambda: run_kernel(kbu, mem, (1, 1, 1), (32, 1, 1), []), "bra.uni")


def t_races():
    """Barrier-interval race detection on shared memory."""
    body = """
    .reg .pred %p;
    .reg .b32 %t, %l, %w, %s, %o, %b, %x, %y;
    .reg .b64 %src, %a;
    .shared .align 16 .b8 buf[4096];
    ld.param.u64 %src, [p_src];
    mov.u32 %t, %tid.x;
    mov.u32 %l, %laneid;
    shr.u32 %w, %t, 5;
    mov.u32 %b, buf;
    shl.b32 %s, %t, 2;
    add.u32 %s, %s, %b;
    st.shared.u32 [%s], %t;
    {SYNC1}
    {READ}
    {SYNC2}
    {WRITE}
    ret;
"""

    def run(sync1="", read="", sync2="", write="", nt=64):
        k = build("race", ["p_src"], body.replace("{SYNC1}", sync1).replace("{READ}", read)
                  .replace("{SYNC2}", sync2).replace("{WRITE}", write))
        mem = Memory()
        run_kernel(k, mem, (1, 1, 1), (nt, 1, 1), [mem.upload(np.zeros(4096, np.uint8))])

    other_warp = "xor.b32 %o, %t, 32;\n shl.b32 %o, %o, 2;\n add.u32 %o, %o, %b;\n ld.shared.u32 %x, [%o];"
    other_lane = "xor.b32 %o, %t, 1;\n shl.b32 %o, %o, 2;\n add.u32 %o, %o, %b;\n ld.shared.u32 %x, [%o];"
    expect_error("race: reading another warp's st.shared without bar.sync raises",
                 lambda: run(read=other_warp), "shared-memory race")
    try:
        run("bar.sync 0;", other_warp)
        check("race: ... with bar.sync in between passes", True)
    except EmuError as e:
        check("race: ... with bar.sync in between passes", False, str(e))
    expect_error("race: reading another lane's st.shared without any barrier raises",
                 lambda: run(read=other_lane), "shared-memory race")
    try:
        run("bar.warp.sync -1;", other_lane)
        check("race: ... same warp with bar.warp.sync in between passes", True)
    except EmuError as e:
        check("race: ... same warp with bar.warp.sync in between passes", False, str(e))
    expect_error("race: bar.warp.sync does not order accesses of different warps",
                 lambda: run("bar.warp.sync -1;", other_warp), "shared-memory race")
    # write after another warp's read (WAR): the refill of a pipeline stage
    refill = "mul.wide.u32 %a, %t, 16;\n add.s64 %a, %src, %a;\n shl.b32 %y, %t, 4;\n add.u32 %y, %y, %b;\n" \
             " cp.async.cg.shared.global [%y], [%a], 16;\n cp.async.wait_all;"
    expect_error("race: cp.async into bytes another warp read in the same interval raises (missing bar.sync)",
                 lambda: run("bar.sync 0;", other_warp, "", refill), "shared-memory race")
    try:
        run("bar.sync 0;", other_warp, "bar.sync 0;", refill)
        check("race: ... with bar.sync before the refill passes", True)
    except EmuError as e:
        check("race: ... with bar.sync before the refill passes", False, str(e))
    expect_error("race: st.shared over another warp's data in the same interval raises",
                 lambda: run(write="st.shared.u32 [%s+128], %t;"), "shared-memory race")
    # different values stored to one address by one instruction
    kk = build("race2", [], """
    .reg .b32 %t, %b;
    .shared .align 16 .b8 buf[64];
    mov.u32 %t, %tid.x;
    mov.u32 %b, buf;
    st.shared.u32 [%b], %t;
    ret;""")
    expect_error("race: one st.shared of different values to one address by many threads raises",
                 lambda: run_kernel(kk, Memory(), (1, 1, 1), (32, 1, 1), []), "same address")


def t_mbarrier_order():
    """mbarrier.arrive (.release) and a try_wait that observes the phase
    (.acquire) order generic shared-memory accesses for the race detector: warp
    0 stores, arrives; warp 1 waits, then reads warp 0's words."""
    body = """
    .reg .pred %p, %ok;
    .reg .b32 %t, %w, %s, %o, %b, %x, %bar;
    .reg .b64 %st;
    .shared .align 16 .b8 buf[256];
    .shared .align 8 .b64 mb;
    mov.u32 %t, %tid.x;
    shr.u32 %w, %t, 5;
    mov.u32 %b, buf;
    mov.u32 %bar, mb;
    setp.ne.u32 %p, %t, 0;
    @%p bra $i;
    mbarrier.init.shared::cta.b64 [%bar], 32;
$i:
    bar.sync 0;
    setp.ne.u32 %p, %w, 0;
    @%p bra $reader;
    shl.b32 %s, %t, 2;
    add.u32 %s, %s, %b;
    st.shared.u32 [%s], %t;
    ARRIVE
    ret;
$reader:
    WAIT
    and.b32 %o, %t, 31;
    shl.b32 %o, %o, 2;
    add.u32 %o, %o, %b;
    ld.shared.u32 %x, [%o];
    ret;
"""
    arrive = "mbarrier.arrive.shared::cta.b64 %st, [%bar];"
    wait = "$w:\n    mbarrier.try_wait.parity.shared::cta.b64 %ok, [%bar], 0;\n    @!%ok bra $w;"

    def run(a=arrive, w=wait):
        k = build("mbo", [], body.replace("ARRIVE", a).replace("WAIT", w), hdr=HDR90)
        run_kernel(k, Memory(), (1, 1, 1), (64, 1, 1), [])

    try:
        run()
        check("mbarrier order: stores, arrive; another warp's try_wait observing the phase, loads: no race", True)
    except EmuError as e:
        check("mbarrier order: stores, arrive; another warp's try_wait observing the phase, loads: no race",
              False, str(e))
    expect_error("mbarrier order: the loads with no wait race the stores", lambda: run(w=""), "shared-memory race")
    expect_error("mbarrier order: a .relaxed arrive releases nothing",
                 lambda: run(a=arrive.replace("arrive.shared", "arrive.relaxed.cta.shared")), "shared-memory race")
    expect_error("mbarrier order: a .relaxed try_wait acquires nothing",
                 lambda: run(w=wait.replace("parity.shared", "parity.relaxed.cta.shared")), "shared-memory race")


def t_bar_red():
    """bar.red.{or,and}.pred: every thread gets the OR / AND of the block's
    predicates, and the barrier orders shared accesses as bar.sync does."""
    body = """
    .reg .pred %p, %q;
    .reg .b32 %t, %b, %s, %o, %x, %v, %sel;
    .reg .b64 %out, %a;
    .shared .align 16 .b8 buf[1024];
    ld.param.u64 %out, [p_out];
    ld.param.u32 %sel, [p_sel];
    mov.u32 %t, %tid.x;
    mov.u32 %b, buf;
    shl.b32 %s, %t, 2;
    add.u32 %s, %s, %b;
    st.shared.u32 [%s], %t;
    setp.eq.u32 %p, %t, %sel;              // only thread `sel` holds true
    {RED}
    xor.b32 %o, %t, 32;                     // another warp's word
    shl.b32 %o, %o, 2;
    add.u32 %o, %o, %b;
    ld.shared.u32 %x, [%o];
    selp.u32 %v, 1, 0, %q;
    shl.b32 %v, %v, 16;
    add.u32 %v, %v, %x;
    mul.wide.u32 %a, %t, 4;
    add.s64 %a, %out, %a;
    st.global.u32 [%a], %v;
    ret;
"""

    def run(red, sel, nt=64):
        k = build("red", ["p_out", "p_sel:u32"], body.replace("{RED}", red))
        mem = Memory()
        out = mem.upload(np.zeros(nt, np.uint32))
        run_kernel(k, mem, (1, 1, 1), (nt, 1, 1), [out, sel])
        return mem.download(out, nt, np.uint32)

    t = np.arange(64, dtype=np.uint32)
    for op, sel, want in (("or", 37, 1), ("or", 99, 0), ("and", 37, 0)):
        got = run(f"bar.red.{op}.pred %q, 0, %p;", sel)
        check(f"bar.red.{op}.pred: thread {sel} of 64 true → every thread reads {want}, and another warp's "
              f"st.shared before it", np.array_equal(got, (want << 16) + (t ^ 32)), f"{got[:4]}")
    got = run("bar.red.and.pred %q, 0, !%p;", 99)
    check("bar.red.and.pred with a negated source: all true", np.array_equal(got, (1 << 16) + (t ^ 32)))
    expect_error("bar.red: the shared read of another warp's word without it raises a race",
                 lambda: run("setp.eq.u32 %q, %t, 0;", 37), "shared-memory race")
    expect_error("bar.red under a divergent branch raises",
                 lambda: run("@%p bra L;\n bar.red.or.pred %q, 0, %p;\n bra E;\n"
                             " L: bar.red.or.pred %q, 0, %p;\n E:", 37), "bar.red")


def _bfe_ref(a, pos, ln, signed, bits=32):
    """PTX ISA bfe pseudocode, bit by bit."""
    msb = bits - 1
    abit = [(a >> i) & 1 for i in range(bits)]
    sbit = 0 if (not signed or ln == 0) else abit[min(pos + ln - 1, msb)]
    return sum(((abit[pos + i] if (i < ln and pos + i <= msb) else sbit) << i) for i in range(bits))


def _bfi_ref(f, b, pos, ln, bits=32):
    d = [(b >> i) & 1 for i in range(bits)]
    i = 0
    while i < ln and pos + i <= bits - 1:
        d[pos + i] = (f >> i) & 1
        i += 1
    return sum(x << i for i, x in enumerate(d))


def t_bits():
    a = RNG.integers(0, 2 ** 32, 32, dtype=np.uint64).astype(np.uint32)
    a[:4] = [0x80000000, 0xFFFFFFFF, 0x7FFFFFFF, 0x12345678]
    pos = np.array([0, 4, 31, 32, 40, 255, 16, 30] * 4, np.uint32)
    ln = np.array([8, 0, 1, 3, 8, 4, 32, 40, 16, 255, 2, 31] * 3, np.uint32)[:32]
    b = pos | (ln << 8)
    got = alu_run(["and.b32 %u, %b, 255;", "shr.u32 %v, %b, 8;",
                   "bfe.u32 %r0, %a, %u, %v;", "bfe.s32 %r1, %a, %u, %v;", "bfi.b32 %r2, %b, %a, %u, %v;",
                   "mov.b64 %w, {%a, %b};", "bfe.s64 %w2, %w, %u, %v;", "mov.b64 {%r3, %r4}, %w2;"], a, b, 5)
    want = np.array([[_bfe_ref(int(a[t]), int(pos[t]), int(ln[t]), False),
                      _bfe_ref(int(a[t]), int(pos[t]), int(ln[t]), True),
                      _bfi_ref(int(b[t]), int(a[t]), int(pos[t]), int(ln[t]))]
                     + [(_bfe_ref(int(a[t]) | (int(b[t]) << 32), int(pos[t]), int(ln[t]), True, 64) >> (32 * h))
                        & 0xFFFFFFFF for h in (0, 1)] for t in range(32)], np.uint64).astype(np.uint32)
    for j, name in enumerate(["bfe.u32", "bfe.s32", "bfi.b32", "bfe.s64 (low word)", "bfe.s64 (high word)"]):
        check(f"{name} matches the ISA pseudocode (pos / len 0..255, past the msb)",
              np.array_equal(got[:, j], want[:, j]), f"{got[:, j]} vs {want[:, j]}")
    # elect.sync: lanes 5..31 elect among themselves
    got = alu_run(["mov.u32 %r0, 99;", "mov.u32 %r1, 99;", "setp.lt.u32 %q, %t, 5;", "@%q bra $e;",
                   "elect.sync %r0|%p, 0xFFFFFFE0;", "selp.u32 %r1, 1, 0, %p;", "$e:"], a, b, 2, hdr=HDR90)
    check("elect.sync: the lowest lane of the membermask is elected, every member learns its lane id",
          np.array_equal(got[:, 0], [99] * 5 + [5] * 27) and np.array_equal(got[:, 1], [99] * 5 + [1] + [0] * 26))
    k = build("smr", [], """
    .reg .pred %p;
    .reg .b32 %t;
    mov.u32 %t, %tid.x;
    setp.lt.u32 %p, %t, 128;
    @!%p bra $x;
    setmaxnreg.inc.sync.aligned.u32 240;
$x:
    ret;""", hdr=HDR90)
    try:
        run_kernel(k, Memory(), (1, 1, 1), (160, 1, 1), [])
        check("setmaxnreg by a whole warpgroup passes", True)
    except EmuError as e:
        check("setmaxnreg by a whole warpgroup passes", False, str(e))
    expect_error("setmaxnreg by part of a warpgroup raises",
                 lambda: run_kernel(k, Memory(), (1, 1, 1), (96, 1, 1), []), "only partly")


# ---------------------------------------------------------------------------- Hopper: TMA, mbarrier, wgmma

TMA = "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"


def tma_box_ref(G, dims, c0, c1, box, swizzle):
    """The shared-memory image of a TMA box, element by element: G[outer][inner]
    (u16, rows possibly padded), the box's row r = outer index c1 + r at byte
    r * box_inner * 2, elements outside dims zero; the 128-byte swizzle stores
    16-byte chunk j of row r at chunk j ^ (r % 8)."""
    bx, by = box
    img = np.zeros((by, bx), np.uint16)
    for r in range(by):
        for j in range(bx):
            x, y = c0 + j, c1 + r
            if 0 <= x < dims[0] and 0 <= y < dims[1]:
                img[r, j] = G[y, x]
    raw = img.view(np.uint8).reshape(by, 2 * bx)
    if not swizzle:
        return raw.ravel()
    assert 2 * bx == 128
    out = np.zeros_like(raw)
    for r in range(by):
        for j in range(8):
            k = j ^ (r % 8)
            out[r, 16 * k:16 * k + 16] = raw[r, 16 * j:16 * j + 16]
    return out.ravel()


TMA_BODY = """
    .reg .pred %p, %ok, %q;
    .reg .b32 %t, %b, %c0, %c1, %i, %o, %sa, %x<4>;
    .reg .b64 %tm, %out, %a, %st;
    .shared .align 1024 .b8 buf[{NB}];
    .shared .align 8 .b64 bar;
    ld.param.u64 %out, [p_out];
    ld.param.u32 %c0, [p_c0];
    ld.param.u32 %c1, [p_c1];
    mov.u64 %tm, p_tm;
    cvta.param.u64 %tm, %tm;
    mov.u32 %t, %tid.x;
    mov.u32 %b, bar;
    setp.ne.u32 %p, %t, 0;
    @%p bra $init_done;
    mbarrier.init.shared::cta.b64 [bar], 1;
    fence.mbarrier_init.release.cluster;
$init_done:
    bar.sync 0;
    @%p bra $issued;
    prefetch.tensormap [%tm];
    mbarrier.arrive.expect_tx.shared::cta.b64 %st, [%b], {TX};
    {TMA} [{DST}], [%tm, {%c0, %c1}], [%b];
$issued:
    {WAIT}
    mov.u32 %i, %t;
$cp:
    setp.ge.u32 %q, %i, {NCH};
    @%q bra $done;
    shl.b32 %o, %i, 4;
    mov.u32 %sa, buf;
    add.u32 %sa, %sa, %o;
    ld.shared.v4.u32 {%x0, %x1, %x2, %x3}, [%sa];
    cvt.u64.u32 %a, %o;
    add.s64 %a, %out, %a;
    st.global.v4.u32 [%a], {%x0, %x1, %x2, %x3};
    add.u32 %i, %i, 32;
    bra $cp;
$done:
    {AFTER}
    ret;
"""
WAIT_LOOP = """$wait:
    mbarrier.try_wait.parity.shared::cta.b64 %ok, [%b], 0;
    @!%ok bra $wait;"""


def tma_kernel(nb, wait=WAIT_LOOP, tx=None, after="", dst="buf", hdr=HDR90, edit=None):
    body = TMA_BODY
    for key, val in (("{WAIT}", wait), ("{AFTER}", after), ("{NB}", str(nb)), ("{NCH}", str(nb // 16)),
                     ("{TX}", str(nb if tx is None else tx)), ("{TMA}", TMA), ("{DST}", dst)):
        body = body.replace(key, val)
    if edit:
        body = body.replace(*edit)
    return build("tma", ["p_tm:tmap", "p_out", "p_c0:u32", "p_c1:u32"], body, hdr=hdr)


def tma_run(k, G, nb, c0, c1, tmap, **kw):
    """Run the TMA kernel over G (uploaded), tmap(address) -> its tensor map;
    returns the nb bytes of shared memory the threads copied out."""
    mem = Memory()
    pg = mem.upload(G)
    po = mem.upload(np.zeros(nb, np.uint8))
    run_kernel(k, mem, (1, 1, 1), (32, 1, 1), [tmap(pg), po, c0, c1], **kw)
    return mem.download(po, nb, np.uint8)


def t_tma():
    outer, inner, pad = 70, 100, 112          # rows padded to a 224-byte stride
    G = RNG.integers(1, 65535, (outer, pad), dtype=np.uint16)   # no zeros: the fill shows

    def sw_map(a):
        return TensorMap(a, 2, (inner, outer), 2 * pad, (64, 32), 128)

    k = tma_kernel(4096)
    for c0, c1 in ((0, 0), (-16, -3), (60, 50), (200, 0), (40, -40), (36, 38)):
        got = tma_run(k, G, 4096, c0, c1, sw_map)
        check(f"TMA 64x32 box at ({c0}, {c1}), 128-byte swizzle: image and zero fill match numpy",
              np.array_equal(got, tma_box_ref(G, (inner, outer), c0, c1, (64, 32), True)))
    k2 = tma_kernel(1280)
    for c0, c1 in ((8, 4), (-8, 60)):
        got = tma_run(k2, G, 1280, c0, c1, lambda a: TensorMap(a, 2, (inner, outer), 2 * pad, (40, 16)).encode())
        check(f"TMA 40x16 box at ({c0}, {c1}), no swizzle, map passed as 128 bytes: matches numpy",
              np.array_equal(got, tma_box_ref(G, (inner, outer), c0, c1, (40, 16), False)))
    got = tma_run(tma_kernel(4096, edit=("mov.u64 %tm, p_tm;\n    cvta.param.u64 %tm, %tm;",
                                         "cvta.param.u64 %tm, p_tm;")), G, 4096, 3 * 8, 5, sw_map)
    check("TMA: tensor-map operand from `cvta.param.u64 %rd, p_tm` directly",
          np.array_equal(got, tma_box_ref(G, (inner, outer), 24, 5, (64, 32), True)))
    # the tensor map itself
    tm = sw_map(4096)
    check("TensorMap: encode() is 128 bytes and decode() round-trips",
          len(tm.encode()) == 128 and TensorMap.decode(tm.encode()) == tm)
    for name, args, sub in (("address not 16-byte aligned", (4098, 2, (64, 8), 128, (64, 8), 128), "aligned"),
                            ("stride not a multiple of 16", (4096, 2, (64, 8), 136, (64, 8), 0), "stride"),
                            ("stride below the row", (4096, 2, (64, 8), 64, (32, 8), 0), "stride"),
                            ("box inner bytes not a multiple of 16", (4096, 2, (64, 8), 128, (12, 8), 0),
                             "multiple of 16"),
                            ("box extent 257", (4096, 2, (64, 300), 128, (8, 257), 0), "1..256"),
                            ("swizzle 128 with 256-byte box rows", (4096, 2, (256, 8), 512, (128, 8), 128), "swizzle")):
        expect_error(f"TensorMap: {name} raises", lambda a=args: TensorMap(*a), sub)
    expect_error("TensorMap.decode of zero bytes raises", lambda: TensorMap.decode(bytes(128)), "magic")
    # discipline
    expect_error("TMA: source rows outside the allocation raise",
                 lambda: tma_run(k, G, 4096, 0, 60, lambda a: TensorMap(a, 2, (inner, 90), 2 * pad, (64, 32), 128)),
                 "out-of-bounds")
    expect_error("TMA: swizzled destination not 1024-byte aligned raises",
                 lambda: tma_run(tma_kernel(4096, dst="buf+128"), G, 4096, 0, 0, sw_map), "1024-byte aligned")
    expect_error("TMA: reading before the phase completes raises (expect_tx above the box bytes, no wait)",
                 lambda: tma_run(tma_kernel(4096, wait="", tx=4112), G, 4096, 0, 0, sw_map), "has not completed")
    expect_error("TMA: waiting on a phase that never completes is a deadlock",
                 lambda: tma_run(tma_kernel(4096, tx=4112), G, 4096, 0, 0, sw_map), "deadlock")
    expect_error("TMA: consumers reading without waiting raise (phase complete, not observed)",
                 lambda: tma_run(tma_kernel(4096, wait=""), G, 4096, 0, 0, sw_map), "has not observed")
    expect_error("TMA: only the issuing thread waits, the others read: raises",
                 lambda: tma_run(tma_kernel(4096, wait="@%p bra $nw;\n" + WAIT_LOOP + "\n$nw:"), G, 4096, 0, 0,
                                 sw_map), "thread 1 has not observed")
    single = "mbarrier.try_wait.parity.shared::cta.b64 %ok, [%b], 0;"
    expect_error("TMA: one try_wait with its result ignored raises (strict_waits: a first try may fail)",
                 lambda: tma_run(tma_kernel(4096, wait=single), G, 4096, 0, 0, sw_map), "has not observed")
    got = tma_run(tma_kernel(4096, wait=single), G, 4096, 0, 0, sw_map, strict_waits=False)
    check("TMA: ... passes with strict_waits=False (the phase had completed)",
          np.array_equal(got, tma_box_ref(G, (inner, outer), 0, 0, (64, 32), True)))
    expect_error("TMA: the block exiting before the phase completes raises",
                 lambda: tma_run(tma_kernel(4096, wait="bra $done;", tx=4112), G, 4096, 0, 0, sw_map),
                 "block exits")
    expect_error("TMA: ld.shared of an initialised mbarrier raises",
                 lambda: tma_run(tma_kernel(4096, after="ld.shared.u32 %x0, [bar];"), G, 4096, 0, 0, sw_map),
                 "mbarrier")
    expect_error("TMA: ld.global through the tensor map's generic address raises",
                 lambda: tma_run(tma_kernel(4096, after="ld.global.u32 %x0, [%tm];"), G, 4096, 0, 0, sw_map),
                 "kernel-parameter address")
    expect_error("TMA: a tensor-map operand that is another parameter's address raises",
                 lambda: tma_run(tma_kernel(4096, edit=("mov.u64 %tm, p_tm;", "mov.u64 %tm, p_out;")),
                                 G, 4096, 0, 0, sw_map), "not the generic address of a tensor-map")
    expect_error("TMA: an integer for a tensor-map parameter raises",
                 lambda: tma_run(k, G, 4096, 0, 0, lambda a: a), "tensor map")
    expect_error("TMA: cp.async.bulk.tensor under .target sm_80 raises",
                 lambda: tma_run(tma_kernel(4096, hdr=HDR80), G, 4096, 0, 0, sw_map), "sm_90 or later")
    # write after read: the TMA issuer refills the buffer the other threads read
    refill = f"""@%p bra $x2;
    mbarrier.arrive.expect_tx.shared::cta.b64 %st, [%b], 4096;
    {TMA} [buf], [%tm, {{%c0, %c1}}], [%b];
$x2:"""
    expect_error("TMA: refilling bytes other threads read, with no release, raises",
                 lambda: tma_run(tma_kernel(4096, after=refill), G, 4096, 0, 0, sw_map), "was not released")
    try:
        tma_run(tma_kernel(4096, after="bar.sync 0;\n" + refill), G, 4096, 0, 0, sw_map)
        check("TMA: ... with bar.sync between the reads and the refill passes", True)
    except EmuError as e:
        check("TMA: ... with bar.sync between the reads and the refill passes", False, str(e))


MB_BODY = """
    .reg .pred %r<11>;
    .reg .b32 %b, %v;
    .reg .b64 %st, %out;
    .shared .align 8 .b64 bar;
    ld.param.u64 %out, [p_out];
    mov.u32 %b, bar;
    mbarrier.init.shared.b64 [%b], 2;
    mbarrier.test_wait.parity.shared::cta.b64 %r0, [%b], 1;     // fresh barrier: parity 1 has "completed"
    mbarrier.test_wait.parity.shared::cta.b64 %r1, [%b], 0;
    mbarrier.arrive.shared::cta.b64 %st, [%b];
    mbarrier.test_wait.parity.shared::cta.b64 %r2, [%b], 0;     // one of two arrivals
    mbarrier.arrive.release.cta.shared::cta.b64 %st, [%b];
    mbarrier.test_wait.parity.shared::cta.b64 %r3, [%b], 0;     // phase 0 complete
    mbarrier.test_wait.parity.shared::cta.b64 %r4, [%b], 1;
    mbarrier.arrive.expect_tx.shared::cta.b64 %st, [%b], 64;
    mbarrier.arrive.shared::cta.b64 _, [%b];                     // arrivals done, 64 tx bytes owed
    mbarrier.test_wait.parity.shared::cta.b64 %r5, [%b], 1;
    mbarrier.complete_tx.shared::cta.b64 [%b], 48;
    mbarrier.test_wait.parity.shared::cta.b64 %r6, [%b], 1;
    mbarrier.complete_tx.shared::cta.b64 [%b], 16;
    mbarrier.test_wait.parity.shared::cta.b64 %r7, [%b], 1;     // phase 1 complete
    mbarrier.complete_tx.shared::cta.b64 [%b], 32;              // before its expect_tx: tx-count -32
    mbarrier.arrive.shared::cta.b64 %st, [%b], 2;
    mbarrier.test_wait.parity.shared::cta.b64 %r8, [%b], 0;
    mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%b], 32;    // tx-count 0: phase 2 completes
    mbarrier.test_wait.parity.shared::cta.b64 %r9, [%b], 0;
    mbarrier.try_wait.parity.acquire.cta.shared::cta.b64 %r10, [%b], 0;
{STORES}
    ret;
"""


def t_mbarrier():
    stores = "\n".join(f"    selp.u32 %v, 1, 0, %r{i};\n    st.global.u32 [%out+{4 * i}], %v;" for i in range(11))
    k = build("mb", ["p_out"], MB_BODY.replace("{STORES}", stores), hdr=HDR90)
    for strict, want in ((False, [1, 0, 0, 1, 0, 0, 0, 1, 0, 1, 1]), (True, [0] * 11)):
        mem = Memory()
        po = mem.upload(np.full(11, 7, np.uint32))
        run_kernel(k, mem, (1, 1, 1), (1, 1, 1), [po], strict_waits=strict)
        got = list(mem.download(po, 11, np.uint32))
        check(f"mbarrier phases, parity (fresh barrier: parity 1 done), counts, tx-count incl. negative"
              f"{' (strict_waits: every first try is false)' if strict else ''}", got == want, f"{got}")

    def mb(lines, nt=1, name="mbe"):
        body = ".reg .pred %p, %ok;\n .reg .b32 %b, %v, %t;\n .reg .b64 %st;\n .shared .align 8 .b64 bar;\n" \
               "mov.u32 %b, bar;\n mov.u32 %t, %tid.x;\n" + lines + "\n ret;"
        kk = build(name, [], body, hdr=HDR90)
        return lambda: run_kernel(kk, Memory(), (1, 1, 1), (nt, 1, 1), [])

    init1 = "mbarrier.init.shared::cta.b64 [%b], 1;\n"
    expect_error("mbarrier: an arrival beyond the phase's count raises",
                 mb(init1 + "mbarrier.arrive.expect_tx.shared::cta.b64 %st, [%b], 16;\n"
                            "mbarrier.arrive.shared::cta.b64 %st, [%b];"), "more arrivals")
    expect_error("mbarrier: complete_tx beyond the expected bytes raises",
                 mb(init1 + "mbarrier.arrive.expect_tx.shared::cta.b64 %st, [%b], 16;\n"
                            "mbarrier.complete_tx.shared::cta.b64 [%b], 32;"), "exceeds")
    expect_error("mbarrier: parity operand 2 raises",
                 mb(init1 + "mbarrier.test_wait.parity.shared::cta.b64 %ok, [%b], 2;"), "not 0 or 1")
    expect_error("mbarrier: count 0 raises", mb("mbarrier.init.shared::cta.b64 [%b], 0;"), "1..2^20-1")
    expect_error("mbarrier: arrive on an uninitialised mbarrier raises",
                 mb("mbarrier.arrive.shared::cta.b64 %st, [%b];"), "no initialised mbarrier")
    expect_error("mbarrier: arrive after mbarrier.inval raises",
                 mb(init1 + "mbarrier.inval.shared::cta.b64 [%b];\n mbarrier.arrive.shared::cta.b64 %st, [%b];"),
                 "no initialised mbarrier")
    expect_error("mbarrier: st.shared onto an initialised mbarrier raises",
                 mb(init1 + "st.shared.u32 [%b+4], %t;"), "mbarrier")
    expect_error("mbarrier: other threads using it before a bar.sync after the init raise",
                 mb("setp.ne.u32 %p, %t, 0;\n @%p bra $s;\n" + init1 +
                    "$s:\n mbarrier.arrive.shared::cta.b64 %st, [%b];", nt=64), "barrier interval of its mbarrier.init")
    expect_error("mbarrier: a wait nobody can complete is a deadlock",
                 mb(init1 + "$w:\n mbarrier.try_wait.parity.shared::cta.b64 %ok, [%b], 0;\n @!%ok bra $w;"),
                 "deadlock")
    # scheduling: warp 1 waits on warp 2, whose code lies after the final bar.sync
    sched = """
    setp.ne.u32 %p, %t, 0;
    @%p bra $i;
    mbarrier.init.shared::cta.b64 [%b], 1;
$i:
    bar.sync 0;
    shr.u32 %v, %t, 5;
    setp.eq.u32 %p, %v, 2;
    @%p bra $late;
    setp.eq.u32 %p, %v, 1;
    @!%p bra $join;
$w:
    mbarrier.try_wait.parity.shared::cta.b64 %ok, [%b], 0;
    @!%ok bra $w;
$join:
    bar.sync 0;
    ret;
$late:
    setp.eq.u32 %p, %t, 64;
    {ARRIVE}
    bra.uni $join;"""
    try:
        mb(sched.replace("{ARRIVE}", "@%p mbarrier.arrive.shared::cta.b64 %st, [%b];"), nt=96)()
        check("mbarrier: warps wait at bar.sync while a warp waits on an mbarrier a later warp completes", True)
    except EmuError as e:
        check("mbarrier: warps wait at bar.sync while a warp waits on an mbarrier a later warp completes", False,
              str(e))
    expect_error("mbarrier: ... without the arrive: deadlock naming the bar.sync waiters",
                 mb(sched.replace("{ARRIVE}", ""), nt=96), "wait at bar.sync")


# -- wgmma

def wg_coords(t, j):
    """PTX ISA, wgmma .m64nNk16 accumulator fragment: register j of thread t of the warpgroup."""
    w, lane = t // 32, t % 32
    return 16 * w + lane // 4 + 8 * ((j >> 1) & 1), 8 * (j >> 2) + 2 * (lane % 4) + (j & 1)


def frag_to_matrix(vals, n):
    D = np.full((64, n), np.nan, np.float32)
    for t in range(128):
        for j in range(n // 2):
            D[wg_coords(t, j)] = vals[t, j]
    return D


def matrix_to_frag(D, n):
    return np.array([[D[wg_coords(t, j)] for j in range(n // 2)] for t in range(128)], np.float32)


def stepwise(A, B, C, kstep=16, f16=False):
    """A·Bᵀ + C with one f32 rounding per k16 instruction (exact f64 products);
    A, B bf16 (or f16) bits."""
    Af, Bf = ((x.view(np.float16) if f16 else bf16_bits_to_f32(x)).astype(np.float64) for x in (A, B))
    D = C.astype(np.float32)
    for k0 in range(0, A.shape[1], kstep):
        D = (Af[:, k0:k0 + kstep] @ Bf[:, k0:k0 + kstep].T + D.astype(np.float64)).astype(np.float32)
    return D


def desc_lines(reg, base, off, tmp="%sa", mod=""):
    """A 128B-swizzle K-major descriptor of shared address base + off (a symbol
    or a register; %hi holds SBO 1024 >> 4 and the swizzle mode)."""
    addr = f"add.u32 {tmp}, {base}, {off};" if base.startswith("%") else \
        f"mov.u32 {tmp}, {base};\n    add.u32 {tmp}, {tmp}, {off};"
    return (f"    {addr}\n    bfe.u32 %lo, {tmp}, 4, 14;\n    or.b32 %lo, %lo, 65536;\n{mod}\n"
            f"    mov.b64 {reg}, {{%lo, %hi}};\n")


WG_BODY = """
    .reg .pred %p, %q, %ok, %sc;
    .reg .b32 %t, %b, %lo, %hi, %sa, %s;
    .reg .b64 %ta, %tb, %cin, %out, %a, %st, %da, %db;
    .reg .f32 %d<{NH}>;
    .shared .align 1024 .b8 smA[8192];
    .shared .align 1024 .b8 smB[{BB}];
    .shared .align 8 .b64 bar;
    ld.param.u64 %cin, [p_c];
    ld.param.u64 %out, [p_out];
    ld.param.u32 %s, [p_scale];
    setp.ne.u32 %sc, %s, 0;
    mov.u64 %ta, p_ta;
    cvta.param.u64 %ta, %ta;
    mov.u64 %tb, p_tb;
    cvta.param.u64 %tb, %tb;
    mov.u32 %t, %tid.x;
    mul.wide.u32 %a, %t, {NH4};
    add.s64 %a, %cin, %a;
{LOADC}
    mov.u32 %b, bar;
    setp.ne.u32 %p, %t, 0;
    @%p bra $i;
    mbarrier.init.shared::cta.b64 [%b], 1;
$i:
    bar.sync 0;
    @%p bra $w;
    mbarrier.arrive.expect_tx.shared::cta.b64 %st, [%b], {TX};
    {TMA} [smA], [%ta, {0, 0}], [%b];
    {TMA} [smB], [%tb, {0, 0}], [%b];
$w:
    mbarrier.try_wait.parity.shared::cta.b64 %ok, [%b], 0;
    @!%ok bra $w;
    mov.u32 %hi, 1073741888;            // SBO 1024 >> 4, swizzle mode 1 (bit 62)
    setp.eq.u32 %q, %t, 5;
{PRE}
    wgmma.fence.sync.aligned;
{MMAS}
    wgmma.commit_group.sync.aligned;
{MID}
    wgmma.wait_group.sync.aligned 0;
$after:
    mul.wide.u32 %a, %t, {NH4};
    add.s64 %a, %out, %a;
{STORES}
    ret;
"""


def wg_kernel(n, pre="", mid="", mod_a="", edit=None, hdr=HDR90, ksteps=4, ab="bf16", trans_b=False):
    """trans_b: B MN-major (imm-trans-b 1): the B tile holds 64 k rows of n
    (<= 64) elements, 128 bytes each, 128B-swizzled; k step s at smB + 2048 s."""
    nh = n // 2
    acc = "{" + ", ".join(f"%d{j}" for j in range(nh)) + "}"
    mmas = ""
    for s in range(ksteps):
        mmas += desc_lines("%da", "smA", 32 * s, mod=mod_a) + desc_lines("%db", "smB", (2048 if trans_b else 32) * s)
        mmas += f"    wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ab}.{ab} {acc}, %da, %db, " \
                f"{'%sc' if s == 0 else '1'}, 1, 1, 0, {int(trans_b)};\n"
    body = WG_BODY
    for key, val in (("{NH}", str(nh)), ("{BB}", str(128 * n)), ("{NH4}", str(4 * nh)), ("{TX}", str(8192 + 128 * n)),
                     ("{TMA}", TMA), ("{PRE}", pre), ("{MID}", mid), ("{MMAS}", mmas),
                     ("{LOADC}", "\n".join(f"    ld.global.f32 %d{j}, [%a+{4 * j}];" for j in range(nh))),
                     ("{STORES}", "\n".join(f"    st.global.f32 [%a+{4 * j}], %d{j};" for j in range(nh)))):
        body = body.replace(key, val)
    if edit:
        body = body.replace(*edit)
    return build("wg", ["p_ta:tmap", "p_tb:tmap", "p_c", "p_out", "p_scale:u32"], body, hdr=hdr)


def wg_run(k, n, A, B, C, scale, nt=128):
    mem = Memory()
    pa, pb = mem.upload(A), mem.upload(B)
    pc = mem.upload(matrix_to_frag(C, n))
    po = mem.upload(np.full(128 * n // 2, np.nan, np.float32))
    ta = TensorMap(pa, 2, (64, 64), 128, (64, 64), 128)
    tb = TensorMap(pb, 2, (64, n), 128, (64, n), 128)
    run_kernel(k, mem, (1, 1, 1), (nt, 1, 1), [ta, tb, pc, po, scale])
    return mem.download(po, 128 * n // 2, np.float32).reshape(128, n // 2)


def t_wgmma():
    for n in (8, 256):
        k = wg_kernel(n)
        A, B = bf16_rand((64, 64)), bf16_rand((n, 64))
        C = RNG.standard_normal((64, n)).astype(np.float32)
        for scale in (0, 1):
            got = wg_run(k, n, A, B, C, scale)
            want = stepwise(A, B, C if scale else np.zeros_like(C))
            D = frag_to_matrix(got, n)
            ref64 = bf16_bits_to_f32(A).astype(np.float64) @ bf16_bits_to_f32(B).astype(np.float64).T + \
                (C if scale else 0)
            check(f"wgmma m64n{n}k16 x4 (K 64) from TMA 128B-swizzled tiles, scale-d {scale}: fragment layout "
                  f"and values (one f32 rounding per instruction)",
                  np.array_equal(D, want) and np.allclose(D, ref64, rtol=1e-5, atol=1e-4))
    n = 24
    A = RNG.standard_normal((64, 64)).astype(np.float16).view(np.uint16)
    B = RNG.standard_normal((n, 64)).astype(np.float16).view(np.uint16)
    C = RNG.standard_normal((64, n)).astype(np.float32)
    got = frag_to_matrix(wg_run(wg_kernel(n, ab="f16"), n, A, B, C, 1), n)
    check("wgmma m64n24k16 .f32.f16.f16, scale-d 1", np.array_equal(got, stepwise(A, B, C, f16=True)))
    # imm-trans-b 1: the same kind of 64 x 64 TMA tile read MN-major, as K x N
    # (row k, the 64 n contiguous): SBO 1024 between 8-k groups, k step 2048 bytes
    n = 64
    A, Bkn = bf16_rand((64, 64)), bf16_rand((64, n))
    C = RNG.standard_normal((64, n)).astype(np.float32)
    got = frag_to_matrix(wg_run(wg_kernel(n, trans_b=True), n, A, Bkn, C, 1), n)
    check("wgmma m64n64k16 x4 (K 64), imm-trans-b 1: B MN-major from a 128B-swizzled K x N tile",
          np.array_equal(got, stepwise(A, np.ascontiguousarray(Bkn.T), C)))
    # no-swizzle descriptors (mode 0): core matrices of 8 rows x 16 bytes, written
    # by two TMA boxes of 8 columns each (k 0-7 and k 8-15): LBO = the second box
    body = """
    .reg .pred %p, %ok;
    .reg .b32 %t, %b, %lo, %hi, %x;
    .reg .b64 %ta, %tb, %out, %a, %st, %da, %db;
    .reg .f32 %d<8>;
    .shared .align 1024 .b8 smA[2048];
    .shared .align 1024 .b8 smB[512];
    .shared .align 8 .b64 bar;
    ld.param.u64 %out, [p_out];
    mov.u64 %ta, p_ta;
    cvta.param.u64 %ta, %ta;
    mov.u64 %tb, p_tb;
    cvta.param.u64 %tb, %tb;
    mov.u32 %t, %tid.x;
    mov.u32 %b, bar;
    setp.ne.u32 %p, %t, 0;
    @%p bra $i;
    mbarrier.init.shared::cta.b64 [%b], 1;
$i:
    bar.sync 0;
    @%p bra $w;
    mbarrier.arrive.expect_tx.shared::cta.b64 %st, [%b], 2560;
    {TMA} [smA], [%ta, {0, 0}], [%b];
    {TMA} [smA+1024], [%ta, {8, 0}], [%b];
    {TMA} [smB], [%tb, {0, 0}], [%b];
    {TMA} [smB+256], [%tb, {8, 0}], [%b];
$w:
    mbarrier.try_wait.parity.shared::cta.b64 %ok, [%b], 0;
    @!%ok bra $w;
    mov.u32 %x, smA;
    shr.u32 %lo, %x, 4;
    or.b32 %lo, %lo, 4194304;           // LBO 1024 >> 4 = 64, << 16
    mov.b64 %da, {%lo, 8};              // SBO 128 >> 4, mode 0
    mov.u32 %x, smB;
    shr.u32 %lo, %x, 4;
    or.b32 %lo, %lo, 1048576;           // LBO 256 >> 4 = 16, << 16
    mov.b64 %db, {%lo, 8};
    wgmma.fence.sync.aligned;
    wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16
        {%d0, %d1, %d2, %d3, %d4, %d5, %d6, %d7}, %da, %db, 0, 1, 1, 0, 0;
    wgmma.commit_group.sync.aligned;
    wgmma.wait_group.sync.aligned 0;
    mul.wide.u32 %a, %t, 32;
    add.s64 %a, %out, %a;
    st.global.v4.f32 [%a], {%d0, %d1, %d2, %d3};
    st.global.v4.f32 [%a+16], {%d4, %d5, %d6, %d7};
    ret;
""".replace("{TMA}", TMA)
    k = build("wg0", ["p_ta:tmap", "p_tb:tmap", "p_out"], body, hdr=HDR90)
    A, B = bf16_rand((64, 16)), bf16_rand((16, 16))
    mem = Memory()
    pa, pb, po = mem.upload(A), mem.upload(B), mem.upload(np.full(128 * 8, np.nan, np.float32))
    run_kernel(k, mem, (1, 1, 1), (128, 1, 1), [TensorMap(pa, 2, (16, 64), 32, (8, 64)),
                                                TensorMap(pb, 2, (16, 16), 32, (8, 16)), po])
    got = frag_to_matrix(mem.download(po, 128 * 8, np.float32).reshape(128, 8), 16)
    check("wgmma m64n16k16, no-swizzle descriptors (LBO between k halves, SBO between 8-row groups), immediate "
          "scale-d 0", np.array_equal(got, stepwise(A, B, np.zeros((64, 16), np.float32))))
    # errors
    n = 8
    A, B, C = bf16_rand((64, 64)), bf16_rand((n, 64)), np.zeros((64, n), np.float32)
    expect_error("wgmma: a descriptor that differs across the warpgroup raises",
                 lambda: wg_run(wg_kernel(n, mod_a="@%q add.u32 %lo, %lo, 2;"), n, A, B, C, 0), "differs across")
    expect_error("wgmma: part of a warpgroup executing it raises",
                 lambda: wg_run(wg_kernel(n, pre="setp.ge.u32 %p, %t, 96;\n @%p bra $after;"), n, A, B, C, 0),
                 "only partly")
    expect_error("wgmma: a block of 96 threads (incomplete warpgroup) raises",
                 lambda: wg_run(wg_kernel(n), n, A, B, C, 0, nt=96), "only partly")
    expect_error("wgmma: mma_async without a wgmma.fence raises",
                 lambda: wg_run(wg_kernel(n, edit=("wgmma.fence.sync.aligned;", "")), n, A, B, C, 0), "wgmma.fence")
    expect_error("wgmma: reading an accumulator before wgmma.wait_group raises",
                 lambda: wg_run(wg_kernel(n, mid="mov.f32 %d0, 0f00000000;"), n, A, B, C, 0), "in-flight")
    expect_error("wgmma: exiting with a wgmma group not waited for raises",
                 lambda: wg_run(wg_kernel(n, mid="ret;"), n, A, B, C, 0), "not waited for")
    expect_error("wgmma: a descriptor start outside the first 128 bytes of the swizzle atom raises",
                 lambda: wg_run(wg_kernel(n, mod_a="add.u32 %lo, %lo, 8;"), n, A, B, C, 0), "first 128 bytes")
    expect_error("wgmma: swizzle mode 2 (64B) raises as unsupported",
                 lambda: wg_run(wg_kernel(n, edit=("mov.u32 %hi, 1073741888;", "mov.u32 %hi, 2147483712;")), n, A, B,
                                C, 0), "not supported")
    expect_error("wgmma: imm-trans-b 2 raises",
                 lambda: wg_run(wg_kernel(n, edit=(", 1, 1, 0, 0;", ", 1, 1, 0, 2;")), n, A, B, C, 0), "imm-trans-b")
    expect_error("wgmma: .target sm_90 (not sm_90a) raises",
                 lambda: wg_run(wg_kernel(n, hdr=HDR90.replace("sm_90a", "sm_90")), n, A, B, C, 0),
                 "needs .target sm_90a")
    expect_error("wgmma: .version 7.8 raises",
                 lambda: wg_run(wg_kernel(n, hdr=HDR.replace("sm_80", "sm_90a")), n, A, B, C, 0), ".version 8.0")
    expect_error("wgmma: st.shared onto an operand of an in-flight wgmma raises",
                 lambda: wg_run(wg_kernel(n, mid="mov.u32 %sa, smA;\n st.shared.u32 [%sa], %t;"), n, A, B, C, 0),
                 "not yet retired")


# -- wgmma with A from registers, and MN-major (transposed) operands

def op_kmajor(data, n_rows):
    """A K-major operand (rows x 64, bf16) TMA-loaded as one 128B-swizzled box
    of 64 columns: k step s at +32 bytes."""
    return dict(data=data, tmap=((64, n_rows), 128, (64, n_rows), 128), boxes=[(0, 0, 0)], size=128 * n_rows,
                lbo=16, sbo=1024, mode=1, trans=0, kstep=32, ref=data)


def op_mn128(kn, n_cols):
    """An MN-major operand given K x MN (row k, MN contiguous), TMA-loaded with
    128B swizzle in boxes of 64 MN columns x K rows at LBO = 64 * 2 * K bytes
    apart: SBO 1024 (8 k rows of 128 bytes), k step s at +2048."""
    k = kn.shape[0]
    lbo = 128 * k
    return dict(data=kn, tmap=((n_cols, k), 2 * n_cols, (64, k), 128),
                boxes=[(lbo * j, 64 * j, 0) for j in range(n_cols // 64)], size=lbo * (n_cols // 64),
                lbo=lbo, sbo=1024, mode=1, trans=1, kstep=2048, ref=np.ascontiguousarray(kn.T))


def op_mn_none(kn, n_cols):
    """An MN-major operand given K x MN, no swizzle: boxes of 8 MN columns x K
    rows (row k at 16 k bytes: LBO 128 between k halves), one per 8-column group
    at SBO = 16 K bytes apart; k step s at +256."""
    k = kn.shape[0]
    sbo = 16 * k
    return dict(data=kn, tmap=((n_cols, k), 2 * n_cols, (8, k), 0),
                boxes=[(sbo * j, 8 * j, 0) for j in range(n_cols // 8)], size=sbo * (n_cols // 8),
                lbo=128, sbo=sbo, mode=0, trans=1, kstep=256, ref=np.ascontiguousarray(kn.T))


def op_regs(data):
    """A (64 x 16 k steps) from registers, loaded from global memory (row-major)."""
    return dict(regs=True, data=data, ref=data)


def op_kmajor_f32(data, n_rows):
    """A K-major f32 operand (rows x 32) TMA-loaded as one 128B-swizzled box of
    32 columns (4-byte elements): tf32 k step s (8 wide) at +32 bytes."""
    return dict(data=data, tmap=((32, n_rows), 128, (32, n_rows), 128), boxes=[(0, 0, 0)], size=128 * n_rows,
                lbo=16, sbo=1024, mode=1, trans=0, kstep=32, ref=data, elem=4)


def tf32_trunc(x):
    """f32 values as a tf32 mma reads them: the low 13 bits ignored."""
    return (np.ascontiguousarray(x, np.float32).view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)


def stepwise_tf32(A, B, C):
    """A·Bᵀ + C over k8 tf32 instructions: truncated inputs, exact f64 products,
    one f32 rounding per instruction."""
    Af, Bf = (tf32_trunc(x).astype(np.float64) for x in (A, B))
    D = C.astype(np.float32)
    for k0 in range(0, A.shape[1], 8):
        D = (Af[:, k0:k0 + 8] @ Bf[:, k0:k0 + 8].T + D.astype(np.float64)).astype(np.float32)
    return D


XW_BODY = """
    .reg .pred %p, %ok, %sc;
    .reg .b32 %t, %b, %lo, %x, %w, %g, %c, %s;
    .reg .b32 %ra<16>;
    .reg .b64 %tb, %ta, %pa, %cin, %out, %ad, %st, %da, %db;
    .reg .f32 %d<{NH}>;
{SMA}
    .shared .align 1024 .b8 smB[{SB}];
    .shared .align 8 .b64 bar;
    ld.param.u64 %cin, [p_c];
    ld.param.u64 %out, [p_out];
    ld.param.u32 %s, [p_scale];
    setp.ne.u32 %sc, %s, 0;
    mov.u64 %tb, p_tb;
    cvta.param.u64 %tb, %tb;
{AP}
    mov.u32 %t, %tid.x;
    mul.wide.u32 %ad, %t, {NH4};
    add.s64 %ad, %cin, %ad;
{LOADC}
{LOADA}
    mov.u32 %b, bar;
    setp.ne.u32 %p, %t, 0;
    @%p bra $i;
    mbarrier.init.shared::cta.b64 [%b], 1;
$i:
    bar.sync 0;
    @%p bra $w;
    mbarrier.arrive.expect_tx.shared::cta.b64 %st, [%b], {TX};
{TMAS}
$w:
    mbarrier.try_wait.parity.shared::cta.b64 %ok, [%b], 0;
    @!%ok bra $w;
    wgmma.fence.sync.aligned;
{POST}
{MMAS}
    wgmma.commit_group.sync.aligned;
{MID}
    wgmma.wait_group.sync.aligned 0;
    mul.wide.u32 %ad, %t, {NH4};
    add.s64 %ad, %out, %ad;
{STORES}
    ret;
"""


def xw_desc(reg, sym, off, op):
    return (f"    mov.u32 %x, {sym};\n    add.u32 %x, %x, {off};\n    shr.u32 %lo, %x, 4;\n"
            f"    or.b32 %lo, %lo, {(op['lbo'] >> 4) << 16};\n"
            f"    mov.b64 {reg}, {{%lo, {(op['sbo'] >> 4) | (op['mode'] << 30)}}};\n")


def xw_kernel(n, a, b, ksteps=1, same_a=False, post="", mid="", edit=None, b_off=0, ab="bf16"):
    """One warpgroup: D (64 x n) = A·Bᵀ (+ C) over `ksteps` k16 wgmmas (k8 with
    ab "tf32": f32 operands, K-major), A from registers (op_regs: register set s
    for k step s, or set 0 for every step with same_a) or a descriptor, B
    through a descriptor (op_* specs above; b_off moves B's descriptor start).
    A register's bytes are the same for both: register r of lane l, warp w at
    byte (16w + l/4 + 8(r & 1)) row + 4(l % 4) + 16(r >> 1) + 32 s."""
    nh = n // 2
    acc = "{" + ", ".join(f"%d{j}" for j in range(nh)) + "}"
    tmas, loada, ap, sma = [], "", "", ""
    tx = 0
    for sym, tm, op in (("smA", "%ta", a), ("smB", "%tb", b)):
        if op.get("regs"):
            continue
        for off, c0, c1 in op["boxes"]:
            tmas.append(f"    {TMA} [{sym}+{off}], [{tm}, {{{c0}, {c1}}}], [%b];")
            tx += op.get("elem", 2) * op["tmap"][2][0] * op["tmap"][2][1]
    if a.get("regs"):
        rowb = a["data"].itemsize * a["data"].shape[1]
        # register r of lane l, warp w: row 16w + l/4 + 8(r & 1), columns 8(r >> 1) + 2(l % 4) + {0, 1}
        loada = (f"    shr.u32 %w, %t, 5;\n    and.b32 %g, %t, 31;\n    shr.u32 %g, %g, 2;\n    and.b32 %c, %t, 3;\n"
                 f"    shl.b32 %w, %w, 4;\n    add.u32 %x, %w, %g;\n    mul.lo.u32 %x, %x, {rowb};\n"
                 f"    shl.b32 %c, %c, 2;\n    add.u32 %x, %x, %c;\n    cvt.u64.u32 %pa, %x;\n"
                 f"    ld.param.u64 %ad, [p_a];\n    add.s64 %pa, %pa, %ad;\n")
        for s in range(1 if same_a else ksteps):
            for r in range(4):
                loada += f"    ld.global.b32 %ra{4 * s + r}, [%pa+{32 * s + 8 * rowb * (r & 1) + 16 * (r >> 1)}];\n"
    else:
        ap = "    mov.u64 %ta, p_ta;\n    cvta.param.u64 %ta, %ta;"
        sma = f"    .shared .align 1024 .b8 smA[{a['size']}];"
    mmas = ""
    for s in range(ksteps):
        if a.get("regs"):
            s_a = 0 if same_a else s
            aop = "{" + ", ".join(f"%ra{4 * s_a + r}" for r in range(4)) + "}"
            trans = f"{b['trans']}"
        else:
            mmas += xw_desc("%da", "smA", a["kstep"] * s, a)
            aop = "%da"
            trans = f"{a['trans']}, {b['trans']}"
        mmas += xw_desc("%db", "smB", b["kstep"] * s + b_off, b)
        if ab == "tf32":    # K-major only: no imm-trans operands
            mmas += f"    wgmma.mma_async.sync.aligned.m64n{n}k8.f32.tf32.tf32 {acc}, {aop}, %db, " \
                    f"{'%sc' if s == 0 else '1'}, 1, 1;\n"
            continue
        mmas += f"    wgmma.mma_async.sync.aligned.m64n{n}k16.f32.bf16.bf16 {acc}, {aop}, %db, " \
                f"{'%sc' if s == 0 else '1'}, 1, 1, {trans};\n"
    body = XW_BODY
    for key, val in (("{NH}", str(nh)), ("{SB}", str(b["size"])), ("{NH4}", str(4 * nh)), ("{TX}", str(tx)),
                     ("{SMA}", sma), ("{AP}", ap), ("{LOADA}", loada), ("{TMAS}", "\n".join(tmas)),
                     ("{POST}", post), ("{MID}", mid), ("{MMAS}", mmas),
                     ("{LOADC}", "\n".join(f"    ld.global.f32 %d{j}, [%ad+{4 * j}];" for j in range(nh))),
                     ("{STORES}", "\n".join(f"    st.global.f32 [%ad+{4 * j}], %d{j};" for j in range(nh)))):
        body = body.replace(key, val)
    if edit:
        body = body.replace(*edit)
    params = (["p_a"] if a.get("regs") else ["p_ta:tmap"]) + ["p_tb:tmap", "p_c", "p_out", "p_scale:u32"]
    return build("xw", params, body, hdr=HDR90)


def xw_run(k, n, a, b, C, scale):
    mem = Memory()
    args = []
    for op in (a, b):
        p = mem.upload(op["data"])
        if op.get("regs"):
            args.append(p)
        else:
            dims, stride, box, swz = op["tmap"]
            args.append(TensorMap(p, op.get("elem", 2), dims, stride, box, swz))
    pc = mem.upload(matrix_to_frag(C, n))
    po = mem.upload(np.full(128 * n // 2, np.nan, np.float32))
    run_kernel(k, mem, (1, 1, 1), (128, 1, 1), args + [pc, po, scale])
    return frag_to_matrix(mem.download(po, 128 * n // 2, np.float32).reshape(128, n // 2), n)


def xw_check(name, n, a, b, ksteps=1, same_a=False, scale=1):
    C = RNG.standard_normal((64, n)).astype(np.float32)
    got = xw_run(xw_kernel(n, a, b, ksteps, same_a), n, a, b, C, scale)
    K = 16 * ksteps
    Ar = np.hstack([a["ref"][:, :16]] * ksteps) if same_a else a["ref"][:, :K]
    want = stepwise(Ar, b["ref"][:, :K], C if scale else np.zeros_like(C))
    ref64 = bf16_bits_to_f32(Ar).astype(np.float64) @ bf16_bits_to_f32(b["ref"][:, :K]).astype(np.float64).T + \
        (C if scale else 0)
    check(name, np.array_equal(got, want) and np.allclose(got, ref64, rtol=1e-5, atol=1e-4),
          f"max |diff| {np.nanmax(np.abs(got - want))}")


def xw_check_tf32(name, n, a, b, ksteps, scale=1):
    C = RNG.standard_normal((64, n)).astype(np.float32)
    got = xw_run(xw_kernel(n, a, b, ksteps, ab="tf32"), n, a, b, C, scale)
    K = 8 * ksteps
    C0 = C if scale else np.zeros_like(C)
    want = stepwise_tf32(a["ref"][:, :K], b["ref"][:, :K], C0)
    ref64 = a["ref"][:, :K].astype(np.float64) @ b["ref"][:, :K].astype(np.float64).T + C0
    # Truncation to tf32 (< 2^-10 relative per operand) is visible against the f64 product.
    err = np.linalg.norm(got - ref64) / np.linalg.norm(ref64)
    check(name, np.array_equal(got, want) and 1e-5 < err < 5e-3,
          f"max |diff| {np.nanmax(np.abs(got - want))}, relative L2 against f64 {err:.2e}")


def t_wgmma_tf32():
    f32 = lambda *shape: RNG.standard_normal(shape).astype(np.float32)  # noqa: E731
    # a. both operands through 128B-swizzled descriptors (32 f32 a 128-byte row; k step 8 at +32 bytes)
    for n in (8, 192):
        for scale in (0, 1):
            xw_check_tf32(f"wgmma m64n{n}k8 .tf32 x4 (K 32), A and B K-major 128B from f32 TMA boxes, "
                          f"scale-d {scale}", n, op_kmajor_f32(f32(64, 32), 64), op_kmajor_f32(f32(n, 32), n), 4,
                          scale)
    # b. A from registers: register r of lane l, warp w holds (16w + l/4 + 8(r & 1), l % 4 + 4(r >> 1))
    for n in (8, 64):
        xw_check_tf32(f"wgmma m64n{n}k8 .tf32 x4, A from registers (CUTLASS ALayout_64x8), B K-major 128B", n,
                      op_regs(f32(64, 32)), op_kmajor_f32(f32(n, 32), n), 4)
    n = 8
    a, b = op_regs(f32(64, 8)), op_kmajor_f32(f32(n, 32), n)
    C = np.zeros((64, n), np.float32)
    run = lambda **kw: xw_run(xw_kernel(n, a, b, ab="tf32", **kw), n, a, b, C, 0)  # noqa: E731
    expect_error("wgmma .tf32: an imm-trans-b operand raises (K-major only)",
                 lambda: run(edit=("%sc, 1, 1;", "%sc, 1, 1, 0;")), "no imm-trans")
    expect_error("wgmma .tf32: m64n8k16 raises", lambda: run(edit=("m64n8k8", "m64n8k16")), "supported")
    expect_error("wgmma .tf32: writing an A register before wgmma.wait_group raises",
                 lambda: run(mid="mov.b32 %ra1, 0;"), "an A operand of an in-flight")


def t_wgmma_regs_mn():
    # a. A from registers ({a0..a3}: mma.m16n8k16's A fragment per warp), B K-major (128B swizzle)
    for n in (8, 72, 128):
        for scale in (0, 1):
            xw_check(f"wgmma m64n{n}k16, A from registers (global -> 4 .b32 per thread), B K-major 128B, "
                     f"scale-d {scale}", n, op_regs(bf16_rand((64, 16))), op_kmajor(bf16_rand((n, 64)), n),
                     scale=scale)
    n = 72
    xw_check("wgmma m64n72k16 x2 (K 32), A from two register sets, both in flight, scale-d 1 on the second", n,
             op_regs(bf16_rand((64, 32))), op_kmajor(bf16_rand((n, 64)), n), ksteps=2, scale=0)
    xw_check("wgmma m64n72k16 x2, the same A registers in two wgmmas in flight", n,
             op_regs(bf16_rand((64, 16))), op_kmajor(bf16_rand((n, 64)), n), ksteps=2, same_a=True)
    n = 24
    xw_check("wgmma m64n24k16 x2 (K 32), A from registers, imm-trans-b 1 (B MN-major, no swizzle)", n,
             op_regs(bf16_rand((64, 32))), op_mn_none(bf16_rand((32, n)), n), ksteps=2)
    # b. imm-trans-b 1, 128B swizzle: B K x N row-major, boxes of 64 columns x 16 k rows (SBO 1024, LBO 2048)
    for n in (64, 128):
        xw_check(f"wgmma m64n{n}k16, imm-trans-b 1, 128B swizzle: B (16 x {n}, row k) in {n // 64} TMA box(es) of "
                 f"64 columns, SBO 1024, LBO 2048", n, op_kmajor(bf16_rand((64, 64)), 64),
                 op_mn128(bf16_rand((16, n)), n))
    n = 128
    xw_check("wgmma m64n128k16 x2 (K 32), imm-trans-b 1, 128B swizzle (k step 2048, LBO 4096)", n,
             op_kmajor(bf16_rand((64, 64)), 64), op_mn128(bf16_rand((32, n)), n), ksteps=2)
    # c. imm-trans-b 1, no swizzle: boxes of 8 columns x 16 k rows (LBO 128 between k halves, SBO 256)
    for n in (8, 24):
        xw_check(f"wgmma m64n{n}k16, imm-trans-b 1, no swizzle: {n // 8} box(es) of 8 columns x 16 rows, LBO 128, "
                 f"SBO 256", n, op_kmajor(bf16_rand((64, 64)), 64), op_mn_none(bf16_rand((16, n)), n))
    # imm-trans-a 1 (A through a descriptor, MN-major: given as K x M)
    n = 16
    xw_check("wgmma m64n16k16 x2, imm-trans-a 1, 128B swizzle: A (K x 64, row k) in one box, SBO 1024", n,
             op_mn128(bf16_rand((32, 64)), 64), op_kmajor(bf16_rand((n, 64)), n), ksteps=2)
    xw_check("wgmma m64n16k16, imm-trans-a 1 and imm-trans-b 1, no swizzle", n,
             op_mn_none(bf16_rand((16, 64)), 64), op_mn_none(bf16_rand((16, n)), n))
    # d. errors
    n = 8
    a, b = op_regs(bf16_rand((64, 16))), op_kmajor(bf16_rand((n, 64)), n)
    C = np.zeros((64, n), np.float32)
    run = lambda **kw: xw_run(xw_kernel(n, a, b, **kw), n, a, b, C, 0)  # noqa: E731
    expect_error("wgmma A from registers: writing an A register before wgmma.wait_group raises",
                 lambda: run(mid="mov.b32 %ra1, 0;"), "an A operand of an in-flight")
    expect_error("wgmma A from registers: reading an A register before wgmma.wait_group raises",
                 lambda: run(mid="add.u32 %x, %ra3, 1;"), "an A operand of an in-flight")
    expect_error("wgmma A from registers: writing an accumulator before wgmma.wait_group still says accumulator",
                 lambda: run(mid="mov.f32 %d0, 0f00000000;"), "an accumulator of an in-flight")
    expect_error("wgmma A from registers: writing an A register after wgmma.fence, before the mma_async, raises",
                 lambda: run(post="mov.b32 %ra2, %t;"), "wgmma.fence")
    expect_error("wgmma A from registers: `a` a list of three registers raises",
                 lambda: run(edit=("{%ra0, %ra1, %ra2, %ra3}", "{%ra0, %ra1, %ra2}")), "four .b32 registers")
    expect_error("wgmma A from registers: a 7-operand form with a descriptor as `a` raises",
                 lambda: run(edit=("{%ra0, %ra1, %ra2, %ra3}", "%da")), "register list")
    expect_error("wgmma A from registers: an 8-operand form (with imm-trans-a) raises",
                 lambda: run(edit=("1, 1, 0;", "1, 1, 0, 0;")), "no imm-trans-a")
    expect_error("wgmma A from registers: an A register that is also an accumulator raises",
                 lambda: run(edit=("{%ra0, %ra1, %ra2, %ra3}", "{%ra0, %ra1, %ra2, %d3}")), "both an A register")
    a2 = op_regs(bf16_rand((64, 32)))
    expect_error("wgmma A from registers: the accumulators of an in-flight wgmma as A of the next raises",
                 lambda: xw_run(xw_kernel(n, a2, b, ksteps=2, edit=("{%d0, %d1, %d2, %d3}, {%ra4, %ra5, %ra6, %ra7}",
                                                                    "{%ra0, %ra1, %ra2, %ra3}, {%d0, %d1, %d2, %d3}")),
                                n, a2, b, C, 0), "an accumulator of an in-flight")
    ak, bm = op_kmajor(bf16_rand((64, 64)), 64), op_mn128(bf16_rand((16, 64)), 64)
    expect_error("wgmma: imm-trans-b 1 with a 128B-swizzle start outside the atom's first 128 bytes raises",
                 lambda: xw_run(xw_kernel(64, ak, bm, b_off=128), 64, ak, bm, np.zeros((64, 64), np.float32), 0),
                 "first 128 bytes")


# -- a warp-specialised pipeline: producer warp (TMA) + consumer warpgroup (wgmma)

def pipe_kernel(n, variant="", stages=2):
    """Block of 160 threads: warpgroup 0 consumes, thread 128 produces; `stages`
    stages of (A 64x64, B nx64) bf16; full[s] (count 1 + bytes), empty[s] (count 128)."""
    nh = n // 2
    stage_b = 8192 + 128 * n
    acc = "{" + ", ".join(f"%d{j}" for j in range(nh)) + "}"
    mmas = ""
    for s in range(4):
        mmas += desc_lines("%da", "%sa", 32 * s, tmp="%x") + desc_lines("%db", "%sb", 32 * s, tmp="%x")
        mmas += f"    wgmma.mma_async.sync.aligned.m64n{n}k16.f32.bf16.bf16 {acc}, %da, %db, " \
                f"{'%first' if s == 0 else '1'}, 1, 1, 0, 0;\n"
    release = "    mbarrier.arrive.shared::cta.b64 %st, [%empty];"
    retire = "    wgmma.wait_group.sync.aligned 0;"
    cons_tail = f"{retire}\n{release}" if variant != "arrive_early" else f"{release}\n{retire}"
    cwait = "@!%ok bra $cw;" if variant != "no_cwait" else ""
    pwait = "@!%ok bra $pw;" if variant != "no_pwait" else ""
    body = f"""
    .reg .pred %p, %ok, %first, %wrap;
    .reg .b32 %t, %stage, %phase, %kt, %nk, %full, %empty, %sa, %sb, %x, %lo, %hi, %par, %kc, %zero;
    .reg .b64 %ta, %tb, %out, %a, %st, %da, %db;
    .reg .f32 %d<{nh}>;
    .shared .align 1024 .b8 smem[{stages * stage_b}];
    .shared .align 8 .b64 bars[{2 * stages}];
    ld.param.u64 %out, [p_out];
    ld.param.u32 %nk, [p_nk];
    mov.u64 %ta, p_ta;
    cvta.param.u64 %ta, %ta;
    mov.b64 %tb, p_tb;
    cvta.param.u64 %tb, %tb;
    mov.u32 %t, %tid.x;
    mov.u32 %zero, 0;
    mov.u32 %hi, 1073741888;
    setp.ne.u32 %p, %t, 0;
    @%p bra $i;
{chr(10).join(f"    mbarrier.init.shared::cta.b64 [bars+{8 * s}], {1 if s < stages else 128};"
               for s in range(2 * stages))}
    fence.mbarrier_init.release.cluster;
    fence.proxy.async.shared::cta;
$i:
    bar.sync 0;
    mov.u32 %stage, 0;
    mov.u32 %phase, 0;
    mov.u32 %kt, 0;
    setp.ge.u32 %p, %t, 128;
    @%p bra $producer;
$cloop:
    setp.ge.u32 %p, %kt, %nk;
    @%p bra $cdone;
    mov.u32 %full, bars;
    mad.lo.u32 %full, %stage, 8, %full;
$cw:
    mbarrier.try_wait.parity.shared::cta.b64 %ok, [%full], %phase;
    {cwait}
    mov.u32 %sa, smem;
    mad.lo.u32 %sa, %stage, {stage_b}, %sa;
    add.u32 %sb, %sa, 8192;
    setp.ne.u32 %first, %kt, 0;
    wgmma.fence.sync.aligned;
{mmas}
    wgmma.commit_group.sync.aligned;
    mov.u32 %empty, bars;
    add.u32 %empty, %empty, {8 * stages};
    mad.lo.u32 %empty, %stage, 8, %empty;
{cons_tail}
    add.u32 %stage, %stage, 1;
    setp.eq.u32 %wrap, %stage, {stages};
    @%wrap mov.u32 %stage, 0;
    @%wrap xor.b32 %phase, %phase, 1;
    add.u32 %kt, %kt, 1;
    bra.uni $cloop;
$cdone:
    mul.wide.u32 %a, %t, {2 * n};
    add.s64 %a, %out, %a;
{chr(10).join(f"    st.global.f32 [%a+{4 * j}], %d{j};" for j in range(nh))}
    ret;
$producer:
    setp.ne.u32 %p, %t, 128;
    @%p bra $pdone;
$ploop:
    setp.ge.u32 %p, %kt, %nk;
    @%p bra $pdone;
    mov.u32 %empty, bars;
    add.u32 %empty, %empty, {8 * stages};
    mad.lo.u32 %empty, %stage, 8, %empty;
    xor.b32 %par, %phase, 1;
$pw:
    mbarrier.try_wait.parity.shared::cta.b64 %ok, [%empty], %par;
    {pwait}
    mov.u32 %full, bars;
    mad.lo.u32 %full, %stage, 8, %full;
    mbarrier.arrive.expect_tx.shared::cta.b64 %st, [%full], {stage_b};
    mov.u32 %sa, smem;
    mad.lo.u32 %sa, %stage, {stage_b}, %sa;
    add.u32 %sb, %sa, 8192;
    shl.b32 %kc, %kt, 6;
    {TMA} [%sa], [%ta, {{%kc, %zero}}], [%full];
    {TMA} [%sb], [%tb, {{%kc, 0}}], [%full];
    add.u32 %stage, %stage, 1;
    setp.eq.u32 %wrap, %stage, {stages};
    @%wrap mov.u32 %stage, 0;
    @%wrap xor.b32 %phase, %phase, 1;
    add.u32 %kt, %kt, 1;
    bra.uni $ploop;
$pdone:
    ret;
"""
    return build("pipe", ["p_ta:tmap", "p_tb:tmap", "p_out", "p_nk:u32"], body, hdr=HDR90)


def pipe_run(k, n, K, nk):
    A, B = bf16_rand((64, K)), bf16_rand((n, K))
    mem = Memory()
    pa, pb, po = mem.upload(A), mem.upload(B), mem.upload(np.full(128 * n // 2, np.nan, np.float32))
    run_kernel(k, mem, (1, 1, 1), (160, 1, 1),
               [TensorMap(pa, 2, (K, 64), 2 * K, (64, 64), 128), TensorMap(pb, 2, (K, n), 2 * K, (64, n), 128), po, nk])
    got = frag_to_matrix(mem.download(po, 128 * n // 2, np.float32).reshape(128, n // 2), n)
    Kp = 64 * nk
    Ap, Bp = np.zeros((64, Kp), np.uint16), np.zeros((n, Kp), np.uint16)
    Ap[:, :K], Bp[:, :K] = A, B
    return got, stepwise(Ap, Bp, np.zeros((64, n), np.float32))


def t_pipeline():
    n = 64
    got, want = pipe_run(pipe_kernel(n), n, 200, 4)
    check("pipeline: producer warp (TMA, 2 stages, K 200 zero-filled to 256) + consumer warpgroup (wgmma m64n64k16)"
          " matches numpy", np.array_equal(got, want))
    got, want = pipe_run(pipe_kernel(n, stages=1), n, 192, 3)
    check("pipeline: ... one stage, K 192", np.array_equal(got, want))
    expect_error("pipeline: consumers arriving on the empty barrier before wgmma.wait_group: the refill raises "
                 "(one stage: the read retired but was never released)",
                 lambda: pipe_run(pipe_kernel(n, "arrive_early", stages=1), n, 256, 4), "was not released")
    expect_error("pipeline: ... two stages: the later arrival released it on the other stage's barrier, which the "
                 "producer has not observed", lambda: pipe_run(pipe_kernel(n, "arrive_early"), n, 256, 4),
                 "which thread 128 has not observed")
    expect_error("pipeline: consumers ignoring the full barrier's try_wait result raise",
                 lambda: pipe_run(pipe_kernel(n, "no_cwait"), n, 256, 4), "has not observed")
    expect_error("pipeline: the producer ignoring the empty barrier's try_wait result raises",
                 lambda: pipe_run(pipe_kernel(n, "no_pwait"), n, 256, 4), "TMA by thread 128 overwrites")


# ---------------------------------------------------------------------------- bank conflicts

def bank_ref(addrs, nbytes, lanes_given=32):
    """Wavefronts and ideal of one warp's access, counted loop by loop: phases of
    128 bytes (the whole warp up to 4 bytes a thread, half-warps for 8, quarter-
    warps for 16), per phase the most distinct 4-byte words in one bank."""
    per = 32 if nbytes <= 4 else 128 // nbytes
    wav = ideal = 0
    for start in range(0, lanes_given, per):
        words = set()
        for a in addrs[start:start + per]:
            for w in range(max(nbytes // 4, 1)):
                words.add(int(a) // 4 + w)
        banks = {}
        for w in words:
            banks.setdefault(w % 32, set()).add(w)
        wav += max(len(v) for v in banks.values())
        ideal += -(-len(words) // 32)
    return wav, ideal


def bank_run(kind, addrs, warps=1):
    """Run one shared access of `kind` (ld.b32 / ld.v2 / ld.v4 / st.b16 /
    ldmatrix / cp.async) with lane i of every warp at byte addrs[i] of a 16 KiB
    buffer; returns the BankStats totals (requests, wavefronts, ideal)."""
    access = {
        "ld.b32": "ld.shared.b32 %x0, [%ad];",
        "st.b16": "st.shared.b16 [%ad], %h;",
        "ld.v2": "ld.shared.v2.b32 {%x0, %x1}, [%ad];",
        "ld.v4": "ld.shared.v4.b32 {%x0, %x1, %x2, %x3}, [%ad];",
        "ldmatrix": "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%x0, %x1, %x2, %x3}, [%ad];",
        "cp.async": "cp.async.cg.shared.global [%ad], [%src], 16; cp.async.wait_all;",
    }[kind]
    body = f"""
    .reg .b16 %h;
    .reg .b32 %i, %b, %x<4>, %ad;
    .reg .b64 %tab, %src, %a;
    .shared .align 16 .b8 buf[16384];
    ld.param.u64 %tab, [p_tab];
    ld.param.u64 %src, [p_src];
    mov.u32 %i, %laneid;
    mov.b16 %h, 7;
    mul.wide.u32 %a, %i, 4;
    add.s64 %a, %tab, %a;
    ld.global.u32 %ad, [%a];
    mov.u32 %b, buf;
    add.u32 %ad, %ad, %b;
    mov.u32 %i, %tid.x;
    mul.wide.u32 %a, %i, 16;
    add.s64 %src, %src, %a;
    {access}
    ret;
"""
    k = build("bank_" + kind.replace(".", "_"), ["p_tab", "p_src"], body)
    mem = Memory()
    pt = mem.upload(np.asarray(addrs, np.uint32))
    ps = mem.upload(np.zeros(warps * 32 * 4, np.uint32))
    stats = BankStats()
    # each thread its own word of a store (one instruction storing different values to one address is an error)
    run_kernel(k, mem, (1, 1, 1), (32 * warps, 1, 1), [pt, ps], banks=stats, check_races=False)
    return stats.totals()


def t_banks():
    lane = np.arange(32)
    cases = [
        ("ld.b32", "32-bit, consecutive words", lane * 4, 1, 1),
        ("ld.b32", "32-bit, one word for all lanes (broadcast)", np.zeros(32, int), 1, 1),
        ("ld.b32", "32-bit, stride 2 words: 2-way", lane * 8, 2, 1),
        ("ld.b32", "32-bit, stride 32 words: 32-way", lane * 128, 32, 1),
        ("st.b16", "16-bit stores, two lanes per word", lane * 2, 1, 1),
        ("ld.v2", "64-bit, consecutive", lane * 8, 2, 2),
        ("ld.v2", "64-bit, stride 256 bytes: 16-way in each half-warp", lane * 256, 32, 2),
        ("ld.v4", "128-bit, consecutive", lane * 16, 4, 4),
        ("ld.v4", "128-bit, stride 32 bytes: 2-way in each quarter-warp", lane * 32, 8, 4),
        ("ldmatrix", "ldmatrix.x4, rows 64 bytes apart: 4-way", lane * 64, 16, 4),
        ("ldmatrix", "ldmatrix.x4, rows 64 bytes apart, 16-byte chunks XOR-swizzled by row / 2",
         (lane * 64) ^ (((lane // 2) % 4) * 16), 4, 4),
        ("cp.async", "cp.async 16 bytes, consecutive", lane * 16, 4, 4),
        ("cp.async", "cp.async 16 bytes, rows 128 bytes apart: 8-way", lane * 128, 32, 4),
    ]
    for kind, name, addrs, want_wav, want_ideal in cases:
        nbytes = {"ld.b32": 4, "st.b16": 2, "ld.v2": 8}.get(kind, 16)
        ref = bank_ref(addrs, nbytes)
        got = bank_run(kind, addrs)
        check(f"banks: {name}: {want_wav} wavefronts (best {want_ideal})",
              got == (1, want_wav, want_ideal) and ref == (want_wav, want_ideal), f"got {got}, loop count {ref}")
    # random 16-byte-aligned addresses, two warps: against the loop-by-loop count
    for kind, nbytes in (("ld.b32", 4), ("ld.v2", 8), ("ld.v4", 16), ("ldmatrix", 16)):
        addrs = RNG.integers(0, 1024, 32) * 16
        w, i = bank_ref(addrs, nbytes)
        got = bank_run(kind, addrs, warps=2)
        check(f"banks: {kind} at random addresses, two warps: the loop-by-loop count per warp",
              got == (2, 2 * w, 2 * i), f"got {got}, loop count {(2, 2 * w, 2 * i)}")
    stats = BankStats()
    stats.by_ins = {("f", 3, "a"): [1, 4, 4], ("f", 9, "b"): [2, 12, 4], ("g", 1, "c"): [1, 2, 1]}
    check("banks: conflicted() lists the worst excess first, per function",
          [r[1] for r in stats.conflicted()] == [9, 1] and [r[1] for r in stats.conflicted("f")] == [9]
          and stats.totals("f") == (3, 16, 8))


# -- named barriers (bar.sync a, b)

NB_BODY = """
    .reg .pred %p, %q;
    .reg .b32 %t, %wg, %id, %l, %c, %o, %n, %b, %x, %y, %r;
    .reg .b64 %out, %a;
    .shared .align 16 .b8 buf[1024];
    ld.param.u64 %out, [p_out];
    mov.u32 %t, %tid.x;
    shr.u32 %wg, %t, 7;
    and.b32 %l, %t, 127;
    setp.eq.u32 %p, %wg, 0;
    @%p bra $producer;                 // warpgroup 0 never takes part in the named barriers
    mov.u32 %id, %wg;                  // barrier 1 for warpgroup 1, 2 for warpgroup 2
    sub.u32 %c, %t, 128;               // consumer thread 0..255
    mov.u32 %b, buf;
    shl.b32 %o, %c, 2;
    add.u32 %o, %o, %b;                // its own word
    {NEIGH}
    setp.lt.u32 %q, %l, 32;            // the first warp of each warpgroup comes late:
    @%q bra $late;                     // the other three wait for it at the barrier
$back:
    mov.u32 %r, 0;
$round:
    mad.lo.u32 %x, %r, 1000, %t;
    st.shared.u32 [%o], %x;
    {SYNC1}
    ld.shared.u32 %y, [%n];
    mad.lo.u32 %x, %r, 256, %c;
    mul.wide.u32 %a, %x, 4;
    add.s64 %a, %out, %a;
    st.global.u32 [%a], %y;
    {SYNC2}
    add.u32 %r, %r, 1;
    setp.lt.u32 %q, %r, 2;
    @%q bra $round;
    ret;
$late:
    mov.u32 %x, 0;
$spin:
    add.u32 %x, %x, 1;
    setp.lt.u32 %q, %x, 5;
    @%q bra $spin;
    bra $back;
$producer:
    mov.u32 %x, 0;
$ploop:
    add.u32 %x, %x, 1;
    setp.lt.u32 %q, %x, 20;
    @%q bra $ploop;
    ret;
"""
# the word read: the next warp's in the same warpgroup, or the other warpgroup's
NB_SAME = """add.u32 %n, %l, 32;
    and.b32 %n, %n, 127;
    sub.u32 %x, %c, %l;
    add.u32 %n, %n, %x;
    shl.b32 %n, %n, 2;
    add.u32 %n, %n, %b;"""
NB_CROSS = """xor.b32 %n, %c, 128;
    shl.b32 %n, %n, 2;
    add.u32 %n, %n, %b;"""
NB_WG = "bar.sync %id, 128;"


def nb_run(neigh=NB_SAME, sync1=NB_WG, sync2=NB_WG):
    """Two consumer warpgroups (threads 128..383) each write a word, synchronise,
    read a neighbour's, twice; returns the 512 words read."""
    k = build("nb", ["p_out"], NB_BODY.replace("{NEIGH}", neigh).replace("{SYNC1}", sync1)
              .replace("{SYNC2}", sync2))
    mem = Memory()
    po = mem.upload(np.zeros(512, np.uint32))
    run_kernel(k, mem, (1, 1, 1), (384, 1, 1), [po])
    return mem.download(po, 512, np.uint32)


def nb_small(lines, nt=128, name="nbs", hdr=HDR):
    """A small kernel (`lines` after %t = tid, %w = warp, %b = buf) for the
    barrier-discipline errors; returns a runner."""
    body = ".reg .pred %p, %q;\n .reg .b32 %t, %w, %b, %n, %x;\n .reg .b64 %out, %a;\n" \
           " .shared .align 16 .b8 buf[512];\n ld.param.u64 %out, [p_out];\n mov.u32 %t, %tid.x;\n" \
           " shr.u32 %w, %t, 5;\n mov.u32 %b, buf;\n" + lines + "\n ret;"
    kk = build(name, ["p_out"], body, hdr=hdr)

    def go():
        mem = Memory()
        po = mem.upload(np.zeros(nt, np.uint32))
        run_kernel(kk, mem, (1, 1, 1), (nt, 1, 1), [po])
        return mem.download(po, nt, np.uint32)
    return go


def t_named_barriers():
    """bar.sync a, b (named barriers of whole warps): completion, reuse, the race
    detector's happens-before through them, and the discipline errors."""
    c = np.arange(256)
    ln = c % 128
    want = np.concatenate([r * 1000 + 128 + (c - ln) + (ln + 32) % 128 for r in range(2)])
    try:
        got = nb_run()
        check("named barriers: two warpgroups, each `bar.sync 1+g, 128` around its own smem words, twice "
              "(warp 0 late, the others wait): the words read are the neighbours'", np.array_equal(got, want))
    except EmuError as e:
        check("named barriers: two warpgroups, each `bar.sync 1+g, 128` around its own smem words, twice "
              "(warp 0 late, the others wait): the words read are the neighbours'", False, str(e))
    try:
        got = nb_run(sync1="barrier.sync.aligned 3, 256;", sync2="bar.sync.aligned 3, 256;")
        want2 = np.concatenate([r * 1000 + 128 + (c ^ 128) for r in range(2)])
        got2 = nb_run(NB_CROSS, "barrier.sync 3, 256;", "bar.sync 3, 256;")
        check("named barriers: barrier 3 over both consumer warpgroups (256 of 384 threads, .aligned forms) "
              "orders their accesses: reading the other warpgroup's words passes and is right",
              np.array_equal(got, want) and np.array_equal(got2, want2))
    except EmuError as e:
        check("named barriers: barrier 3 over both consumer warpgroups (256 of 384 threads, .aligned forms) "
              "orders their accesses: reading the other warpgroup's words passes and is right", False, str(e))
    expect_error("named barriers: reading the other warpgroup's words, ordered only by each warpgroup's own "
                 "barrier, is a race", lambda: nb_run(NB_CROSS), "shared-memory race")
    expect_error("named barriers: without the second barrier the next round's store races with the neighbour "
                 "warp's read (write after read)", lambda: nb_run(sync2=""), "shared-memory race")
    # happens-before is transitive, and follows the order of the completions
    chain = """
    setp.eq.u32 %p, %w, 0;
    shl.b32 %n, %t, 2;
    add.u32 %n, %n, %b;
    @%p st.shared.u32 [%n], %t;          // warp 0 writes
    {B1}
    {B2}
    setp.eq.u32 %p, %w, 2;
    and.b32 %x, %t, 31;
    shl.b32 %n, %x, 2;
    add.u32 %n, %n, %b;
    @%p ld.shared.u32 %x, [%n];          // warp 2 reads warp 0's words
    mul.wide.u32 %a, %t, 4;
    add.s64 %a, %out, %a;
    @%p st.global.u32 [%a], %x;"""
    b01 = "setp.ne.u32 %q, %w, 2;\n @%q bar.sync 1, 64;"    # warps 0, 1
    b12 = "setp.ne.u32 %q, %w, 0;\n @%q bar.sync 2, 64;"    # warps 1, 2
    try:
        got = nb_small(chain.replace("{B1}", b01).replace("{B2}", b12), nt=96)()
        check("named barriers: happens-before is transitive (warps 0+1 on barrier 1, then 1+2 on barrier 2: "
              "warp 2 may read warp 0's words)", np.array_equal(got[64:], np.arange(32)))
    except EmuError as e:
        check("named barriers: happens-before is transitive (warps 0+1 on barrier 1, then 1+2 on barrier 2: "
              "warp 2 may read warp 0's words)", False, str(e))
    expect_error("named barriers: ... the same barriers in the other order do not order warp 0 before warp 2: race",
                 nb_small(chain.replace("{B1}", b12).replace("{B2}", b01), nt=96), "shared-memory race")
    expect_error("named barriers: ... without barrier 1: race",
                 nb_small(chain.replace("{B1}", "").replace("{B2}", b12), nt=96), "shared-memory race")
    # discipline
    two = "setp.lt.u32 %p, %t, 64;\n setp.lt.u32 %q, %t, 32;\n selp.u32 %n, 64, 96, %q;\n"
    expect_error("named barriers: warps arriving at one barrier with different thread counts raise",
                 nb_small(two + "@%p bar.sync 1, %n;"), "different thread counts")
    expect_error("named barriers: ... also when they arrive at different bar.sync instructions",
                 nb_small("setp.eq.u32 %p, %w, 0;\n @%p bra $a;\n setp.eq.u32 %q, %w, 1;\n @%q bar.sync 1, 96;\n"
                          " ret;\n$a:\n bar.sync 1, 64;"), "different counts")
    expect_error("named barriers: a warp arriving without all its lanes raises (whole warps, .aligned)",
                 nb_small("setp.ne.u32 %p, %t, 5;\n @%p bar.sync 1, 64;"), "whole warps")
    expect_error("named barriers: more threads than the count arriving before it completes raise",
                 nb_small("bar.sync 1, 64;"), "more than its thread count 64")
    expect_error("named barriers: a count never reached is a deadlock naming the barrier and its arrivals",
                 nb_small("setp.lt.u32 %p, %t, 64;\n @%p bar.sync 1, 96;"), "barrier 1 (bar.sync 1, 96; line")
    expect_error("named barriers: ... (arrived / expected)",
                 nb_small("setp.lt.u32 %p, %t, 64;\n @%p bar.sync 1, 96;"), "64 of 96 threads arrived")
    expect_error("named barriers: thread count 48 (not whole warps) raises", nb_small("bar.sync 1, 48;"),
                 "multiple of the warp size")
    expect_error("named barriers: barrier id 16 raises", nb_small("bar.sync 16, 64;"), "not in 0..15")
    expect_error("named barriers: a register thread count of 100 raises",
                 nb_small("mov.u32 %n, 100;\n bar.sync 1, %n;"), "multiple of the warp size")
    expect_error("named barriers: `bar.sync 0, 128` in a block of 128 is the whole-block barrier (a predicated-"
                 "off subset raises as for bar.sync 0)", nb_small("setp.lt.u32 %p, %t, 64;\n @%p bar.sync 0, 128;"),
                 "predicated bar.sync taken by only some threads")
    # bar.arrive: counted toward the barrier, the arriving warp goes on; its
    # earlier accesses are ordered before the waiters' later ones, not the reverse
    handoff = """
    shl.b32 %n, %t, 2;
    add.u32 %n, %n, %b;
    setp.eq.u32 %p, %w, 0;
    @%p st.shared.u32 [%n], %t;           // warp 0 writes its words
    @%p bar.arrive 1, 64;                 // and goes on
    setp.eq.u32 %p, %w, 1;
    @%p bar.sync 1, 64;                   // warp 1 waits for it
    sub.u32 %n, %n, 128;
    @%p ld.shared.u32 %x, [%n];           // and reads warp 0's words
    mul.wide.u32 %a, %t, 4;
    add.s64 %a, %out, %a;
    @%p st.global.u32 [%a], %x;"""
    try:
        got = nb_small(handoff, nt=96)()
        check("bar.arrive: warp 0 writes and arrives, warp 1 waits (bar.sync 1, 64) and reads its words",
              np.array_equal(got[32:64], np.arange(32)))
    except EmuError as e:
        check("bar.arrive: warp 0 writes and arrives, warp 1 waits (bar.sync 1, 64) and reads its words", False,
              str(e))
    backwards = """
    shl.b32 %n, %t, 2;
    add.u32 %n, %n, %b;
    setp.eq.u32 %p, %w, 1;
    @%p st.shared.u32 [%n], %t;           // warp 1 writes, then waits
    @%p bar.sync 1, 64;
    setp.eq.u32 %p, %w, 0;
    @%p bar.arrive 1, 64;                 // warp 0 only arrives: not ordered after warp 1
    add.u32 %n, %n, 128;
    @%p ld.shared.u32 %x, [%n];"""
    expect_error("bar.arrive: ... the arriving warp reading the waiter's words after its arrive: race",
                 nb_small(backwards, nt=96), "shared-memory race")
    # FlashAttention-3's scheduler barriers: two warps take turns through barriers
    # 1 and 2, each incrementing a shared counter in its turn; warp 1 opens the
    # first turn with an arrive, and its last arrive is left pending at exit.
    turns = """
    setp.eq.u32 %q, %t, 0;
    @%q st.shared.u32 [%b], 0;
    bar.sync 0;
    setp.ge.u32 %q, %w, 2;
    @%q bra $skip;                        // warps 2 and 3 take no turns
    setp.eq.u32 %p, %w, 1;
    @%p bar.arrive 1, 64;                 // warp 0 goes first
    mov.u32 %n, 0;
$turn:
    @%p bar.sync 2, 64;                   // warp 1 waits for warp 0's turn to end
    @!%p bar.sync 1, 64;                  // warp 0 for warp 1's
    and.b32 %x, %t, 31;
    setp.eq.u32 %q, %x, 0;
    @%q ld.shared.u32 %x, [%b];
    @%q add.u32 %x, %x, 1;
    @%q st.shared.u32 [%b], %x;
    @%p bar.arrive 1, 64;
    @!%p bar.arrive 2, 64;
    add.u32 %n, %n, 1;
    setp.lt.u32 %q, %n, 3;
    @%q bra $turn;
$skip:
    bar.sync 0;
    ld.shared.u32 %x, [%b];
    mul.wide.u32 %a, %t, 4;
    add.s64 %a, %out, %a;
    st.global.u32 [%a], %x;"""
    try:
        got = nb_small(turns, nt=128)()
        check("bar.arrive: two warps taking turns (FlashAttention-3's scheduler barriers) increment a shared "
              "counter 6 times without a race; the last arrive left pending at exit", np.all(got == 6))
    except EmuError as e:
        check("bar.arrive: two warps taking turns (FlashAttention-3's scheduler barriers) increment a shared "
              "counter 6 times without a race; the last arrive left pending at exit", False, str(e))
    expect_error("bar.arrive: ... without warp 1's opening arrive: deadlock",
                 nb_small(turns.replace("@%p bar.arrive 1, 64;                 // warp 0 goes first", ""), nt=128),
                 "deadlock")
    expect_error("bar.arrive: ... with arrive and sync swapped in one warp (it goes on without its turn): race",
                 nb_small(turns.replace("@%p bar.sync 2, 64;                   // warp 1 waits for warp 0's turn to "
                                        "end", "@%p bar.arrive 2, 64;"), nt=128),
                 "shared-memory race")
    expect_error("bar.arrive: a thread count is required", nb_small("bar.arrive 1;", nt=96), "bar.arrive takes a, b")
    expect_error("bar.arrive: ... below the block's size (an arrive of the whole block is not supported)",
                 nb_small("bar.arrive 1, 96;", nt=96), "bar.arrive takes a, b")
    # the other orderings named barriers give: a TMA refill after the readers' barrier, mbarrier.init
    outer, inner, pad = 70, 100, 112
    G = RNG.integers(1, 65535, (outer, pad), dtype=np.uint16)
    refill = f"""@%p bra $x2;
    mbarrier.arrive.expect_tx.shared::cta.b64 %st, [%b], 4096;
    {TMA} [buf], [%tm, {{%c0, %c1}}], [%b];
$x2:"""
    warp2_exits = ("mov.u32 %t, %tid.x;", "mov.u32 %t, %tid.x;\n setp.ge.u32 %q, %t, 64;\n @%q ret;")

    def tma96(k):
        mem = Memory()
        pg, po = mem.upload(G), mem.upload(np.zeros(4096, np.uint8))
        run_kernel(k, mem, (1, 1, 1), (96, 1, 1), [TensorMap(pg, 2, (inner, outer), 2 * pad, (64, 32), 128), po, 0, 0])
    try:
        tma96(tma_kernel(4096, after="bar.sync 1, 64;\n" + refill, edit=warp2_exits))
        check("named barriers: a TMA refilling bytes warps 0 and 1 read (of TMA data) after `bar.sync 1, 64` over "
              "them (warp 2 exited) passes: the barrier orders the reads before the TMA", True)
    except EmuError as e:
        check("named barriers: a TMA refilling bytes warps 0 and 1 read (of TMA data) after `bar.sync 1, 64` over "
              "them (warp 2 exited) passes: the barrier orders the reads before the TMA", False, str(e))
    expect_error("named barriers: ... all three warps reading, the barrier over warps 0 and 1 only: not released",
                 lambda: tma96(tma_kernel(4096, after="setp.lt.u32 %q, %t, 64;\n @%q bar.sync 1, 64;\n" + refill)),
                 "thread 64's ld.shared was not released")
    mbi = """setp.ne.u32 %p, %t, 0;
    @%p bra $s;
    mbarrier.init.shared::cta.b64 [%b], 64;
$s:
    setp.lt.u32 %p, %w, 2;
    @%p bar.sync 1, 64;
    {USE} mbarrier.arrive.shared::cta.b64 %st, [%b];"""
    pre = ".reg .b64 %st;\n"
    try:
        nb_small(pre + mbi.replace("{USE}", "@%p"), nt=96, name="nbm", hdr=HDR90)()
        check("named barriers: warps 0, 1 may use an mbarrier thread 0 initialised before `bar.sync 1, 64`", True)
    except EmuError as e:
        check("named barriers: warps 0, 1 may use an mbarrier thread 0 initialised before `bar.sync 1, 64`", False,
              str(e))
    expect_error("named barriers: ... warp 2, not in that barrier, may not",
                 nb_small(pre + mbi.replace("{USE}", ""), nt=96, name="nbm", hdr=HDR90), "thread 64 uses mbarrier")
    try:
        got = nb_small("shl.b32 %n, %t, 2;\n add.u32 %n, %n, %b;\n st.shared.u32 [%n], %t;\n mov.u32 %x, 0;\n"
                       "bar.sync %x, 128;\n xor.b32 %n, %n, 128;\n ld.shared.u32 %x, [%n];\n"
                       "mul.wide.u32 %a, %t, 4;\n add.s64 %a, %out, %a;\n st.global.u32 [%a], %x;")()
        check("named barriers: `bar.sync %r, 128` (register id 0, count = block) orders the whole block",
              np.array_equal(got, np.arange(128) ^ 32))
    except EmuError as e:
        check("named barriers: `bar.sync %r, 128` (register id 0, count = block) orders the whole block", False,
              str(e))


# -- TMA stores (cp.async.bulk.tensor global <- shared::cta, bulk async-groups)

def tile_val(tile, r, c):
    """The bf16 bits the TMA-store kernels write at (row r, column c) of tile `tile`."""
    return tile * 4096 + r * 64 + c


# a 64x64 bf16 tile in the 128-byte swizzled layout: thread l writes 16 words
FILL = """
    mov.u32 %k, 0;
$fill{S}:
    mad.lo.u32 %wd, %k, 128, %l;        // word 0..2047 of the tile
    shr.u32 %r, %wd, 5;                 // row
    and.b32 %cw, %wd, 31;               // word within the row
    shr.u32 %j, %cw, 2;                 // 16-byte chunk of the row
    and.b32 %x, %r, 7;
    xor.b32 %j, %j, %x;                 // 128-byte swizzle
    shl.b32 %ph, %r, 7;
    shl.b32 %j, %j, 4;
    add.u32 %ph, %ph, %j;
    and.b32 %x, %cw, 3;
    shl.b32 %x, %x, 2;
    add.u32 %ph, %ph, %x;
    add.u32 %ph, %ph, %bufb;
    shl.b32 %v0, %wd, 1;                // element r * 64 + 2 cw
    mad.lo.u32 %v0, %tl, 4096, %v0;
    add.u32 %v1, %v0, 1;
    shl.b32 %v1, %v1, 16;
    or.b32 %v0, %v0, %v1;
    st.shared.b32 [%ph], %v0;
    add.u32 %k, %k, 1;
    setp.lt.u32 %q, %k, 16;
    @%q bra $fill{S};"""

TS_BODY = """
    .reg .pred %lead, %q;
    .reg .b32 %t, %l, %k, %wd, %r, %cw, %j, %x, %ph, %v0, %v1, %tl, %bufb, %c0, %c1;
    .reg .b64 %tm, %g;
    .shared .align 1024 .b8 buf[8192];
    mov.u64 %tm, p_tm;
    cvta.param.u64 %tm, %tm;
    ld.param.u32 %c0, [p_c0];
    ld.param.u32 %c1, [p_c1];
    ld.param.u64 %g, [p_g];
    mov.u32 %t, %tid.x;
    mov.u32 %l, %t;
    setp.eq.u32 %lead, %t, 0;
    mov.u32 %bufb, buf;
    mov.u32 %tl, 0;
    {FILL}
    {FENCE}
    {SYNC}
    {FENCE2}
    @%lead cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%tm, {%c0, %c1}], [%bufb];
    {COMMIT}
    {WAIT}
    {AFTER}
    ret;
"""
TS_PARTS = {"{FENCE}": "fence.proxy.async.shared::cta;", "{SYNC}": "bar.sync 0;", "{FENCE2}": "",
            "{COMMIT}": "@%lead cp.async.bulk.commit_group;", "{WAIT}": "@%lead cp.async.bulk.wait_group.read 0;",
            "{AFTER}": ""}
SENTINEL = 0xABCD


def ts_kernel(hdr=HDR90, edit=None, **parts):
    body = TS_BODY.replace("{FILL}", FILL.replace("{S}", ""))
    for key, val in TS_PARTS.items():
        body = body.replace(key, parts.get(key.strip("{}").lower(), val))
    if edit:
        body = body.replace(*edit)
    return build("ts", ["p_tm:tmap", "p_c0:u32", "p_c1:u32", "p_g"], body, hdr=hdr)


def ts_run(k, c0, c1, dims=(100, 70), rows=78, pad=112):
    """One 64x64 bf16 tile stored at (c0, c1) into a (dims[1], dims[0]) tensor with
    rows of `pad` elements, in an allocation of `rows` rows filled with SENTINEL."""
    mem = Memory()
    pg = mem.upload(np.full((rows, pad), SENTINEL, np.uint16))
    run_kernel(k, mem, (1, 1, 1), (128, 1, 1), [TensorMap(pg, 2, dims, 2 * pad, (64, 64), 128), c0, c1, pg])
    return mem.download(pg, rows * pad, np.uint16).reshape(rows, pad)


def ts_ref(c0, c1, dims=(100, 70), rows=78, pad=112, tile=0):
    ref = np.full((rows, pad), SENTINEL, np.uint16)
    for y in range(max(c1, 0), min(c1 + 64, dims[1])):
        for x in range(max(c0, 0), min(c0 + 64, dims[0])):
            ref[y, x] = tile_val(tile, y - c1, x - c0)
    return ref


EPI_BODY = """
    .reg .pred %p, %lead, %q;
    .reg .b32 %t, %wg, %id, %l, %k, %wd, %r, %cw, %j, %x, %ph, %v0, %v1, %tl, %sb, %bufb, %c0, %c1, %i;
    .reg .b64 %tm;
    .shared .align 1024 .b8 stage[32768];   // two consumer warpgroups x two 8 KiB buffers
    mov.u64 %tm, p_tm;
    cvta.param.u64 %tm, %tm;
    mov.u32 %t, %tid.x;
    shr.u32 %wg, %t, 7;
    setp.eq.u32 %p, %wg, 0;
    @%p bra $exit;                      // the producer warpgroup: no part in the epilogue
    mov.u32 %id, %wg;                   // named barrier 1 + g of consumer warpgroup g
    and.b32 %l, %t, 127;
    setp.eq.u32 %lead, %l, 0;
    sub.u32 %sb, %wg, 1;
    shl.b32 %c1, %sb, 6;                // rows 64 g ..
    mul.lo.u32 %sb, %sb, 16384;
    mov.u32 %x, stage;
    add.u32 %sb, %sb, %x;
    mov.u32 %i, 0;
$tile:
    and.b32 %x, %i, 1;
    mad.lo.u32 %bufb, %x, 8192, %sb;    // buffers alternate
    shr.u32 %x, %c1, 4;
    add.u32 %tl, %x, %i;                // tile id 4 g + i
    setp.lt.u32 %q, %l, 32;             // warp 0 of the warpgroup (the elected thread's) comes late
    @%q bra $late;
$back:
    {WAIT}
    {SYNC1}
    {FILL}
    fence.proxy.async.shared::cta;
    bar.sync %id, 128;
    shl.b32 %c0, %i, 6;
    @%lead cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%tm, {%c0, %c1}], [%bufb];
    @%lead cp.async.bulk.commit_group;
    add.u32 %i, %i, 1;
    setp.lt.u32 %q, %i, 4;
    @%q bra $tile;
    @%lead cp.async.bulk.wait_group 0;
$exit:
    ret;
$late:
    mov.u32 %x, 0;
$spin:
    add.u32 %x, %x, 1;
    setp.lt.u32 %q, %x, 3;
    @%q bra $spin;
    bra $back;
"""


def epi_run(wait="@%lead cp.async.bulk.wait_group.read 1;", sync1="bar.sync %id, 128;"):
    """The GEMM epilogue: two consumer warpgroups each store four 64x64 tiles
    through two alternating staging buffers; returns the 128x256 output."""
    body = EPI_BODY.replace("{FILL}", FILL.replace("{S}", "")).replace("{WAIT}", wait).replace("{SYNC1}", sync1)
    k = build("epi", ["p_tm:tmap"], body, hdr=HDR90)
    mem = Memory()
    pg = mem.upload(np.full((128, 256), SENTINEL, np.uint16))
    run_kernel(k, mem, (1, 1, 1), (384, 1, 1), [TensorMap(pg, 2, (256, 128), 512, (64, 64), 128)])
    return mem.download(pg, 128 * 256, np.uint16).reshape(128, 256)


def t_tma_store():
    """TMA stores: the box written (in-bounds part only, through the 128-byte
    swizzle), the deferred bulk async-group model, the proxy fence, and the GEMM
    epilogue with named barriers."""
    k = ts_kernel()
    for c0, c1, what in ((64, 32, "past the end in both dimensions"), (-16, -8, "before the start"),
                         (24, 4, "inside"), (200, 0, "entirely outside (writes nothing)")):
        try:
            got = ts_run(k, c0, c1)
            check(f"TMA store: 64x64 bf16 box at ({c0}, {c1}), {what}, 128-byte swizzle: exactly the in-bounds "
                  f"elements are written (padding and the rows past the tensor untouched)",
                  np.array_equal(got, ts_ref(c0, c1)), f"{np.argwhere(got != ts_ref(c0, c1))[:4]}")
        except EmuError as e:
            check(f"TMA store: 64x64 bf16 box at ({c0}, {c1}), {what}", False, str(e))
    expect_error("TMA store: in-bounds destination rows outside the allocation raise",
                 lambda: ts_run(k, 0, 32, dims=(100, 90)), "out-of-bounds")
    expect_error("TMA store: source not 1024-byte aligned (128-byte swizzle) raises",
                 lambda: ts_run(ts_kernel(edit=("[%bufb];", "[%bufb+128];")), 0, 0), "1024-byte aligned")
    expect_error("TMA store: under .target sm_80 raises", lambda: ts_run(ts_kernel(hdr=HDR80), 0, 0),
                 "sm_90 or later")
    # the deferred model: the source is read when the bulk group retires
    overwrite = "@%lead st.shared.b32 [%bufb], %t;"
    expect_error("TMA store: overwriting the staging buffer right after the store (no wait_group.read) raises",
                 lambda: ts_run(ts_kernel(wait="", after=overwrite), 0, 0),
                 "overwrites the source of a TMA store not yet read (cp.async.bulk.wait_group.read)")
    try:
        got = ts_run(ts_kernel(after=overwrite), 0, 0)
        check("TMA store: ... after `cp.async.bulk.wait_group.read 0` it passes (the tile stored is the data "
              "before the overwrite)", np.array_equal(got, ts_ref(0, 0)))
    except EmuError as e:
        check("TMA store: ... after `cp.async.bulk.wait_group.read 0` it passes", False, str(e))
    refill = "@!%lead st.shared.b32 [%ph], %t;"
    expect_error("TMA store: other threads refilling the buffer after the issuer's wait_group.read, with no "
                 "barrier, race with the store's read", lambda: ts_run(ts_kernel(after=refill), 0, 0),
                 "shared-memory race")
    try:
        ts_run(ts_kernel(after="bar.sync 0;\n" + refill), 0, 0)
        check("TMA store: ... with bar.sync between the wait and the refill passes", True)
    except EmuError as e:
        check("TMA store: ... with bar.sync between the wait and the refill passes", False, str(e))
    expect_error("TMA store: a cp.async.bulk.commit_group missing before the wait and the exit raises",
                 lambda: ts_run(ts_kernel(commit=""), 0, 0), "not committed (cp.async.bulk.commit_group)")
    expect_error("TMA store: exiting without cp.async.bulk.wait_group raises",
                 lambda: ts_run(ts_kernel(wait=""), 0, 0), "not retired")
    try:
        got = ts_run(ts_kernel(wait="@%lead cp.async.bulk.wait_group 0;"), 60, 10)
        check("TMA store: cp.async.bulk.wait_group 0 (not .read) retires the store too",
              np.array_equal(got, ts_ref(60, 10)))
    except EmuError as e:
        check("TMA store: cp.async.bulk.wait_group 0 (not .read) retires the store too", False, str(e))
    # proxy fence and the barrier before the issue
    expect_error("TMA store: generic stores without fence.proxy.async before the store raise",
                 lambda: ts_run(ts_kernel(fence=""), 0, 0), "without fence.proxy.async before the TMA store")
    expect_error("TMA store: a fence.proxy.async after the barrier (not ordered before the issue) raises",
                 lambda: ts_run(ts_kernel(fence="", fence2="fence.proxy.async.shared::cta;"), 0, 0),
                 "fence.proxy.async is not ordered before the store")
    expect_error("TMA store: fence.proxy.async.global does not make shared stores visible to it",
                 lambda: ts_run(ts_kernel(fence="fence.proxy.async.global;"), 0, 0), "without fence.proxy.async")
    expect_error("TMA store: issued with no barrier after the other threads' stores: race",
                 lambda: ts_run(ts_kernel(sync=""), 0, 0), "shared-memory race")
    nc = "mul.wide.u32 %g, %t, 0;\n ld.param.u64 %g, [p_g];\n ld.global.nc.u32 %x, [%g];"
    expect_error("TMA store: its global writes count for the ld.global.nc rule",
                 lambda: ts_run(ts_kernel(after=nc), 0, 0), "ld.global.nc")
    # the GEMM epilogue: named barriers, two buffers, wait_group.read 1
    ref = np.zeros((128, 256), np.uint16)
    for y in range(128):
        for x in range(256):
            ref[y, x] = tile_val((y // 64) * 4 + x // 64, y % 64, x % 64)
    try:
        got = epi_run()
        check("TMA store epilogue: two consumer warpgroups (bar.sync 1+g, 128), two staging buffers alternating "
              "with wait_group.read 1, wait_group 0 at the end: all eight tiles right", np.array_equal(got, ref))
    except EmuError as e:
        check("TMA store epilogue: two consumer warpgroups (bar.sync 1+g, 128), two staging buffers alternating "
              "with wait_group.read 1, wait_group 0 at the end: all eight tiles right", False, str(e))
    expect_error("TMA store epilogue: ... with wait_group.read 2 a buffer is refilled before its store read it",
                 lambda: epi_run(wait="@%lead cp.async.bulk.wait_group.read 2;"),
                 "overwrites the source of a TMA store")
    expect_error("TMA store epilogue: ... without the barrier after the elected thread's wait, the other warps "
                 "refill a buffer before the wait", lambda: epi_run(sync1=""), "overwrites the source of a TMA store")


# ---------------------------------------------------------------------------- clusters

def cl_run(k, grid, block, params, mem=None, cluster=(2, 1, 1), **kw):
    mem = Memory() if mem is None else mem
    run_kernel(k, mem, grid, block, params, cluster=cluster, **kw)
    return mem


def cl_passes(name, fn):
    try:
        fn()
        check(name, True)
    except EmuError as e:
        check(name, False, str(e))


SREG_NAMES = ["%cluster_ctarank", "%cluster_nctarank", "%ctaid.x", "%ctaid.y", "%clusterid.x", "%clusterid.y",
              "%nclusterid.x", "%nclusterid.y", "%cluster_ctaid.x", "%cluster_ctaid.y", "%cluster_nctaid.x",
              "%cluster_nctaid.y", "%tid.x", "%nctaid.x", "%warpid"]


def sreg_kernel():
    stores = "\n".join(f"    mov.u32 %v, {r};\n    st.global.u32 [%a+{4 * i}], %v;" for i, r in enumerate(SREG_NAMES))
    n = len(SREG_NAMES) + 1
    body = f"""
    .reg .b32 %v, %i, %w;
    .reg .b64 %out, %a;
    ld.param.u64 %out, [p_out];
    mov.u32 %i, %ctaid.y;
    mov.u32 %w, %nctaid.x;
    mov.u32 %v, %ctaid.x;
    mad.lo.u32 %i, %i, %w, %v;
    mov.u32 %w, %ntid.x;
    mov.u32 %v, %tid.x;
    mad.lo.u32 %i, %i, %w, %v;
    mul.wide.u32 %a, %i, {4 * n};
    add.s64 %a, %out, %a;
{stores}
    selp.u32 %v, 1, 0, %is_explicit_cluster;
    st.global.u32 [%a+{4 * (n - 1)}], %v;
    ret;
"""
    return build("sregs", ["p_out"], body, hdr=HDR90), n


def sreg_want(grid, nt, cluster, explicit):
    cx, cy = cluster[0], cluster[1]
    rows = []
    for by in range(grid[1]):
        for bx in range(grid[0]):
            lx, ly = bx % cx, by % cy
            for t in range(nt):
                rows.append([lx + ly * cx, cx * cy, bx, by, bx // cx, by // cy, grid[0] // cx, grid[1] // cy,
                             lx, ly, cx, cy, t, grid[0], t // 32, int(explicit)])
    return np.array(rows, np.uint32)


def t_cluster_sregs():
    k, n = sreg_kernel()
    for grid, cluster, nt in (((4, 1, 1), (2, 1, 1), 40), ((4, 4, 1), (2, 2, 1), 32), ((2, 4, 1), (1, 2, 1), 64),
                              ((4, 2, 1), None, 32)):
        mem = Memory()
        nb = grid[0] * grid[1]
        po = mem.upload(np.full(nb * nt * n, 7, np.uint32))
        run_kernel(k, mem, grid, (nt, 1, 1), [po], cluster=cluster)
        got = mem.download(po, nb * nt * n, np.uint32).reshape(-1, n)
        want = sreg_want(grid, nt, cluster or (1, 1, 1), cluster is not None)
        bad = np.argwhere(got != want)
        check(f"cluster special registers (%cluster_ctarank, %clusterid, %cluster_ctaid, ...): grid {grid[:2]}, "
              f"cluster {cluster}, {nt} threads" + (" (no cluster: a 1x1x1 cluster)" if cluster is None else ""),
              not bad.size, f"first mismatch: block-thread {bad[0][0] if bad.size else ''} "
                             f"{SREG_NAMES[bad[0][1]] if bad.size and bad[0][1] < n - 1 else ''}")


DSM_BODY = """
    .reg .pred %p0, %p1, %q;
    .reg .b32 %t, %r, %o, %a, %ra, %v, %x;
    .reg .b64 %out, %g;
    .shared .align 16 .b32 buf[64];
    ld.param.u64 %out, [p_out];
    mov.u32 %t, %tid.x;
    mov.u32 %r, %cluster_ctarank;
    setp.eq.u32 %p0, %r, 0;
    setp.eq.u32 %p1, %r, 1;
    shl.b32 %o, %t, 2;
    mov.u32 %a, buf;
    add.u32 %a, %a, %o;
    mad.lo.u32 %v, %t, 3, 7;
    {WRITE0}
    {WRITE1}
    {SYNC}
    {EXIT0}
    @%p1 mapa.shared::cluster.u32 %ra, %a, 0;          // rank 1: rank 0's buf[t]
    @%p1 ld.shared::cluster.u32 %x, [%ra];
    @%p0 ld.shared.u32 %x, [%a+128];                   // rank 0: what rank 1 wrote into its buf[32 + t]
    mov.u32 %v, %ctaid.x;
    mad.lo.u32 %v, %v, 32, %t;
    mul.wide.u32 %g, %v, 4;
    add.s64 %g, %out, %g;
    st.global.u32 [%g], %x;
    {SYNC2}
    ret;
"""
CL_SYNC = "barrier.cluster.arrive.release.aligned;\n    barrier.cluster.wait.acquire.aligned;"
DSM_W0 = "@%p0 st.shared.u32 [%a], %v;      // rank 0: its own buf[t]"
# rank 1 writes 1000 + t into rank 0's buf[32 + t] through mapa
DSM_W1 = """mad.lo.u32 %v, %t, 1, 1000;
    @%p1 mapa.shared::cluster.u32 %ra, %a, 0;
    @%p1 st.shared::cluster.u32 [%ra+128], %v;"""


def dsm_kernel(sync=CL_SYNC, sync2=CL_SYNC, write1=DSM_W1, exit0="", write0=DSM_W0):
    body = DSM_BODY
    for key, val in (("{SYNC}", sync), ("{SYNC2}", sync2), ("{WRITE1}", write1), ("{EXIT0}", exit0),
                     ("{WRITE0}", write0)):
        body = body.replace(key, val)
    return build("dsm", ["p_out"], body, hdr=HDR90)


def dsm_run(k, grid=(2, 1, 1), **kw):
    mem = Memory()
    po = mem.upload(np.zeros(32 * grid[0], np.uint32))
    cl_run(k, grid, (32, 1, 1), [po], mem, **kw)
    return mem.download(po, 32 * grid[0], np.uint32).reshape(grid[0], 32)


def t_cluster_dsmem():
    t = np.arange(32)
    try:
        got = dsm_run(dsm_kernel(), grid=(4, 1, 1))
        want = np.stack([1000 + t, 3 * t + 7] * 2)
        check("DSMEM: rank 1 reads rank 0's shared memory (mapa + ld.shared::cluster) and writes into it "
              "(st.shared::cluster) after a cluster barrier; two clusters", np.array_equal(got, want), f"{got}")
    except EmuError as e:
        check("DSMEM: rank 1 reads rank 0's shared memory (mapa + ld.shared::cluster) and writes into it "
              "(st.shared::cluster) after a cluster barrier; two clusters", False, str(e))
    expect_error("DSMEM: without the cluster barrier rank 1's read of rank 0's store is a race",
                 lambda: dsm_run(dsm_kernel(sync="", write1="")), "shared-memory race")
    expect_error("DSMEM: ... and rank 1's remote store racing with rank 0's read",
                 lambda: dsm_run(dsm_kernel(sync="", write0="")),
                 "race: thread 0 (rank 0, tid 0) reads byte 128 of rank 0 written by thread 128 (rank 1, tid 0)")
    expect_error("DSMEM: a .relaxed cluster barrier (no release, no fence) does not order the store before the read",
                 lambda: dsm_run(dsm_kernel(sync="barrier.cluster.arrive.relaxed.aligned;\n"
                                                 "barrier.cluster.wait.aligned;")), "shared-memory race")
    expect_error("DSMEM: rank 0 exits (no cluster barrier at the end) before rank 1 reads its shared memory",
                 lambda: dsm_run(dsm_kernel(write1="", sync2="", exit0="@%p0 ret;")),
                 "rank 0 has exited: its shared memory is gone")
    expect_error("DSMEM: rank 1 reads rank 0's shared memory, then both exit with no cluster barrier: the read is "
                 "not ordered before rank 0's exit", lambda: dsm_run(dsm_kernel(write1="", sync2="")),
                 "the last threads of rank 0 exit, but warp 4's (rank 1) access to rank 0's shared memory "
                 "(`@%p1 ld.shared::cluster.u32 %x, [%ra]`) is not ordered before the exit")
    expect_error("DSMEM: a .shared::cta access to another CTA's shared memory (a mapa'd address) raises, naming "
                 "both ranks", lambda: dsm_run(dsm_kernel(write1="@%p1 mapa.shared::cluster.u32 %ra, %a, 0;\n"
                                                                  "@%p1 st.shared.u32 [%ra], %t;")),
                 "offset 0 of rank 0's shared memory): a .shared::cta access must stay in the shared memory of the "
                 "thread's own CTA (rank 1)")
    expect_error("DSMEM: mapa to rank 2 in a cluster of 2 raises",
                 lambda: dsm_run(dsm_kernel(write1="@%p1 mapa.shared::cluster.u32 %ra, %a, 2;")),
                 "maps to CTA rank 2, outside the cluster's 2 CTA(s)")
    expect_error("cluster: barrier.cluster.arrive twice without a wait raises",
                 lambda: dsm_run(dsm_kernel(sync="barrier.cluster.arrive.aligned;\n barrier.cluster.arrive.aligned;")),
                 "again without a barrier.cluster.wait")
    expect_error("cluster: barrier.cluster.wait without an arrive raises",
                 lambda: dsm_run(dsm_kernel(sync="barrier.cluster.wait.aligned;")), "without having arrived")
    expect_error("cluster: .aligned cluster barrier executed by part of a warp raises",
                 lambda: dsm_run(dsm_kernel(sync="setp.lt.u32 %q, %t, 5;\n @%q barrier.cluster.arrive.aligned;\n"
                                                 "@!%q barrier.cluster.arrive.aligned;\n barrier.cluster.wait;")),
                 "executes this .aligned instruction without its live threads")
    # launch rules
    k = dsm_kernel()
    expect_error("cluster: a grid that is not a multiple of the cluster raises",
                 lambda: dsm_run(k, grid=(3, 1, 1)), "not a multiple of the cluster")
    expect_error("cluster: more than 8 CTAs in a cluster raises",
                 lambda: dsm_run(k, grid=(16, 1, 1), cluster=(16, 1, 1)), "portable maximum of 8")
    for d, name in ((".reqnctapercluster 2, 1, 1", "rq2"), (".explicitcluster .reqnctapercluster 2", "rq2e")):
        kr = build(name, [], "ret;", d, hdr=HDR90)
        cl_passes(f"cluster: `{d}` launched with cluster (2, 1, 1) passes",
                  lambda kr=kr: cl_run(kr, (4, 1, 1), (32, 1, 1), []))
        expect_error(f"cluster: `{d}` launched with cluster (4, 1, 1) raises",
                     lambda kr=kr: cl_run(kr, (4, 1, 1), (32, 1, 1), [], cluster=(4, 1, 1)), ".reqnctapercluster")
        expect_error(f"cluster: `{d}` launched without a cluster raises",
                     lambda kr=kr: run_kernel(kr, Memory(), (4, 1, 1), (32, 1, 1), []), ".reqnctapercluster")
    ke = build("ex", [], "ret;", ".explicitcluster", hdr=HDR90)
    expect_error("cluster: `.explicitcluster` launched without a cluster raises",
                 lambda: run_kernel(ke, Memory(), (4, 1, 1), (32, 1, 1), []), ".explicitcluster")
    # without a cluster launch: a 1x1x1 cluster (mapa to rank 0, barrier.cluster as a block barrier)
    try:
        mem = Memory()
        po = mem.upload(np.zeros(64, np.uint32))
        w0 = "@%p0 mapa.shared::cluster.u32 %ra, %a, 0;\n @%p0 st.shared::cluster.u32 [%ra+128], %t;"
        run_kernel(dsm_kernel(write1="", write0=w0), mem, (2, 1, 1), (32, 1, 1), [po])
        got = mem.download(po, 64, np.uint32).reshape(2, 32)
        check("cluster: launched without a cluster, rank 0 of a 1x1x1 cluster (mapa to rank 0, barrier.cluster)",
              np.array_equal(got, np.stack([np.arange(32)] * 2)), f"{got}")
    except EmuError as e:
        check("cluster: launched without a cluster, rank 0 of a 1x1x1 cluster (mapa to rank 0, barrier.cluster)",
              False, str(e))


CLB_BODY = """
    .reg .pred %p0, %p1, %lead, %ok, %q;
    .reg .b32 %t, %r, %b, %rb, %v, %w;
    .reg .b64 %out, %g, %st;
    .shared .align 8 .b64 bar;
    .shared .align 16 .b32 buf[64];
    ld.param.u64 %out, [p_out];
    mov.u32 %t, %tid.x;
    mov.u32 %r, %cluster_ctarank;
    setp.eq.u32 %p0, %r, 0;
    setp.eq.u32 %p1, %r, 1;
    setp.eq.u32 %lead, %t, 0;
    mov.u32 %b, bar;
    @!%lead bra $i;
    mbarrier.init.shared::cta.b64 [%b], 1;
    {FENCE}
$i:
    {SYNC}
    @%p0 bra $rank0;
    // rank 1: wait for rank 0's remote arrival (its code comes later)
$w:
    mbarrier.try_wait.parity.shared::cta.b64 %ok, [%b], 0;
    @!%ok bra $w;
    mov.u32 %v, 77;
    mul.wide.u32 %g, %t, 4;
    add.s64 %g, %out, %g;
    st.global.u32 [%g], %v;
    bra.uni $end;
$rank0:
    {BAR0}
    @%lead mapa.shared::cluster.u32 %rb, %b, 1;
    {ARRIVE}
$end:
    {SYNC2}
    ret;
"""
CLB_ARRIVE = "@%lead mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%rb];"


def clb_kernel(**parts):
    body = CLB_BODY
    defaults = {"FENCE": "fence.mbarrier_init.release.cluster;", "SYNC": "barrier.cluster.arrive.relaxed.aligned;\n"
                "barrier.cluster.wait.acquire.aligned;", "BAR0": "", "ARRIVE": CLB_ARRIVE, "SYNC2": CL_SYNC}
    defaults.update(parts)
    for key, val in defaults.items():
        body = body.replace("{" + key + "}", val)
    return build("clb", ["p_out"], body, hdr=HDR90)


def clb_run(k, nt=32):
    mem = Memory()
    po = mem.upload(np.zeros(nt, np.uint32))
    cl_run(k, (2, 1, 1), (nt, 1, 1), [po], mem)
    return mem.download(po, nt, np.uint32)


def t_cluster_mbarrier():
    try:
        got = clb_run(clb_kernel())
        check("remote mbarrier arrive: rank 1 waits on its barrier (count 1), rank 0 arrives on it through mapa "
              "(mbarrier.arrive.shared::cluster), rank 1 goes on", np.array_equal(got, np.full(32, 77)))
    except EmuError as e:
        check("remote mbarrier arrive: rank 1 waits on its barrier (count 1), rank 0 arrives on it through mapa "
              "(mbarrier.arrive.shared::cluster), rank 1 goes on", False, str(e))
    expect_error("remote mbarrier arrive: ... without the arrive: a deadlock naming both waits",
                 lambda: clb_run(clb_kernel(ARRIVE="")), "wait at barrier.cluster.wait")
    cl_passes("remote mbarrier arrive: rank 0's `bar.sync 0` waits for rank 0's threads only (rank 1 waits on an "
              "mbarrier rank 0 arrives on after its bar.sync)",
              lambda: clb_run(clb_kernel(BAR0="bar.sync 0;\n bar.sync 1, 64;"), nt=64))
    expect_error("remote mbarrier arrive: without fence.mbarrier_init before the relaxed cluster barrier, rank 0 "
                 "uses rank 1's barrier unordered after its init",
                 lambda: clb_run(clb_kernel(FENCE="")), "in the barrier interval of its mbarrier.init")
    cl_passes("remote mbarrier arrive: ... a .release cluster barrier orders the init without the fence",
              lambda: clb_run(clb_kernel(FENCE="", SYNC=CL_SYNC)))
    kx = build("clx", [], """
    .reg .pred %p0, %lead;
    .reg .b32 %t, %b, %rb;
    .shared .align 8 .b64 bar;
    mov.u32 %t, %tid.x;
    mov.u32 %b, %cluster_ctarank;
    setp.eq.u32 %p0, %b, 0;
    setp.eq.u32 %lead, %t, 0;
    mov.u32 %b, bar;
    @%lead mbarrier.init.shared::cta.b64 [%b], 1;
    fence.mbarrier_init.release.cluster;
    barrier.cluster.arrive.relaxed.aligned;
    barrier.cluster.wait.acquire.aligned;
    @%p0 ret;
    @%lead mapa.shared::cluster.u32 %rb, %b, 0;
    @%lead mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%rb];
    ret;""", hdr=HDR90)
    expect_error("remote mbarrier arrive: rank 0 exits, then rank 1 arrives on rank 0's barrier: raises",
                 lambda: cl_run(kx, (2, 1, 1), (32, 1, 1), []), "rank 0 has exited: its shared memory is gone")


CPC_BODY = """
    .reg .b32 %t, %r, %sa, %sb, %x<4>;
    .reg .b64 %src, %out, %a;
    .shared .align 16 .b8 buf[512];
    ld.param.u64 %src, [p_src];
    ld.param.u64 %out, [p_out];
    mov.u32 %t, %tid.x;
    mov.u32 %r, %ctaid.x;
    mad.lo.u32 %r, %r, 32, %t;
    mul.wide.u32 %a, %r, 16;
    add.s64 %a, %src, %a;
    mov.u32 %sa, buf;
    shl.b32 %sb, %t, 4;
    add.u32 %sa, %sa, %sb;
    xor.b32 %sb, %sb, 16;
    mov.u32 %x0, buf;
    add.u32 %sb, %sb, %x0;
    cp.async.cg.shared.global [%sa], [%a], 16;
    cp.async.commit_group;
    cp.async.wait_group 0;
    {SYNC}
    ld.shared.v4.u32 {%x0, %x1, %x2, %x3}, [%sb];
    mul.wide.u32 %a, %r, 16;
    add.s64 %a, %out, %a;
    st.global.v4.u32 [%a], {%x0, %x1, %x2, %x3};
    ret;
"""


def t_cluster_cp_async():
    def run(sync):
        k = build("cpc", ["p_src", "p_out"], CPC_BODY.replace("{SYNC}", sync), hdr=HDR90)
        mem = Memory()
        src = RNG.integers(0, 255, (4, 32, 16), dtype=np.uint8)
        ps, po = mem.upload(src), mem.upload(np.zeros(4 * 32 * 16, np.uint8))
        cl_run(k, (4, 1, 1), (32, 1, 1), [ps, po], mem)
        return mem.download(po, 4 * 32 * 16, np.uint8).reshape(4, 32, 16), src

    try:
        got, src = run("bar.sync 0;")
        check("cluster: cp.async into each CTA's own shared memory, bar.sync 0 per CTA, the neighbour's chunk read "
              "(two clusters of two)", np.array_equal(got, src[:, np.arange(32) ^ 1]))
    except EmuError as e:
        check("cluster: cp.async into each CTA's own shared memory, bar.sync 0 per CTA", False, str(e))
    expect_error("cluster: ... without the bar.sync the neighbour's cp.async data is not visible",
                 lambda: run(""), "with no barrier since its cp.async.wait")


# named barriers: ids per CTA (warp 1 writes, warp 0 reads after `bar.sync 1, 64`)
NBC_BODY = """
    .reg .pred %w0, %w1;
    .reg .b32 %t, %l, %a, %v, %r;
    .reg .b64 %out, %g;
    .shared .align 16 .b32 buf[32];
    ld.param.u64 %out, [p_out];
    mov.u32 %t, %tid.x;
    and.b32 %l, %t, 31;
    mov.u32 %a, buf;
    shl.b32 %v, %l, 2;
    add.u32 %a, %a, %v;
    mov.u32 %r, %ctaid.x;
    setp.lt.u32 %w0, %t, 32;
    setp.ge.u32 %w1, %t, 64;
    @%w1 ret;                     // warp 2: idle
    {FIRST}
$second:
    {SECOND}
    ret;
$w1:
    mad.lo.u32 %v, %r, 100, %l;
    st.shared.u32 [%a], %v;
    bar.sync 1, 64;
    ret;
$w0:
    bar.sync 1, 64;
    ld.shared.u32 %v, [%a];
    mad.lo.u32 %l, %r, 32, %l;
    mul.wide.u32 %g, %l, 4;
    add.s64 %g, %out, %g;
    st.global.u32 [%g], %v;
    ret;
"""


def t_cluster_barriers():
    r = np.arange(4)[:, None]
    want = (100 * r + np.arange(32)).astype(np.uint32)
    for first, second, what in (("@%w0 bra $second;\n bra.uni $w1;", "bra.uni $w0;", "writers first"),
                                ("@!%w0 bra $second;\n bra.uni $w0;", "bra.uni $w1;", "readers first")):
        k = build("nbc", ["p_out"], NBC_BODY.replace("{FIRST}", first).replace("{SECOND}", second), hdr=HDR90)
        try:
            mem = Memory()
            po = mem.upload(np.zeros(128, np.uint32))
            cl_run(k, (4, 1, 1), (96, 1, 1), [po], mem)
            check(f"cluster: named barrier 1 (64 threads) of each CTA is its own ({what}: the two CTAs' warps never "
                  f"complete one another's barrier)", np.array_equal(mem.download(po, 128, np.uint32).reshape(4, 32),
                                                                       want))
        except EmuError as e:
            check(f"cluster: named barrier 1 (64 threads) of each CTA is its own ({what})", False, str(e))


CLT_BODY = """
    .reg .pred %lead, %r0, %ok, %q;
    .reg .b32 %t, %r, %b, %c0, %c1, %i, %o, %sa, %x<4>;
    .reg .b16 %mask;
    .reg .b64 %tm, %out, %a, %st;
    .shared .align 1024 .b8 buf[{NB}];
    .shared .align 8 .b64 bar;
    ld.param.u64 %out, [p_out];
    ld.param.u32 %c0, [p_c0];
    ld.param.u32 %c1, [p_c1];
    mov.u64 %tm, p_tm;
    cvta.param.u64 %tm, %tm;
    mov.u32 %t, %tid.x;
    mov.u32 %r, %cluster_ctarank;
    setp.eq.u32 %lead, %t, 0;
    setp.eq.u32 %r0, %r, 0;
    and.pred %r0, %r0, %lead;
    mov.u32 %b, bar;
    @!%lead bra $init_done;
    mbarrier.init.shared::cta.b64 [bar], 1;
    fence.mbarrier_init.release.cluster;
$init_done:
    barrier.cluster.arrive.relaxed.aligned;
    barrier.cluster.wait.acquire.aligned;
    mov.b16 %mask, 3;
    {FIRST}
    {SECOND}
$wait:
    mbarrier.try_wait.parity.shared::cta.b64 %ok, [%b], 0;
    @!%ok bra $wait;
    mov.u32 %i, %t;
$cp:
    setp.ge.u32 %q, %i, {NCH};
    @%q bra $done;
    shl.b32 %o, %i, 4;
    mov.u32 %sa, buf;
    add.u32 %sa, %sa, %o;
    ld.shared.v4.u32 {%x0, %x1, %x2, %x3}, [%sa];
    mad.lo.u32 %o, %r, {NB}, %o;
    cvt.u64.u32 %a, %o;
    add.s64 %a, %out, %a;
    st.global.v4.u32 [%a], {%x0, %x1, %x2, %x3};
    add.u32 %i, %i, 32;
    bra $cp;
$done:
    barrier.cluster.arrive.release.aligned;
    barrier.cluster.wait.acquire.aligned;
    ret;
"""
CLT_ARM = "@%lead mbarrier.arrive.expect_tx.shared::cta.b64 %st, [%b], {NB};"
CLT_TMA = ("@%r0 cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster "
           "[buf], [%tm, {%c0, %c1}], [%b], {MASK};")


def clt_kernel(nb, arm_first=True, mask="%mask", edit=None):
    arm, tma = CLT_ARM, CLT_TMA.replace("{MASK}", mask)
    body = CLT_BODY.replace("{FIRST}", arm if arm_first else tma).replace("{SECOND}", tma if arm_first else arm)
    body = body.replace("{NB}", str(nb)).replace("{NCH}", str(nb // 16))
    if edit:
        body = body.replace(*edit)
    return build("clt", ["p_tm:tmap", "p_out", "p_c0:u32", "p_c1:u32"], body, hdr=HDR90)


def clt_run(k, G, nb, c0, c1, tmap):
    mem = Memory()
    pg = mem.upload(G)
    po = mem.upload(np.zeros(2 * nb, np.uint8))
    cl_run(k, (2, 1, 1), (32, 1, 1), [tmap(pg), po, c0, c1], mem)
    return mem.download(po, 2 * nb, np.uint8).reshape(2, nb)


def t_cluster_multicast():
    outer, inner, pad = 70, 100, 112
    G = RNG.integers(1, 65535, (outer, pad), dtype=np.uint16)

    def sw_map(a):
        return TensorMap(a, 2, (inner, outer), 2 * pad, (64, 32), 128)

    def plain_map(a):
        return TensorMap(a, 2, (inner, outer), 2 * pad, (40, 16))

    for nb, tmap, box, sw, c0, c1, arm_first, mask in (
            (4096, sw_map, (64, 32), True, 40, -3, True, "%mask"),
            (1280, plain_map, (40, 16), False, -8, 60, True, "3"),
            (4096, sw_map, (64, 32), True, 0, 0, False, "%mask")):
        what = (f"multicast TMA: rank 0 loads a {box[0]}x{box[1]} box at ({c0}, {c1}) "
                f"({'128-byte swizzle' if sw else 'no swizzle'}, ctaMask {'a .b16 register' if mask != '3' else '3'})"
                f" into both CTAs' shared memory, each CTA's barrier completing")
        if not arm_first:
            what += " (both barriers armed after the copy landed: tx-count negative until then)"
        try:
            got = clt_run(clt_kernel(nb, arm_first, mask), G, nb, c0, c1, tmap)
            ref = tma_box_ref(G, (inner, outer), c0, c1, box, sw)
            check(what, np.array_equal(got[0], ref) and np.array_equal(got[1], ref))
        except EmuError as e:
            check(what, False, str(e))
    expect_error("multicast TMA: a ctaMask naming rank 2 of a 2-CTA cluster raises",
                 lambda: clt_run(clt_kernel(4096, mask="5"), G, 4096, 0, 0, sw_map), "ctaMask 0x0005 names CTA rank 2")
    expect_error("multicast TMA: rank 1 expecting the bytes, mask 1 (rank 0 only): rank 1 deadlocks",
                 lambda: clt_run(clt_kernel(4096, mask="1"), G, 4096, 0, 0, sw_map), "deadlock")
    expect_error("multicast TMA: reading before the barrier's phase completes raises (no wait)",
                 lambda: clt_run(clt_kernel(4096, edit=("@!%ok bra $wait;", "")), G, 4096, 0, 0, sw_map),
                 "has not observed")
    expect_error("multicast TMA: onto rank 1's shared memory after rank 1 exited raises",
                 lambda: clt_run(clt_kernel(4096, edit=("mov.b16 %mask, 3;", "mov.b16 %mask, 3;\n"
                                                        "setp.eq.u32 %q, %r, 1;\n @%q ret;")),
                                 G, 4096, 0, 0, sw_map), "rank 1 has exited: its shared memory is gone")


# A two-stage pipeline across a cluster of two, as the clustered GEMM runs it: per
# CTA, warp 0 consumes (ldmatrix over the stage), lane 0 of warp 1 produces. Stage s
# of every CTA holds two halves; the producer of rank r loads half r of each k-tile
# and multicasts it into both CTAs (its full[s] expects the whole stage). empty[s]
# (count 2) takes an arrival from each consumer warp of the cluster: lane r of the
# warp releases the stage on rank r's barrier, through mapa.
CLP_BODY = """
    .reg .pred %lead, %cons, %ok, %p, %rel, %q0;
    .reg .b32 %t, %l, %r, %kt, %s, %ph, %par, %f, %e, %re, %d, %c1, %sa, %x<16>, %o, %full0, %empty0;
    .reg .b64 %tm, %out, %a, %st;
    .shared .align 1024 .b8 buf[4096];
    .shared .align 8 .b64 bars[4];
    ld.param.u64 %out, [p_out];
    mov.u64 %tm, p_tm;
    cvta.param.u64 %tm, %tm;
    mov.u32 %t, %tid.x;
    and.b32 %l, %t, 31;
    mov.u32 %r, %cluster_ctarank;
    mov.u32 %full0, bars;
    add.u32 %empty0, %full0, 16;
    setp.eq.u32 %lead, %t, 0;
    @!%lead bra $i;
    mbarrier.init.shared::cta.b64 [bars], 1;
    mbarrier.init.shared::cta.b64 [bars+8], 1;
    mbarrier.init.shared::cta.b64 [bars+16], {ECOUNT0};
    mbarrier.init.shared::cta.b64 [bars+24], {ECOUNT0};
    {INIT1}
    fence.mbarrier_init.release.cluster;
$i:
    barrier.cluster.arrive.relaxed.aligned;
    barrier.cluster.wait.acquire.aligned;
    mov.u32 %kt, 0;
    setp.lt.u32 %cons, %t, 32;
    @%cons bra $cloop;
    setp.ne.u32 %p, %t, 32;
    @%p bra $idle;
$ploop:
    setp.ge.u32 %p, %kt, {NK};
    @%p bra $end;
    and.b32 %s, %kt, 1;
    bfe.u32 %ph, %kt, 1, 1;
    xor.b32 %par, %ph, 1;
    mad.lo.u32 %e, %s, 8, %empty0;
$pw:
    mbarrier.try_wait.parity.shared::cta.b64 %ok, [%e], %par;
    @!%ok bra $pw;
    mad.lo.u32 %f, %s, 8, %full0;
    mbarrier.arrive.expect_tx.shared::cta.b64 %st, [%f], 2048;
    mov.u32 %d, buf;
    mad.lo.u32 %d, %s, 2048, %d;
    mad.lo.u32 %d, %r, 1024, %d;
    shl.b32 %c1, %kt, 4;
    mad.lo.u32 %c1, %r, 8, %c1;
    {TMA_MC} [%d], [%tm, {0, %c1}], [%f], 3;
    add.u32 %kt, %kt, 1;
    bra.uni $ploop;
$cloop:
    setp.ge.u32 %p, %kt, {NK};
    @%p bra $end;
    and.b32 %s, %kt, 1;
    bfe.u32 %ph, %kt, 1, 1;
    mad.lo.u32 %f, %s, 8, %full0;
$cw:
    mbarrier.try_wait.parity.shared::cta.b64 %ok, [%f], %ph;
    @!%ok bra $cw;
    mov.u32 %sa, buf;
    mad.lo.u32 %sa, %s, 2048, %sa;
    mad.lo.u32 %sa, %l, 16, %sa;
    ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%x0, %x1, %x2, %x3}, [%sa];
    ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%x4, %x5, %x6, %x7}, [%sa+512];
    ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%x8, %x9, %x10, %x11}, [%sa+1024];
    ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%x12, %x13, %x14, %x15}, [%sa+1536];
    mad.lo.u32 %o, %r, {NK}, %kt;
    shl.b32 %o, %o, 11;
    mad.lo.u32 %o, %l, 4, %o;
    cvt.u64.u32 %a, %o;
    add.s64 %a, %out, %a;
{STORES}
    mad.lo.u32 %e, %s, 8, %empty0;
    {RELEASE}
    @%rel mapa.shared::cluster.u32 %re, %e, %l;
    @%rel mbarrier.arrive.shared::cluster.b64 _, [%re];
    add.u32 %kt, %kt, 1;
    bra.uni $cloop;
$end:
    barrier.cluster.arrive.release;
    barrier.cluster.wait.acquire;
$idle:
    ret;
"""
CLP_RELEASE = "setp.lt.u32 %rel, %l, 2;"


def clp_kernel(nk, release=CLP_RELEASE, ecount0=2, init1=""):
    stores = "\n".join(f"    st.global.u32 [%a+{512 * j + 128 * i}], "
                       f"%x{4 * j + i};" for j in range(4) for i in range(4))
    body = CLP_BODY.replace("{STORES}", stores).replace("{TMA_MC}", TMA + ".multicast::cluster").replace("{RELEASE}", release).replace("{NK}", str(nk)) \
        .replace("{ECOUNT0}", str(ecount0)).replace("{INIT1}", init1)
    return build("clp", ["p_tm:tmap", "p_out"], body, hdr=HDR90)


def clp_run(k, nk):
    G = RNG.integers(0, 65535, (16 * nk, 64), dtype=np.uint16)
    mem = Memory()
    pg = mem.upload(G)
    po = mem.upload(np.zeros(2 * nk * 2048, np.uint8))
    cl_run(k, (2, 1, 1), (64, 1, 1), [TensorMap(pg, 2, (64, 16 * nk), 128, (64, 8)), po], mem)
    got = mem.download(po, 2 * nk * 2048, np.uint8).reshape(2, nk * 2048)
    return got, G.view(np.uint8).ravel()


def t_cluster_pipeline():
    try:
        got, want = clp_run(clp_kernel(6), 6)
        check("cluster pipeline: two stages, each CTA's producer multicasting its half of every k-tile into both "
              "CTAs, consumer warps (ldmatrix) releasing each stage on both CTAs' empty barriers (lane r on rank r's, "
              "through mapa): both CTAs read every k-tile right", np.array_equal(got[0], want) and
              np.array_equal(got[1], want))
    except EmuError as e:
        check("cluster pipeline: two stages, each CTA's producer multicasting its half of every k-tile into both "
              "CTAs, consumer warps (ldmatrix) releasing each stage on both CTAs' empty barriers", False, str(e))
    # rank 0's consumer no longer releases the stages on rank 1's barrier
    no_remote = "setp.lt.u32 %rel, %l, 2;\n    setp.ne.u32 %p, %r, 0;\n    setp.eq.u32 %q0, %l, 0;\n" \
                "    or.pred %p, %p, %q0;\n    and.pred %rel, %rel, %p;"
    k = clp_kernel(6, release=no_remote)
    expect_error("cluster pipeline: ... without rank 0's remote arrival on rank 1's empty barrier: deadlock",
                 lambda: clp_run(k, 6), "deadlock")
    # ... and rank 1's empty barriers expecting one arrival: rank 1's producer refills the stages of rank 0 that
    # rank 0's consumer released on rank 0's barriers only
    k = clp_kernel(6, release=no_remote,
                   init1="setp.ne.u32 %p, %r, 0;\n @%p mbarrier.inval.shared::cta.b64 [bars+16];\n"
                         " @%p mbarrier.inval.shared::cta.b64 [bars+24];\n"
                         " @%p mbarrier.init.shared::cta.b64 [bars+16], 1;\n"
                         " @%p mbarrier.init.shared::cta.b64 [bars+24], 1;")
    expect_error("cluster pipeline: ... and rank 1's empty barriers counting one arrival: rank 1's multicast "
                 "overwrites rank 0's stage whose read rank 0 released only on its own barrier",
                 lambda: clp_run(k, 6), "overwrites shared byte 1024 of rank 0, whose readers (warp 0's ldmatrix "
                 "(rank 0)) released it on phase 1 of mbarrier `bars+16` (shared offset 4112 of rank 0), which thread "
                 "160 has not observed")


TESTS = [t_cp_async, t_ldmatrix, t_stmatrix, t_mma, t_mma_tf32, t_integer, t_float, t_shfl, t_vectors, t_launch, t_races,
         t_mbarrier_order, t_bar_red, t_bits,
         t_tma, t_mbarrier, t_wgmma, t_wgmma_regs_mn, t_wgmma_tf32, t_pipeline, t_banks, t_named_barriers, t_tma_store,
         t_cluster_sregs, t_cluster_dsmem, t_cluster_mbarrier, t_cluster_barriers, t_cluster_multicast,
         t_cluster_pipeline, t_cluster_cp_async]

if __name__ == "__main__":
    print(f"TESSERA_TEST_SEED={SEED}", flush=True)
    for t in TESTS:
        try:
            t()
        except Exception as e:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            check(f"{t.__name__} ran", False, repr(e))
    if FAILS:
        print(f"{len(FAILS)} FAILED (replay: TESSERA_TEST_SEED={SEED} python3 tools/test_ptx_emu.py)")
        sys.exit(1)
    print("all passed")
