//! Elementwise ops on CUDA: kernels/add.ptx and kernels/cast.ptx (grid-stride
//! loops); a same-type cast is a device copy.

use super::device::{cuda_err, guarded};
use super::launch::grid_stride_blocks;
use super::launch::{cfg, entry, Arg};
use super::Cuda;
use crate::element::DType;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::index32 as u32_of;
use crate::ops::{AddArgs, CastArgs};

pub(super) fn add<T: Element>(dev: &Cuda, a: AddArgs<'_, T, Cuda>) -> Result<()> {
    const OP: &str = "add";
    let n = u32_of(OP, "len", a.len)?;
    dev.launch(
        OP,
        "add",
        &entry::<T>(OP),
        cfg((grid_stride_blocks(a.len), 1, 1), (256, 1, 1), 0),
        &mut [
            Arg::In(&a.a.buf),
            Arg::In(&a.b.buf),
            Arg::Out(&mut a.out.buf),
            Arg::U32(n),
        ],
    )
}

pub(super) fn cast<T: Element, U: Element>(dev: &Cuda, a: CastArgs<'_, T, U, Cuda>) -> Result<()> {
    const OP: &str = "cast";
    if T::DTYPE == U::DTYPE {
        // Same type: a device-to-device copy.
        let bytes = a.len * T::DTYPE.size();
        return guarded(OP, || {
            let stream = &dev.inner.stream;
            let src = a.x.buf.slice(..bytes);
            let mut dst = a.out.buf.slice_mut(..bytes);
            stream
                .memcpy_dtod(&src, &mut dst)
                .map_err(|e| cuda_err(OP, e))
        });
    }
    let n = u32_of(OP, "len", a.len)?;
    let name = match (T::DTYPE, U::DTYPE) {
        (DType::F32, DType::BF16) => "cast_f32_bf16",
        (DType::BF16, DType::F32) => "cast_bf16_f32",
        _ => {
            return Err(Error::Internal(
                "a same-type cast reached the cast kernel".into(),
            ))
        }
    };
    dev.launch(
        OP,
        "cast",
        name,
        cfg((grid_stride_blocks(a.len), 1, 1), (256, 1, 1), 0),
        &mut [Arg::In(&a.x.buf), Arg::Out(&mut a.out.buf), Arg::U32(n)],
    )
}
