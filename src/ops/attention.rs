//! Fused multi-head attention (no mask), online softmax in the kernels.

use super::Kernels;
use super::{check_device, expect_shape, prepare_out, shape_err};
use crate::buffer::DeviceBuffer;
use crate::device::Device;
use crate::element::Element;
use crate::error::{Error, Result};

/// Sizes of multi-head attention: q `[Bq, Nq, H·hd]`, k and v `[B, Nk, H·hd]`, out
/// `[B, Nq, H·hd]`. `Bq` is `B`, or 1 when one set of queries is shared by the
/// whole batch (the pooling head's probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionDims {
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub q_len: usize,
    pub kv_len: usize,
    /// q's batch stride is zero: every batch reads q batch 0.
    pub q_broadcast: bool,
}

impl AttentionDims {
    /// The softmax scale hd^-0.5.
    pub fn scale(&self) -> f32 {
        (self.head_dim as f32).powf(-0.5)
    }
    /// Model width H·hd.
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// Arguments of [`Kernels::attention`]: per batch and head,
/// `softmax(q kᵀ · hd^-0.5) v`, no mask.
pub struct AttentionArgs<'a, T: Element, D: Device> {
    pub(crate) q: &'a D::Storage<T>,
    pub(crate) k: &'a D::Storage<T>,
    pub(crate) v: &'a D::Storage<T>,
    pub(crate) out: &'a mut D::Storage<T>,
    pub(crate) dims: AttentionDims,
}

fn attention_dims<T: Element, D: Device>(
    q: &DeviceBuffer<T, D>,
    k: &DeviceBuffer<T, D>,
    v: &DeviceBuffer<T, D>,
    heads: usize,
) -> Result<AttentionDims> {
    const OP: &str = "attention";
    let &[bq, q_len, width] = q.shape() else {
        return Err(shape_err(OP, "q", q.shape(), "[B, Nq, H·hd]".into()));
    };
    let &[batch, kv_len, kw] = k.shape() else {
        return Err(shape_err(OP, "k", k.shape(), "[B, Nk, H·hd]".into()));
    };
    if kw != width || (bq != batch && bq != 1) {
        return Err(Error::ShapeMismatch {
            op: OP,
            a: "q".into(),
            a_shape: q.shape().to_vec(),
            b: "k".into(),
            b_shape: k.shape().to_vec(),
        });
    }
    expect_shape(OP, "v", v, k.shape())?;
    if heads == 0 || width % heads != 0 || width == 0 {
        return Err(shape_err(
            OP,
            "q",
            q.shape(),
            format!("a width divisible by the {heads} heads"),
        ));
    }
    if kv_len == 0 {
        return Err(shape_err(OP, "k", k.shape(), "at least one key row".into()));
    }
    Ok(AttentionDims {
        batch,
        heads,
        head_dim: width / heads,
        q_len,
        kv_len,
        q_broadcast: bq != batch,
    })
}

/// Multi-head attention `softmax(q kᵀ · hd^-0.5) v` per head: q `[Bq, Nq, H·hd]`
/// (Bq = B, or 1 to share queries across the batch), k and v `[B, Nk, H·hd]` →
/// `[B, Nq, H·hd]`.
pub fn attention<T: Element, D: Kernels<T>>(
    q: &DeviceBuffer<T, D>,
    k: &DeviceBuffer<T, D>,
    v: &DeviceBuffer<T, D>,
    heads: usize,
) -> Result<DeviceBuffer<T, D>> {
    let dims = attention_dims(q, k, v, heads)?;
    let mut out = DeviceBuffer::uninit(q.device(), &[dims.batch, dims.q_len, dims.width()])?;
    attention_into(q, k, v, heads, &mut out)?;
    Ok(out)
}

/// [`attention`] writing into an existing `out` `[B, Nq, H·hd]`.
pub fn attention_into<T: Element, D: Kernels<T>>(
    q: &DeviceBuffer<T, D>,
    k: &DeviceBuffer<T, D>,
    v: &DeviceBuffer<T, D>,
    heads: usize,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    const OP: &str = "attention";
    let dev = q.device().clone();
    check_device(OP, &dev, "k", k)?;
    check_device(OP, &dev, "v", v)?;
    let dims = attention_dims(q, k, v, heads)?;
    prepare_out(OP, &dev, out, &[dims.batch, dims.q_len, dims.width()])?;
    if out.is_empty() {
        return Ok(());
    }
    dev.attention(AttentionArgs {
        q: q.storage(),
        k: k.storage(),
        v: v.storage(),
        out: out.storage_mut(),
        dims,
    })
}
