//! Linear layers on CUDA (kernels/linear*.ptx), bias, GELU and residual fused in
//! the epilogue:
//! - f32 at the model's shapes (K and N multiples of 4, 16-byte aligned operands),
//!   on tensor cores in 3xTF32 (each product from three tf32 ones, f32-accurate;
//!   see [`F32Gemm`]): `linear_f32_sm90` (tf32 wgmma fed by TMA, persistent 128 ×
//!   192 tiles; the weight tile split into its tf32 parts in shared memory by
//!   three converter warps) on compute capability 9.0, `linear_f32_3xtf32` (the
//!   sm_80 GEMM, mma.sync) elsewhere, where `TESSERA_CUDA_GEMM=sm80`, and at
//!   batch-1 shapes whose few wgmma tiles would leave most SMs idle (split-K);
//! - f32 otherwise, or where `TESSERA_CUDA_F32_GEMM=simt`: `linear_f32`, the
//!   SIMT GEMM (f32 multiply-adds);
//! - bf16 at the model's shapes (K and N multiples of 8, 16-byte aligned operands):
//!   `linear_bf16_sm90` (wgmma fed by TMA, persistent; 128 × 256 or 128 × 192
//!   tiles (`_n192`), alone or in clusters of two CTAs that share the weight tile
//!   by TMA multicast (`_c2`), whichever [`sm90_variant`] finds fastest for the
//!   shape; or, where `TESSERA_CUDA_SM90_TILE_N=128`, the ping-pong kernels
//!   `linear_bf16_sm90_pp*`, a 128 × 128 tile a consumer warpgroup: see
//!   [`SM90_PINGPONG`]) on compute capability 9.0,
//!   `linear_bf16`, the pipelined sm_80 tensor-core GEMM, elsewhere (and where
//!   `TESSERA_CUDA_GEMM=sm80`; see [`GemmPath`]);
//! - bf16 otherwise: `linear_bf16_any`, tensor cores with edge-safe loads.

use super::launch::{KernelSpec, Launcher, Matrix2d};
use super::manifest as m;
use super::{Cuda, F32Gemm, GemmPath};
use crate::element::{DType, Element};
use crate::error::{Error, Result};
use crate::ops::{index32, Activation, LinearArgs, LinearDims};

/// `flags` of the linear kernels, from the generator (gemm_common.py).
use m::{
    LINEAR_FLAG_BIAS as FLAG_BIAS, LINEAR_FLAG_GELU as FLAG_GELU, LINEAR_FLAG_RES as FLAG_RES,
};

pub(super) fn linear<T: Element>(dev: &Cuda, a: LinearArgs<'_, T, Cuda>) -> Result<()> {
    let o = Operands {
        x: &a.x.buf,
        weight: &a.weight.buf,
        bias: a.bias.map(|b| &b.buf),
        residual: a.residual.map(|r| &r.buf),
        out: &mut a.out.buf,
    };
    launch(dev, T::DTYPE, o, a.dims)
}

/// A linear layer's buffers on a [`Launcher`].
pub(super) struct Operands<'a, B> {
    pub x: &'a B,
    pub weight: &'a B,
    pub bias: Option<&'a B>,
    pub residual: Option<&'a B>,
    pub out: &'a mut B,
}

/// A linear layer of element type `dtype` over `a`, sized by `d` (checked by
/// the op's front): the kernel chosen, its grid and its arguments, launched on
/// `dev`.
pub(super) fn launch<L: Launcher>(
    dev: &L,
    dtype: DType,
    a: Operands<'_, L::Buf>,
    d: LinearDims,
) -> Result<()> {
    const OP: &str = "linear";
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
        .all(|s| dev.aligned16(s))
        && dev.aligned16(a.out);
    let args = m::LinearArgs {
        x: a.x,
        w: a.weight,
        bias: a.bias,
        res: a.residual,
        out: a.out,
        m: mm,
        n,
        k,
        flags,
        res_rows: mm,
    };
    match dtype {
        DType::F32
            if k % 4 == 0
                && n % 4 == 0
                && k > 0
                && aligned
                && dev.f32_gemm() == F32Gemm::Tf32x3 =>
        {
            if dev.gemm_path() == GemmPath::Sm90
                && dev.max_smem() >= F32_SM90_SMEM
                && !prefer_split_k(mm, n, k, dev.sm_count(), SM90_F32_TILE, &SM80_F32)
            {
                sm90_launch(OP, dev, DType::F32, sm90_args(args))
            } else {
                sm80_gemm(OP, dev, &SM80_F32, args, true)
            }
        }
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
                && !prefer_split_k(mm, n, k, dev.sm_count(), SM90_BF16_TILE, &SM80_BF16) =>
        {
            sm90_launch(OP, dev, DType::BF16, sm90_args(args))
        }
        DType::BF16 if k % 8 == 0 && n % 8 == 0 && aligned => {
            sm80_gemm(OP, dev, &SM80_BF16, args, true)
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

/// The Hopper GEMMs' arguments: those of the sm_80 kernels plus the tensor maps
/// of x [m, k], W [n, k] and out [m, n] (the kernels load and store tiles by TMA).
pub(super) fn sm90_args<B>(a: m::LinearArgs<'_, B>) -> m::LinearSm90Args<'_, B> {
    let (mm, n, k) = (a.m, a.n, a.k);
    m::LinearSm90Args {
        x: a.x,
        w: a.w,
        tmap_x: Matrix2d { rows: mm, cols: k },
        tmap_w: Matrix2d { rows: n, cols: k },
        tmap_out: Matrix2d { rows: mm, cols: n },
        bias: a.bias,
        res: a.res,
        out: a.out,
        m: mm,
        n,
        k,
        flags: a.flags,
        res_rows: a.res_rows,
    }
}

/// Launches the Hopper GEMM of `dtype` on `args` (whose shapes the caller has
/// checked: K and N multiples of 8 for bf16, 4 for f32, 16-byte aligned
/// operands, shared memory for `linear_f32_sm90`): f32 on `linear_f32_sm90`,
/// bf16 on the variant [`sm90_variant`] finds fastest. Persistent: at most one
/// block per SM (or cluster per slot), each looping over its tiles (or its
/// cluster's units of tiles).
pub(super) fn sm90_launch<L: Launcher>(
    op: &'static str,
    dev: &L,
    dtype: DType,
    args: m::LinearSm90Args<'_, L::Buf>,
) -> Result<()> {
    let (mm, n, k) = (args.m, args.n, args.k);
    if dtype == DType::F32 {
        use m::linear_f32_sm90 as f;
        let tiles = u64::from(mm.div_ceil(f::TILE_M)) * u64::from(n.div_ceil(f::TILE_N));
        let grid = tiles.min(u64::from(dev.sm_count().max(1))) as u32;
        return dev.launch(op, &f::SPEC, (grid, 1, 1), f::DYN_SMEM, args);
    }
    // Clusters that fit at once, per width (0 where none does, where the width
    // is not a candidate, or where the driver cannot say: then the unclustered
    // kernels).
    let forced = dev.sm90_override();
    let mut pairs = [0; SM90_WIDTHS.len()];
    if forced.cluster != Some(1) {
        for (slot, &tile_n) in pairs.iter_mut().zip(&SM90_WIDTHS) {
            if !sm90_candidate(tile_n, forced) {
                continue;
            }
            let (s, smem) = sm90_kernel(Sm90Variant { tile_n, cluster: 2 });
            match dev.max_active_clusters(s, smem) {
                Ok(n) => *slot = n,
                Err(e) if forced.cluster == Some(2) => return Err(e),
                Err(_) => {
                    pairs = [0; SM90_WIDTHS.len()];
                    break;
                }
            }
        }
    }
    let v = sm90_variant(mm, n, k, dev.sm_count(), pairs, forced);
    let (s, dyn_smem) = sm90_kernel(v);
    let (units, slots) = v.schedule(mm, n, dev.sm_count(), pairs);
    let grid = (units.min(u64::from(slots)) as u32) * v.cluster;
    dev.launch(op, s, (grid, 1, 1), dyn_smem, args)
}

/// Shared memory `linear_f32_sm90` needs (its stages hold each W tile twice: the
/// 3xTF32 parts).
pub(super) const F32_SM90_SMEM: u32 =
    m::linear_f32_sm90::DYN_SMEM + m::linear_f32_sm90::SPEC.static_smem;

/// The sm_80 tensor-core GEMM of one element type (tools/ptxgen/kernels/gemm_sm80.py
/// makes both from one generator): the kernel, its split-K form and the split-K
/// reduction, with their tiles and shared memory as the manifest states them.
pub(super) struct Sm80Gemm {
    main: &'static KernelSpec<m::Linear>,
    main_smem: u32,
    split: &'static KernelSpec<m::LinearSplitk>,
    split_smem: u32,
    reduce: &'static KernelSpec<m::SplitkReduce>,
    tile_m: u32,
    tile_n: u32,
    tile_k: u32,
}

/// `linear_bf16`: one m16n8k16 mma per 16 k.
pub(super) const SM80_BF16: Sm80Gemm = Sm80Gemm {
    main: &m::linear_bf16::SPEC,
    main_smem: m::linear_bf16::DYN_SMEM,
    split: &m::linear_bf16_splitk::SPEC,
    split_smem: m::linear_bf16_splitk::DYN_SMEM,
    reduce: &m::linear_splitk_reduce_bf16::SPEC,
    tile_m: m::linear_bf16::TILE_M,
    tile_n: m::linear_bf16::TILE_N,
    tile_k: m::linear_bf16::TILE_K,
};

/// `linear_f32_3xtf32`: f32 on the tensor cores, three tf32 mma per product (see
/// [`F32Gemm`]).
pub(super) const SM80_F32: Sm80Gemm = Sm80Gemm {
    main: &m::linear_f32_3xtf32::SPEC,
    main_smem: m::linear_f32_3xtf32::DYN_SMEM,
    split: &m::linear_f32_3xtf32_splitk::SPEC,
    split_smem: m::linear_f32_3xtf32_splitk::DYN_SMEM,
    reduce: &m::linear_splitk_reduce_f32::SPEC,
    tile_m: m::linear_f32_3xtf32::TILE_M,
    tile_n: m::linear_f32_3xtf32::TILE_N,
    tile_k: m::linear_f32_3xtf32::TILE_K,
};

/// Runs `g` on `args`: one block per output tile, or, where those would leave
/// most SMs idle and K is long ([`split_k`]) and `may_split` (the caller holds
/// no scratch buffer), f32 partial tiles of K slices and one reduction that
/// adds them in order and applies the epilogue.
pub(super) fn sm80_gemm<L: Launcher>(
    op: &'static str,
    dev: &L,
    g: &Sm80Gemm,
    args: m::LinearArgs<'_, L::Buf>,
    may_split: bool,
) -> Result<()> {
    let (mm, n, k) = (args.m, args.n, args.k);
    let tiles = mm.div_ceil(g.tile_m) * n.div_ceil(g.tile_n);
    let splits = if may_split {
        split_k(tiles, k.div_ceil(g.tile_k), dev.sm_count())
    } else {
        1
    };
    if splits == 1 {
        return dev.launch(op, g.main, (tiles, 1, 1), g.main_smem, args);
    }
    let outputs = mm as usize * n as usize;
    let bytes = splits as usize * outputs * 4;
    dev.with_scratch([bytes], |[part]| {
        let partial = m::LinearSplitkArgs {
            x: args.x,
            w: args.w,
            part: &mut *part,
            m: mm,
            n,
            k,
        };
        dev.launch(op, g.split, (tiles, splits, 1), g.split_smem, partial)?;
        let reduce = m::SplitkReduceArgs {
            part: &*part,
            bias: args.bias,
            res: args.res,
            out: args.out,
            m: mm,
            n,
            splits,
            flags: args.flags,
            res_rows: args.res_rows,
        };
        let blocks = super::launch::grid_stride_blocks(outputs / 2, g.reduce.threads);
        dev.launch(op, g.reduce, (blocks, 1, 1), 0, reduce)
    })
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

/// The wgmma GEMM's output tile widths, as the kernels' manifest states them:
/// 256 and 192 (both consumer warpgroups on one tile), then 128, the ping-pong
/// kernels' (a tile a warpgroup: [`SM90_PINGPONG`]).
const SM90_WIDTHS: [u32; 3] = [
    m::linear_bf16_sm90::TILE_N,
    m::linear_bf16_sm90_n192::TILE_N,
    m::linear_bf16_sm90_pp::TILE_N,
];

/// The ping-pong kernels' width (`linear_bf16_sm90_pp*`: each consumer
/// warpgroup on a 128 × 128 tile of its own, the two taking turns on the
/// tensor cores so one's epilogue runs under the other's mainloop). Not yet
/// timed on a GPU, so [`sm90_variant`] weighs it only where
/// `TESSERA_CUDA_SM90_TILE_N=128` asks for it.
const SM90_PINGPONG: u32 = m::linear_bf16_sm90_pp::TILE_N;
const _: () = assert!(m::linear_bf16_sm90_pp::PINGPONG == 1 && m::linear_bf16_sm90::PINGPONG == 0);

fn sm90_width_index(tile_n: u32) -> usize {
    SM90_WIDTHS.iter().position(|&w| w == tile_n).unwrap_or(0)
}

/// Whether [`sm90_variant`] weighs width `tile_n` under `forced`: the forced
/// width alone, else every width but the untimed ping-pong one.
fn sm90_candidate(tile_n: u32, forced: Sm90Override) -> bool {
    forced
        .tile_n
        .map_or(tile_n != SM90_PINGPONG, |t| t == tile_n)
}

/// One of the wgmma GEMM kernels: its output tile width and CTAs per cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sm90Variant {
    pub tile_n: u32,
    pub cluster: u32,
}

impl Sm90Variant {
    /// The units of work of an [m, n] output (tiles, or a cluster's column of
    /// `cluster` tiles) and the slots that take them at once (SMs, or the
    /// `pairs[width]` clusters that fit).
    fn schedule(self, m: u32, n: u32, sms: u32, pairs: [u32; SM90_WIDTHS.len()]) -> (u64, u32) {
        let units = u64::from(
            m.div_ceil(m::linear_bf16_sm90::TILE_M)
                .div_ceil(self.cluster),
        ) * u64::from(n.div_ceil(self.tile_n));
        let slots = if self.cluster == 1 {
            sms
        } else {
            pairs[sm90_width_index(self.tile_n)]
        };
        (units, slots)
    }
}

/// What `TESSERA_CUDA_SM90_TILE_N` and `TESSERA_CUDA_SM90_CLUSTER` fix of the
/// choice (`None`: left to [`sm90_variant`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Sm90Override {
    pub tile_n: Option<u32>,
    pub cluster: Option<u32>,
}

/// The kernel of a variant and its dynamic shared memory.
fn sm90_kernel(v: Sm90Variant) -> (&'static KernelSpec<m::LinearSm90>, u32) {
    use m::{
        linear_bf16_sm90 as a, linear_bf16_sm90_c2 as ac, linear_bf16_sm90_n192 as b,
        linear_bf16_sm90_n192_c2 as bc, linear_bf16_sm90_pp as p, linear_bf16_sm90_pp_c2 as pc,
    };
    match (sm90_width_index(v.tile_n), v.cluster) {
        (0, 1) => (&a::SPEC, a::DYN_SMEM),
        (0, _) => (&ac::SPEC, ac::DYN_SMEM),
        (1, 1) => (&b::SPEC, b::DYN_SMEM),
        (1, _) => (&bc::SPEC, bc::DYN_SMEM),
        (_, 1) => (&p::SPEC, p::DYN_SMEM),
        _ => (&pc::SPEC, pc::DYN_SMEM),
    }
}

/// The wgmma GEMM kernel for an [m, n] output over `k` on `sms` SMs, where
/// `pairs[i]` clusters of two CTAs of width `SM90_WIDTHS[i]` fit on the device at
/// once (0: none, or clusters unavailable): the variant that gives each SM (or
/// cluster) the fewest output columns to compute, ⌈units / slots⌉ × width ×
/// weight — a unit is a tile, or a cluster's column of two tiles; the persistent
/// grid's last, partly idle round counts whole. The weights were fitted to every
/// variant timed at SigLIP's shapes and 4096³ on an H100 (2026-11-25, gpu-check's
/// gemm part): a column of either width costs the same alone (16); a cluster,
/// whose CTAs share the weight tile, pays off a little over a long mainloop (15
/// where K ≥ 2048: so400m's fc2 ran 5 % faster in pairs; at 4096³ and
/// SigLIP-base's fc2 pairs and single CTAs were within 2 %), and is slower over
/// a short one (18: up to 12 % slower at K 768 and 1152). With these, the chosen
/// kernels sum to within 0.3 % of the fastest per shape (2.9 % with the
/// estimates they replace, 8 / 9 alone and 7 / 8 in pairs for 256 / 192 wide).
/// `TESSERA_CUDA_SM90_TILE_N` and `TESSERA_CUDA_SM90_CLUSTER` fix the choice
/// (`TILE_N=128`: the ping-pong kernels, weighed only then; see
/// [`SM90_PINGPONG`]). 192
/// divides widths 256 does not: SigLIP-so400m's 1152 (5 tiles of 256 are 10 %
/// padding), and it evens out rounds such as SigLIP-base batch 32's out_proj
/// (147 tiles of 256 on 132 SMs: two rounds, the second 11 % full). Ties go to
/// clusters, then to 256.
pub(super) fn sm90_variant(
    m: u32,
    n: u32,
    k: u32,
    sms: u32,
    pairs: [u32; SM90_WIDTHS.len()],
    forced: Sm90Override,
) -> Sm90Variant {
    let clustered: u64 = if k >= SM90_LONG_K { 15 } else { 18 };
    let mut best: Option<(u64, Sm90Variant)> = None;
    for cluster in [2, 1] {
        for &tile_n in &SM90_WIDTHS {
            let v = Sm90Variant { tile_n, cluster };
            let (units, slots) = v.schedule(m, n, sms, pairs);
            if slots == 0
                || forced.cluster.is_some_and(|c| c != cluster)
                || !sm90_candidate(tile_n, forced)
            {
                continue;
            }
            let weight: u64 = if cluster == 1 { 16 } else { clustered };
            let cost = units.div_ceil(u64::from(slots)) * u64::from(tile_n) * weight;
            if best.is_none_or(|(c, _)| cost < c) {
                best = Some((cost, v));
            }
        }
    }
    best.map_or(
        Sm90Variant {
            tile_n: forced.tile_n.unwrap_or(SM90_WIDTHS[0]),
            cluster: 1,
        },
        |(_, v)| v,
    )
}

/// The K from which [`sm90_variant`] counts a cluster's shared weight tile as a
/// saving.
const SM90_LONG_K: u32 = 2048;

/// `TESSERA_CUDA_SM90_TILE_N` (`256`, `192`, or `128`: the ping-pong kernels)
/// and `TESSERA_CUDA_SM90_CLUSTER` (`1` or `2`) fix the wgmma GEMM's tile width
/// and cluster size (to test or time each kernel at any shape); unset, empty or
/// `auto` leaves them to [`sm90_variant`]. Anything else is an error naming the
/// variable.
pub(super) fn sm90_override(tile_n: Option<&str>, cluster: Option<&str>) -> Result<Sm90Override> {
    fn parse(name: &str, env: Option<&str>, allowed: &[u32]) -> Result<Option<u32>> {
        match env.map(str::trim) {
            None | Some("" | "auto") => Ok(None),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if allowed.contains(&n) => Ok(Some(n)),
                _ => Err(Error::Unsupported {
                    op: "Cuda::new",
                    msg: format!(
                        "{name}={v:?}: expected auto or one of {}",
                        allowed
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
            },
        }
    }
    Ok(Sm90Override {
        tile_n: parse("TESSERA_CUDA_SM90_TILE_N", tile_n, &SM90_WIDTHS)?,
        cluster: parse("TESSERA_CUDA_SM90_CLUSTER", cluster, &[1, 2])?,
    })
}

/// On Hopper: whether the sm_80 GEMM `g` split along K should take a linear
/// rather than the wgmma kernel of output tiles `tile90` (rows, columns), because
/// those would occupy under a quarter of the SMs (batch 1) and K is long enough
/// to split.
fn prefer_split_k(m: u32, n: u32, k: u32, sms: u32, tile90: (u32, u32), g: &Sm80Gemm) -> bool {
    let tiles90 = m.div_ceil(tile90.0) * n.div_ceil(tile90.1);
    let tiles80 = m.div_ceil(g.tile_m) * n.div_ceil(g.tile_n);
    tiles90 * 4 < sms && split_k(tiles80, k.div_ceil(g.tile_k), sms) > 1
}

/// The wgmma GEMMs' output tiles (rows, columns) that [`prefer_split_k`] weighs:
/// bf16 at its widest, f32.
const SM90_BF16_TILE: (u32, u32) = (m::linear_bf16_sm90::TILE_M, m::linear_bf16_sm90::TILE_N);
const SM90_F32_TILE: (u32, u32) = (m::linear_f32_sm90::TILE_M, m::linear_f32_sm90::TILE_N);

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
    use super::{
        prefer_split_k, sm90_override, sm90_variant, split_k, Sm90Override, Sm90Variant, SM80_BF16,
        SM80_F32, SM90_BF16_TILE, SM90_F32_TILE,
    };

    #[test]
    fn hopper_variant_overrides() {
        let none = Sm90Override::default();
        assert_eq!(sm90_override(None, None).unwrap(), none);
        assert_eq!(sm90_override(Some(" auto "), Some("")).unwrap(), none);
        let o = sm90_override(Some("192"), Some("2")).unwrap();
        assert_eq!((o.tile_n, o.cluster), (Some(192), Some(2)));
        let o = sm90_override(Some("256"), Some("1")).unwrap();
        assert_eq!((o.tile_n, o.cluster), (Some(256), Some(1)));
        let o = sm90_override(Some("128"), None).unwrap();
        assert_eq!((o.tile_n, o.cluster), (Some(128), None));
        for bad in ["64", "wide", "-1"] {
            let e = sm90_override(Some(bad), None).unwrap_err().to_string();
            assert!(
                e.contains("TESSERA_CUDA_SM90_TILE_N") && e.contains(bad),
                "{e}"
            );
        }
        for bad in ["4", "0", "pairs"] {
            let e = sm90_override(None, Some(bad)).unwrap_err().to_string();
            assert!(
                e.contains("TESSERA_CUDA_SM90_CLUSTER") && e.contains(bad),
                "{e}"
            );
        }
    }

    /// The choice without clusters (none fit).
    fn width(m: u32, n: u32, k: u32, sms: u32) -> u32 {
        let v = sm90_variant(m, n, k, sms, [0, 0, 0], Sm90Override::default());
        assert_eq!(v.cluster, 1);
        v.tile_n
    }

    #[test]
    fn hopper_tile_width_follows_the_schedule() {
        // SigLIP-base batch 32 (M 6272), N 768: 147 tiles of 256 take two rounds
        // on 132 SMs; 196 of 192 take two narrower ones. N 2304 and 3072: 5
        // rounds of 192 against 4 of 256, 6 against 5 (960 < 1024, 1152 < 1280).
        assert_eq!(width(6272, 768, 768, 132), 192);
        assert_eq!(width(6272, 2304, 768, 132), 192);
        assert_eq!(width(6272, 3072, 768, 132), 192);
        // so400m batch 32 (M 23 328): N 1152 is 6 tiles of 192 (9 rounds × 192)
        // or 5 of 256 (7 rounds × 256: more columns); N 3456 likewise.
        assert_eq!(width(23_328, 1152, 1152, 132), 192);
        assert_eq!(width(23_328, 3456, 1152, 132), 192);
        // so400m batch 1 (M 729): one round either way for N 1152 and 3456: the
        // narrower tile; N 4304 needs 2 rounds of 192 but 1 of 256.
        assert_eq!(width(729, 1152, 1152, 132), 192);
        assert_eq!(width(729, 3456, 1152, 132), 192);
        assert_eq!(width(729, 4304, 1152, 132), 256);
        // 4096³ (4 rounds of 256 against 6 of 192) and degenerate inputs.
        assert_eq!(width(4096, 4096, 4096, 132), 256);
        assert_eq!(width(0, 768, 768, 132), 256);
        assert_eq!(width(6272, 768, 768, 0), 256);
    }

    #[test]
    fn hopper_clusters_over_long_mainloops_where_they_fit() {
        let auto = Sm90Override::default();
        let v = |tile_n, cluster| Sm90Variant { tile_n, cluster };
        let pairs = [66, 66, 66]; // 66 pairs on 132 SMs
        #[rustfmt::skip]
        let cases = [
            // Over K 2048 and more the shared weight tile pays: so400m batch 32's
            // fc2 (K 4304, N 1152: 92 units of two tile rows × 6 columns of 192 on
            // 66 pairs, 9 rounds), 4096³ (256 wide: 4 rounds), SigLIP-base's fc2
            // (K 3072).
            ((23_328, 1152, 4304), pairs, v(192, 2)),
            ((4096, 4096, 4096), pairs, v(256, 2)),
            ((6272, 768, 3072), pairs, v(192, 2)),
            // Over a short one (K 768, 1152) the CTAs alone.
            ((23_328, 3456, 1152), pairs, v(192, 1)),
            ((23_328, 1152, 1152), pairs, v(192, 1)),
            ((6272, 768, 768), pairs, v(192, 1)),
            // Fewer slots than SMs / 2 (GPCs with odd SM counts): still one round.
            ((729, 1152, 4304), [60, 60, 60], v(192, 2)),
            // No pair fits for one width: the other, or no cluster.
            ((23_328, 1152, 4304), [0, 66, 0], v(192, 2)),
            // 4096³: 6 rounds of 192 in pairs, 4 of 256 alone (measured 0.239 and
            // 0.201 ms): the discount of pairs does not make up for the narrower
            // tile.
            ((4096, 4096, 4096), [0, 66, 0], v(256, 1)),
            ((23_328, 1152, 4304), [0, 0, 0], v(192, 1)),
        ];
        for ((m, n, k), slots, want) in cases {
            let got = sm90_variant(m, n, k, 132, slots, auto);
            assert_eq!(got, want, "{m}x{n}x{k}, pairs {slots:?}");
        }
        // Where the pairs would take more rounds than single tiles, no cluster: one
        // tile row (M ≤ 128) leaves the second CTA of every pair idle.
        assert_eq!(
            sm90_variant(100, 4096, 4096, 132, [4, 4, 4], auto).cluster,
            1
        );
        // Overrides fix either choice; a forced cluster with none fitting falls
        // back to single CTAs of the forced width.
        let forced = |t, c| Sm90Override {
            tile_n: t,
            cluster: c,
        };
        #[rustfmt::skip]
        let cases = [
            ((23_328, 1152, 4304), pairs, forced(None, Some(1)), v(192, 1)),
            ((23_328, 3456, 1152), pairs, forced(None, Some(2)), v(192, 2)),
            ((4096, 4096, 4096), pairs, forced(Some(192), None), v(192, 2)),
            ((23_328, 3456, 1152), [0, 0, 0], forced(Some(192), Some(2)), v(192, 1)),
        ];
        for ((m, n, k), slots, o, want) in cases {
            let got = sm90_variant(m, n, k, 132, slots, o);
            assert_eq!(got, want, "{m}x{n}x{k}, pairs {slots:?}, {o:?}");
        }
    }

    #[test]
    fn hopper_pingpong_only_where_asked_for() {
        let v = |tile_n, cluster| Sm90Variant { tile_n, cluster };
        let forced = |t, c| Sm90Override {
            tile_n: t,
            cluster: c,
        };
        // Not timed on a GPU yet: never chosen on its own, even where the cost
        // model would count its schedule the shortest (so400m batch 32's
        // out_proj: 183 × 9 tiles of 128 are 13 rounds of 128 columns, 1664,
        // against 9 of 192, 1728).
        for (m, n, k) in [(23_328, 1152, 1152), (6272, 768, 768), (4096, 4096, 4096)] {
            let auto = sm90_variant(m, n, k, 132, [66, 66, 66], Sm90Override::default());
            assert_ne!(auto.tile_n, 128, "{m}x{n}x{k}");
        }
        // Asked for: alone, in pairs where they fit, the cost model's choice of
        // the two (so400m batch 32's out_proj and fc2).
        for (k, pairs, cluster, want) in [
            (1152, [66, 66, 66], Some(1), v(128, 1)),
            (4304, [66, 66, 66], Some(2), v(128, 2)),
            (4304, [66, 66, 0], Some(2), v(128, 1)),
            (4304, [66, 66, 66], None, v(128, 2)),
        ] {
            let got = sm90_variant(23_328, 1152, k, 132, pairs, forced(Some(128), cluster));
            assert_eq!(got, want, "k {k}, pairs {pairs:?}, cluster {cluster:?}");
        }
    }

    /// Each wgmma variant's time at SigLIP's shapes and 4096³ (ms; 256 wide alone,
    /// in pairs, 192 alone, in pairs), measured on an H100 SXM (132 SMs, 2026-11-25,
    /// `scripts/gpu-check run gemm`, notes/h100-2026-11-25/gemm.log): the variant
    /// [`sm90_variant`] picks runs within 4 % of the fastest at every shape that
    /// takes the wgmma kernel (within 2 % at all but one shape of 9 µs).
    #[test]
    fn hopper_choice_is_near_the_fastest_measured() {
        #[rustfmt::skip]
        let measured: [(&str, u32, u32, u32, [f64; 4]); 15] = [
            ("base B1 qkv", 196, 2304, 768, [0.0115, 0.0111, 0.0109, 0.0110]),
            ("base B1 out_proj", 196, 768, 768, [0.0110, 0.0108, 0.00954, 0.00921]),
            ("base B1 fc1", 196, 3072, 768, [0.0139, 0.0135, 0.0135, 0.0136]),
            ("base B1 fc2", 196, 768, 3072, [0.0134, 0.0130, 0.0130, 0.0131]),
            ("base B32 qkv", 6272, 2304, 768, [0.0492, 0.0499, 0.0470, 0.0474]),
            ("base B32 out_proj", 6272, 768, 768, [0.0274, 0.0284, 0.0209, 0.0218]),
            ("base B32 fc1", 6272, 3072, 768, [0.0631, 0.0646, 0.0603, 0.0679]),
            ("base B32 fc2", 6272, 768, 3072, [0.0754, 0.0765, 0.0608, 0.0619]),
            ("so400m B1 qkv", 729, 3456, 1152, [0.0171, 0.0177, 0.0137, 0.0148]),
            ("so400m B1 fc1", 729, 4304, 1152, [0.0173, 0.0180, 0.0244, 0.0249]),
            ("so400m B32 qkv", 23_328, 3456, 1152, [0.332, 0.339, 0.315, 0.332]),
            ("so400m B32 out_proj", 23_328, 1152, 1152, [0.142, 0.138, 0.132, 0.132]),
            ("so400m B32 fc1", 23_328, 4304, 1152, [0.398, 0.403, 0.416, 0.434]),
            ("so400m B32 fc2", 23_328, 1152, 4304, [0.447, 0.426, 0.446, 0.426]),
            ("4096³", 4096, 4096, 4096, [0.201, 0.205, 0.236, 0.239]),
        ];
        let auto = Sm90Override::default();
        for (name, m, n, k, t) in measured {
            let v = sm90_variant(m, n, k, 132, [66, 66, 66], auto);
            let i = usize::from(v.tile_n == 192) * 2 + usize::from(v.cluster == 2);
            let best = t.iter().copied().fold(f64::INFINITY, f64::min);
            assert!(
                t[i] <= best * 1.04,
                "{name}: {v:?} measured {} ms, the fastest {best}",
                t[i]
            );
        }
    }

    #[test]
    fn hopper_f32_takes_split_k_only_for_tiny_grids() {
        let f32 = |m, n, k| prefer_split_k(m, n, k, 132, SM90_F32_TILE, &SM80_F32);
        // SigLIP-base batch 1 (M 196): 2 x 4 tiles of 128 x 192 on 132 SMs.
        assert!(f32(196, 768, 768));
        // so400m batch 1 (M 729): qkv 6 x 18 = 108 tiles: the wgmma kernel.
        assert!(!f32(729, 3456, 1152));
        // so400m batch 32 (M 23 328): the wgmma kernel.
        assert!(!f32(23_328, 1152, 4304));
        // Short K: nothing to split.
        assert!(!f32(196, 768, 64));
    }

    #[test]
    fn hopper_takes_split_k_only_for_tiny_grids() {
        let bf16 = |m, n, k| prefer_split_k(m, n, k, 132, SM90_BF16_TILE, &SM80_BF16);
        // SigLIP-base batch 1 (M 196): 2 x 3 wgmma tiles on 132 SMs.
        assert!(bf16(196, 768, 768));
        // so400m batch 32 (M 23 328): the wgmma kernel.
        assert!(!bf16(23_328, 1152, 1152));
        // Short K: nothing to split.
        assert!(!bf16(196, 768, 64));
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
