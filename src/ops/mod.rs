//! The op surface. Each op has a public front function (`linear`,
//! `linear_into`, …) that checks shapes and device identity once, and a
//! method of [`Kernels`] that each backend implements (`src/cpu`, `src/cuda`,
//! `src/wgpu`). Backends receive an argument struct that only this module can
//! build, so they never see an unchecked shape.
//!
//! Layout conventions (row-major, last axis fastest):
//! - activations `[.., D]`; `Linear(x) = x Wᵀ + b` with `W` stored `[out, in]`;
//! - attention heads are contiguous `hd`-wide slices of the `D` axis;
//! - the memory bank of one layer is `[B, E, M, D]`.
//!
//! One file per op family: its sizes, its argument struct, its front functions.
//! Each backend has the same files (`src/cpu/linear.rs`, `src/wgpu/linear.rs`,
//! `src/cuda/linear.rs`) next to its kernels (`shaders/linear.wgsl`,
//! `kernels/linear.ptx`), and the op suite in `tests/it/common/suite.rs` checks all
//! three against one f64 reference.

mod attention;
mod elementwise;
mod layer_norm;
mod linear;
mod memory;
mod patch_embed;

pub use attention::*;
pub use elementwise::*;
pub use layer_norm::*;
pub use linear::*;
pub use memory::*;
pub use patch_embed::*;

use crate::buffer::DeviceBuffer;
use crate::device::Device;
use crate::element::Element;
use crate::error::{Error, Result};

/// The kernels a backend provides for element type `T`. Implemented by `Cpu`,
/// `Cuda` and `Wgpu` for `f32` and `bf16`; the model layer is written once against
/// this trait. Call the front functions of [`crate::ops`] rather than these methods:
/// the argument structs can only be built there, after every check.
pub trait Kernels<T: Element>: Device {
    /// Patchify, GEMM, bias and position embedding ([`patch_embed`]).
    fn patch_embed(&self, args: PatchEmbedArgs<'_, T, Self>) -> Result<()>;
    /// `residual + act(x Wᵀ + bias)` ([`linear_into`]).
    fn linear(&self, args: LinearArgs<'_, T, Self>) -> Result<()>;
    /// Layer norm or RMS norm over the last axis ([`layer_norm_into`]).
    fn layer_norm(&self, args: LayerNormArgs<'_, T, Self>) -> Result<()>;
    /// Fused multi-head attention ([`attention_into`] and its packed forms).
    fn attention(&self, args: AttentionArgs<'_, T, Self>) -> Result<()>;
    /// The memory bank's gate and read ([`memory_read_into`]).
    fn memory_read(&self, args: MemoryReadArgs<'_, T, Self>) -> Result<()>;
    /// The gated write-back into the bank and the residual ([`memory_write_into`]).
    fn memory_write(&self, args: MemoryWriteArgs<'_, T, Self>) -> Result<()>;
    /// Elementwise sum ([`add_into`]).
    fn add(&self, args: AddArgs<'_, T, Self>) -> Result<()>;
    /// Element type conversion ([`cast_into`]).
    fn cast<U: Element>(&self, args: CastArgs<'_, T, U, Self>) -> Result<()>
    where
        Self: Kernels<U>;
}

/// `impl<T: Element> Kernels<T> for $dev`, each method calling the function of the
/// same name in the backend's file of the same op (`linear::linear(self, a)` in
/// `src/<backend>/linear.rs`). Every backend lays out its ops so; a new op is one
/// line here and one file per backend.
macro_rules! kernels_from_op_files {
    ($dev:ty) => {
        impl<T: $crate::element::Element> $crate::ops::Kernels<T> for $dev {
            fn patch_embed(
                &self,
                a: $crate::ops::PatchEmbedArgs<'_, T, Self>,
            ) -> $crate::error::Result<()> {
                patch_embed::patch_embed(self, a)
            }
            fn linear(&self, a: $crate::ops::LinearArgs<'_, T, Self>) -> $crate::error::Result<()> {
                linear::linear(self, a)
            }
            fn layer_norm(
                &self,
                a: $crate::ops::LayerNormArgs<'_, T, Self>,
            ) -> $crate::error::Result<()> {
                layer_norm::layer_norm(self, a)
            }
            fn attention(
                &self,
                a: $crate::ops::AttentionArgs<'_, T, Self>,
            ) -> $crate::error::Result<()> {
                attention::attention(self, a)
            }
            fn memory_read(
                &self,
                a: $crate::ops::MemoryReadArgs<'_, T, Self>,
            ) -> $crate::error::Result<()> {
                memory::memory_read(self, a)
            }
            fn memory_write(
                &self,
                a: $crate::ops::MemoryWriteArgs<'_, T, Self>,
            ) -> $crate::error::Result<()> {
                memory::memory_write(self, a)
            }
            fn add(&self, a: $crate::ops::AddArgs<'_, T, Self>) -> $crate::error::Result<()> {
                elementwise::add(self, a)
            }
            fn cast<U: $crate::element::Element>(
                &self,
                a: $crate::ops::CastArgs<'_, T, U, Self>,
            ) -> $crate::error::Result<()> {
                elementwise::cast(self, a)
            }
        }
    };
}
pub(crate) use kernels_from_op_files;

// ---------------------------------------------------------------------------
// Checks shared by every front function.

/// The largest element count or index the GPU kernels take: they index with 32-bit
/// integers (signed arithmetic in places), so 2³¹ − 1.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))]
pub(crate) const MAX_INDEX: usize = i32::MAX as usize;

/// `v` as the u32 a kernel indexes with, or an error naming `what` when it is
/// above [`MAX_INDEX`]. The one 32-bit check of every GPU launch.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))]
pub(crate) fn index32(op: &'static str, what: &str, v: usize) -> Result<u32> {
    if v <= MAX_INDEX {
        Ok(v as u32)
    } else {
        Err(Error::Unsupported {
            op,
            msg: format!(
                "{what} = {v} exceeds the GPU kernels' 32-bit index range (at most {MAX_INDEX})"
            ),
        })
    }
}

pub(crate) fn check_device<T: Element, D: Device>(
    op: &'static str,
    device: &D,
    name: &str,
    buf: &DeviceBuffer<T, D>,
) -> Result<()> {
    if device.same_device(buf.device()) {
        Ok(())
    } else {
        Err(Error::DeviceMismatch {
            op,
            tensor: name.to_string(),
            found: buf.device().describe(),
            expected: device.describe(),
        })
    }
}

pub(crate) fn shape_err(op: &'static str, tensor: &str, got: &[usize], expected: String) -> Error {
    Error::Shape {
        op,
        tensor: tensor.to_string(),
        got: got.to_vec(),
        expected,
    }
}

pub(crate) fn expect_shape<T: Element, D: Device>(
    op: &'static str,
    name: &str,
    buf: &DeviceBuffer<T, D>,
    want: &[usize],
) -> Result<()> {
    if buf.shape() == want {
        Ok(())
    } else {
        Err(shape_err(op, name, buf.shape(), format!("{want:?}")))
    }
}

/// Split `[.., last]` into (rows, last); rank ≥ 1.
pub(crate) fn rows_cols(op: &'static str, name: &str, shape: &[usize]) -> Result<(usize, usize)> {
    match shape.split_last() {
        Some((&last, lead)) => Ok((lead.iter().product(), last)),
        None => Err(shape_err(op, name, shape, "rank ≥ 1".into())),
    }
}

/// Check a caller's `out` buffer: on the op's device, with exactly `shape`.
pub(crate) fn prepare_out<T: Element, D: Device>(
    op: &'static str,
    device: &D,
    out: &DeviceBuffer<T, D>,
    shape: &[usize],
) -> Result<()> {
    prepare_named_out(op, device, "out", out, shape)
}

/// [`prepare_out`] for an op with several outputs, each named.
pub(crate) fn prepare_named_out<T: Element, D: Device>(
    op: &'static str,
    device: &D,
    name: &str,
    out: &DeviceBuffer<T, D>,
    shape: &[usize],
) -> Result<()> {
    check_device(op, device, name, out)?;
    expect_shape(op, name, out, shape)
}
