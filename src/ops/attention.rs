//! Fused multi-head attention (no mask), online softmax in the kernels. q, k and v
//! may be column blocks of one tensor: the fused `[.., 3·H·hd]` projection of a
//! self-attention ([`attention_qkv`]), or a `[.., 2·H·hd]` key-value projection
//! ([`attention_q_kv`], the pooling head).
//!
//! A packed batch (sequences of different lengths concatenated along the rows, as
//! variable-resolution images are) is attended with [`attention_qkv_packed_into`]
//! and [`attention_q_kv_packed_into`]: each sequence only sees its own keys, and no
//! work is done on padding because there is none.

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
    /// B, the sequences.
    pub batch: usize,
    /// H, the heads.
    pub heads: usize,
    /// hd, the width of a head (at most 128).
    pub head_dim: usize,
    /// Nq, query rows per sequence (packed: the longest).
    pub q_len: usize,
    /// Nk, key and value rows per sequence (packed: the longest).
    pub kv_len: usize,
    /// q's batch stride is zero: every batch reads q batch 0.
    pub q_broadcast: bool,
    /// Where q, k and v sit in their rows.
    pub layout: AttentionLayout,
    /// How the sequences sit in the rows (fixed length, or packed).
    pub packing: Packing,
    /// Packed: the total rows of the packed tensors (0 for [`Packing::Fixed`]).
    pub packed_rows: usize,
}

/// How a batch's sequences sit in the rows of q, k, v and out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// Every sequence has `q_len` query rows and `kv_len` key rows: sequence b is
    /// rows `b·q_len ..` of q (or q's only batch when broadcast) and out, and rows
    /// `b·kv_len ..` of k and v.
    Fixed,
    /// Self-attention over a packed batch: sequence b is rows
    /// `offsets[b] .. offsets[b+1]` of q, k, v and out alike; `q_len` and
    /// `kv_len` are the longest sequence.
    Packed,
    /// Only k and v are packed (rows `offsets[b] .. offsets[b+1]`); q and out
    /// have `q_len` rows per sequence as in `Fixed` (the pooling head's probe over
    /// a packed batch); `kv_len` is the longest sequence.
    PackedKeys,
}

/// Where q, k and v are in their tensors' rows: head h of q is columns
/// `q_col + h·hd ..` of rows `ldq` elements apart (likewise k, v with `ldkv`); out
/// rows are `ldo` apart. Separate tensors: all columns 0, strides H·hd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionLayout {
    /// q's first column (head 0).
    pub q_col: usize,
    /// k's first column.
    pub k_col: usize,
    /// v's first column.
    pub v_col: usize,
    /// Elements from one row of q to the next.
    pub ldq: usize,
    /// Elements from one row of k (and of v) to the next.
    pub ldkv: usize,
    /// Elements from one row of out to the next.
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

    /// Rows of q the kernel may read.
    pub fn q_rows(&self) -> usize {
        match self.packing {
            Packing::Packed => self.packed_rows,
            _ => (if self.q_broadcast { 1 } else { self.batch }) * self.q_len,
        }
    }

    /// Rows of k (and of v) the kernel may read.
    pub fn kv_rows(&self) -> usize {
        match self.packing {
            Packing::Fixed => self.batch * self.kv_len,
            _ => self.packed_rows,
        }
    }

    /// Rows of out the kernel writes.
    pub fn out_rows(&self) -> usize {
        match self.packing {
            Packing::Packed => self.packed_rows,
            _ => self.batch * self.q_len,
        }
    }
}

/// Where the sequences of a packed batch are: sequence b is rows
/// `offsets[b] .. offsets[b+1]`, every sequence at least one row long. Built from
/// the lengths; the offsets are what the kernels read.
///
/// ```
/// use tessera::ops::Segments;
/// let s = Segments::from_lengths(&[3, 1, 4])?;
/// assert_eq!(s.offsets(), &[0, 3, 4, 8]);
/// assert_eq!((s.count(), s.total(), s.max_len()), (3, 8, 4));
/// # Ok::<(), tessera::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    offsets: Vec<u32>,
    max_len: usize,
}

impl Segments {
    /// Sequences of the given lengths, packed in order. Errors on an empty list, a
    /// sequence of length 0, or a total past u32.
    pub fn from_lengths(lengths: &[usize]) -> Result<Self> {
        let bad = |msg: String| Error::Input {
            tensor: "segments".into(),
            msg,
        };
        if lengths.is_empty() {
            return Err(bad("a packed batch needs at least one sequence".into()));
        }
        let mut offsets = Vec::with_capacity(lengths.len() + 1);
        offsets.push(0u32);
        let mut total = 0usize;
        for (b, &n) in lengths.iter().enumerate() {
            if n == 0 {
                return Err(bad(format!("sequence {b} has no rows")));
            }
            total = total
                .checked_add(n)
                .filter(|&t| u32::try_from(t).is_ok())
                .ok_or_else(|| bad(format!("{total} + {n} rows overflow 32-bit offsets")))?;
            offsets.push(total as u32);
        }
        Ok(Self {
            offsets,
            max_len: lengths.iter().copied().max().unwrap_or(0),
        })
    }

    /// `[0, end of sequence 0, …, total]`.
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// Number of sequences.
    pub fn count(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Rows of all sequences together.
    pub fn total(&self) -> usize {
        self.offsets[self.offsets.len() - 1] as usize
    }

    /// The longest sequence.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The rows of sequence `b`.
    ///
    /// # Panics
    ///
    /// When `b` is not below [`Self::count`], as slice indexing does (a caller's
    /// loop bound, not data: every sequence index tessera itself uses comes from
    /// `0..count()`).
    pub fn range(&self, b: usize) -> std::ops::Range<usize> {
        self.offsets[b] as usize..self.offsets[b + 1] as usize
    }

    /// The length of each sequence.
    pub fn lengths(&self) -> impl Iterator<Item = usize> + '_ {
        self.offsets.windows(2).map(|w| (w[1] - w[0]) as usize)
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
    /// The packed batch's offsets (`dims.batch + 1` of them) unless
    /// `dims.packing` is `Fixed`.
    pub(crate) offsets: Option<&'a [u32]>,
}

impl<'a, T: Element, D: Device> AttentionArgs<'a, T, D> {
    /// The packed batch's offsets (`None` for fixed-length sequences), checked to
    /// be `dims.batch + 1` of them; the backends read them through this.
    pub(crate) fn packed_offsets(&self) -> Result<Option<&'a [u32]>> {
        match (self.dims.packing, self.offsets) {
            (Packing::Fixed, _) => Ok(None),
            (_, Some(off)) if off.len() == self.dims.batch + 1 => Ok(Some(off)),
            _ => Err(Error::Internal(
                "attention: packed batch without its offsets".into(),
            )),
        }
    }
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
        packing: Packing::Fixed,
        packed_rows: 0,
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
        offsets: None,
    })
}

/// [`run`] into a new `out` `[B, Nq, width]` (B is k's batch), allocated once
/// every shape and device is checked: a mismatch is named, not sized.
fn run_new<T: Element, D: Kernels<T>>(
    q: Columns<'_, T, D>,
    k: Columns<'_, T, D>,
    v: Columns<'_, T, D>,
    heads: usize,
) -> Result<DeviceBuffer<T, D>> {
    let dev = q.buf.device();
    check_device(OP, dev, k.name, k.buf)?;
    check_device(OP, dev, v.name, v.buf)?;
    let dims = attention_dims(&q, &k, &v, heads)?;
    let mut out = DeviceBuffer::uninit(dev, &[dims.batch, dims.q_len, dims.width()])?;
    run(q, k, v, heads, &mut out)?;
    Ok(out)
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
    run_new(
        Columns::all("q", q),
        Columns::all("k", k),
        Columns::all("v", v),
        heads,
    )
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

/// The `N` equal column blocks of a fused projection `buf` (`[B, N, N·W]`, or
/// a packed `[T, N·W]` when `packed`).
fn column_blocks<'a, T: Element, D: Device, const N: usize>(
    name: &'static str,
    buf: &'a DeviceBuffer<T, D>,
    packed: bool,
    expected: &str,
) -> Result<[Columns<'a, T, D>; N]> {
    let cols = buf.shape().last().copied().unwrap_or(0);
    let rank = buf.shape().len();
    let rank_ok = if packed { rank >= 2 } else { rank == 3 };
    if !rank_ok || cols % N != 0 {
        return Err(shape_err(OP, name, buf.shape(), expected.into()));
    }
    let w = cols / N;
    Ok(std::array::from_fn(|i| Columns {
        name,
        buf,
        col: i * w,
        width: w,
    }))
}

/// The three column blocks of a fused `[B, N, 3·W]` projection.
fn qkv_blocks<T: Element, D: Device>(qkv: &DeviceBuffer<T, D>) -> Result<[Columns<'_, T, D>; 3]> {
    column_blocks("qkv", qkv, false, "[B, N, 3·H·hd]")
}

/// Self-attention over a fused projection: `qkv` `[B, N, 3·H·hd]` holds q, k and
/// v as column blocks (the rows of a stacked `[3·D, D]` weight) → `[B, N, H·hd]`.
pub fn attention_qkv<T: Element, D: Kernels<T>>(
    qkv: &DeviceBuffer<T, D>,
    heads: usize,
) -> Result<DeviceBuffer<T, D>> {
    let [q, k, v] = qkv_blocks(qkv)?;
    run_new(q, k, v, heads)
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
    column_blocks("kv", kv, false, "[B, Nk, 2·H·hd]")
}

/// Attention of `q` `[Bq, Nq, H·hd]` over a fused key-value projection `kv`
/// `[B, Nk, 2·H·hd]` (k then v) → `[B, Nq, H·hd]` (the pooling head).
pub fn attention_q_kv<T: Element, D: Kernels<T>>(
    q: &DeviceBuffer<T, D>,
    kv: &DeviceBuffer<T, D>,
    heads: usize,
) -> Result<DeviceBuffer<T, D>> {
    let [k, v] = kv_blocks(kv)?;
    run_new(Columns::all("q", q), k, v, heads)
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

// ---------------------------------------------------------------------------
// Packed batches.

/// (rows, row stride) of a packed `[.., ld]` tensor: every axis but the last is
/// rows (`[T, ld]` or `[1, T, ld]`).
fn packed_geometry<T: Element, D: Device>(
    c: &Columns<'_, T, D>,
    expected: &str,
) -> Result<(usize, usize)> {
    match c.buf.shape() {
        [rows @ .., ld] if !rows.is_empty() => Ok((rows.iter().product(), *ld)),
        s => Err(shape_err(OP, c.name, s, expected.into())),
    }
}

fn check_heads<T: Element, D: Device>(c: &Columns<'_, T, D>, heads: usize) -> Result<()> {
    if heads == 0 || c.width == 0 || !c.width.is_multiple_of(heads) {
        return Err(shape_err(
            OP,
            c.name,
            c.buf.shape(),
            format!("a width divisible by the {heads} heads"),
        ));
    }
    Ok(())
}

fn rows_err(name: &str, shape: &[usize], seg: &Segments) -> Error {
    Error::Input {
        tensor: name.into(),
        msg: format!(
            "shape {shape:?} has {} rows, but the packed batch's {} sequences have {} together",
            shape[..shape.len().saturating_sub(1)]
                .iter()
                .product::<usize>(),
            seg.count(),
            seg.total()
        ),
    }
}

/// Self-attention over a packed batch: `qkv` `[T, 3·H·hd]` (or `[1, T, ..]`) holds
/// the fused projection of every sequence's rows, `seg` says where each sequence
/// is; each row attends to the rows of its own sequence only → `out` `[T, H·hd]`
/// (same leading shape as `qkv`).
pub fn attention_qkv_packed_into<T: Element, D: Kernels<T>>(
    qkv: &DeviceBuffer<T, D>,
    seg: &Segments,
    heads: usize,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    let [q, k, v] = column_blocks("qkv", qkv, true, "[T, 3·H·hd]")?;
    let w = q.width;
    let (rows, ld) = packed_geometry(&q, "[T, 3·H·hd]")?;
    check_heads(&q, heads)?;
    if rows != seg.total() {
        return Err(rows_err("qkv", qkv.shape(), seg));
    }
    let dev = qkv.device().clone();
    let mut out_shape = qkv.shape().to_vec();
    if let Some(last) = out_shape.last_mut() {
        *last = w;
    }
    prepare_out(OP, &dev, out, &out_shape)?;
    let dims = AttentionDims {
        batch: seg.count(),
        heads,
        head_dim: w / heads,
        q_len: seg.max_len(),
        kv_len: seg.max_len(),
        q_broadcast: false,
        layout: AttentionLayout {
            q_col: q.col,
            k_col: k.col,
            v_col: v.col,
            ldq: ld,
            ldkv: ld,
            ldo: w,
        },
        packing: Packing::Packed,
        packed_rows: rows,
    };
    dev.attention(AttentionArgs {
        q: q.buf.storage(),
        k: k.buf.storage(),
        v: v.buf.storage(),
        out: out.storage_mut(),
        dims,
        offsets: Some(seg.offsets()),
    })
}

/// Attention of `q` `[Bq, Nq, H·hd]` (Bq = the number of sequences, or 1 to share
/// the queries: the pooling head's probe) over the packed key-value projection
/// `kv` `[T, 2·H·hd]` (k then v; or `[1, T, ..]`): sequence b's queries see only
/// rows `seg.range(b)` of `kv` → `out` `[B, Nq, H·hd]`.
pub fn attention_q_kv_packed_into<T: Element, D: Kernels<T>>(
    q: &DeviceBuffer<T, D>,
    kv: &DeviceBuffer<T, D>,
    seg: &Segments,
    heads: usize,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    let [k, v] = column_blocks("kv", kv, true, "[T, 2·H·hd]")?;
    let w = k.width;
    let qc = Columns::all("q", q);
    let (kv_rows, ldkv) = packed_geometry(&k, "[T, 2·H·hd]")?;
    let (bq, q_len, ldq) = qc.geometry("[B, Nq, H·hd]")?;
    let batch = seg.count();
    if qc.width != w || (bq != batch && bq != 1) {
        return Err(Error::ShapeMismatch {
            op: OP,
            a: "q".into(),
            a_shape: q.shape().to_vec(),
            b: "kv".into(),
            b_shape: kv.shape().to_vec(),
        });
    }
    check_heads(&qc, heads)?;
    if kv_rows != seg.total() {
        return Err(rows_err("kv", kv.shape(), seg));
    }
    let dev = q.device().clone();
    check_device(OP, &dev, "kv", kv)?;
    prepare_out(OP, &dev, out, &[batch, q_len, w])?;
    if out.is_empty() {
        return Ok(());
    }
    let dims = AttentionDims {
        batch,
        heads,
        head_dim: w / heads,
        q_len,
        kv_len: seg.max_len(),
        q_broadcast: bq != batch,
        layout: AttentionLayout {
            q_col: 0,
            k_col: k.col,
            v_col: v.col,
            ldq,
            ldkv,
            ldo: w,
        },
        packing: Packing::PackedKeys,
        packed_rows: kv_rows,
    };
    dev.attention(AttentionArgs {
        q: qc.buf.storage(),
        k: k.buf.storage(),
        v: v.buf.storage(),
        out: out.storage_mut(),
        dims,
        offsets: Some(seg.offsets()),
    })
}
