//! The wgpu backend: every op a hand-written WGSL compute shader (`shaders/`),
//! run through wgpu on Vulkan, Metal or DX12. With the `wgpu` feature off,
//! `stub.rs` provides the same public types, unconstructible.

#[doc(hidden)]
pub mod shaders;

#[cfg(feature = "wgpu")]
mod backend;
#[cfg(feature = "wgpu")]
mod kernels;
#[cfg(feature = "wgpu")]
pub use backend::{Wgpu, WgpuAdapterInfo};

#[cfg(not(feature = "wgpu"))]
mod stub;
#[cfg(not(feature = "wgpu"))]
pub use stub::{Wgpu, WgpuAdapterInfo};
