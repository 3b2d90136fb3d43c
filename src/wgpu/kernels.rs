//! `Kernels` for `Wgpu`: each op fills its shader's uniform (dims as u32 words,
//! in the field order of the shader's `Params`), binds its tensors in binding
//! order and submits one compute pass. No op waits for the GPU or reads back.

use super::backend::Wgpu;
use super::shaders::Shader;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::*;

/// Invocations per workgroup of the elementwise shaders (one per 32-bit word).
const WG: u64 = 256;
/// Output tile of the GEMM shaders (gemm.wgsl).
const TILE: usize = 64;
/// Queries per attention workgroup and the largest head dim (attention.wgsl).
const ATTN_BQ: usize = 16;
const ATTN_MAX_HD: usize = 128;

/// A size as the u32 the shaders index with.
fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Unsupported {
        op,
        msg: format!("{what} = {v} does not fit the shaders' 32-bit indices"),
    })
}

/// Workgroups for one invocation per 32-bit word of `len` elements.
fn word_groups(len: usize) -> u64 {
    (len as u64).div_ceil(2).div_ceil(WG)
}

impl<T: Element> Kernels<T> for Wgpu {
    fn patch_embed(&self, a: PatchEmbedArgs<'_, T, Self>) -> Result<()> {
        const OP: &str = "patch_embed";
        let d = a.dims;
        let m = d.batch * d.tokens();
        let (tiles_m, tiles_n) = (m.div_ceil(TILE), d.hidden.div_ceil(TILE));
        u32_of(OP, "pixels", d.batch * d.channels * d.image * d.image)?;
        u32_of(OP, "out", m * d.hidden)?;
        let params = [
            u32_of(OP, "rows", m)?,
            u32_of(OP, "hidden", d.hidden)?,
            u32_of(OP, "patch length", d.patch_len())?,
            u32_of(OP, "row tiles", tiles_m)?,
            u32_of(OP, "column tiles", tiles_n)?,
            u32_of(OP, "channels", d.channels)?,
            u32_of(OP, "image", d.image)?,
            u32_of(OP, "patch", d.patch)?,
            u32_of(OP, "grid", d.grid())?,
            u32_of(OP, "tokens", d.tokens())?,
        ];
        let p = self.pipeline(Shader::PatchEmbed, T::DTYPE, T::DTYPE, "main")?;
        self.launch(
            OP,
            &params,
            &[
                ("pixels", &a.pixels.buffer),
                ("weight", &a.weight.buffer),
                ("bias", &a.bias.buffer),
                ("position", &a.position.buffer),
                ("out", &a.out.buffer),
            ],
            &[(&p, (tiles_m * tiles_n) as u64)],
        )
    }

    fn linear(&self, a: LinearArgs<'_, T, Self>) -> Result<()> {
        const OP: &str = "linear";
        let d = a.dims;
        let (tiles_m, tiles_n) = (d.rows.div_ceil(TILE), d.out_features.div_ceil(TILE));
        u32_of(OP, "x", d.rows * d.in_features)?;
        u32_of(OP, "weight", d.out_features * d.in_features)?;
        u32_of(OP, "out", d.rows * d.out_features)?;
        let params = [
            u32_of(OP, "rows", d.rows)?,
            u32_of(OP, "out_features", d.out_features)?,
            u32_of(OP, "in_features", d.in_features)?,
            u32_of(OP, "row tiles", tiles_m)?,
            u32_of(OP, "column tiles", tiles_n)?,
            match d.activation {
                Activation::None => 0,
                Activation::GeluTanh => 1,
            },
            d.has_bias as u32,
            d.has_residual as u32,
        ];
        let p = self.pipeline(Shader::Linear, T::DTYPE, T::DTYPE, "main")?;
        // Absent operands are bound to `x` (read-only, never read: the flags are off).
        let bias = a.bias.map_or(&a.x.buffer, |b| &b.buffer);
        let residual = a.residual.map_or(&a.x.buffer, |r| &r.buffer);
        self.launch(
            OP,
            &params,
            &[
                ("x", &a.x.buffer),
                ("weight", &a.weight.buffer),
                ("bias", bias),
                ("residual", residual),
                ("out", &a.out.buffer),
            ],
            &[(&p, (tiles_m * tiles_n) as u64)],
        )
    }

    fn layer_norm(&self, a: LayerNormArgs<'_, T, Self>) -> Result<()> {
        const OP: &str = "layer_norm";
        let d = a.dims;
        u32_of(OP, "x", d.rows * d.cols)?;
        let params = [
            u32_of(OP, "rows", d.rows)?,
            u32_of(OP, "cols", d.cols)?,
            d.eps.to_bits(),
        ];
        let p = self.pipeline(Shader::LayerNorm, T::DTYPE, T::DTYPE, "main")?;
        self.launch(
            OP,
            &params,
            &[
                ("x", &a.x.buffer),
                ("weight", &a.weight.buffer),
                ("bias", &a.bias.buffer),
                ("out", &a.out.buffer),
            ],
            &[(&p, d.rows as u64)],
        )
    }

    fn attention(&self, a: AttentionArgs<'_, T, Self>) -> Result<()> {
        const OP: &str = "attention";
        let d = a.dims;
        if d.head_dim > ATTN_MAX_HD {
            return Err(Error::Unsupported {
                op: OP,
                msg: format!(
                    "head dim {} is above the {ATTN_MAX_HD} the WGSL kernel supports",
                    d.head_dim
                ),
            });
        }
        let width = d.width();
        let q_blocks = d.q_len.div_ceil(ATTN_BQ);
        u32_of(OP, "k", d.batch * d.kv_len * width)?;
        u32_of(OP, "out", d.batch * d.q_len * width)?;
        let groups = d.batch * d.heads * q_blocks;
        let params = [
            u32_of(OP, "batch", d.batch)?,
            u32_of(OP, "heads", d.heads)?,
            u32_of(OP, "head_dim", d.head_dim)?,
            u32_of(OP, "q_len", d.q_len)?,
            u32_of(OP, "kv_len", d.kv_len)?,
            u32_of(OP, "width", width)?,
            if d.q_broadcast {
                0
            } else {
                u32_of(OP, "q batch stride", d.q_len * width)?
            },
            u32_of(OP, "query blocks", q_blocks)?,
            d.scale().to_bits(),
        ];
        u32_of(OP, "workgroups", groups)?;
        let p = self.pipeline(Shader::Attention, T::DTYPE, T::DTYPE, "main")?;
        self.launch(
            OP,
            &params,
            &[
                ("q", &a.q.buffer),
                ("k", &a.k.buffer),
                ("v", &a.v.buffer),
                ("out", &a.out.buffer),
            ],
            &[(&p, groups as u64)],
        )
    }

    fn memory_read(&self, a: MemoryReadArgs<'_, T, Self>) -> Result<()> {
        const OP: &str = "memory_read";
        let d = a.dims;
        let joint_len = d.batch * (d.slots + d.tokens) * d.hidden;
        u32_of(OP, "bank", d.batch * d.experts * d.slots * d.hidden)?;
        let params = [
            u32_of(OP, "batch", d.batch)?,
            u32_of(OP, "tokens", d.tokens)?,
            u32_of(OP, "experts", d.experts)?,
            u32_of(OP, "slots", d.slots)?,
            u32_of(OP, "hidden", d.hidden)?,
            u32_of(OP, "joint", joint_len)?,
            (1.0f32 / d.tokens as f32).to_bits(),
        ];
        let gate = self.pipeline(Shader::MemoryRead, T::DTYPE, T::DTYPE, "gate_main")?;
        let read = self.pipeline(Shader::MemoryRead, T::DTYPE, T::DTYPE, "read_main")?;
        self.launch(
            OP,
            &params,
            &[
                ("h", &a.h.buffer),
                ("bank", &a.bank.buffer),
                ("router.weight", &a.router_weight.buffer),
                ("router.bias", &a.router_bias.buffer),
                ("joint", &a.joint.buffer),
                ("gate", &a.gate.buffer),
            ],
            // The read step sees the gate written by the first dispatch.
            &[(&gate, d.batch as u64), (&read, word_groups(joint_len))],
        )
    }

    fn memory_write(&self, a: MemoryWriteArgs<'_, T, Self>) -> Result<()> {
        const OP: &str = "memory_write";
        let d = a.dims;
        let bank_len = d.batch * d.experts * d.slots * d.hidden;
        let out_len = d.batch * d.tokens * d.hidden;
        u32_of(OP, "o", d.batch * (d.slots + d.tokens) * d.hidden)?;
        let bank_words = bank_len.div_ceil(2);
        let words = bank_words + out_len.div_ceil(2);
        let params = [
            u32_of(OP, "batch", d.batch)?,
            u32_of(OP, "tokens", d.tokens)?,
            u32_of(OP, "experts", d.experts)?,
            u32_of(OP, "slots", d.slots)?,
            u32_of(OP, "hidden", d.hidden)?,
            u32_of(OP, "bank", bank_len)?,
            u32_of(OP, "out", out_len)?,
            u32_of(OP, "bank words", bank_words)?,
        ];
        let p = self.pipeline(Shader::MemoryWrite, T::DTYPE, T::DTYPE, "main")?;
        self.launch(
            OP,
            &params,
            &[
                ("bank", &a.bank.buffer),
                ("gate", &a.gate.buffer),
                ("o", &a.o.buffer),
                ("residual", &a.residual.buffer),
                ("out", &a.out.buffer),
            ],
            &[(&p, (words as u64).div_ceil(WG))],
        )
    }

    fn add(&self, a: AddArgs<'_, T, Self>) -> Result<()> {
        const OP: &str = "add";
        let params = [u32_of(OP, "len", a.len)?];
        let p = self.pipeline(Shader::Add, T::DTYPE, T::DTYPE, "main")?;
        self.launch(
            OP,
            &params,
            &[
                ("a", &a.a.buffer),
                ("b", &a.b.buffer),
                ("out", &a.out.buffer),
            ],
            &[(&p, word_groups(a.len))],
        )
    }

    fn cast<U: Element>(&self, a: CastArgs<'_, T, U, Self>) -> Result<()> {
        const OP: &str = "cast";
        let params = [u32_of(OP, "len", a.len)?];
        let p = self.pipeline(Shader::Cast, T::DTYPE, U::DTYPE, "main")?;
        self.launch(
            OP,
            &params,
            &[("x", &a.x.buffer), ("out", &a.out.buffer)],
            &[(&p, word_groups(a.len))],
        )
    }
}
