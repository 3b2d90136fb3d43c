//! The SigLIP vision model layer (see shared/MODEL.md): config, loader, forward pass, memory bank.
//!
//! [`VisionModel::load`] reads a Hugging Face model folder (`config.json` +
//! `model.safetensors`) onto any device as `f32` or `bf16`;
//! [`VisionModel::forward`] runs the tower once per segment, carrying a
//! [`MemoryBank`] from segment to segment when the model has memory-gated
//! attention.

mod config;
mod engine;
mod files;
#[cfg(feature = "hub")]
pub mod hub;
mod loader;
pub mod naflex;
mod vision;
mod weights;

pub use config::{Architecture, VisionConfig};
pub use files::{hf_home, hub_cache_dir, ConfigFiles, ModelFiles, WeightFiles};
/// Check a safetensors file's bytes (header length, JSON, dtypes, shapes, offsets:
/// in range, no overlap, no gap, no overflow) before handing them to the
/// `safetensors` crate; the error names `file` and the tensor. The loader runs it
/// on every checkpoint; use it for any other safetensors input (e.g. pixel_values).
pub use loader::validate_header as check_safetensors;
pub use loader::MAX_HEADER_BYTES as MAX_SAFETENSORS_HEADER;
pub use naflex::{ImagePatches, PackedBatch, PackedOutput};
pub use vision::{MemoryBank, VisionModel, VisionOutput};
