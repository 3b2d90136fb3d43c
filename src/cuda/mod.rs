//! The CUDA backend: hand-written PTX (`kernels/*.ptx`) driven through cudarc's
//! driver API. With the `cuda` feature off, `stub.rs` provides a `Cuda` type of
//! which no value can be made; the public API is identical.

#[cfg(feature = "cuda")]
mod backend;
#[cfg(feature = "cuda")]
pub use backend::Cuda;

#[cfg(not(feature = "cuda"))]
mod stub;
#[cfg(not(feature = "cuda"))]
pub use stub::Cuda;
