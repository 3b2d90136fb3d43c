//! `Wgpu` when the `wgpu` feature is off: the type exists (so typed code and the
//! compile-fail proofs build everywhere) but no value can be made.

use crate::device::Never;
use crate::error::{Error, Result};

/// A GPU driven through WGSL compute shaders (compiled out in this build).
#[derive(Debug, Clone)]
pub struct Wgpu {
    never: Never,
}

impl Wgpu {
    /// Always `Err`: the `wgpu` feature is off.
    pub fn new() -> Result<Self> {
        Err(Error::NotCompiledIn("wgpu"))
    }
    /// The adapter this device runs on.
    pub fn adapter_info(&self) -> &WgpuAdapterInfo {
        match self.never {}
    }
}

/// What a wgpu adapter is (name, graphics backend, device type).
#[derive(Debug, Clone)]
pub struct WgpuAdapterInfo {
    /// The adapter's name.
    pub name: String,
    /// The graphics API it runs on.
    pub backend: String,
    /// Discrete, integrated, virtual GPU or CPU.
    pub device_type: String,
    /// True for software rasterisers such as Mesa's llvmpipe.
    pub is_software: bool,
}

crate::stub::uninhabited_backend!(Wgpu, Wgpu);
