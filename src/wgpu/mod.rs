//! The wgpu backend: every op a hand-written WGSL compute shader (`shaders/`).
//! With the `wgpu` feature off, `stub.rs` provides the same types, unconstructible.

#[doc(hidden)]
pub mod shaders;

mod stub;
pub use stub::{Wgpu, WgpuAdapterInfo};
