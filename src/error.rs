//! One error type for the whole library. Every message names what went wrong
//! (the tensor, the shape, the file), so a user never needs a backtrace.

use std::path::PathBuf;

/// Result alias used across tessera.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tessera. Errors are values: no user input panics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor does not have the shape an operation needs.
    #[error("{op}: tensor `{tensor}` has shape {got:?}, expected {expected}")]
    Shape {
        op: &'static str,
        tensor: String,
        got: Vec<usize>,
        expected: String,
    },
    /// Two tensors that must agree in shape do not.
    #[error("{op}: shapes of `{a}` {a_shape:?} and `{b}` {b_shape:?} do not match")]
    ShapeMismatch {
        op: &'static str,
        a: String,
        a_shape: Vec<usize>,
        b: String,
        b_shape: Vec<usize>,
    },
    /// A host slice had the wrong number of elements for the requested shape.
    #[error("{what}: {len} elements cannot have shape {shape:?} ({expected} elements)")]
    Length {
        what: String,
        len: usize,
        shape: Vec<usize>,
        expected: usize,
    },
    /// Buffers made on two different device handles (two CUDA contexts, two wgpu
    /// devices) were used together.
    #[error("{op}: tensor `{tensor}` lives on {found}, but the operation runs on {expected}")]
    DeviceMismatch {
        op: &'static str,
        tensor: String,
        found: String,
        expected: String,
    },
    /// A backend was disabled at compile time.
    #[error("the {0} backend is not compiled in (enable the `{0}` cargo feature)")]
    NotCompiledIn(&'static str),
    /// libcuda could not be loaded.
    #[error("CUDA driver not found: {0}")]
    CudaDriverNotFound(String),
    /// A CUDA driver call failed.
    #[error("CUDA error in {op}: {msg}")]
    Cuda { op: String, msg: String },
    /// No wgpu adapter, or a wgpu error (validation, device lost, a failed
    /// download) in step `op`.
    #[error("wgpu error in {op}: {msg}")]
    Wgpu { op: String, msg: String },
    /// An argument outside what tessera supports (e.g. head dim above 128).
    #[error("{op}: {msg}")]
    Unsupported { op: &'static str, msg: String },
    /// A device allocation failed.
    #[error("out of memory on {device}: could not allocate {bytes} bytes for `{tensor}`")]
    OutOfMemory {
        device: String,
        bytes: u64,
        tensor: String,
    },
    /// A checkpoint could not be loaded.
    #[error("{}: tensor `{tensor}`: {msg}", file.display())]
    Checkpoint {
        file: PathBuf,
        tensor: String,
        msg: String,
    },
    /// A config file is missing a key or holds a value tessera cannot run.
    #[error("{}: {msg}", file.display())]
    Config { file: PathBuf, msg: String },
    /// An image could not be read or decoded.
    #[error("{}: {msg}", file.display())]
    Image { file: PathBuf, msg: String },
    /// Input values tessera refuses (NaN/Inf pixels, empty batch, ...).
    #[error("invalid input `{tensor}`: {msg}")]
    Input { tensor: String, msg: String },
    /// A model could not be fetched from the Hugging Face hub (feature `hub`).
    #[error("{id} (Hugging Face hub): {msg}")]
    Hub { id: String, msg: String },
    /// A broken invariant inside tessera (a bug): please report it.
    #[error("internal error (a bug in tessera): {0}")]
    Internal(String),
    /// I/O on a named file.
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(file: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            file: file.into(),
            source,
        }
    }
}

/// The text of a caught panic's payload (`panic!` gives a `String` or a `&str`).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // only the CUDA guards catch panics
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
}
