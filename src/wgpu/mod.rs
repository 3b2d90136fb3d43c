//! The wgpu backend (see `stub.rs` when the feature is off).

mod stub;
pub use stub::{Wgpu, WgpuAdapterInfo};
