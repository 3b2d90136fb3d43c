//! Fused multi-head attention (no mask), online softmax in the kernels. q, k and v
//! may be column blocks of one tensor: the fused `[.., 3·H·hd]` projection of a
//! self-attention ([`attention_qkv`]), or a `[.., 2·H·hd]` key-value projection
//! ([`attention_q_kv`], the pooling head).

use super::Kernels;
use super::{check_device, prepare_out, shape_err};
use crate::buffer::DeviceBuffer;
use crate::device::Device;
use crate::element::Element;
use crate::error::{Error, Result};

/// Sizes of multi-head attention: q `[Bq, Nq, ..]`, k and v `[B, Nk, ..]`, out
/// `[B, Nq, H·hd]`. `Bq` is `B`, or 1 when one set of queries is shared by the
/// whole batch (the pooling head's probe). Where q, k and v sit in their rows is
/// [`AttentionLayout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionDims {
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub q_len: usize,
    pub kv_len: usize,
    /// q's batch stride is zero: every batch reads q batch 0.
    pub q_broadcast: bool,
    pub layout: AttentionLayout,
}

/// Where q, k and v are in their tensors' rows: head h of q is columns
/// `q_col + h·hd ..` of rows `ldq` elements apart (likewise k, v with `ldkv`); out
/// rows are `ldo` apart. Separate tensors: all columns 0, strides H·hd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionLayout {
    pub q_col: usize,
    pub k_col: usize,
    pub v_col: usize,
    pub ldq: usize,
    pub ldkv: usize,
    pub ldo: usize,
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
/// `softmax(q kᵀ · hd^-0.5) v`, no mask. q, k and v may be the same storage.
pub struct AttentionArgs<'a, T: Element, D: Device> {
    pub(crate) q: &'a D::Storage<T>,
    pub(crate) k: &'a D::Storage<T>,
    pub(crate) v: &'a D::Storage<T>,
    pub(crate) out: &'a mut D::Storage<T>,
    pub(crate) dims: AttentionDims,
}

/// Columns `col .. col + width` of a `[B, N, ld]` tensor.
struct Columns<'a, T: Element, D: Device> {
    name: &'static str,
    buf: &'a DeviceBuffer<T, D>,
    col: usize,
    width: usize,
}

impl<'a, T: Element, D: Device> Columns<'a, T, D> {
    fn all(name: &'static str, buf: &'a DeviceBuffer<T, D>) -> Self {
        let width = buf.shape().last().copied().unwrap_or(0);
        Self {
            name,
            buf,
            col: 0,
            width,
        }
    }

    /// (rows' batch, rows, row stride).
    fn geometry(&self, expected: &str) -> Result<(usize, usize, usize)> {
        match self.buf.shape() {
            &[b, n, ld] => Ok((b, n, ld)),
            s => Err(shape_err("attention", self.name, s, expected.into())),
        }
    }
}

const OP: &str = "attention";

fn attention_dims<T: Element, D: Device>(
    q: &Columns<'_, T, D>,
    k: &Columns<'_, T, D>,
    v: &Columns<'_, T, D>,
    heads: usize,
) -> Result<AttentionDims> {
    let (bq, q_len, ldq) = q.geometry("[B, Nq, H·hd]")?;
    let (batch, kv_len, ldkv) = k.geometry("[B, Nk, H·hd]")?;
    let width = q.width;
    let mismatch = |a: &Columns<'_, T, D>, b: &Columns<'_, T, D>| Error::ShapeMismatch {
        op: OP,
        a: a.name.into(),
        a_shape: a.buf.shape().to_vec(),
        b: b.name.into(),
        b_shape: b.buf.shape().to_vec(),
    };
    if k.width != width || (bq != batch && bq != 1) {
        return Err(mismatch(q, k));
    }
    if v.geometry("[B, Nk, H·hd]")? != (batch, kv_len, ldkv) || v.width != width {
        return Err(mismatch(k, v));
    }
    if heads == 0 || !width.is_multiple_of(heads) || width == 0 {
        return Err(shape_err(
            OP,
            q.name,
            q.buf.shape(),
            format!("a width divisible by the {heads} heads"),
        ));
    }
    if kv_len == 0 {
        return Err(shape_err(
            OP,
            k.name,
            k.buf.shape(),
            "at least one key row".into(),
        ));
    }
    Ok(AttentionDims {
        batch,
        heads,
        head_dim: width / heads,
        q_len,
        kv_len,
        q_broadcast: bq != batch,
        layout: AttentionLayout {
            q_col: q.col,
            k_col: k.col,
            v_col: v.col,
            ldq,
            ldkv,
            ldo: width,
        },
    })
}

fn run<T: Element, D: Kernels<T>>(
    q: Columns<'_, T, D>,
    k: Columns<'_, T, D>,
    v: Columns<'_, T, D>,
    heads: usize,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    let dev = q.buf.device().clone();
    check_device(OP, &dev, k.name, k.buf)?;
    check_device(OP, &dev, v.name, v.buf)?;
    let dims = attention_dims(&q, &k, &v, heads)?;
    prepare_out(OP, &dev, out, &[dims.batch, dims.q_len, dims.width()])?;
    if out.is_empty() {
        return Ok(());
    }
    dev.attention(AttentionArgs {
        q: q.buf.storage(),
        k: k.buf.storage(),
        v: v.buf.storage(),
        out: out.storage_mut(),
        dims,
    })
}

/// `out` for attention over `q` rows: `[B, Nq, width]` where B is k's batch.
fn new_out<T: Element, D: Kernels<T>>(
    q: &Columns<'_, T, D>,
    k: &Columns<'_, T, D>,
) -> Result<DeviceBuffer<T, D>> {
    let (_, nq, _) = q.geometry("[B, Nq, H·hd]")?;
    let (b, _, _) = k.geometry("[B, Nk, H·hd]")?;
    DeviceBuffer::uninit(q.buf.device(), &[b, nq, q.width])
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
    let (qc, kc) = (Columns::all("q", q), Columns::all("k", k));
    let mut out = new_out(&qc, &kc)?;
    run(qc, kc, Columns::all("v", v), heads, &mut out)?;
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
    run(
        Columns::all("q", q),
        Columns::all("k", k),
        Columns::all("v", v),
        heads,
        out,
    )
}

/// The three column blocks of a fused `[B, N, 3·W]` projection.
fn qkv_blocks<T: Element, D: Device>(qkv: &DeviceBuffer<T, D>) -> Result<[Columns<'_, T, D>; 3]> {
    let cols = qkv.shape().last().copied().unwrap_or(0);
    if qkv.shape().len() != 3 || cols % 3 != 0 {
        return Err(shape_err(OP, "qkv", qkv.shape(), "[B, N, 3·H·hd]".into()));
    }
    let w = cols / 3;
    let block = |i: usize| Columns {
        name: "qkv",
        buf: qkv,
        col: i * w,
        width: w,
    };
    Ok([block(0), block(1), block(2)])
}

/// Self-attention over a fused projection: `qkv` `[B, N, 3·H·hd]` holds q, k and
/// v as column blocks (the rows of a stacked `[3·D, D]` weight) → `[B, N, H·hd]`.
pub fn attention_qkv<T: Element, D: Kernels<T>>(
    qkv: &DeviceBuffer<T, D>,
    heads: usize,
) -> Result<DeviceBuffer<T, D>> {
    let [q, k, v] = qkv_blocks(qkv)?;
    let mut out = new_out(&q, &k)?;
    run(q, k, v, heads, &mut out)?;
    Ok(out)
}

/// [`attention_qkv`] writing into an existing `out` `[B, N, H·hd]`.
pub fn attention_qkv_into<T: Element, D: Kernels<T>>(
    qkv: &DeviceBuffer<T, D>,
    heads: usize,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    let [q, k, v] = qkv_blocks(qkv)?;
    run(q, k, v, heads, out)
}

/// k and v as the column blocks of a fused `[B, Nk, 2·W]` projection.
fn kv_blocks<T: Element, D: Device>(kv: &DeviceBuffer<T, D>) -> Result<[Columns<'_, T, D>; 2]> {
    let cols = kv.shape().last().copied().unwrap_or(0);
    if kv.shape().len() != 3 || cols % 2 != 0 {
        return Err(shape_err(OP, "kv", kv.shape(), "[B, Nk, 2·H·hd]".into()));
    }
    let w = cols / 2;
    let block = |i: usize| Columns {
        name: "kv",
        buf: kv,
        col: i * w,
        width: w,
    };
    Ok([block(0), block(1)])
}

/// Attention of `q` `[Bq, Nq, H·hd]` over a fused key-value projection `kv`
/// `[B, Nk, 2·H·hd]` (k then v) → `[B, Nq, H·hd]` (the pooling head).
pub fn attention_q_kv<T: Element, D: Kernels<T>>(
    q: &DeviceBuffer<T, D>,
    kv: &DeviceBuffer<T, D>,
    heads: usize,
) -> Result<DeviceBuffer<T, D>> {
    let [k, v] = kv_blocks(kv)?;
    let q = Columns::all("q", q);
    let mut out = new_out(&q, &k)?;
    run(q, k, v, heads, &mut out)?;
    Ok(out)
}

/// [`attention_q_kv`] writing into an existing `out` `[B, Nq, H·hd]`.
pub fn attention_q_kv_into<T: Element, D: Kernels<T>>(
    q: &DeviceBuffer<T, D>,
    kv: &DeviceBuffer<T, D>,
    heads: usize,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    let [k, v] = kv_blocks(kv)?;
    run(Columns::all("q", q), k, v, heads, out)
}
