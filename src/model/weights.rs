//! The one list of a SigLIP checkpoint's tensors. [`build`] walks the config and
//! asks a [`Source`] for every tensor by name and expected shape; the loader runs
//! it twice over the same walk — once with [`Checker`] (names, dtypes and shapes
//! of the whole checkpoint, nothing converted or uploaded) and once with
//! [`Upload`] — so what is checked is exactly what is loaded.

use std::collections::HashSet;

use super::config::{Architecture, VisionConfig};
use super::loader::Tensors;
use crate::buffer::DeviceBuffer;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::Kernels;

/// One axis of an expected tensor shape and the config key that sets it (for
/// the message when a default disagrees with the checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dim {
    pub value: usize,
    pub keys: &'static [&'static str],
}

fn values(shape: &[Dim]) -> Vec<usize> {
    shape.iter().map(|d| d.value).collect()
}

/// A linear layer: weight `[out, in]`, bias `[out]`.
pub(crate) struct LinearW<B> {
    pub weight: B,
    pub bias: B,
}

/// A layer norm's weight and bias, `[D]` each.
pub(crate) struct NormW<B> {
    pub weight: B,
    pub bias: B,
}

/// fc1 (followed by GELU) and fc2.
pub(crate) struct MlpW<B> {
    pub fc1: LinearW<B>,
    pub fc2: LinearW<B>,
}

/// The memory-gated attention's extra weights in one layer.
pub(crate) struct MemoryW<B, H> {
    /// `[E, M, D]`: each image's bank before the first segment (kept on the host).
    pub init: H,
    pub router: LinearW<B>,
}

pub(crate) struct LayerW<B, H> {
    pub norm1: NormW<B>,
    /// q_proj, k_proj and v_proj stacked: weight `[3·D, D]`, bias `[3·D]` — one GEMM.
    pub qkv: LinearW<B>,
    pub out: LinearW<B>,
    pub norm2: NormW<B>,
    pub mlp: MlpW<B>,
    pub memory: Option<MemoryW<B, H>>,
}

pub(crate) struct HeadW<B> {
    /// `[1, 1, D]`.
    pub probe: B,
    /// The first D rows of the stacked `in_proj` (q).
    pub q: LinearW<B>,
    /// Its other 2·D rows (k and v): one GEMM over the tokens.
    pub kv: LinearW<B>,
    pub out: LinearW<B>,
    pub norm: NormW<B>,
    pub mlp: MlpW<B>,
}

/// The patch and position embedding.
pub(crate) enum Embedding<B> {
    /// SigLIP: the stride-P convolution's weight `[D, C, P, P]` and bias `[D]`,
    /// the position table `[N, D]`.
    Conv { weight: B, bias: B, position: B },
    /// SigLIP 2: one linear layer over a packed row `[patch (C·P·P) | position
    /// coefficients (G²)]` — weight `[D, C·P·P + G²]` = `[W_patch | tableᵀ]`,
    /// bias `[D]` — so one GEMM computes `W_patch·patch + b + Σ cᵢ·table[i]`:
    /// the patch embedding plus the position grid resized to the image (the
    /// coefficients are the resize's, see `naflex`).
    Joined(LinearW<B>),
}

/// Every weight of a vision tower: device tensors `B`, host tensors `H`.
pub(crate) struct Weights<B, H> {
    pub embedding: Embedding<B>,
    pub layers: Vec<LayerW<B, H>>,
    pub post_norm: NormW<B>,
    pub head: Option<HeadW<B>>,
}

/// Where [`build`] gets each tensor from.
pub(crate) trait Source {
    /// A tensor for the device.
    type Buf;
    /// A tensor kept on the host.
    type Host;
    /// The tensor `name` (unprefixed), of shape `shape`.
    fn tensor(&mut self, name: &str, shape: &[Dim]) -> Result<Self::Buf>;
    /// The tensor `name`, kept on the host.
    fn host(&mut self, name: &str, shape: &[Dim]) -> Result<Self::Host>;
    /// Rows `rows` (of the first axis) of the tensor `name`.
    fn row_range(
        &mut self,
        name: &str,
        shape: &[Dim],
        rows: std::ops::Range<usize>,
    ) -> Result<Self::Buf>;
    /// The tensors `parts` (name, shape) stacked along their first axis.
    fn stacked(&mut self, parts: &[(String, Vec<Dim>)]) -> Result<Self::Buf>;
    /// `[left | rightᵀ]`: the matrix `left` `[R, K]` with the transpose of
    /// `right` `[J, R]` joined as J more columns, `[R, K + J]`.
    fn joined_transposed(
        &mut self,
        left: (&str, &[Dim]),
        right: (&str, &[Dim]),
    ) -> Result<Self::Buf>;
}

/// `[left | rightᵀ]` of `left` `[R, K]` and `right` `[J, R]` (row-major).
fn join_transposed<T: Copy>(left: &[T], right: &[T], r: usize, k: usize, j: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(r * (k + j));
    for row in 0..r {
        out.extend_from_slice(&left[row * k..(row + 1) * k]);
        out.extend((0..j).map(|col| right[col * r + row]));
    }
    out
}

/// Walk the tensors a model with config `c` has, in checkpoint order, taking
/// each from `s`. The names are the checkpoint's without the `vision_model.` prefix.
pub(crate) fn build<S: Source>(c: &VisionConfig, s: &mut S) -> Result<Weights<S::Buf, S::Host>> {
    let d = Dim {
        value: c.hidden_size,
        keys: &["hidden_size"],
    };
    let f = Dim {
        value: c.intermediate_size,
        keys: &["intermediate_size"],
    };
    let p = Dim {
        value: c.patch_size,
        keys: &["patch_size"],
    };
    let ch = Dim {
        value: c.num_channels,
        keys: &["num_channels"],
    };
    let (patch, position) = (
        "embeddings.patch_embedding.weight",
        "embeddings.position_embedding.weight",
    );
    let embedding = match c.architecture {
        Architecture::Siglip => {
            let n = Dim {
                value: c.num_patches(),
                keys: &["image_size", "patch_size"],
            };
            Embedding::Conv {
                weight: s.tensor(patch, &[d, ch, p, p])?,
                bias: s.tensor("embeddings.patch_embedding.bias", &[d])?,
                position: s.tensor(position, &[n, d])?,
            }
        }
        Architecture::Siglip2 => {
            let n = Dim {
                value: c.num_patches(),
                keys: &["num_patches"],
            };
            let cpp = Dim {
                value: c.patch_values(),
                keys: &["num_channels", "patch_size"],
            };
            Embedding::Joined(LinearW {
                weight: s.joined_transposed((patch, &[d, cpp]), (position, &[n, d]))?,
                bias: s.tensor("embeddings.patch_embedding.bias", &[d])?,
            })
        }
    };
    let mut layers = Vec::new();
    for i in 0..c.num_hidden_layers {
        let pre = format!("encoder.layers.{i}");
        let attn = format!("{pre}.self_attn");
        let memory = if c.is_memory_layer(i) {
            let e = Dim {
                value: c.memory_experts,
                keys: &["memory_experts"],
            };
            let m = Dim {
                value: c.memory_slots,
                keys: &["memory_slots"],
            };
            Some(MemoryW {
                init: s.host(&format!("{attn}.memory.init"), &[e, m, d])?,
                router: linear(s, &format!("{attn}.memory.router"), e, d)?,
            })
        } else {
            None
        };
        let proj = |p: &str, tail: &str, shape: &[Dim]| {
            (format!("{attn}.{p}_proj.{tail}"), shape.to_vec())
        };
        let qkv = LinearW {
            weight: s.stacked(&["q", "k", "v"].map(|p| proj(p, "weight", &[d, d])))?,
            bias: s.stacked(&["q", "k", "v"].map(|p| proj(p, "bias", &[d])))?,
        };
        layers.push(LayerW {
            memory,
            norm1: norm(s, &format!("{pre}.layer_norm1"), d)?,
            qkv,
            out: linear(s, &format!("{attn}.out_proj"), d, d)?,
            norm2: norm(s, &format!("{pre}.layer_norm2"), d)?,
            mlp: mlp(s, &format!("{pre}.mlp"), d, f)?,
        });
    }
    let post_norm = norm(s, "post_layernorm", d)?;
    let head = if c.vision_use_head {
        let d3 = Dim {
            value: 3 * c.hidden_size,
            keys: &["hidden_size"],
        };
        let (w, b) = (
            "head.attention.in_proj_weight",
            "head.attention.in_proj_bias",
        );
        let dd = c.hidden_size;
        Some(HeadW {
            probe: s.tensor("head.probe", &[one(), one(), d])?,
            q: LinearW {
                weight: s.row_range(w, &[d3, d], 0..dd)?,
                bias: s.row_range(b, &[d3], 0..dd)?,
            },
            kv: LinearW {
                weight: s.row_range(w, &[d3, d], dd..3 * dd)?,
                bias: s.row_range(b, &[d3], dd..3 * dd)?,
            },
            out: linear(s, "head.attention.out_proj", d, d)?,
            norm: norm(s, "head.layernorm", d)?,
            mlp: mlp(s, "head.mlp", d, f)?,
        })
    } else {
        None
    };
    Ok(Weights {
        embedding,
        layers,
        post_norm,
        head,
    })
}

fn one() -> Dim {
    Dim {
        value: 1,
        keys: &[],
    }
}

fn linear<S: Source>(s: &mut S, name: &str, out: Dim, inp: Dim) -> Result<LinearW<S::Buf>> {
    Ok(LinearW {
        weight: s.tensor(&format!("{name}.weight"), &[out, inp])?,
        bias: s.tensor(&format!("{name}.bias"), &[out])?,
    })
}

fn norm<S: Source>(s: &mut S, name: &str, d: Dim) -> Result<NormW<S::Buf>> {
    Ok(NormW {
        weight: s.tensor(&format!("{name}.weight"), &[d])?,
        bias: s.tensor(&format!("{name}.bias"), &[d])?,
    })
}

fn mlp<S: Source>(s: &mut S, name: &str, d: Dim, f: Dim) -> Result<MlpW<S::Buf>> {
    Ok(MlpW {
        fc1: linear(s, &format!("{name}.fc1"), f, d)?,
        fc2: linear(s, &format!("{name}.fc2"), d, f)?,
    })
}

// ---------------------------------------------------------------------------
// Checking: every tensor present, supported dtype, expected shape; nothing else
// in the vision tower.

/// A [`Source`] that checks each tensor against the checkpoint and converts
/// nothing; [`Checker::finish`] then refuses vision-tower tensors the walk did
/// not ask for (the config and the checkpoint disagree).
pub(crate) struct Checker<'a> {
    tensors: &'a Tensors<'a>,
    config: &'a VisionConfig,
    used: HashSet<String>,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(tensors: &'a Tensors<'a>, config: &'a VisionConfig) -> Self {
        Self {
            tensors,
            config,
            used: HashSet::new(),
        }
    }

    /// The config keys whose value decides whether tensor `name` exists.
    fn structural_keys(name: &str) -> &'static [&'static str] {
        if name.starts_with("encoder.layers.") {
            &["num_hidden_layers"]
        } else if name.starts_with("head.") {
            &["vision_use_head"]
        } else {
            &[]
        }
    }

    fn with_note(&self, msg: String, keys: &[&str]) -> String {
        match self.config.default_note(keys) {
            Some(note) => format!("{msg}; {note}"),
            None => msg,
        }
    }

    /// Refuse tensors of the vision tower that the walk did not use.
    pub(crate) fn finish(self) -> Result<()> {
        let c = self.config;
        for (rest, full) in self.tensors.vision_names() {
            // Older exports save the position ids buffer; it is not a weight.
            if rest == "embeddings.position_ids" || self.used.contains(rest) {
                continue;
            }
            let msg = self.with_note(
                format!(
                    "unexpected tensor: the config (num_hidden_layers = {}, vision_use_head = {}, \
                     memory_experts = {}, memory_layers = {:?}) does not use it; the config does \
                     not match this checkpoint",
                    c.num_hidden_layers, c.vision_use_head, c.memory_experts, c.memory_layers
                ),
                Self::structural_keys(rest),
            );
            return Err(self.tensors.err(full, msg));
        }
        Ok(())
    }
}

impl Source for Checker<'_> {
    type Buf = ();
    type Host = ();

    fn tensor(&mut self, name: &str, shape: &[Dim]) -> Result<()> {
        let t = self.tensors;
        let Some((full, view)) = t.find(name) else {
            let msg = self.with_note(
                format!("missing (looked for `vision_model.{name}` and `{name}`)"),
                Self::structural_keys(name),
            );
            return Err(t.err(name, msg));
        };
        t.check_dtype(&full, &view)?;
        let want = values(shape);
        if view.shape() != want.as_slice() {
            // The keys behind the axes that differ (all of them if the rank does).
            let keys: Vec<&str> = if view.shape().len() == shape.len() {
                shape
                    .iter()
                    .zip(view.shape())
                    .filter(|(d, &got)| d.value != got)
                    .flat_map(|(d, _)| d.keys.iter().copied())
                    .collect()
            } else {
                shape.iter().flat_map(|d| d.keys.iter().copied()).collect()
            };
            let mut keys_unique: Vec<&str> = Vec::new();
            for k in keys {
                if !keys_unique.contains(&k) {
                    keys_unique.push(k);
                }
            }
            let msg = self.with_note(
                format!("has shape {:?}, expected {want:?}", view.shape()),
                &keys_unique,
            );
            return Err(t.err(&full, msg));
        }
        self.used.insert(name.to_string());
        Ok(())
    }

    fn host(&mut self, name: &str, shape: &[Dim]) -> Result<()> {
        self.tensor(name, shape)
    }

    fn row_range(
        &mut self,
        name: &str,
        shape: &[Dim],
        _rows: std::ops::Range<usize>,
    ) -> Result<()> {
        self.tensor(name, shape)
    }

    fn stacked(&mut self, parts: &[(String, Vec<Dim>)]) -> Result<()> {
        for (name, shape) in parts {
            self.tensor(name, shape)?;
        }
        Ok(())
    }

    fn joined_transposed(&mut self, left: (&str, &[Dim]), right: (&str, &[Dim])) -> Result<()> {
        self.tensor(left.0, left.1)?;
        self.tensor(right.0, right.1)
    }
}

/// The tensors `parts` read by `read(name, shape)`, stacked along their first
/// axis: (shape, data).
fn stack<T>(
    parts: &[(String, Vec<Dim>)],
    mut read: impl FnMut(&str, &[usize]) -> Result<Vec<T>>,
) -> Result<(Vec<usize>, Vec<T>)> {
    let mut data = Vec::new();
    let mut shape: Vec<usize> = Vec::new();
    for (name, dims) in parts {
        let part = values(dims);
        data.extend(read(name, &part)?);
        if shape.is_empty() {
            shape = part;
        } else if shape[1..] == part[1..] {
            shape[0] += part[0];
        } else {
            return Err(Error::Internal(format!(
                "{name}: stacked parts differ in shape"
            )));
        }
    }
    Ok((shape, data))
}

// ---------------------------------------------------------------------------
// Loading: convert on the host to `T`, upload to `D`.

/// A [`Source`] that reads each tensor as `T` and uploads it to the device.
pub(crate) struct Upload<'a, T, D> {
    tensors: &'a Tensors<'a>,
    device: &'a D,
    _t: std::marker::PhantomData<T>,
}

impl<'a, T: Element, D: Kernels<T>> Upload<'a, T, D> {
    pub(crate) fn new(tensors: &'a Tensors<'a>, device: &'a D) -> Self {
        Self {
            tensors,
            device,
            _t: std::marker::PhantomData,
        }
    }
}

impl<T: Element, D: Kernels<T>> Source for Upload<'_, T, D> {
    type Buf = DeviceBuffer<T, D>;
    type Host = Vec<T>;

    fn tensor(&mut self, name: &str, shape: &[Dim]) -> Result<DeviceBuffer<T, D>> {
        let shape = values(shape);
        let host = self.tensors.host::<T>(name, &shape)?;
        DeviceBuffer::from_slice(self.device, &host, &shape)
    }

    fn host(&mut self, name: &str, shape: &[Dim]) -> Result<Vec<T>> {
        self.tensors.host::<T>(name, &values(shape))
    }

    fn row_range(
        &mut self,
        name: &str,
        shape: &[Dim],
        rows: std::ops::Range<usize>,
    ) -> Result<DeviceBuffer<T, D>> {
        let shape = values(shape);
        let host = self.tensors.host::<T>(name, &shape)?;
        let row_len: usize = shape.iter().skip(1).product();
        let part = host
            .get(rows.start * row_len..rows.end * row_len)
            .ok_or_else(|| Error::Internal(format!("{name}: rows {rows:?} of {shape:?}")))?;
        let mut part_shape = shape.clone();
        part_shape[0] = rows.len();
        DeviceBuffer::from_slice(self.device, part, &part_shape)
    }

    fn stacked(&mut self, parts: &[(String, Vec<Dim>)]) -> Result<DeviceBuffer<T, D>> {
        let (shape, data) = stack(parts, |name, shape| self.tensors.host::<T>(name, shape))?;
        DeviceBuffer::from_slice(self.device, &data, &shape)
    }

    fn joined_transposed(
        &mut self,
        left: (&str, &[Dim]),
        right: (&str, &[Dim]),
    ) -> Result<DeviceBuffer<T, D>> {
        let (ls, rs) = (values(left.1), values(right.1));
        let l = self.tensors.host::<T>(left.0, &ls)?;
        let r = self.tensors.host::<T>(right.0, &rs)?;
        joined(self.device, &l, &r, &ls, &rs)
    }
}

/// Upload `[left | rightᵀ]` (shapes `[R, K]` and `[J, R]`).
fn joined<T: Element, D: Kernels<T>>(
    device: &D,
    left: &[T],
    right: &[T],
    ls: &[usize],
    rs: &[usize],
) -> Result<DeviceBuffer<T, D>> {
    let (&[r, k], &[j, r2]) = (ls, rs) else {
        return Err(Error::Internal(format!("join of {ls:?} and {rs:?}")));
    };
    if r != r2 || left.len() != r * k || right.len() != j * r {
        return Err(Error::Internal(format!("join of {ls:?} and {rs:?}")));
    }
    let data = join_transposed(left, right, r, k, j);
    DeviceBuffer::from_slice(device, &data, &[r, k + j])
}

// ---------------------------------------------------------------------------
// Random weights (benchmarks, tests at real sizes): the same walk, seeded values.

/// A [`Source`] that draws every tensor at random: layer-norm weights near 1 and
/// biases near 0, matrices uniform in ±1/√fan-in (the last axis), everything else
/// small; deterministic for a seed.
pub(crate) struct Random<'a, T, D> {
    device: &'a D,
    rng: crate::random::Rng,
    _t: std::marker::PhantomData<T>,
}

impl<'a, T: Element, D: Kernels<T>> Random<'a, T, D> {
    pub(crate) fn new(device: &'a D, seed: u64) -> Self {
        Self {
            device,
            rng: crate::random::Rng::new(seed),
            _t: std::marker::PhantomData,
        }
    }

    fn values(&mut self, name: &str, shape: &[usize]) -> Result<Vec<T>> {
        let n = crate::buffer::checked_numel(shape)
            .ok_or_else(|| Error::Internal(format!("{name}: shape {shape:?} overflows")))?;
        let fan_in = shape.last().copied().unwrap_or(1).max(1) as f32;
        let (center, scale) = if name.ends_with("layer_norm1.weight")
            || name.ends_with("layer_norm2.weight")
            || name.ends_with("layernorm.weight")
        {
            (1.0, 0.05)
        } else if shape.len() >= 2 {
            (0.0, fan_in.powf(-0.5))
        } else {
            (0.0, 0.02)
        };
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|_| Error::OutOfMemory {
            device: "host".into(),
            bytes: (n as u64).saturating_mul(T::DTYPE.size() as u64),
            tensor: name.to_string(),
        })?;
        for _ in 0..n {
            out.push(T::from_f32(center + self.rng.uniform(scale)));
        }
        Ok(out)
    }
}

impl<T: Element, D: Kernels<T>> Source for Random<'_, T, D> {
    type Buf = DeviceBuffer<T, D>;
    type Host = Vec<T>;

    fn tensor(&mut self, name: &str, shape: &[Dim]) -> Result<DeviceBuffer<T, D>> {
        let shape = values(shape);
        let host = self.values(name, &shape)?;
        DeviceBuffer::from_slice(self.device, &host, &shape)
    }

    fn host(&mut self, name: &str, shape: &[Dim]) -> Result<Vec<T>> {
        self.values(name, &values(shape))
    }

    fn row_range(
        &mut self,
        name: &str,
        shape: &[Dim],
        rows: std::ops::Range<usize>,
    ) -> Result<DeviceBuffer<T, D>> {
        let mut shape = values(shape);
        shape[0] = rows.len();
        let host = self.values(name, &shape)?;
        DeviceBuffer::from_slice(self.device, &host, &shape)
    }

    fn stacked(&mut self, parts: &[(String, Vec<Dim>)]) -> Result<DeviceBuffer<T, D>> {
        let (shape, data) = stack(parts, |name, shape| self.values(name, shape))?;
        DeviceBuffer::from_slice(self.device, &data, &shape)
    }

    fn joined_transposed(
        &mut self,
        left: (&str, &[Dim]),
        right: (&str, &[Dim]),
    ) -> Result<DeviceBuffer<T, D>> {
        let (ls, rs) = (values(left.1), values(right.1));
        let l = self.values(left.0, &ls)?;
        let r = self.values(right.0, &rs)?;
        joined(self.device, &l, &r, &ls, &rs)
    }
}
