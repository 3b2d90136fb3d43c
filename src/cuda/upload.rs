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
//! [`CHUNK`] go through the two buffers a chunk at a time: the third chunk waits
//! for the first one's DMA, and so for the work queued before it (on an idle
//! stream the host fills one buffer while the other's DMA runs). A buffer is
//! written again, or freed, only after an event recorded behind its last DMA has
//! completed. If the driver has no page-locked memory to give (a locked-memory
//! limit), uploads are pageable copies from then on.

use std::ptr::NonNull;
use std::sync::Arc;

use cudarc::driver::{
    result as cu, sys, CudaContext, CudaEvent, CudaSlice, DevicePtrMut, DriverError,
};

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
    fn new(ctx: &Arc<CudaContext>, len: usize) -> std::result::Result<Self, DriverError> {
        ctx.bind_to_thread()?;
        // A blocking-sync event: a wait for it sleeps rather than spins a core.
        let event = ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC))?;
        // SAFETY: a plain page-locked allocation of `len` bytes (flags 0); it is
        // freed once, in `Drop`, after its last DMA.
        let ptr = unsafe { cu::malloc_host(len, 0) }?;
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or(DriverError(sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY))?;
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
        // The last DMA from the buffer must have read it before it is freed. Raw
        // calls: cudarc's wrappers would first report (and so consume) an error
        // another call stored in the context. If waiting fails (a fault left in
        // the context), the memory is leaked rather than freed under a copy that
        // may still run.
        // SAFETY: the context and the event are alive (held by `self`); binding
        // the context to this thread is what every call of this handle does.
        let waited = unsafe { cu::ctx::set_current(self.ctx.cu_ctx()) }
            .and_then(|()| unsafe { cu::event::synchronize(self.event.cu_event()) });
        if waited.is_ok() {
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
                let turn = if staging.pageable {
                    None
                } else {
                    staging
                        .take_turn(&self.inner.ctx, chunk.len())
                        .map_err(|e| cuda_err(op, e))?
                };
                let Some(k) = turn else {
                    // Pageable: the driver stages the rest itself.
                    let mut rest = dst.slice_mut(off..bytes.len());
                    return stream
                        .memcpy_htod(&bytes[off..], &mut rest)
                        .map_err(|e| cuda_err(op, e));
                };
                let Some(buf) = staging.bufs[k].as_mut() else {
                    return Err(Error::Internal(format!("{op}: staging buffer {k} missing")));
                };
                // The buffer's previous DMA has read it: it may be written.
                buf.event.synchronize().map_err(|e| cuda_err(op, e))?;
                // SAFETY: `buf` holds `buf.len >= chunk.len()` bytes that no queued
                // copy reads any more (the event above), and only this thread,
                // holding the staging lock, touches them until the copy below.
                // After the copy they are initialised, and read as such.
                let host = unsafe {
                    std::ptr::copy_nonoverlapping(chunk.as_ptr(), buf.ptr.as_ptr(), chunk.len());
                    std::slice::from_raw_parts(buf.ptr.as_ptr(), chunk.len())
                };
                let (base, _record) = dst.device_ptr_mut(stream);
                self.inner
                    .ctx
                    .bind_to_thread()
                    .map_err(|e| cuda_err(op, e))?;
                // SAFETY: the destination range `off..off + chunk.len()` lies in
                // `dst` (checked above: `bytes.len() <= dst.len()`); the source is
                // page-locked memory that stays allocated and unwritten until the
                // event recorded right after has completed (`Pinned::drop`, and the
                // wait above before its next use).
                unsafe { cu::memcpy_htod_async(base + off as u64, host, stream.cu_stream()) }
                    .map_err(|e| cuda_err(op, e))?;
                // Recorded with the raw call (the context is bound above), not
                // through a wrapper that may first report an error stored by some
                // other call: the copy is queued, and an event must stand behind it.
                // SAFETY: the event and the stream belong to this handle's context
                // and live through the call.
                let recorded =
                    unsafe { cu::event::record(buf.event.cu_event(), stream.cu_stream()) };
                if let Err(e) = recorded {
                    // No event behind the queued copy: wait for it through the
                    // stream, or, if that fails too, never write or free this
                    // buffer again.
                    if stream.synchronize().is_err() {
                        std::mem::forget(staging.bufs[k].take());
                    }
                    return Err(cuda_err(op, e));
                }
                off += chunk.len();
            }
            Ok(())
        })
    }
}

impl Staging {
    /// The index of the next buffer in turn, grown first if it holds fewer than
    /// `len` bytes (the old one freed after its last DMA). `None` when the driver
    /// has no page-locked memory to give (`pageable` is set then); other errors
    /// are the caller's.
    fn take_turn(
        &mut self,
        ctx: &Arc<CudaContext>,
        len: usize,
    ) -> std::result::Result<Option<usize>, DriverError> {
        let k = self.next;
        self.next ^= 1;
        if self.bufs[k].as_ref().is_none_or(|b| b.len < len) {
            self.bufs[k] = None;
            // `len` is at most CHUNK, a power of two: so is `size`.
            let size = len.next_power_of_two().clamp(SMALLEST, CHUNK);
            match Pinned::new(ctx, size) {
                Ok(b) => self.bufs[k] = Some(b),
                Err(e) if e.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY => {
                    self.pageable = true;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Some(k))
    }
}
