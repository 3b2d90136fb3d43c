//! `VisionModel<T, D>`: the SigLIP vision tower's weights on one device and its
//! forward pass (MODEL.md, "Forward pass" and "Memory-gated attention").

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::buffer::DeviceBuffer;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::{self, Activation, Kernels};

use super::config::VisionConfig;
use super::loader::{Checkpoint, Tensors};

/// A linear layer: weight `[out, in]`, bias `[out]`.
struct Linear<T: Element, D: Kernels<T>> {
    weight: DeviceBuffer<T, D>,
    bias: DeviceBuffer<T, D>,
}

impl<T: Element, D: Kernels<T>> Linear<T, D> {
    fn load(t: &Tensors<'_>, dev: &D, name: &str, out: usize, inp: usize) -> Result<Self> {
        Ok(Self {
            weight: t.upload(dev, &format!("{name}.weight"), &[out, inp])?,
            bias: t.upload(dev, &format!("{name}.bias"), &[out])?,
        })
    }

    fn from_host(dev: &D, w: &[T], b: &[T], out: usize, inp: usize) -> Result<Self> {
        Ok(Self {
            weight: DeviceBuffer::from_slice(dev, w, &[out, inp])?,
            bias: DeviceBuffer::from_slice(dev, b, &[out])?,
        })
    }

    fn forward(
        &self,
        x: &DeviceBuffer<T, D>,
        act: Activation,
        residual: Option<&DeviceBuffer<T, D>>,
    ) -> Result<DeviceBuffer<T, D>> {
        ops::linear(x, &self.weight, Some(&self.bias), act, residual)
    }
}

/// A layer norm's weight and bias, `[D]` each.
struct Norm<T: Element, D: Kernels<T>> {
    weight: DeviceBuffer<T, D>,
    bias: DeviceBuffer<T, D>,
}

impl<T: Element, D: Kernels<T>> Norm<T, D> {
    fn load(t: &Tensors<'_>, dev: &D, name: &str, d: usize) -> Result<Self> {
        Ok(Self {
            weight: t.upload(dev, &format!("{name}.weight"), &[d])?,
            bias: t.upload(dev, &format!("{name}.bias"), &[d])?,
        })
    }

    fn forward(&self, x: &DeviceBuffer<T, D>, eps: f32) -> Result<DeviceBuffer<T, D>> {
        ops::layer_norm(x, &self.weight, &self.bias, eps)
    }
}

/// fc1 (with GELU) and fc2.
struct Mlp<T: Element, D: Kernels<T>> {
    fc1: Linear<T, D>,
    fc2: Linear<T, D>,
}

impl<T: Element, D: Kernels<T>> Mlp<T, D> {
    fn load(t: &Tensors<'_>, dev: &D, name: &str, d: usize, f: usize) -> Result<Self> {
        Ok(Self {
            fc1: Linear::load(t, dev, &format!("{name}.fc1"), f, d)?,
            fc2: Linear::load(t, dev, &format!("{name}.fc2"), d, f)?,
        })
    }

    /// `residual + fc2(gelu_tanh(fc1(x)))`, the GELU and the residual fused.
    fn forward(
        &self,
        x: &DeviceBuffer<T, D>,
        residual: &DeviceBuffer<T, D>,
    ) -> Result<DeviceBuffer<T, D>> {
        let h = self.fc1.forward(x, Activation::GeluTanh, None)?;
        self.fc2.forward(&h, Activation::None, Some(residual))
    }
}

/// The memory-gated attention's extra weights in one layer.
struct MemoryWeights<T: Element, D: Kernels<T>> {
    /// `[E, M, D]`: S[b] before the first segment.
    init: Vec<T>,
    router: Linear<T, D>,
}

struct EncoderLayer<T: Element, D: Kernels<T>> {
    norm1: Norm<T, D>,
    q: Linear<T, D>,
    k: Linear<T, D>,
    v: Linear<T, D>,
    out: Linear<T, D>,
    norm2: Norm<T, D>,
    mlp: Mlp<T, D>,
    memory: Option<MemoryWeights<T, D>>,
}

struct Head<T: Element, D: Kernels<T>> {
    /// `[1, 1, D]`.
    probe: DeviceBuffer<T, D>,
    q: Linear<T, D>,
    k: Linear<T, D>,
    v: Linear<T, D>,
    out: Linear<T, D>,
    norm: Norm<T, D>,
    mlp: Mlp<T, D>,
}

/// Every tensor (unprefixed name, shape) a model with config `c` loads.
fn expected_tensors(c: &VisionConfig) -> Vec<(String, Vec<usize>)> {
    let (d, f, p, ch) = (
        c.hidden_size,
        c.intermediate_size,
        c.patch_size,
        c.num_channels,
    );
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    fn linear(out: &mut Vec<(String, Vec<usize>)>, name: &str, o: usize, i: usize) {
        out.push((format!("{name}.weight"), vec![o, i]));
        out.push((format!("{name}.bias"), vec![o]));
    }
    fn norm(out: &mut Vec<(String, Vec<usize>)>, name: &str, d: usize) {
        out.push((format!("{name}.weight"), vec![d]));
        out.push((format!("{name}.bias"), vec![d]));
    }
    out.push((
        "embeddings.patch_embedding.weight".into(),
        vec![d, ch, p, p],
    ));
    out.push(("embeddings.patch_embedding.bias".into(), vec![d]));
    out.push((
        "embeddings.position_embedding.weight".into(),
        vec![c.num_patches(), d],
    ));
    for i in 0..c.num_hidden_layers {
        let pre = format!("encoder.layers.{i}");
        let attn = format!("{pre}.self_attn");
        if c.is_memory_layer(i) {
            out.push((
                format!("{attn}.memory.init"),
                vec![c.memory_experts, c.memory_slots, d],
            ));
            linear(
                &mut out,
                &format!("{attn}.memory.router"),
                c.memory_experts,
                d,
            );
        }
        norm(&mut out, &format!("{pre}.layer_norm1"), d);
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            linear(&mut out, &format!("{attn}.{proj}"), d, d);
        }
        norm(&mut out, &format!("{pre}.layer_norm2"), d);
        linear(&mut out, &format!("{pre}.mlp.fc1"), f, d);
        linear(&mut out, &format!("{pre}.mlp.fc2"), d, f);
    }
    norm(&mut out, "post_layernorm", d);
    if c.vision_use_head {
        out.push(("head.probe".into(), vec![1, 1, d]));
        out.push(("head.attention.in_proj_weight".into(), vec![3 * d, d]));
        out.push(("head.attention.in_proj_bias".into(), vec![3 * d]));
        linear(&mut out, "head.attention.out_proj", d, d);
        norm(&mut out, "head.layernorm", d);
        linear(&mut out, "head.mlp.fc1", f, d);
        linear(&mut out, "head.mlp.fc2", d, f);
    }
    out
}

/// The config values that decide which tensors exist, for error messages.
fn describe(c: &VisionConfig) -> String {
    format!(
        "num_hidden_layers = {}, vision_use_head = {}, memory_experts = {}, memory_layers = {:?}",
        c.num_hidden_layers, c.vision_use_head, c.memory_experts, c.memory_layers
    )
}

/// What [`VisionModel::forward`] returns.
pub struct VisionOutput<T: Element, D: Kernels<T>> {
    /// `post_layernorm(x)`, `[B, N, D]`.
    pub last_hidden_state: DeviceBuffer<T, D>,
    /// The pooling head's output `[B, D]`; `None` when the config has
    /// `vision_use_head: false`.
    pub pooler_output: Option<DeviceBuffer<T, D>>,
}

/// The memory-gated attention's state: one bank `S` `[B, E, M, D]` per memory
/// layer, carried from one segment to the next.
///
/// Only [`VisionModel::new_memory`] makes one, so a bank always has its model's
/// element type and device type, lives on that model's device and belongs to that
/// model (passing it to another model is an error).
///
/// There is no other way to make one:
///
/// ```compile_fail
/// use tessera::{Cpu, model::MemoryBank};
/// let bank: MemoryBank<f32, Cpu> = MemoryBank { model_id: 0, batch: 1, layers: vec![] };
/// ```
///
/// and a bank of one device or element type cannot be given to a model of another:
///
/// ```compile_fail
/// use tessera::{bf16, Cpu, Wgpu, DeviceBuffer, model::VisionModel};
/// fn mix(cpu: &VisionModel<f32, Cpu>, gpu: &VisionModel<f32, Wgpu>, px: &DeviceBuffer<f32, Wgpu>) {
///     let mut bank = cpu.new_memory(1).unwrap();
///     let _ = gpu.forward(px, Some(&mut bank)); // a CPU bank on the GPU: type error
/// }
/// ```
///
/// ```compile_fail
/// use tessera::{bf16, Cpu, DeviceBuffer, model::VisionModel};
/// fn mix(a: &VisionModel<f32, Cpu>, b: &VisionModel<bf16, Cpu>, px: &DeviceBuffer<bf16, Cpu>) {
///     let mut bank = a.new_memory(1).unwrap();
///     let _ = b.forward(px, Some(&mut bank)); // an f32 bank in a bf16 model: type error
/// }
/// ```
pub struct MemoryBank<T: Element, D: Kernels<T>> {
    model_id: u64,
    batch: usize,
    layers: Vec<(usize, DeviceBuffer<T, D>)>,
}

impl<T: Element, D: Kernels<T>> MemoryBank<T, D> {
    /// The batch size B this bank was made for.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Each memory layer's index and its current state `[B, E, M, D]`, by ascending
    /// layer index. Empty for a model without memory.
    pub fn layers(&self) -> impl Iterator<Item = (usize, &DeviceBuffer<T, D>)> + '_ {
        self.layers.iter().map(|(l, s)| (*l, s))
    }
}

impl<T: Element, D: Kernels<T>> std::fmt::Debug for MemoryBank<T, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBank")
            .field("batch", &self.batch)
            .field("layers", &self.layers)
            .finish()
    }
}

static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// A SigLIP vision tower (optionally with memory-gated attention) whose weights
/// live on device `D` as element type `T`.
///
/// ```
/// use tessera::{Cpu, DeviceBuffer};
/// use tessera::model::VisionModel;
/// let model = VisionModel::<f32, Cpu>::load("assets/mga_tiny", &Cpu)?;
/// let shape = model.config().pixel_shape(1);
/// let pixels = DeviceBuffer::zeros(&Cpu, &shape)?;
/// let mut memory = model.new_memory(1)?;
/// let out = model.forward(&pixels, Some(&mut memory))?;
/// assert_eq!(out.last_hidden_state.shape(), &[1, 16, 64]);
/// # Ok::<(), tessera::Error>(())
/// ```
pub struct VisionModel<T: Element, D: Kernels<T>> {
    id: u64,
    config: VisionConfig,
    device: D,
    patch_weight: DeviceBuffer<T, D>,
    patch_bias: DeviceBuffer<T, D>,
    position: DeviceBuffer<T, D>,
    layers: Vec<EncoderLayer<T, D>>,
    post_norm: Norm<T, D>,
    head: Option<Head<T, D>>,
}

impl<T: Element, D: Kernels<T>> std::fmt::Debug for VisionModel<T, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisionModel")
            .field("dtype", &T::DTYPE)
            .field("device", &self.device.describe())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<T: Element, D: Kernels<T>> VisionModel<T, D> {
    /// Load `dir/config.json` and `dir/model.safetensors` onto `device` as `T`.
    ///
    /// The checkpoint is memory-mapped; tensor names may carry the `vision_model.`
    /// prefix or not. Every tensor the model uses must be stored as F32, BF16 or F16
    /// and have the shape the config implies; otherwise the error names the tensor,
    /// the file, and the expected and found shape or dtype.
    ///
    /// **Conversion.** Each tensor is converted on the host to `T`, explicitly,
    /// before the upload: to f32 exactly from any of the three dtypes; to bf16
    /// exactly from BF16, and with round-to-nearest-even from F32 or F16, which
    /// **loses precision** (bf16 keeps 8 significant bits): loading an f32
    /// checkpoint as a bf16 model is a deliberate quantisation.
    pub fn load(dir: impl AsRef<Path>, device: &D) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "model directory not found (expected config.json and model.safetensors in it)",
                ),
            ));
        }
        let config = VisionConfig::from_file(dir.join("config.json"))?;
        let checkpoint = Checkpoint::open(&dir.join("model.safetensors"))?;
        let tensors = checkpoint.tensors()?;
        // Every name, dtype and shape is checked before anything is converted or
        // uploaded, so a wrong checkpoint fails fast and allocates nothing large.
        tensors.check_all(&expected_tensors(&config), &describe(&config))?;
        Self::from_tensors(config, &tensors, device)
    }

    fn from_tensors(config: VisionConfig, t: &Tensors<'_>, dev: &D) -> Result<Self> {
        let c = &config;
        let (d, f, p, ch) = (
            c.hidden_size,
            c.intermediate_size,
            c.patch_size,
            c.num_channels,
        );
        let patch_weight = t.upload(dev, "embeddings.patch_embedding.weight", &[d, ch, p, p])?;
        let patch_bias = t.upload(dev, "embeddings.patch_embedding.bias", &[d])?;
        let position = t.upload(
            dev,
            "embeddings.position_embedding.weight",
            &[c.num_patches(), d],
        )?;
        // Not `with_capacity(num_hidden_layers)`: the count is the config's, and the
        // checkpoint has been checked to hold that many layers, but stay frugal.
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            let pre = format!("encoder.layers.{i}");
            let attn = format!("{pre}.self_attn");
            let memory = if c.is_memory_layer(i) {
                let (e, m) = (c.memory_experts, c.memory_slots);
                Some(MemoryWeights {
                    init: t.host::<T>(&format!("{attn}.memory.init"), &[e, m, d])?,
                    router: Linear::load(t, dev, &format!("{attn}.memory.router"), e, d)?,
                })
            } else {
                None
            };
            layers.push(EncoderLayer {
                norm1: Norm::load(t, dev, &format!("{pre}.layer_norm1"), d)?,
                q: Linear::load(t, dev, &format!("{attn}.q_proj"), d, d)?,
                k: Linear::load(t, dev, &format!("{attn}.k_proj"), d, d)?,
                v: Linear::load(t, dev, &format!("{attn}.v_proj"), d, d)?,
                out: Linear::load(t, dev, &format!("{attn}.out_proj"), d, d)?,
                norm2: Norm::load(t, dev, &format!("{pre}.layer_norm2"), d)?,
                mlp: Mlp::load(t, dev, &format!("{pre}.mlp"), d, f)?,
                memory,
            });
        }
        let post_norm = Norm::load(t, dev, "post_layernorm", d)?;
        let head = if c.vision_use_head {
            // The stacked in_proj is split into q, k and v at load time.
            let w = t.host::<T>("head.attention.in_proj_weight", &[3 * d, d])?;
            let b = t.host::<T>("head.attention.in_proj_bias", &[3 * d])?;
            let part = |i: usize| {
                Linear::from_host(
                    dev,
                    &w[i * d * d..(i + 1) * d * d],
                    &b[i * d..(i + 1) * d],
                    d,
                    d,
                )
            };
            Some(Head {
                probe: t.upload(dev, "head.probe", &[1, 1, d])?,
                q: part(0)?,
                k: part(1)?,
                v: part(2)?,
                out: Linear::load(t, dev, "head.attention.out_proj", d, d)?,
                norm: Norm::load(t, dev, "head.layernorm", d)?,
                mlp: Mlp::load(t, dev, "head.mlp", d, f)?,
            })
        } else {
            None
        };
        Ok(Self {
            id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
            config,
            device: dev.clone(),
            patch_weight,
            patch_bias,
            position,
            layers,
            post_norm,
            head,
        })
    }

    /// The checked config the model was loaded with.
    pub fn config(&self) -> &VisionConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// A fresh memory bank for batches of `batch` images: `S[b] = memory.init` in
    /// every memory layer. For a model without memory the bank is empty (and
    /// passing it to [`forward`](Self::forward) is allowed and does nothing).
    pub fn new_memory(&self, batch: usize) -> Result<MemoryBank<T, D>> {
        let mut layers = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            if let Some(mem) = &layer.memory {
                let mut host = Vec::new();
                host.try_reserve_exact(batch.saturating_mul(mem.init.len()))
                    .map_err(|_| Error::OutOfMemory {
                        device: "host".into(),
                        bytes: (batch as u64)
                            .saturating_mul(mem.init.len() as u64)
                            .saturating_mul(T::DTYPE.size() as u64),
                        tensor: format!("memory.layers.{i}"),
                    })?;
                for _ in 0..batch {
                    host.extend_from_slice(&mem.init);
                }
                let c = &self.config;
                let shape = [batch, c.memory_experts, c.memory_slots, c.hidden_size];
                layers.push((i, DeviceBuffer::from_slice(&self.device, &host, &shape)?));
            }
        }
        Ok(MemoryBank {
            model_id: self.id,
            batch,
            layers,
        })
    }

    /// Run the vision tower on `pixels` `[B, C, I, I]`.
    ///
    /// A model with memory needs `memory` (made by [`new_memory`](Self::new_memory)
    /// for the same batch size); it reads the bank and leaves in it the state for the
    /// next segment. If the call fails part-way the bank may be partly updated.
    ///
    /// **Bad inputs.** A shape other than `[B, C, I, I]` with the config's C and I,
    /// or an empty batch (B = 0), is an `Err` naming `pixel_values`. Values are not
    /// checked (that would cost a device round trip): NaN or ±Inf pixels propagate
    /// to NaN/Inf outputs for the images that hold them (other images in the batch
    /// are unaffected). Check host data first with
    /// [`preprocess::check_finite`](crate::preprocess::check_finite), as the CLI does.
    pub fn forward(
        &self,
        pixels: &DeviceBuffer<T, D>,
        memory: Option<&mut MemoryBank<T, D>>,
    ) -> Result<VisionOutput<T, D>> {
        let c = &self.config;
        let batch = pixels.shape().first().copied().unwrap_or(0);
        let want = c.pixel_shape(batch);
        if pixels.shape() != want || batch == 0 {
            return Err(Error::Input {
                tensor: "pixel_values".into(),
                msg: format!(
                    "has shape {:?}, expected [B, {}, {}, {}] with B ≥ 1 (e.g. {want:?})",
                    pixels.shape(),
                    c.num_channels,
                    c.image_size,
                    c.image_size
                ),
            });
        }
        let mut memory = match memory {
            Some(bank) => {
                if bank.model_id != self.id {
                    return Err(Error::Input {
                        tensor: "memory".into(),
                        msg: "this memory bank was made by another model; use this model's new_memory".into(),
                    });
                }
                if bank.batch != batch {
                    return Err(Error::Input {
                        tensor: "memory".into(),
                        msg: format!(
                            "the bank was made for batch {}, but pixel_values has batch {batch}",
                            bank.batch
                        ),
                    });
                }
                Some(bank)
            }
            None if c.has_memory() => {
                return Err(Error::Input {
                    tensor: "memory".into(),
                    msg: format!(
                        "this model has memory-gated attention on layers {:?}; pass a bank from new_memory({batch})",
                        c.memory_layers
                    ),
                })
            }
            None => None,
        };

        let heads = c.num_attention_heads;
        let eps = c.layer_norm_eps;
        let mut x = ops::patch_embed(
            pixels,
            &self.patch_weight,
            &self.patch_bias,
            &self.position,
            c.patch_size,
        )?;
        let mut bank_slot = 0;
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.norm1.forward(&x, eps)?;
            x = match &layer.memory {
                None => {
                    let q = layer.q.forward(&h, Activation::None, None)?;
                    let k = layer.k.forward(&h, Activation::None, None)?;
                    let v = layer.v.forward(&h, Activation::None, None)?;
                    let a = ops::attention(&q, &k, &v, heads)?;
                    layer.out.forward(&a, Activation::None, Some(&x))?
                }
                Some(mem) => {
                    let bank = memory.as_deref_mut().ok_or_else(|| Error::Input {
                        tensor: "memory".into(),
                        msg: format!("layer {i} needs a memory bank"),
                    })?;
                    let state = match bank.layers.get_mut(bank_slot) {
                        Some((l, s)) if *l == i => s,
                        _ => {
                            return Err(Error::Input {
                                tensor: "memory".into(),
                                msg: format!("the bank has no state for memory layer {i}"),
                            })
                        }
                    };
                    bank_slot += 1;
                    let (joint, gate) =
                        ops::memory_read(&h, state, &mem.router.weight, &mem.router.bias)?;
                    let q = layer.q.forward(&joint, Activation::None, None)?;
                    let k = layer.k.forward(&joint, Activation::None, None)?;
                    let v = layer.v.forward(&joint, Activation::None, None)?;
                    let a = ops::attention(&q, &k, &v, heads)?;
                    let o = layer.out.forward(&a, Activation::None, None)?;
                    ops::memory_write(state, &gate, &o, &x)?
                }
            };
            let h2 = layer.norm2.forward(&x, eps)?;
            x = layer.mlp.forward(&h2, &x)?;
        }
        let last_hidden_state = self.post_norm.forward(&x, eps)?;
        drop(x);

        let pooler_output = match &self.head {
            None => None,
            Some(head) => {
                // One probe query, shared by the batch (attention's q batch 1).
                let q = head.q.forward(&head.probe, Activation::None, None)?;
                let k = head.k.forward(&last_hidden_state, Activation::None, None)?;
                let v = head.v.forward(&last_hidden_state, Activation::None, None)?;
                let a = ops::attention(&q, &k, &v, heads)?;
                let r = head.out.forward(&a, Activation::None, None)?;
                let n = head.norm.forward(&r, eps)?;
                let pooled = head.mlp.forward(&n, &r)?;
                Some(pooled.reshape(&[batch, c.hidden_size])?)
            }
        };
        Ok(VisionOutput {
            last_hidden_state,
            pooler_output,
        })
    }
}
