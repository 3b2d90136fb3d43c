//! Layer norm and RMS norm on CUDA (kernels/layer_norm.ptx): `layer_norm_rows_*`,
//! one warp per row held in registers with 16-byte accesses, where the row fits
//! (cols a multiple of the vector, at most `MAX_COLS`) and every buffer is
//! 16-byte aligned; else `layer_norm_*`, one block per row, any shape.

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
    // RMS norm has no bias: the parameter holds the weight, which the kernel ignores.
    let bias = a.bias.unwrap_or(a.weight);
    // Per dtype: the block-a-row kernel, the warp-a-row one and the rows it takes.
    let (block_spec, rows_spec, vec, max_cols) = match T::DTYPE {
        DType::F32 => (
            &m::layer_norm_f32::SPEC,
            &m::layer_norm_rows_f32::SPEC,
            m::layer_norm_rows_f32::VEC,
            m::layer_norm_rows_f32::MAX_COLS,
        ),
        DType::BF16 => (
            &m::layer_norm_bf16::SPEC,
            &m::layer_norm_rows_bf16::SPEC,
            m::layer_norm_rows_bf16::VEC,
            m::layer_norm_rows_bf16::MAX_COLS,
        ),
    };
    let vectorised = cols > 0
        && cols % vec == 0
        && cols <= max_cols
        && [&a.x.buf, &a.weight.buf, &bias.buf, &a.out.buf]
            .into_iter()
            .all(|b| dev.aligned16(b));
    let (spec, per_block) = if vectorised {
        (rows_spec, m::layer_norm_rows_f32::ROWS_PER_BLOCK)
    } else {
        (block_spec, 1)
    };
    // Blocks past the grid's x limit continue in y (the kernel's block = y·GRID_X + x).
    let gx = m::layer_norm_f32::GRID_X;
    let blocks = rows.div_ceil(per_block);
    let grid = (blocks.min(gx), blocks.div_ceil(gx), 1);
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
