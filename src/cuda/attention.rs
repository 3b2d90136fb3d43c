//! Attention on CUDA: kernels/attention.ptx, fused with an online softmax.

use super::launch::{cfg, entry, Arg};
use super::Cuda;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::index32 as u32_of;
use crate::ops::AttentionArgs;

pub(super) fn attention<T: Element>(dev: &Cuda, a: AttentionArgs<'_, T, Cuda>) -> Result<()> {
    const OP: &str = "attention";
    let d = a.dims;
    if d.head_dim > 128 {
        return Err(Error::Unsupported {
            op: OP,
            msg: format!("head dim {} > 128", d.head_dim),
        });
    }
    let nq = u32_of(OP, "q_len", d.q_len)?;
    let nk = u32_of(OP, "kv_len", d.kv_len)?;
    u32_of(OP, "k", d.batch * d.kv_len * d.width())?;
    u32_of(OP, "out", d.batch * d.q_len * d.width())?;
    if d.batch > 65_535 || d.heads > 65_535 {
        return Err(Error::Unsupported {
            op: OP,
            msg: format!("batch {} or heads {} > 65535", d.batch, d.heads),
        });
    }
    let q_batch_stride = if d.q_broadcast {
        0
    } else {
        u32_of(OP, "q", d.q_len * d.width())?
    };
    // Scores are kept in the log2 domain: q is pre-scaled by hd^-0.5 · log2(e).
    let scale_log2 = d.scale() * std::f32::consts::LOG2_E;
    dev.launch(
        OP,
        "attention",
        &entry::<T>(OP),
        cfg(
            // 8 warps = 8 query rows per block (ATT_NW in tools/gen_ptx.py).
            (nq.div_ceil(8), d.heads as u32, d.batch as u32),
            (256, 1, 1),
            0,
        ),
        &mut [
            Arg::In(&a.q.buf),
            Arg::In(&a.k.buf),
            Arg::In(&a.v.buf),
            Arg::Out(&mut a.out.buf),
            Arg::U32(nq),
            Arg::U32(nk),
            Arg::U32(d.heads as u32),
            Arg::U32(d.head_dim as u32),
            Arg::U32(q_batch_stride),
            Arg::F32(scale_log2),
        ],
    )
}
