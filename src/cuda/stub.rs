//! `Cuda` when the `cuda` feature is off: the type exists (so typed code and the
//! compile-fail proofs build everywhere) but no value can be made.

use crate::device::{sealed, Device, DeviceKind, Never};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::*;

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
}

impl sealed::Sealed for Cuda {}

impl Device for Cuda {
    type Storage<T: Element> = Never;
    const KIND: DeviceKind = DeviceKind::Cuda;
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

impl<T: Element> Kernels<T> for Cuda {
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
