//! Memory-gated attention's read and write steps on wgpu: shaders/memory_read.wgsl
//! (a gate pass, then the read + concat pass, in one compute pass) and
//! shaders/memory_write.wgsl.

use super::launch::{u32_of, uniform};
use super::shaders::Shader;
use super::Wgpu;
use crate::element::Element;
use crate::error::Result;
use crate::ops::{MemoryReadArgs, MemoryWriteArgs};

uniform! {
    /// `Params` of shaders/memory_read.wgsl.
    pub(super) struct MemoryReadParams {
        batch: u32,
        tokens: u32,
        experts: u32,
        slots: u32,
        hidden: u32,
        joint_len: u32,
        inv_tokens: f32,
    }
    pad 1
}

uniform! {
    /// `Params` of shaders/memory_write.wgsl.
    pub(super) struct MemoryWriteParams {
        batch: u32,
        tokens: u32,
        experts: u32,
        slots: u32,
        hidden: u32,
        bank_len: u32,
        out_len: u32,
        bank_words: u32,
    }
    pad 0
}

pub(super) fn memory_read<T: Element>(dev: &Wgpu, a: MemoryReadArgs<'_, T, Wgpu>) -> Result<()> {
    const OP: &str = "memory_read";
    let d = a.dims;
    let joint_len = d.batch * (d.slots + d.tokens) * d.hidden;
    u32_of(OP, "bank", d.batch * d.experts * d.slots * d.hidden)?;
    let params = MemoryReadParams {
        batch: u32_of(OP, "batch", d.batch)?,
        tokens: u32_of(OP, "tokens", d.tokens)?,
        experts: u32_of(OP, "experts", d.experts)?,
        slots: u32_of(OP, "slots", d.slots)?,
        hidden: u32_of(OP, "hidden", d.hidden)?,
        joint_len: u32_of(OP, "joint", joint_len)?,
        inv_tokens: 1.0 / d.tokens as f32,
        _pad: Default::default(),
    };
    let (dt, shader) = (T::DTYPE, Shader::MemoryRead);
    let gate = dev.pipeline::<MemoryReadParams>(shader, dt, dt, "gate_main")?;
    let read = dev.pipeline::<MemoryReadParams>(shader, dt, dt, "read_main")?;
    // One invocation per 32-bit word of the joint sequence.
    let read_groups = (joint_len as u64)
        .div_ceil(2)
        .div_ceil(read.workgroup_invocations()?);
    dev.launch(
        OP,
        &params,
        &[
            ("h", &a.h.buffer),
            ("bank", &a.bank.buffer),
            ("rw", &a.router_weight.buffer),
            ("rb", &a.router_bias.buffer),
            ("joint", &a.joint.buffer),
            ("gate", &a.gate.buffer),
        ],
        // The read step sees the gate written by the first dispatch.
        &[(&gate, d.batch as u64), (&read, read_groups)],
    )
}

pub(super) fn memory_write<T: Element>(dev: &Wgpu, a: MemoryWriteArgs<'_, T, Wgpu>) -> Result<()> {
    const OP: &str = "memory_write";
    let d = a.dims;
    let bank_len = d.batch * d.experts * d.slots * d.hidden;
    let out_len = d.batch * d.tokens * d.hidden;
    u32_of(OP, "o", d.batch * (d.slots + d.tokens) * d.hidden)?;
    let bank_words = bank_len.div_ceil(2);
    let words = bank_words + out_len.div_ceil(2);
    let params = MemoryWriteParams {
        batch: u32_of(OP, "batch", d.batch)?,
        tokens: u32_of(OP, "tokens", d.tokens)?,
        experts: u32_of(OP, "experts", d.experts)?,
        slots: u32_of(OP, "slots", d.slots)?,
        hidden: u32_of(OP, "hidden", d.hidden)?,
        bank_len: u32_of(OP, "bank", bank_len)?,
        out_len: u32_of(OP, "out", out_len)?,
        bank_words: u32_of(OP, "bank words", bank_words)?,
        _pad: Default::default(),
    };
    let p = dev.pipeline::<MemoryWriteParams>(Shader::MemoryWrite, T::DTYPE, T::DTYPE, "main")?;
    let groups = (words as u64).div_ceil(p.workgroup_invocations()?);
    dev.launch(
        OP,
        &params,
        &[
            ("bank", &a.bank.buffer),
            ("gate", &a.gate.buffer),
            ("o", &a.o.buffer),
            ("res", &a.residual.buffer),
            ("dst", &a.out.buffer),
        ],
        &[(&p, groups)],
    )
}
