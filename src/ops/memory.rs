//! Memory-gated attention's read (gate, read, concat) and write (gated
//! write, split, residual) steps (MODEL.md, "Memory-gated attention").

use super::Kernels;
use super::{check_device, expect_shape, prepare_named_out, prepare_out, shape_err};
use crate::buffer::DeviceBuffer;
use crate::device::Device;
use crate::element::Element;
use crate::error::Result;

/// Sizes of the memory-gated attention's read and write steps: tokens `[B, N, D]`,
/// bank `[B, E, M, D]`, gate `[B, E]`, joint sequence `[B, M + N, D]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryDims {
    /// B.
    pub batch: usize,
    /// N, tokens per sequence.
    pub tokens: usize,
    /// E, the bank's experts.
    pub experts: usize,
    /// M, slots per expert.
    pub slots: usize,
    /// D, the hidden width.
    pub hidden: usize,
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
    // The joint sequence [B, M + N, D] must be countable.
    let joint = slots
        .checked_add(tokens)
        .and_then(|r| r.checked_mul(hidden)?.checked_mul(batch));
    if joint.is_none() {
        return Err(shape_err(
            op,
            "bank",
            bank.shape(),
            format!(
                "slots M with N = {tokens} tokens whose joint [B, M + N, D] has a countable size"
            ),
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
    prepare_named_out(
        OP,
        &dev,
        "joint",
        joint,
        &[m.batch, m.slots + m.tokens, m.hidden],
    )?;
    prepare_named_out(OP, &dev, "gate", gate, &[m.batch, m.experts])?;
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
