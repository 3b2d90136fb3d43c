//! The `Wgpu` device: adapter choice, buffers, uploads and downloads, error
//! capture. Pipelines and launches are `launch.rs`; each op is its own file.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use super::batch::Batch;
use super::launch::Pipeline;
use crate::device::{sealed, Device, DeviceKind};
use crate::element::Element;
use crate::error::{Error, Result};

/// A GPU driven through WGSL compute shaders. Cheap to clone; clones are the same
/// device. Two `Wgpu::new()` calls make two devices, whose buffers cannot mix.
#[derive(Clone)]
pub struct Wgpu {
    inner: Arc<Inner>,
}

/// What a wgpu adapter is (name, graphics backend, device type).
#[derive(Debug, Clone)]
pub struct WgpuAdapterInfo {
    /// The adapter's name, as its driver reports it.
    pub name: String,
    /// The graphics API it runs on (Vulkan, Metal, Dx12, ...).
    pub backend: String,
    /// Discrete, integrated, virtual GPU or CPU.
    pub device_type: String,
    /// True for software rasterisers such as Mesa's llvmpipe.
    pub is_software: bool,
}

pub(super) struct Inner {
    info: WgpuAdapterInfo,
    pub(super) device: wgpu::Device,
    pub(super) queue: wgpu::Queue,
    pub(super) limits: wgpu::Limits,
    pub(super) pipelines: Mutex<HashMap<String, Arc<Pipeline>>>,
    /// The last small word buffer uploaded (a packed batch's offsets) and its
    /// words: the attention calls of one forward share it. Never written after
    /// creation, so a buffer still in use by queued work is never changed.
    pub(super) words: Mutex<Option<(Vec<u32>, wgpu::Buffer)>>,
    /// Ops recorded and not yet submitted (see `batch.rs`).
    pub(super) batch: Mutex<Batch>,
    /// Compute dispatches encoded so far ([`Device::launch_count`]).
    pub(super) launches: std::sync::atomic::AtomicU64,
    /// Errors no error scope caught (other threads' work, async failures).
    uncaptured: Arc<Mutex<Option<String>>>,
    /// Set once the device is lost; every later call fails with it.
    lost: Arc<Mutex<Option<String>>>,
    // Kept alive for the device's lifetime.
    _adapter: wgpu::Adapter,
    _instance: wgpu::Instance,
}

/// Memory of a `DeviceBuffer<T, Wgpu>`: a storage buffer sized in bytes rounded
/// up to 4 (at least 4: wgpu cannot bind an empty buffer). bf16 is packed two per
/// 32-bit word, element 2w in the low half.
pub struct WgpuStorage<T> {
    pub(crate) buffer: wgpu::Buffer,
    _elem: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for WgpuStorage<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuStorage({} bytes)", self.buffer.size())
    }
}

/// A wgpu error in step `op` (the op, or `upload`, `download`, ...).
pub(super) fn wgpu_err(op: impl Into<String>, msg: impl Into<String>) -> Error {
    Error::Wgpu {
        op: op.into(),
        msg: msg.into(),
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a download waits for its mapping callback once the GPU has finished
/// the copy. The callback runs in the next poll of any thread; waiting longer
/// means the driver or wgpu lost it.
const MAP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long one wait on the mapping channel lasts before this thread polls again.
const MAP_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1);

fn padded_bytes(bytes: u64) -> u64 {
    bytes.div_ceil(4).max(1).saturating_mul(4)
}

/// Rank of an adapter type: lower is preferred.
fn preference(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn is_software(info: &wgpu::AdapterInfo) -> bool {
    let name = info.name.to_ascii_lowercase();
    info.device_type == wgpu::DeviceType::Cpu
        || ["llvmpipe", "lavapipe", "swiftshader", "software", "warp"]
            .iter()
            .any(|s| name.contains(s))
}

impl Wgpu {
    /// Open the best adapter: a discrete GPU, else integrated, virtual, and a
    /// software adapter (Mesa's llvmpipe) only when nothing else exists. The device
    /// gets the adapter's own limits. No adapter is an `Err`, never a panic.
    pub fn new() -> Result<Self> {
        let desc = wgpu::InstanceDescriptor {
            backends: wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        }
        .with_env();
        let instance = wgpu::Instance::new(desc);
        let mut adapters: Vec<wgpu::Adapter> =
            pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
                .into_iter()
                .filter(|a| {
                    a.get_downlevel_capabilities()
                        .flags
                        .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
                })
                .collect();
        if adapters.is_empty() {
            return Err(wgpu_err(
                "Wgpu::new",
                "no GPU adapter with compute shaders found (is a Vulkan, Metal or DX12 \
                 driver installed? on Linux without a GPU, Mesa's lavapipe: \
                 mesa-vulkan-drivers)",
            ));
        }
        adapters.sort_by_key(|a| {
            let i = a.get_info();
            (is_software(&i) as u8, preference(i.device_type))
        });
        let mut last_err = String::new();
        for adapter in adapters {
            match Self::open(&instance, adapter) {
                Ok(dev) => return Ok(dev),
                Err(e) => last_err = e.to_string(),
            }
        }
        Err(wgpu_err(
            "Wgpu::new",
            format!("no adapter could open a device: {last_err}"),
        ))
    }

    fn open(instance: &wgpu::Instance, adapter: wgpu::Adapter) -> Result<Self> {
        let ai = adapter.get_info();
        let info = WgpuAdapterInfo {
            name: ai.name.clone(),
            backend: format!("{:?}", ai.backend),
            device_type: format!("{:?}", ai.device_type),
            is_software: is_software(&ai),
        };
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("tessera"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| wgpu_err("Wgpu::new", format!("request_device on {}: {e}", info.name)))?;

        let uncaptured = Arc::new(Mutex::new(None::<String>));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = lock(&sink);
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        let lost = Arc::new(Mutex::new(None::<String>));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            *lock(&lost_sink) = Some(format!("device lost ({reason:?}): {msg}"));
        });
        let limits = device.limits();
        let ops_per_submit = Batch::ops_per_submit_from_env()?;
        Ok(Wgpu {
            inner: Arc::new(Inner {
                info,
                device,
                queue,
                limits,
                pipelines: Mutex::new(HashMap::new()),
                words: Mutex::new(None),
                batch: Mutex::new(Batch::new(ops_per_submit)),
                launches: std::sync::atomic::AtomicU64::new(0),
                uncaptured,
                lost,
                _adapter: adapter,
                _instance: instance.clone(),
            }),
        })
    }

    /// The adapter this device runs on.
    pub fn adapter_info(&self) -> &WgpuAdapterInfo {
        &self.inner.info
    }

    pub(super) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Mark the device failed: every later call returns `msg` (work it was given
    /// did not run, so no later result could be trusted).
    pub(super) fn mark_failed(&self, msg: &str) {
        let mut lost = lock(&self.inner.lost);
        if lost.is_none() {
            *lost = Some(format!("device unusable: {msg}"));
        }
    }

    /// Fail if the device was lost or failed, or an error escaped every scope.
    fn check_health(&self, what: &str) -> Result<()> {
        if let Some(msg) = lock(&self.inner.lost).clone() {
            return Err(wgpu_err(what, msg));
        }
        if let Some(msg) = lock(&self.inner.uncaptured).take() {
            return Err(wgpu_err(what, format!("earlier uncaptured error: {msg}")));
        }
        Ok(())
    }

    /// Run `f` inside validation, out-of-memory and internal error scopes and turn
    /// anything they caught into an `Err` naming `what`. `bytes` is the allocation
    /// size, for out-of-memory messages.
    pub(crate) fn guarded<R>(&self, what: &str, bytes: u64, f: impl FnOnce() -> R) -> Result<R> {
        self.check_health(what)?;
        let dev = &self.inner.device;
        let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = dev.push_error_scope(wgpu::ErrorFilter::Internal);
        let r = f();
        let e_internal = pollster::block_on(internal.pop());
        let e_validation = pollster::block_on(validation.pop());
        let e_oom = pollster::block_on(oom.pop());
        if let Some(e) = e_oom {
            return Err(Error::OutOfMemory {
                device: self.describe(),
                bytes,
                tensor: format!("{what} ({e})"),
            });
        }
        if let Some(e) = e_validation.or(e_internal) {
            return Err(wgpu_err(what, e.to_string()));
        }
        self.check_health(what)?;
        Ok(r)
    }

    /// A tensor buffer of `size` bytes (padded) must fit the adapter's largest
    /// buffer and its largest storage binding: every kernel binds whole tensors,
    /// so a larger one could never be used, and the driver is never asked for it.
    /// (NVIDIA's Vulkan driver allows buffers of terabytes; asking it for 4 and
    /// 256 TiB, on an H100, was followed by the other tests of the process
    /// stalling.)
    fn check_size(&self, what: &str, size: u64) -> Result<()> {
        let l = &self.inner.limits;
        let cap = l.max_buffer_size.min(l.max_storage_buffer_binding_size);
        if size > cap {
            return Err(Error::OutOfMemory {
                device: self.describe(),
                bytes: size,
                tensor: format!(
                    "{what} (above the largest buffer this adapter binds to a shader, \
                     {cap} bytes: tessera's kernels bind whole tensors)"
                ),
            });
        }
        Ok(())
    }

    fn new_buffer(&self, what: &str, bytes: u64) -> Result<wgpu::Buffer> {
        let size = padded_bytes(bytes);
        self.check_size(what, size)?;
        self.guarded(what, size, || {
            self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(what),
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
    }

    /// Wait until the `map_async` callback of a buffer used by `submission` has
    /// reported into `rx`, and return its result.
    ///
    /// The callback runs inside *some* `device.poll` — possibly another thread's,
    /// and possibly after this thread's own poll has returned — so one poll
    /// followed by one `try_recv` is not enough when threads share the device.
    /// This polls for the submission (as long as the GPU needs: queued work may be
    /// long), then keeps polling and waiting on the channel until the callback has
    /// run, for at most [`MAP_TIMEOUT`] after the GPU finished.
    fn wait_for_mapping(
        &self,
        what: &str,
        submission: &wgpu::SubmissionIndex,
        rx: &std::sync::mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
    ) -> Result<()> {
        use std::sync::mpsc::RecvTimeoutError;
        let dev = &self.inner.device;
        dev.poll(wgpu::PollType::Wait {
            submission_index: Some(submission.clone()),
            timeout: None,
        })
        .map_err(|e| wgpu_err(what, format!("waiting for the GPU: {e}")))?;
        self.check_health(what)?;
        let deadline = std::time::Instant::now() + MAP_TIMEOUT;
        loop {
            match rx.recv_timeout(MAP_POLL_INTERVAL) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => return Err(wgpu_err(what, format!("mapping failed: {e}"))),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(wgpu_err(
                        what,
                        "the mapping callback was dropped without running",
                    ))
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if std::time::Instant::now() >= deadline {
                return Err(wgpu_err(
                    what,
                    format!(
                        "the GPU finished the copy but the buffer was not mapped within {} s",
                        MAP_TIMEOUT.as_secs()
                    ),
                ));
            }
            // Run any callback that is ready (ours, if no other thread's poll has
            // taken it), without blocking.
            dev.poll(wgpu::PollType::Poll)
                .map_err(|e| wgpu_err(what, format!("polling the GPU: {e}")))?;
            self.check_health(what)?;
        }
    }

    fn wait_idle(&self, what: &str) -> Result<()> {
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| wgpu_err(what, format!("waiting for the GPU: {e}")))?;
        self.check_health(what)
    }
}

impl std::fmt::Debug for Wgpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl sealed::Sealed for Wgpu {}

impl Device for Wgpu {
    type Storage<T: Element> = WgpuStorage<T>;
    const KIND: DeviceKind = DeviceKind::Wgpu;

    fn describe(&self) -> String {
        let i = &self.inner.info;
        format!("wgpu ({}, {}, {})", i.name, i.backend, i.device_type)
    }

    fn same_device(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn storage_from_slice<T: Element>(&self, data: &[T]) -> Result<WgpuStorage<T>> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let size = padded_bytes(bytes.len() as u64);
        self.check_size("upload", size)?;
        let mut padded = Vec::new();
        let contents = if bytes.len() as u64 == size {
            bytes
        } else {
            padded.reserve_exact(size as usize);
            padded.extend_from_slice(bytes);
            padded.resize(size as usize, 0);
            &padded[..]
        };
        let buffer = self.guarded("upload", size, || {
            self.inner
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("tessera tensor"),
                    contents,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                })
        })?;
        Ok(WgpuStorage {
            buffer,
            _elem: PhantomData,
        })
    }

    /// The ops recorded so far are submitted first, with the batch held, so the
    /// queue write (done at the start of the next submission) lands after the ops
    /// already called and before the ones called next.
    fn storage_write<T: Element>(&self, storage: &mut WgpuStorage<T>, data: &[T]) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if bytes.is_empty() {
            return Ok(());
        }
        // Writes are whole 4-byte words; buffers are allocated padded to them.
        let size = padded_bytes(bytes.len() as u64);
        if size > storage.buffer.size() {
            return Err(Error::Internal(format!(
                "copy_from_host: {size} bytes into a buffer of {}",
                storage.buffer.size()
            )));
        }
        let mut padded = Vec::new();
        let contents = if bytes.len() as u64 == size {
            bytes
        } else {
            padded.extend_from_slice(bytes);
            padded.resize(size as usize, 0);
            &padded[..]
        };
        self.after_pending("upload", || {
            self.guarded("upload", size, || {
                self.inner.queue.write_buffer(&storage.buffer, 0, contents)
            })
        })?
    }

    /// The size is checked first ([`Self::check_size`]), then the value is staged
    /// on the host and uploaded as the buffer's initial contents (one buffer
    /// creation, no queued write).
    fn storage_full<T: Element>(&self, len: usize, value: T) -> Result<WgpuStorage<T>> {
        let bytes = (len as u64).saturating_mul(std::mem::size_of::<T>() as u64);
        self.check_size("tensor", padded_bytes(bytes))?;
        self.storage_from_slice(&crate::device::staged_full(len, value)?)
    }

    fn storage_alloc<T: Element>(&self, len: usize) -> Result<WgpuStorage<T>> {
        let bytes = (len as u64).saturating_mul(std::mem::size_of::<T>() as u64);
        Ok(WgpuStorage {
            buffer: self.new_buffer("tensor", bytes)?,
            _elem: PhantomData,
        })
    }

    fn storage_to_vec<T: Element>(&self, storage: &WgpuStorage<T>, len: usize) -> Result<Vec<T>> {
        const WHAT: &str = "download";
        // Saturating: a length past the buffer is refused below, not an overflow.
        let bytes = len.saturating_mul(std::mem::size_of::<T>());
        if len == 0 {
            self.synchronize()?;
            return Ok(Vec::new());
        }
        let size = padded_bytes(bytes as u64);
        if size > storage.buffer.size() {
            return Err(wgpu_err(
                WHAT,
                format!(
                    "{len} elements asked of a {}-byte buffer",
                    storage.buffer.size()
                ),
            ));
        }
        let dev = &self.inner.device;
        let staging = self.guarded(WHAT, size, || {
            dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("tessera staging"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        // The copy goes into the command buffer of the ops recorded so far.
        let submission = self.submit_with(WHAT, |encoder| {
            encoder.copy_buffer_to_buffer(&storage.buffer, 0, &staging, 0, size)
        })?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            // The receiver lives until the mapping is resolved or we give up; a
            // send after that is dropped harmlessly.
            let _ = tx.send(r);
        });
        self.wait_for_mapping(WHAT, &submission, &rx)?;
        let mut out = vec![T::default(); len];
        {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| wgpu_err(WHAT, e.to_string()))?;
            bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(&view[..bytes]);
        }
        staging.unmap();
        Ok(out)
    }

    fn synchronize(&self) -> Result<()> {
        self.submit_pending("synchronize")?;
        self.wait_idle("synchronize")
    }
    fn flush(&self) -> Result<()> {
        self.submit_pending("flush")
    }
    fn launch_count(&self) -> Option<u64> {
        Some(
            self.inner
                .launches
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

/// A device for the unit tests, or `None` with a notice on stderr when there is
/// no adapter (a failure under `TESSERA_REQUIRE_WGPU=1`).
#[cfg(test)]
pub(super) fn test_device() -> Option<Wgpu> {
    match Wgpu::new() {
        Ok(dev) => Some(dev),
        Err(e) => {
            if std::env::var("TESSERA_REQUIRE_WGPU").is_ok_and(|v| !v.is_empty() && v != "0") {
                panic!("TESSERA_REQUIRE_WGPU is set but there is no wgpu adapter: {e}");
            }
            // Straight to stderr: libtest captures eprintln! of a passing test.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: no wgpu adapter ({e})");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wgpu validation error inside `guarded` is an `Err` naming the step, not a
    /// panic, and the device keeps working afterwards.
    #[test]
    fn validation_errors_are_values() {
        let Some(dev) = test_device() else { return };
        let r = dev.guarded("bad buffer", 16, || {
            // MAP_READ may only be combined with COPY_DST: a validation error.
            dev.inner.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 16,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        });
        match r {
            Err(Error::Wgpu { op, .. }) => assert_eq!(op, "bad buffer"),
            other => panic!("expected a wgpu error, got {other:?}"),
        }
        let s = dev.storage_from_slice(&[1.0f32, 2.0, 3.0]).unwrap();
        assert_eq!(dev.storage_to_vec(&s, 3).unwrap(), vec![1.0, 2.0, 3.0]);
    }
}
