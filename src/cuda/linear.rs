//! Linear layers on CUDA (kernels/linear.ptx), bias, GELU and residual fused in
//! the epilogue:
//! - f32: `linear_f32`, exact SIMT GEMM;
//! - bf16 at the model's shapes (K and N multiples of 8, 16-byte aligned operands):
//!   `linear_bf16_sm90` (wgmma fed by TMA, persistent; 128 × 256 tiles, or
//!   128 × 192 in `linear_bf16_sm90_n192` where [`sm90_tile_n`] finds that
//!   schedule shorter) on compute capability 9.0,
//!   `linear_bf16`, the pipelined sm_80 tensor-core GEMM, elsewhere (and where
//!   `TESSERA_CUDA_GEMM=sm80`; see [`GemmPath`]);
//! - bf16 otherwise: `linear_bf16_any`, tensor cores with edge-safe loads.

use super::launch::Matrix2d;
use super::manifest as m;
use super::{Cuda, GemmPath};
use crate::element::{DType, Element};
use crate::error::{Error, Result};
use crate::ops::{index32, Activation, LinearArgs};

/// `flags` of the linear kernels (tools/ptxgen/kernels/gemm_common.py).
const FLAG_BIAS: u32 = 1;
const FLAG_GELU: u32 = 2;
const FLAG_RES: u32 = 4;

pub(super) fn linear<T: Element>(dev: &Cuda, a: LinearArgs<'_, T, Cuda>) -> Result<()> {
    const OP: &str = "linear";
    let d = a.dims;
    let mm = index32(OP, "rows", d.rows)?;
    let n = index32(OP, "out_features", d.out_features)?;
    let k = index32(OP, "in_features", d.in_features)?;
    index32(OP, "x", d.rows * d.in_features)?;
    index32(OP, "weight", d.out_features * d.in_features)?;
    index32(OP, "out", d.rows * d.out_features)?;
    let flags = if a.bias.is_some() { FLAG_BIAS } else { 0 }
        | if d.activation == Activation::GeluTanh {
            FLAG_GELU
        } else {
            0
        }
        | if a.residual.is_some() { FLAG_RES } else { 0 };
    let aligned = [Some(a.x), Some(a.weight), a.bias, a.residual]
        .into_iter()
        .flatten()
        .all(|s| dev.aligned16(&s.buf))
        && dev.aligned16(&a.out.buf);
    let args = m::LinearArgs {
        x: &a.x.buf,
        w: &a.weight.buf,
        bias: a.bias.map(|b| &b.buf),
        res: a.residual.map(|r| &r.buf),
        out: &mut a.out.buf,
        m: mm,
        n,
        k,
        flags,
    };
    match T::DTYPE {
        DType::F32 => {
            let s = &m::linear_f32::SPEC;
            let grid = grid2d(OP, mm, n, m::linear_f32::TILE_M, m::linear_f32::TILE_N)?;
            dev.launch(OP, s, grid, 0, args)
        }
        DType::BF16
            if k % 8 == 0
                && n % 8 == 0
                && k > 0
                && aligned
                && dev.gemm_path() == GemmPath::Sm90
                && !prefer_split_k(mm, n, k, dev.sm_count()) =>
        {
            let tile_n = dev
                .sm90_tile_n()
                .unwrap_or_else(|| sm90_tile_n(mm, n, dev.sm_count()));
            let (s, dyn_smem) = if tile_n == m::linear_bf16_sm90_n192::TILE_N {
                (
                    &m::linear_bf16_sm90_n192::SPEC,
                    m::linear_bf16_sm90_n192::DYN_SMEM,
                )
            } else {
                (&m::linear_bf16_sm90::SPEC, m::linear_bf16_sm90::DYN_SMEM)
            };
            let tiles =
                u64::from(mm.div_ceil(m::linear_bf16_sm90::TILE_M)) * u64::from(n.div_ceil(tile_n));
            // Persistent: at most one block per SM, each looping over its tiles.
            let grid = tiles.min(u64::from(dev.sm_count())) as u32;
            let args = m::LinearSm90Args {
                x: args.x,
                w: args.w,
                tmap_x: Matrix2d { rows: mm, cols: k },
                tmap_w: Matrix2d { rows: n, cols: k },
                tmap_out: Matrix2d { rows: mm, cols: n },
                bias: args.bias,
                res: args.res,
                out: args.out,
                m: mm,
                n,
                k,
                flags,
            };
            dev.launch(OP, s, (grid, 1, 1), dyn_smem, args)
        }
        DType::BF16 if k % 8 == 0 && n % 8 == 0 && aligned => {
            let tiles = mm.div_ceil(m::linear_bf16::TILE_M) * n.div_ceil(m::linear_bf16::TILE_N);
            let ktiles = k.div_ceil(m::linear_bf16::TILE_K);
            let splits = split_k(tiles, ktiles, dev.sm_count());
            if splits == 1 {
                let s = &m::linear_bf16::SPEC;
                return dev.launch(OP, s, (tiles, 1, 1), m::linear_bf16::DYN_SMEM, args);
            }
            // Split-K: f32 partial tiles of `splits` K slices, then one reduction that
            // adds them in order and applies the epilogue.
            let bytes = splits as usize * d.rows * d.out_features * 4;
            dev.with_scratch(bytes, |part| {
                let partial = m::LinearSplitkArgs {
                    x: args.x,
                    w: args.w,
                    part: &mut *part,
                    m: mm,
                    n,
                    k,
                };
                let s = &m::linear_bf16_splitk::SPEC;
                dev.launch(
                    OP,
                    s,
                    (tiles, splits, 1),
                    m::linear_bf16_splitk::DYN_SMEM,
                    partial,
                )?;
                let reduce = m::SplitkReduceArgs {
                    part: &*part,
                    bias: args.bias,
                    res: args.res,
                    out: args.out,
                    m: mm,
                    n,
                    splits,
                    flags,
                };
                let s = &m::linear_splitk_reduce_bf16::SPEC;
                let pairs = d.rows * d.out_features / 2;
                let blocks = super::launch::grid_stride_blocks(pairs, s.threads);
                dev.launch(OP, s, (blocks, 1, 1), 0, reduce)
            })
        }
        DType::BF16 => {
            let s = &m::linear_bf16_any::SPEC;
            let grid = grid2d(
                OP,
                mm,
                n,
                m::linear_bf16_any::TILE_M,
                m::linear_bf16_any::TILE_N,
            )?;
            dev.launch(OP, s, grid, 0, args)
        }
    }
}

/// K slices for the sm_80 GEMM: 1 unless its `tiles` output tiles would leave
/// most of the `sms` SMs idle (batch 1: SigLIP-base's out_proj is 12 tiles on 132
/// SMs) while K is long. Then enough slices to fill about one wave, at most 8
/// (the partial sums cost 4 bytes per output per slice) and no more than a
/// quarter of the k-tiles; the kernel gives each slice ⌈k-tiles / S⌉ k-tiles, so
/// S is then lowered until no slice is left empty.
pub(super) fn split_k(tiles: u32, ktiles: u32, sms: u32) -> u32 {
    if tiles == 0 || tiles * 2 > sms {
        return 1;
    }
    let s = (sms / tiles).min(ktiles / 4).clamp(1, 8);
    ktiles.div_ceil(ktiles.div_ceil(s).max(1)).max(1)
}

/// The output tile width of the wgmma GEMM for an [m, n] output on `sms` SMs:
/// 256 (`linear_bf16_sm90`) or 192 (`linear_bf16_sm90_n192`), whichever gives
/// each SM the fewest output columns to compute, ⌈tiles / sms⌉ × width (the
/// persistent grid's last, partly idle round counted whole), the narrower tile
/// charged 1/8 more for its lower operand reuse (12 % more bytes from L2 per
/// FLOP; an estimate to check on a GPU). 192 divides the widths 256 does not:
/// SigLIP-so400m's 1152 (5 tiles of 256 are 10 % padding), and it evens out
/// rounds such as SigLIP-base batch 32's out_proj (147 tiles of 256 on 132 SMs:
/// two rounds, the second 11 % full).
pub(super) fn sm90_tile_n(m: u32, n: u32, sms: u32) -> u32 {
    let cost = |tile_n: u32, weight: u64| {
        let tiles =
            u64::from(m.div_ceil(m::linear_bf16_sm90::TILE_M)) * u64::from(n.div_ceil(tile_n));
        tiles.div_ceil(u64::from(sms.max(1))) * u64::from(tile_n) * weight
    };
    if cost(m::linear_bf16_sm90_n192::TILE_N, 9) < cost(m::linear_bf16_sm90::TILE_N, 8) {
        m::linear_bf16_sm90_n192::TILE_N
    } else {
        m::linear_bf16_sm90::TILE_N
    }
}

/// `TESSERA_CUDA_SM90_TILE_N`: `192` or `256` fixes the wgmma GEMM's tile width
/// (to test or time each kernel at any shape); unset, empty or `auto` leaves it to
/// [`sm90_tile_n`]. Anything else is an error naming the variable.
pub(super) fn sm90_tile_override(env: Option<&str>) -> Result<Option<u32>> {
    let widths = [
        m::linear_bf16_sm90::TILE_N,
        m::linear_bf16_sm90_n192::TILE_N,
    ];
    match env.map(str::trim) {
        None | Some("" | "auto") => Ok(None),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if widths.contains(&n) => Ok(Some(n)),
            _ => Err(Error::Unsupported {
                op: "Cuda::new",
                msg: format!("TESSERA_CUDA_SM90_TILE_N={v:?}: expected auto, 256 or 192"),
            }),
        },
    }
}

/// On Hopper: whether the sm_80 GEMM split along K should take a linear rather
/// than the wgmma kernel, because the latter's 128 × 256 tiles would occupy
/// under a quarter of the SMs (batch 1) and K is long enough to split.
fn prefer_split_k(m: u32, n: u32, k: u32, sms: u32) -> bool {
    let tiles90 = m.div_ceil(m::linear_bf16_sm90::TILE_M) * n.div_ceil(m::linear_bf16_sm90::TILE_N);
    let tiles80 = m.div_ceil(m::linear_bf16::TILE_M) * n.div_ceil(m::linear_bf16::TILE_N);
    tiles90 * 4 < sms && split_k(tiles80, k.div_ceil(m::linear_bf16::TILE_K), sms) > 1
}

/// Grid (column tiles, row tiles) of the 2-D tiled GEMM kernels.
pub(super) fn grid2d(
    op: &'static str,
    m: u32,
    n: u32,
    tile_m: u32,
    tile_n: u32,
) -> Result<(u32, u32, u32)> {
    if m.div_ceil(tile_m) > 65_535 {
        return Err(Error::Unsupported {
            op,
            msg: format!(
                "{m} rows exceed the kernel grid (at most {})",
                65_535 * tile_m
            ),
        });
    }
    Ok((n.div_ceil(tile_n), m.div_ceil(tile_m), 1))
}

#[cfg(test)]
mod tests {
    use super::{prefer_split_k, sm90_tile_n, sm90_tile_override, split_k};

    #[test]
    fn hopper_tile_width_override() {
        assert_eq!(sm90_tile_override(None).unwrap(), None);
        assert_eq!(sm90_tile_override(Some(" auto ")).unwrap(), None);
        assert_eq!(sm90_tile_override(Some("")).unwrap(), None);
        assert_eq!(sm90_tile_override(Some("192")).unwrap(), Some(192));
        assert_eq!(sm90_tile_override(Some("256")).unwrap(), Some(256));
        for bad in ["128", "wide", "-1"] {
            let e = sm90_tile_override(Some(bad)).unwrap_err().to_string();
            assert!(
                e.contains("TESSERA_CUDA_SM90_TILE_N") && e.contains(bad),
                "{e}"
            );
        }
    }

    #[test]
    fn hopper_tile_width_follows_the_schedule() {
        // SigLIP-base batch 32 (M 6272), N 768: 147 tiles of 256 take two rounds
        // on 132 SMs; 196 of 192 take two narrower ones.
        assert_eq!(sm90_tile_n(6272, 768, 132), 192);
        // N 2304 and 3072: 256 (4 rounds of 256 against 5 of 192; 5 against 6).
        assert_eq!(sm90_tile_n(6272, 2304, 132), 256);
        assert_eq!(sm90_tile_n(6272, 3072, 132), 256);
        // so400m batch 32 (M 23 328): N 1152 is 5 tiles of 256 (7 rounds × 256)
        // or 6 of 192 (9 rounds × 192 × 9/8): 256; N 3456 likewise.
        assert_eq!(sm90_tile_n(23_328, 1152, 132), 256);
        assert_eq!(sm90_tile_n(23_328, 3456, 132), 256);
        // so400m batch 1 (M 729): one round either way for N 1152 and 3456: the
        // narrower tile; N 4304 needs 2 rounds of 192 but 1 of 256.
        assert_eq!(sm90_tile_n(729, 1152, 132), 192);
        assert_eq!(sm90_tile_n(729, 3456, 132), 192);
        assert_eq!(sm90_tile_n(729, 4304, 132), 256);
        // 4096³ and degenerate inputs.
        assert_eq!(sm90_tile_n(4096, 4096, 132), 256);
        assert_eq!(sm90_tile_n(0, 768, 132), 256);
        assert_eq!(sm90_tile_n(6272, 768, 0), 256);
    }

    #[test]
    fn hopper_takes_split_k_only_for_tiny_grids() {
        // SigLIP-base batch 1 (M 196): 2 x 3 wgmma tiles on 132 SMs.
        assert!(prefer_split_k(196, 768, 768, 132));
        // so400m batch 32 (M 23 328): the wgmma kernel.
        assert!(!prefer_split_k(23_328, 1152, 1152, 132));
        // Short K: nothing to split.
        assert!(!prefer_split_k(196, 768, 64, 132));
    }

    #[test]
    fn split_k_only_when_the_grid_is_small_and_k_long() {
        // SigLIP-base at batch 1 (M 196): out_proj 2 x 6 tiles, K 768 = 24 k-tiles.
        assert_eq!(split_k(12, 24, 132), 6);
        // MLP fc2: 12 tiles, K 3072 = 96 k-tiles: capped at 8.
        assert_eq!(split_k(12, 96, 132), 8);
        // A full grid, or short K: no split.
        assert_eq!(split_k(80, 96, 132), 1);
        assert_eq!(split_k(12, 7, 132), 1);
        assert_eq!(split_k(0, 96, 132), 1);
        // At most a quarter of the k-tiles, and no empty slice: 33 k-tiles in 8
        // would be 7 slices of 5 and an empty one; 7 slices of 5 (the last 3) instead.
        assert_eq!(split_k(1, 9, 132), 2);
        assert_eq!(split_k(1, 33, 132), 7);
    }
}
