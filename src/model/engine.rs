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

use super::naflex::{PackedBatch, PackedOutput};
use super::vision::{MemoryBank, VisionModel, VisionOutput};
use super::weights::{Embedding, HeadW, LayerW, LinearW, MlpW, NormW};

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

/// The buffers of the encoder's tokens, `[rows, ..]` (rows = B·N, or the
/// packed batch's Σ hᵢ·wᵢ).
struct Stream<T: Element, D: Kernels<T>> {
    /// `[rows, D]`: the residual stream, its intermediate, a layer norm's output.
    x: Buf<T, D>,
    x2: Buf<T, D>,
    h: Buf<T, D>,
    /// `[rows, 3·D]` and `[rows, D]`.
    qkv: Buf<T, D>,
    attn: Buf<T, D>,
    /// `[rows, F]`.
    f: Buf<T, D>,
}

impl<T: Element, D: Kernels<T>> Stream<T, D> {
    /// Buffers for `lead` (e.g. `[B, N]` or `[T]`) rows.
    fn new(dev: &D, lead: &[usize], d: usize, f: usize) -> Result<Self> {
        let buf = |w: usize| Buf::<T, D>::uninit(dev, &[lead, &[w]].concat());
        Ok(Self {
            x: buf(d)?,
            x2: buf(d)?,
            h: buf(d)?,
            qkv: buf(3 * d)?,
            attn: buf(d)?,
            f: buf(f)?,
        })
    }

    /// View every buffer at `rows` rows (within its capacity).
    fn view_rows(&mut self, rows: usize, d: usize, f: usize) -> Result<()> {
        for (b, w) in [
            (&mut self.x, d),
            (&mut self.x2, d),
            (&mut self.h, d),
            (&mut self.qkv, 3 * d),
            (&mut self.attn, d),
            (&mut self.f, f),
        ] {
            b.view_within(&[rows, w])?;
        }
        Ok(())
    }
}

impl<T: Element, D: Kernels<T>> HeadBuffers<T, D> {
    /// Buffers for `batch` images whose tokens are `lead` rows.
    fn new(dev: &D, lead: &[usize], batch: usize, d: usize, f: usize) -> Result<Self> {
        let buf = |shape: &[usize]| Buf::<T, D>::uninit(dev, shape);
        Ok(Self {
            kv: buf(&[lead, &[2 * d]].concat())?,
            a: buf(&[batch, 1, d])?,
            r: buf(&[batch, d])?,
            n: buf(&[batch, d])?,
            f: buf(&[batch, f])?,
        })
    }

    /// `out_proj(a)`, its layer norm, then the MLP with the residual into `pooled`.
    fn finish(&mut self, head: &HeadW<Buf<T, D>>, eps: f32, pooled: &mut Buf<T, D>) -> Result<()> {
        let (b, d) = (self.r.shape()[0], self.r.shape()[1]);
        self.a.view_within(&[b, d])?;
        linear_into(&head.out, &self.a, Activation::None, None, &mut self.r)?;
        norm_into(&head.norm, &self.r, eps, &mut self.n)?;
        mlp_into(&head.mlp, &self.n, &mut self.f, &self.r, pooled)
    }
}

/// Workspace identities: never reused, so a graph captured with one workspace's
/// buffers is never replayed with another's.
static NEXT_WORKSPACE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Every activation buffer of a forward pass at one batch size.
pub(crate) struct Workspace<T: Element, D: Kernels<T>> {
    id: u64,
    batch: usize,
    s: Stream<T, D>,
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
            Some(HeadBuffers::new(dev, &[batch, n], batch, d, f)?)
        } else {
            None
        };
        Ok(Self {
            id: NEXT_WORKSPACE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            batch,
            s: Stream::new(dev, &[batch, n], d, f)?,
            memory,
            head,
        })
    }

    pub(crate) fn batch(&self) -> usize {
        self.batch
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
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

/// One encoder layer without memory on the stream `s`; `attend(qkv, out)` is
/// the attention over the fused projection (fixed-length or packed).
fn plain_layer<T: Element, D: Kernels<T>>(
    layer: &LayerW<Buf<T, D>, Vec<T>>,
    s: &mut Stream<T, D>,
    eps: f32,
    attend: impl FnOnce(&Buf<T, D>, &mut Buf<T, D>) -> Result<()>,
) -> Result<()> {
    norm_into(&layer.norm1, &s.x, eps, &mut s.h)?;
    linear_into(&layer.qkv, &s.h, Activation::None, None, &mut s.qkv)?;
    attend(&s.qkv, &mut s.attn)?;
    linear_into(&layer.out, &s.attn, Activation::None, Some(&s.x), &mut s.x2)?;
    mlp_half(layer, s, eps)
}

/// The layer's second half: `x = x2 + mlp(LN2(x2))`.
fn mlp_half<T: Element, D: Kernels<T>>(
    layer: &LayerW<Buf<T, D>, Vec<T>>,
    s: &mut Stream<T, D>,
    eps: f32,
) -> Result<()> {
    norm_into(&layer.norm2, &s.x2, eps, &mut s.h)?;
    mlp_into(&layer.mlp, &s.h, &mut s.f, &s.x2, &mut s.x)
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
    let Embedding::Conv {
        weight,
        bias,
        position,
    } = &w.embedding
    else {
        return Err(Error::Internal(
            "the fixed-size forward on a SigLIP 2 model".into(),
        ));
    };
    let s = &mut ws.s;
    ops::patch_embed_into(pixels, weight, bias, position, c.patch_size, &mut s.x)?;
    let mut slot = 0;
    for (i, layer) in w.layers.iter().enumerate() {
        match (&layer.memory, ws.memory.as_mut()) {
            (None, _) => plain_layer(layer, s, eps, |qkv, attn| {
                ops::attention_qkv_into(qkv, heads, attn)
            })?,
            (Some(mem), Some(m)) => {
                let state = match bank.as_deref_mut().and_then(|b| b.layers.get_mut(slot)) {
                    Some((l, st)) if *l == i => st,
                    _ => {
                        return Err(Error::Input {
                            tensor: "memory".into(),
                            msg: format!("the bank has no state for memory layer {i}"),
                        })
                    }
                };
                slot += 1;
                norm_into(&layer.norm1, &s.x, eps, &mut s.h)?;
                ops::memory_read_into(
                    &s.h,
                    state,
                    &mem.router.weight,
                    &mem.router.bias,
                    &mut m.joint,
                    &mut m.gate,
                )?;
                linear_into(&layer.qkv, &m.joint, Activation::None, None, &mut m.qkv)?;
                ops::attention_qkv_into(&m.qkv, heads, &mut m.attn)?;
                linear_into(&layer.out, &m.attn, Activation::None, None, &mut m.o)?;
                ops::memory_write_into(state, &m.gate, &m.o, &s.x, &mut s.x2)?;
                mlp_half(layer, s, eps)?;
            }
            (Some(_), None) => {
                return Err(Error::Internal(format!(
                    "layer {i} has memory but the workspace has no memory buffers"
                )))
            }
        }
    }
    norm_into(&w.post_norm, &s.x, eps, &mut out.last_hidden_state)?;
    pool(
        model,
        ws.head.as_mut(),
        &out.last_hidden_state,
        out.pooler_output.as_mut(),
        ws.batch,
        // One probe query, shared by the batch: q [1, 1, D] over kv [B, N, 2·D].
        |q, kv, a| ops::attention_q_kv_into(q, kv, heads, a),
    )
}

/// The pooling head over `lhs` (the post-LN tokens) into `pooled` `[b, D]`:
/// `kv = lhs·Wkvᵀ`, the probe's query attends (`attend(q, kv, a)`), then
/// out_proj, layer norm and the MLP with the residual, for `b` images. Without
/// a head, nothing (and `pooled` must be `None`).
fn pool<T: Element, D: Kernels<T>>(
    model: &VisionModel<T, D>,
    hb: Option<&mut HeadBuffers<T, D>>,
    lhs: &Buf<T, D>,
    pooled: Option<&mut Buf<T, D>>,
    b: usize,
    attend: impl FnOnce(&Buf<T, D>, &Buf<T, D>, &mut Buf<T, D>) -> Result<()>,
) -> Result<()> {
    let (d, f) = (model.config.hidden_size, model.config.intermediate_size);
    match (&model.w.head, &model.probe_q, hb, pooled) {
        (None, _, _, None) => Ok(()),
        (Some(head), Some(q), Some(hb), Some(pooled)) => {
            // kv has lhs's rows ([B, N] or the packed [T]) and 2·D columns.
            let mut kv_shape = lhs.shape().to_vec();
            if let Some(last) = kv_shape.last_mut() {
                *last = 2 * d;
            }
            hb.kv.view_within(&kv_shape)?;
            linear_into(&head.kv, lhs, Activation::None, None, &mut hb.kv)?;
            hb.a.view_within(&[b, 1, d])?;
            hb.r.view_within(&[b, d])?;
            hb.n.view_within(&[b, d])?;
            hb.f.view_within(&[b, f])?;
            attend(q, &hb.kv, &mut hb.a)?;
            hb.finish(head, model.config.layer_norm_eps, pooled)
        }
        _ => Err(Error::Input {
            tensor: "pooler_output".into(),
            msg: "the output buffers do not match this model (use new_output)".into(),
        }),
    }
}

/// The activation buffers of packed forwards, sized for the largest batch seen
/// (`tokens` rows, `images` images) and viewed at each call's size.
pub(crate) struct PackedWorkspace<T: Element, D: Kernels<T>> {
    tokens: usize,
    images: usize,
    s: Stream<T, D>,
    head: Option<HeadBuffers<T, D>>,
}

impl<T: Element, D: Kernels<T>> PackedWorkspace<T, D> {
    pub(crate) fn new(model: &VisionModel<T, D>, tokens: usize, images: usize) -> Result<Self> {
        let c = &model.config;
        let dev = model.device();
        let (d, f) = (c.hidden_size, c.intermediate_size);
        Ok(Self {
            tokens,
            images,
            s: Stream::new(dev, &[tokens], d, f)?,
            head: match model.w.head {
                Some(_) => Some(HeadBuffers::new(dev, &[tokens], images, d, f)?),
                None => None,
            },
        })
    }

    /// Whether a batch of `tokens` rows and `images` images fits.
    pub(crate) fn fits(&self, tokens: usize, images: usize) -> bool {
        tokens <= self.tokens && images <= self.images
    }

    /// (rows, images) it was made for (the pool keeps the largest).
    pub(crate) fn capacity(&self) -> (usize, usize) {
        (self.tokens, self.images)
    }
}

/// The forward pass of `model` on a packed batch: the joined patch + position
/// GEMM, the encoder with varlen attention (each image attends to its own
/// patches only), the pooling head per image. No row of padding exists.
pub(crate) fn run_packed<T: Element, D: Kernels<T>>(
    model: &VisionModel<T, D>,
    ws: &mut PackedWorkspace<T, D>,
    batch: &PackedBatch<T, D>,
    out: &mut PackedOutput<T, D>,
) -> Result<()> {
    let c = &model.config;
    let (heads, eps) = (c.num_attention_heads, c.layer_norm_eps);
    let (d, f) = (c.hidden_size, c.intermediate_size);
    let w = &model.w;
    let Embedding::Joined(embed) = &w.embedding else {
        return Err(Error::Internal(
            "the packed forward on a SigLIP model".into(),
        ));
    };
    let seg = &batch.segments;
    let (t, b) = (seg.total(), seg.count());
    let s = &mut ws.s;
    s.view_rows(t, d, f)?;
    linear_into(embed, &batch.rows, Activation::None, None, &mut s.x)?;
    for layer in &w.layers {
        plain_layer(layer, s, eps, |qkv, attn| {
            ops::attention_qkv_packed_into(qkv, seg, heads, attn)
        })?;
    }
    norm_into(&w.post_norm, &s.x, eps, &mut out.last_hidden_state)?;
    pool(
        model,
        ws.head.as_mut(),
        &out.last_hidden_state,
        out.pooler_output.as_mut(),
        b,
        // The probe [1, 1, D] attends over each image's own patches.
        |q, kv, a| ops::attention_q_kv_packed_into(q, kv, seg, heads, a),
    )
}
