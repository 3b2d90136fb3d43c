//! What is benchmarked: SigLIP-shaped cases ([`CaseSpec`]), their FLOP and byte
//! counts, and ready-to-run closures over device buffers ([`Prepared`]).

use half::bf16;
use tessera::model::{ImagePatches, VisionConfig, VisionModel};
use tessera::ops::{self, Activation, Kernels};
use tessera::{DType, DeviceBuffer, Element, Result};

/// The shape of a SigLIP vision tower, as far as the benchmarks need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    pub name: &'static str,
    /// D.
    pub hidden: usize,
    /// F.
    pub intermediate: usize,
    /// H.
    pub heads: usize,
    /// P.
    pub patch: usize,
    /// I.
    pub image: usize,
    /// C.
    pub channels: usize,
    /// L of the released checkpoint.
    pub layers: usize,
}

impl ModelShape {
    /// N = (I/P)².
    pub fn tokens(&self) -> usize {
        let g = self.image / self.patch;
        g * g
    }
    /// hd = D/H.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

/// SigLIP-base-patch16-224: D 768, F 3072, N 196, H 12, hd 64, 12 layers.
pub const SIGLIP_BASE: ModelShape = ModelShape {
    name: "base",
    hidden: 768,
    intermediate: 3072,
    heads: 12,
    patch: 16,
    image: 224,
    channels: 3,
    layers: 12,
};

/// SigLIP-so400m-patch14-384: D 1152, F 4304, N 729, H 16, hd 72, 27 layers.
/// 384 px is not a multiple of 14: the stride-14 convolution drops the last 6
/// pixels, so the 27 × 27 = 729 patches cover 378 px.
pub const SIGLIP_SO400M: ModelShape = ModelShape {
    name: "so400m",
    hidden: 1152,
    intermediate: 4304,
    heads: 16,
    patch: 14,
    image: 384,
    channels: 3,
    layers: 27,
};

/// Memory experts E of the memory-gated attention benchmarks.
/// Every model shape, by `--model` name.
pub const MODELS: [ModelShape; 2] = [SIGLIP_BASE, SIGLIP_SO400M];

pub const MEMORY_EXPERTS: usize = 4;
/// Memory slots M per expert.
pub const MEMORY_SLOTS: usize = 32;

/// Op families, as the `--op` filter names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    Patch,
    Linear,
    LayerNorm,
    /// Residual add and dtype cast (memory-bound elementwise ops).
    Elementwise,
    Attention,
    MemoryGatedAttention,
    Forward,
    /// SigLIP 2: a batch of mixed-size images packed, against the same images
    /// padded to the largest.
    Packed,
}

impl OpKind {
    /// Every family, in table order.
    pub const ALL: [OpKind; 8] = [
        OpKind::Patch,
        OpKind::Linear,
        OpKind::LayerNorm,
        OpKind::Elementwise,
        OpKind::Attention,
        OpKind::MemoryGatedAttention,
        OpKind::Forward,
        OpKind::Packed,
    ];

    /// The filter name.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Patch => "patch",
            OpKind::Linear => "linear",
            OpKind::LayerNorm => "layer_norm",
            OpKind::Elementwise => "elementwise",
            OpKind::Attention => "attention",
            OpKind::MemoryGatedAttention => "memory_gated_attention",
            OpKind::Forward => "forward",
            OpKind::Packed => "packed",
        }
    }
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for OpKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase().replace('-', "_");
        let alias = match s.as_str() {
            "patch_embed" => "patch",
            "ln" | "layernorm" => "layer_norm",
            "add" | "cast" => "elementwise",
            "memory" | "mga" | "memory_read" | "memory_write" => "memory_gated_attention",
            "siglip2" | "naflex" | "varlen" => "packed",
            other => other,
        };
        OpKind::ALL
            .into_iter()
            .find(|k| k.name() == alias)
            .ok_or_else(|| {
                let names: Vec<_> = OpKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown op `{s}` (expected one of {})", names.join(", "))
            })
    }
}

/// Whether a case is judged by arithmetic (TFLOP/s) or by traffic (GB/s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Compute,
    Memory,
}

/// One benchmark case: an op at one shape.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseSpec {
    pub family: OpKind,
    pub model: ModelShape,
    pub batch: usize,
    pub kind: CaseKind,
}

/// The op and the sizes it runs at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CaseKind {
    /// Patch embedding of `batch` images of `model`.
    Patch,
    /// `x[rows, k] · W[n, k]ᵀ + b`, with the given epilogue.
    Linear {
        label: &'static str,
        rows: usize,
        k: usize,
        n: usize,
        activation: Activation,
        residual: bool,
    },
    /// Layer norm of `[rows, cols]`.
    LayerNorm { rows: usize, cols: usize },
    /// `a + b` over `len` elements (the residual add).
    Add { len: usize },
    /// Cast of `len` elements to the other dtype (f32 ↔ bf16).
    Cast { len: usize },
    /// `ops::add_into` of [`LAUNCH_LEN`] elements, called back to back: what one op
    /// costs beyond its work (host checks, launch or dispatch, submission).
    Launch,
    /// Self-attention over `seq` rows: q, k, v `[batch, seq, H·hd]`.
    Attention { seq: usize },
    /// Memory gate + read + concat (`ops::memory_read`).
    MemoryRead,
    /// Bank write + split + residual (`ops::memory_write`).
    MemoryWrite,
    /// `VisionModel::forward` of a model whose `layers` layers all have
    /// memory-gated attention (E = MEMORY_EXPERTS, M = MEMORY_SLOTS), random weights.
    MemoryForward { layers: usize },
    /// `VisionModel::forward` (the shipped path: patch embedding, `layers` encoder
    /// layers, post layer norm, pooling head) with random weights.
    Forward { layers: usize },
    /// SigLIP 2 (position grid 16 × 16): `VisionModel::pack` + `forward_packed`
    /// of `batch` images of mixed sizes ([`mixed_grids`]), random weights. Its
    /// peer is the same forward with every image padded to the largest grid.
    PackedForward { layers: usize },
    /// `VisionModel::pack` of the same images alone: the host's position
    /// coefficients and conversion, and the upload.
    Pack,
}

/// Elements of the [`CaseKind::Launch`] add: small enough that the op's work is
/// negligible beside its per-call cost on every backend.
pub const LAUNCH_LEN: usize = 256;

/// `count` image grids (h, w) of 64 to 1024 patches, spread evenly, at aspect
/// ratios cycling through 1:1, 4:3, 3:4, 16:9, 9:16, 2:1, 1:2 (deterministic).
pub fn mixed_grids(count: usize) -> Vec<(usize, usize)> {
    const RATIOS: [(f64, f64); 7] = [
        (1.0, 1.0),
        (4.0, 3.0),
        (3.0, 4.0),
        (16.0, 9.0),
        (9.0, 16.0),
        (2.0, 1.0),
        (1.0, 2.0),
    ];
    (0..count)
        .map(|i| {
            let target = 64 + 960 * i / count.saturating_sub(1).max(1);
            let (aw, ah) = RATIOS[i % RATIOS.len()];
            let h = ((target as f64 * ah / aw).sqrt().floor() as usize).max(1);
            (h, (target / h).max(1))
        })
        .collect()
}

impl CaseSpec {
    /// Row label of the op column.
    pub fn op_label(&self) -> String {
        match self.kind {
            CaseKind::Patch => "patch_embed".into(),
            CaseKind::Linear { label, .. } => format!("linear {label}"),
            CaseKind::LayerNorm { .. } => "layer_norm".into(),
            CaseKind::Add { .. } => "add (residual)".into(),
            CaseKind::Cast { .. } => "cast".into(),
            CaseKind::Launch => "add, per-op cost".into(),
            CaseKind::Attention { .. } => "attention".into(),
            CaseKind::MemoryRead => "memory_read".into(),
            CaseKind::MemoryWrite => "memory_write".into(),
            CaseKind::MemoryForward { layers } => format!("forward, memory ({layers} layers)"),
            CaseKind::Forward { layers } => format!("forward ({layers} layers)"),
            CaseKind::PackedForward { layers } => {
                format!("forward, SigLIP 2 packed ({layers} layers)")
            }
            CaseKind::Pack => "SigLIP 2 pack (host coefficients + upload)".into(),
        }
    }

    /// The row's name: op and shape, as the progress lines print it and as
    /// `--case` matches it.
    pub fn row_label(&self, dtype: DType) -> String {
        format!("{} {}", self.op_label(), self.shape_label(dtype))
    }

    /// Compact shape description.
    pub fn shape_label(&self, dtype: DType) -> String {
        let m = &self.model;
        let b = self.batch;
        let (d, n) = (m.hidden, m.tokens());
        match self.kind {
            CaseKind::Patch => format!(
                "{} B{b} {}px P{} -> [{}, {d}]",
                m.name,
                m.image,
                m.patch,
                b * n
            ),
            CaseKind::Linear { rows, k, n, .. } => format!("{} B{b} M{rows} K{k} N{n}", m.name),
            CaseKind::LayerNorm { rows, cols } => format!("{} B{b} [{rows}, {cols}]", m.name),
            CaseKind::Add { len } => format!("{} B{b} {len} elems", m.name),
            CaseKind::Launch => format!("{LAUNCH_LEN} elems"),
            CaseKind::Cast { len } => {
                format!("{} B{b} {len} {dtype}->{}", m.name, other_dtype(dtype))
            }
            CaseKind::Attention { seq } => {
                format!("{} B{b} H{} S{seq} hd{}", m.name, m.heads, m.head_dim())
            }
            CaseKind::MemoryRead | CaseKind::MemoryWrite | CaseKind::MemoryForward { .. } => {
                format!(
                    "{} B{b} N{n} E{MEMORY_EXPERTS} M{MEMORY_SLOTS} D{d}",
                    m.name
                )
            }
            CaseKind::Forward { .. } => format!("{} B{b} N{n} D{d} F{}", m.name, m.intermediate),
            CaseKind::PackedForward { .. } | CaseKind::Pack => {
                let grids = mixed_grids(b);
                let real: usize = grids.iter().map(|(h, w)| h * w).sum();
                let max = grids.iter().map(|(h, w)| h * w).max().unwrap_or(0);
                format!(
                    "{} B{b} 64..1024 patches: {real} real, {} padded",
                    m.name,
                    b * max
                )
            }
        }
    }

    /// Compute- or memory-bound.
    pub fn bound(&self) -> Bound {
        match self.kind {
            CaseKind::LayerNorm { .. }
            | CaseKind::Add { .. }
            | CaseKind::Cast { .. }
            | CaseKind::Launch
            | CaseKind::MemoryRead
            | CaseKind::MemoryWrite
            | CaseKind::Pack => Bound::Memory,
            _ => Bound::Compute,
        }
    }

    /// Floating-point operations of one call (a multiply-add counts 2).
    pub fn flops(&self) -> f64 {
        let m = &self.model;
        let (b, d, f, n) = (
            self.batch as f64,
            m.hidden as f64,
            m.intermediate as f64,
            m.tokens() as f64,
        );
        let k_patch = (m.channels * m.patch * m.patch) as f64;
        let attn = |seq: f64| 4.0 * b * seq * seq * d;
        // qkv (3 d²) and out_proj (d²) over the attention's rows, the MLP over the tokens.
        let layer = |seq: f64| 2.0 * b * seq * d * d * 4.0 + 2.0 * b * n * d * f * 2.0 + attn(seq);
        // The pooling head: kv over the tokens, the probe's attention, out_proj and MLP on B rows.
        let head = 2.0 * b * n * d * 2.0 * d + 4.0 * b * n * d + 2.0 * b * (d * d + 2.0 * d * f);
        let patch = 2.0 * b * n * k_patch * d;
        match self.kind {
            CaseKind::Patch => patch,
            CaseKind::Linear { rows, k, n, .. } => 2.0 * rows as f64 * k as f64 * n as f64,
            CaseKind::Attention { seq } => attn(seq as f64),
            CaseKind::MemoryForward { layers } => {
                patch + layers as f64 * layer(n + MEMORY_SLOTS as f64) + head
            }
            CaseKind::Forward { layers } => patch + layers as f64 * layer(n) + head,
            CaseKind::PackedForward { layers } => {
                // Per image at its own n: the joined patch + position GEMM (K =
                // C·P·P + 256), the layers, the head.
                let k = k_patch + 256.0;
                mixed_grids(self.batch)
                    .iter()
                    .map(|&(h, w)| {
                        let n = (h * w) as f64;
                        let layer = 2.0 * n * d * d * 4.0 + 2.0 * n * d * f * 2.0 + 4.0 * n * n * d;
                        let head =
                            2.0 * n * d * 2.0 * d + 4.0 * n * d + 2.0 * (d * d + 2.0 * d * f);
                        2.0 * n * k * d + layers as f64 * layer + head
                    })
                    .sum()
            }
            _ => 0.0,
        }
    }

    /// Bytes the op must read and write at least once (weights included), for
    /// elements of `dtype`.
    pub fn bytes(&self, dtype: DType) -> f64 {
        let s = dtype.size() as f64;
        let m = &self.model;
        let (b, d, n) = (self.batch as f64, m.hidden as f64, m.tokens() as f64);
        let (e, slots) = (MEMORY_EXPERTS as f64, MEMORY_SLOTS as f64);
        let bank = b * e * slots * d;
        match self.kind {
            CaseKind::LayerNorm { rows, cols } => {
                s * (2.0 * (rows * cols) as f64 + 2.0 * cols as f64)
            }
            CaseKind::Add { len } => s * 3.0 * len as f64,
            CaseKind::Launch => s * 3.0 * LAUNCH_LEN as f64,
            CaseKind::Cast { len } => (s + other_dtype(dtype).size() as f64) * len as f64,
            // h once, bank once, joint written, router weights; gate in f32.
            CaseKind::MemoryRead => {
                s * (b * n * d + bank + b * (slots + n) * d + e * d + e) + 4.0 * b * e
            }
            // bank read + written, o read, residual read, out written; gate in f32.
            CaseKind::MemoryWrite => {
                s * (2.0 * bank + b * (slots + n) * d + 2.0 * b * n * d) + 4.0 * b * e
            }
            CaseKind::Linear {
                rows,
                k,
                n,
                residual,
                ..
            } => {
                let (r, k, n) = (rows as f64, k as f64, n as f64);
                s * (r * k + n * k + n + r * n * if residual { 2.0 } else { 1.0 })
            }
            CaseKind::Patch => {
                let k = (m.channels * m.patch * m.patch) as f64;
                s * (b * m.channels as f64 * (m.image * m.image) as f64
                    + d * k
                    + d
                    + n * d
                    + b * n * d)
            }
            CaseKind::Attention { seq } => s * 4.0 * b * seq as f64 * d,
            // f32 patch values read, packed rows (patch values + 256 coefficients) written.
            CaseKind::Pack => {
                let k = (m.channels * m.patch * m.patch) as f64;
                let real: usize = mixed_grids(self.batch).iter().map(|(h, w)| h * w).sum();
                real as f64 * (4.0 * k + s * (k + 256.0))
            }
            CaseKind::MemoryForward { .. }
            | CaseKind::Forward { .. }
            | CaseKind::PackedForward { .. } => 0.0,
        }
    }

    /// The GEMM `(m, n, k)` a vendor library would run for this case, if any.
    pub fn peer_gemm(&self) -> Option<(usize, usize, usize)> {
        match self.kind {
            CaseKind::Linear { rows, k, n, .. } => Some((rows, n, k)),
            CaseKind::Patch => {
                let m = &self.model;
                Some((
                    self.batch * m.tokens(),
                    m.hidden,
                    m.channels * m.patch * m.patch,
                ))
            }
            _ => None,
        }
    }
}

/// The dtype a cast case converts to.
pub fn other_dtype(d: DType) -> DType {
    match d {
        DType::F32 => DType::BF16,
        DType::BF16 => DType::F32,
    }
}

/// The cases of one family for one model and batch.
pub fn family_cases(
    family: OpKind,
    model: ModelShape,
    batch: usize,
    forward_layers: usize,
) -> Vec<CaseSpec> {
    let d = model.hidden;
    let rows = batch * model.tokens();
    let mk = |kind| CaseSpec {
        family,
        model,
        batch,
        kind,
    };
    let linear = |label, k, n, activation, residual| {
        mk(CaseKind::Linear {
            label,
            rows,
            k,
            n,
            activation,
            residual,
        })
    };
    match family {
        OpKind::Patch => vec![mk(CaseKind::Patch)],
        OpKind::Linear => vec![
            linear("qkv", d, 3 * d, Activation::None, false),
            linear("out_proj+res", d, d, Activation::None, true),
            linear(
                "fc1+gelu",
                d,
                model.intermediate,
                Activation::GeluTanh,
                false,
            ),
            linear("fc2+res", model.intermediate, d, Activation::None, true),
        ],
        OpKind::LayerNorm => vec![mk(CaseKind::LayerNorm { rows, cols: d })],
        OpKind::Elementwise => vec![
            mk(CaseKind::Add { len: rows * d }),
            mk(CaseKind::Cast { len: rows * d }),
        ],
        OpKind::Attention => vec![mk(CaseKind::Attention {
            seq: model.tokens(),
        })],
        OpKind::MemoryGatedAttention => vec![
            mk(CaseKind::MemoryRead),
            mk(CaseKind::MemoryWrite),
            mk(CaseKind::MemoryForward { layers: 1 }),
        ],
        OpKind::Forward => vec![mk(CaseKind::Forward {
            layers: forward_layers,
        })],
        OpKind::Packed => vec![
            mk(CaseKind::Pack),
            mk(CaseKind::PackedForward {
                layers: forward_layers,
            }),
        ],
    }
}

/// The per-op cost row ([`CaseKind::Launch`]): one per run, whatever the shapes.
pub fn launch_case() -> CaseSpec {
    CaseSpec {
        family: OpKind::Elementwise,
        model: SIGLIP_BASE,
        batch: 1,
        kind: CaseKind::Launch,
    }
}

/// A square `size³` linear (no bias), for the GEMM ceiling rows.
pub fn square_linear(size: usize) -> CaseSpec {
    CaseSpec {
        family: OpKind::Linear,
        model: SIGLIP_BASE,
        batch: 1,
        kind: CaseKind::Linear {
            label: "square",
            rows: size,
            k: size,
            n: size,
            activation: Activation::None,
            residual: false,
        },
    }
}

impl CaseSpec {
    /// `true` for the square ceiling rows made by [`square_linear`].
    pub fn is_square(&self) -> bool {
        matches!(
            self.kind,
            CaseKind::Linear {
                label: "square",
                ..
            }
        )
    }
}

// ---------------------------------------------------------------------------
// Data.

/// Deterministic pseudo-random values in `[-scale, scale)` (the library's generator).
pub fn random_vec<T: Element>(len: usize, seed: u64, scale: f32) -> Vec<T> {
    tessera::random::Rng::new(seed).vec(len, scale)
}

struct Rng(u64);

impl Rng {
    fn buf<T: Element, D: Kernels<T>>(
        &mut self,
        dev: &D,
        shape: &[usize],
        scale: f32,
    ) -> Result<DeviceBuffer<T, D>> {
        self.0 += 1;
        let n = shape.iter().product();
        DeviceBuffer::from_slice(dev, &random_vec::<T>(n, self.0, scale), shape)
    }
    fn ones<T: Element, D: Kernels<T>>(
        &mut self,
        dev: &D,
        shape: &[usize],
    ) -> Result<DeviceBuffer<T, D>> {
        DeviceBuffer::full(dev, shape, T::from_f32(1.0))
    }
}

// ---------------------------------------------------------------------------
// Prepared cases.

/// A case with its buffers on the device: call [`Prepared::run`] to launch it once.
pub struct Prepared {
    run: Box<dyn FnMut() -> Result<()>>,
}

impl Prepared {
    /// Launch the op once (asynchronously on GPU backends).
    pub fn run(&mut self) -> Result<()> {
        (self.run)()
    }
}

/// The bounds every benchmarked backend meets: kernels for `T` and for both
/// element types (the cast rows and the memory gate).
pub trait BenchKernels<T: Element>: Kernels<T> + Kernels<f32> + Kernels<bf16> {}
impl<T: Element, D: Kernels<T> + Kernels<f32> + Kernels<bf16>> BenchKernels<T> for D {}

const LN_EPS: f32 = 1e-6;

/// The config of `m` with `layers` layers (memory-gated attention on every layer
/// when `memory`), for `VisionModel::random`.
fn model_config(m: &ModelShape, layers: usize, memory: bool) -> Result<VisionConfig> {
    let mut json = serde_json::json!({
        "hidden_size": m.hidden,
        "intermediate_size": m.intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": m.heads,
        "num_channels": m.channels,
        "image_size": m.image,
        "patch_size": m.patch,
    });
    if memory {
        json["memory_experts"] = MEMORY_EXPERTS.into();
        json["memory_slots"] = MEMORY_SLOTS.into();
    }
    VisionConfig::from_json_str(&json.to_string(), format!("bench {}", m.name))
}

/// The shipped forward pass (`VisionModel::forward_into`) of a random-weight model.
fn forward_case<T: Element, D: BenchKernels<T>>(
    dev: &D,
    m: &ModelShape,
    batch: usize,
    layers: usize,
    memory: bool,
    rng: &mut Rng,
) -> Result<Box<dyn FnMut() -> Result<()>>> {
    let model = VisionModel::<T, D>::random(model_config(m, layers, memory)?, dev, rng.0)?;
    let pixels = rng.buf::<T, D>(dev, &model.config().pixel_shape(batch), 1.0)?;
    let mut out = model.new_output(batch)?;
    let mut bank = model.new_memory(batch)?;
    Ok(Box::new(move || {
        model.forward_into(&pixels, Some(&mut bank), &mut out)
    }))
}

/// The shipped SigLIP 2 path (`VisionModel::pack` + `forward_packed`) of a
/// random-weight model on `batch` images of [`mixed_grids`], or (`padded`)
/// every image at the largest grid — what padding to the largest computes.
pub fn packed_case<T: Element, D: BenchKernels<T>>(
    dev: &D,
    spec: &CaseSpec,
    padded: bool,
) -> Result<Prepared> {
    let m = spec.model;
    let (layers, pack_only) = match spec.kind {
        CaseKind::PackedForward { layers } => (layers, false),
        CaseKind::Pack => (1, true),
        _ => {
            return Err(tessera::Error::Internal(
                "packed_case of another case".into(),
            ))
        }
    };
    let json = serde_json::json!({
        "model_type": "siglip2_vision_model",
        "hidden_size": m.hidden,
        "intermediate_size": m.intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": m.heads,
        "num_channels": m.channels,
        "patch_size": m.patch,
        "num_patches": 256,
    });
    let config =
        VisionConfig::from_json_str(&json.to_string(), format!("bench {} (SigLIP 2)", m.name))?;
    let cpp = config.patch_values();
    let rng = Rng(0x5191_2a2f ^ spec.batch as u64);
    let model = VisionModel::<T, D>::random(config, dev, rng.0)?;
    let mut grids = mixed_grids(spec.batch);
    if padded {
        let largest = grids
            .iter()
            .copied()
            .max_by_key(|(h, w)| h * w)
            .unwrap_or((1, 1));
        grids.iter_mut().for_each(|g| *g = largest);
    }
    let images: Vec<ImagePatches> = grids
        .iter()
        .enumerate()
        .map(|(i, &(height, width))| ImagePatches {
            height,
            width,
            values: random_vec(height * width * cpp, rng.0 + i as u64, 1.0),
        })
        .collect();
    Ok(Prepared {
        run: if pack_only {
            Box::new(move || model.pack(&images).map(drop))
        } else {
            Box::new(move || model.forward_packed(&model.pack(&images)?).map(drop))
        },
    })
}

/// Allocate and fill the buffers of `spec` on `dev` in dtype `T`.
pub fn prepare<T: Element, D: BenchKernels<T>>(dev: &D, spec: &CaseSpec) -> Result<Prepared> {
    let m = spec.model;
    let b = spec.batch;
    let (d, n, heads) = (m.hidden, m.tokens(), m.heads);
    let mut rng = Rng(0x7e55_e4a0 ^ (b as u64) << 20 ^ d as u64);
    let run: Box<dyn FnMut() -> Result<()>> = match spec.kind {
        CaseKind::Patch => {
            let px = rng.buf::<T, D>(dev, &[b, m.channels, m.image, m.image], 1.0)?;
            let k = m.channels * m.patch * m.patch;
            let w = rng.buf(dev, &[d, k], 1.0 / (k as f32).sqrt())?;
            let bias = rng.buf(dev, &[d], 0.02)?;
            let pos = rng.buf(dev, &[n, d], 0.02)?;
            let mut out = DeviceBuffer::zeros(dev, &[b, n, d])?;
            let patch = m.patch;
            Box::new(move || ops::patch_embed_into(&px, &w, &bias, &pos, patch, &mut out))
        }
        CaseKind::Linear {
            rows,
            k,
            n: nout,
            activation,
            residual,
            ..
        } => {
            let x = rng.buf::<T, D>(dev, &[rows, k], 1.0)?;
            let w = rng.buf(dev, &[nout, k], 1.0 / (k as f32).sqrt())?;
            let square = spec.is_square();
            let bias = if square {
                None
            } else {
                Some(rng.buf(dev, &[nout], 0.02)?)
            };
            let res = if residual {
                Some(rng.buf(dev, &[rows, nout], 1.0)?)
            } else {
                None
            };
            let mut out = DeviceBuffer::zeros(dev, &[rows, nout])?;
            Box::new(move || {
                ops::linear_into(&x, &w, bias.as_ref(), activation, res.as_ref(), &mut out)
            })
        }
        CaseKind::LayerNorm { rows, cols } => {
            let x = rng.buf::<T, D>(dev, &[rows, cols], 1.0)?;
            let w = rng.ones(dev, &[cols])?;
            let bias = rng.buf(dev, &[cols], 0.02)?;
            let mut out = DeviceBuffer::zeros(dev, &[rows, cols])?;
            Box::new(move || ops::layer_norm_into(&x, &w, &bias, LN_EPS, &mut out))
        }
        CaseKind::Add { .. } | CaseKind::Launch => {
            let len = match spec.kind {
                CaseKind::Add { len } => len,
                _ => LAUNCH_LEN,
            };
            let a = rng.buf::<T, D>(dev, &[len], 1.0)?;
            let c = rng.buf(dev, &[len], 1.0)?;
            let mut out = DeviceBuffer::zeros(dev, &[len])?;
            Box::new(move || ops::add_into(&a, &c, &mut out))
        }
        CaseKind::Cast { len } => {
            let x = rng.buf::<T, D>(dev, &[len], 1.0)?;
            match T::DTYPE {
                DType::F32 => {
                    let mut out = DeviceBuffer::<bf16, D>::zeros(dev, &[len])?;
                    Box::new(move || ops::cast_into(&x, &mut out))
                }
                DType::BF16 => {
                    let mut out = DeviceBuffer::<f32, D>::zeros(dev, &[len])?;
                    Box::new(move || ops::cast_into(&x, &mut out))
                }
            }
        }
        CaseKind::Attention { seq } => {
            // As the model runs it: q, k and v column blocks of the fused projection.
            let qkv = rng.buf::<T, D>(dev, &[b, seq, 3 * d], 1.0)?;
            let mut out = DeviceBuffer::zeros(dev, &[b, seq, d])?;
            Box::new(move || ops::attention_qkv_into(&qkv, heads, &mut out))
        }
        CaseKind::MemoryRead => {
            let h = rng.buf::<T, D>(dev, &[b, n, d], 1.0)?;
            let bank = rng.buf(dev, &[b, MEMORY_EXPERTS, MEMORY_SLOTS, d], 1.0)?;
            let rw = rng.buf(dev, &[MEMORY_EXPERTS, d], 0.05)?;
            let rb = rng.buf(dev, &[MEMORY_EXPERTS], 0.02)?;
            let mut joint = DeviceBuffer::zeros(dev, &[b, MEMORY_SLOTS + n, d])?;
            let mut gate = DeviceBuffer::<f32, D>::zeros(dev, &[b, MEMORY_EXPERTS])?;
            Box::new(move || ops::memory_read_into(&h, &bank, &rw, &rb, &mut joint, &mut gate))
        }
        CaseKind::MemoryWrite => {
            let mut bank = rng.buf::<T, D>(dev, &[b, MEMORY_EXPERTS, MEMORY_SLOTS, d], 1.0)?;
            let gate_host: Vec<f32> = vec![1.0 / MEMORY_EXPERTS as f32; b * MEMORY_EXPERTS];
            let gate = DeviceBuffer::<f32, D>::from_slice(dev, &gate_host, &[b, MEMORY_EXPERTS])?;
            let o = rng.buf(dev, &[b, MEMORY_SLOTS + n, d], 1.0)?;
            let res = rng.buf(dev, &[b, n, d], 1.0)?;
            let mut out = DeviceBuffer::zeros(dev, &[b, n, d])?;
            Box::new(move || ops::memory_write_into(&mut bank, &gate, &o, &res, &mut out))
        }
        CaseKind::MemoryForward { layers } => {
            forward_case::<T, D>(dev, &m, b, layers, true, &mut rng)?
        }
        CaseKind::Forward { layers } => forward_case::<T, D>(dev, &m, b, layers, false, &mut rng)?,
        CaseKind::PackedForward { .. } | CaseKind::Pack => {
            return packed_case::<T, D>(dev, spec, false)
        }
    };
    Ok(Prepared { run })
}
