//! `Cuda` when the `cuda` feature is off: the type exists (so typed code and the
//! compile-fail proofs build everywhere) but no value can be made.

use crate::device::Never;
use crate::error::{Error, Result};

/// An NVIDIA GPU driven through hand-written PTX (compiled out in this build).
#[derive(Debug, Clone)]
pub struct Cuda {
    never: Never,
}

impl Cuda {
    /// Always `Err`: the `cuda` feature is off.
    pub fn new(_ordinal: usize) -> Result<Self> {
        Err(Error::NotCompiledIn("cuda"))
    }
    /// Always `Err`: the `cuda` feature is off.
    pub fn device_count() -> Result<usize> {
        Err(Error::NotCompiledIn("cuda"))
    }
    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        match self.never {}
    }
    /// The device's compute capability (major, minor).
    pub fn compute_capability(&self) -> (i32, i32) {
        match self.never {}
    }
    /// The bf16 GEMM the aligned linear layers run.
    pub fn gemm_path(&self) -> super::GemmPath {
        match self.never {}
    }
    /// How the aligned f32 linear layers multiply.
    pub fn f32_gemm(&self) -> super::F32Gemm {
        match self.never {}
    }
    /// Whether model forwards are replayed as CUDA graphs.
    pub fn graphs_enabled(&self) -> bool {
        match self.never {}
    }
    /// Whether cudarc tracks buffer uses with events.
    pub fn event_tracking(&self) -> bool {
        match self.never {}
    }
}

crate::stub::uninhabited_backend!(Cuda, Cuda);
