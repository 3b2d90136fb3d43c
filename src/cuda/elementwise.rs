//! Elementwise ops on CUDA: kernels/add.ptx and kernels/cast.ptx (grid-stride
//! loops); a same-type cast is a device copy.

use super::device::{cuda_err, guarded};
use super::launch::{grid_stride_blocks, Launcher};
use super::manifest as m;
use super::Cuda;
use crate::element::{DType, Element};
use crate::error::{Error, Result};
use crate::ops::{index32, AddArgs, CastArgs};

pub(super) fn add<T: Element>(dev: &Cuda, a: AddArgs<'_, T, Cuda>) -> Result<()> {
    launch_add(dev, T::DTYPE, &a.a.buf, &a.b.buf, &mut a.out.buf, a.len)
}

/// `out = a + b` over `len` elements of type `dtype` (checked by the op's
/// front), launched on `dev`.
pub(super) fn launch_add<L: Launcher>(
    dev: &L,
    dtype: DType,
    a: &L::Buf,
    b: &L::Buf,
    out: &mut L::Buf,
    len: usize,
) -> Result<()> {
    const OP: &str = "add";
    let n = index32(OP, "len", len)?;
    let spec = match dtype {
        DType::F32 => &m::add_f32::SPEC,
        DType::BF16 => &m::add_bf16::SPEC,
    };
    let grid = (grid_stride_blocks(len, spec.threads), 1, 1);
    let args = m::Elementwise2Args { a, b, out, n };
    dev.launch(OP, spec, grid, 0, args)
}

pub(super) fn cast<T: Element, U: Element>(dev: &Cuda, a: CastArgs<'_, T, U, Cuda>) -> Result<()> {
    const OP: &str = "cast";
    if T::DTYPE == U::DTYPE {
        // Same type: a device-to-device copy.
        let bytes = a.len * T::DTYPE.size();
        return guarded(OP, || {
            let stream = dev.stream();
            let src = a.x.buf.slice(..bytes);
            let mut dst = a.out.buf.slice_mut(..bytes);
            stream
                .memcpy_dtod(&src, &mut dst)
                .map_err(|e| cuda_err(OP, e))
        });
    }
    launch_cast(dev, T::DTYPE, U::DTYPE, &a.x.buf, &mut a.out.buf, a.len)
}

/// `len` elements of type `from` converted to `to` (two different types; the
/// lengths checked by the op's front), launched on `dev`.
pub(super) fn launch_cast<L: Launcher>(
    dev: &L,
    from: DType,
    to: DType,
    x: &L::Buf,
    out: &mut L::Buf,
    len: usize,
) -> Result<()> {
    const OP: &str = "cast";
    let spec = match (from, to) {
        (DType::F32, DType::BF16) => &m::cast_f32_bf16::SPEC,
        (DType::BF16, DType::F32) => &m::cast_bf16_f32::SPEC,
        _ => {
            return Err(Error::Internal(format!(
                "cast from {from} to {to}: a copy, not a kernel"
            )))
        }
    };
    let n = index32(OP, "len", len)?;
    let grid = (grid_stride_blocks(len, spec.threads), 1, 1);
    dev.launch(OP, spec, grid, 0, m::Elementwise1Args { x, out, n })
}
