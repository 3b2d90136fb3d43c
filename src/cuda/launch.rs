//! Kernel modules and launches. Every kernel's contract — module, entry, block size,
//! shared memory, parameters and tile sizes — is generated with its PTX by
//! tools/gen_ptx.py into `manifest.rs`; the host launches through a typed
//! [`KernelSpec`], whose argument struct (one field per `.param`, by name) is turned
//! into launch arguments in `.entry` order. The PTX carries `.reqntid`, so a wrong
//! block size would fail loudly rather than compute garbage. Each module is
//! JIT-loaded on first use, with the JIT's error log kept for the error.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::marker::PhantomData;
use std::sync::Arc;

use cudarc::driver::{result as cu, sys, CudaSlice, DevicePtr, DevicePtrMut, SyncOnDrop};

use super::attention::AttentionPath;
use super::device::{cuda_err, guarded, Cuda};
use super::linear::Sm90Override;
use super::{F32Gemm, GemmPath};
use crate::element::DType;
use crate::error::{Error, Result};

/// A PTX module: its name (`kernels/NAME.ptx`) and text.
pub(super) struct Module {
    pub name: &'static str,
    pub ptx: &'static str,
}

/// What a kernel parameter is (as the manifest declares it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ParamKind {
    /// A pointer the kernel reads.
    In,
    /// A pointer the kernel reads when a flag says so; may be null.
    Opt,
    /// A pointer the kernel writes.
    Out,
    U32,
    F32,
    /// A TMA tensor map, passed by value (128 bytes), through which the kernel
    /// reads (or, over an output, writes) boxes of `box_rows` × `box_cols`
    /// elements of `dtype`, with the 128-byte swizzle (`swizzle128`) or none.
    TensorMap {
        dtype: DType,
        box_rows: u32,
        box_cols: u32,
        swizzle128: bool,
    },
}

/// The global shape of a row-major matrix that a tensor-map parameter
/// describes (`cols` contiguous).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Matrix2d {
    pub rows: u32,
    pub cols: u32,
}

/// A parameter list: its argument struct (over buffers of type `B`) and the
/// order the kernel takes them in.
pub(super) trait Signature {
    type Args<'a, B: 'a>;
    fn into_args<'a, B>(args: Self::Args<'a, B>) -> Vec<Arg<'a, B>>;
}

/// One kernel's contract, generated with its PTX (see `manifest.rs`).
pub(super) struct KernelSpec<S: Signature> {
    pub module: &'static Module,
    pub entry: &'static str,
    /// Threads per block (the PTX's `.reqntid`).
    pub threads: u32,
    /// Static shared memory the entry declares, in bytes.
    pub static_smem: u32,
    /// The most dynamic shared memory a launch may ask for.
    pub max_dyn_smem: u32,
    /// CTAs per thread-block cluster along x (the PTX's `.reqnctapercluster`);
    /// 1: no cluster. A launch's grid must be a multiple of it.
    pub cluster: u32,
    pub params: &'static [(&'static str, ParamKind)],
    pub signature: PhantomData<S>,
}

/// One kernel argument, over buffers of type `B` (`CudaSlice<u8>` where `Cuda`
/// launches).
pub(super) enum Arg<'a, B> {
    In(&'a B),
    Out(&'a mut B),
    /// A null pointer (an absent optional input).
    Null,
    U32(u32),
    F32(f32),
    /// The tensor map of the matrix that argument `of` (an input or output
    /// pointer) points to, of global shape `shape`, in the boxes the parameter's
    /// [`ParamKind::TensorMap`] states (see [`tensor_map`]).
    TensorMap {
        of: usize,
        shape: Matrix2d,
    },
}

impl<B> Arg<'_, B> {
    fn fits(&self, kind: ParamKind) -> bool {
        matches!(
            (self, kind),
            (Arg::In(_), ParamKind::In | ParamKind::Opt)
                | (Arg::Null, ParamKind::Opt)
                | (Arg::Out(_), ParamKind::Out)
                | (Arg::U32(_), ParamKind::U32)
                | (Arg::F32(_), ParamKind::F32)
                | (Arg::TensorMap { .. }, ParamKind::TensorMap { .. })
        )
    }
}

/// The loaded function as the driver reports it (static shared bytes, the most
/// threads a block may have) against what `spec` says.
fn check_loaded<S: Signature>(
    spec: &KernelSpec<S>,
    static_smem: i32,
    max_threads: i32,
) -> Result<()> {
    // More static bytes than the manifest breaks the 48 KiB opt-in rule and the
    // launch-time check; fewer (a JIT that drops an unused array) is harmless.
    // (tests/it/ptxas.rs holds ptxas to the exact count.)
    if i64::from(static_smem) > i64::from(spec.static_smem)
        || i64::from(max_threads) < i64::from(spec.threads)
    {
        return Err(Error::Internal(format!(
            "kernel {} ({}.ptx) loaded with {static_smem} bytes of static shared memory and \
             at most {max_threads} threads per block; the manifest says {} bytes and {} threads \
             (regenerate with tools/gen_ptx.py)",
            spec.entry, spec.module.name, spec.static_smem, spec.threads
        )));
    }
    Ok(())
}

/// Shared memory a block may use without opting in (static and dynamic together).
const DEFAULT_SMEM: u32 = 48 * 1024;

/// The dynamic shared memory a kernel must be allowed (the function attribute
/// `MAX_DYNAMIC_SHARED_SIZE_BYTES`) before a launch with up to `max_dyn` bytes can
/// succeed: its static and dynamic bytes together may pass 48 KiB only then.
fn smem_opt_in(static_smem: u32, max_dyn: u32) -> Option<u32> {
    (static_smem.saturating_add(max_dyn) > DEFAULT_SMEM).then_some(max_dyn)
}

#[derive(Default)]
pub(super) struct Modules {
    pub(super) modules: HashMap<&'static str, RawModule>,
    functions: HashMap<&'static str, RawFunction>,
    /// Clusters of each clustered entry that fit on the device at once (by entry).
    clusters: HashMap<&'static str, u32>,
}

/// A `CUmodule` owned by one [`Cuda`] handle; unloaded when it drops.
pub(super) struct RawModule(pub(super) sys::CUmodule);
/// A `CUfunction` of one of the [`RawModule`]s of the same handle.
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

/// Bytes of the JIT's error log kept when a module does not load.
const JIT_LOG_BYTES: usize = 16 * 1024;

/// Load a PTX image with the JIT's error log captured into the error.
fn load_module(op: &str, ptx: &str) -> Result<sys::CUmodule> {
    let image =
        CString::new(ptx).map_err(|_| Error::Internal(format!("{op}: PTX holds a NUL byte")))?;
    let mut log = vec![0u8; JIT_LOG_BYTES];
    let mut options = [
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
    ];
    // The driver reads option values as pointer-sized slots: the buffer, then its size.
    let mut values: [*mut c_void; 2] = [
        log.as_mut_ptr() as *mut c_void,
        JIT_LOG_BYTES as *mut c_void,
    ];
    let mut module = std::ptr::null_mut();
    // SAFETY: `image` is a NUL-terminated PTX string and `log` a writable buffer of
    // JIT_LOG_BYTES, both alive for the call; `options` and `values` have the two
    // entries the count says, each value the kind its option takes; the caller made
    // the context current.
    let status = unsafe {
        sys::cuModuleLoadDataEx(
            &mut module,
            image.as_ptr() as *const c_void,
            options.len() as u32,
            options.as_mut_ptr(),
            values.as_mut_ptr(),
        )
    };
    if status == sys::cudaError_enum::CUDA_SUCCESS {
        return Ok(module);
    }
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end])
        .trim()
        .replace('\n', "; ");
    Err(Error::Cuda {
        op: op.to_string(),
        msg: format!(
            "{:?}; JIT log: {}",
            status,
            if text.is_empty() { "(empty)" } else { &text }
        ),
    })
}

/// A launch's arguments, checked against its kernel (see [`check_launch`]).
pub(super) struct Checked<'a, B> {
    /// One per parameter, in `.entry` order.
    pub args: Vec<Arg<'a, B>>,
    /// Each tensor-map parameter: its index, the index of the pointer argument
    /// whose matrix it describes, that matrix's shape and the parameter's box.
    pub maps: Vec<(usize, usize, Matrix2d, MapBox)>,
}

/// What every launcher checks before a launch: `dyn_smem` within the kernel's
/// limit and, with its static bytes, the device's `max_smem`; one argument per
/// parameter, of its kind; a grid of whole clusters; tensor maps that describe
/// pointer arguments. `None`: an empty grid, nothing to launch.
pub(super) fn check_launch<'a, S: Signature, B>(
    op: &'static str,
    spec: &KernelSpec<S>,
    grid: (u32, u32, u32),
    dyn_smem: u32,
    max_smem: u32,
    args: S::Args<'a, B>,
) -> Result<Option<Checked<'a, B>>> {
    let what = format!("{op} ({})", spec.entry);
    if dyn_smem > spec.max_dyn_smem || spec.static_smem + dyn_smem > max_smem {
        return Err(Error::Unsupported {
            op,
            msg: format!(
                "{} needs {} bytes of shared memory ({} static + {dyn_smem} dynamic), \
                 above its limit of {} dynamic or this GPU's {max_smem} per block",
                spec.entry,
                spec.static_smem + dyn_smem,
                spec.static_smem,
                spec.max_dyn_smem,
            ),
        });
    }
    let args = S::into_args(args);
    // The manifest and the argument structs are generated together; a mismatch
    // here is a bug. Checked anyway: the driver reads one slot per parameter.
    if args.len() != spec.params.len()
        || args
            .iter()
            .zip(spec.params)
            .any(|(a, (_, kind))| !a.fits(*kind))
    {
        return Err(Error::Internal(format!(
            "{what}: arguments do not match the kernel's parameters {:?}",
            spec.params
        )));
    }
    if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
        return Ok(None);
    }
    if spec.cluster > 1 && !grid.0.is_multiple_of(spec.cluster) {
        return Err(Error::Internal(format!(
            "{what}: a grid of {} blocks is not whole clusters of {}",
            grid.0, spec.cluster
        )));
    }
    let mut maps = Vec::new();
    for (i, (a, (_, kind))) in args.iter().zip(spec.params).enumerate() {
        if let (
            Arg::TensorMap { of, shape },
            ParamKind::TensorMap {
                dtype,
                box_rows,
                box_cols,
                swizzle128,
            },
        ) = (a, *kind)
        {
            let (of, shape) = (*of, *shape);
            if !matches!(args.get(of), Some(Arg::In(_) | Arg::Out(_))) {
                return Err(Error::Internal(format!(
                    "{what}: tensor map {} does not describe a pointer argument",
                    spec.params[i].0
                )));
            }
            maps.push((
                i,
                of,
                shape,
                MapBox {
                    dtype,
                    rows: box_rows,
                    cols: box_cols,
                    swizzle128,
                },
            ));
        }
    }
    Ok(Some(Checked { args, maps }))
}

impl Cuda {
    /// The function of `spec`, loading its module on first use. Raises the
    /// function's dynamic shared-memory limit when the spec needs more than the
    /// default 48 KiB.
    fn function<S: Signature>(&self, spec: &KernelSpec<S>) -> Result<RawFunction> {
        let mut mods = self.inner.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = mods.functions.get(spec.entry) {
            return Ok(*f);
        }
        let op = format!("loading kernel {} ({}.ptx)", spec.entry, spec.module.name);
        self.inner
            .ctx
            .bind_to_thread()
            .map_err(|e| cuda_err(op.clone(), e))?;
        if !mods.modules.contains_key(spec.module.name) {
            let m = load_module(&op, spec.module.ptx)?;
            mods.modules.insert(spec.module.name, RawModule(m));
        }
        let module = mods.modules[spec.module.name].0;
        let name = CString::new(spec.entry)
            .map_err(|_| Error::Internal(format!("{op}: entry name holds a NUL byte")))?;
        // SAFETY: `module` is a live module of this context (unloaded only in Drop).
        let f = unsafe { cu::module::get_function(module, name) }
            .map_err(|e| cuda_err(op.clone(), e))?;
        // The driver's own count of the loaded function against the manifest the
        // launches are sized from (a stale manifest fails here, not as a launch
        // error or a wrong shared-memory opt-in).
        let attribute = |a, what: &str| {
            // SAFETY: `f` was just obtained from a live module of the current context.
            unsafe { cu::function::get_function_attribute(f, a) }
                .map_err(|e| cuda_err(format!("{op}: reading its {what}"), e))
        };
        use sys::CUfunction_attribute as A;
        let static_smem = attribute(A::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, "shared memory size")?;
        let max_threads = attribute(
            A::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
            "block size limit",
        )?;
        check_loaded(spec, static_smem, max_threads)?;
        if let Some(bytes) = smem_opt_in(spec.static_smem, spec.max_dyn_smem) {
            // SAFETY: `f` was just obtained from a live module of the current context.
            unsafe {
                cu::function::set_function_attribute(
                    f,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes as i32,
                )
            }
            .map_err(|e| {
                cuda_err(
                    format!("{op}: allowing {bytes} bytes of dynamic shared memory"),
                    e,
                )
            })?;
        }
        mods.functions.insert(spec.entry, RawFunction(f));
        Ok(RawFunction(f))
    }
}

/// What an op's launch code asks of a device: the facts that choose a kernel
/// and size its grid, its buffers' alignment and length, a buffer of words,
/// scratch buffers, how many clusters fit, and the launch itself. [`Cuda`]
/// launches; the launch-plan test (plan_check.rs) implements it over named
/// stand-in buffers and writes each launch down, for the emulator to run
/// exactly as the op's launch code asked (tools/emu_check.py, group `plans`).
pub(super) trait Launcher {
    /// A device buffer of bytes.
    type Buf;
    /// An uploaded buffer of words, alive while held.
    type Words: std::ops::Deref<Target = Self::Buf>;
    /// Streaming multiprocessors.
    fn sm_count(&self) -> u32;
    /// The most shared memory a block may use (opt-in limit).
    fn max_smem(&self) -> u32;
    /// The bf16 and f32 tensor-core GEMM (see [`GemmPath`]).
    fn gemm_path(&self) -> GemmPath;
    /// How aligned f32 linear layers multiply (see [`F32Gemm`]).
    fn f32_gemm(&self) -> F32Gemm;
    /// The tensor-core attention (see [`AttentionPath`]).
    fn attention_path(&self) -> AttentionPath;
    /// Whether the bf16 Hopper attention's warpgroups take turns on the tensor
    /// cores.
    fn sm90_turns(&self) -> bool;
    /// What the environment fixed of the wgmma GEMM's kernel choice.
    fn sm90_override(&self) -> Sm90Override;
    /// Whether a buffer's device address is a multiple of 16 (the vector,
    /// cp.async and TMA paths need it).
    fn aligned16(&self, buf: &Self::Buf) -> bool;
    /// A buffer's length in bytes.
    fn byte_len(&self, buf: &Self::Buf) -> usize;
    /// `words` on the device (small per-call data: a packed batch's offsets).
    fn upload_words(&self, op: &str, words: &[u32]) -> Result<Self::Words>;
    /// Run `f` with `N` scratch buffers (distinct), buffer i of at least
    /// `bytes[i]`.
    fn with_scratch<R, const N: usize>(
        &self,
        bytes: [usize; N],
        f: impl FnOnce([&mut Self::Buf; N]) -> Result<R>,
    ) -> Result<R>;
    /// How many clusters of `spec` (a clustered entry, `dyn_smem` bytes a CTA)
    /// the device runs at once; 0 when none fits.
    fn max_active_clusters<S: Signature>(&self, spec: &KernelSpec<S>, dyn_smem: u32)
        -> Result<u32>;
    /// Launch `spec` with `grid` blocks of `spec.threads` threads and `dyn_smem`
    /// bytes of dynamic shared memory (checked first by [`check_launch`]).
    fn launch<S: Signature>(
        &self,
        op: &'static str,
        spec: &KernelSpec<S>,
        grid: (u32, u32, u32),
        dyn_smem: u32,
        args: S::Args<'_, Self::Buf>,
    ) -> Result<()>;
}

impl Launcher for Cuda {
    type Buf = CudaSlice<u8>;
    type Words = Arc<CudaSlice<u8>>;

    fn sm_count(&self) -> u32 {
        self.inner.sm_count
    }

    fn max_smem(&self) -> u32 {
        self.inner.max_smem
    }

    fn gemm_path(&self) -> GemmPath {
        self.inner.gemm
    }

    fn f32_gemm(&self) -> F32Gemm {
        self.inner.f32_gemm
    }

    fn attention_path(&self) -> AttentionPath {
        self.inner.attention
    }

    fn sm90_turns(&self) -> bool {
        self.inner.sm90_turns
    }

    fn sm90_override(&self) -> Sm90Override {
        self.inner.sm90
    }

    fn aligned16(&self, buf: &CudaSlice<u8>) -> bool {
        let (ptr, guard) = DevicePtr::device_ptr(buf, &self.inner.stream);
        drop(guard);
        ptr % 16 == 0
    }

    fn byte_len(&self, buf: &CudaSlice<u8>) -> usize {
        buf.len()
    }

    fn upload_words(&self, op: &str, words: &[u32]) -> Result<Arc<CudaSlice<u8>>> {
        self.words_on_device(op, words)
    }

    fn with_scratch<R, const N: usize>(
        &self,
        bytes: [usize; N],
        f: impl FnOnce([&mut CudaSlice<u8>; N]) -> Result<R>,
    ) -> Result<R> {
        self.scratch(bytes, f)
    }

    /// How many clusters of `spec` (a clustered entry: `spec.cluster` CTAs with
    /// `dyn_smem` bytes each) the device runs at once: a persistent grid of
    /// clusters is sized to it, since a cluster's CTAs must share a GPC and the
    /// SMs of a GPC need not pair up. 0 when none fits (the caller takes another
    /// kernel). Asked of the driver once per entry.
    fn max_active_clusters<S: Signature>(
        &self,
        spec: &KernelSpec<S>,
        dyn_smem: u32,
    ) -> Result<u32> {
        if let Some(&n) = self
            .inner
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clusters
            .get(spec.entry)
        {
            return Ok(n);
        }
        let op = format!("sizing the clusters of {}", spec.entry);
        let n = guarded("max_active_clusters", || {
            let func = self.function(spec)?;
            self.inner
                .ctx
                .bind_to_thread()
                .map_err(|e| cuda_err(op.clone(), e))?;
            let config = sys::CUlaunchConfig {
                gridDimX: spec.cluster.saturating_mul(self.sm_count().max(1)),
                gridDimY: 1,
                gridDimZ: 1,
                blockDimX: spec.threads,
                blockDimY: 1,
                blockDimZ: 1,
                sharedMemBytes: dyn_smem,
                hStream: std::ptr::null_mut(),
                attrs: std::ptr::null_mut(),
                numAttrs: 0,
            };
            let mut n: std::ffi::c_int = 0;
            // SAFETY: `func` belongs to this context, made current above; `config`
            // is a fully initialised launch configuration with no attributes (the
            // entry's cluster size is its compile-time `.reqnctapercluster`), and
            // `n` a writable int; the driver reads and writes nothing else.
            unsafe { sys::cuOccupancyMaxActiveClusters(&mut n, func.0, &config) }
                .result()
                .map_err(|e| cuda_err(op.clone(), e))?;
            Ok(u32::try_from(n).unwrap_or(0))
        })?;
        self.inner
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clusters
            .insert(spec.entry, n);
        Ok(n)
    }

    /// Launch `spec` on this handle's stream (see [`Cuda::stream`]) with `grid` blocks of `spec.threads`
    /// threads and `dyn_smem` bytes of dynamic shared memory.
    fn launch<S: Signature>(
        &self,
        op: &'static str,
        spec: &KernelSpec<S>,
        grid: (u32, u32, u32),
        dyn_smem: u32,
        args: S::Args<'_, CudaSlice<u8>>,
    ) -> Result<()> {
        let what = format!("{op} ({})", spec.entry);
        let Some(Checked {
            mut args,
            maps: tmaps,
        }) = check_launch(op, spec, grid, dyn_smem, self.max_smem(), args)?
        else {
            return Ok(());
        };
        // Counted here: refused arguments and empty grids launch nothing.
        self.count_launch();
        guarded(op, || {
            let func = self.function(spec)?;
            self.inner
                .ctx
                .bind_to_thread()
                .map_err(|e| cuda_err(what.clone(), e))?;
            // The capture stream while this thread captures a graph (graph.rs).
            let stream = self.stream();
            let mut guards: Vec<SyncOnDrop<'_>> = Vec::with_capacity(args.len());
            // Every parameter sits in its own 8-byte slot; the driver copies as many
            // bytes as the kernel's parameter has (4 for .u32/.f32, 8 for .u64), and
            // the slots are little-endian, so a 4-byte value sits at the slot's start.
            let mut slots: Vec<u64> = Vec::with_capacity(args.len());
            // Tensor maps are 128 bytes each; the driver copies them from here.
            let mut maps: Vec<sys::CUtensorMap> = Vec::with_capacity(tmaps.len());
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
                    Arg::TensorMap { .. } => slots.push(0),
                }
            }
            for &(i, of, shape, boxes) in &tmaps {
                let map = tensor_map(op, &what, spec.params[i].0, slots[of], shape, boxes)?;
                maps.push(map);
            }
            let mut next_map = maps.iter_mut();
            let mut params: Vec<*mut c_void> = Vec::with_capacity(slots.len());
            for (i, s) in slots.iter_mut().enumerate() {
                if tmaps.iter().any(|t| t.0 == i) {
                    let Some(m) = next_map.next() else {
                        return Err(Error::Internal(format!("{what}: tensor maps")));
                    };
                    params.push(m as *mut sys::CUtensorMap as *mut c_void);
                } else {
                    params.push(s as *mut u64 as *mut c_void);
                }
            }
            // SAFETY: `func` belongs to this context; `params` has exactly one slot per
            // kernel parameter, of the kind the parameter is (both checked above against
            // the generated manifest, which is generated with the `.entry` itself), each
            // slot at least as large as its parameter (a tensor map's slot is a 64-byte
            // aligned `CUtensorMap` in `maps`, alive until after the call); the
            // device pointers come from
            // live allocations that the kernels index only within the sizes the front
            // functions checked; `guards` keeps the buffers' bookkeeping alive until the
            // launch is queued; the block size is the entry's `.reqntid`.
            unsafe {
                cu::launch_kernel(
                    func.0,
                    grid,
                    (spec.threads, 1, 1),
                    dyn_smem,
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

/// The encoding of one tensor map, as `cuTensorMapEncodeTiled` takes it: a 2-D
/// bf16 or f32 matrix `shape` at `ptr` (row stride `cols` elements), read or
/// written in boxes of `rows` × `cols` with the 128-byte swizzle or none, elements
/// past the edges zero-filled on reads and left alone on writes. Checked here
/// against the driver's rules, so a shape it would refuse is an error naming the
/// tensor rather than a failed launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TensorMapArgs {
    pub dtype: DType,
    pub dims: [u64; 2],
    pub row_stride: u64,
    pub boxes: [u32; 2],
    pub swizzle128: bool,
}

/// A tensor-map parameter's element type and box (rows × columns, with the
/// 128-byte swizzle or none), as its [`ParamKind::TensorMap`] states them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MapBox {
    pub dtype: DType,
    pub rows: u32,
    pub cols: u32,
    pub swizzle128: bool,
}

pub(super) fn tensor_map_args(
    op: &'static str,
    what: &str,
    name: &str,
    ptr: u64,
    shape: Matrix2d,
    MapBox {
        dtype,
        rows: box_rows,
        cols: box_cols,
        swizzle128,
    }: MapBox,
) -> Result<TensorMapArgs> {
    let elem = dtype.size() as u64;
    let row_bytes = u64::from(shape.cols) * elem;
    let bad = |why: String| {
        Err(Error::Unsupported {
            op,
            msg: format!(
                "{what}: tensor map {name} of a [{}, {}] {dtype} matrix: {why}",
                shape.rows, shape.cols
            ),
        })
    };
    if !ptr.is_multiple_of(16) {
        return bad(format!("its address {ptr:#x} is not 16-byte aligned"));
    }
    if shape.rows == 0 || shape.cols == 0 {
        return bad("an empty dimension".into());
    }
    if !row_bytes.is_multiple_of(16) {
        return bad(format!(
            "its rows are {row_bytes} bytes, not a multiple of 16"
        ));
    }
    if row_bytes >= 1 << 40 {
        return bad("its row stride exceeds 2^40 bytes".into());
    }
    let box_bytes = u64::from(box_cols) * elem;
    let box_fits = if swizzle128 {
        box_bytes == 128
    } else {
        box_bytes.is_multiple_of(16)
    };
    if !(1..=256).contains(&box_rows) || !(1..=256).contains(&box_cols) || !box_fits {
        let sw = if swizzle128 {
            "the 128-byte swizzle"
        } else {
            "whole 16-byte rows"
        };
        return bad(format!("box {box_rows} x {box_cols} does not fit {sw}"));
    }
    Ok(TensorMapArgs {
        dtype,
        dims: [u64::from(shape.cols), u64::from(shape.rows)],
        row_stride: row_bytes,
        boxes: [box_cols, box_rows],
        swizzle128,
    })
}

/// Encode the tensor map of [`tensor_map_args`] with the driver.
fn tensor_map(
    op: &'static str,
    what: &str,
    name: &str,
    ptr: u64,
    shape: Matrix2d,
    boxes: MapBox,
) -> Result<sys::CUtensorMap> {
    let a = tensor_map_args(op, what, name, ptr, shape, boxes)?;
    let swizzle = if a.swizzle128 {
        sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B
    } else {
        sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE
    };
    let mut map = sys::CUtensorMap { opaque: [0; 16] };
    let strides = [a.row_stride];
    let elem_strides = [1u32, 1];
    // SAFETY: `map` is a writable, 64-byte aligned CUtensorMap; the dimension,
    // stride, box and element-stride arrays have the rank (2) entries the driver
    // reads (rank − 1 for the strides), all alive for the call; the values were
    // checked against the driver's rules above; `ptr` is the device address of a
    // live buffer of at least rows × cols elements (checked by the op's front).
    let status = unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut map,
            match a.dtype {
                DType::BF16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                DType::F32 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
            },
            2,
            ptr as *mut c_void,
            a.dims.as_ptr(),
            strides.as_ptr(),
            a.boxes.as_ptr(),
            elem_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    if status != sys::cudaError_enum::CUDA_SUCCESS {
        return Err(Error::Cuda {
            op: what.to_string(),
            msg: format!("encoding tensor map {name}: {status:?}"),
        });
    }
    Ok(map)
}

/// Blocks of `threads` threads for a grid-stride loop over `n` elements (at most
/// 65 535 blocks: the loop covers the rest).
pub(super) fn grid_stride_blocks(n: usize, threads: u32) -> u32 {
    n.div_ceil(threads as usize).clamp(1, 65_535) as u32
}

#[cfg(test)]
mod tests {
    use super::super::manifest;
    use super::{tensor_map_args, MapBox, Matrix2d, TensorMapArgs};
    use crate::element::DType;

    fn bf16_box((rows, cols, swizzle128): (u32, u32, bool)) -> MapBox {
        MapBox {
            dtype: DType::BF16,
            rows,
            cols,
            swizzle128,
        }
    }

    /// The tensor map the Hopper GEMM gets for x [300, 200] and W [520, 200] with
    /// its boxes, attention's unswizzled 8-column boxes, and the shapes the driver
    /// would refuse, as errors naming the op and the map.
    #[test]
    fn tensor_map_arguments() {
        let (br, bc) = (
            manifest::linear_bf16_sm90::TILE_M,
            manifest::linear_bf16_sm90::TILE_K,
        );
        let shape = |rows, cols| Matrix2d { rows, cols };
        let a = tensor_map_args(
            "linear",
            "t",
            "tmap_x",
            0x1000,
            shape(300, 200),
            bf16_box((br, bc, true)),
        );
        assert_eq!(
            a.unwrap(),
            TensorMapArgs {
                dtype: DType::BF16,
                dims: [200, 300],
                row_stride: 400,
                boxes: [64, 128],
                swizzle128: true,
            }
        );
        let w = tensor_map_args(
            "linear",
            "t",
            "tmap_w",
            0x2000,
            shape(520, 200),
            bf16_box((256, bc, true)),
        );
        assert_eq!(w.unwrap().boxes, [64, 256]);
        // f32: 128-byte boxes are 32 wide, rows 4 bytes an element.
        let f32_box = |rows, cols| MapBox {
            dtype: DType::F32,
            rows,
            cols,
            swizzle128: true,
        };
        let x32 = tensor_map_args(
            "linear",
            "t",
            "tmap_x",
            0x1000,
            shape(300, 200),
            f32_box(br, 32),
        );
        assert_eq!(
            x32.unwrap(),
            TensorMapArgs {
                dtype: DType::F32,
                dims: [200, 300],
                row_stride: 800,
                boxes: [32, 128],
                swizzle128: true,
            }
        );
        let e = tensor_map_args(
            "linear",
            "t",
            "tmap_x",
            0x1000,
            shape(300, 200),
            f32_box(br, 64),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("f32 matrix") && e.contains("box 128 x 64"),
            "{e}"
        );
        let e = tensor_map_args(
            "linear",
            "t",
            "tmap_x",
            0x1000,
            shape(300, 6),
            f32_box(br, 32),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("24 bytes, not a multiple of 16"), "{e}");
        let tail = tensor_map_args(
            "attention",
            "t",
            "tmap_k_tail",
            0x2000,
            shape(729, 3456),
            bf16_box((128, 8, false)),
        );
        assert_eq!(
            tail.unwrap(),
            TensorMapArgs {
                dtype: DType::BF16,
                dims: [3456, 729],
                row_stride: 6912,
                boxes: [8, 128],
                swizzle128: false,
            }
        );
        for (ptr, rows, cols, boxes, needle) in [
            (0x1008, 4, 8, (128, 64, true), "16-byte aligned"),
            (0x1000, 4, 12, (128, 64, true), "not a multiple of 16"),
            (0x1000, 0, 8, (128, 64, true), "empty"),
            (0x1000, 4, 8, (512, 64, true), "box 512 x 64"),
            (0x1000, 4, 8, (128, 32, true), "box 128 x 32"),
            (
                0x1000,
                4,
                8,
                (128, 4, false),
                "box 128 x 4 does not fit whole 16-byte rows",
            ),
        ] {
            let e = tensor_map_args(
                "attention",
                "t",
                "tmap_x",
                ptr,
                shape(rows, cols),
                bf16_box(boxes),
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("tmap_x") && e.contains("attention") && e.contains(needle),
                "{e}"
            );
        }
    }

    /// Static bytes count: the memory gate (32 static, up to 48 KiB dynamic) must
    /// opt in, or a width near 12 280 fails to launch.
    #[test]
    fn shared_memory_opt_in_counts_static_bytes() {
        use super::smem_opt_in;
        let gate = &manifest::memory_read_gate_f32::SPEC;
        assert_eq!(gate.static_smem, 32);
        assert_eq!(
            smem_opt_in(gate.static_smem, gate.max_dyn_smem),
            Some(gate.max_dyn_smem)
        );
        assert_eq!(smem_opt_in(0, 48 * 1024), None);
        assert_eq!(smem_opt_in(32, 48 * 1024 - 32), None);
        assert_eq!(smem_opt_in(32, 48 * 1024 - 31), Some(48 * 1024 - 31));
        let sm90 = &manifest::linear_bf16_sm90::SPEC;
        assert_eq!(
            smem_opt_in(sm90.static_smem, sm90.max_dyn_smem),
            Some(sm90.max_dyn_smem)
        );
    }

    /// The driver's report of a loaded kernel must match its spec.
    #[test]
    fn loaded_kernel_matches_its_spec() {
        use super::check_loaded;
        let gate = &manifest::memory_read_gate_f32::SPEC;
        assert!(check_loaded(gate, 32, gate.threads as i32).is_ok());
        assert!(check_loaded(gate, 32, 1024).is_ok());
        assert!(check_loaded(gate, 0, 1024).is_ok());
        let e = check_loaded(gate, 64, 1024).unwrap_err().to_string();
        assert!(
            e.contains("memory_read_gate_f32") && e.contains("32 bytes"),
            "{e}"
        );
        assert!(check_loaded(gate, 32, gate.threads as i32 - 32).is_err());
    }

    /// Every generated spec names an entry its module declares, with as many
    /// `.param`s as the spec lists and the spec's block size as `.reqntid`.
    #[test]
    fn manifest_matches_the_ptx() {
        for (module, entry, threads, nparams, _) in manifest::ALL {
            let head = format!(".entry {entry}(");
            let start = module
                .ptx
                .find(&head)
                .unwrap_or_else(|| panic!("{entry} not in {}.ptx", module.name));
            let rest = &module.ptx[start + head.len()..];
            let close = rest.find(')').unwrap();
            assert_eq!(rest[..close].matches(".param").count(), *nparams, "{entry}");
            let after = &rest[close..close + 40];
            assert!(
                after.contains(&format!(".reqntid {threads}, 1, 1")),
                "{entry}: {after}"
            );
        }
    }
}
