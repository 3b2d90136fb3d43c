//! Patch embedding: im2col of each row block of patches, then one GEMM against
//! the weight `[D, C·P·P]` with bias and position embedding fused into the store.

use super::gemm::{matmul_wt, ASource, Epilogue};
use super::panel::{self, PanelElem, PanelSource};
use super::{as_bf16, as_f32, numel, take, take_mut, widen, Cpu};
use crate::element::Element;
use crate::error::Result;
use crate::ops::{Activation, PatchEmbedArgs};

const OP: &str = "patch_embed";

pub(super) fn patch_embed<T: Element>(_: &Cpu, a: PatchEmbedArgs<'_, T, Cpu>) -> Result<()> {
    let d = a.dims;
    let (c, img, p, hidden) = (d.channels, d.image, d.patch, d.hidden);
    if p == 0 {
        return Ok(());
    }
    let (g, tokens, k) = (d.grid(), d.tokens(), d.patch_len());
    let rows = numel(OP, &[d.batch, tokens])?;
    let pixels = take(a.pixels, numel(OP, &[d.batch, c, img, img])?, OP, "pixels")?;
    let w = take(a.weight, numel(OP, &[hidden, k])?, OP, "weight")?;
    let bias = take(a.bias, hidden, OP, "bias")?;
    let pos = take(a.position, numel(OP, &[tokens, hidden])?, OP, "position")?;
    let out = take_mut(a.out, numel(OP, &[rows, hidden])?, OP, "out")?;
    if tokens == 0 {
        return Ok(());
    }

    // Row r is patch (gy, gx) of image b; its k-th entry is pixel (c, py, px) with
    // k = c·P·P + py·P + px, so each (c, py) is one contiguous run of P pixels.
    fn im2col<S: Element, O>(
        pixels: &[S],
        (c, img, p, g, tokens, k): (usize, usize, usize, usize, usize, usize),
        r0: usize,
        dst: &mut [O],
        convert: impl Fn(S) -> O,
    ) {
        for (i, row) in dst.chunks_mut(k).enumerate() {
            let r = r0 + i;
            let (b, t) = (r / tokens, r % tokens);
            let (gy, gx) = (t / g, t % g);
            for (ci, chan) in row.chunks_mut(p * p).enumerate() {
                let plane = &pixels[(b * c + ci) * img * img..][..img * img];
                for (py, run) in chan.chunks_mut(p).enumerate() {
                    let src = &plane[(gy * p + py) * img + gx * p..][..p];
                    for (o, &s) in run.iter_mut().zip(src) {
                        *o = convert(s);
                    }
                }
            }
        }
    }
    let geometry = (c, img, p, g, tokens, k);
    let epi = Epilogue {
        bias: Some(bias),
        act: Activation::None,
        residual: Some((pos, tokens)),
    };
    // The AVX-512 panel GEMM where the CPU has it: patches gathered as they are.
    if let (Some(px), Some(w)) = (as_bf16(pixels), as_bf16(w)) {
        if half::bf16::available() {
            let fill = |r0: usize, dst: &mut [half::bf16]| im2col(px, geometry, r0, dst, |s| s);
            return panel::matmul_wt(rows, k, hidden, PanelSource::Fill(&fill), w, &epi, out);
        }
    }
    if let (Some(px), Some(w)) = (as_f32(pixels), as_f32(w)) {
        if f32::available() {
            let fill = |r0: usize, dst: &mut [f32]| im2col(px, geometry, r0, dst, |s| s);
            return panel::matmul_wt(rows, k, hidden, PanelSource::Fill(&fill), w, &epi, out);
        }
    }
    let fill = |r0: usize, dst: &mut [f32]| im2col(pixels, geometry, r0, dst, |s| s.to_f32());
    let w32 = widen(w);
    matmul_wt(rows, k, hidden, ASource::Fill(&fill), &w32, &epi, out)
}
