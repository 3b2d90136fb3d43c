//! The real CUDA backend (feature `cuda`).
//!
//! - One [`Cuda`] handle = one `CudaContext` (the device's primary context,
//!   retained) + one non-blocking stream. Every op is queued on that stream, so
//!   ops on one handle run in order; `to_vec` and `synchronize` wait for them.
//! - Storage is a `CudaSlice<u8>` plus the element count: bytes, so `Element`
//!   needs no cudarc bound.
//! - Kernels are hand-written PTX in `kernels/*.ptx` (one module per op family),
//!   embedded with `include_str!`, JIT-loaded on first use and cached per handle.
//!   Entry points are named `{op}_{dtype}` (`linear_bf16`, `cast_f32_bf16`).
//! - Before any cudarc call we check that libcuda can be loaded (cudarc panics
//!   otherwise with dynamic loading), and every driver call that could panic inside
//!   cudarc (a missing symbol in an old driver) is wrapped in `catch_unwind`.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    result as cu, sys, CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DriverError,
    LaunchConfig, SyncOnDrop,
};

use crate::device::{sealed, Device, DeviceKind};
use crate::element::{DType, Element};
use crate::error::{Error, Result};
use crate::ops::*;

/// An NVIDIA GPU driven through hand-written PTX kernels.
///
/// Cloning the handle is cheap and gives the same device; two handles made by two
/// calls to [`Cuda::new`] are different devices (buffers cannot be mixed).
#[derive(Clone)]
pub struct Cuda {
    inner: Arc<Inner>,
}

struct Inner {
    ordinal: usize,
    name: String,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// Loaded modules by family name (`"linear"`), and functions by entry name.
    modules: Mutex<Modules>,
}

#[derive(Default)]
struct Modules {
    modules: HashMap<&'static str, RawModule>,
    /// Entry name -> (function, number of parameters its `.entry` declares).
    functions: HashMap<String, (RawFunction, usize)>,
}

/// A `CUmodule` owned by one [`Inner`]; unloaded when it drops.
struct RawModule(sys::CUmodule);
/// A `CUfunction` of one of the [`RawModule`]s of the same [`Inner`].
#[derive(Clone, Copy)]
struct RawFunction(sys::CUfunction);

// SAFETY: CUDA driver module and function handles are plain handles that the driver
// allows any host thread to use once the owning context is current; we only use them
// after `bind_to_thread`, and they live no longer than the `Inner` that owns the context.
unsafe impl Send for RawModule {}
// SAFETY: as above; the handles are never mutated through a shared reference.
unsafe impl Sync for RawModule {}
// SAFETY: as for `RawModule`.
unsafe impl Send for RawFunction {}
// SAFETY: as for `RawModule`.
unsafe impl Sync for RawFunction {}

impl Drop for Inner {
    fn drop(&mut self) {
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
    buf: CudaSlice<u8>,
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

fn driver_present() -> bool {
    // SAFETY: `is_culib_present` only tries `dlopen` on the candidate names and
    // closes the library again; it calls no CUDA function.
    catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false)
}

fn cuda_err(op: impl Into<String>, e: DriverError) -> Error {
    Error::Cuda {
        op: op.into(),
        msg: e.to_string(),
    }
}

/// Run a closure that calls cudarc, turning a panic inside cudarc into an error.
fn guarded<R>(op: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
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
            let stream = ctx.new_stream().map_err(|e| cuda_err("Cuda::new", e))?;
            Ok(Cuda {
                inner: Arc::new(Inner {
                    ordinal,
                    name,
                    ctx,
                    stream,
                    modules: Mutex::new(Modules::default()),
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

    fn oom(&self, bytes: usize, tensor: &str) -> Error {
        Error::OutOfMemory {
            device: self.describe(),
            bytes: bytes as u64,
            tensor: tensor.to_string(),
        }
    }

    fn alloc_bytes(&self, bytes: usize, tensor: &str) -> Result<CudaSlice<u8>> {
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

    /// The function `entry` of module `family` and its parameter count, loading the
    /// module on first use.
    fn function(&self, family: &'static str, entry: &str) -> Result<(RawFunction, usize)> {
        let mut mods = self.inner.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = mods.functions.get(entry) {
            return Ok(*f);
        }
        let op = format!("loading kernel {entry} ({family}.ptx)");
        let src = ptx_source(family).ok_or_else(|| Error::Cuda {
            op: op.clone(),
            msg: "no such PTX module".into(),
        })?;
        let params = entry_param_count(src, entry).ok_or_else(|| Error::Cuda {
            op: op.clone(),
            msg: format!("no entry `{entry}` in {family}.ptx"),
        })?;
        self.inner
            .ctx
            .bind_to_thread()
            .map_err(|e| cuda_err(op.clone(), e))?;
        if !mods.modules.contains_key(family) {
            let c = CString::new(src).map_err(|_| Error::Cuda {
                op: op.clone(),
                msg: "PTX contains a NUL byte".into(),
            })?;
            // SAFETY: `c` is a NUL-terminated PTX image that outlives the call; the
            // context was made current just above.
            let m = unsafe { cu::module::load_data(c.as_ptr() as *const c_void) }
                .map_err(|e| cuda_err(op.clone(), e))?;
            mods.modules.insert(family, RawModule(m));
        }
        let module = mods.modules[family].0;
        let name = CString::new(entry).map_err(|_| Error::Cuda {
            op: op.clone(),
            msg: "bad entry name".into(),
        })?;
        // SAFETY: `module` is a live module of this context (unloaded only in Drop).
        let f = unsafe { cu::module::get_function(module, name) }.map_err(|e| cuda_err(op, e))?;
        mods.functions
            .insert(entry.to_string(), (RawFunction(f), params));
        Ok((RawFunction(f), params))
    }

    /// Launch `entry` of `family` on this handle's stream.
    fn launch(
        &self,
        op: &'static str,
        family: &'static str,
        entry: &str,
        cfg: LaunchConfig,
        args: &mut [Arg<'_>],
    ) -> Result<()> {
        guarded(op, || {
            let (func, n_params) = self.function(family, entry)?;
            if n_params != args.len() {
                // The driver reads one pointer per declared parameter from `params`:
                // never launch with a mismatched list.
                return Err(Error::Cuda {
                    op: format!("{op} ({entry})"),
                    msg: format!(
                        "kernel declares {n_params} parameters, launch passes {}",
                        args.len()
                    ),
                });
            }
            let stream = &self.inner.stream;
            let mut guards: Vec<SyncOnDrop<'_>> = Vec::with_capacity(args.len());
            // Every parameter sits in its own 8-byte slot; the driver copies as many
            // bytes as the kernel's parameter has (4 for .u32/.f32, 8 for .u64), and
            // the slots are little-endian, so a 4-byte value sits at the slot's start.
            let mut slots: Vec<u64> = Vec::with_capacity(args.len());
            for a in args.iter_mut() {
                match a {
                    Arg::In(s) => {
                        let (p, g) = s.device_ptr(stream);
                        guards.push(g);
                        slots.push(p);
                    }
                    Arg::Out(s) => {
                        let (p, g) = s.device_ptr_mut(stream);
                        guards.push(g);
                        slots.push(p);
                    }
                    Arg::Null => slots.push(0),
                    Arg::U32(v) => slots.push(u64::from(*v)),
                    Arg::F32(v) => slots.push(u64::from(v.to_bits())),
                }
            }
            let mut params: Vec<*mut c_void> = slots
                .iter_mut()
                .map(|s| s as *mut u64 as *mut c_void)
                .collect();
            let what = format!("{op} ({entry})");
            self.inner
                .ctx
                .bind_to_thread()
                .map_err(|e| cuda_err(what.clone(), e))?;
            // SAFETY: `func` belongs to this context; `params` has exactly one slot per
            // kernel parameter (the count was checked against the `.entry` declaration
            // above), in the order of the kernel's signature (the callers below mirror
            // the `.entry` declarations in kernels/*.ptx), each slot at
            // least as large as its parameter; the device pointers come from live
            // allocations that the kernels index only within the sizes the front
            // functions checked; `guards` keeps the buffers' event bookkeeping alive
            // until the launch is queued.
            unsafe {
                cu::launch_kernel(
                    func.0,
                    cfg.grid_dim,
                    cfg.block_dim,
                    cfg.shared_mem_bytes,
                    stream.cu_stream(),
                    &mut params,
                )
            }
            .map_err(|e| cuda_err(what, e))?;
            drop(guards);
            Ok(())
        })
    }
}

/// One kernel parameter.
enum Arg<'a> {
    In(&'a CudaSlice<u8>),
    Out(&'a mut CudaSlice<u8>),
    /// A null pointer (an absent optional input).
    Null,
    U32(u32),
    F32(f32),
}

fn ptx_source(family: &str) -> Option<&'static str> {
    Some(match family {
        "add" => include_str!("../../kernels/add.ptx"),
        "cast" => include_str!("../../kernels/cast.ptx"),
        "layer_norm" => include_str!("../../kernels/layer_norm.ptx"),
        "linear" => include_str!("../../kernels/linear.ptx"),
        "patch_embed" => include_str!("../../kernels/patch_embed.ptx"),
        "attention" => include_str!("../../kernels/attention.ptx"),
        "memory" => include_str!("../../kernels/memory.ptx"),
        _ => return None,
    })
}

/// Number of `.param`s of `.entry name(...)` in a PTX module's text.
fn entry_param_count(ptx: &str, name: &str) -> Option<usize> {
    let head = format!(".entry {name}(");
    let start = ptx.find(&head)? + head.len();
    let end = start + ptx[start..].find(')')?;
    Some(ptx[start..end].matches(".param").count())
}

/// Kernels index with 32-bit integers; refuse anything larger.
fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    if v <= i32::MAX as usize {
        Ok(v as u32)
    } else {
        Err(Error::Unsupported {
            op,
            msg: format!("{what} = {v} exceeds the CUDA kernels' 32-bit index range"),
        })
    }
}

fn grid_stride_blocks(n: usize) -> u32 {
    n.div_ceil(256).clamp(1, 65_535) as u32
}

impl sealed::Sealed for Cuda {}

impl Device for Cuda {
    type Storage<T: Element> = CudaStorage<T>;
    const KIND: DeviceKind = DeviceKind::Cuda;

    fn describe(&self) -> String {
        format!("cuda:{} ({})", self.inner.ordinal, self.inner.name)
    }

    fn same_device(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner.ctx, &other.inner.ctx)
    }

    fn storage_from_slice<T: Element>(&self, data: &[T]) -> Result<CudaStorage<T>> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let mut buf = self.alloc_bytes(bytes.len(), "buffer")?;
        if !bytes.is_empty() {
            guarded("upload", || {
                self.inner
                    .stream
                    .memcpy_htod(bytes, &mut buf)
                    .map_err(|e| cuda_err("upload", e))
            })?;
        }
        Ok(CudaStorage {
            buf,
            len: data.len(),
            _t: PhantomData,
        })
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
        guarded("synchronize", || {
            self.inner
                .stream
                .synchronize()
                .map_err(|e| cuda_err("synchronize", e))
        })
    }
}

fn entry<T: Element>(op: &str) -> String {
    format!("{op}_{}", T::DTYPE.name())
}

impl<T: Element> Kernels<T> for Cuda {
    fn patch_embed(&self, a: PatchEmbedArgs<'_, T, Self>) -> Result<()> {
        const OP: &str = "patch_embed";
        let d = a.dims;
        let m = u32_of(OP, "B·N", d.batch * d.tokens())?;
        let n = u32_of(OP, "D", d.hidden)?;
        let k = u32_of(OP, "C·P·P", d.patch_len())?;
        u32_of(OP, "pixels", d.batch * d.channels * d.image * d.image)?;
        u32_of(OP, "out", d.batch * d.tokens() * d.hidden)?;
        let launch = gemm_launch::<T>(OP, m, n)?;
        self.launch(
            OP,
            "patch_embed",
            &entry::<T>(OP),
            launch,
            &mut [
                Arg::In(&a.pixels.buf),
                Arg::In(&a.weight.buf),
                Arg::In(&a.bias.buf),
                Arg::In(&a.position.buf),
                Arg::Out(&mut a.out.buf),
                Arg::U32(m),
                Arg::U32(n),
                Arg::U32(k),
                Arg::U32(d.channels as u32),
                Arg::U32(d.image as u32),
                Arg::U32(d.patch as u32),
                Arg::U32(d.grid() as u32),
            ],
        )
    }

    fn linear(&self, a: LinearArgs<'_, T, Self>) -> Result<()> {
        const OP: &str = "linear";
        let d = a.dims;
        let m = u32_of(OP, "rows", d.rows)?;
        let n = u32_of(OP, "out_features", d.out_features)?;
        let k = u32_of(OP, "in_features", d.in_features)?;
        u32_of(OP, "x", d.rows * d.in_features)?;
        u32_of(OP, "weight", d.out_features * d.in_features)?;
        u32_of(OP, "out", d.rows * d.out_features)?;
        let flags = u32::from(a.bias.is_some())
            | (u32::from(d.activation == Activation::GeluTanh) << 1)
            | (u32::from(a.residual.is_some()) << 2);
        let launch = gemm_launch::<T>(OP, m, n)?;
        let bias = a.bias.map_or(Arg::Null, |b| Arg::In(&b.buf));
        let residual = a.residual.map_or(Arg::Null, |r| Arg::In(&r.buf));
        self.launch(
            OP,
            "linear",
            &entry::<T>(OP),
            launch,
            &mut [
                Arg::In(&a.x.buf),
                Arg::In(&a.weight.buf),
                bias,
                residual,
                Arg::Out(&mut a.out.buf),
                Arg::U32(m),
                Arg::U32(n),
                Arg::U32(k),
                Arg::U32(flags),
            ],
        )
    }

    fn layer_norm(&self, a: LayerNormArgs<'_, T, Self>) -> Result<()> {
        const OP: &str = "layer_norm";
        let d = a.dims;
        let rows = u32_of(OP, "rows", d.rows)?;
        let cols = u32_of(OP, "cols", d.cols)?;
        u32_of(OP, "x", d.rows * d.cols)?;
        if rows == 0 {
            return Ok(());
        }
        self.launch(
            OP,
            "layer_norm",
            &entry::<T>(OP),
            cfg((rows.min(65_535), rows.div_ceil(65_535), 1), (256, 1, 1), 0),
            &mut [
                Arg::In(&a.x.buf),
                Arg::In(&a.weight.buf),
                Arg::In(&a.bias.buf),
                Arg::Out(&mut a.out.buf),
                Arg::U32(rows),
                Arg::U32(cols),
                Arg::F32(d.eps),
            ],
        )
    }

    fn attention(&self, a: AttentionArgs<'_, T, Self>) -> Result<()> {
        const OP: &str = "attention";
        let d = a.dims;
        if d.head_dim > 128 {
            return Err(Error::Unsupported {
                op: OP,
                msg: format!("head dim {} > 128", d.head_dim),
            });
        }
        let nq = u32_of(OP, "q_len", d.q_len)?;
        let nk = u32_of(OP, "kv_len", d.kv_len)?;
        u32_of(OP, "k", d.batch * d.kv_len * d.width())?;
        u32_of(OP, "out", d.batch * d.q_len * d.width())?;
        if d.batch > 65_535 || d.heads > 65_535 {
            return Err(Error::Unsupported {
                op: OP,
                msg: format!("batch {} or heads {} > 65535", d.batch, d.heads),
            });
        }
        let q_batch_stride = if d.q_broadcast {
            0
        } else {
            u32_of(OP, "q", d.q_len * d.width())?
        };
        // Scores are kept in the log2 domain: q is pre-scaled by hd^-0.5 · log2(e).
        let scale_log2 = d.scale() * std::f32::consts::LOG2_E;
        self.launch(
            OP,
            "attention",
            &entry::<T>(OP),
            cfg(
                // 8 warps = 8 query rows per block (ATT_NW in tools/gen_ptx.py).
                (nq.div_ceil(8), d.heads as u32, d.batch as u32),
                (256, 1, 1),
                0,
            ),
            &mut [
                Arg::In(&a.q.buf),
                Arg::In(&a.k.buf),
                Arg::In(&a.v.buf),
                Arg::Out(&mut a.out.buf),
                Arg::U32(nq),
                Arg::U32(nk),
                Arg::U32(d.heads as u32),
                Arg::U32(d.head_dim as u32),
                Arg::U32(q_batch_stride),
                Arg::F32(scale_log2),
            ],
        )
    }

    fn memory_read(&self, a: MemoryReadArgs<'_, T, Self>) -> Result<()> {
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
        self.launch(
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
        self.launch(
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

    fn memory_write(&self, a: MemoryWriteArgs<'_, T, Self>) -> Result<()> {
        const OP: &str = "memory_write";
        let d = a.dims;
        let bank_len = d.batch * d.experts * d.slots * d.hidden;
        let out_len = d.batch * d.tokens * d.hidden;
        let total = u32_of(OP, "bank + out", bank_len + out_len)?;
        if total == 0 {
            return Ok(());
        }
        self.launch(
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

    fn add(&self, a: AddArgs<'_, T, Self>) -> Result<()> {
        const OP: &str = "add";
        let n = u32_of(OP, "len", a.len)?;
        self.launch(
            OP,
            "add",
            &entry::<T>(OP),
            cfg((grid_stride_blocks(a.len), 1, 1), (256, 1, 1), 0),
            &mut [
                Arg::In(&a.a.buf),
                Arg::In(&a.b.buf),
                Arg::Out(&mut a.out.buf),
                Arg::U32(n),
            ],
        )
    }

    fn cast<U: Element>(&self, a: CastArgs<'_, T, U, Self>) -> Result<()>
    where
        Self: Kernels<U>,
    {
        const OP: &str = "cast";
        if T::DTYPE == U::DTYPE {
            // Same type: a device-to-device copy.
            let bytes = a.len * T::DTYPE.size();
            return guarded(OP, || {
                let stream = &self.inner.stream;
                let src = a.x.buf.slice(..bytes);
                let mut dst = a.out.buf.slice_mut(..bytes);
                stream
                    .memcpy_dtod(&src, &mut dst)
                    .map_err(|e| cuda_err(OP, e))
            });
        }
        let n = u32_of(OP, "len", a.len)?;
        let name = match (T::DTYPE, U::DTYPE) {
            (DType::F32, DType::BF16) => "cast_f32_bf16",
            (DType::BF16, DType::F32) => "cast_bf16_f32",
            _ => unreachable!("same-type casts are copies"),
        };
        self.launch(
            OP,
            "cast",
            name,
            cfg((grid_stride_blocks(a.len), 1, 1), (256, 1, 1), 0),
            &mut [Arg::In(&a.x.buf), Arg::Out(&mut a.out.buf), Arg::U32(n)],
        )
    }
}

fn cfg(grid: (u32, u32, u32), block: (u32, u32, u32), shared_mem_bytes: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: block,
        shared_mem_bytes,
    }
}

/// Grid and block of the GEMM-shaped kernels (linear, patch_embed): 64×64 output
/// tiles; 256 threads for the f32 SIMT kernel, 128 (4 warps) for the bf16 mma one.
fn gemm_launch<T: Element>(op: &'static str, m: u32, n: u32) -> Result<LaunchConfig> {
    let threads = match T::DTYPE {
        DType::F32 => 256,
        DType::BF16 => 128,
    };
    if m.div_ceil(64) > 65_535 {
        return Err(Error::Unsupported {
            op,
            msg: format!("{m} rows exceed the kernel grid (at most 4194240)"),
        });
    }
    Ok(cfg((n.div_ceil(64), m.div_ceil(64), 1), (threads, 1, 1), 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_found_with_its_parameters() {
        let expect: &[(&str, &str, usize)] = &[
            ("add", "add_f32", 4),
            ("add", "add_bf16", 4),
            ("cast", "cast_f32_bf16", 3),
            ("cast", "cast_bf16_f32", 3),
            ("layer_norm", "layer_norm_f32", 7),
            ("layer_norm", "layer_norm_bf16", 7),
            ("linear", "linear_f32", 9),
            ("linear", "linear_bf16", 9),
            ("patch_embed", "patch_embed_f32", 12),
            ("patch_embed", "patch_embed_bf16", 12),
            ("attention", "attention_f32", 10),
            ("attention", "attention_bf16", 10),
            ("memory", "memory_read_gate_f32", 7),
            ("memory", "memory_read_gate_bf16", 7),
            ("memory", "memory_read_mix_f32", 9),
            ("memory", "memory_read_mix_bf16", 9),
            ("memory", "memory_write_f32", 10),
            ("memory", "memory_write_bf16", 10),
        ];
        for &(family, entry, n) in expect {
            let src = ptx_source(family).expect(family);
            assert_eq!(entry_param_count(src, entry), Some(n), "{entry}");
        }
        assert_eq!(entry_param_count(ptx_source("add").unwrap(), "nope"), None);
    }
}
