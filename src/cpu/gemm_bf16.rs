//! bf16 GEMM on AVX-512 BF16: `out = epilogue(A Wᵀ)` with A `[m, k]` and W `[n, k]`
//! both bf16, multiplied by `vdpbf16ps` (each f32 lane adds the products of one
//! pair of bf16 from each operand) without widening either operand to f32.
//!
//! Used for bf16 linear and patch embedding where the CPU has the instructions
//! (detected at run time, [`super::isa`]) and `TESSERA_CPU_ISA` is not `portable`;
//! elsewhere bf16 goes through [`super::gemm`]'s f32 SGEMM after widening. The
//! products of two bf16 values are exact in f32, so both paths differ only in the
//! order of the f32 sums — and in `vdpbf16ps` treating subnormal bf16 inputs
//! (|x| < 2⁻¹²⁶) as zero.
//!
//! Shape of the computation (an outer-product kernel, no horizontal sums):
//! - the output is cut into tiles of ≤ [`TILE_ROWS`] rows × ≤ [`TILE_COLS`]
//!   columns (narrower when that gives too few tasks), computed in parallel;
//! - a tile's rows of A are packed once into panels of 32 rows: for each pair of
//!   inner elements (2p, 2p + 1), the 32 rows' pairs side by side (128 bytes, two
//!   zmm registers), rows past the tile and the odd tail zero;
//! - the micro-kernel takes one panel and [`NR`] rows of W: per pair it loads the
//!   panel's two registers and, for each of the NR columns, broadcasts W's pair
//!   (4 bytes) to all lanes — 24 `vdpbf16ps` into 24 zmm accumulators, each the 16
//!   sums of one column for 16 rows; W's NR rows stay in L1 across panels;
//! - sums go to a column-major scratch tile, are summed over chunks of [`KCP`]
//!   pairs, transposed once, and stay f32 until the epilogue and the one rounding
//!   on store.

use half::bf16;
use rayon::prelude::*;

use super::gemm::Epilogue;
use super::{internal, store};
use crate::element::Element;
use crate::error::Result;

/// Rows per packed panel: two zmm registers of 16 f32 lanes.
const PANEL: usize = 32;
/// Rows of W (output columns) per micro-kernel call.
const NR: usize = 12;
/// Pairs of inner elements per chunk: NR rows of W (6 KiB) and the panel being
/// read (16 KiB) fit in L1 together, so W's rows stay there across panels (at 256
/// pairs the panel alone filled a 32 KiB L1 and evicted them: measured 10–25 %
/// slower on Zen 4).
const KCP: usize = 128;
/// Most output rows per tile: the tile's panels of one chunk (≤ 8 × 16 KiB) stay
/// in L2 while W's rows pass once per tile.
const TILE_ROWS: usize = 8 * PANEL;
/// Most output columns per tile (a multiple of NR).
const TILE_COLS: usize = 16 * NR;

/// Where the rows of A come from.
pub(super) enum BfSource<'a> {
    /// Row-major `[m, k]` bf16, used in place.
    Rows(&'a [bf16]),
    /// `fill(r0, dst)` writes rows `r0 .. r0 + dst.len()/k` as row-major bf16.
    Fill(&'a (dyn Fn(usize, &mut [bf16]) + Sync)),
}

/// Whether the `vdpbf16ps` path runs on this machine: the CPU has AVX-512 F, BW,
/// VL and BF16, and `TESSERA_CPU_ISA` is not `portable`.
pub(super) fn available() -> bool {
    super::isa().avx512_bf16
}

/// `out[r, j] = epilogue(Σ_p a[r, p]·w[j, p])` for a `[m, k]`, w `[n, k]`, out
/// `[m, n]`. Errors (never runs) when [`available`] is false.
pub(super) fn matmul_wt<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: BfSource<'_>,
    w: &[bf16],
    epi: &Epilogue<'_, T>,
    out: &mut [T],
) -> Result<()> {
    if !available() {
        return Err(internal("bf16 GEMM called on a CPU without AVX-512 BF16"));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let len_ok = |len: usize, r: usize, c: usize| matches!(r.checked_mul(c), Some(x) if x <= len);
    let a_ok = match a {
        BfSource::Rows(a) => len_ok(a.len(), m, k),
        BfSource::Fill(_) => true,
    };
    if !a_ok
        || !epi.fits(m, n)
        || !len_ok(w.len(), n, k)
        || !len_ok(out.len(), m, n)
        || m.checked_mul(k).is_none()
    {
        return Err(internal("bf16 matmul: operand shorter than its dims"));
    }
    // Few row blocks (each streams all of W once), of near-equal size in half
    // panels; column tiles narrowed until there are four tasks per thread.
    let row_blocks = m.div_ceil(TILE_ROWS);
    let block_rows = m.div_ceil(row_blocks).div_ceil(PANEL / 2) * (PANEL / 2);
    let row_blocks = m.div_ceil(block_rows);
    let tasks = 4 * rayon::current_num_threads().max(1);
    let mut tile_cols = TILE_COLS.min(n.div_ceil(NR) * NR);
    while row_blocks * n.div_ceil(tile_cols) < tasks && tile_cols > 4 * NR {
        tile_cols = (tile_cols / 2).div_ceil(NR) * NR;
    }
    let col_tiles = n.div_ceil(tile_cols);
    let pairs = k.div_ceil(2);

    out[..m * n]
        .par_chunks_mut(block_rows * n)
        .enumerate()
        .try_for_each(|(bi, out_rows)| -> Result<()> {
            let r0 = bi * block_rows;
            let rows = out_rows.len() / n;
            let filled;
            let a_blk: &[bf16] = match a {
                BfSource::Rows(a) => &a[r0 * k..][..rows * k],
                BfSource::Fill(fill) => {
                    let mut buf = vec![bf16::ZERO; rows * k];
                    fill(r0, &mut buf);
                    filled = buf;
                    &filled
                }
            };
            let panels = pack_panels(a_blk, rows, k);
            // Column tiles of this row block, each contiguous `[rows, tile_cols]`.
            let mut acc = vec![0.0f32; rows * tile_cols * col_tiles];
            acc.par_chunks_mut(rows * tile_cols)
                .enumerate()
                .try_for_each(|(ci, tile)| -> Result<()> {
                    let c0 = ci * tile_cols;
                    let cols = tile_cols.min(n - c0);
                    let tile = &mut tile[..rows * cols];
                    let w_tile = &w[c0 * k..(c0 + cols) * k];
                    tile_product(&panels, rows, pairs, w_tile, cols, k, tile)?;
                    epi.apply(tile, cols, r0, c0, cols, n);
                    Ok(())
                })?;
            for (ci, tile) in acc.chunks(rows * tile_cols).enumerate() {
                let c0 = ci * tile_cols;
                let cols = tile_cols.min(n - c0);
                for (dst, src) in out_rows.chunks_mut(n).zip(tile.chunks(cols)) {
                    store(src, &mut dst[c0..c0 + cols]);
                }
            }
            Ok(())
        })
}

/// A's `rows` rows (row-major, `k` per row) as panels: element
/// `[panel][pair][lane][half]` is `a[(panel·32 + lane)·k + 2·pair + half]`, zero
/// past the rows and past `k`. Each (lane, pair) is one u32: two bf16.
fn pack_panels(a: &[bf16], rows: usize, k: usize) -> Vec<u32> {
    let pairs = k.div_ceil(2);
    let n_panels = rows.div_ceil(PANEL);
    let mut out = vec![0u32; n_panels * pairs * PANEL];
    if k == 0 {
        return out;
    }
    let bits = |x: bf16| u32::from(x.to_bits());
    for (r, row) in a.chunks(k).take(rows).enumerate() {
        let (panel, lane) = (r / PANEL, r % PANEL);
        let dst = &mut out[panel * pairs * PANEL + lane..];
        for (p, pair) in row.chunks(2).enumerate() {
            let hi = pair.get(1).map_or(0, |&x| bits(x));
            dst[p * PANEL] = bits(pair[0]) | (hi << 16);
        }
    }
    out
}

/// `tile[i·cols + j] = Σ_p a[i·k + p]·w[j·k + p]` for i < rows, j < cols, from
/// A's panels ([`pack_panels`]) and W's rows.
fn tile_product(
    panels: &[u32],
    rows: usize,
    pairs: usize,
    w: &[bf16],
    cols: usize,
    k: usize,
    tile: &mut [f32],
) -> Result<()> {
    if k == 0 {
        tile.fill(0.0);
        return Ok(());
    }
    let n_panels = rows.div_ceil(PANEL);
    let rows_pad = n_panels * PANEL;
    // Column-major sums: column j of the tile is tcol[j·rows_pad ..][..rows_pad].
    let cols_pad = cols.div_ceil(NR) * NR;
    let mut tcol = vec![0.0f32; cols_pad * rows_pad];
    for p0 in (0..pairs).step_by(KCP) {
        let np = KCP.min(pairs - p0);
        // The chunk holding the odd tail's pair reads one element, not two, of W.
        let odd_tail = k % 2 == 1 && p0 + np == pairs;
        let elems = (2 * np).min(k - 2 * p0);
        for j0 in (0..cols).step_by(NR) {
            // Past the last column the kernel reads the last one again; those sums
            // land in the padding columns of `tcol` and are never read.
            let w_rows: [&[bf16]; NR] =
                std::array::from_fn(|j| &w[(j0 + j).min(cols - 1) * k + 2 * p0..][..elems]);
            for panel in 0..n_panels {
                let half = rows - panel * PANEL <= PANEL / 2;
                let a_panel = &panels[(panel * pairs + p0) * PANEL..][..np * PANEL];
                let dst = &mut tcol[j0 * rows_pad + panel * PANEL..];
                panel_add(a_panel, w_rows, np, odd_tail, half, dst, rows_pad)?;
            }
        }
    }
    for (i, row) in tile.chunks_mut(cols).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = tcol[j * rows_pad + i];
        }
    }
    Ok(())
}

/// `dst[j·ld + lane] += Σ_{p < np} a[p][lane] · w[j][p]` (each a pair of bf16) for
/// j < NR and lane < 32 (< 16 when `half`); with `odd_tail` the last pair of W is
/// one element (the other taken as zero).
fn panel_add(
    a: &[u32],
    w: [&[bf16]; NR],
    np: usize,
    odd_tail: bool,
    half: bool,
    dst: &mut [f32],
    ld: usize,
) -> Result<()> {
    let w_len = 2 * np - usize::from(odd_tail);
    let fits = (NR - 1) * ld + PANEL <= dst.len();
    if np == 0 || a.len() < np * PANEL || w.iter().any(|r| r.len() < w_len) || !fits || !available()
    {
        return Err(internal("bf16 panel: operands shorter than the panel"));
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `available()` checked that the CPU has AVX-512 F, BW, VL and BF16,
        // the features `x86::panel_add` is compiled for. It reads a[0 .. np·32]
        // (a.len() ≥ np·32), w[j][0 .. 2·np] (2·np − 1 with `odd_tail`; each row
        // holds at least that), and reads and writes dst[j·ld + lane] for j < NR,
        // lane < 32, inside `dst` by the check (NR − 1)·ld + 32 ≤ dst.len().
        unsafe { x86::panel_add(a.as_ptr(), w, np, odd_tail, half, dst.as_mut_ptr(), ld) };
        Ok(())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Err(internal("bf16 panel: no AVX-512 BF16 on this architecture"))
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::bf16;

    use super::{NR, PANEL};

    /// See [`super::panel_add`].
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW, VL and BF16; `a` must be valid for reading
    /// `np·32` u32; each `w[j]` must hold `2·np` elements (`2·np − 1` with
    /// `odd_tail`); `dst + j·ld + lane` must be valid for reads and writes for
    /// j < NR, lane < 32.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn panel_add(
        a: *const u32,
        w: [&[bf16]; NR],
        np: usize,
        odd_tail: bool,
        half: bool,
        dst: *mut f32,
        ld: usize,
    ) {
        // No closures and no iterator adapters here: a closure does not inherit
        // `target_feature`, and one that is not inlined costs a call per step.
        let full = np - usize::from(odd_tail);
        if half {
            let mut acc = [_mm512_setzero_ps(); NR];
            for p in 0..full {
                // SAFETY: p < np, so the 64 bytes at a + p·32 are inside `a`; the
                // 4 bytes at w[j] + 2p are inside each row (2p + 2 ≤ 2·full ≤ len).
                unsafe {
                    let a0 = bh(_mm512_loadu_si512(a.add(p * PANEL).cast()));
                    for j in 0..NR {
                        let wp = w[j].as_ptr().add(2 * p).cast::<i32>().read_unaligned();
                        acc[j] = _mm512_dpbf16_ps(acc[j], a0, bh(_mm512_set1_epi32(wp)));
                    }
                }
            }
            if odd_tail {
                let p = np - 1;
                // SAFETY: as above for `a`; the one element w[j][2p] is inside each row.
                unsafe {
                    let a0 = bh(_mm512_loadu_si512(a.add(p * PANEL).cast()));
                    for j in 0..NR {
                        let wp = i32::from(w[j].as_ptr().add(2 * p).cast::<u16>().read());
                        acc[j] = _mm512_dpbf16_ps(acc[j], a0, bh(_mm512_set1_epi32(wp)));
                    }
                }
            }
            for (j, v) in acc.iter().enumerate() {
                // SAFETY: dst + j·ld + 0..16 is inside the caller's guarantee.
                unsafe {
                    let d = dst.add(j * ld);
                    _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), *v));
                }
            }
            return;
        }
        let mut lo = [_mm512_setzero_ps(); NR];
        let mut hi = [_mm512_setzero_ps(); NR];
        for p in 0..full {
            // SAFETY: p < np: the 128 bytes at a + p·32 are inside `a`; the 4 bytes
            // at w[j] + 2p are inside each row (2p + 2 ≤ 2·full ≤ its length).
            unsafe {
                let a0 = bh(_mm512_loadu_si512(a.add(p * PANEL).cast()));
                let a1 = bh(_mm512_loadu_si512(a.add(p * PANEL + 16).cast()));
                for j in 0..NR {
                    let wp = w[j].as_ptr().add(2 * p).cast::<i32>().read_unaligned();
                    let b = bh(_mm512_set1_epi32(wp));
                    lo[j] = _mm512_dpbf16_ps(lo[j], a0, b);
                    hi[j] = _mm512_dpbf16_ps(hi[j], a1, b);
                }
            }
        }
        if odd_tail {
            let p = np - 1;
            // SAFETY: as above for `a`; the one element w[j][2p] is inside each row.
            unsafe {
                let a0 = bh(_mm512_loadu_si512(a.add(p * PANEL).cast()));
                let a1 = bh(_mm512_loadu_si512(a.add(p * PANEL + 16).cast()));
                for j in 0..NR {
                    let wp = i32::from(w[j].as_ptr().add(2 * p).cast::<u16>().read());
                    let b = bh(_mm512_set1_epi32(wp));
                    lo[j] = _mm512_dpbf16_ps(lo[j], a0, b);
                    hi[j] = _mm512_dpbf16_ps(hi[j], a1, b);
                }
            }
        }
        for j in 0..NR {
            // SAFETY: dst + j·ld + 0..32 is inside the caller's guarantee.
            unsafe {
                let d = dst.add(j * ld);
                _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), lo[j]));
                let d = d.add(16);
                _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), hi[j]));
            }
        }
    }

    /// 512 bits seen as 32 bf16 (a bit cast).
    #[inline(always)]
    fn bh(v: __m512i) -> __m512bh {
        // SAFETY: both are 64 bytes of plain data; every bit pattern is valid.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Activation;

    fn values(n: usize, seed: u64) -> Vec<bf16> {
        crate::random::Rng::new(seed).vec(n, 1.0)
    }

    #[test]
    fn matches_f64_dot_products_at_edges() {
        if !available() {
            eprintln!("SKIPPED: no AVX-512 BF16 on this CPU");
            return;
        }
        // Rows, columns and k that neither the micro-kernel, the tile nor the
        // k-chunk divides, and the degenerate ones.
        for &(m, k, n) in &[
            (67, 1031, 197),
            (1, 31, 1),
            (5, 33, 7),
            (130, 2050, 13),
            (3, 0, 2),
        ] {
            let a = values(m * k, 1 + m as u64);
            let w = values(n * k, 2 + n as u64);
            let mut out = vec![bf16::NAN; m * n];
            let epi = Epilogue::<bf16> {
                bias: None,
                act: Activation::None,
                residual: None,
            };
            matmul_wt(m, k, n, BfSource::Rows(&a), &w, &epi, &mut out).unwrap();
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| a[i * k + p].to_f64() * w[j * k + p].to_f64())
                        .sum();
                    let got = out[i * n + j].to_f64();
                    assert!(!got.is_nan(), "m={m} k={k} n={n}: NaN at ({i}, {j})");
                    num += (got - want).powi(2);
                    den += want * want;
                }
            }
            let rel = if den == 0.0 {
                num.sqrt()
            } else {
                (num / den).sqrt()
            };
            assert!(rel < 4e-3, "m={m} k={k} n={n}: relative L2 {rel:e}");
        }
    }

    #[test]
    fn short_operands_are_errors() {
        if !available() {
            return;
        }
        let a = values(12, 3);
        let epi = Epilogue::<bf16> {
            bias: None,
            act: Activation::None,
            residual: None,
        };
        let mut out = vec![bf16::ZERO; 4];
        assert!(matmul_wt(2, 6, 2, BfSource::Rows(&a[..11]), &a, &epi, &mut out).is_err());
        assert!(matmul_wt(2, 6, 2, BfSource::Rows(&a), &a, &epi, &mut out[..3]).is_err());
        matmul_wt(2, 6, 2, BfSource::Rows(&a), &a, &epi, &mut out).unwrap();
    }
}
