//! Normalisation over the last axis: layer norm ([`layer_norm`]) and its RMS
//! variant ([`rms_norm`]), one op with a [`NormKind`] for every backend.

use super::Kernels;
use super::{check_device, expect_shape, prepare_out, rows_cols};
use crate::buffer::DeviceBuffer;
use crate::device::Device;
use crate::element::Element;
use crate::error::{Error, Result};

/// Which normalisation a row gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `(x − μ)/√(σ² + eps)·w + b` (biased variance).
    LayerNorm,
    /// `x/√(mean(x²) + eps)·w`: no mean subtracted, no bias.
    RmsNorm,
}

/// Sizes of a normalisation over the last axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerNormDims {
    /// Rows normalised, each on its own.
    pub rows: usize,
    /// The width of a row (the normalised axis).
    pub cols: usize,
    /// Added to the variance (mean square) before the square root.
    pub eps: f32,
    /// Layer norm or RMS norm.
    pub kind: NormKind,
}

/// Arguments of [`Kernels::layer_norm`]: per row, the [`NormKind`]'s formula,
/// statistics in f32. `bias` is `Some` exactly for [`NormKind::LayerNorm`].
pub struct LayerNormArgs<'a, T: Element, D: Device> {
    pub(crate) x: &'a D::Storage<T>,
    pub(crate) weight: &'a D::Storage<T>,
    pub(crate) bias: Option<&'a D::Storage<T>>,
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
    norm_into(NormKind::LayerNorm, x, weight, Some(bias), eps, out)
}

/// RMS norm over the last axis: `x/√(mean(x²) + eps)·w`, x `[.., C]`, weight `[C]`.
pub fn rms_norm<T: Element, D: Kernels<T>>(
    x: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    eps: f32,
) -> Result<DeviceBuffer<T, D>> {
    let mut out = DeviceBuffer::uninit(x.device(), x.shape())?;
    rms_norm_into(x, weight, eps, &mut out)?;
    Ok(out)
}

/// [`rms_norm`] writing into an existing `out`.
pub fn rms_norm_into<T: Element, D: Kernels<T>>(
    x: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    eps: f32,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    norm_into(NormKind::RmsNorm, x, weight, None, eps, out)
}

/// The checks and the launch shared by both kinds.
fn norm_into<T: Element, D: Kernels<T>>(
    kind: NormKind,
    x: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    bias: Option<&DeviceBuffer<T, D>>,
    eps: f32,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    let op = match kind {
        NormKind::LayerNorm => "layer_norm",
        NormKind::RmsNorm => "rms_norm",
    };
    let dev = x.device().clone();
    let (rows, cols) = rows_cols(op, "x", x.shape())?;
    for (name, b) in [("weight", Some(weight)), ("bias", bias)] {
        if let Some(b) = b {
            check_device(op, &dev, name, b)?;
            expect_shape(op, name, b, &[cols])?;
        }
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::Input {
            tensor: "eps".into(),
            msg: format!("{op} eps must be finite and ≥ 0, got {eps}"),
        });
    }
    prepare_out(op, &dev, out, x.shape())?;
    if out.is_empty() {
        return Ok(());
    }
    dev.layer_norm(LayerNormArgs {
        x: x.storage(),
        weight: weight.storage(),
        bias: bias.map(|b| b.storage()),
        out: out.storage_mut(),
        dims: LayerNormDims {
            rows,
            cols,
            eps,
            kind,
        },
    })
}
