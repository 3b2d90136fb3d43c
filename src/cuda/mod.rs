//! The CUDA backend: hand-written PTX (`kernels/*.ptx`) driven through cudarc's
//! driver API. One file per op beside the device (`device.rs`) and the module
//! and launch machinery (`launch.rs`). With the `cuda` feature off, `stub.rs`
//! provides a `Cuda` type of which no value can be made; the public API is
//! identical.

#[cfg(feature = "cuda")]
mod attention;
#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
mod elementwise;
#[cfg(feature = "cuda")]
mod launch;
#[cfg(feature = "cuda")]
mod layer_norm;
#[cfg(feature = "cuda")]
mod linear;
#[cfg(feature = "cuda")]
mod memory;
#[cfg(feature = "cuda")]
mod patch_embed;

#[cfg(feature = "cuda")]
pub use device::Cuda;

#[cfg(not(feature = "cuda"))]
mod stub;
#[cfg(not(feature = "cuda"))]
pub use stub::Cuda;

#[cfg(feature = "cuda")]
mod kernels {
    use super::*;
    use crate::element::Element;
    use crate::error::Result;
    use crate::ops::*;

    impl<T: Element> Kernels<T> for Cuda {
        fn patch_embed(&self, a: PatchEmbedArgs<'_, T, Self>) -> Result<()> {
            patch_embed::patch_embed(self, a)
        }
        fn linear(&self, a: LinearArgs<'_, T, Self>) -> Result<()> {
            linear::linear(self, a)
        }
        fn layer_norm(&self, a: LayerNormArgs<'_, T, Self>) -> Result<()> {
            layer_norm::layer_norm(self, a)
        }
        fn attention(&self, a: AttentionArgs<'_, T, Self>) -> Result<()> {
            attention::attention(self, a)
        }
        fn memory_read(&self, a: MemoryReadArgs<'_, T, Self>) -> Result<()> {
            memory::memory_read(self, a)
        }
        fn memory_write(&self, a: MemoryWriteArgs<'_, T, Self>) -> Result<()> {
            memory::memory_write(self, a)
        }
        fn add(&self, a: AddArgs<'_, T, Self>) -> Result<()> {
            elementwise::add(self, a)
        }
        fn cast<U: Element>(&self, a: CastArgs<'_, T, U, Self>) -> Result<()> {
            elementwise::cast(self, a)
        }
    }
}
