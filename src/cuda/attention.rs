//! Attention on CUDA (kernels/attention.ptx), fused, online softmax:
//! - bf16 with head dims a multiple of 8 (up to 128) and at least 16 query rows:
//!   `attention_bf16_hd{16..128}`, FlashAttention-2 style on tensor cores;
//! - f32 (exact, the 1e-5 bar), and bf16 otherwise (odd head dims, the pooling
//!   probe's single query): `attention_{f32,bf16}` on CUDA cores.

use super::manifest as m;
use super::Cuda;
use crate::element::{DType, Element};
use crate::error::{Error, Result};
use crate::ops::{index32, AttentionArgs, Packing};

/// The tensor-core kernel of each padded head dim: its spec, dynamic shared memory
/// and query rows per block (each entry's own manifest values).
type Fa2 = (&'static super::launch::KernelSpec<m::Attention>, u32, u32);

fn fa2_spec(hd: usize) -> Option<Fa2> {
    macro_rules! entry {
        ($m:ident) => {
            (&m::$m::SPEC, m::$m::DYN_SMEM, m::$m::ROWS)
        };
    }
    Some(match hd.div_ceil(16) * 16 {
        16 => entry!(attention_bf16_hd16),
        32 => entry!(attention_bf16_hd32),
        48 => entry!(attention_bf16_hd48),
        64 => entry!(attention_bf16_hd64),
        80 => entry!(attention_bf16_hd80),
        96 => entry!(attention_bf16_hd96),
        112 => entry!(attention_bf16_hd112),
        128 => entry!(attention_bf16_hd128),
        _ => return None,
    })
}

/// Query rows below which the tensor-core kernel's 128-row blocks are mostly idle.
const FA2_MIN_QUERIES: usize = 16;

pub(super) fn attention<T: Element>(dev: &Cuda, a: AttentionArgs<'_, T, Cuda>) -> Result<()> {
    const OP: &str = "attention";
    let d = a.dims;
    if d.head_dim > m::attention_f32::MAX_HD as usize {
        return Err(Error::Unsupported {
            op: OP,
            msg: format!("head dim {} > {}", d.head_dim, m::attention_f32::MAX_HD),
        });
    }
    if d.batch > 65_535 || d.heads > 65_535 {
        return Err(Error::Unsupported {
            op: OP,
            msg: format!("batch {} or heads {} > 65535", d.batch, d.heads),
        });
    }
    let nq = index32(OP, "q_len", d.q_len)?;
    let nk = index32(OP, "kv_len", d.kv_len)?;
    let lay = d.layout;
    index32(OP, "q", d.q_rows() * lay.ldq)?;
    index32(OP, "k", d.kv_rows() * lay.ldkv)?;
    index32(OP, "out", d.out_rows() * lay.ldo)?;
    // A packed batch's offsets, on the device for the kernel's `cu`.
    let cu = match a.packed_offsets()? {
        Some(off) => Some(dev.upload_words(OP, off)?),
        None => None,
    };
    let q_bstride = if d.q_broadcast { 0 } else { nq };
    // Scores are kept in the log2 domain: scaled by hd^-0.5 · log2(e).
    let scale = d.scale() * std::f32::consts::LOG2_E;
    // Every row of every head starts on a 16-byte boundary (cp.async copies 16).
    let offsets = [
        lay.ldq, lay.ldkv, lay.ldo, lay.q_col, lay.k_col, lay.v_col, d.head_dim,
    ];
    let tensor_cores = T::DTYPE == DType::BF16
        && d.q_len >= FA2_MIN_QUERIES
        && offsets.iter().all(|x| x % 8 == 0)
        && [&a.q.buf, &a.k.buf, &a.v.buf]
            .iter()
            .all(|b| dev.aligned16(b))
        && dev.aligned16(&a.out.buf);
    let args = m::AttentionArgs {
        q: &a.q.buf,
        k: &a.k.buf,
        v: &a.v.buf,
        out: &mut a.out.buf,
        cu: cu.as_deref(),
        nq,
        nk,
        heads: d.heads as u32,
        hd: d.head_dim as u32,
        ldq: index32(OP, "ldq", lay.ldq)?,
        ldkv: index32(OP, "ldkv", lay.ldkv)?,
        ldo: index32(OP, "ldo", lay.ldo)?,
        q_col: index32(OP, "q_col", lay.q_col)?,
        k_col: index32(OP, "k_col", lay.k_col)?,
        v_col: index32(OP, "v_col", lay.v_col)?,
        q_bstride,
        q_varlen: u32::from(d.packing == Packing::Packed),
        scale,
    };
    let heads_batch = (d.heads as u32, d.batch as u32);
    match fa2_spec(d.head_dim).filter(|_| tensor_cores) {
        Some((spec, smem, rows)) => dev.launch(
            OP,
            spec,
            (nq.div_ceil(rows), heads_batch.0, heads_batch.1),
            smem,
            args,
        ),
        None => {
            let spec = match T::DTYPE {
                DType::F32 => &m::attention_f32::SPEC,
                DType::BF16 => &m::attention_bf16::SPEC,
            };
            let rows = m::attention_f32::ROWS;
            dev.launch(
                OP,
                spec,
                (nq.div_ceil(rows), heads_batch.0, heads_batch.1),
                0,
                args,
            )
        }
    }
}
