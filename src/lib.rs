//! # tessera
//!
//! A typed compute backend for SigLIP vision-model inference, with hand-written
//! CUDA PTX kernels, WGSL compute shaders and a multithreaded CPU backend.
//!
//! Every buffer is a [`DeviceBuffer<T, D>`]: `T` is the element type (`f32` or
//! `half::bf16`), `D` the device ([`Cpu`], [`Cuda`], [`Wgpu`]). Mixing devices or
//! element types does not compile; moving ([`DeviceBuffer::to`]) and converting
//! ([`DeviceBuffer::cast`]) are explicit.
//!
//! ```compile_fail
//! use tessera::{Cpu, Cuda, DeviceBuffer, ops};
//! fn mix(w: &DeviceBuffer<f32, Cpu>, x: &DeviceBuffer<f32, Cuda>) {
//!     // A CPU weight with a CUDA input: a type error, not a runtime crash.
//!     let _ = ops::linear(x, w, None, ops::Activation::None, None);
//! }
//! ```
//!
//! ```compile_fail
//! use half::bf16;
//! use tessera::{Cpu, DeviceBuffer, ops};
//! fn mix(w: &DeviceBuffer<bf16, Cpu>, x: &DeviceBuffer<f32, Cpu>) {
//!     // f32 activations with bf16 weights: a type error; call `x.cast::<bf16>()`.
//!     let _ = ops::linear(x, w, None, ops::Activation::None, None);
//! }
//! ```
//!
//! ## Cargo features
//!
//! - `cuda` (default): the CUDA backend (the driver is loaded at run time; without
//!   this feature [`Cuda`] is an uninhabited stub and the crate still builds);
//! - `wgpu` (default): the wgpu backend, likewise;
//! - `libjpeg` (default): JPEG decoded by libjpeg-turbo's C code (mozjpeg's
//!   build of it; needs a C compiler, not nasm), byte for byte what Pillow gives;
//!   without it, zune-jpeg (pure Rust, up to 4 levels from Pillow's bytes);
//! - `hub` (off): `model::ModelFiles::locate_or_download` (and
//!   `model::ConfigFiles::locate_or_download` then `weights_or_download`, to check
//!   a config before the weights come), which downloads a model from the Hugging
//!   Face hub into the local cache (the `tessera` command turns it on). Without it
//!   nothing in tessera touches the network.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![warn(missing_docs)]

pub mod buffer;
pub mod cpu;
pub mod cuda;
pub mod device;
pub mod element;
pub mod error;
pub mod model;
pub mod ops;
mod orientation;
pub mod preprocess;
pub mod proofs;
pub mod random;
#[cfg(not(all(feature = "cuda", feature = "wgpu")))]
mod stub;
pub mod wgpu;

pub use buffer::DeviceBuffer;
pub use cpu::Cpu;
pub use cuda::Cuda;
pub use device::{Device, DeviceKind};
pub use element::{DType, Element};
pub use error::{Error, Result};
pub use half::bf16;
pub use model::{MemoryBank, VisionConfig, VisionModel, VisionOutput};
pub use ops::Kernels;
pub use wgpu::{Wgpu, WgpuAdapterInfo};
