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
#[rustfmt::skip]
mod manifest;
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
crate::ops::kernels_from_op_files!(Cuda);
