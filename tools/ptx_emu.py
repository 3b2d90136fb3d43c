#!/usr/bin/env python3
"""A small SIMT emulator for the PTX subset tessera's kernels use.

Not a GPU and not a model of one: it exists so the hand-written kernels can be
checked for index arithmetic, tile edges, barriers, out-of-bounds and misaligned
accesses, and numerical results on a machine with no GPU. What it cannot check:
that our reading of the PTX ISA (ldmatrix / mma fragment layouts, instruction
semantics) matches the hardware, timing, races beyond barrier discipline.

Execution model: one block at a time; every thread has its own pc; the threads
at the smallest pc execute together (vectorised with numpy), which reconverges
structured control flow. bar.sync requires every live thread of the block at the
barrier; warp-collective instructions (shfl, ldmatrix, mma, bar.warp.sync)
require the whole warp. Shared memory starts filled with 0xFF bytes (NaN), global
accesses must fall inside an allocation and be naturally aligned.
"""
import re
import numpy as np

MASK32 = np.uint64(0xFFFFFFFF)


class EmuError(Exception):
    pass


def f32_to_bf16_bits(f):
    """Round-to-nearest-even f32 -> bf16 bits (NaN stays NaN), like cvt.rn.bf16.f32."""
    b = np.asarray(f, dtype=np.float32).view(np.uint32).astype(np.uint64)
    nan = np.isnan(np.asarray(f, dtype=np.float32))
    rounded = (b + np.uint64(0x7FFF) + ((b >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    out = rounded.astype(np.uint16)
    out = np.where(nan, np.uint16(0x7FFF), out)
    return out.astype(np.uint16)


def bf16_bits_to_f32(h):
    return (np.asarray(h, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


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


class Function:
    def __init__(self, name, params, body_lines, module_shared):
        self.name = name
        self.params = params  # [(type, name)]
        self.regs = {}  # name -> kind: 'pred', 'b16', 'b32', 'b64'
        self.shared = {}  # name -> (offset, size)
        self.prog = []
        self.labels = {}
        off = 0
        for line in body_lines:
            line = line.split("//")[0].strip()
            if not line:
                continue
            if line.endswith(":"):
                self.labels[line[:-1]] = len(self.prog)
                continue
            if line.startswith(".reg"):
                m = re.match(r"\.reg\s+\.(\w+)\s+(.*);", line)
                kind = {"pred": "pred", "b16": "b16", "u16": "b16"}.get(m.group(1))
                if kind is None:
                    kind = "b64" if m.group(1) in ("b64", "u64", "s64") else "b32"
                for nm in m.group(2).split(","):
                    nm = nm.strip()
                    mm = re.match(r"(%\w+)<(\d+)>", nm)
                    if mm:
                        for i in range(int(mm.group(2))):
                            self.regs[f"{mm.group(1)}{i}"] = kind
                    else:
                        self.regs[nm] = kind
                continue
            if line.startswith(".shared"):
                m = re.match(r"\.shared\s+\.align\s+(\d+)\s+\.(\w+)\s+(\w+)\[(\d+)\];", line)
                align, ty, nm, n = int(m.group(1)), m.group(2), m.group(3), int(m.group(4))
                size = n * {"f32": 4, "b8": 1, "b32": 4, "u32": 4}[ty]
                off = (off + align - 1) // align * align
                self.shared[nm] = (off, size)
                off += size
                continue
            if line.startswith("{") or line.startswith("}"):
                continue
            ins = Instr()
            ins.text = line
            ins.pred, ins.neg = None, False
            m = re.match(r"@(!?)(%\w+)\s+(.*)", line)
            if m:
                ins.neg = m.group(1) == "!"
                ins.pred = m.group(2)
                line = m.group(3)
            line = line.rstrip(";").strip()
            parts = line.split(None, 1)
            opfull = parts[0]
            ins.op = opfull.split(".")[0]
            ins.mods = opfull.split(".")[1:]
            ins.args = split_args(parts[1]) if len(parts) > 1 else []
            self.prog.append(ins)
        self.static_smem = (off + 15) // 16 * 16
        self.module_shared = module_shared


def parse_module(text):
    funcs = {}
    module_shared = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].split("//")[0].strip()
        if line.startswith(".extern .shared"):
            m = re.search(r"(\w+)\[\]", line)
            module_shared.append(m.group(1))
        if line.startswith(".visible .entry"):
            name = re.search(r"\.entry\s+(\w+)\(", line).group(1)
            header = line
            while "{" not in lines[i]:
                i += 1
                header += " " + lines[i].split("//")[0].strip()
            params = re.findall(r"\.param\s+\.(\w+)\s+(\w+)", header)
            body = []
            i += 1
            depth = 1
            while True:
                l2 = lines[i]
                depth += l2.count("{") - l2.count("}")
                if depth <= 0:
                    break
                body.append(l2)
                i += 1
            funcs[name] = Function(name, params, body, module_shared)
        i += 1
    return funcs


class Memory:
    """Global memory: one byte array, allocations separated by guard gaps."""

    def __init__(self, size=1 << 26):
        self.mem = np.zeros(size, dtype=np.uint8)
        self.allocs = []  # (start, end)
        self.top = 4096

    def alloc(self, nbytes):
        start = self.top
        self.top = (start + max(nbytes, 1) + 256 + 255) // 256 * 256
        if self.top > len(self.mem):
            raise EmuError("emulator out of memory")
        self.allocs.append((start, start + nbytes))
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
        if len(addrs) == 0:
            return
        a = addrs.astype(np.int64)
        if np.any(a % width):
            raise EmuError(f"{what}: misaligned {width}-byte access at {a[a % width != 0][:4]}")
        starts = np.array([s for s, _ in self.allocs], dtype=np.int64)
        ends = np.array([e for _, e in self.allocs], dtype=np.int64)
        idx = np.searchsorted(starts, a, side="right") - 1
        ok = (idx >= 0) & (a + width <= ends[np.maximum(idx, 0)])
        if not np.all(ok):
            raise EmuError(f"{what}: out-of-bounds global access at {a[~ok][:4]}")


def run_kernel(func, mem, grid, block, params, dyn_smem=0, max_steps=50_000_000):
    nt = block[0] * block[1] * block[2]
    assert block[1] == 1 and block[2] == 1
    pvals = {}
    for (ty, nm), v in zip(func.params, params):
        pvals[nm] = (ty, v)
    if len(params) != len(func.params):
        raise EmuError(f"{func.name}: {len(params)} params given, {len(func.params)} declared")
    smem_size = func.static_smem + dyn_smem
    dyn_base = func.static_smem
    for gz in range(grid[2]):
        for gy in range(grid[1]):
            for gx in range(grid[0]):
                run_block(func, mem, (gx, gy, gz), grid, nt, pvals, smem_size, dyn_base, max_steps)


def run_block(func, mem, ctaid, grid, nt, pvals, smem_size, dyn_base, max_steps):
    regs = {}
    for nm, kind in func.regs.items():
        dt = {"pred": np.bool_, "b16": np.uint16, "b32": np.uint32, "b64": np.uint64}[kind]
        regs[nm] = np.zeros(nt, dtype=dt)
    smem = np.full(max(smem_size, 16), 0xFF, dtype=np.uint8)
    tid = np.arange(nt, dtype=np.uint32)
    lane = tid % 32
    pc = np.zeros(nt, dtype=np.int64)
    alive = np.ones(nt, dtype=bool)
    prog = func.prog
    special = {
        "%tid.x": tid,
        "%ntid.x": np.full(nt, nt, np.uint32),
        "%ctaid.x": np.full(nt, ctaid[0], np.uint32),
        "%ctaid.y": np.full(nt, ctaid[1], np.uint32),
        "%ctaid.z": np.full(nt, ctaid[2], np.uint32),
        "%nctaid.x": np.full(nt, grid[0], np.uint32),
    }
    symbols = {nm: off for nm, (off, _) in func.shared.items()}
    for nm in func.module_shared:
        symbols[nm] = dyn_base

    def val(a, kind="b32"):
        if a in regs:
            return regs[a]
        if a in special:
            return special[a]
        if a in symbols:
            return np.full(nt, symbols[a], np.uint32)
        if a.startswith("0f"):
            return np.full(nt, int(a[2:], 16), np.uint32)
        v = int(a, 0)
        if kind == "b64":
            return np.full(nt, v & 0xFFFFFFFFFFFFFFFF, np.uint64)
        if kind == "b16":
            return np.full(nt, v & 0xFFFF, np.uint16)
        return np.full(nt, v & 0xFFFFFFFF, np.uint32)

    def fv(a):
        return val(a).view(np.float32)

    def addr_of(a):
        inner = a.strip("[]")
        m = re.match(r"(%?\w+)(?:\+(-?\d+))?$", inner)
        base, off = m.group(1), int(m.group(2) or 0)
        if base in regs:
            b = regs[base].astype(np.int64)
        else:
            b = np.full(nt, symbols[base], np.int64)
        return b + off

    def setr(name, value, mask):
        r = regs[name]
        r[mask] = value[mask].astype(r.dtype) if value.dtype != r.dtype else value[mask]

    def setf(name, value, mask):
        regs[name][mask] = value.astype(np.float32).view(np.uint32)[mask]

    def shared_check(addrs, width, what):
        if np.any(addrs % width):
            raise EmuError(f"{func.name}: {what}: misaligned shared access")
        if np.any(addrs < 0) or np.any(addrs + width > smem_size):
            raise EmuError(f"{func.name}: {what}: shared access out of bounds {addrs.max()} of {smem_size}")

    steps = 0
    while True:
        if not alive.any():
            return
        steps += 1
        if steps > max_steps:
            raise EmuError(f"{func.name}: step limit")
        p = pc[alive].min()
        group = alive & (pc == p)
        ins = prog[p]
        g = group
        if ins.pred is not None:
            pr = regs[ins.pred]
            g = group & (~pr if ins.neg else pr)
        op, mods, args = ins.op, ins.mods, ins.args
        nxt = p + 1
        collective = op in ("shfl", "ldmatrix", "mma") or (op == "bar" and mods[0] == "warp")
        if op == "bar" and mods[0] == "sync":
            if not np.array_equal(group, alive):
                raise EmuError(f"{func.name}: bar.sync reached by a subset of the block: {ins.text}")
        if collective:
            for w in range(nt // 32):
                sl = slice(32 * w, 32 * w + 32)
                if alive[sl].any() and not group[sl].all():
                    raise EmuError(f"{func.name}: divergent warp at {ins.text}")
            if ins.pred is not None:
                raise EmuError("predicated collective not supported")
        try:
            if op == "bra":
                target = func.labels[args[0]]
                pc[g] = target
                pc[group & ~g] = nxt
                continue
            if op == "ret":
                alive[g] = False
                pc[group & ~g] = nxt
                continue
            if op == "bar":
                pass
            elif op == "ld" and mods[0] == "param":
                ty, v = pvals[args[1].strip("[]")]
                if ty == "f32":
                    bits = np.float32(v).view(np.uint32)
                    setr(args[0], np.full(nt, bits, np.uint32), g)
                elif ty == "u64":
                    setr(args[0], np.full(nt, v, np.uint64), g)
                else:
                    setr(args[0], np.full(nt, v, np.uint32), g)
            elif op == "cvta":
                setr(args[0], val(args[1]), g)
            elif op == "mov":
                kind = func.regs.get(args[0], "b32")
                if args[1].startswith("{"):
                    raise EmuError("vector mov unsupported")
                setr(args[0], val(args[1], kind), g)
            elif op in ("add", "sub", "mul", "mad", "div", "rem", "min", "max", "and", "or",
                        "shl", "shr", "fma", "sqrt", "rcp", "ex2") and (mods[-1] == "f32"):
                a = [fv(x) for x in args[1:]]
                with np.errstate(all="ignore"):
                    if op == "add":
                        r = a[0] + a[1]
                    elif op == "sub":
                        r = a[0] - a[1]
                    elif op == "mul":
                        r = a[0] * a[1]
                    elif op == "fma":
                        r = (a[0].astype(np.float64) * a[1].astype(np.float64) + a[2].astype(np.float64)).astype(np.float32)
                    elif op == "div":
                        r = a[0] / a[1]
                    elif op == "max":
                        r = np.fmax(a[0], a[1])
                    elif op == "sqrt":
                        r = np.sqrt(a[0])
                    elif op == "rcp":
                        r = np.float32(1.0) / a[0]
                    elif op == "ex2":
                        r = np.exp2(a[0])
                    else:
                        raise EmuError(f"unsupported {ins.text}")
                setf(args[0], r.astype(np.float32), g)
            elif op in ("add", "sub", "mul", "mad", "div", "rem", "min", "max", "and", "or", "shl", "shr"):
                ty = mods[-1]
                if ty in ("s64", "u64", "b64"):
                    a = [val(x, "b64").astype(np.uint64) for x in args[1:]]
                    if op == "add":
                        r = a[0] + a[1]
                    else:
                        raise EmuError(f"unsupported {ins.text}")
                    setr(args[0], r, g)
                elif ty == "pred":
                    a = [regs[x] for x in args[1:]]
                    r = (a[0] & a[1]) if op == "and" else (a[0] | a[1])
                    setr(args[0], r, g)
                else:
                    a = [val(x).astype(np.uint64) for x in args[1:]]
                    if op == "mul" and mods[0] == "wide":
                        setr(args[0], (a[0] * a[1]).astype(np.uint64), g)
                        pc[group] = nxt
                        continue
                    with np.errstate(all="ignore"):
                        if op == "add":
                            r = a[0] + a[1]
                        elif op == "sub":
                            r = a[0] - a[1]
                        elif op == "mul":
                            r = a[0] * a[1]
                        elif op == "mad":
                            r = a[0] * a[1] + a[2]
                        elif op in ("div", "rem"):
                            gg = g.copy()
                            if np.any(a[1][gg] == 0):
                                raise EmuError(f"division by zero: {ins.text}")
                            d = np.where(a[1] == 0, 1, a[1])
                            r = a[0] // d if op == "div" else a[0] % d
                        elif op == "min":
                            r = np.minimum(a[0], a[1])
                        elif op == "max":
                            r = np.maximum(a[0], a[1])
                        elif op == "and":
                            r = a[0] & a[1]
                        elif op == "or":
                            r = a[0] | a[1]
                        elif op == "shl":
                            r = a[0] << a[1]
                        elif op == "shr":
                            r = a[0] >> a[1]
                    setr(args[0], (r & MASK32).astype(np.uint32), g)
            elif op == "setp":
                cmp = mods[0]
                ty = mods[-1]
                if ty == "f32":
                    a, b = fv(args[1]), fv(args[2])
                else:
                    a, b = val(args[1]).astype(np.int64), val(args[2]).astype(np.int64)
                r = {"lt": a < b, "ge": a >= b, "eq": a == b, "ne": a != b, "gt": a > b, "le": a <= b}[cmp]
                if len(mods) == 3:
                    c = regs[args[3]]
                    r = (r & c) if mods[1] == "and" else (r | c)
                setr(args[0], r, g)
            elif op == "cvt":
                if mods[:2] == ["rn", "bf16"]:
                    setr(args[0], f32_to_bf16_bits(fv(args[1])), g)
                elif mods == ["rn", "f32", "u32"]:
                    setf(args[0], val(args[1]).astype(np.float32), g)
                else:
                    raise EmuError(f"unsupported {ins.text}")
            elif op in ("ld", "st"):
                space = mods[0]
                vec = 4 if "v4" in mods else 1
                ty = mods[-1]
                width = {"f32": 4, "u32": 4, "b32": 4, "u16": 2, "b16": 2}[ty]
                if op == "ld":
                    dsts, mem_op = args[0], args[1]
                else:
                    mem_op, dsts = args[0], args[1]
                dl = [x.strip() for x in dsts.strip("{}").split(",")]
                addrs = addr_of(mem_op)
                act = np.nonzero(g)[0]
                if len(act) and np.any(addrs[act] % (width * vec)):
                    raise EmuError(f"{func.name}: misaligned vector access: {ins.text}")
                if len(act):
                    for j in range(vec):
                        aj = addrs[act] + j * width
                        if space == "global":
                            mem.check(aj, width, f"{func.name}: {ins.text}")
                            store = mem.mem
                        else:
                            shared_check(aj, width, ins.text)
                            store = smem
                        if op == "ld":
                            if width == 4:
                                v = store.view(np.uint32)[aj // 4]
                            else:
                                v = store.view(np.uint16)[aj // 2]
                            r = regs[dl[j]]
                            r[act] = v.astype(r.dtype)
                        else:
                            src = val(dl[j])
                            if width == 4:
                                store.view(np.uint32)[aj // 4] = src[act].astype(np.uint32)
                            else:
                                store.view(np.uint16)[aj // 2] = src[act].astype(np.uint16)
            elif op == "shfl":
                src = val(args[1])
                off = int(args[2], 0)
                out = src.copy()
                for w in range(nt // 32):
                    base = 32 * w
                    idx = base + (np.arange(32) ^ off)
                    out[base:base + 32] = src[idx]
                setr(args[0], out, group)
            elif op == "ldmatrix":
                dl = [x.strip() for x in args[0].strip("{}").split(",")]
                addrs = addr_of(args[1])
                shared_check(addrs, 16, ins.text)
                u16 = smem.view(np.uint16)
                for w in range(nt // 32):
                    base = 32 * w
                    for i in range(4):
                        rows = addrs[base + 8 * i: base + 8 * i + 8]
                        out = np.zeros(32, np.uint32)
                        for t in range(32):
                            r, c = t // 4, (t % 4) * 2
                            lo = u16[(rows[r] + 2 * c) // 2]
                            hi = u16[(rows[r] + 2 * c + 2) // 2]
                            out[t] = np.uint32(lo) | (np.uint32(hi) << np.uint32(16))
                        regs[dl[i]][base:base + 32] = out
            elif op == "mma":
                dl = [x.strip() for x in args[0].strip("{}").split(",")]
                al = [x.strip() for x in args[1].strip("{}").split(",")]
                bl = [x.strip() for x in args[2].strip("{}").split(",")]
                cl = [x.strip() for x in args[3].strip("{}").split(",")]
                for w in range(nt // 32):
                    base = 32 * w
                    A = np.zeros((16, 16))
                    B = np.zeros((16, 8))
                    C = np.zeros((16, 8))
                    for t in range(32):
                        gq, cq = t // 4, t % 4
                        def pair(reg):
                            v = int(regs[reg][base + t])
                            return (bf16_bits_to_f32(np.uint16(v & 0xFFFF)).item(),
                                    bf16_bits_to_f32(np.uint16(v >> 16)).item())
                        for (ri, (rr, cc)) in zip(range(4), [(gq, 2 * cq), (gq + 8, 2 * cq), (gq, 2 * cq + 8), (gq + 8, 2 * cq + 8)]):
                            A[rr, cc], A[rr, cc + 1] = pair(al[ri])
                        B[2 * cq, gq], B[2 * cq + 1, gq] = pair(bl[0])
                        B[2 * cq + 8, gq], B[2 * cq + 9, gq] = pair(bl[1])
                        for (ri, (rr, cc)) in zip(range(4), [(gq, 2 * cq), (gq, 2 * cq + 1), (gq + 8, 2 * cq), (gq + 8, 2 * cq + 1)]):
                            C[rr, cc] = regs[cl[ri]][base + t:base + t + 1].view(np.float32)[0]
                    D = (A @ B + C).astype(np.float32)
                    for t in range(32):
                        gq, cq = t // 4, t % 4
                        for (ri, (rr, cc)) in zip(range(4), [(gq, 2 * cq), (gq, 2 * cq + 1), (gq + 8, 2 * cq), (gq + 8, 2 * cq + 1)]):
                            regs[dl[ri]][base + t] = D[rr, cc:cc + 1].view(np.uint32)[0]
            else:
                raise EmuError(f"unsupported instruction {ins.text}")
        except EmuError:
            raise
        except Exception as e:  # noqa: BLE001
            raise EmuError(f"{func.name}: while executing `{ins.text}`: {e!r}") from e
        pc[group] = nxt
