//! Layer norm on CUDA: kernels/layer_norm.ptx, one block per row.

use super::launch::{cfg, entry, Arg};
use super::Cuda;
use crate::element::Element;
use crate::error::Result;
use crate::ops::index32 as u32_of;
use crate::ops::LayerNormArgs;

pub(super) fn layer_norm<T: Element>(dev: &Cuda, a: LayerNormArgs<'_, T, Cuda>) -> Result<()> {
    const OP: &str = "layer_norm";
    let d = a.dims;
    let rows = u32_of(OP, "rows", d.rows)?;
    let cols = u32_of(OP, "cols", d.cols)?;
    u32_of(OP, "x", d.rows * d.cols)?;
    if rows == 0 {
        return Ok(());
    }
    dev.launch(
        OP,
        "layer_norm",
        &entry::<T>(OP),
        cfg((rows.min(65_535), rows.div_ceil(65_535), 1), (256, 1, 1), 0),
        &mut [
            Arg::In(&a.x.buf),
            Arg::In(&a.weight.buf),
            Arg::In(&a.bias.buf),
            Arg::Out(&mut a.out.buf),
            Arg::U32(rows),
            Arg::U32(cols),
            Arg::F32(d.eps),
        ],
    )
}
