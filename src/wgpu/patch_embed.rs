//! Patch embedding on wgpu: shaders/patch_embed.wgsl, an implicit GEMM on the
//! shared tiling of shaders/gemm.wgsl.

use super::launch::{u32_of, uniform};
use super::shaders::Shader;
use super::Wgpu;
use crate::element::Element;
use crate::error::Result;
use crate::ops::PatchEmbedArgs;

uniform! {
    /// `Params` of shaders/patch_embed.wgsl.
    pub(super) struct PatchEmbedParams {
        m: u32,
        n: u32,
        k: u32,
        tiles_m: u32,
        tiles_n: u32,
        channels: u32,
        image: u32,
        psize: u32,
        grid: u32,
        tokens: u32,
    }
    pad 2
}

pub(super) fn patch_embed<T: Element>(dev: &Wgpu, a: PatchEmbedArgs<'_, T, Wgpu>) -> Result<()> {
    const OP: &str = "patch_embed";
    let d = a.dims;
    let p = dev.pipeline::<PatchEmbedParams>(Shader::PatchEmbed, T::DTYPE, T::DTYPE, "main")?;
    let (tile_m, tile_n) = (
        p.constant("TILE_M")? as usize,
        p.constant("TILE_N")? as usize,
    );
    let m = d.batch * d.tokens();
    let (tiles_m, tiles_n) = (m.div_ceil(tile_m), d.hidden.div_ceil(tile_n));
    u32_of(OP, "pixels", d.batch * d.channels * d.image * d.image)?;
    u32_of(OP, "out", m * d.hidden)?;
    let params = PatchEmbedParams {
        m: u32_of(OP, "rows", m)?,
        n: u32_of(OP, "hidden", d.hidden)?,
        k: u32_of(OP, "patch length", d.patch_len())?,
        tiles_m: u32_of(OP, "row tiles", tiles_m)?,
        tiles_n: u32_of(OP, "column tiles", tiles_n)?,
        channels: u32_of(OP, "channels", d.channels)?,
        image: u32_of(OP, "image", d.image)?,
        psize: u32_of(OP, "patch", d.patch)?,
        grid: u32_of(OP, "grid", d.grid())?,
        tokens: u32_of(OP, "tokens", d.tokens())?,
        _pad: Default::default(),
    };
    dev.launch(
        OP,
        &params,
        &[
            ("px", &a.pixels.buffer),
            ("w", &a.weight.buffer),
            ("bias", &a.bias.buffer),
            ("pos", &a.position.buffer),
            ("dst", &a.out.buffer),
        ],
        &[(&p, (tiles_m * tiles_n) as u64)],
    )
}
