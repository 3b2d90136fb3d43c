//! Elementwise ops: add and element-type casts.

use super::Kernels;
use super::{check_device, prepare_out};
use crate::buffer::DeviceBuffer;
use crate::device::Device;
use crate::element::Element;
use crate::error::{Error, Result};

/// Arguments of [`Kernels::add`]: `out = a + b` elementwise.
pub struct AddArgs<'a, T: Element, D: Device> {
    pub(crate) a: &'a D::Storage<T>,
    pub(crate) b: &'a D::Storage<T>,
    pub(crate) out: &'a mut D::Storage<T>,
    pub(crate) len: usize,
}

/// Arguments of [`Kernels::cast`]: `out[i] = U::from_f32(x[i].to_f32())`.
pub struct CastArgs<'a, T: Element, U: Element, D: Device> {
    pub(crate) x: &'a D::Storage<T>,
    pub(crate) out: &'a mut D::Storage<U>,
    pub(crate) len: usize,
}

/// `a + b`, same shapes.
pub fn add<T: Element, D: Kernels<T>>(
    a: &DeviceBuffer<T, D>,
    b: &DeviceBuffer<T, D>,
) -> Result<DeviceBuffer<T, D>> {
    let mut out = DeviceBuffer::uninit(a.device(), a.shape())?;
    add_into(a, b, &mut out)?;
    Ok(out)
}

/// [`add`] writing into an existing `out`.
pub fn add_into<T: Element, D: Kernels<T>>(
    a: &DeviceBuffer<T, D>,
    b: &DeviceBuffer<T, D>,
    out: &mut DeviceBuffer<T, D>,
) -> Result<()> {
    const OP: &str = "add";
    let dev = a.device().clone();
    check_device(OP, &dev, "b", b)?;
    if a.shape() != b.shape() {
        return Err(Error::ShapeMismatch {
            op: OP,
            a: "a".into(),
            a_shape: a.shape().to_vec(),
            b: "b".into(),
            b_shape: b.shape().to_vec(),
        });
    }
    prepare_out(OP, &dev, out, a.shape())?;
    if out.is_empty() {
        return Ok(());
    }
    let len = out.len();
    dev.add(AddArgs {
        a: a.storage(),
        b: b.storage(),
        out: out.storage_mut(),
        len,
    })
}

/// Convert the element type on the buffer's own device (see [`DeviceBuffer::cast`]).
pub fn cast<T: Element, U: Element, D: Kernels<T> + Kernels<U>>(
    x: &DeviceBuffer<T, D>,
) -> Result<DeviceBuffer<U, D>> {
    let mut out = DeviceBuffer::uninit(x.device(), x.shape())?;
    cast_into(x, &mut out)?;
    Ok(out)
}

/// [`cast`] writing into an existing `out`.
pub fn cast_into<T: Element, U: Element, D: Kernels<T> + Kernels<U>>(
    x: &DeviceBuffer<T, D>,
    out: &mut DeviceBuffer<U, D>,
) -> Result<()> {
    const OP: &str = "cast";
    let dev = x.device().clone();
    prepare_out(OP, &dev, out, x.shape())?;
    if out.is_empty() {
        return Ok(());
    }
    let len = out.len();
    <D as Kernels<T>>::cast::<U>(
        &dev,
        CastArgs {
            x: x.storage(),
            out: out.storage_mut(),
            len,
        },
    )
}
