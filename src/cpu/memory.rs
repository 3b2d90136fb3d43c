//! Memory-gated attention's read step (gate, read, concat) and write step (gated
//! bank update in place, token rows added to the residual). Batches in parallel.

use rayon::prelude::*;

use super::{numel, store, take, take_mut, widen_into, Cpu, STREAM_CHUNK};
use crate::element::Element;
use crate::error::Result;
use crate::ops::{MemoryReadArgs, MemoryWriteArgs};

pub(super) fn memory_read<T: Element>(_: &Cpu, a: MemoryReadArgs<'_, T, Cpu>) -> Result<()> {
    const OP: &str = "memory_read";
    let d = a.dims;
    let (bsz, n, e, m, dd) = (d.batch, d.tokens, d.experts, d.slots, d.hidden);
    let h = take(a.h, numel(OP, &[bsz, n, dd])?, OP, "h")?;
    let bank = take(a.bank, numel(OP, &[bsz, e, m, dd])?, OP, "bank")?;
    let rw = take(a.router_weight, numel(OP, &[e, dd])?, OP, "router.weight")?;
    let rb = take(a.router_bias, e, OP, "router.bias")?;
    let joint = take_mut(a.joint, numel(OP, &[bsz, m + n, dd])?, OP, "joint")?;
    let gate = take_mut(a.gate, numel(OP, &[bsz, e])?, OP, "gate")?;
    if bsz == 0 || e == 0 {
        return Ok(());
    }
    let mut rw32 = vec![0.0f32; rw.len()];
    widen_into(rw, &mut rw32);

    // Gate per batch: mean over tokens (f32 sums per column), router, softmax over E.
    gate.par_chunks_mut(e).enumerate().for_each(|(bi, g)| {
        let mut mean = vec![0.0f32; dd];
        if dd > 0 {
            for row in h[bi * n * dd..][..n * dd].chunks(dd) {
                for (s, x) in mean.iter_mut().zip(row) {
                    *s += x.to_f32();
                }
            }
        }
        let inv_n = 1.0 / n.max(1) as f32;
        mean.iter_mut().for_each(|s| *s *= inv_n);
        for (ei, gl) in g.iter_mut().enumerate() {
            let wrow = &rw32[ei * dd..][..dd];
            *gl = rb[ei].to_f32() + wrow.iter().zip(&mean).map(|(w, x)| w * x).sum::<f32>();
        }
        let mx = g.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut z = 0.0f32;
        for gl in g.iter_mut() {
            *gl = (*gl - mx).exp();
            z += *gl;
        }
        g.iter_mut().for_each(|gl| *gl /= z);
    });
    if dd == 0 {
        return Ok(());
    }
    let gate: &[f32] = gate;

    // joint[b] = [Σ_e g·bank[b,e]; h[b]], one task per row.
    joint
        .par_chunks_mut(dd)
        .with_min_len((STREAM_CHUNK / dd).max(1))
        .enumerate()
        .for_each_init(
            || vec![0.0f32; dd],
            |acc, (r, dst)| {
                let (bi, s) = (r / (m + n), r % (m + n));
                if s >= m {
                    dst.copy_from_slice(&h[(bi * n + s - m) * dd..][..dd]);
                    return;
                }
                acc.fill(0.0);
                for ei in 0..e {
                    let g = gate[bi * e + ei];
                    let src = &bank[((bi * e + ei) * m + s) * dd..][..dd];
                    for (a, x) in acc.iter_mut().zip(src) {
                        *a += g * x.to_f32();
                    }
                }
                store(acc, dst);
            },
        );
    Ok(())
}

pub(super) fn memory_write<T: Element>(_: &Cpu, a: MemoryWriteArgs<'_, T, Cpu>) -> Result<()> {
    const OP: &str = "memory_write";
    let d = a.dims;
    let (bsz, n, e, m, dd) = (d.batch, d.tokens, d.experts, d.slots, d.hidden);
    let bank = take_mut(a.bank, numel(OP, &[bsz, e, m, dd])?, OP, "bank")?;
    let gate = take(a.gate, numel(OP, &[bsz, e])?, OP, "gate")?;
    let o = take(a.o, numel(OP, &[bsz, m + n, dd])?, OP, "o")?;
    let residual = take(a.residual, numel(OP, &[bsz, n, dd])?, OP, "residual")?;
    let out = take_mut(a.out, numel(OP, &[bsz, n, dd])?, OP, "out")?;
    if dd == 0 {
        return Ok(());
    }
    let min_rows = (STREAM_CHUNK / dd).max(1);

    // bank[b,e,s] = (1 − g)·bank[b,e,s] + g·o[b,s], one task per slot row.
    bank.par_chunks_mut(dd)
        .with_min_len(min_rows)
        .enumerate()
        .for_each(|(r, row)| {
            let (be, s) = (r / m.max(1), r % m.max(1));
            let bi = be / e.max(1);
            let g = gate[be];
            let src = &o[(bi * (m + n) + s) * dd..][..dd];
            for (x, y) in row.iter_mut().zip(src) {
                *x = T::from_f32((1.0 - g) * x.to_f32() + g * y.to_f32());
            }
        });
    // out[b,t] = residual[b,t] + o[b, M + t].
    out.par_chunks_mut(dd)
        .with_min_len(min_rows)
        .enumerate()
        .for_each(|(r, row)| {
            let (bi, t) = (r / n.max(1), r % n.max(1));
            let src = &o[(bi * (m + n) + m + t) * dd..][..dd];
            let res = &residual[r * dd..][..dd];
            for ((x, a), b) in row.iter_mut().zip(res).zip(src) {
                *x = T::from_f32(a.to_f32() + b.to_f32());
            }
        });
    Ok(())
}
