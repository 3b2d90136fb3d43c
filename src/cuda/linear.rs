//! Linear layers on CUDA (kernels/linear.ptx), bias, GELU and residual fused in
//! the epilogue:
//! - f32: `linear_f32`, exact SIMT GEMM;
//! - bf16 at the model's shapes (K and N multiples of 8, 16-byte aligned operands):
//!   `linear_bf16`, the pipelined sm_80 tensor-core GEMM;
//! - bf16 otherwise: `linear_bf16_any`, tensor cores with edge-safe loads.

use super::manifest as m;
use super::Cuda;
use crate::element::{DType, Element};
use crate::error::{Error, Result};
use crate::ops::{index32, Activation, LinearArgs};

/// `flags` of the linear kernels (tools/ptxgen/kernels/gemm_common.py).
const FLAG_BIAS: u32 = 1;
const FLAG_GELU: u32 = 2;
const FLAG_RES: u32 = 4;

pub(super) fn linear<T: Element>(dev: &Cuda, a: LinearArgs<'_, T, Cuda>) -> Result<()> {
    const OP: &str = "linear";
    let d = a.dims;
    let mm = index32(OP, "rows", d.rows)?;
    let n = index32(OP, "out_features", d.out_features)?;
    let k = index32(OP, "in_features", d.in_features)?;
    index32(OP, "x", d.rows * d.in_features)?;
    index32(OP, "weight", d.out_features * d.in_features)?;
    index32(OP, "out", d.rows * d.out_features)?;
    let flags = if a.bias.is_some() { FLAG_BIAS } else { 0 }
        | if d.activation == Activation::GeluTanh {
            FLAG_GELU
        } else {
            0
        }
        | if a.residual.is_some() { FLAG_RES } else { 0 };
    let aligned = [Some(a.x), Some(a.weight), a.bias, a.residual]
        .into_iter()
        .flatten()
        .all(|s| dev.aligned16(&s.buf))
        && dev.aligned16(&a.out.buf);
    let args = m::LinearArgs {
        x: &a.x.buf,
        w: &a.weight.buf,
        bias: a.bias.map(|b| &b.buf),
        res: a.residual.map(|r| &r.buf),
        out: &mut a.out.buf,
        m: mm,
        n,
        k,
        flags,
    };
    match T::DTYPE {
        DType::F32 => {
            let s = &m::linear_f32::SPEC;
            let grid = grid2d(OP, mm, n, m::linear_f32::TILE_M, m::linear_f32::TILE_N)?;
            dev.launch(OP, s, grid, 0, args)
        }
        DType::BF16 if k % 8 == 0 && n % 8 == 0 && aligned => {
            let tiles = mm.div_ceil(m::linear_bf16::TILE_M) * n.div_ceil(m::linear_bf16::TILE_N);
            let s = &m::linear_bf16::SPEC;
            dev.launch(OP, s, (tiles, 1, 1), m::linear_bf16::DYN_SMEM, args)
        }
        DType::BF16 => {
            let s = &m::linear_bf16_any::SPEC;
            let grid = grid2d(
                OP,
                mm,
                n,
                m::linear_bf16_any::TILE_M,
                m::linear_bf16_any::TILE_N,
            )?;
            dev.launch(OP, s, grid, 0, args)
        }
    }
}

/// Grid (column tiles, row tiles) of the 2-D tiled GEMM kernels.
pub(super) fn grid2d(
    op: &'static str,
    m: u32,
    n: u32,
    tile_m: u32,
    tile_n: u32,
) -> Result<(u32, u32, u32)> {
    if m.div_ceil(tile_m) > 65_535 {
        return Err(Error::Unsupported {
            op,
            msg: format!(
                "{m} rows exceed the kernel grid (at most {})",
                65_535 * tile_m
            ),
        });
    }
    Ok((n.div_ceil(tile_n), m.div_ceil(tile_m), 1))
}
