//! Memory-gated attention's read (gate, then read + concat) and write steps on
//! CUDA: kernels/memory.ptx.

use super::launch::grid_stride_blocks;
use super::launch::{cfg, entry, Arg};
use super::Cuda;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::index32 as u32_of;
use crate::ops::{MemoryReadArgs, MemoryWriteArgs};

pub(super) fn memory_read<T: Element>(dev: &Cuda, a: MemoryReadArgs<'_, T, Cuda>) -> Result<()> {
    const OP: &str = "memory_read";
    let d = a.dims;
    let b = u32_of(OP, "batch", d.batch)?;
    let n = u32_of(OP, "tokens", d.tokens)?;
    let e = u32_of(OP, "experts", d.experts)?;
    let m = u32_of(OP, "slots", d.slots)?;
    let h = u32_of(OP, "hidden", d.hidden)?;
    u32_of(OP, "bank", d.batch * d.experts * d.slots * d.hidden)?;
    let joint_len = d.batch * (d.slots + d.tokens) * d.hidden;
    u32_of(OP, "joint", joint_len)?;
    let smem = (d.hidden + d.experts) * 4;
    if smem > 48 * 1024 || d.batch > 65_535 {
        return Err(Error::Unsupported {
            op: OP,
            msg: format!(
                "hidden {} + experts {} too large for the gate kernel's shared memory, \
                 or batch {} > 65535",
                d.hidden, d.experts, d.batch
            ),
        });
    }
    dev.launch(
        OP,
        "memory",
        &entry::<T>("memory_read_gate"),
        cfg((b, 1, 1), (256, 1, 1), smem as u32),
        &mut [
            Arg::In(&a.h.buf),
            Arg::In(&a.router_weight.buf),
            Arg::In(&a.router_bias.buf),
            Arg::Out(&mut a.gate.buf),
            Arg::U32(n),
            Arg::U32(e),
            Arg::U32(h),
        ],
    )?;
    if joint_len == 0 {
        return Ok(());
    }
    dev.launch(
        OP,
        "memory",
        &entry::<T>("memory_read_mix"),
        cfg((grid_stride_blocks(joint_len), 1, 1), (256, 1, 1), 0),
        &mut [
            Arg::In(&a.h.buf),
            Arg::In(&a.bank.buf),
            Arg::In(&a.gate.buf),
            Arg::Out(&mut a.joint.buf),
            Arg::U32(b),
            Arg::U32(n),
            Arg::U32(e),
            Arg::U32(m),
            Arg::U32(h),
        ],
    )
}

pub(super) fn memory_write<T: Element>(dev: &Cuda, a: MemoryWriteArgs<'_, T, Cuda>) -> Result<()> {
    const OP: &str = "memory_write";
    let d = a.dims;
    let bank_len = d.batch * d.experts * d.slots * d.hidden;
    let out_len = d.batch * d.tokens * d.hidden;
    let total = u32_of(OP, "bank + out", bank_len + out_len)?;
    if total == 0 {
        return Ok(());
    }
    dev.launch(
        OP,
        "memory",
        &entry::<T>(OP),
        cfg((grid_stride_blocks(total as usize), 1, 1), (256, 1, 1), 0),
        &mut [
            Arg::Out(&mut a.bank.buf),
            Arg::In(&a.gate.buf),
            Arg::In(&a.o.buf),
            Arg::In(&a.residual.buf),
            Arg::Out(&mut a.out.buf),
            Arg::U32(d.batch as u32),
            Arg::U32(d.tokens as u32),
            Arg::U32(d.experts as u32),
            Arg::U32(d.slots as u32),
            Arg::U32(d.hidden as u32),
        ],
    )
}
