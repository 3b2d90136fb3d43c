#!/usr/bin/env python3
"""Generator of tessera's CUDA kernels: kernels/*.ptx and src/cuda/manifest.rs.

The kernels are written in PTX, in Python, on a small assembler (tools/ptxgen):
registers, labels, parameters and shared memory are allocated by a `Kernel`
object, and each kernel's contract — entry, parameter names and kinds, block
size (`.reqntid`), shared memory, tile sizes — is stated once and written both
into the PTX and into the Rust manifest the host launches through. No CUDA C
and no nvcc are involved. The output is committed; rerun after editing:

    python3 tools/gen_ptx.py          # writes kernels/*.ptx and src/cuda/manifest.rs
    python3 tools/gen_ptx.py --check  # fails if either is stale (cargo test runs it)

Where each kernel is: tools/ptxgen/kernels/<family>.py, whose docstring gives
its thread, register and shared-memory layout (copied into the .ptx file)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ptxgen.asm import module_text  # noqa: E402
from ptxgen.kernels import (attention_fa2, attention_simt, attention_sm90, attention_sm90_f32,  # noqa: E402
                            elementwise, gemm_mma64, gemm_simt, gemm_sm80, gemm_sm90, layer_norm, memory,
                            patchify)
from ptxgen.kernels.attention_common import attention_module  # noqa: E402
from ptxgen.manifest import rust_manifest  # noqa: E402

ROOT = os.environ.get("TESSERA_GEN_ROOT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


# Hopper-only modules: wgmma and TMA need the architecture-specific target.
SM90_MODULES = {"linear_sm90", "linear_sm90_f32", "attention_sm90", "attention_sm90_f32"}
SM90 = {"version": "8.0", "target": "sm_90a", "dyn_align": 128}


def doc_of(mod):
    return (mod.__doc__ or "").strip("\n")


def modules():
    """[(module name, title, [Kernel])], in the order of the manifest. Modules
    in SM90 are written for sm_90a (PTX 8.0); the others for sm_80."""
    out = elementwise.modules() + layer_norm.modules() + memory.modules()
    out.append(("linear", "linear_*: C = x·Wᵀ with the fused bias / GELU / residual epilogue.\n\n"
                + doc_of(gemm_sm80) + "\n\n" + doc_of(gemm_simt) + "\n\n" + doc_of(gemm_mma64),
                gemm_sm80.kernels() + [gemm_simt.gemm_f32("linear"), gemm_mma64.gemm_bf16_any("linear")]))
    out.append(("linear_sm90", "linear_bf16_sm90: C = x*W^T on Hopper (wgmma, TMA, mbarriers).\n\n"
                + doc_of(gemm_sm90), gemm_sm90.kernels("bf16")))
    out.append(("linear_sm90_f32", "linear_f32_sm90: C = x*W^T in f32 on Hopper (3xTF32 wgmma, TMA, mbarriers).\n\n"
                + doc_of(gemm_sm90), gemm_sm90.kernels("f32")))
    out.append(("patch_embed", "patch_embed_*: implicit-GEMM patchify + bias + position; A rows are\n"
                "gathered from the pixels. patchify_*: the patches as a matrix, for the linear GEMMs.\n\n"
                + doc_of(gemm_simt) + "\n\n" + doc_of(gemm_mma64) + "\n\n" + doc_of(patchify),
                [gemm_simt.gemm_f32("patch"), gemm_mma64.gemm_bf16_any("patch")] + patchify.kernels()))
    for dt in ("bf16", "f32"):
        out.append((attention_module(dt), f"attention_{dt}*: fused multi-head attention, {dt}.\n\n"
                    + doc_of(attention_fa2) + "\n\n" + doc_of(attention_simt),
                    attention_fa2.kernels(dt) + attention_simt.kernels(dt)))
    out.append(("attention_sm90", "attention_bf16_sm90_*: fused multi-head attention on Hopper (wgmma, TMA).\n\n"
                + doc_of(attention_sm90), attention_sm90.kernels()))
    out.append(("attention_sm90_f32", "attention_f32_sm90_*: fused multi-head attention in f32 on Hopper\n"
                "(3xTF32 wgmma, TMA).\n\n" + doc_of(attention_sm90_f32), attention_sm90_f32.kernels()))
    return out


ASCII = {"·": "*", "²": "^2", "³": "^3", "−": "-", "√": "sqrt", "∞": "inf", "Σ": "sum",
         "→": "->", "↔": "<->", "←": "<-", "≥": ">=", "≤": "<=", "α": "alpha", "×": "x", "ᵀ": "^T",
         "π": "pi", "…": "...", "≠": "!=", "⁻": "^-", "²²": "^22", "⌈": "ceil(", "⌉": ")",
         "≈": "~", "±": "+-", "—": "-", "–": "-"}


def to_ascii(text):
    """ptxas (and the driver's JIT) accept only ASCII, comments included."""
    for a, b in ASCII.items():
        text = text.replace(a, b)
    bad = sorted({c for c in text if ord(c) > 127})
    if bad:
        raise SystemExit(f"non-ASCII characters left in PTX: {bad}")
    return text


def shared_constants():
    """The constants the host and several kernels agree on, stated once (here)."""
    from ptxgen.kernels.gemm_common import FLAG_BIAS, FLAG_GELU, FLAG_RES
    return [
        ("LINEAR_FLAG_BIAS", FLAG_BIAS, "`flags` bit of the linear kernels: add `bias`."),
        ("LINEAR_FLAG_GELU", FLAG_GELU, "`flags` bit of the linear kernels: GELU (tanh) after the bias."),
        ("LINEAR_FLAG_RES", FLAG_RES, "`flags` bit of the linear kernels: add `res` last."),
    ]


def outputs():
    mods = modules()
    files = {}
    for name, title, kernels in mods:
        dyn = any(k.dyn_smem or k.max_dyn_smem for k in kernels)
        opts = SM90 if name in SM90_MODULES else {}
        files[os.path.join("kernels", f"{name}.ptx")] = to_ascii(module_text(title, kernels, dyn, **opts))
    files[os.path.join("src", "cuda", "manifest.rs")] = rust_manifest(
        [(n, ks) for n, _, ks in mods], shared_constants())
    return files


def main():
    check = "--check" in sys.argv
    stale = []
    for rel, text in outputs().items():
        path = os.path.join(ROOT, rel)
        if check:
            try:
                with open(path) as f:
                    if f.read() != text:
                        stale.append(rel)
            except FileNotFoundError:
                stale.append(rel)
        else:
            with open(path, "w") as f:
                f.write(text)
    if stale:
        print("stale:", ", ".join(stale))
        sys.exit(1)


if __name__ == "__main__":
    main()
