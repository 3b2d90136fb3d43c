//! Attention on wgpu: shaders/attention.wgsl, fused with an online softmax;
//! `ROWS` queries per workgroup, head dims up to `MAX_HD` (the shader's consts);
//! packed batches read their offsets from a small storage buffer (`cu`).

use super::launch::{u32_of, uniform};
use super::shaders::Shader;
use super::Wgpu;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::{AttentionArgs, Packing};

uniform! {
    /// `Params` of shaders/attention.wgsl.
    pub(super) struct AttentionParams {
        batch: u32,
        heads: u32,
        hd: u32,
        nq: u32,
        nk: u32,
        ldq: u32,
        ldkv: u32,
        ldo: u32,
        q_col: u32,
        k_col: u32,
        v_col: u32,
        q_bstride: u32,
        q_blocks: u32,
        scale: f32,
        varlen: u32,
        q_varlen: u32,
    }
    pad 0
}

pub(super) fn attention<T: Element>(dev: &Wgpu, a: AttentionArgs<'_, T, Wgpu>) -> Result<()> {
    const OP: &str = "attention";
    let d = a.dims;
    let p = dev.pipeline::<AttentionParams>(Shader::Attention, T::DTYPE, T::DTYPE, "main")?;
    let (rows, max_hd) = (p.constant("ROWS")? as usize, p.constant("MAX_HD")? as usize);
    if d.head_dim > max_hd {
        return Err(Error::Unsupported {
            op: OP,
            msg: format!(
                "head dim {} is above the {max_hd} the WGSL kernel supports",
                d.head_dim
            ),
        });
    }
    let lay = d.layout;
    let q_blocks = d.q_len.div_ceil(rows);
    u32_of(OP, "k", d.kv_rows() * lay.ldkv)?;
    u32_of(OP, "q", d.q_rows() * lay.ldq)?;
    u32_of(OP, "out", d.out_rows() * lay.ldo)?;
    // The packed batch's offsets (a placeholder word otherwise: a binding cannot
    // be empty).
    let offsets = a.packed_offsets()?.unwrap_or(&[0]);
    let cu = dev.upload_words(OP, offsets);
    let groups = d.batch * d.heads * q_blocks;
    u32_of(OP, "workgroups", groups)?;
    let params = AttentionParams {
        batch: u32_of(OP, "batch", d.batch)?,
        heads: u32_of(OP, "heads", d.heads)?,
        hd: u32_of(OP, "head_dim", d.head_dim)?,
        nq: u32_of(OP, "q_len", d.q_len)?,
        nk: u32_of(OP, "kv_len", d.kv_len)?,
        ldq: u32_of(OP, "ldq", lay.ldq)?,
        ldkv: u32_of(OP, "ldkv", lay.ldkv)?,
        ldo: u32_of(OP, "ldo", lay.ldo)?,
        q_col: u32_of(OP, "q_col", lay.q_col)?,
        k_col: u32_of(OP, "k_col", lay.k_col)?,
        v_col: u32_of(OP, "v_col", lay.v_col)?,
        q_bstride: if d.q_broadcast {
            0
        } else {
            u32_of(OP, "q batch stride", d.q_len * lay.ldq)?
        },
        q_blocks: u32_of(OP, "query blocks", q_blocks)?,
        scale: d.scale(),
        varlen: u32::from(d.packing != Packing::Fixed),
        q_varlen: u32::from(d.packing == Packing::Packed),
        _pad: Default::default(),
    };
    dev.launch(
        OP,
        &params,
        &[
            ("q", &a.q.buffer),
            ("k", &a.k.buffer),
            ("v", &a.v.buffer),
            ("dst", &a.out.buffer),
            ("cu", &cu),
        ],
        &[(&p, groups as u64)],
    )
}
