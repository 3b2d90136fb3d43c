//! Layer norm and RMS norm on wgpu: shaders/layer_norm.wgsl, one workgroup per row.

use super::launch::{u32_of, uniform};
use super::shaders::Shader;
use super::Wgpu;
use crate::element::Element;
use crate::error::Result;
use crate::ops::{LayerNormArgs, NormKind};

uniform! {
    /// `Params` of shaders/layer_norm.wgsl (`rms`: 1 for RMS norm, no mean and
    /// no bias; 0 for layer norm).
    pub(super) struct LayerNormParams {
        rows: u32,
        cols: u32,
        eps: f32,
        rms: u32,
    }
    pad 0
}

pub(super) fn layer_norm<T: Element>(dev: &Wgpu, a: LayerNormArgs<'_, T, Wgpu>) -> Result<()> {
    const OP: &str = "layer_norm";
    let d = a.dims;
    u32_of(OP, "x", d.rows * d.cols)?;
    let params = LayerNormParams {
        rows: u32_of(OP, "rows", d.rows)?,
        cols: u32_of(OP, "cols", d.cols)?,
        eps: d.eps,
        rms: u32::from(d.kind == NormKind::RmsNorm),
        _pad: Default::default(),
    };
    // RMS norm has no bias: the binding holds the weight, which the shader ignores.
    let bias = a.bias.unwrap_or(a.weight);
    let p = dev.pipeline::<LayerNormParams>(Shader::LayerNorm, T::DTYPE, T::DTYPE, "main")?;
    dev.launch(
        OP,
        &params,
        &[
            ("x", &a.x.buffer),
            ("w", &a.weight.buffer),
            ("b", &bias.buffer),
            ("dst", &a.out.buffer),
        ],
        &[(&p, d.rows as u64)],
    )
}
