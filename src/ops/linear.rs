//! Linear layers: `residual + act(x Wᵀ + bias)`, the epilogue fused.

use super::Kernels;
use super::{check_device, expect_shape, prepare_out, rows_cols, shape_err};
use crate::buffer::DeviceBuffer;
use crate::device::Device;
use crate::element::Element;
use crate::error::{Error, Result};

/// Fused activation of a linear layer's epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// Identity.
    #[default]
    None,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (PyTorch's `gelu(approximate="tanh")`).
    GeluTanh,
}

/// Sizes of a linear layer: `rows × in_features` times `[out_features, in_features]ᵀ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearDims {
    /// M, the rows of x and out.
    pub rows: usize,
    /// K, the width of x (and of W's rows).
    pub in_features: usize,
    /// N, the width of out (W's rows).
    pub out_features: usize,
    /// Applied after the bias, before the residual.
    pub activation: Activation,
}

/// Arguments of [`Kernels::linear`]: `out = residual + act(x Wᵀ + bias)`, bias and
/// residual optional.
pub struct LinearArgs<'a, T: Element, D: Device> {
    pub(crate) x: &'a D::Storage<T>,
    pub(crate) weight: &'a D::Storage<T>,
    pub(crate) bias: Option<&'a D::Storage<T>>,
    pub(crate) residual: Option<&'a D::Storage<T>>,
    pub(crate) out: &'a mut D::Storage<T>,
    pub(crate) dims: LinearDims,
}

/// `residual + act(x Wᵀ + bias)`: x `[.., K]`, weight `[N, K]`, bias `[N]`,
/// residual `[.., N]` → `[.., N]`.
pub fn linear<T: Element, D: Kernels<T>>(
    x: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    bias: Option<&DeviceBuffer<T, D>>,
    activation: Activation,
    residual: Option<&DeviceBuffer<T, D>>,
) -> Result<DeviceBuffer<T, D>> {
    // Every operand is checked before `out` is sized from them.
    let shape = linear_checked(x, weight, bias, residual)?;
    let mut out = DeviceBuffer::uninit(x.device(), &shape)?;
    linear_into(x, weight, bias, activation, residual, &mut out)?;
    Ok(out)
}

fn linear_out_shape<T: Element, D: Device>(
    x: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
) -> Result<Vec<usize>> {
    const OP: &str = "linear";
    let (_, k) = rows_cols(OP, "x", x.shape())?;
    let &[n, wk] = weight.shape() else {
        return Err(shape_err(OP, "weight", weight.shape(), "[out, in]".into()));
    };
    if wk != k {
        return Err(Error::ShapeMismatch {
            op: OP,
            a: "x".into(),
            a_shape: x.shape().to_vec(),
            b: "weight".into(),
            b_shape: weight.shape().to_vec(),
        });
    }
    let mut shape = x.shape().to_vec();
    match shape.last_mut() {
        Some(last) => *last = n,
        None => return Err(shape_err(OP, "x", x.shape(), "rank ≥ 1".into())),
    }
    Ok(shape)
}

/// The shape of `out`, once every operand's shape and device is checked.
fn linear_checked<T: Element, D: Device>(
    x: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    bias: Option<&DeviceBuffer<T, D>>,
    residual: Option<&DeviceBuffer<T, D>>,
) -> Result<Vec<usize>> {
    const OP: &str = "linear";
    let dev = x.device();
    let shape = linear_out_shape(x, weight)?;
    check_device(OP, dev, "weight", weight)?;
    if let Some(b) = bias {
        check_device(OP, dev, "bias", b)?;
        expect_shape(OP, "bias", b, &[weight.shape()[0]])?;
    }
    if let Some(r) = residual {
        check_device(OP, dev, "residual", r)?;
        expect_shape(OP, "residual", r, &shape)?;
    }
    Ok(shape)
}

/// [`linear`] writing into an existing `out`.
pub fn linear_into<T: Element, D: Kernels<T>>(
    x: &DeviceBuffer<T, D>,
    weight: &DeviceBuffer<T, D>,
    bias: Option<&DeviceBuffer<T, D>>,
    activation: Activation,
    residual: Option<&DeviceBuffer<T, D>>,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    const OP: &str = "linear";
    let dev = x.device().clone();
    let shape = linear_checked(x, weight, bias, residual)?;
    let (rows, in_features) = rows_cols(OP, "x", x.shape())?;
    let out_features = weight.shape()[0];
    prepare_out(OP, &dev, out, &shape)?;
    if out.is_empty() {
        return Ok(());
    }
    dev.linear(LinearArgs {
        x: x.storage(),
        weight: weight.storage(),
        bias: bias.map(|b| b.storage()),
        residual: residual.map(|r| r.storage()),
        out: out.storage_mut(),
        dims: LinearDims {
            rows,
            in_features,
            out_features,
            activation,
        },
    })
}
