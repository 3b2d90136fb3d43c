//! Patch embedding on CUDA (kernels/patch_embed.ptx):
//! - where the linear layers multiply on tensor cores (bf16; f32 in 3xTF32) and
//!   D is a multiple of 16 bytes, in two steps: `patchify_*` copies the
//!   patches into a scratch matrix [B·N, KP] (K = C·P·P padded with zeros to
//!   KP, a multiple of 16 bytes, as TMA and cp.async need; the weight padded
//!   the same way where K is not, as at patch 14), then the linear layers'
//!   GEMM multiplies it — the wgmma one on Hopper, the sm_80 one elsewhere —
//!   with the bias in its epilogue and the position embedding as a residual
//!   that repeats every N rows (`res_rows`). The copy moves about as many
//!   bytes as the pixels; the fused kernels below multiply at a fraction of
//!   the GEMMs' rate (H100, BENCHMARKS.md: 0.08× cuBLAS at SigLIP-base batch
//!   32);
//! - otherwise (the CUDA-core f32 setting, misaligned buffers, other widths),
//!   one fused kernel: the tiled GEMMs of kernels/linear.ptx with the patches
//!   gathered from the pixels as the A operand and bias + position as the
//!   epilogue.

use super::launch::{grid_stride_blocks, Launcher};
use super::linear::{self, grid2d};
use super::manifest as m;
use super::{Cuda, F32Gemm, GemmPath};
use crate::element::{DType, Element};
use crate::error::Result;
use crate::ops::{index32, PatchEmbedArgs, PatchEmbedDims};

pub(super) fn patch_embed<T: Element>(dev: &Cuda, a: PatchEmbedArgs<'_, T, Cuda>) -> Result<()> {
    let o = Operands {
        pixels: &a.pixels.buf,
        weight: &a.weight.buf,
        bias: &a.bias.buf,
        position: &a.position.buf,
        out: &mut a.out.buf,
    };
    launch(dev, T::DTYPE, o, a.dims)
}

/// Patch embedding's buffers on a [`Launcher`].
pub(super) struct Operands<'a, B> {
    pub pixels: &'a B,
    pub weight: &'a B,
    pub bias: &'a B,
    pub position: &'a B,
    pub out: &'a mut B,
}

/// Patch embedding of element type `dtype` over `a`, sized by `d` (checked by
/// the op's front), launched on `dev`.
pub(super) fn launch<L: Launcher>(
    dev: &L,
    dtype: DType,
    a: Operands<'_, L::Buf>,
    d: PatchEmbedDims,
) -> Result<()> {
    let s = Sizes {
        m: index32(OP, "B·N", d.batch * d.tokens())?,
        n: index32(OP, "D", d.hidden)?,
        k: index32(OP, "C·P·P", d.patch_len())?,
        c: index32(OP, "channels", d.channels)?,
        i: index32(OP, "image", d.image)?,
        p: index32(OP, "patch", d.patch)?,
        g: index32(OP, "grid", d.grid())?,
    };
    index32(OP, "pixels", d.batch * d.channels * d.image * d.image)?;
    index32(OP, "out", d.batch * d.tokens() * d.hidden)?;
    if let Some((gemm, kp)) = gemm_of(dev, dtype, &a, d) {
        return launch_gemm(dev, dtype, a, d, s, gemm, kp);
    }
    let args = m::PatchEmbedArgs {
        x: a.pixels,
        w: a.weight,
        bias: a.bias,
        res: a.position,
        out: a.out,
        m: s.m,
        n: s.n,
        k: s.k,
        c: s.c,
        i: s.i,
        p: s.p,
        g: s.g,
    };
    let (spec, tm, tn) = match dtype {
        DType::F32 => (
            &m::patch_embed_f32::SPEC,
            m::patch_embed_f32::TILE_M,
            m::patch_embed_f32::TILE_N,
        ),
        DType::BF16 => (
            &m::patch_embed_bf16::SPEC,
            m::patch_embed_bf16::TILE_M,
            m::patch_embed_bf16::TILE_N,
        ),
    };
    dev.launch(OP, spec, grid2d(OP, s.m, s.n, tm, tn)?, 0, args)
}

const OP: &str = "patch_embed";

/// A patch embedding's sizes as its kernels take them (checked to fit u32):
/// rows B·N, width D, patch length C·P·P, and the geometry C, I, P, G.
#[derive(Clone, Copy)]
struct Sizes {
    m: u32,
    n: u32,
    k: u32,
    c: u32,
    i: u32,
    p: u32,
    g: u32,
}

/// Elements per thread of `patchify_*` (one 16-byte store), from the manifest.
fn patchify_vec(dtype: DType) -> usize {
    match dtype {
        DType::F32 => m::patchify_f32::VEC as usize,
        DType::BF16 => m::patchify_bf16::VEC as usize,
    }
}

/// The tensor-core GEMM that multiplies the patches.
#[derive(Clone, Copy)]
enum Gemm {
    /// The wgmma GEMM (`linear::sm90_launch`).
    Sm90,
    /// The sm_80 GEMM of the element type.
    Sm80(&'static linear::Sm80Gemm),
}

/// The GEMM and the padded patch length KP where patch embedding runs as
/// patchify + GEMM (see the module's docs), else `None`: the linear layers'
/// tensor-core path (f32 only in 3xTF32), D a multiple of the vector (the
/// GEMM's N), the operands the GEMM reads directly 16-byte aligned, and at
/// least one row and one column of patches.
fn gemm_of<L: Launcher>(
    dev: &L,
    dtype: DType,
    a: &Operands<'_, L::Buf>,
    d: PatchEmbedDims,
) -> Option<(Gemm, usize)> {
    let v = patchify_vec(dtype);
    let fits = d.batch * d.tokens() > 0
        && d.patch_len() > 0
        && d.hidden.is_multiple_of(v)
        && [a.bias, a.position, &*a.out]
            .into_iter()
            .all(|b| dev.aligned16(b));
    let hopper = dev.gemm_path() == GemmPath::Sm90;
    let gemm = match dtype {
        _ if !fits => return None,
        DType::BF16 if hopper => Gemm::Sm90,
        DType::BF16 => Gemm::Sm80(&linear::SM80_BF16),
        DType::F32 if dev.f32_gemm() != F32Gemm::Tf32x3 => return None,
        DType::F32 if hopper && dev.max_smem() >= linear::F32_SM90_SMEM => Gemm::Sm90,
        DType::F32 => Gemm::Sm80(&linear::SM80_F32),
    };
    Some((gemm, d.patch_len().next_multiple_of(v)))
}

/// Patch embedding as patchify + `gemm` (see the module's docs), the patches
/// `kp` wide.
fn launch_gemm<L: Launcher>(
    dev: &L,
    dtype: DType,
    a: Operands<'_, L::Buf>,
    d: PatchEmbedDims,
    s: Sizes,
    gemm: Gemm,
    kp: usize,
) -> Result<()> {
    let es = dtype.size();
    let rows = d.batch * d.tokens();
    let kp32 = index32(OP, "KP", kp)?;
    index32(OP, "patches", rows * kp)?;
    index32(OP, "padded weight", d.hidden * kp)?;
    let spec = match dtype {
        DType::F32 => &m::patchify_f32::SPEC,
        DType::BF16 => &m::patchify_bf16::SPEC,
    };
    let blocks = |rows: usize| grid_stride_blocks(rows * kp / patchify_vec(dtype), spec.threads);
    // The weight [D, C, P, P] is a batch of D one-patch images.
    let pad_weight = kp != d.patch_len() || !dev.aligned16(a.weight);
    // The position embedding's rows: the tokens of an image, G·G.
    let res_rows = s.g * s.g;
    let mut multiply = move |patches: &L::Buf, weight: &L::Buf| {
        let args = m::LinearArgs {
            x: patches,
            w: weight,
            bias: Some(a.bias),
            res: Some(a.position),
            out: a.out,
            m: s.m,
            n: s.n,
            k: kp32,
            flags: m::LINEAR_FLAG_BIAS | m::LINEAR_FLAG_RES,
            res_rows,
        };
        match gemm {
            Gemm::Sm90 => linear::sm90_launch(OP, dev, dtype, linear::sm90_args(args)),
            // No split-K: the scratch buffers are taken (the patches' K is short).
            Gemm::Sm80(g) => linear::sm80_gemm(OP, dev, g, args, false),
        }
    };
    let patchify = |src: &L::Buf, out: &mut L::Buf, rows: usize, image: u32, grid: u32| {
        let args = m::PatchifyArgs {
            x: src,
            out,
            rows: index32(OP, "rows", rows)?,
            kp: kp32,
            k: s.k,
            c: s.c,
            i: image,
            p: s.p,
            g: grid,
        };
        dev.launch(OP, spec, (blocks(rows), 1, 1), 0, args)
    };
    if pad_weight {
        dev.with_scratch([rows * kp * es, d.hidden * kp * es], |[patches, weight]| {
            patchify(a.pixels, patches, rows, s.i, s.g)?;
            patchify(a.weight, weight, d.hidden, s.p, 1)?;
            multiply(patches, weight)
        })
    } else {
        dev.with_scratch([rows * kp * es], |[patches]| {
            patchify(a.pixels, patches, rows, s.i, s.g)?;
            multiply(patches, a.weight)
        })
    }
}
