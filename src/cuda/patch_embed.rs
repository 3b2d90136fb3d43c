//! Patch embedding on CUDA: kernels/patch_embed.ptx, the tiled GEMMs of
//! kernels/linear.ptx with the patches gathered from the pixels as the A operand
//! and bias + position as the epilogue.

use super::linear::grid2d;
use super::manifest as m;
use super::Cuda;
use crate::element::{DType, Element};
use crate::error::Result;
use crate::ops::{index32, PatchEmbedArgs};

pub(super) fn patch_embed<T: Element>(dev: &Cuda, a: PatchEmbedArgs<'_, T, Cuda>) -> Result<()> {
    const OP: &str = "patch_embed";
    let d = a.dims;
    let mm = index32(OP, "B·N", d.batch * d.tokens())?;
    let n = index32(OP, "D", d.hidden)?;
    let k = index32(OP, "C·P·P", d.patch_len())?;
    index32(OP, "pixels", d.batch * d.channels * d.image * d.image)?;
    index32(OP, "out", d.batch * d.tokens() * d.hidden)?;
    let args = m::PatchEmbedArgs {
        x: &a.pixels.buf,
        w: &a.weight.buf,
        bias: &a.bias.buf,
        res: &a.position.buf,
        out: &mut a.out.buf,
        m: mm,
        n,
        k,
        c: index32(OP, "channels", d.channels)?,
        i: index32(OP, "image", d.image)?,
        p: index32(OP, "patch", d.patch)?,
        g: index32(OP, "grid", d.grid())?,
    };
    let (spec, tm, tn) = match T::DTYPE {
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
