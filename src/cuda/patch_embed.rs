//! Patch embedding on CUDA: kernels/patch_embed.ptx, the GEMM kernels of
//! kernels/linear.ptx with the patches gathered from the pixels as the A operand.

use super::launch::{entry, Arg};
use super::linear::gemm_launch;
use super::Cuda;
use crate::element::Element;
use crate::error::Result;
use crate::ops::index32 as u32_of;
use crate::ops::PatchEmbedArgs;

pub(super) fn patch_embed<T: Element>(dev: &Cuda, a: PatchEmbedArgs<'_, T, Cuda>) -> Result<()> {
    const OP: &str = "patch_embed";
    let d = a.dims;
    let m = u32_of(OP, "B·N", d.batch * d.tokens())?;
    let n = u32_of(OP, "D", d.hidden)?;
    let k = u32_of(OP, "C·P·P", d.patch_len())?;
    u32_of(OP, "pixels", d.batch * d.channels * d.image * d.image)?;
    u32_of(OP, "out", d.batch * d.tokens() * d.hidden)?;
    let launch = gemm_launch::<T>(OP, m, n)?;
    dev.launch(
        OP,
        "patch_embed",
        &entry::<T>(OP),
        launch,
        &mut [
            Arg::In(&a.pixels.buf),
            Arg::In(&a.weight.buf),
            Arg::In(&a.bias.buf),
            Arg::In(&a.position.buf),
            Arg::Out(&mut a.out.buf),
            Arg::U32(m),
            Arg::U32(n),
            Arg::U32(k),
            Arg::U32(d.channels as u32),
            Arg::U32(d.image as u32),
            Arg::U32(d.patch as u32),
            Arg::U32(d.grid() as u32),
        ],
    )
}
