//! Layer norm over the last axis.

use super::Kernels;
use super::{check_device, expect_shape, prepare_out, rows_cols};
use crate::buffer::DeviceBuffer;
use crate::device::Device;
use crate::element::Element;
use crate::error::{Error, Result};

/// Sizes of a layer norm over the last axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerNormDims {
    pub rows: usize,
    pub cols: usize,
    pub eps: f32,
}

/// Arguments of [`Kernels::layer_norm`]: per row, `(x − μ)/√(σ² + eps)·w + b`,
/// biased variance, statistics in f32.
pub struct LayerNormArgs<'a, T: Element, D: Device> {
    pub(crate) x: &'a D::Storage<T>,
    pub(crate) weight: &'a D::Storage<T>,
    pub(crate) bias: &'a D::Storage<T>,
    pub(crate) out: &'a mut D::Storage<T>,
    pub(crate) dims: LayerNormDims,
}

/// Layer norm over the last axis: x `[.., C]`, weight and bias `[C]`.
pub fn layer_norm<T: Element, D: Kernels<T>>(
    x: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    bias: &DeviceBuffer<T, D>,
    eps: f32,
) -> Result<DeviceBuffer<T, D>> {
    let mut out = DeviceBuffer::uninit(x.device(), x.shape())?;
    layer_norm_into(x, weight, bias, eps, &mut out)?;
    Ok(out)
}

/// [`layer_norm`] writing into an existing `out`.
pub fn layer_norm_into<T: Element, D: Kernels<T>>(
    x: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    bias: &DeviceBuffer<T, D>,
    eps: f32,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    const OP: &str = "layer_norm";
    let dev = x.device().clone();
    let (rows, cols) = rows_cols(OP, "x", x.shape())?;
    for (name, b) in [("weight", weight), ("bias", bias)] {
        check_device(OP, &dev, name, b)?;
        expect_shape(OP, name, b, &[cols])?;
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::Input {
            tensor: "eps".into(),
            msg: format!("layer norm eps must be finite and ≥ 0, got {eps}"),
        });
    }
    prepare_out(OP, &dev, out, x.shape())?;
    if out.is_empty() {
        return Ok(());
    }
    dev.layer_norm(LayerNormArgs {
        x: x.storage(),
        weight: weight.storage(),
        bias: bias.storage(),
        out: out.storage_mut(),
        dims: LayerNormDims { rows, cols, eps },
    })
}
