//! `Wgpu` when the `wgpu` feature is off: the type exists (so typed code and the
//! compile-fail proofs build everywhere) but no value can be made.

use crate::device::{sealed, Device, DeviceKind, Never};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::*;

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
    pub name: String,
    pub backend: String,
    pub device_type: String,
    /// True for software rasterisers such as Mesa's llvmpipe.
    pub is_software: bool,
}

impl sealed::Sealed for Wgpu {}

impl Device for Wgpu {
    type Storage<T: Element> = Never;
    const KIND: DeviceKind = DeviceKind::Wgpu;
    fn describe(&self) -> String {
        match self.never {}
    }
    fn same_device(&self, _: &Self) -> bool {
        match self.never {}
    }
    fn storage_from_slice<T: Element>(&self, _: &[T]) -> Result<Never> {
        match self.never {}
    }
    fn storage_alloc<T: Element>(&self, _: usize) -> Result<Never> {
        match self.never {}
    }
    fn storage_to_vec<T: Element>(&self, s: &Never, _: usize) -> Result<Vec<T>> {
        match *s {}
    }
    fn synchronize(&self) -> Result<()> {
        match self.never {}
    }
}

impl<T: Element> Kernels<T> for Wgpu {
    fn patch_embed(&self, _: PatchEmbedArgs<'_, T, Self>) -> Result<()> {
        match self.never {}
    }
    fn linear(&self, _: LinearArgs<'_, T, Self>) -> Result<()> {
        match self.never {}
    }
    fn layer_norm(&self, _: LayerNormArgs<'_, T, Self>) -> Result<()> {
        match self.never {}
    }
    fn attention(&self, _: AttentionArgs<'_, T, Self>) -> Result<()> {
        match self.never {}
    }
    fn memory_read(&self, _: MemoryReadArgs<'_, T, Self>) -> Result<()> {
        match self.never {}
    }
    fn memory_write(&self, _: MemoryWriteArgs<'_, T, Self>) -> Result<()> {
        match self.never {}
    }
    fn add(&self, _: AddArgs<'_, T, Self>) -> Result<()> {
        match self.never {}
    }
    fn cast<U: Element>(&self, _: CastArgs<'_, T, U, Self>) -> Result<()> {
        match self.never {}
    }
}
