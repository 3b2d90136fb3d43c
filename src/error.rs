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
        /// The operation.
        op: &'static str,
        /// The tensor's name in that operation.
        tensor: String,
        /// Its shape.
        got: Vec<usize>,
        /// What the operation needs, in words.
        expected: String,
    },
    /// Two tensors that must agree in shape do not.
    #[error("{op}: shapes of `{a}` {a_shape:?} and `{b}` {b_shape:?} do not match")]
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// The first tensor's name.
        a: String,
        /// Its shape.
        a_shape: Vec<usize>,
        /// The second tensor's name.
        b: String,
        /// Its shape.
        b_shape: Vec<usize>,
    },
    /// A host slice had the wrong number of elements for the requested shape.
    #[error("{what}: {len} elements cannot have shape {shape:?} ({expected} elements)")]
    Length {
        /// What was being built.
        what: String,
        /// The slice's length.
        len: usize,
        /// The shape asked for.
        shape: Vec<usize>,
        /// The elements that shape holds.
        expected: usize,
    },
    /// Buffers made on two different device handles (two CUDA contexts, two wgpu
    /// devices) were used together.
    #[error("{op}: tensor `{tensor}` lives on {found}, but the operation runs on {expected}")]
    DeviceMismatch {
        /// The operation.
        op: &'static str,
        /// The tensor made on another handle.
        tensor: String,
        /// The handle it was made on.
        found: String,
        /// The handle the operation runs on.
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
    Cuda {
        /// The step (an op, a load, a copy).
        op: String,
        /// The driver's error.
        msg: String,
    },
    /// No wgpu adapter, or a wgpu error (validation, device lost, a failed
    /// download) in step `op`.
    #[error("wgpu error in {op}: {msg}")]
    Wgpu {
        /// The step.
        op: String,
        /// wgpu's error.
        msg: String,
    },
    /// An argument outside what tessera supports (e.g. head dim above 128).
    #[error("{op}: {msg}")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// What is out of range, and the range.
        msg: String,
    },
    /// A device allocation failed.
    #[error("out of memory on {device}: could not allocate {bytes} bytes for `{tensor}`")]
    OutOfMemory {
        /// The device.
        device: String,
        /// The allocation's size.
        bytes: u64,
        /// The tensor it was for.
        tensor: String,
    },
    /// A checkpoint could not be loaded.
    #[error("{}: tensor `{tensor}`: {msg}", file.display())]
    Checkpoint {
        /// The safetensors file (or index).
        file: PathBuf,
        /// The tensor (`(header)`, `(index)` for the file's own structure).
        tensor: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A config file is missing a key or holds a value tessera cannot run.
    #[error("{}: {msg}", file.display())]
    Config {
        /// The config file.
        file: PathBuf,
        /// The key and what is wrong with it.
        msg: String,
    },
    /// An image could not be read or decoded.
    #[error("{}: {msg}", file.display())]
    Image {
        /// The image file.
        file: PathBuf,
        /// Why it could not be used.
        msg: String,
    },
    /// Input values tessera refuses (NaN/Inf pixels, empty batch, ...).
    #[error("invalid input `{tensor}`: {msg}")]
    Input {
        /// The input's name.
        tensor: String,
        /// What is wrong with its values.
        msg: String,
    },
    /// A model could not be fetched from the Hugging Face hub (feature `hub`).
    #[error("{id} (Hugging Face hub): {msg}")]
    Hub {
        /// The hub id, `org/name`.
        id: String,
        /// What failed, naming the endpoint or the file.
        msg: String,
    },
    /// A broken invariant inside tessera (a bug): please report it.
    #[error("internal error (a bug in tessera): {0}")]
    Internal(String),
    /// I/O on a named file.
    #[error("{}: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The operating system's error.
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
