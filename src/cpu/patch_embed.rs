//! Patch embedding: im2col of each row block of patches, then one GEMM against
//! the weight `[D, C·P·P]` with bias and position embedding fused into the store.

use super::gemm::{matmul_wt, ASource, Epilogue};
use super::{numel, take, take_mut, widen, Cpu};
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
    let im2col = |r0: usize, dst: &mut [f32]| {
        for (i, row) in dst.chunks_mut(k).enumerate() {
            let r = r0 + i;
            let (b, t) = (r / tokens, r % tokens);
            let (gy, gx) = (t / g, t % g);
            for (ci, chan) in row.chunks_mut(p * p).enumerate() {
                let plane = &pixels[(b * c + ci) * img * img..][..img * img];
                for (py, run) in chan.chunks_mut(p).enumerate() {
                    let src = &plane[(gy * p + py) * img + gx * p..][..p];
                    for (o, s) in run.iter_mut().zip(src) {
                        *o = s.to_f32();
                    }
                }
            }
        }
    };
    let w32 = widen(w);
    let epi = Epilogue {
        bias: Some(bias),
        act: Activation::None,
        residual: Some((pos, tokens)),
    };
    matmul_wt(rows, k, hidden, ASource::Fill(&im2col), &w32, &epi, out)
}
