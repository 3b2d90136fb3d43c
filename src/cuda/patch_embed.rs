//! Patch embedding on CUDA: kernels/patch_embed.ptx, the tiled GEMMs of
//! kernels/linear.ptx with the patches gathered from the pixels as the A operand
//! and bias + position as the epilogue.

use super::launch::Launcher;
use super::linear::grid2d;
use super::manifest as m;
use super::Cuda;
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
    const OP: &str = "patch_embed";
    let mm = index32(OP, "B·N", d.batch * d.tokens())?;
    let n = index32(OP, "D", d.hidden)?;
    let k = index32(OP, "C·P·P", d.patch_len())?;
    index32(OP, "pixels", d.batch * d.channels * d.image * d.image)?;
    index32(OP, "out", d.batch * d.tokens() * d.hidden)?;
    let args = m::PatchEmbedArgs {
        x: a.pixels,
        w: a.weight,
        bias: a.bias,
        res: a.position,
        out: a.out,
        m: mm,
        n,
        k,
        c: index32(OP, "channels", d.channels)?,
        i: index32(OP, "image", d.image)?,
        p: index32(OP, "patch", d.patch)?,
        g: index32(OP, "grid", d.grid())?,
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
    dev.launch(OP, spec, grid2d(OP, mm, n, tm, tn)?, 0, args)
}
