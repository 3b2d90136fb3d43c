//! Uploads through page-locked host memory.
//!
//! A copy from pageable memory (a `Vec`) makes the driver stage it through a
//! page-locked buffer of its own, and a copy of more than a little returns only
//! when the bytes have gone over the bus: after every kernel queued before it on
//! the stream. The embedding job uploads batch i+1 while batch i's forward runs,
//! so the host waited for that forward, and the device then sat idle while the
//! copy ran at pageable speed.
//!
//! Here an upload copies its bytes into one of two page-locked buffers of the
//! handle, used in turn, queues the DMA from it on the stream and returns: the
//! host goes on while the device finishes what was queued before, and the copy
//! runs at the bus's page-locked speed once the stream reaches it. Uploads above
//! [`CHUNK`] go through the two buffers a chunk at a time (the host fills one
//! while the other's DMA runs). A buffer is written again, or freed, only after
//! an event recorded behind its last DMA has completed. If the driver refuses
//! page-locked memory (a locked-memory limit), uploads are pageable copies from
//! then on.

use std::ptr::NonNull;
use std::sync::Arc;

use cudarc::driver::{result as cu, sys, CudaContext, CudaEvent, CudaSlice, DevicePtrMut};

use super::device::{cuda_err, guarded, Cuda};
use crate::error::{Error, Result};

/// The largest page-locked buffer (bytes): a SigLIP-so400m bf16 batch of 32
/// images (28 MiB) is one chunk.
pub(super) const CHUNK: usize = 32 << 20;

/// The smallest page-locked buffer (bytes): small uploads share it without
/// growing it a size at a time.
const SMALLEST: usize = 64 << 10;

/// A handle's two staging buffers, used in turn.
#[derive(Default)]
pub(super) struct Staging {
    bufs: [Option<Pinned>; 2],
    next: usize,
    /// A page-locked allocation failed: pageable copies from then on.
    pageable: bool,
}

/// Page-locked host memory and the event recorded behind the last DMA that reads it.
struct Pinned {
    ptr: NonNull<u8>,
    len: usize,
    event: CudaEvent,
    ctx: Arc<CudaContext>,
}

// SAFETY: `Pinned` owns its allocation (nothing else holds `ptr`), and it is only
// reached through the handle's `Mutex<Staging>`, one thread at a time.
unsafe impl Send for Pinned {}

impl Pinned {
    fn new(
        ctx: &Arc<CudaContext>,
        len: usize,
    ) -> std::result::Result<Self, cudarc::driver::DriverError> {
        ctx.bind_to_thread()?;
        let event = ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))?;
        // SAFETY: a plain page-locked allocation of `len` bytes (flags 0); it is
        // freed once, in `Drop`, after its last DMA.
        let ptr = unsafe { cu::malloc_host(len, 0) }?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(cudarc::driver::DriverError(
            sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY,
        ))?;
        Ok(Pinned {
            ptr,
            len,
            event,
            ctx: Arc::clone(ctx),
        })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // The last DMA from the buffer must have read it before it is freed. If
        // waiting fails (a fault left in the context), the memory is leaked rather
        // than freed under a copy that may still run.
        if self.event.synchronize().is_ok() && self.ctx.bind_to_thread().is_ok() {
            // SAFETY: `ptr` came from `malloc_host`, is freed only here, and the
            // event says no queued copy reads it any more.
            let _ = unsafe { cu::free_host(self.ptr.as_ptr().cast()) };
        }
    }
}

impl Cuda {
    /// Copy `bytes` into the first `bytes.len()` bytes of `dst`, after the work
    /// already queued, through the staging buffers. Returns once the bytes are in
    /// page-locked memory: `bytes` may be reused at once.
    pub(super) fn upload(&self, dst: &mut CudaSlice<u8>, bytes: &[u8], op: &str) -> Result<()> {
        if bytes.len() > dst.len() {
            return Err(Error::Internal(format!(
                "{op}: {} bytes into a buffer of {}",
                bytes.len(),
                dst.len()
            )));
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let mut staging = self.inner.staging.lock().unwrap_or_else(|p| p.into_inner());
        guarded(op, || {
            let stream = &self.inner.stream;
            let mut off = 0;
            for chunk in bytes.chunks(CHUNK) {
                let buf = if staging.pageable {
                    None
                } else {
                    staging.buffer(&self.inner.ctx, chunk.len())
                };
                let Some(buf) = buf else {
                    // Pageable: the driver stages the rest itself.
                    let mut rest = dst.slice_mut(off..bytes.len());
                    return stream
                        .memcpy_htod(&bytes[off..], &mut rest)
                        .map_err(|e| cuda_err(op, e));
                };
                // The buffer's previous DMA has read it: it may be written.
                buf.event.synchronize().map_err(|e| cuda_err(op, e))?;
                // SAFETY: `buf` holds `buf.len >= chunk.len()` bytes that no queued
                // copy reads any more (the event above), and only this thread,
                // holding the staging lock, touches them until the copy below.
                let host = unsafe { std::slice::from_raw_parts_mut(buf.ptr.as_ptr(), chunk.len()) };
                host.copy_from_slice(chunk);
                let (base, _record) = dst.device_ptr_mut(stream);
                self.inner
                    .ctx
                    .bind_to_thread()
                    .map_err(|e| cuda_err(op, e))?;
                // SAFETY: the destination range `off..off + chunk.len()` lies in
                // `dst` (checked above: `bytes.len() <= dst.len()`); the source is
                // page-locked memory that stays allocated and unwritten until the
                // event recorded next has completed (`Pinned::drop`, and the wait
                // above before its next use).
                unsafe { cu::memcpy_htod_async(base + off as u64, host, stream.cu_stream()) }
                    .and_then(|()| buf.event.record(stream))
                    .map_err(|e| cuda_err(op, e))?;
                off += chunk.len();
            }
            Ok(())
        })
    }
}

impl Staging {
    /// The next buffer in turn, holding at least `len` bytes (grown if smaller:
    /// the old one freed after its last DMA). `None` when the driver refuses the
    /// memory; `pageable` is set then.
    fn buffer(&mut self, ctx: &Arc<CudaContext>, len: usize) -> Option<&mut Pinned> {
        let k = self.next;
        self.next ^= 1;
        if self.bufs[k].as_ref().is_none_or(|b| b.len < len) {
            self.bufs[k] = None;
            // `len` is at most CHUNK, a power of two: so is `size`.
            let size = len.next_power_of_two().clamp(SMALLEST, CHUNK);
            match Pinned::new(ctx, size) {
                Ok(b) => self.bufs[k] = Some(b),
                Err(_) => {
                    self.pageable = true;
                    return None;
                }
            }
        }
        self.bufs[k].as_mut()
    }
}
