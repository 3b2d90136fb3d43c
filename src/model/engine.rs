//! The forward pass (MODEL.md, "Forward pass" and "Memory-gated attention") over
//! a workspace of activation buffers allocated once per batch size: every op
//! writes into a buffer the workspace already holds (the `_into` ops), so a
//! forward after the first at a shape allocates nothing.
//!
//! Per layer: `h = LN1(x)`; `qkv = h·Wqkvᵀ` (q, k and v projections stacked: one
//! GEMM); `a = attention(qkv)`; `x2 = x + out_proj(a)` (memory layers: gate, read
//! and concat first, attention over M + N rows, gated write of the bank in place);
//! `x = x2 + fc2(gelu(fc1(LN2(x2))))` — bias, GELU and residual fused into the GEMMs.

use crate::buffer::DeviceBuffer;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::{self, Activation, Kernels};

use super::vision::{MemoryBank, VisionModel, VisionOutput};
use super::weights::{LinearW, MlpW, NormW};

type Buf<T, D> = DeviceBuffer<T, D>;

/// Buffers of a memory layer's joint sequence `[B, M + N, ..]`.
struct MemoryBuffers<T: Element, D: Kernels<T>> {
    joint: Buf<T, D>,
    qkv: Buf<T, D>,
    attn: Buf<T, D>,
    o: Buf<T, D>,
    gate: DeviceBuffer<f32, D>,
}

/// Buffers of the pooling head.
struct HeadBuffers<T: Element, D: Kernels<T>> {
    /// `[B, N, 2·D]`: k and v of the tokens.
    kv: Buf<T, D>,
    /// `[B, 1, D]`: the probe's attention output.
    a: Buf<T, D>,
    /// `[B, D]`: out_proj(a), then its layer norm.
    r: Buf<T, D>,
    n: Buf<T, D>,
    /// `[B, F]`.
    f: Buf<T, D>,
}

/// Every activation buffer of a forward pass at one batch size.
pub(crate) struct Workspace<T: Element, D: Kernels<T>> {
    batch: usize,
    /// `[B, N, D]`: the residual stream, its intermediate, a layer norm's output.
    x: Buf<T, D>,
    x2: Buf<T, D>,
    h: Buf<T, D>,
    /// `[B, N, 3·D]` and `[B, N, D]`.
    qkv: Buf<T, D>,
    attn: Buf<T, D>,
    /// `[B, N, F]`.
    f: Buf<T, D>,
    memory: Option<MemoryBuffers<T, D>>,
    head: Option<HeadBuffers<T, D>>,
}

impl<T: Element, D: Kernels<T>> Workspace<T, D> {
    pub(crate) fn new(model: &VisionModel<T, D>, batch: usize) -> Result<Self> {
        let c = &model.config;
        let dev = model.device();
        let (n, d, f) = (c.num_patches(), c.hidden_size, c.intermediate_size);
        let buf = |shape: &[usize]| Buf::<T, D>::uninit(dev, shape);
        let memory = if c.has_memory() {
            let s = c.memory_slots + n;
            Some(MemoryBuffers {
                joint: buf(&[batch, s, d])?,
                qkv: buf(&[batch, s, 3 * d])?,
                attn: buf(&[batch, s, d])?,
                o: buf(&[batch, s, d])?,
                gate: DeviceBuffer::<f32, D>::uninit(dev, &[batch, c.memory_experts])?,
            })
        } else {
            None
        };
        let head = if model.w.head.is_some() {
            Some(HeadBuffers {
                kv: buf(&[batch, n, 2 * d])?,
                a: buf(&[batch, 1, d])?,
                r: buf(&[batch, d])?,
                n: buf(&[batch, d])?,
                f: buf(&[batch, f])?,
            })
        } else {
            None
        };
        Ok(Self {
            batch,
            x: buf(&[batch, n, d])?,
            x2: buf(&[batch, n, d])?,
            h: buf(&[batch, n, d])?,
            qkv: buf(&[batch, n, 3 * d])?,
            attn: buf(&[batch, n, d])?,
            f: buf(&[batch, n, f])?,
            memory,
            head,
        })
    }

    pub(crate) fn batch(&self) -> usize {
        self.batch
    }
}

fn linear_into<T: Element, D: Kernels<T>>(
    l: &LinearW<Buf<T, D>>,
    x: &Buf<T, D>,
    act: Activation,
    residual: Option<&Buf<T, D>>,
    out: &mut Buf<T, D>,
) -> Result<()> {
    ops::linear_into(x, &l.weight, Some(&l.bias), act, residual, out)
}

fn norm_into<T: Element, D: Kernels<T>>(
    l: &NormW<Buf<T, D>>,
    x: &Buf<T, D>,
    eps: f32,
    out: &mut Buf<T, D>,
) -> Result<()> {
    ops::layer_norm_into(x, &l.weight, &l.bias, eps, out)
}

/// `out = residual + fc2(gelu(fc1(x)))` through the hidden buffer `f`.
fn mlp_into<T: Element, D: Kernels<T>>(
    l: &MlpW<Buf<T, D>>,
    x: &Buf<T, D>,
    f: &mut Buf<T, D>,
    residual: &Buf<T, D>,
    out: &mut Buf<T, D>,
) -> Result<()> {
    linear_into(&l.fc1, x, Activation::GeluTanh, None, f)?;
    linear_into(&l.fc2, f, Activation::None, Some(residual), out)
}

/// The forward pass of `model` on `pixels` (checked by the caller), leaving the
/// outputs in `out` and the next segment's state in `bank`.
pub(crate) fn run<T: Element, D: Kernels<T>>(
    model: &VisionModel<T, D>,
    ws: &mut Workspace<T, D>,
    pixels: &Buf<T, D>,
    mut bank: Option<&mut MemoryBank<T, D>>,
    out: &mut VisionOutput<T, D>,
) -> Result<()> {
    let c = &model.config;
    let (heads, eps) = (c.num_attention_heads, c.layer_norm_eps);
    let w = &model.w;
    ops::patch_embed_into(
        pixels,
        &w.patch_weight,
        &w.patch_bias,
        &w.position,
        c.patch_size,
        &mut ws.x,
    )?;
    let mut slot = 0;
    for (i, layer) in w.layers.iter().enumerate() {
        norm_into(&layer.norm1, &ws.x, eps, &mut ws.h)?;
        match (&layer.memory, ws.memory.as_mut()) {
            (None, _) => {
                linear_into(&layer.qkv, &ws.h, Activation::None, None, &mut ws.qkv)?;
                ops::attention_qkv_into(&ws.qkv, heads, &mut ws.attn)?;
                linear_into(
                    &layer.out,
                    &ws.attn,
                    Activation::None,
                    Some(&ws.x),
                    &mut ws.x2,
                )?;
            }
            (Some(mem), Some(m)) => {
                let state = match bank.as_deref_mut().and_then(|b| b.layers.get_mut(slot)) {
                    Some((l, s)) if *l == i => s,
                    _ => {
                        return Err(Error::Input {
                            tensor: "memory".into(),
                            msg: format!("the bank has no state for memory layer {i}"),
                        })
                    }
                };
                slot += 1;
                ops::memory_read_into(
                    &ws.h,
                    state,
                    &mem.router.weight,
                    &mem.router.bias,
                    &mut m.joint,
                    &mut m.gate,
                )?;
                linear_into(&layer.qkv, &m.joint, Activation::None, None, &mut m.qkv)?;
                ops::attention_qkv_into(&m.qkv, heads, &mut m.attn)?;
                linear_into(&layer.out, &m.attn, Activation::None, None, &mut m.o)?;
                ops::memory_write_into(state, &m.gate, &m.o, &ws.x, &mut ws.x2)?;
            }
            (Some(_), None) => {
                return Err(Error::Internal(format!(
                    "layer {i} has memory but the workspace has no memory buffers"
                )))
            }
        }
        norm_into(&layer.norm2, &ws.x2, eps, &mut ws.h)?;
        mlp_into(&layer.mlp, &ws.h, &mut ws.f, &ws.x2, &mut ws.x)?;
    }
    norm_into(&w.post_norm, &ws.x, eps, &mut out.last_hidden_state)?;

    match (
        &w.head,
        &model.probe_q,
        ws.head.as_mut(),
        out.pooler_output.as_mut(),
    ) {
        (None, _, _, None) => Ok(()),
        (Some(head), Some(q), Some(hb), Some(pooled)) => {
            let b = ws.batch;
            let lhs = &out.last_hidden_state;
            linear_into(&head.kv, lhs, Activation::None, None, &mut hb.kv)?;
            // One probe query, shared by the batch: q [1, 1, D] over kv [B, N, 2·D].
            hb.a.reshape_mut(&[b, 1, c.hidden_size])?;
            ops::attention_q_kv_into(q, &hb.kv, heads, &mut hb.a)?;
            hb.a.reshape_mut(&[b, c.hidden_size])?;
            linear_into(&head.out, &hb.a, Activation::None, None, &mut hb.r)?;
            norm_into(&head.norm, &hb.r, eps, &mut hb.n)?;
            mlp_into(&head.mlp, &hb.n, &mut hb.f, &hb.r, pooled)
        }
        _ => Err(Error::Input {
            tensor: "pooler_output".into(),
            msg: "the output buffers do not match this model (use new_output)".into(),
        }),
    }
}
