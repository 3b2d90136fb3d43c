//! `out = residual + act(x Wᵀ + bias)`: the AVX-512 panel GEMM where the CPU has
//! it, else the tiled SGEMM driver.

use super::gemm::{matmul_wt, ASource, Epilogue};
use super::panel::{self, PanelElem, PanelSource};
use super::{as_bf16, as_f32, numel, take, take_mut, widen, widen_into, Cpu};
use crate::element::Element;
use crate::error::Result;
use crate::ops::LinearArgs;

const OP: &str = "linear";

pub(super) fn linear<T: Element>(_: &Cpu, a: LinearArgs<'_, T, Cpu>) -> Result<()> {
    let d = a.dims;
    let (m, k, n) = (d.rows, d.in_features, d.out_features);
    let x = take(a.x, numel(OP, &[m, k])?, OP, "x")?;
    let w = take(a.weight, numel(OP, &[n, k])?, OP, "weight")?;
    let bias = a.bias.map(|b| take(b, n, OP, "bias")).transpose()?;
    let mn = numel(OP, &[m, n])?;
    let residual = a
        .residual
        .map(|r| take(r, mn, OP, "residual"))
        .transpose()?;
    let out = take_mut(a.out, mn, OP, "out")?;

    let epi = Epilogue {
        bias,
        act: d.activation,
        residual: residual.map(|r| (r, m)),
    };
    // The AVX-512 panel GEMM where the CPU has it: bf16 multiplied as bf16.
    if let (Some(x), Some(w)) = (as_bf16(x), as_bf16(w)) {
        if half::bf16::available() {
            return panel::matmul_wt(m, k, n, PanelSource::Rows(x), w, &epi, out);
        }
    }
    if let (Some(x), Some(w)) = (as_f32(x), as_f32(w)) {
        if f32::available() {
            return panel::matmul_wt(m, k, n, PanelSource::Rows(x), w, &epi, out);
        }
    }
    // Otherwise matrixmultiply's SGEMM: bf16 weights are widened once per call, f32 ones read in place.
    let w32 = widen(w);
    let fill = |r0: usize, dst: &mut [f32]| widen_into(&x[r0 * k..], dst);
    let src = match as_f32(x) {
        Some(x) => ASource::F32(x),
        None => ASource::Fill(&fill),
    };
    matmul_wt(m, k, n, src, &w32, &epi, out)
}
