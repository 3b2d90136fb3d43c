"""A small PTX assembler: kernels are written as PTX instructions, but registers,
labels, parameters and shared memory are allocated by a `Kernel` object, so no
kernel names a register by hand, and everything the host must know about a
kernel (entry, parameter names and kinds, block size, shared memory, tile
sizes) is declared once here and written out both as PTX (`.reqntid` included)
and as the Rust manifest the host launches through (see `manifest.py`).

Usage:

    k = Kernel("add", "add_f32", threads=256, signature="Add",
               params=[In("a"), In("b"), Out("out"), U32("n")])
    a, n = k.param("a"), k.param("n")        # loaded (pointers cvta'd) on first use
    i = k.reg("u32", "i")                    # a fresh virtual register %i
    k(f"mad.lo.u32 {i}, %ctaid.x, %ntid.x, %tid.x;")
    loop = k.label("loop")                   # a fresh label $loop
    k.place(loop)

Registers print as their names, so f-strings compose instructions. Typed
helpers for common sequences (element loads and stores, address arithmetic,
warp and block reductions, loops) live in `lib.py`; tensor-core fragments in
`frag.py`.
"""

from dataclasses import dataclass, field

PTX_VERSION = "7.8"
PTX_TARGET = "sm_80"

# Register declaration types: the PTX type each kind is declared with.
REG_DECL = {
    "pred": ".pred",
    "b16": ".b16",
    "u16": ".u16",
    "b32": ".b32",
    "u32": ".u32",
    "s32": ".s32",
    "f32": ".f32",
    "b64": ".b64",
    "u64": ".u64",
}


# PTX special registers: a virtual register may not take these names.
SPECIAL = {"tid", "ntid", "laneid", "warpid", "nwarpid", "ctaid", "nctaid", "smid", "nsmid",
           "gridid", "clock", "clock64", "lanemask_eq", "lanemask_le", "lanemask_lt",
           "lanemask_ge", "lanemask_gt", "pm0", "envreg0", "globaltimer"}


class Reg:
    """A virtual register: prints as its name (`%acc_3`)."""

    __slots__ = ("name", "ty")

    def __init__(self, name, ty):
        self.name, self.ty = name, ty

    def __str__(self):
        return self.name

    def __format__(self, spec):
        return format(self.name, spec)

    def __repr__(self):
        return f"Reg({self.name}: {self.ty})"


@dataclass(frozen=True)
class Param:
    """A kernel parameter. `kind` is one of:
    in   a pointer the kernel only reads;
    opt  a pointer the kernel reads only when a flag says so (may be null);
    out  a pointer the kernel writes (and may read);
    u32, f32  a scalar;
    tmap a TMA tensor map (128 opaque bytes, passed by value) describing the
         2-D matrix of `dtype` (bf16 or f32) of pointer parameter `of` ([rows,
         cols], cols contiguous), read in boxes of `box` = (rows, cols) elements
         with the 128-byte swizzle or none (`swizzle`); the host encodes it from
         that parameter's pointer."""

    name: str
    kind: str
    of: str = ""
    box: tuple = ()
    swizzle: int = 128
    dtype: str = "bf16"

    @property
    def elem_bytes(self):
        return {"bf16": 2, "f32": 4}[self.dtype]

    @property
    def ptx_type(self):
        return {"in": "u64", "opt": "u64", "out": "u64", "u32": "u32", "f32": "f32",
                "tmap": "tmap"}[self.kind]

    def decl(self):
        if self.kind == "tmap":
            return f".param .align 64 .b8 p_{self.name}[128]"
        return f".param .{self.ptx_type} p_{self.name}"


def In(name):  # noqa: N802 - reads like a declaration
    return Param(name, "in")


def Opt(name):  # noqa: N802
    return Param(name, "opt")


def Out(name):  # noqa: N802
    return Param(name, "out")


def U32(name):  # noqa: N802
    return Param(name, "u32")


def F32(name):  # noqa: N802
    return Param(name, "f32")


def TMap(name, of, box, swizzle=128, dtype="bf16"):  # noqa: N802
    """A tensor map over pointer parameter `of` (elements of `dtype`), boxes of
    `box` = (rows, cols) elements, with the 128-byte swizzle (`swizzle` 128;
    the box is then 128 bytes wide: 64 bf16, 32 f32) or none (0; rows of the box
    land at a pitch of its width)."""
    assert swizzle in (0, 128) and dtype in ("bf16", "f32")
    return Param(name, "tmap", of, tuple(box), swizzle, dtype)


@dataclass
class Kernel:
    """One `.entry`. `module` is the kernels/NAME.ptx file it goes to, `signature`
    the name of the Rust argument struct (entries with the same parameters share
    one), `threads` the block size (written as `.reqntid`)."""

    module: str
    name: str
    threads: int
    params: list
    signature: str
    doc: str = ""
    # Dynamic shared memory: a fixed byte count, or None when the host computes it
    # (then `dyn_smem_doc` says how) and `max_dyn_smem` bounds it.
    dyn_smem: int = 0
    dyn_smem_doc: str = ""
    max_dyn_smem: int = 0
    consts: dict = field(default_factory=dict)
    # CTAs per thread-block cluster (along x): above 1 the entry declares
    # `.reqnctapercluster` and must be launched in clusters of that size.
    cluster: int = 1
    # Filled while the body is written.
    lines: list = field(default_factory=list)
    regs: list = field(default_factory=list)
    shared_decls: list = field(default_factory=list)
    static_smem: int = 0
    _names: dict = field(default_factory=dict)
    _loaded: dict = field(default_factory=dict)

    def __post_init__(self):
        seen = set()
        for p in self.params:
            if p.name in seen:
                raise ValueError(f"{self.name}: parameter {p.name} twice")
            if p.kind == "tmap" and next((q.kind for q in self.params if q.name == p.of), None) not in ("in", "out"):
                raise ValueError(f"{self.name}: tensor map {p.name} of {p.of}, not an input or output pointer")
            seen.add(p.name)
        if self.threads % 32:
            raise ValueError(f"{self.name}: {self.threads} threads is not whole warps")

    # -- names ------------------------------------------------------------------

    def _fresh(self, stem, prefix):
        stem = stem.replace(".", "_")
        if prefix == "%" and stem in SPECIAL:
            stem += "_"
        n = self._names.get((prefix, stem), 0)
        self._names[(prefix, stem)] = n + 1
        return f"{prefix}{stem}" if n == 0 else f"{prefix}{stem}_{n}"

    def reg(self, ty, stem="t"):
        """A fresh register of type `ty` (see REG_DECL), named after `stem`."""
        if ty not in REG_DECL:
            raise ValueError(f"unknown register type {ty}")
        r = Reg(self._fresh(stem, "%"), ty)
        self.regs.append(r)
        return r

    def regs_n(self, ty, stem, n):
        return [self.reg(ty, f"{stem}{i}") for i in range(n)]

    def label(self, stem):
        """A fresh label name (place it with `place`)."""
        return self._fresh(stem, "$")

    def place(self, label):
        self.lines.append(f"{label}:")

    def const(self, name, value):
        """A tile size or other constant the host needs: written to the manifest."""
        self.consts[name] = int(value)
        return int(value)

    def shared(self, stem, nbytes, align=16):
        """A static shared array of `nbytes`; returns its symbol."""
        name = self._fresh(stem, "s_")
        self.static_smem = (self.static_smem + align - 1) // align * align + nbytes
        self.shared_decls.append(f".shared .align {align} .b8 {name}[{nbytes}];")
        return name

    # -- instructions -----------------------------------------------------------

    def __call__(self, text):
        """Emit instruction lines (a `;`-terminated instruction per line)."""
        for line in text.strip("\n").split("\n"):
            line = line.strip()
            if line:
                self.lines.append(line)

    def comment(self, text):
        for line in text.split("\n"):
            self.lines.append(f"// {line}")

    def param(self, name):
        """The value of parameter `name` in a register, loaded on first use;
        pointers are converted to global addresses."""
        if name in self._loaded:
            return self._loaded[name]
        p = next((p for p in self.params if p.name == name), None)
        if p is None:
            raise KeyError(f"{self.name}: no parameter {name}")
        if p.kind == "tmap":
            # The generic address of the by-value tensor map (what TMA reads).
            r = self.reg("b64", name)
            self(f"mov.u64 {r}, p_{name};")
            self(f"cvta.param.u64 {r}, {r};")
        elif p.ptx_type == "u64":
            r = self.reg("b64", name)
            self(f"ld.param.u64 {r}, [p_{name}];")
            self(f"cvta.to.global.u64 {r}, {r};")
        else:
            r = self.reg(p.ptx_type, name)
            self(f"ld.param.{p.ptx_type} {r}, [p_{name}];")
        self._loaded[name] = r
        return r

    # -- output -----------------------------------------------------------------

    def ptx(self):
        params = ",\n\t".join(p.decl() for p in self.params)
        out = []
        if self.doc:
            out += [f"// {line}" if line else "//" for line in self.doc.strip("\n").split("\n")]
        out.append(f".visible .entry {self.name}(\n\t{params})")
        out.append(f".reqntid {self.threads}, 1, 1")
        if any(line.startswith("setmaxnreg") for line in self.lines):
            # A kernel that moves registers between warpgroups: one block an SM,
            # so ptxas allots the most a thread may hold (65536 / threads, in 8s)
            # at entry. Without it ptxas may allot fewer (what the code needs, not
            # a multiple of 8), then ignores every setmaxnreg (C7508) and
            # serialises the wgmma for want of registers (C7512).
            out.append(".minnctapersm 1")
        if self.cluster > 1:
            out.append(".explicitcluster")
            out.append(f".reqnctapercluster {self.cluster}, 1, 1")
        out.append("{")
        by_ty = {}
        for r in self.regs:
            by_ty.setdefault(r.ty, []).append(r.name)
        for ty, names in by_ty.items():
            for i in range(0, len(names), 8):
                out.append(f"\t.reg {REG_DECL[ty]} {', '.join(names[i:i + 8])};")
        for d in self.shared_decls:
            out.append(f"\t{d}")
        for line in self.lines:
            out.append(line if line.endswith(":") else f"\t{line}")
        out.append("\tret;")
        out.append("}")
        return "\n".join(out) + "\n"


def module_text(title, kernels, uses_dyn_smem=False, version=PTX_VERSION, target=PTX_TARGET,
                dyn_align=16):
    """A .ptx module: header, title comment, the extern shared array when any
    kernel uses dynamic shared memory, then the entries."""
    head = (
        "//\n// Generated by tools/gen_ptx.py (tools/ptxgen); do not edit: edit the generator\n"
        "// and rerun it.\n//\n"
        f".version {version}\n.target {target}\n.address_size 64\n\n"
    )
    head += "".join(f"// {line}\n" if line else "//\n" for line in title.strip("\n").split("\n"))
    if uses_dyn_smem:
        head += f"\n.extern .shared .align {dyn_align} .b8 dyn_smem[];\n"
    return head + "".join("\n" + k.ptx() for k in kernels)
