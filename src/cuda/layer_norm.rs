//! Layer norm and RMS norm on CUDA: kernels/layer_norm.ptx, one block per row.

use super::manifest as m;
use super::Cuda;
use crate::element::{DType, Element};
use crate::error::Result;
use crate::ops::{index32, LayerNormArgs, NormKind};

pub(super) fn layer_norm<T: Element>(dev: &Cuda, a: LayerNormArgs<'_, T, Cuda>) -> Result<()> {
    const OP: &str = "layer_norm";
    let d = a.dims;
    let rows = index32(OP, "rows", d.rows)?;
    let cols = index32(OP, "cols", d.cols)?;
    index32(OP, "x", d.rows * d.cols)?;
    let spec = match T::DTYPE {
        DType::F32 => &m::layer_norm_f32::SPEC,
        DType::BF16 => &m::layer_norm_bf16::SPEC,
    };
    // Rows past the grid's x limit continue in y (the kernel's row = y·GRID_X + x).
    let gx = m::layer_norm_f32::GRID_X;
    let grid = (rows.min(gx), rows.div_ceil(gx), 1);
    // RMS norm has no bias: the parameter holds the weight, which the kernel ignores.
    let bias = a.bias.unwrap_or(a.weight);
    let args = m::LayerNormArgs {
        x: &a.x.buf,
        w: &a.weight.buf,
        b: &bias.buf,
        out: &mut a.out.buf,
        rows,
        cols,
        eps: d.eps,
        rms: u32::from(d.kind == NormKind::RmsNorm),
    };
    dev.launch(OP, spec, grid, 0, args)
}
