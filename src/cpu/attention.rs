//! Multi-head attention `softmax(q kᵀ · hd^-0.5) v`, over fixed-length or packed
//! sequences ([`Packing`]). Tasks are (head, share of the query rows) within each
//! sequence; the scores of one block live in a scratch buffer. Both products run
//! on the AVX-512 panel kernel where the CPU has it ([`panel::attention_head`]:
//! bf16 read as bf16, the probabilities rounded to bf16 for `P·V` as
//! FlashAttention does on GPUs; f32 exact), else on SGEMM over strided head
//! slices (bf16 widened).

use rayon::prelude::*;

use super::gemm::{sgemm, MatRef};
use super::layer_norm::sum8;
use super::panel::{self, PanelElem, Strided};
use super::{as_bf16, as_f32, exp_f32, numel, take, take_mut, widen_into, Cpu};
use crate::element::{DType, Element};
use crate::error::Result;
use crate::ops::{AttentionArgs, Packing};

const OP: &str = "attention";

/// Query rows per task of the SGEMM path: bounds the score scratch and gives
/// parallelism when B·H is small.
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

/// The first `nk` values of each row of `s` (rows `ld` apart, one per entry of
/// `inv_sum`) become `exp((x − max)·scale)`; `inv_sum[i]` is one over row i's sum.
fn softmax_rows(s: &mut [f32], ld: usize, nk: usize, scale: f32, inv_sum: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::isa().avx512 {
        // SAFETY: the CPU has the features `softmax_rows_avx512` is compiled for
        // (`isa()` detected them); it is `softmax_rows_any` compiled with them.
        unsafe { softmax_rows_avx512(s, ld, nk, scale, inv_sum) };
        return;
    }
    softmax_rows_any(s, ld, nk, scale, inv_sum);
}

/// [`softmax_rows_any`] compiled for AVX-512 (exp vectorised 16 wide).
///
/// # Safety
/// The CPU must have AVX-512 F, BW, VL, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn softmax_rows_avx512(
    s: &mut [f32],
    ld: usize,
    nk: usize,
    scale: f32,
    inv_sum: &mut [f32],
) {
    softmax_rows_any(s, ld, nk, scale, inv_sum);
}

#[inline(always)]
fn softmax_rows_any(s: &mut [f32], ld: usize, nk: usize, scale: f32, inv_sum: &mut [f32]) {
    for (row, z) in s.chunks_mut(ld).zip(inv_sum.iter_mut()) {
        let row = &mut row[..nk];
        let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for x in row.iter_mut() {
            *x = exp_f32((*x - mx) * scale);
        }
        *z = 1.0 / sum8(row, |x| x);
    }
}

/// One task's operands: the q rows of the block and the k / v rows of its
/// sequence, as (first row, rows), the head's columns, the row strides.
#[derive(Clone, Copy)]
struct Block {
    q0: usize,
    rows: usize,
    kv0: usize,
    nk: usize,
    qcol: usize,
    kcol: usize,
    vcol: usize,
    hd: usize,
    ldq: usize,
    ldkv: usize,
    scale: f32,
}

/// Whether [`block_panel`] runs for `T` on this CPU.
fn panel_runs<T: Element>() -> bool {
    match T::DTYPE {
        DType::BF16 => half::bf16::available(),
        DType::F32 => f32::available(),
    }
}

/// The task's `[rows, hd]` output on the panel kernel, or `None` where it does
/// not run for `T` on this CPU.
fn block_panel<T: Element>(q: &[T], k: &[T], v: &[T], b: Block) -> Option<Result<Vec<f32>>> {
    fn view<S>(
        x: &[S],
        r0: usize,
        rows: usize,
        col: usize,
        b: Block,
        ld: usize,
    ) -> Result<Strided<'_, S>> {
        let data = x
            .get(r0 * ld + col..)
            .ok_or_else(|| super::internal("attention: head slice past its tensor"))?;
        Ok(Strided {
            data,
            rows,
            cols: b.hd,
            ld,
        })
    }
    fn run<S: PanelElem + Element>(q: &[S], k: &[S], v: &[S], b: Block) -> Result<Vec<f32>> {
        let mut o = vec![0.0f32; b.rows * b.hd];
        panel::attention_head(
            view(q, b.q0, b.rows, b.qcol, b, b.ldq)?,
            view(k, b.kv0, b.nk, b.kcol, b, b.ldkv)?,
            view(v, b.kv0, b.nk, b.vcol, b, b.ldkv)?,
            |s, ld, nk, inv| softmax_rows(s, ld, nk, b.scale, inv),
            &mut o,
        )?;
        Ok(o)
    }
    match T::DTYPE {
        DType::BF16 if half::bf16::available() => {
            Some(run::<half::bf16>(as_bf16(q)?, as_bf16(k)?, as_bf16(v)?, b))
        }
        DType::F32 if f32::available() => Some(run::<f32>(as_f32(q)?, as_f32(k)?, as_f32(v)?, b)),
        _ => None,
    }
}

/// The task's output on SGEMM over strided head slices (bf16 widened).
fn block_sgemm<T: Element>(q: &[T], k: &[T], v: &[T], b: Block) -> Result<Vec<f32>> {
    let (rows, nk, hd) = (b.rows, b.nk, b.hd);
    let (mut sq, mut sk, mut sv) = (Vec::new(), Vec::new(), Vec::new());
    let qv = head_view(q, b.q0, rows, b.ldq, b.qcol, hd, &mut sq);
    let kv = head_view(k, b.kv0, nk, b.ldkv, b.kcol, hd, &mut sk);
    let vv = head_view(v, b.kv0, nk, b.ldkv, b.vcol, hd, &mut sv);
    let mut s = vec![0.0f32; rows * nk];
    sgemm(qv, kv.t(), &mut s, nk)?;
    // Unnormalised softmax in place; the row sums divide the output.
    let mut inv_sum = vec![0.0f32; rows];
    softmax_rows(&mut s, nk, nk, b.scale, &mut inv_sum);
    let mut o = vec![0.0f32; rows * hd];
    sgemm(MatRef::rows(&s, rows, nk, nk), vv, &mut o, hd)?;
    for (row, z) in o.chunks_mut(hd).zip(&inv_sum) {
        row.iter_mut().for_each(|x| *x *= z);
    }
    Ok(o)
}

pub(super) fn attention<T: Element>(_: &Cpu, a: AttentionArgs<'_, T, Cpu>) -> Result<()> {
    let d = a.dims;
    let (b, h, hd) = (d.batch, d.heads, d.head_dim);
    let lay = d.layout;
    let q = take(a.q, numel(OP, &[d.q_rows(), lay.ldq])?, OP, "q")?;
    let k = take(a.k, numel(OP, &[d.kv_rows(), lay.ldkv])?, OP, "k")?;
    let v = take(a.v, numel(OP, &[d.kv_rows(), lay.ldkv])?, OP, "v")?;
    let w = lay.ldo;
    let offsets = a.packed_offsets()?;
    let out = take_mut(a.out, numel(OP, &[d.out_rows(), w])?, OP, "out")?;
    if out.is_empty() || d.kv_len == 0 || hd == 0 {
        return Ok(());
    }
    // Each sequence's (first q row, q rows, first kv row, kv rows); out rows are
    // the q rows (a broadcast q reads its one batch).
    let seqs: Vec<(usize, usize, usize, usize)> = match offsets {
        None => (0..b)
            .map(|i| (i * d.q_len, d.q_len, i * d.kv_len, d.kv_len))
            .collect(),
        Some(off) => {
            let mut v = Vec::with_capacity(b);
            for (i, pair) in off.windows(2).enumerate() {
                let (s0, s1) = (pair[0] as usize, pair[1] as usize);
                if s1 <= s0 || s1 > d.kv_rows() {
                    return Err(super::internal("attention: packed offsets out of order"));
                }
                v.push(match d.packing {
                    Packing::Packed => (s0, s1 - s0, s0, s1 - s0),
                    _ => (i * d.q_len, d.q_len, s0, s1 - s0),
                });
            }
            v
        }
    };
    // Out rows per sequence, in order, so `out` splits into one slice each.
    let mut outs = Vec::with_capacity(b);
    let mut rest = &mut out[..];
    let mut at = 0;
    for &(q0, nq, _, _) in &seqs {
        if q0 != at || nq * w > rest.len() {
            return Err(super::internal(
                "attention: sequences do not tile the output",
            ));
        }
        let (mine, tail) = rest.split_at_mut(nq * w);
        outs.push(mine);
        rest = tail;
        at += nq;
    }
    let scale = d.scale();
    // The panel path packs a head's K and V once per task, so its tasks take all
    // of a sequence's query rows, split only when B·H leaves threads idle.
    let task_rows = |nq: usize| {
        if !panel_runs::<T>() {
            return Q_BLOCK;
        }
        let want = 2 * rayon::current_num_threads();
        let splits = want.div_ceil(b * h).max(1);
        nq.div_ceil(splits).div_ceil(32).max(1) * 32
    };

    outs.into_par_iter().zip(seqs.par_iter()).try_for_each(
        |(out_b, &(q0, nq, kv0, nk))| -> Result<()> {
            // A broadcast q reads its one batch (rows 0 .. nq) for every sequence.
            let q0 = if d.q_broadcast { 0 } else { q0 };
            let per_task = task_rows(nq);
            let q_blocks = nq.div_ceil(per_task);
            let tiles = (0..h * q_blocks)
                .into_par_iter()
                .map(|task| -> Result<(usize, usize, Vec<f32>)> {
                    let (hi, i0) = (task / q_blocks, (task % q_blocks) * per_task);
                    let blk = Block {
                        q0: q0 + i0,
                        rows: per_task.min(nq - i0),
                        kv0,
                        nk,
                        qcol: lay.q_col + hi * hd,
                        kcol: lay.k_col + hi * hd,
                        vcol: lay.v_col + hi * hd,
                        hd,
                        ldq: lay.ldq,
                        ldkv: lay.ldkv,
                        scale,
                    };
                    let o = match block_panel(q, k, v, blk) {
                        Some(o) => o?,
                        None => block_sgemm(q, k, v, blk)?,
                    };
                    Ok((hi, i0, o))
                })
                .collect::<Result<Vec<_>>>()?;
            for (hi, i0, o) in tiles {
                for (i, src) in o.chunks(hd).enumerate() {
                    super::store(src, &mut out_b[(i0 + i) * w + hi * hd..][..hd]);
                }
            }
            Ok(())
        },
    )
}
