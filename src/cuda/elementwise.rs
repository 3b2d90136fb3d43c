//! Elementwise ops on CUDA: kernels/add.ptx and kernels/cast.ptx (grid-stride
//! loops); a same-type cast is a device copy.

use super::device::{cuda_err, guarded};
use super::launch::grid_stride_blocks;
use super::manifest as m;
use super::Cuda;
use crate::element::{DType, Element};
use crate::error::Result;
use crate::ops::{index32, AddArgs, CastArgs};

pub(super) fn add<T: Element>(dev: &Cuda, a: AddArgs<'_, T, Cuda>) -> Result<()> {
    const OP: &str = "add";
    let n = index32(OP, "len", a.len)?;
    let spec = match T::DTYPE {
        DType::F32 => &m::add_f32::SPEC,
        DType::BF16 => &m::add_bf16::SPEC,
    };
    let grid = (grid_stride_blocks(a.len, spec.threads), 1, 1);
    let args = m::Elementwise2Args {
        a: &a.a.buf,
        b: &a.b.buf,
        out: &mut a.out.buf,
        n,
    };
    dev.launch(OP, spec, grid, 0, args)
}

pub(super) fn cast<T: Element, U: Element>(dev: &Cuda, a: CastArgs<'_, T, U, Cuda>) -> Result<()> {
    const OP: &str = "cast";
    let spec = match (T::DTYPE, U::DTYPE) {
        (DType::F32, DType::BF16) => &m::cast_f32_bf16::SPEC,
        (DType::BF16, DType::F32) => &m::cast_bf16_f32::SPEC,
        _ => {
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
    };
    let n = index32(OP, "len", a.len)?;
    let grid = (grid_stride_blocks(a.len, spec.threads), 1, 1);
    let args = m::Elementwise1Args {
        x: &a.x.buf,
        out: &mut a.out.buf,
        n,
    };
    dev.launch(OP, spec, grid, 0, args)
}
