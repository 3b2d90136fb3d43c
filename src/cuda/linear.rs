//! Linear layers on CUDA: kernels/linear.ptx (f32 SIMT, bf16 on tensor cores),
//! bias, GELU and residual fused in the epilogue.

use super::launch::{cfg, entry, Arg};
use super::Cuda;
use crate::element::DType;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::index32 as u32_of;
use crate::ops::{Activation, LinearArgs};
use cudarc::driver::LaunchConfig;

pub(super) fn linear<T: Element>(dev: &Cuda, a: LinearArgs<'_, T, Cuda>) -> Result<()> {
    const OP: &str = "linear";
    let d = a.dims;
    let m = u32_of(OP, "rows", d.rows)?;
    let n = u32_of(OP, "out_features", d.out_features)?;
    let k = u32_of(OP, "in_features", d.in_features)?;
    u32_of(OP, "x", d.rows * d.in_features)?;
    u32_of(OP, "weight", d.out_features * d.in_features)?;
    u32_of(OP, "out", d.rows * d.out_features)?;
    let flags = u32::from(a.bias.is_some())
        | (u32::from(d.activation == Activation::GeluTanh) << 1)
        | (u32::from(a.residual.is_some()) << 2);
    let launch = gemm_launch::<T>(OP, m, n)?;
    let bias = a.bias.map_or(Arg::Null, |b| Arg::In(&b.buf));
    let residual = a.residual.map_or(Arg::Null, |r| Arg::In(&r.buf));
    dev.launch(
        OP,
        "linear",
        &entry::<T>(OP),
        launch,
        &mut [
            Arg::In(&a.x.buf),
            Arg::In(&a.weight.buf),
            bias,
            residual,
            Arg::Out(&mut a.out.buf),
            Arg::U32(m),
            Arg::U32(n),
            Arg::U32(k),
            Arg::U32(flags),
        ],
    )
}

/// Grid and block of the GEMM-shaped kernels (linear, patch_embed): 64×64 output
/// tiles; 256 threads for the f32 SIMT kernel, 128 (4 warps) for the bf16 mma one.
pub(super) fn gemm_launch<T: Element>(op: &'static str, m: u32, n: u32) -> Result<LaunchConfig> {
    let threads = match T::DTYPE {
        DType::F32 => 256,
        DType::BF16 => 128,
    };
    if m.div_ceil(64) > 65_535 {
        return Err(Error::Unsupported {
            op,
            msg: format!("{m} rows exceed the kernel grid (at most 4194240)"),
        });
    }
    Ok(cfg((n.div_ceil(64), m.div_ceil(64), 1), (threads, 1, 1), 0))
}
