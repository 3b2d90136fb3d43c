//! Multi-head attention `softmax(q kᵀ · hd^-0.5) v`. Tasks are (head, block of
//! query rows) within each batch; both products go through SGEMM on strided head
//! slices, the scores of one block live in a scratch `[rows, Nk]` buffer.

use rayon::prelude::*;

use super::gemm::{sgemm, MatRef};
use super::layer_norm::sum8;
use super::{as_f32, exp_f32, numel, take, take_mut, widen_into, Cpu};
use crate::element::Element;
use crate::error::Result;
use crate::ops::AttentionArgs;

const OP: &str = "attention";

/// Query rows per task: bounds the score scratch and gives parallelism when B·H is small.
const Q_BLOCK: usize = 128;

/// Rows `row0 .. row0 + rows` of head columns `col0 .. col0 + hd` of a `[.., w]` tensor:
/// a strided view for f32, widened into `scratch` otherwise.
fn head_view<'a, T: Element>(
    src: &'a [T],
    row0: usize,
    rows: usize,
    w: usize,
    col0: usize,
    hd: usize,
    scratch: &'a mut Vec<f32>,
) -> MatRef<'a> {
    let base = row0 * w + col0;
    if let Some(f) = as_f32(src) {
        return MatRef::rows(&f[base..], rows, hd, w);
    }
    scratch.clear();
    scratch.resize(rows * hd, 0.0);
    for (i, dst) in scratch.chunks_mut(hd).enumerate() {
        widen_into(&src[base + i * w..][..hd], dst);
    }
    let filled: &'a Vec<f32> = scratch;
    MatRef::rows(filled, rows, hd, hd)
}

/// Each `nk`-long row of `s` becomes `exp((x − max)·scale)`; `inv_sum[i]` is one
/// over row i's sum.
fn softmax_rows(s: &mut [f32], nk: usize, scale: f32, inv_sum: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::isa().avx512 {
        // SAFETY: the CPU has the features `softmax_rows_avx512` is compiled for
        // (`isa()` detected them); it is `softmax_rows_any` compiled with them.
        unsafe { softmax_rows_avx512(s, nk, scale, inv_sum) };
        return;
    }
    softmax_rows_any(s, nk, scale, inv_sum);
}

/// [`softmax_rows_any`] compiled for AVX-512 (exp vectorised 16 wide).
///
/// # Safety
/// The CPU must have AVX-512 F, BW, VL, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn softmax_rows_avx512(s: &mut [f32], nk: usize, scale: f32, inv_sum: &mut [f32]) {
    softmax_rows_any(s, nk, scale, inv_sum);
}

#[inline(always)]
fn softmax_rows_any(s: &mut [f32], nk: usize, scale: f32, inv_sum: &mut [f32]) {
    for (row, z) in s.chunks_mut(nk).zip(inv_sum.iter_mut()) {
        let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for x in row.iter_mut() {
            *x = exp_f32((*x - mx) * scale);
        }
        *z = 1.0 / sum8(row, |x| x);
    }
}

pub(super) fn attention<T: Element>(_: &Cpu, a: AttentionArgs<'_, T, Cpu>) -> Result<()> {
    let d = a.dims;
    let (b, h, hd, nq, nk) = (d.batch, d.heads, d.head_dim, d.q_len, d.kv_len);
    let lay = d.layout;
    let bq = if d.q_broadcast { 1 } else { b };
    let q = take(a.q, numel(OP, &[bq, nq, lay.ldq])?, OP, "q")?;
    let k = take(a.k, numel(OP, &[b, nk, lay.ldkv])?, OP, "k")?;
    let v = take(a.v, numel(OP, &[b, nk, lay.ldkv])?, OP, "v")?;
    let w = lay.ldo;
    let out = take_mut(a.out, numel(OP, &[b, nq, w])?, OP, "out")?;
    if out.is_empty() || nk == 0 || hd == 0 {
        return Ok(());
    }
    let scale = d.scale();
    let q_blocks = nq.div_ceil(Q_BLOCK);

    out.par_chunks_mut(nq * w)
        .enumerate()
        .try_for_each(|(bi, out_b)| -> Result<()> {
            let qb = if d.q_broadcast { 0 } else { bi };
            let tiles = (0..h * q_blocks)
                .into_par_iter()
                .map(|task| -> Result<(usize, usize, Vec<f32>)> {
                    let (hi, i0) = (task / q_blocks, (task % q_blocks) * Q_BLOCK);
                    let rows = Q_BLOCK.min(nq - i0);
                    let (mut sq, mut sk, mut sv) = (Vec::new(), Vec::new(), Vec::new());
                    let qcol = lay.q_col + hi * hd;
                    let qv = head_view(q, qb * nq + i0, rows, lay.ldq, qcol, hd, &mut sq);
                    let kv = head_view(k, bi * nk, nk, lay.ldkv, lay.k_col + hi * hd, hd, &mut sk);
                    let vv = head_view(v, bi * nk, nk, lay.ldkv, lay.v_col + hi * hd, hd, &mut sv);

                    let mut s = vec![0.0f32; rows * nk];
                    sgemm(qv, kv.t(), &mut s, nk)?;
                    // Unnormalised softmax in place; the row sums divide the output.
                    let mut inv_sum = vec![0.0f32; rows];
                    softmax_rows(&mut s, nk, scale, &mut inv_sum);
                    let mut o = vec![0.0f32; rows * hd];
                    sgemm(MatRef::rows(&s, rows, nk, nk), vv, &mut o, hd)?;
                    for (row, z) in o.chunks_mut(hd).zip(&inv_sum) {
                        row.iter_mut().for_each(|x| *x *= z);
                    }
                    Ok((hi, i0, o))
                })
                .collect::<Result<Vec<_>>>()?;
            for (hi, i0, o) in tiles {
                for (i, src) in o.chunks(hd).enumerate() {
                    super::store(src, &mut out_b[(i0 + i) * w + hi * hd..][..hd]);
                }
            }
            Ok(())
        })
}
