//! Layer norm per row in f32 (two passes: mean, then biased variance), and RMS
//! norm (one pass: mean of squares, no bias); rows in parallel.

use rayon::prelude::*;

use super::{numel, take, take_mut, widen_into, Cpu, STREAM_CHUNK};
use crate::element::Element;
use crate::error::Result;
use crate::ops::{LayerNormArgs, NormKind};

const OP: &str = "layer_norm";

/// Sum with 8 independent accumulators (vectorises, and is more accurate than one chain).
#[inline(always)]
pub(super) fn sum8(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for ch in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(ch) {
            *a += f(x);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    acc.iter().sum::<f32>() + tail
}

pub(super) fn layer_norm<T: Element>(_: &Cpu, a: LayerNormArgs<'_, T, Cpu>) -> Result<()> {
    let d = a.dims;
    let (rows, cols) = (d.rows, d.cols);
    let len = numel(OP, &[rows, cols])?;
    let x = take(a.x, len, OP, "x")?;
    let w = take(a.weight, cols, OP, "weight")?;
    let b = match a.bias {
        Some(b) => Some(take(b, cols, OP, "bias")?),
        None => None,
    };
    let out = take_mut(a.out, len, OP, "out")?;
    if cols == 0 {
        return Ok(());
    }
    // The bias widened (zeros for RMS norm, which has none).
    let mut wb = vec![0.0f32; 2 * cols];
    widen_into(w, &mut wb[..cols]);
    if let Some(b) = b {
        widen_into(b, &mut wb[cols..]);
    }
    let (w, b) = wb.split_at(cols);
    let rms = d.kind == NormKind::RmsNorm;
    let inv_n = 1.0 / cols as f32;
    let min_rows = (STREAM_CHUNK / cols).max(1);

    out.par_chunks_mut(cols)
        .zip(x.par_chunks(cols))
        .with_min_len(min_rows)
        .for_each_init(
            || vec![0.0f32; cols],
            |buf, (o, x)| {
                widen_into(x, buf);
                let mean = if rms { 0.0 } else { sum8(buf, |v| v) * inv_n };
                let var = sum8(buf, |v| (v - mean) * (v - mean)) * inv_n;
                let inv = 1.0 / (var + d.eps).sqrt();
                for (i, v) in buf.iter_mut().enumerate() {
                    *v = (*v - mean) * inv * w[i] + b[i];
                }
                super::store(buf, o);
            },
        );
    Ok(())
}
