//! CUDA graphs: a fixed sequence of ops (the model's forward at one shape) is
//! captured once and replayed as one graph launch instead of one launch per
//! kernel ([`Device::run_replayable`](crate::device::Device::run_replayable)).
//!
//! - Per key: the first call runs eagerly (a warm-up: modules load, the
//!   scratch buffers grow); the second is captured on the handle's capture stream
//!   and the graph launched on the main stream; later calls launch the graph. The
//!   caller's key names everything the launches depend on (the model, its
//!   workspace, the buffers' device addresses). The buffers it cannot name,
//!   the handle's scratch (split-K's partial sums, patch embedding's patches),
//!   have a generation that each graph records: a graph is launched only under
//!   the scratch lock and while the generation is still its own (a grown
//!   scratch buffer frees the old one), else it is dropped and captured again.
//! - Only the capturing thread's launches go to the capture stream (a
//!   thread-local marks it), so other threads' ops on the same handle run as
//!   before, on the main stream. While capturing, anything that would have to run
//!   now (an allocation, an upload, a download, a synchronisation) is an error:
//!   the capture is abandoned, the key marked, and the ops run eagerly, that call
//!   and every later one with the key.
//! - `TESSERA_CUDA_GRAPHS=0` (or `off`) turns graphs off for handles opened
//!   afterwards.
//! - At most [`KEPT`] graphs per handle; the least recently used goes first.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use cudarc::driver::{result as cu, sys, CudaGraph, CudaStream};

use super::device::{cuda_err, guarded, Cuda};
use crate::error::{Error, Result};

/// Graphs kept per handle.
pub(super) const KEPT: usize = 16;

thread_local! {
    /// The handle (its `Inner`'s address) whose capture stream this thread is
    /// recording into, and the kernels it has recorded.
    static CAPTURING: Cell<Option<(usize, u64)>> = const { Cell::new(None) };
}

/// A captured graph. `CudaGraph` holds raw driver handles and is not `Send`; the
/// driver allows a graph to be used from any thread as long as uses do not
/// overlap, and every use of one is under the handle's `graphs` mutex.
pub(super) struct Graph {
    graph: CudaGraph,
    /// Kernels it launches (added to the handle's launch count per replay).
    kernels: u64,
    /// The scratch buffers' generation when the capture began.
    scratch_generation: u64,
}

/// The `op` of the errors that say a forward cannot be captured: something in it
/// must run now (an allocation, an upload, a download, a synchronisation).
const UNCAPTURABLE: &str = "graph capture";

/// Whether a failed capture means the forward cannot be captured (then the key
/// runs eagerly from now on), rather than an error that may pass: ours from
/// [`Cuda::not_capturing`] and capture's own (beginning or ending it), and the
/// driver's refusals of a call while a stream captures.
fn uncapturable(e: &Error) -> bool {
    match e {
        // CUDA_ERROR_STREAM_CAPTURE_* and CUDA_ERROR_CAPTURED_EVENT.
        Error::Cuda { op, msg } => op == UNCAPTURABLE || msg.contains("_CAPTURE"),
        _ => false,
    }
}

/// Why a graph was not launched.
enum NotLaunched {
    /// A scratch buffer was replaced since the capture: capture again.
    Stale,
    /// The driver refused it.
    Refused,
}

// SAFETY: see `Graph`: the driver's graph objects are not tied to a thread; the
// only accesses (launch, destroy) happen under the `Graphs` mutex of the handle
// that owns them, so they never overlap.
unsafe impl Send for Graph {}

enum State {
    /// Ran eagerly once.
    Seen,
    /// A capture failed for a reason that may pass (an error another thread
    /// left in the context surfaced in it): one more capture, then eager.
    Retry,
    Ready(Graph),
    /// Could not be captured: always eager.
    Eager,
}

/// The graphs of one handle, most recently used last.
#[derive(Default)]
pub(super) struct Graphs {
    entries: Vec<(Vec<u64>, State)>,
}

impl Graphs {
    fn find(&mut self, key: &[u64]) -> Option<&mut State> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        let e = self.entries.remove(i);
        self.entries.push(e);
        self.entries.last_mut().map(|(_, s)| s)
    }

    fn set(&mut self, key: Vec<u64>, state: State) {
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push((key, state));
        if self.entries.len() > KEPT {
            self.entries.remove(0);
        }
    }

    /// Drop every graph (before the handle's modules are unloaded).
    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }
}

/// A capture in progress: if `f` unwinds (a panic), the thread stops redirecting
/// its launches and the stream leaves capture mode.
struct Capturing<'a> {
    stream: &'a Arc<CudaStream>,
    ended: bool,
}

impl Drop for Capturing<'_> {
    fn drop(&mut self) {
        if !self.ended {
            CAPTURING.with(|c| c.set(None));
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.stream.end_capture(sys::CUgraphInstantiate_flags(0))
            }));
        }
    }
}

impl Cuda {
    fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// The stream this thread's ops on this handle go to: the capture stream
    /// while this thread captures a graph for it, the main stream otherwise.
    pub(super) fn stream(&self) -> &Arc<CudaStream> {
        if self.capturing() {
            &self.inner.capture_stream
        } else {
            &self.inner.stream
        }
    }

    fn capturing(&self) -> bool {
        CAPTURING.with(|c| c.get().is_some_and(|(id, _)| id == self.id()))
    }

    /// Count one kernel launch: on the handle, or — while this thread captures
    /// for it — in the graph (whose launches count when it is launched).
    pub(super) fn count_launch(&self) {
        let id = self.id();
        let captured = CAPTURING.with(|c| match c.get() {
            Some((cid, n)) if cid == id => {
                c.set(Some((cid, n + 1)));
                true
            }
            _ => false,
        });
        if !captured {
            self.inner.launches.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An error when this thread is capturing a graph for this handle: `what`
    /// would have to happen now, which a graph cannot hold.
    pub(super) fn not_capturing(&self, what: &str) -> Result<()> {
        if self.capturing() {
            return Err(Error::Cuda {
                op: UNCAPTURABLE.into(),
                msg: format!("{what} while capturing a graph"),
            });
        }
        Ok(())
    }

    /// [`Device::run_replayable`](crate::device::Device::run_replayable) on CUDA.
    pub(super) fn replay_or_capture(
        &self,
        key: &[u64],
        f: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        const OP: &str = "graph";
        if !self.inner.graphs_enabled || self.capturing() {
            return f();
        }
        let mut graphs = self.inner.graphs.lock().unwrap_or_else(|p| p.into_inner());
        let retried = match graphs.find(key) {
            None => {
                graphs.set(key.to_vec(), State::Seen);
                drop(graphs);
                return f();
            }
            Some(State::Eager) => {
                drop(graphs);
                return f();
            }
            Some(State::Ready(g)) => {
                // An error stored in the context (by any thread) surfaces here,
                // as the caller's error, not as a reason to give up on graphs.
                guarded(OP, || {
                    self.inner.ctx.bind_to_thread().map_err(|e| cuda_err(OP, e))
                })?;
                let state = match self.launch_graph(g) {
                    Ok(()) => return Ok(()),
                    // Captured with a scratch buffer that is gone: again, next call.
                    Err(NotLaunched::Stale) => State::Seen,
                    // Nothing of it ran: the ops run for real, now and from now on.
                    Err(NotLaunched::Refused) => State::Eager,
                };
                graphs.set(key.to_vec(), state);
                drop(graphs);
                return f();
            }
            Some(State::Seen) => false,
            Some(State::Retry) => true,
        };
        // Second call with this key: capture. The mutex stays held, so one thread
        // at a time captures or replays on this handle.
        guarded(OP, || {
            self.inner.ctx.bind_to_thread().map_err(|e| cuda_err(OP, e))
        })?;
        let state = match self.capture(f) {
            Ok(g) => match self.launch_graph(&g) {
                Ok(()) => {
                    graphs.set(key.to_vec(), State::Ready(g));
                    return Ok(());
                }
                Err(NotLaunched::Stale) => State::Seen,
                Err(NotLaunched::Refused) => State::Eager,
            },
            // Something in the forward cannot be captured: eager from now on.
            Err(e) if uncapturable(&e) || retried => State::Eager,
            // Anything else may pass: capture again next call.
            Err(_) => State::Retry,
        };
        // Nothing of the capture ran: run the ops for real.
        graphs.set(key.to_vec(), state);
        drop(graphs);
        f()
    }

    /// Record `f`'s launches on the capture stream into a graph (nothing runs).
    /// Errors that say the forward cannot be captured carry [`UNCAPTURABLE`].
    fn capture(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<Graph> {
        const OP: &str = UNCAPTURABLE;
        let scratch_generation = self.inner.scratch_generation.load(Ordering::Acquire);
        let cs = &self.inner.capture_stream;
        guarded(OP, || {
            cs.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .map_err(|e| cuda_err(OP, e))
        })?;
        let mut session = Capturing {
            stream: cs,
            ended: false,
        };
        CAPTURING.with(|c| c.set(Some((self.id(), 0))));
        let ran = f();
        let kernels = CAPTURING.with(|c| c.replace(None)).map_or(0, |(_, n)| n);
        // Always end the capture, also after an error, so the stream leaves
        // capture mode.
        session.ended = true;
        let ended = guarded(OP, || {
            cs.end_capture(sys::CUgraphInstantiate_flags(0))
                .map_err(|e| cuda_err(OP, e))
        });
        ran?;
        match ended? {
            Some(graph) => Ok(Graph {
                graph,
                kernels,
                scratch_generation,
            }),
            None => Err(Error::Cuda {
                op: OP.into(),
                msg: "the capture recorded nothing".into(),
            }),
        }
    }

    /// Launch a captured graph on the main stream (the context bound to this
    /// thread by the caller).
    fn launch_graph(&self, g: &Graph) -> std::result::Result<(), NotLaunched> {
        // A split-K GEMM or a patch embedding in the graph uses the scratch
        // buffers: queue the graph while no other thread is between such an
        // op's first launch and its last (which hold this lock across them),
        // and only while the buffers are the ones it was captured with
        // (replacing one needs this lock; the old buffer's free is queued
        // after the graph).
        let _scratch = self.inner.scratch.lock().unwrap_or_else(|p| p.into_inner());
        if self.inner.scratch_generation.load(Ordering::Acquire) != g.scratch_generation {
            return Err(NotLaunched::Stale);
        }
        // SAFETY: the executable graph is alive (owned by `g`, which the caller
        // holds under the handle's `graphs` mutex, so no other use overlaps) and
        // was instantiated in this handle's context, bound to this thread by the
        // caller; the main stream belongs to the same context. Every buffer its
        // kernels use is named by the key it was captured under, or is the
        // scratch buffers of the generation checked above under the lock that
        // replacing one takes, so all of them are still allocated when it runs.
        let launched = catch_unwind(AssertUnwindSafe(|| unsafe {
            cu::graph::launch(g.graph.cu_graph_exec(), self.inner.stream.cu_stream())
        }));
        match launched {
            Ok(Ok(())) => {
                self.inner.launches.fetch_add(g.kernels, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(NotLaunched::Refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_capture_failures_turn_graphs_off() {
        let cuda = |op: &str, msg: &str| Error::Cuda {
            op: op.into(),
            msg: msg.into(),
        };
        assert!(uncapturable(&cuda(
            UNCAPTURABLE,
            "an upload while capturing a graph"
        )));
        assert!(uncapturable(&cuda(
            "linear (linear_bf16)",
            "DriverError(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, \"operation not permitted when stream is capturing\")"
        )));
        assert!(!uncapturable(&cuda(
            "linear (linear_bf16)",
            "DriverError(CUDA_ERROR_LAUNCH_FAILED, \"unspecified launch failure\")"
        )));
        assert!(!uncapturable(&Error::Internal("x".into())));
    }

    #[test]
    fn graphs_keep_the_most_recently_used() {
        let mut g = Graphs::default();
        for k in 0..KEPT as u64 {
            g.set(vec![k], State::Seen);
        }
        // Using key 0 makes key 1 the least recently used: the next key evicts it.
        assert!(matches!(g.find(&[0]), Some(State::Seen)));
        g.set(vec![100], State::Eager);
        assert!(g.find(&[1]).is_none());
        assert!(g.find(&[0]).is_some());
        assert!(matches!(g.find(&[100]), Some(State::Eager)));
        assert_eq!(g.entries.len(), KEPT);
        // Setting a key again replaces its state.
        g.set(vec![0], State::Eager);
        assert!(matches!(g.find(&[0]), Some(State::Eager)));
        assert_eq!(g.entries.len(), KEPT);
        g.clear();
        assert!(g.find(&[0]).is_none());
    }
}
