//! Memory-gated attention's read (gate, then read + concat) and write steps on
//! CUDA: kernels/memory.ptx.

use super::launch::{grid_stride_blocks, Launcher};
use super::manifest as m;
use super::Cuda;
use crate::element::{DType, Element};
use crate::error::{Error, Result};
use crate::ops::{index32, MemoryDims, MemoryReadArgs, MemoryWriteArgs};

pub(super) fn memory_read<T: Element>(dev: &Cuda, a: MemoryReadArgs<'_, T, Cuda>) -> Result<()> {
    let o = ReadOperands {
        h: &a.h.buf,
        bank: &a.bank.buf,
        router_weight: &a.router_weight.buf,
        router_bias: &a.router_bias.buf,
        joint: &mut a.joint.buf,
        gate: &mut a.gate.buf,
    };
    launch_read(dev, T::DTYPE, o, a.dims)
}

/// The memory read's buffers on a [`Launcher`] (`gate` holds f32).
pub(super) struct ReadOperands<'a, B> {
    pub h: &'a B,
    pub bank: &'a B,
    pub router_weight: &'a B,
    pub router_bias: &'a B,
    pub joint: &'a mut B,
    pub gate: &'a mut B,
}

/// The memory read of element type `dtype` over `a`, sized by `d` (checked by
/// the op's front): the gate (split over the tokens where that pays), then the
/// read and concatenation, launched on `dev`.
pub(super) fn launch_read<L: Launcher>(
    dev: &L,
    dtype: DType,
    a: ReadOperands<'_, L::Buf>,
    d: MemoryDims,
) -> Result<()> {
    const OP: &str = "memory_read";
    let b = index32(OP, "batch", d.batch)?;
    let n = index32(OP, "tokens", d.tokens)?;
    let e = index32(OP, "experts", d.experts)?;
    let mm = index32(OP, "slots", d.slots)?;
    let h = index32(OP, "hidden", d.hidden)?;
    index32(OP, "bank", d.batch * d.experts * d.slots * d.hidden)?;
    let joint_len = d.batch * (d.slots + d.tokens) * d.hidden;
    index32(OP, "joint", joint_len)?;
    if d.batch > 65_535 {
        return Err(Error::Unsupported {
            op: OP,
            msg: format!("batch {} > 65535", d.batch),
        });
    }
    let (gate, part, finish, mix) = match dtype {
        DType::F32 => (
            &m::memory_read_gate_f32::SPEC,
            &m::memory_read_gate_part_f32::SPEC,
            &m::memory_read_gate_finish_f32::SPEC,
            &m::memory_read_mix_f32::SPEC,
        ),
        DType::BF16 => (
            &m::memory_read_gate_bf16::SPEC,
            &m::memory_read_gate_part_bf16::SPEC,
            &m::memory_read_gate_finish_bf16::SPEC,
            &m::memory_read_mix_bf16::SPEC,
        ),
    };
    let rows = match dtype {
        DType::F32 => m::memory_read_gate_part_f32::ROWS,
        DType::BF16 => m::memory_read_gate_part_bf16::ROWS,
    } as usize;
    // mean[D] and logits[E] in dynamic shared memory; `launch` checks it, with the
    // kernel's static bytes, against the limits.
    let smem = index32(OP, "gate shared memory", (d.hidden + d.experts) * 4)?;
    // The gate reads all of h: one block per sequence leaves most of the GPU idle
    // (0.165 ms for one so400m sequence on an H100). Split over the tokens, each
    // block of ROWS tokens writes its share of the E logits (f32) to scratch, and
    // a second kernel adds them up and takes the softmax. The scratch is the
    // start of `joint`, which the mix kernel overwrites next; where it does not
    // fit there (tiny D with many experts; its f32 stores also want an aligned
    // base), or one block holds all the tokens, the gate stays one block per
    // sequence.
    let splits = d.tokens.div_ceil(rows);
    let scratch = d
        .batch
        .checked_mul(splits)
        .and_then(|x| x.checked_mul(d.experts))
        .and_then(|x| x.checked_mul(4));
    let scratch_fits =
        scratch.is_some_and(|s| s <= joint_len * dtype.size()) && dev.aligned16(a.joint);
    if splits > 1 && splits <= 65_535 && scratch_fits {
        dev.launch(
            OP,
            part,
            (b, splits as u32, 1),
            smem,
            m::MemoryGatePartArgs {
                h: a.h,
                rw: a.router_weight,
                part: &mut *a.joint,
                n,
                e,
                d: h,
            },
        )?;
        dev.launch(
            OP,
            finish,
            (b, 1, 1),
            index32(OP, "gate shared memory", d.experts * 4)?,
            m::MemoryGateFinishArgs {
                part: &*a.joint,
                rb: a.router_bias,
                gate: &mut *a.gate,
                s: splits as u32,
                e,
            },
        )?;
    } else {
        dev.launch(
            OP,
            gate,
            (b, 1, 1),
            smem,
            m::MemoryGateArgs {
                h: a.h,
                rw: a.router_weight,
                rb: a.router_bias,
                gate: &mut *a.gate,
                n,
                e,
                d: h,
            },
        )?;
    }
    dev.launch(
        OP,
        mix,
        (grid_stride_blocks(joint_len, mix.threads), 1, 1),
        0,
        m::MemoryMixArgs {
            h: a.h,
            bank: a.bank,
            gate: &*a.gate,
            joint: a.joint,
            b,
            n,
            e,
            m: mm,
            d: h,
        },
    )
}

pub(super) fn memory_write<T: Element>(dev: &Cuda, a: MemoryWriteArgs<'_, T, Cuda>) -> Result<()> {
    let o = WriteOperands {
        bank: &mut a.bank.buf,
        gate: &a.gate.buf,
        o: &a.o.buf,
        residual: &a.residual.buf,
        out: &mut a.out.buf,
    };
    launch_write(dev, T::DTYPE, o, a.dims)
}

/// The memory write's buffers on a [`Launcher`] (`gate` holds f32).
pub(super) struct WriteOperands<'a, B> {
    pub bank: &'a mut B,
    pub gate: &'a B,
    pub o: &'a B,
    pub residual: &'a B,
    pub out: &'a mut B,
}

/// The memory write of element type `dtype` over `a`, sized by `d` (checked by
/// the op's front), launched on `dev`.
pub(super) fn launch_write<L: Launcher>(
    dev: &L,
    dtype: DType,
    a: WriteOperands<'_, L::Buf>,
    d: MemoryDims,
) -> Result<()> {
    const OP: &str = "memory_write";
    let bank_len = d.batch * d.experts * d.slots * d.hidden;
    let out_len = d.batch * d.tokens * d.hidden;
    let total = index32(OP, "bank + out", bank_len + out_len)?;
    if total == 0 {
        return Ok(());
    }
    let spec = match dtype {
        DType::F32 => &m::memory_write_f32::SPEC,
        DType::BF16 => &m::memory_write_bf16::SPEC,
    };
    dev.launch(
        OP,
        spec,
        (grid_stride_blocks(total as usize, spec.threads), 1, 1),
        0,
        m::MemoryWriteArgs {
            bank: a.bank,
            gate: a.gate,
            o: a.o,
            res: a.residual,
            out: a.out,
            b: index32(OP, "batch", d.batch)?,
            n: index32(OP, "tokens", d.tokens)?,
            e: index32(OP, "experts", d.experts)?,
            m: index32(OP, "slots", d.slots)?,
            d: index32(OP, "hidden", d.hidden)?,
        },
    )
}
