//! The SigLIP vision model layer (see shared/MODEL.md): config, loader, forward pass, memory bank.
//!
//! [`VisionModel::load`] reads a Hugging Face model folder (`config.json` +
//! `model.safetensors`) onto any device as `f32` or `bf16`;
//! [`VisionModel::forward`] runs the tower once per segment, carrying a
//! [`MemoryBank`] from segment to segment when the model has memory-gated
//! attention.

mod config;
mod loader;
mod vision;

pub use config::VisionConfig;
pub use vision::{MemoryBank, VisionModel, VisionOutput};
