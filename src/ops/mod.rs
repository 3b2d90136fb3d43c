//! The op surface. Each op has a public front function here (`linear`,
//! `linear_into`, …) that checks shapes and device identity once, and a
//! method of [`Kernels`] that each backend implements (`src/cpu`, `src/cuda`,
//! `src/wgpu`). Backends receive an argument struct that only this module can
//! build, so they never see an unchecked shape.
//!
//! Layout conventions (row-major, last axis fastest):
//! - activations `[.., D]`; `Linear(x) = x Wᵀ + b` with `W` stored `[out, in]`;
//! - attention heads are contiguous `hd`-wide slices of the `D` axis;
//! - the memory bank of one layer is `[B, E, M, D]`.

use crate::buffer::DeviceBuffer;
use crate::device::Device;
use crate::element::Element;
use crate::error::{Error, Result};

/// Fused activation of a linear layer's epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// Identity.
    #[default]
    None,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (PyTorch's `gelu(approximate="tanh")`).
    GeluTanh,
}

/// Sizes of a patch embedding: pixels `[B, C, I, I]` → tokens `[B, N, D]`,
/// N = ⌊I/P⌋² (pixels past ⌊I/P⌋·P on either side are not read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchEmbedDims {
    pub batch: usize,
    pub channels: usize,
    pub image: usize,
    pub patch: usize,
    pub hidden: usize,
}

impl PatchEmbedDims {
    /// Patches per image side, ⌊I/P⌋.
    pub fn grid(&self) -> usize {
        self.image / self.patch
    }
    /// Tokens per image, N = ⌊I/P⌋².
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid()
    }
    /// Length of one flattened patch, C·P·P (the GEMM's K).
    pub fn patch_len(&self) -> usize {
        self.channels * self.patch * self.patch
    }
}

/// Sizes of a linear layer: `rows × in_features` times `[out_features, in_features]ᵀ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearDims {
    pub rows: usize,
    pub in_features: usize,
    pub out_features: usize,
    pub activation: Activation,
    pub has_bias: bool,
    pub has_residual: bool,
}

/// Sizes of a layer norm over the last axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerNormDims {
    pub rows: usize,
    pub cols: usize,
    pub eps: f32,
}

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

/// Sizes of the memory-gated attention's read and write steps: tokens `[B, N, D]`,
/// bank `[B, E, M, D]`, gate `[B, E]`, joint sequence `[B, M + N, D]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryDims {
    pub batch: usize,
    pub tokens: usize,
    pub experts: usize,
    pub slots: usize,
    pub hidden: usize,
}

/// Arguments of [`Kernels::patch_embed`]: `out[b,n,d] = bias[d] + pos[n,d] + Σ_k
/// patch[b,n,k]·weight[d,k]`, with k = c·P·P + py·P + px and patches in row-major
/// grid order.
pub struct PatchEmbedArgs<'a, T: Element, D: Device> {
    pub(crate) pixels: &'a D::Storage<T>,
    pub(crate) weight: &'a D::Storage<T>,
    pub(crate) bias: &'a D::Storage<T>,
    pub(crate) position: &'a D::Storage<T>,
    pub(crate) out: &'a mut D::Storage<T>,
    pub(crate) dims: PatchEmbedDims,
}

/// Arguments of [`Kernels::linear`]: `out = residual + act(x Wᵀ + bias)`, bias and
/// residual optional.
pub struct LinearArgs<'a, T: Element, D: Device> {
    pub(crate) x: &'a D::Storage<T>,
    pub(crate) weight: &'a D::Storage<T>,
    pub(crate) bias: Option<&'a D::Storage<T>>,
    pub(crate) residual: Option<&'a D::Storage<T>>,
    pub(crate) out: &'a mut D::Storage<T>,
    pub(crate) dims: LinearDims,
}

/// Arguments of [`Kernels::layer_norm`]: per row, `(x − μ)/√(σ² + eps)·w + b`,
/// biased variance, statistics in f32.
pub struct LayerNormArgs<'a, T: Element, D: Device> {
    pub(crate) x: &'a D::Storage<T>,
    pub(crate) weight: &'a D::Storage<T>,
    pub(crate) bias: &'a D::Storage<T>,
    pub(crate) out: &'a mut D::Storage<T>,
    pub(crate) dims: LayerNormDims,
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

/// Arguments of [`Kernels::memory_read`] (MODEL.md steps 1–3, before the attention):
/// - gate: `g[b] = softmax_E(router_w · mean_N(h[b]) + router_b)`, written to `gate` in f32;
/// - read: `m[b] = Σ_e g[b,e]·bank[b,e]` `[M, D]`;
/// - concat: `joint[b] = [m[b]; h[b]]`, memory rows first, `[M + N, D]`.
pub struct MemoryReadArgs<'a, T: Element, D: Device> {
    pub(crate) h: &'a D::Storage<T>,
    pub(crate) bank: &'a D::Storage<T>,
    pub(crate) router_weight: &'a D::Storage<T>,
    pub(crate) router_bias: &'a D::Storage<T>,
    pub(crate) joint: &'a mut D::Storage<T>,
    pub(crate) gate: &'a mut D::Storage<f32>,
    pub(crate) dims: MemoryDims,
}

/// Arguments of [`Kernels::memory_write`] (MODEL.md steps 4–5, after out_proj):
/// - write, in place: `bank[b,e] = (1 − g[b,e])·bank[b,e] + g[b,e]·o[b, :M]`;
/// - split + residual: `out[b] = residual[b] + o[b, M:]`.
pub struct MemoryWriteArgs<'a, T: Element, D: Device> {
    pub(crate) bank: &'a mut D::Storage<T>,
    pub(crate) gate: &'a D::Storage<f32>,
    pub(crate) o: &'a D::Storage<T>,
    pub(crate) residual: &'a D::Storage<T>,
    pub(crate) out: &'a mut D::Storage<T>,
    pub(crate) dims: MemoryDims,
}

/// Arguments of [`Kernels::add`]: `out = a + b` elementwise.
pub struct AddArgs<'a, T: Element, D: Device> {
    pub(crate) a: &'a D::Storage<T>,
    pub(crate) b: &'a D::Storage<T>,
    pub(crate) out: &'a mut D::Storage<T>,
    pub(crate) len: usize,
}

/// Arguments of [`Kernels::cast`]: `out[i] = U::from_f32(x[i].to_f32())`.
pub struct CastArgs<'a, T: Element, U: Element, D: Device> {
    pub(crate) x: &'a D::Storage<T>,
    pub(crate) out: &'a mut D::Storage<U>,
    pub(crate) len: usize,
}

/// The kernels a backend provides for element type `T`. Implemented by `Cpu`,
/// `Cuda` and `Wgpu` for `f32` and `bf16`; the model layer is written once against
/// this trait. Call the front functions of [`crate::ops`] rather than these methods:
/// the argument structs can only be built there, after every check.
pub trait Kernels<T: Element>: Device {
    fn patch_embed(&self, args: PatchEmbedArgs<'_, T, Self>) -> Result<()>;
    fn linear(&self, args: LinearArgs<'_, T, Self>) -> Result<()>;
    fn layer_norm(&self, args: LayerNormArgs<'_, T, Self>) -> Result<()>;
    fn attention(&self, args: AttentionArgs<'_, T, Self>) -> Result<()>;
    fn memory_read(&self, args: MemoryReadArgs<'_, T, Self>) -> Result<()>;
    fn memory_write(&self, args: MemoryWriteArgs<'_, T, Self>) -> Result<()>;
    fn add(&self, args: AddArgs<'_, T, Self>) -> Result<()>;
    fn cast<U: Element>(&self, args: CastArgs<'_, T, U, Self>) -> Result<()>
    where
        Self: Kernels<U>;
}

// ---------------------------------------------------------------------------
// Checks shared by every front function.

fn check_device<T: Element, D: Device>(
    op: &'static str,
    device: &D,
    name: &str,
    buf: &DeviceBuffer<T, D>,
) -> Result<()> {
    if device.same_device(buf.device()) {
        Ok(())
    } else {
        Err(Error::DeviceMismatch {
            op,
            tensor: name.to_string(),
            found: buf.device().describe(),
            expected: device.describe(),
        })
    }
}

fn shape_err(op: &'static str, tensor: &str, got: &[usize], expected: String) -> Error {
    Error::Shape {
        op,
        tensor: tensor.to_string(),
        got: got.to_vec(),
        expected,
    }
}

fn expect_shape<T: Element, D: Device>(
    op: &'static str,
    name: &str,
    buf: &DeviceBuffer<T, D>,
    want: &[usize],
) -> Result<()> {
    if buf.shape() == want {
        Ok(())
    } else {
        Err(shape_err(op, name, buf.shape(), format!("{want:?}")))
    }
}

/// Split `[.., last]` into (rows, last); rank ≥ 1.
fn rows_cols(op: &'static str, name: &str, shape: &[usize]) -> Result<(usize, usize)> {
    match shape.split_last() {
        Some((&last, lead)) => Ok((lead.iter().product(), last)),
        None => Err(shape_err(op, name, shape, "rank ≥ 1".into())),
    }
}

/// Make sure an `out` buffer exists for `shape` (reusing it when it already fits).
fn prepare_out<T: Element, D: Device>(
    op: &'static str,
    device: &D,
    out: &DeviceBuffer<T, D>,
    shape: &[usize],
) -> Result<()> {
    check_device(op, device, "out", out)?;
    expect_shape(op, "out", out, shape)
}

// ---------------------------------------------------------------------------
// Patch embedding.

/// Patch embedding fused with bias and position embedding: pixels `[B, C, I, I]`,
/// weight `[D, C, P, P]` (or flattened `[D, C·P·P]`), bias `[D]`, position `[N, D]`
/// → `[B, N, D]`, N = ⌊I/P⌋². As PyTorch's stride-P Conv2d, the last I mod P
/// rows and columns of each image are not used.
pub fn patch_embed<T: Element, D: Kernels<T>>(
    pixels: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    bias: &DeviceBuffer<T, D>,
    position: &DeviceBuffer<T, D>,
    patch: usize,
) -> Result<DeviceBuffer<T, D>> {
    let dims = patch_embed_dims(pixels, weight, patch)?;
    let mut out = DeviceBuffer::uninit(pixels.device(), &[dims.batch, dims.tokens(), dims.hidden])?;
    patch_embed_into(pixels, weight, bias, position, patch, &mut out)?;
    Ok(out)
}

fn patch_embed_dims<T: Element, D: Device>(
    pixels: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    patch: usize,
) -> Result<PatchEmbedDims> {
    const OP: &str = "patch_embed";
    let &[batch, channels, height, width] = pixels.shape() else {
        return Err(shape_err(
            OP,
            "pixels",
            pixels.shape(),
            "[B, C, I, I]".into(),
        ));
    };
    // The stride-P convolution covers the first ⌊I/P⌋·P pixels of each side;
    // it needs at least one patch.
    if height != width || patch == 0 || height < patch {
        return Err(shape_err(
            OP,
            "pixels",
            pixels.shape(),
            format!("square images at least as large as the patch size {patch}"),
        ));
    }
    let hidden = weight.shape().first().copied().unwrap_or(0);
    let dims = PatchEmbedDims {
        batch,
        channels,
        image: height,
        patch,
        hidden,
    };
    let conv = [hidden, channels, patch, patch];
    let flat = [hidden, dims.patch_len()];
    if weight.shape() != conv && weight.shape() != flat {
        return Err(shape_err(
            OP,
            "weight",
            weight.shape(),
            format!("{conv:?} or {flat:?}"),
        ));
    }
    Ok(dims)
}

/// [`patch_embed`] writing into an existing `out` `[B, N, D]`.
pub fn patch_embed_into<T: Element, D: Kernels<T>>(
    pixels: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    bias: &DeviceBuffer<T, D>,
    position: &DeviceBuffer<T, D>,
    patch: usize,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    const OP: &str = "patch_embed";
    let dev = pixels.device().clone();
    let dims = patch_embed_dims(pixels, weight, patch)?;
    for (name, b) in [("weight", weight), ("bias", bias), ("position", position)] {
        check_device(OP, &dev, name, b)?;
    }
    expect_shape(OP, "bias", bias, &[dims.hidden])?;
    expect_shape(OP, "position", position, &[dims.tokens(), dims.hidden])?;
    prepare_out(OP, &dev, out, &[dims.batch, dims.tokens(), dims.hidden])?;
    if out.is_empty() {
        return Ok(());
    }
    dev.patch_embed(PatchEmbedArgs {
        pixels: pixels.storage(),
        weight: weight.storage(),
        bias: bias.storage(),
        position: position.storage(),
        out: out.storage_mut(),
        dims,
    })
}

// ---------------------------------------------------------------------------
// Linear.

/// `residual + act(x Wᵀ + bias)`: x `[.., K]`, weight `[N, K]`, bias `[N]`,
/// residual `[.., N]` → `[.., N]`.
pub fn linear<T: Element, D: Kernels<T>>(
    x: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    bias: Option<&DeviceBuffer<T, D>>,
    activation: Activation,
    residual: Option<&DeviceBuffer<T, D>>,
) -> Result<DeviceBuffer<T, D>> {
    let shape = linear_out_shape(x, weight)?;
    let mut out = DeviceBuffer::uninit(x.device(), &shape)?;
    linear_into(x, weight, bias, activation, residual, &mut out)?;
    Ok(out)
}

fn linear_out_shape<T: Element, D: Device>(
    x: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
) -> Result<Vec<usize>> {
    const OP: &str = "linear";
    let (_, k) = rows_cols(OP, "x", x.shape())?;
    let &[n, wk] = weight.shape() else {
        return Err(shape_err(OP, "weight", weight.shape(), "[out, in]".into()));
    };
    if wk != k {
        return Err(Error::ShapeMismatch {
            op: OP,
            a: "x".into(),
            a_shape: x.shape().to_vec(),
            b: "weight".into(),
            b_shape: weight.shape().to_vec(),
        });
    }
    let mut shape = x.shape().to_vec();
    match shape.last_mut() {
        Some(last) => *last = n,
        None => return Err(shape_err(OP, "x", x.shape(), "rank ≥ 1".into())),
    }
    Ok(shape)
}

/// [`linear`] writing into an existing `out`.
pub fn linear_into<T: Element, D: Kernels<T>>(
    x: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    bias: Option<&DeviceBuffer<T, D>>,
    activation: Activation,
    residual: Option<&DeviceBuffer<T, D>>,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    const OP: &str = "linear";
    let dev = x.device().clone();
    let shape = linear_out_shape(x, weight)?;
    let (rows, in_features) = rows_cols(OP, "x", x.shape())?;
    let out_features = weight.shape()[0];
    check_device(OP, &dev, "weight", weight)?;
    if let Some(b) = bias {
        check_device(OP, &dev, "bias", b)?;
        expect_shape(OP, "bias", b, &[out_features])?;
    }
    if let Some(r) = residual {
        check_device(OP, &dev, "residual", r)?;
        expect_shape(OP, "residual", r, &shape)?;
    }
    prepare_out(OP, &dev, out, &shape)?;
    if out.is_empty() {
        return Ok(());
    }
    dev.linear(LinearArgs {
        x: x.storage(),
        weight: weight.storage(),
        bias: bias.map(|b| b.storage()),
        residual: residual.map(|r| r.storage()),
        out: out.storage_mut(),
        dims: LinearDims {
            rows,
            in_features,
            out_features,
            activation,
            has_bias: bias.is_some(),
            has_residual: residual.is_some(),
        },
    })
}

// ---------------------------------------------------------------------------
// Layer norm.

/// Layer norm over the last axis: x `[.., C]`, weight and bias `[C]`.
pub fn layer_norm<T: Element, D: Kernels<T>>(
    x: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    bias: &DeviceBuffer<T, D>,
    eps: f32,
) -> Result<DeviceBuffer<T, D>> {
    let mut out = DeviceBuffer::uninit(x.device(), x.shape())?;
    layer_norm_into(x, weight, bias, eps, &mut out)?;
    Ok(out)
}

/// [`layer_norm`] writing into an existing `out`.
pub fn layer_norm_into<T: Element, D: Kernels<T>>(
    x: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    bias: &DeviceBuffer<T, D>,
    eps: f32,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    const OP: &str = "layer_norm";
    let dev = x.device().clone();
    let (rows, cols) = rows_cols(OP, "x", x.shape())?;
    for (name, b) in [("weight", weight), ("bias", bias)] {
        check_device(OP, &dev, name, b)?;
        expect_shape(OP, name, b, &[cols])?;
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::Input {
            tensor: "eps".into(),
            msg: format!("layer norm eps must be finite and ≥ 0, got {eps}"),
        });
    }
    prepare_out(OP, &dev, out, x.shape())?;
    if out.is_empty() {
        return Ok(());
    }
    dev.layer_norm(LayerNormArgs {
        x: x.storage(),
        weight: weight.storage(),
        bias: bias.storage(),
        out: out.storage_mut(),
        dims: LayerNormDims { rows, cols, eps },
    })
}

// ---------------------------------------------------------------------------
// Attention.

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

// ---------------------------------------------------------------------------
// Memory-gated attention: read and write steps.

fn memory_dims<T: Element, D: Device>(
    op: &'static str,
    bank: &DeviceBuffer<T, D>,
    tokens: usize,
) -> Result<MemoryDims> {
    let &[batch, experts, slots, hidden] = bank.shape() else {
        return Err(shape_err(op, "bank", bank.shape(), "[B, E, M, D]".into()));
    };
    if experts == 0 {
        return Err(shape_err(
            op,
            "bank",
            bank.shape(),
            "at least one expert".into(),
        ));
    }
    Ok(MemoryDims {
        batch,
        tokens,
        experts,
        slots,
        hidden,
    })
}

/// Gate, read and concat: returns `joint` `[B, M + N, D]` (memory rows first) and
/// the gate `[B, E]` (f32) for [`memory_write`]. h `[B, N, D]`, bank `[B, E, M, D]`,
/// router weight `[E, D]`, router bias `[E]`.
pub fn memory_read<T: Element, D: Kernels<T>>(
    h: &DeviceBuffer<T, D>,
    bank: &DeviceBuffer<T, D>,
    router_weight: &DeviceBuffer<T, D>,
    router_bias: &DeviceBuffer<T, D>,
) -> Result<(DeviceBuffer<T, D>, DeviceBuffer<f32, D>)> {
    let m = memory_read_dims(h, bank)?;
    let dev = h.device();
    let mut joint = DeviceBuffer::uninit(dev, &[m.batch, m.slots + m.tokens, m.hidden])?;
    let mut gate = DeviceBuffer::<f32, D>::uninit(dev, &[m.batch, m.experts])?;
    memory_read_into(h, bank, router_weight, router_bias, &mut joint, &mut gate)?;
    Ok((joint, gate))
}

fn memory_read_dims<T: Element, D: Device>(
    h: &DeviceBuffer<T, D>,
    bank: &DeviceBuffer<T, D>,
) -> Result<MemoryDims> {
    const OP: &str = "memory_read";
    let &[_, tokens, _] = h.shape() else {
        return Err(shape_err(OP, "h", h.shape(), "[B, N, D]".into()));
    };
    let m = memory_dims(OP, bank, tokens)?;
    expect_shape(OP, "h", h, &[m.batch, tokens, m.hidden])?;
    Ok(m)
}

/// [`memory_read`] writing into existing `joint` `[B, M + N, D]` and `gate` `[B, E]`.
pub fn memory_read_into<T: Element, D: Kernels<T>>(
    h: &DeviceBuffer<T, D>,
    bank: &DeviceBuffer<T, D>,
    router_weight: &DeviceBuffer<T, D>,
    router_bias: &DeviceBuffer<T, D>,
    joint: &mut DeviceBuffer<T, D>,
    gate: &mut DeviceBuffer<f32, D>,
) -> Result<()> {
    const OP: &str = "memory_read";
    let dev = h.device().clone();
    let m = memory_read_dims(h, bank)?;
    expect_shape(OP, "router.weight", router_weight, &[m.experts, m.hidden])?;
    expect_shape(OP, "router.bias", router_bias, &[m.experts])?;
    for (name, b) in [
        ("bank", bank),
        ("router.weight", router_weight),
        ("router.bias", router_bias),
    ] {
        check_device(OP, &dev, name, b)?;
    }
    prepare_out(OP, &dev, joint, &[m.batch, m.slots + m.tokens, m.hidden])?;
    prepare_out(OP, &dev, gate, &[m.batch, m.experts])?;
    if m.batch == 0 {
        return Ok(());
    }
    if m.tokens == 0 {
        return Err(shape_err(OP, "h", h.shape(), "at least one token".into()));
    }
    dev.memory_read(MemoryReadArgs {
        h: h.storage(),
        bank: bank.storage(),
        router_weight: router_weight.storage(),
        router_bias: router_bias.storage(),
        joint: joint.storage_mut(),
        gate: gate.storage_mut(),
        dims: m,
    })
}

/// Gated write into `bank` (in place) and the token rows of `o` added to the
/// residual stream: returns `residual + o[:, M:]` `[B, N, D]`. o `[B, M + N, D]`,
/// gate `[B, E]` from [`memory_read`].
pub fn memory_write<T: Element, D: Kernels<T>>(
    bank: &mut DeviceBuffer<T, D>,
    gate: &DeviceBuffer<f32, D>,
    o: &DeviceBuffer<T, D>,
    residual: &DeviceBuffer<T, D>,
) -> Result<DeviceBuffer<T, D>> {
    let mut out = DeviceBuffer::uninit(residual.device(), residual.shape())?;
    memory_write_into(bank, gate, o, residual, &mut out)?;
    Ok(out)
}

/// [`memory_write`] writing into an existing `out` `[B, N, D]`.
pub fn memory_write_into<T: Element, D: Kernels<T>>(
    bank: &mut DeviceBuffer<T, D>,
    gate: &DeviceBuffer<f32, D>,
    o: &DeviceBuffer<T, D>,
    residual: &DeviceBuffer<T, D>,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    const OP: &str = "memory_write";
    let dev = residual.device().clone();
    let &[_, tokens, _] = residual.shape() else {
        return Err(shape_err(
            OP,
            "residual",
            residual.shape(),
            "[B, N, D]".into(),
        ));
    };
    let m = memory_dims(OP, bank, tokens)?;
    expect_shape(OP, "residual", residual, &[m.batch, tokens, m.hidden])?;
    expect_shape(OP, "o", o, &[m.batch, m.slots + tokens, m.hidden])?;
    expect_shape(OP, "gate", gate, &[m.batch, m.experts])?;
    check_device(OP, &dev, "bank", bank)?;
    check_device(OP, &dev, "o", o)?;
    check_device(OP, &dev, "gate", gate)?;
    prepare_out(OP, &dev, out, residual.shape())?;
    if m.batch == 0 || m.hidden == 0 {
        return Ok(());
    }
    dev.memory_write(MemoryWriteArgs {
        bank: bank.storage_mut(),
        gate: gate.storage(),
        o: o.storage(),
        residual: residual.storage(),
        out: out.storage_mut(),
        dims: m,
    })
}

// ---------------------------------------------------------------------------
// Elementwise.

/// `a + b`, same shapes.
pub fn add<T: Element, D: Kernels<T>>(
    a: &DeviceBuffer<T, D>,
    b: &DeviceBuffer<T, D>,
) -> Result<DeviceBuffer<T, D>> {
    let mut out = DeviceBuffer::uninit(a.device(), a.shape())?;
    add_into(a, b, &mut out)?;
    Ok(out)
}

/// [`add`] writing into an existing `out`.
pub fn add_into<T: Element, D: Kernels<T>>(
    a: &DeviceBuffer<T, D>,
    b: &DeviceBuffer<T, D>,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    const OP: &str = "add";
    let dev = a.device().clone();
    check_device(OP, &dev, "b", b)?;
    if a.shape() != b.shape() {
        return Err(Error::ShapeMismatch {
            op: OP,
            a: "a".into(),
            a_shape: a.shape().to_vec(),
            b: "b".into(),
            b_shape: b.shape().to_vec(),
        });
    }
    prepare_out(OP, &dev, out, a.shape())?;
    if out.is_empty() {
        return Ok(());
    }
    let len = out.len();
    dev.add(AddArgs {
        a: a.storage(),
        b: b.storage(),
        out: out.storage_mut(),
        len,
    })
}

/// Convert the element type on the buffer's own device (see [`DeviceBuffer::cast`]).
pub fn cast<T: Element, U: Element, D: Kernels<T> + Kernels<U>>(
    x: &DeviceBuffer<T, D>,
) -> Result<DeviceBuffer<U, D>> {
    let mut out = DeviceBuffer::uninit(x.device(), x.shape())?;
    cast_into(x, &mut out)?;
    Ok(out)
}

/// [`cast`] writing into an existing `out`.
pub fn cast_into<T: Element, U: Element, D: Kernels<T> + Kernels<U>>(
    x: &DeviceBuffer<T, D>,
    out: &mut DeviceBuffer<U, D>,
) -> Result<()> {
    const OP: &str = "cast";
    let dev = x.device().clone();
    prepare_out(OP, &dev, out, x.shape())?;
    if out.is_empty() {
        return Ok(());
    }
    let len = out.len();
    <D as Kernels<T>>::cast::<U>(
        &dev,
        CastArgs {
            x: x.storage(),
            out: out.storage_mut(),
            len,
        },
    )
}
