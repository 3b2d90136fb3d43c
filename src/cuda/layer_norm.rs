//! Layer norm and RMS norm on CUDA (kernels/layer_norm.ptx): `layer_norm_rows_*`,
//! one warp per row held in registers with 16-byte accesses, where the row fits
//! (cols a multiple of the vector, at most `MAX_COLS`) and every buffer is
//! 16-byte aligned; else `layer_norm_*`, one block per row, any shape.

use super::launch::Launcher;
use super::manifest as m;
use super::Cuda;
use crate::element::{DType, Element};
use crate::error::Result;
use crate::ops::{index32, LayerNormArgs, LayerNormDims, NormKind};

pub(super) fn layer_norm<T: Element>(dev: &Cuda, a: LayerNormArgs<'_, T, Cuda>) -> Result<()> {
    let o = Operands {
        x: &a.x.buf,
        weight: &a.weight.buf,
        bias: a.bias.map(|b| &b.buf),
        out: &mut a.out.buf,
    };
    launch(dev, T::DTYPE, o, a.dims)
}

/// A norm's buffers on a [`Launcher`] (no bias: RMS norm).
pub(super) struct Operands<'a, B> {
    pub x: &'a B,
    pub weight: &'a B,
    pub bias: Option<&'a B>,
    pub out: &'a mut B,
}

/// Layer norm or RMS norm of element type `dtype` over `a`, sized by `d`
/// (checked by the op's front), launched on `dev`.
pub(super) fn launch<L: Launcher>(
    dev: &L,
    dtype: DType,
    a: Operands<'_, L::Buf>,
    d: LayerNormDims,
) -> Result<()> {
    const OP: &str = "layer_norm";
    let rows = index32(OP, "rows", d.rows)?;
    let cols = index32(OP, "cols", d.cols)?;
    index32(OP, "x", d.rows * d.cols)?;
    // RMS norm has no bias: the parameter holds the weight, which the kernel ignores.
    let bias = a.bias.unwrap_or(a.weight);
    // Per dtype: the block-a-row kernel, the warp-a-row one and the rows it takes.
    let (block_spec, rows_spec, vec, max_cols) = match dtype {
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
        && [a.x, a.weight, bias, &*a.out]
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
        x: a.x,
        w: a.weight,
        b: bias,
        out: a.out,
        rows,
        cols,
        eps: d.eps,
        rms: u32::from(d.kind == NormKind::RmsNorm),
    };
    dev.launch(OP, spec, grid, 0, args)
}
