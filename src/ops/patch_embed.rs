//! Patch embedding: patchify + GEMM + bias + position embedding, fused.

use super::Kernels;
use super::{check_device, expect_shape, prepare_out, shape_err};
use crate::buffer::DeviceBuffer;
use crate::device::Device;
use crate::element::Element;
use crate::error::Result;

/// Sizes of a patch embedding: pixels `[B, C, I, I]` → tokens `[B, N, D]`,
/// N = ⌊I/P⌋² (pixels past ⌊I/P⌋·P on either side are not read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchEmbedDims {
    /// B, the images.
    pub batch: usize,
    /// C, channels per pixel.
    pub channels: usize,
    /// I, the side of an image in pixels.
    pub image: usize,
    /// P, the side of a patch in pixels.
    pub patch: usize,
    /// D, the width of a token.
    pub hidden: usize,
}

impl PatchEmbedDims {
    /// Patches per image side, ⌊I/P⌋.
    pub fn grid(&self) -> usize {
        self.image / self.patch
    }
    /// Tokens per image, N = ⌊I/P⌋².
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid()
    }
    /// Length of one flattened patch, C·P·P (the GEMM's K).
    pub fn patch_len(&self) -> usize {
        self.channels * self.patch * self.patch
    }
}

/// Arguments of [`Kernels::patch_embed`]: `out[b,n,d] = bias[d] + pos[n,d] + Σ_k
/// patch[b,n,k]·weight[d,k]`, with k = c·P·P + py·P + px and patches in row-major
/// grid order.
pub struct PatchEmbedArgs<'a, T: Element, D: Device> {
    pub(crate) pixels: &'a D::Storage<T>,
    pub(crate) weight: &'a D::Storage<T>,
    pub(crate) bias: &'a D::Storage<T>,
    pub(crate) position: &'a D::Storage<T>,
    pub(crate) out: &'a mut D::Storage<T>,
    pub(crate) dims: PatchEmbedDims,
}

/// Patch embedding fused with bias and position embedding: pixels `[B, C, I, I]`,
/// weight `[D, C, P, P]` (or flattened `[D, C·P·P]`), bias `[D]`, position `[N, D]`
/// → `[B, N, D]`, N = ⌊I/P⌋². As PyTorch's stride-P Conv2d, the last I mod P
/// rows and columns of each image are not used.
pub fn patch_embed<T: Element, D: Kernels<T>>(
    pixels: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    bias: &DeviceBuffer<T, D>,
    position: &DeviceBuffer<T, D>,
    patch: usize,
) -> Result<DeviceBuffer<T, D>> {
    // Every operand is checked before `out` is sized from them.
    let dims = patch_embed_checked(pixels, weight, bias, position, patch)?;
    let mut out = DeviceBuffer::uninit(pixels.device(), &[dims.batch, dims.tokens(), dims.hidden])?;
    patch_embed_into(pixels, weight, bias, position, patch, &mut out)?;
    Ok(out)
}

fn patch_embed_dims<T: Element, D: Device>(
    pixels: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    patch: usize,
) -> Result<PatchEmbedDims> {
    const OP: &str = "patch_embed";
    let &[batch, channels, height, width] = pixels.shape() else {
        return Err(shape_err(
            OP,
            "pixels",
            pixels.shape(),
            "[B, C, I, I]".into(),
        ));
    };
    // The stride-P convolution covers the first ⌊I/P⌋·P pixels of each side;
    // it needs at least one patch.
    if height != width || patch == 0 || height < patch {
        return Err(shape_err(
            OP,
            "pixels",
            pixels.shape(),
            format!("square images at least as large as the patch size {patch}"),
        ));
    }
    let hidden = weight.shape().first().copied().unwrap_or(0);
    // C·P·P and B·N·D (N = ⌊I/P⌋²) must be countable before anything is sized
    // from them (a zero-batch buffer may declare any sides).
    let grid = height / patch;
    let countable = channels
        .checked_mul(patch)
        .and_then(|x| x.checked_mul(patch))
        .and(grid.checked_mul(grid))
        .and_then(|n| n.checked_mul(hidden)?.checked_mul(batch));
    if countable.is_none() {
        return Err(shape_err(
            OP,
            "pixels",
            pixels.shape(),
            format!("patches of {patch} px whose counts C·P·P and B·N·D fit in memory"),
        ));
    }
    let dims = PatchEmbedDims {
        batch,
        channels,
        image: height,
        patch,
        hidden,
    };
    let conv = [hidden, channels, patch, patch];
    let flat = [hidden, dims.patch_len()];
    if weight.shape() != conv && weight.shape() != flat {
        return Err(shape_err(
            OP,
            "weight",
            weight.shape(),
            format!("{conv:?} or {flat:?}"),
        ));
    }
    Ok(dims)
}

/// The dims, once every operand's shape and device is checked.
fn patch_embed_checked<T: Element, D: Device>(
    pixels: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    bias: &DeviceBuffer<T, D>,
    position: &DeviceBuffer<T, D>,
    patch: usize,
) -> Result<PatchEmbedDims> {
    const OP: &str = "patch_embed";
    let dims = patch_embed_dims(pixels, weight, patch)?;
    for (name, b) in [("weight", weight), ("bias", bias), ("position", position)] {
        check_device(OP, pixels.device(), name, b)?;
    }
    expect_shape(OP, "bias", bias, &[dims.hidden])?;
    expect_shape(OP, "position", position, &[dims.tokens(), dims.hidden])?;
    Ok(dims)
}

/// [`patch_embed`] writing into an existing `out` `[B, N, D]`.
pub fn patch_embed_into<T: Element, D: Kernels<T>>(
    pixels: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    bias: &DeviceBuffer<T, D>,
    position: &DeviceBuffer<T, D>,
    patch: usize,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    const OP: &str = "patch_embed";
    let dev = pixels.device().clone();
    let dims = patch_embed_checked(pixels, weight, bias, position, patch)?;
    prepare_out(OP, &dev, out, &[dims.batch, dims.tokens(), dims.hidden])?;
    if out.is_empty() {
        return Ok(());
    }
    dev.patch_embed(PatchEmbedArgs {
        pixels: pixels.storage(),
        weight: weight.storage(),
        bias: bias.storage(),
        position: position.storage(),
        out: out.storage_mut(),
        dims,
    })
}
