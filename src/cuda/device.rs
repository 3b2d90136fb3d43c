//! The `Cuda` device (feature `cuda`): context, stream, memory, device timers.
//! Modules, functions and launches are `launch.rs`; each op is its own file.
//!
//! - One [`Cuda`] handle = one `CudaContext` (the device's primary context,
//!   retained) + one non-blocking stream. Every op is queued on that stream, so
//!   ops on one handle run in order; `to_vec` and `synchronize` wait for them.
//! - Storage is a `CudaSlice<u8>` plus the element count: bytes, so `Element`
//!   needs no cudarc bound.
//! - Uploads go through two page-locked staging buffers (`upload.rs`): they
//!   return once the data is copied there, not when the work queued before them
//!   has run, and the copy goes over the bus at page-locked speed.
//! - Kernels are hand-written PTX in `kernels/*.ptx` (one module per op family),
//!   embedded with `include_str!`, JIT-loaded on first use and cached per handle.
//!   Entry points are named `{op}_{dtype}` (`linear_bf16`, `cast_f32_bf16`).
//! - Before any cudarc call we check that libcuda can be loaded (cudarc panics
//!   otherwise with dynamic loading), and every driver call that could panic inside
//!   cudarc (a missing symbol in an old driver) is wrapped in `catch_unwind`.

use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use cudarc::driver::{result as cu, sys, CudaContext, CudaSlice, CudaStream, DriverError};

use super::graph::Graphs;
use super::launch::Modules;
use super::GemmPath;
use crate::device::{sealed, Device, DeviceKind};
use crate::element::Element;
use crate::error::{Error, Result};

/// An NVIDIA GPU driven through hand-written PTX kernels.
///
/// Cloning the handle is cheap and gives the same device; two handles made by two
/// calls to [`Cuda::new`] are different devices (buffers cannot be mixed).
#[derive(Clone)]
pub struct Cuda {
    pub(super) inner: Arc<Inner>,
}

/// A small device buffer and the words it holds.
pub(super) type WordBuffer = (Vec<u32>, Arc<CudaSlice<u8>>);

pub(super) struct Inner {
    pub(super) ordinal: usize,
    pub(super) name: String,
    /// Compute capability (major, minor).
    pub(super) capability: (i32, i32),
    /// Shared memory per block with opt-in, in bytes.
    pub(super) max_smem: u32,
    /// Streaming multiprocessors (the persistent kernels' grid).
    pub(super) sm_count: u32,
    /// Which bf16 GEMM the aligned linear layers use.
    pub(super) gemm: GemmPath,
    /// How the aligned f32 linear layers multiply (`TESSERA_CUDA_F32_GEMM`).
    pub(super) f32_gemm: super::F32Gemm,
    /// Which bf16 tensor-core attention kernels the head dims that have both use.
    pub(super) attention: super::attention::AttentionPath,
    /// Whether the bf16 Hopper attention's warpgroups take turns on the tensor
    /// cores (`TESSERA_CUDA_SM90_TURNS`).
    pub(super) sm90_turns: bool,
    /// The wgmma GEMM's output tile width and cluster size where
    /// `TESSERA_CUDA_SM90_TILE_N` / `TESSERA_CUDA_SM90_CLUSTER` fix them (else
    /// chosen per shape: `linear::sm90_variant`).
    pub(super) sm90: super::linear::Sm90Override,
    pub(super) ctx: Arc<CudaContext>,
    pub(super) stream: Arc<CudaStream>,
    /// Where a thread capturing a graph records its launches (`graph.rs`).
    pub(super) capture_stream: Arc<CudaStream>,
    /// Captured graphs by key, and whether graphs are used at all
    /// (`TESSERA_CUDA_GRAPHS`).
    pub(super) graphs: Mutex<Graphs>,
    pub(super) graphs_enabled: bool,
    /// Bumped each time a scratch buffer is replaced: part of every graph's
    /// key, so no graph outlives the buffers it was captured with.
    pub(super) scratch_generation: std::sync::atomic::AtomicU64,
    /// Loaded modules by family name (`"linear"`), and functions by entry name.
    pub(super) modules: Mutex<Modules>,
    /// The last small word buffer uploaded (a packed batch's offsets) and its
    /// words: the attention calls of one forward share it. Never written after
    /// the upload, so queued kernels that read it never see it change.
    pub(super) words: Mutex<Option<WordBuffer>>,
    /// Kernels launched so far ([`Device::launch_count`]).
    pub(super) launches: std::sync::atomic::AtomicU64,
    /// Scratch buffers, each grown to its largest use: the split-K GEMM's f32
    /// partial sums (the first), patch embedding's patches and padded weight
    /// (the first two). Locked from an op's first launch through its last, so
    /// two host threads cannot interleave on them; stream order does the rest.
    pub(super) scratch: Mutex<Vec<CudaSlice<u8>>>,
    /// Page-locked buffers every upload goes through (`upload.rs`).
    pub(super) staging: Mutex<super::upload::Staging>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Graphs reference the modules' functions: destroy them first (a graph
        // still running is freed by the driver when it completes; the stream is
        // drained below before any module is unloaded).
        match self.graphs.get_mut() {
            Ok(g) => g.clear(),
            Err(p) => p.into_inner().clear(),
        }
        let mods = match self.modules.get_mut() {
            Ok(m) => std::mem::take(m),
            Err(p) => std::mem::take(p.into_inner()),
        };
        if mods.modules.is_empty() {
            return;
        }
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // Queued kernels may still use the modules: drain the stream first.
            let _ = self.stream.synchronize();
            // An error left in the context (by a buffer's drop, say) would make the
            // bind below fail and leak the modules: there is no caller to give it to.
            let _ = self.ctx.check_err();
            if self.ctx.bind_to_thread().is_ok() {
                for (_, m) in mods.modules {
                    // SAFETY: each module was loaded once by this context and is
                    // unloaded exactly once here; no function of it is used afterwards
                    // because `Inner` is being dropped.
                    let _ = unsafe { cu::module::unload(m.0) };
                }
            }
        }));
    }
}

impl std::fmt::Debug for Cuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cuda")
            .field("ordinal", &self.inner.ordinal)
            .field("name", &self.inner.name)
            .finish()
    }
}

/// Device memory of `len` elements of `T`, held as bytes.
pub struct CudaStorage<T: Element> {
    pub(super) buf: CudaSlice<u8>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Element> std::fmt::Debug for CudaStorage<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaStorage<{}>[{}]", T::DTYPE, self.len)
    }
}

const NO_DRIVER: &str = "libcuda.so could not be loaded; install the NVIDIA driver \
     (or put libcuda on LD_LIBRARY_PATH), or use the cpu or wgpu backend";

/// Buffers come from the device's default memory pool (`cuMemAllocAsync`, which
/// cudarc uses where the device has pools). The pool's release threshold is 0 by
/// default: at every synchronisation it gives its free memory back to the driver,
/// and the next forward's allocations map it again. Keep it instead, as PyTorch's
/// caching allocator does: freed memory stays with this process for its next
/// allocations. Best effort: a driver that refuses leaves the default, which is
/// slower, not wrong.
fn keep_freed_memory(ctx: &CudaContext) {
    let mut threshold: u64 = u64::MAX;
    // SAFETY: `cu_device()` is the device this context was made for (from the
    // driver), as `get_default_mem_pool` requires; its pool is valid while the
    // context lives; `value` points to a u64, the cuuint64_t that
    // CU_MEMPOOL_ATTR_RELEASE_THRESHOLD takes, live for the call.
    let _ = unsafe {
        cu::device::get_default_mem_pool(ctx.cu_device()).and_then(|pool| {
            cu::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut threshold as *mut u64).cast(),
            )
        })
    };
}

fn driver_present() -> bool {
    // SAFETY: `is_culib_present` only tries `dlopen` on the candidate names and
    // closes the library again; it calls no CUDA function.
    catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false)
}

pub(super) fn cuda_err(op: impl Into<String>, e: DriverError) -> Error {
    Error::Cuda {
        op: op.into(),
        msg: e.to_string(),
    }
}

/// Run a closure that calls cudarc, turning a panic inside cudarc into an error.
pub(super) fn guarded<R>(op: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = crate::error::panic_text(p.as_ref())
                .unwrap_or_else(|| "panic inside the CUDA driver bindings".into());
            Err(Error::Cuda {
                op: op.to_string(),
                msg,
            })
        }
    }
}

impl Cuda {
    /// Open GPU `ordinal`: retains its primary context and makes a stream.
    ///
    /// Returns `Err(Error::CudaDriverNotFound)` when libcuda is absent, and an error
    /// (never a panic) when the ordinal does not exist or the driver fails.
    pub fn new(ordinal: usize) -> Result<Self> {
        if !driver_present() {
            return Err(Error::CudaDriverNotFound(NO_DRIVER.into()));
        }
        guarded("Cuda::new", || {
            let count = CudaContext::device_count().map_err(|e| cuda_err("Cuda::new", e))?;
            if ordinal >= count.max(0) as usize {
                return Err(Error::Cuda {
                    op: "Cuda::new".into(),
                    msg: format!("no CUDA device {ordinal} (this machine has {count})"),
                });
            }
            let ctx = CudaContext::new(ordinal).map_err(|e| cuda_err("Cuda::new", e))?;
            let (major, minor) = ctx
                .compute_capability()
                .map_err(|e| cuda_err("Cuda::new", e))?;
            if major < 8 {
                return Err(Error::Unsupported {
                    op: "Cuda::new",
                    msg: format!(
                        "device {ordinal} has compute capability {major}.{minor}; \
                         tessera's PTX needs sm_80 or newer"
                    ),
                });
            }
            let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
            let max_smem = ctx
                .attribute(
                    sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                )
                .map_err(|e| cuda_err("Cuda::new", e))?;
            let sm_count = ctx
                .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
                .map_err(|e| cuda_err("Cuda::new", e))?;
            let gemm = GemmPath::choose(
                (major, minor),
                u32::try_from(max_smem).unwrap_or(0),
                std::env::var("TESSERA_CUDA_GEMM").ok().as_deref(),
            )?;
            let f32_gemm =
                super::F32Gemm::choose(std::env::var("TESSERA_CUDA_F32_GEMM").ok().as_deref())?;
            let attention = super::attention::AttentionPath::choose(
                (major, minor),
                u32::try_from(max_smem).unwrap_or(0),
                std::env::var("TESSERA_CUDA_ATTENTION").ok().as_deref(),
            )?;
            let sm90_turns = super::attention::sm90_turns(
                std::env::var("TESSERA_CUDA_SM90_TURNS").ok().as_deref(),
            )?;
            // SAFETY: every buffer of this handle is allocated, used and freed on its
            // one stream (`Inner::stream`; buffers of other handles cannot be passed
            // to it: `same_device` compares this context's Arc), so stream order alone
            // synchronises them and cudarc's per-argument event records are not needed.
            // The capture stream (graph.rs) only records launches: nothing runs on
            // it, and the graphs it makes are launched on the main stream.
            // Called before this context makes any buffer.
            unsafe { ctx.disable_event_tracking() };
            if ctx.has_async_alloc() {
                keep_freed_memory(&ctx);
            }
            let stream = ctx.new_stream().map_err(|e| cuda_err("Cuda::new", e))?;
            let capture_stream = ctx.new_stream().map_err(|e| cuda_err("Cuda::new", e))?;
            let sm90 = super::linear::sm90_override(
                std::env::var("TESSERA_CUDA_SM90_TILE_N").ok().as_deref(),
                std::env::var("TESSERA_CUDA_SM90_CLUSTER").ok().as_deref(),
            )?;
            let graphs_enabled = !matches!(
                std::env::var("TESSERA_CUDA_GRAPHS").as_deref(),
                Ok("0" | "off" | "false")
            );
            Ok(Cuda {
                inner: Arc::new(Inner {
                    ordinal,
                    name,
                    capability: (major, minor),
                    max_smem: u32::try_from(max_smem).unwrap_or(0),
                    sm_count: u32::try_from(sm_count).unwrap_or(1).max(1),
                    gemm,
                    f32_gemm,
                    attention,
                    sm90_turns,
                    sm90,
                    ctx,
                    stream,
                    capture_stream,
                    graphs: Mutex::new(Graphs::default()),
                    graphs_enabled,
                    scratch_generation: std::sync::atomic::AtomicU64::new(0),
                    modules: Mutex::new(Modules::default()),
                    words: Mutex::new(None),
                    scratch: Mutex::new(Vec::new()),
                    staging: Mutex::new(super::upload::Staging::default()),
                    launches: std::sync::atomic::AtomicU64::new(0),
                }),
            })
        })
    }

    /// Number of CUDA devices; `Err(CudaDriverNotFound)` when libcuda is absent.
    pub fn device_count() -> Result<usize> {
        if !driver_present() {
            return Err(Error::CudaDriverNotFound(NO_DRIVER.into()));
        }
        guarded("Cuda::device_count", || {
            CudaContext::device_count()
                .map(|n| n.max(0) as usize)
                .map_err(|e| cuda_err("Cuda::device_count", e))
        })
    }

    /// The device ordinal this handle was opened on.
    pub fn ordinal(&self) -> usize {
        self.inner.ordinal
    }

    /// The device's compute capability (major, minor).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.inner.capability
    }

    /// Whether cudarc records an event per kernel argument on this handle's buffers
    /// (it does not: every buffer lives on the handle's one stream).
    pub fn event_tracking(&self) -> bool {
        self.inner.ctx.is_event_tracking()
    }

    /// Whether this handle replays model forwards as CUDA graphs (on unless
    /// `TESSERA_CUDA_GRAPHS=0` when it was opened): a forward's second call with
    /// the same model, batch size and buffers is captured, later ones replay it.
    pub fn graphs_enabled(&self) -> bool {
        self.inner.graphs_enabled
    }

    /// The bf16 GEMM this handle's aligned linear layers run (see [`GemmPath`]).
    pub fn gemm_path(&self) -> GemmPath {
        self.inner.gemm
    }

    /// How this handle's aligned f32 linear layers multiply: 3xTF32 on the
    /// tensor cores, or f32 on the CUDA cores (`TESSERA_CUDA_F32_GEMM=simt`).
    pub fn f32_gemm(&self) -> super::F32Gemm {
        self.inner.f32_gemm
    }

    fn oom(&self, bytes: usize, tensor: &str) -> Error {
        Error::OutOfMemory {
            device: self.describe(),
            bytes: bytes as u64,
            tensor: tensor.to_string(),
        }
    }

    /// `words` on the device (small per-call data: a packed batch's offsets).
    /// The last upload is kept: the same words again (every attention call of a
    /// forward) reuse it.
    pub(super) fn words_on_device(&self, op: &str, words: &[u32]) -> Result<Arc<CudaSlice<u8>>> {
        let mut last = self.inner.words.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((w, buf)) = last.as_ref() {
            if w.as_slice() == words {
                return Ok(Arc::clone(buf));
            }
        }
        self.not_capturing("an upload")?;
        let bytes: &[u8] = bytemuck::cast_slice(words);
        let mut buf = self.alloc_bytes(bytes.len(), op)?;
        self.upload(&mut buf, bytes, op)?;
        let buf = Arc::new(buf);
        *last = Some((words.to_vec(), Arc::clone(&buf)));
        Ok(buf)
    }

    /// Run `f` with the first `N` scratch buffers, buffer i of at least
    /// `bytes[i]` (reused across calls; a larger request replaces it, the old
    /// one freed in stream order).
    pub(super) fn scratch<R, const N: usize>(
        &self,
        bytes: [usize; N],
        f: impl FnOnce([&mut CudaSlice<u8>; N]) -> Result<R>,
    ) -> Result<R> {
        let mut slots = self.inner.scratch.lock().unwrap_or_else(|p| p.into_inner());
        for (i, &want) in bytes.iter().enumerate() {
            if slots.get(i).is_some_and(|s| s.len() >= want) {
                continue;
            }
            self.not_capturing("growing a scratch buffer")?;
            // Under the scratch lock, which a graph launch also takes: a graph
            // captured with the old buffer is never launched after this (it
            // checks the generation), and one already queued runs before the
            // old buffer's stream-ordered free.
            self.inner
                .scratch_generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            let grown = self.alloc_bytes(want, "scratch")?;
            match slots.get_mut(i) {
                Some(s) => *s = grown,
                None => slots.push(grown),
            }
        }
        let bufs: Vec<&mut CudaSlice<u8>> = slots.iter_mut().take(N).collect();
        match bufs.try_into() {
            Ok(bufs) => f(bufs),
            Err(_) => Err(Error::Internal("scratch buffers".into())),
        }
    }

    fn alloc_bytes(&self, bytes: usize, tensor: &str) -> Result<CudaSlice<u8>> {
        self.not_capturing("an allocation")?;
        guarded("alloc", || {
            // A zero-byte allocation is refused by the driver; keep one byte.
            // SAFETY: the memory is uninitialised; every op writes its whole output
            // before it is read, and `storage_from_slice` fills it right away.
            unsafe { self.inner.stream.alloc::<u8>(bytes.max(1)) }.map_err(|e| {
                if e.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
                    self.oom(bytes, tensor)
                } else {
                    cuda_err(format!("alloc of {bytes} bytes for `{tensor}`"), e)
                }
            })
        })
    }
}

impl sealed::Sealed for Cuda {}

impl Device for Cuda {
    type Storage<T: Element> = CudaStorage<T>;
    const KIND: DeviceKind = DeviceKind::Cuda;

    fn describe(&self) -> String {
        let (major, minor) = self.inner.capability;
        let o = self.inner.sm90;
        let gemm = match self.inner.gemm {
            GemmPath::Sm80 => "sm80".to_string(),
            GemmPath::Sm90 => {
                let tiles = o.tile_n.map(|n| format!(" {n}-wide tiles"));
                let cluster = o.cluster.map(|c| format!(" clusters of {c}"));
                format!(
                    "sm90{}{}",
                    tiles.unwrap_or_default(),
                    cluster.unwrap_or_default()
                )
            }
        };
        let attention = match self.inner.attention {
            super::attention::AttentionPath::Fa2 => "fa2",
            super::attention::AttentionPath::Sm90 if self.inner.sm90_turns => "sm90",
            super::attention::AttentionPath::Sm90 => "sm90 (turns off)",
            super::attention::AttentionPath::Sm90F32 if self.inner.sm90_turns => "sm90 with f32",
            super::attention::AttentionPath::Sm90F32 => "sm90 with f32 (turns off)",
        };
        let f32_gemm = match self.inner.f32_gemm {
            super::F32Gemm::Tf32x3 => "3xtf32",
            super::F32Gemm::Simt => "simt",
        };
        let graphs = if self.inner.graphs_enabled {
            "graphs on"
        } else {
            "graphs off"
        };
        format!(
            "cuda:{} ({}, sm_{major}{minor}, bf16 GEMM {gemm}, f32 GEMM {f32_gemm}, attention \
             {attention}, {graphs})",
            self.inner.ordinal, self.inner.name
        )
    }

    fn same_device(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner.ctx, &other.inner.ctx)
    }

    fn storage_from_slice<T: Element>(&self, data: &[T]) -> Result<CudaStorage<T>> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let mut buf = self.alloc_bytes(bytes.len(), "buffer")?;
        self.upload(&mut buf, bytes, "upload")?;
        Ok(CudaStorage {
            buf,
            len: data.len(),
            _t: PhantomData,
        })
    }

    fn storage_write<T: Element>(&self, storage: &mut CudaStorage<T>, data: &[T]) -> Result<()> {
        self.not_capturing("an upload")?;
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if data.len() > storage.len {
            return Err(Error::Internal(format!(
                "copy_from_host: {} elements into a storage of {}",
                data.len(),
                storage.len
            )));
        }
        self.upload(&mut storage.buf, bytes, "upload")
    }

    fn storage_alloc<T: Element>(&self, len: usize) -> Result<CudaStorage<T>> {
        let bytes = len
            .checked_mul(T::DTYPE.size())
            .ok_or_else(|| self.oom(usize::MAX, "buffer"))?;
        Ok(CudaStorage {
            buf: self.alloc_bytes(bytes, "buffer")?,
            len,
            _t: PhantomData,
        })
    }

    fn storage_to_vec<T: Element>(&self, storage: &CudaStorage<T>, len: usize) -> Result<Vec<T>> {
        self.not_capturing("a download")?;
        let len = len.min(storage.len);
        let mut out = vec![T::default(); len];
        if len == 0 {
            return Ok(out);
        }
        guarded("download", || {
            let stream = &self.inner.stream;
            let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
            let n = dst.len();
            stream
                .memcpy_dtoh(&storage.buf.slice(..n), dst)
                .and_then(|_| stream.synchronize())
                .map_err(|e| cuda_err("download", e))
        })?;
        Ok(out)
    }

    /// Device time between two CUDA events recorded on this handle's stream around
    /// `iters` calls of `f`, per call (every op of a handle runs on that stream).
    fn time_ms<F: FnMut() -> Result<()>>(&self, iters: usize, mut f: F) -> Result<f64> {
        const OP: &str = "time_ms";
        let stream = &self.inner.stream;
        let record = || {
            guarded(OP, || {
                stream
                    .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(|e| cuda_err(OP, e))
            })
        };
        let start = record()?;
        for _ in 0..iters {
            f()?;
        }
        let end = record()?;
        let ms = guarded(OP, || start.elapsed_ms(&end).map_err(|e| cuda_err(OP, e)))?;
        Ok(f64::from(ms) / iters.max(1) as f64)
    }

    fn synchronize(&self) -> Result<()> {
        self.not_capturing("a synchronisation")?;
        guarded("synchronize", || {
            self.inner
                .stream
                .synchronize()
                .map_err(|e| cuda_err("synchronize", e))
        })
    }
    fn run_replayable(&self, key: &[u64], f: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        self.replay_or_capture(key, f)
    }

    fn storage_addr<T: Element>(&self, storage: &CudaStorage<T>) -> u64 {
        let (ptr, guard) = cudarc::driver::DevicePtr::device_ptr(&storage.buf, &self.inner.stream);
        drop(guard);
        ptr
    }

    fn launch_count(&self) -> Option<u64> {
        Some(
            self.inner
                .launches
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}
