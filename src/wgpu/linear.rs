//! Linear layers on wgpu: shaders/linear.wgsl on the tiling of shaders/gemm.wgsl,
//! bias, GELU and residual fused in the epilogue.

use super::launch::{u32_of, uniform};
use super::shaders::Shader;
use super::Wgpu;
use crate::element::Element;
use crate::error::Result;
use crate::ops::{Activation, LinearArgs};

uniform! {
    /// `Params` of shaders/linear.wgsl.
    pub(super) struct LinearParams {
        m: u32,
        n: u32,
        k: u32,
        tiles_m: u32,
        tiles_n: u32,
        act: u32,
        has_bias: u32,
        has_res: u32,
    }
    pad 0
}

pub(super) fn linear<T: Element>(dev: &Wgpu, a: LinearArgs<'_, T, Wgpu>) -> Result<()> {
    const OP: &str = "linear";
    let d = a.dims;
    let p = dev.pipeline::<LinearParams>(Shader::Linear, T::DTYPE, T::DTYPE, "main")?;
    let (tile_m, tile_n) = (
        p.constant("TILE_M")? as usize,
        p.constant("TILE_N")? as usize,
    );
    let (tiles_m, tiles_n) = (d.rows.div_ceil(tile_m), d.out_features.div_ceil(tile_n));
    u32_of(OP, "x", d.rows * d.in_features)?;
    u32_of(OP, "weight", d.out_features * d.in_features)?;
    u32_of(OP, "out", d.rows * d.out_features)?;
    let params = LinearParams {
        m: u32_of(OP, "rows", d.rows)?,
        n: u32_of(OP, "out_features", d.out_features)?,
        k: u32_of(OP, "in_features", d.in_features)?,
        tiles_m: u32_of(OP, "row tiles", tiles_m)?,
        tiles_n: u32_of(OP, "column tiles", tiles_n)?,
        act: match d.activation {
            Activation::None => 0,
            Activation::GeluTanh => 1,
        },
        has_bias: a.bias.is_some().into(),
        has_res: a.residual.is_some().into(),
        _pad: Default::default(),
    };
    // Absent operands are bound to `x` (read-only, never read: the flags are off).
    let bias = a.bias.map_or(&a.x.buffer, |b| &b.buffer);
    let residual = a.residual.map_or(&a.x.buffer, |r| &r.buffer);
    dev.launch(
        OP,
        &params,
        &[
            ("x", &a.x.buffer),
            ("w", &a.weight.buffer),
            ("bias", bias),
            ("res", residual),
            ("dst", &a.out.buffer),
        ],
        &[(&p, (tiles_m * tiles_n) as u64)],
    )
}
