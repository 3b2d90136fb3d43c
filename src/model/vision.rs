//! `VisionModel<T, D>`: the SigLIP vision tower's weights on one device and its
//! forward pass (MODEL.md, "Forward pass" and "Memory-gated attention").

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::buffer::DeviceBuffer;
use crate::device::DeviceKind;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::{self, Activation, Kernels};

use super::config::Architecture;
use super::config::VisionConfig;
use super::engine::{self, PackedWorkspace, Workspace};
use super::files::ModelFiles;
use super::loader::Checkpoint;
use super::naflex::{self, ImagePatches, PackedBatch, PackedOutput};
use super::weights::{self, Checker, Upload, Weights};

/// What [`VisionModel::forward`] returns. [`VisionModel::forward_into`] writes
/// into one made by [`VisionModel::new_output`] (or a previous call's).
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
    pub(super) layers: Vec<(usize, DeviceBuffer<T, D>)>,
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
    pub(super) config: VisionConfig,
    device: D,
    pub(super) w: Weights<DeviceBuffer<T, D>, Vec<T>>,
    /// The pooling head's query, `q_proj(probe)` `[1, 1, D]`: it depends on the
    /// weights only, so it is computed once at load.
    pub(super) probe_q: Option<DeviceBuffer<T, D>>,
    /// Activation buffers of finished forward passes, reused by the next ones at
    /// the same batch size (one per concurrent caller).
    workspaces: Mutex<Vec<Workspace<T, D>>>,
    /// The same for packed forwards, reused by any batch that fits.
    packed_workspaces: Mutex<Vec<PackedWorkspace<T, D>>>,
    /// Host rows of the last packed batch (GPU backends), reused by the next.
    staging: Mutex<Vec<T>>,
}

/// Workspaces a model keeps between calls.
const KEPT_WORKSPACES: usize = 4;

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
    /// Load a model onto `device` as `T`. `model` is a folder holding
    /// `config.json` and `model.safetensors` (or `model.safetensors.index.json`
    /// and its shards), or a hub id `org/name` found in the local Hugging Face
    /// cache (see [`ModelFiles::locate`]).
    ///
    /// Every tensor the config implies is checked — present, stored as F32, BF16
    /// or F16, of the expected shape — before anything is converted or uploaded;
    /// otherwise the error names the tensor and the file, the expected and found
    /// shape or dtype, and any config key whose transformers default disagrees
    /// with the checkpoint. Tensor names may carry the `vision_model.` prefix or
    /// not; another tower's tensors (a whole SiglipModel's `text_model.*`,
    /// `logit_scale`, `logit_bias`) are ignored.
    ///
    /// **Conversion.** Each tensor is converted on the host to `T`, explicitly,
    /// before the upload: to f32 exactly from any of the three dtypes; to bf16
    /// exactly from BF16, and with round-to-nearest-even from F32 or F16, which
    /// **loses precision** (bf16 keeps 8 significant bits): loading an f32
    /// checkpoint as a bf16 model is a deliberate quantisation.
    pub fn load(model: impl AsRef<Path>, device: &D) -> Result<Self> {
        Self::load_files(&ModelFiles::locate(model)?, device)
    }

    /// [`load`](Self::load) from files already located.
    pub fn load_files(files: &ModelFiles, device: &D) -> Result<Self> {
        let config = VisionConfig::from_file(&files.config)?;
        let checkpoint = Checkpoint::open(&files.weights)?;
        let tensors = checkpoint.tensors()?;
        // The whole checkpoint is checked first, so a wrong one fails fast and
        // allocates nothing large; the same walk then loads it.
        let mut checker = Checker::new(&tensors, &config);
        weights::build(&config, &mut checker)?;
        checker.finish()?;
        let w = weights::build(&config, &mut Upload::new(&tensors, device))?;
        Self::from_weights(config, w, device)
    }

    /// A model of `config` whose weights are drawn at random (seeded), through the
    /// same walk of the tensors as a checkpoint's: for benchmarks and tests at real
    /// sizes without a download. Layer norms are near identity, linear weights
    /// scaled by 1/√fan-in, so activations stay in range through the depth.
    ///
    /// The config is checked first ([`VisionConfig::validate`]): a changed
    /// default is refused with the field named, not run.
    pub fn random(config: VisionConfig, device: &D, seed: u64) -> Result<Self> {
        config.validate()?;
        let w = weights::build(&config, &mut weights::Random::new(device, seed))?;
        Self::from_weights(config, w, device)
    }

    fn from_weights(
        config: VisionConfig,
        w: Weights<DeviceBuffer<T, D>, Vec<T>>,
        device: &D,
    ) -> Result<Self> {
        let probe_q = match &w.head {
            Some(head) => Some(ops::linear(
                &head.probe,
                &head.q.weight,
                Some(&head.q.bias),
                Activation::None,
                None,
            )?),
            None => None,
        };
        Ok(Self {
            id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
            config,
            device: device.clone(),
            w,
            probe_q,
            workspaces: Mutex::new(Vec::new()),
            packed_workspaces: Mutex::new(Vec::new()),
            staging: Mutex::new(Vec::new()),
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
        for (i, layer) in self.w.layers.iter().enumerate() {
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

    /// Output buffers for batches of `batch`, for [`forward_into`](Self::forward_into).
    pub fn new_output(&self, batch: usize) -> Result<VisionOutput<T, D>> {
        let c = &self.config;
        Ok(VisionOutput {
            last_hidden_state: DeviceBuffer::uninit(
                &self.device,
                &[batch, c.num_patches(), c.hidden_size],
            )?,
            pooler_output: match &self.w.head {
                Some(_) => Some(DeviceBuffer::uninit(&self.device, &[batch, c.hidden_size])?),
                None => None,
            },
        })
    }

    /// Run the vision tower on `pixels` `[B, C, I, I]`.
    ///
    /// A model with memory needs `memory` (made by [`new_memory`](Self::new_memory)
    /// for the same batch size); it reads the bank and leaves in it, in place, the
    /// state for the next segment. If the call fails part-way the bank may be partly
    /// updated.
    ///
    /// Intermediate activations live in a workspace the model keeps between calls:
    /// after the first call at a batch size, a forward allocates only its outputs
    /// (and [`forward_into`](Self::forward_into) nothing at all). Calls from several
    /// threads each get a workspace of their own.
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
        let batch = self.check_pixels(pixels)?;
        let mut out = self.new_output(batch)?;
        self.forward_into(pixels, memory, &mut out)?;
        Ok(out)
    }

    /// [`forward`](Self::forward) writing into `out` (from
    /// [`new_output`](Self::new_output) for the same batch size, or a previous
    /// call's): no allocation once the model has a workspace for this batch size.
    ///
    /// **CUDA graphs.** On CUDA, calls with the same batch size, pixel buffer,
    /// outputs and memory bank (the same device memory: refill the pixels with
    /// [`DeviceBuffer::copy_from_host`]) are one replayable unit: the second such
    /// call is captured into a graph and later ones launch it instead of each
    /// kernel (see [`Cuda::graphs_enabled`](crate::Cuda::graphs_enabled);
    /// `TESSERA_CUDA_GRAPHS=0` turns it off). The shape and device checks run on
    /// every call; a forward that cannot be captured runs kernel by kernel.
    pub fn forward_into(
        &self,
        pixels: &DeviceBuffer<T, D>,
        memory: Option<&mut MemoryBank<T, D>>,
        out: &mut VisionOutput<T, D>,
    ) -> Result<()> {
        let batch = self.check_pixels(pixels)?;
        let mut memory = self.check_memory(memory, batch)?;
        // Before any work: a wrong `out` found at the end would leave the memory
        // bank already advanced.
        self.check_output(out, batch)?;
        let mut ws = self.take_workspace(batch)?;
        let key = self.forward_key(ws.id(), pixels, memory.as_deref(), out);
        let mut run = || engine::run(self, &mut ws, pixels, memory.as_deref_mut(), out);
        // On CUDA the launches are captured into a graph once per key and replayed
        // (Device::run_replayable); without a key (a buffer on another device)
        // the ops run and report the mismatch.
        let result = match key {
            Some(key) => self.device.run_replayable(&key, &mut run),
            None => run(),
        }
        // The forward's last ops start now (wgpu batches them; see Device::flush).
        .and_then(|()| self.device.flush());
        self.give_back(ws);
        result
    }

    /// What the launches of a forward depend on beyond the model itself (its
    /// `id`): the workspace, and the address and shape of every buffer passed
    /// in. `None` when a buffer is on another device.
    fn forward_key(
        &self,
        ws_id: u64,
        pixels: &DeviceBuffer<T, D>,
        memory: Option<&MemoryBank<T, D>>,
        out: &VisionOutput<T, D>,
    ) -> Option<Vec<u64>> {
        fn push<T: Element, D: Kernels<T>>(
            key: &mut Vec<u64>,
            dev: &D,
            b: &DeviceBuffer<T, D>,
        ) -> Option<()> {
            if !b.device().same_device(dev) {
                return None;
            }
            key.push(b.addr());
            key.push(b.shape().len() as u64);
            key.extend(b.shape().iter().map(|&d| d as u64));
            Some(())
        }
        let dev = &self.device;
        let mut key = vec![self.id, ws_id];
        push(&mut key, dev, pixels)?;
        push(&mut key, dev, &out.last_hidden_state)?;
        match &out.pooler_output {
            Some(p) => push(&mut key, dev, p)?,
            None => key.push(u64::MAX),
        }
        for (layer, state) in memory.map_or(&[][..], |m| &m.layers[..]) {
            key.push(*layer as u64);
            push(&mut key, dev, state)?;
        }
        Some(key)
    }

    /// Pack SigLIP 2 images (each its own grid of patches, see [`ImagePatches`])
    /// into one sequence on this model's device, for
    /// [`forward_packed`](Self::forward_packed).
    ///
    /// Each token's row holds its patch values and the coefficients of its
    /// position in the resized position grid (computed here, on the host, from
    /// the image's grid: see [`naflex`](super::naflex)). Errors: a SigLIP model
    /// (fixed size), no images, an empty grid, or a patch count that does not
    /// match `values` — naming the image.
    pub fn pack(&self, images: &[ImagePatches]) -> Result<PackedBatch<T, D>> {
        let c = &self.config;
        if c.architecture != Architecture::Siglip2 {
            return Err(Error::Input {
                tensor: "pixel_values".into(),
                msg: format!(
                    "this is a SigLIP model of fixed image size {0}×{0}: it takes [B, C, I, I] \
                     pixels (forward), not packed images",
                    c.image_size
                ),
            });
        }
        let cpp = c.patch_values();
        let mut lengths = Vec::with_capacity(images.len());
        for (i, img) in images.iter().enumerate() {
            let n = img.height.checked_mul(img.width).filter(|&n| n > 0);
            let expected = n.and_then(|n| n.checked_mul(cpp));
            if expected != Some(img.values.len()) {
                return Err(Error::Input {
                    tensor: "pixel_values".into(),
                    msg: format!(
                        "image {i}: a grid of {} × {} patches of {cpp} values (C·P·P) needs \
                         {} values, found {}",
                        img.height,
                        img.width,
                        expected.map_or("a non-empty grid and".to_string(), |e| e.to_string()),
                        img.values.len()
                    ),
                });
            }
            lengths.push(n.unwrap_or(0));
        }
        let segments = crate::ops::Segments::from_lengths(&lengths).map_err(|e| match e {
            Error::Input { msg, .. } => Error::Input {
                tensor: "pixel_values".into(),
                msg,
            },
            other => other,
        })?;
        let grid = c.position_grid();
        let shape = [segments.total(), cpp + grid * grid];
        let rows = if D::KIND == DeviceKind::Cpu {
            // The host rows are the CPU tensor: built once, moved, not copied.
            let mut host = Vec::new();
            naflex::fill_packed_rows(&mut host, images, cpp, grid)?;
            DeviceBuffer::from_vec(&self.device, host, &shape)?
        } else {
            // A staging vector kept between calls: its pages are already mapped.
            let mut staging = self.staging.lock().unwrap_or_else(|p| p.into_inner());
            naflex::fill_packed_rows(&mut staging, images, cpp, grid)?;
            DeviceBuffer::from_slice(&self.device, &staging, &shape)?
        };
        Ok(PackedBatch {
            rows,
            segments,
            shapes: images.iter().map(|i| (i.height, i.width)).collect(),
            geometry: (c.num_channels, c.patch_size, grid),
        })
    }

    /// Run a SigLIP 2 tower on a packed batch (from [`pack`](Self::pack)): patch
    /// and position embedding, the encoder with each image attending to its own
    /// patches only, the post layer norm, and the pooling head per image. No work
    /// is spent on padding: there is none.
    ///
    /// Activations live in a workspace the model keeps, sized for the largest
    /// batch seen; a later batch that fits allocates only its outputs.
    pub fn forward_packed(&self, batch: &PackedBatch<T, D>) -> Result<PackedOutput<T, D>> {
        let c = &self.config;
        // The geometry decides the row width (C·P·P + G²) and how it splits.
        let geometry = (c.num_channels, c.patch_size, c.position_grid());
        if c.architecture != Architecture::Siglip2 || batch.geometry != geometry {
            let width = c.patch_values() + c.num_patches();
            let (bc, bp, bg) = batch.geometry;
            return Err(Error::Input {
                tensor: "packed batch".into(),
                msg: format!(
                    "rows of {:?} values (C {bc}, P {bp}, position grid {bg}) do not fit this \
                     model (a {} model takes {width}: C·P·P = {}·{}·{} patch values and {}² \
                     position coefficients); pack with this model",
                    &batch.rows.shape()[1..],
                    c.architecture.model_type(),
                    c.num_channels,
                    c.patch_size,
                    c.patch_size,
                    c.position_grid()
                ),
            });
        }
        let (t, b, d) = (batch.tokens(), batch.images(), c.hidden_size);
        let mut out = PackedOutput {
            last_hidden_state: DeviceBuffer::uninit(&self.device, &[t, d])?,
            pooler_output: match &self.w.head {
                Some(_) => Some(DeviceBuffer::uninit(&self.device, &[b, d])?),
                None => None,
            },
            segments: batch.segments.clone(),
        };
        let mut ws = self.take_packed_workspace(t, b)?;
        // The forward's last ops start now (wgpu batches them; see Device::flush).
        let result =
            engine::run_packed(self, &mut ws, batch, &mut out).and_then(|()| self.device.flush());
        let mut pool = self
            .packed_workspaces
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        pool.push(ws);
        if pool.len() > KEPT_WORKSPACES {
            // Keep the largest.
            pool.sort_by_key(|w| std::cmp::Reverse(w.capacity()));
            pool.truncate(KEPT_WORKSPACES);
        }
        drop(pool);
        result.map(|()| out)
    }

    /// A packed workspace that fits `tokens` rows and `images` images: one from
    /// the pool, or a new one at least as large as the largest pooled.
    fn take_packed_workspace(&self, tokens: usize, images: usize) -> Result<PackedWorkspace<T, D>> {
        let mut pool = self
            .packed_workspaces
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(i) = pool.iter().position(|w| w.fits(tokens, images)) {
            return Ok(pool.swap_remove(i));
        }
        // Grow: replace the largest pooled workspace by one that fits this batch.
        let largest = (0..pool.len()).max_by_key(|&i| pool[i].capacity());
        let old = largest.map(|i| pool.swap_remove(i));
        drop(pool);
        let (t0, b0) = old.as_ref().map_or((0, 0), |w| w.capacity());
        drop(old);
        PackedWorkspace::new(self, tokens.max(t0), images.max(b0))
    }

    /// B of `pixels`, or an error when they are not `[B ≥ 1, C, I, I]`.
    fn check_pixels(&self, pixels: &DeviceBuffer<T, D>) -> Result<usize> {
        let c = &self.config;
        if c.architecture == Architecture::Siglip2 {
            return Err(Error::Input {
                tensor: "pixel_values".into(),
                msg: "this is a SigLIP 2 (NaFlex) model: it takes images at their own \
                      resolution as a packed batch (VisionModel::pack, then forward_packed), \
                      not [B, C, I, I]"
                    .into(),
            });
        }
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
        Ok(batch)
    }

    /// `out` as [`new_output`](Self::new_output) makes it for `batch`, on this
    /// model's device.
    fn check_output(&self, out: &VisionOutput<T, D>, batch: usize) -> Result<()> {
        const OP: &str = "forward_into";
        let c = &self.config;
        let lhs = &out.last_hidden_state;
        let want = [batch, c.num_patches(), c.hidden_size];
        crate::ops::prepare_named_out(OP, &self.device, "last_hidden_state", lhs, &want)?;
        match (&self.w.head, &out.pooler_output) {
            (None, None) => Ok(()),
            (Some(_), Some(p)) => {
                let want = [batch, c.hidden_size];
                crate::ops::prepare_named_out(OP, &self.device, "pooler_output", p, &want)
            }
            (head, _) => Err(Error::Input {
                tensor: "pooler_output".into(),
                msg: format!(
                    "is {}, but this model {} a pooling head (use new_output)",
                    if head.is_some() { "None" } else { "Some" },
                    if head.is_some() { "has" } else { "has no" },
                ),
            }),
        }
    }

    fn check_memory<'m>(
        &self,
        memory: Option<&'m mut MemoryBank<T, D>>,
        batch: usize,
    ) -> Result<Option<&'m mut MemoryBank<T, D>>> {
        let c = &self.config;
        match memory {
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
                Ok(Some(bank))
            }
            None if c.has_memory() => Err(Error::Input {
                tensor: "memory".into(),
                msg: format!(
                    "this model has memory-gated attention on layers {:?}; pass a bank from new_memory({batch})",
                    c.memory_layers
                ),
            }),
            None => Ok(None),
        }
    }

    /// A workspace for `batch` from the pool, or a new one.
    fn take_workspace(&self, batch: usize) -> Result<Workspace<T, D>> {
        let mut pool = self.workspaces.lock().unwrap_or_else(|p| p.into_inner());
        match pool.iter().position(|w| w.batch() == batch) {
            Some(i) => Ok(pool.swap_remove(i)),
            None => {
                drop(pool);
                Workspace::new(self, batch)
            }
        }
    }

    fn give_back(&self, ws: Workspace<T, D>) {
        let mut pool = self.workspaces.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() >= KEPT_WORKSPACES {
            pool.remove(0);
        }
        pool.push(ws);
    }
}
