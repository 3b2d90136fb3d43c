//! The one place that calls `matrixmultiply::sgemm`, behind a bounds-checked
//! safe wrapper, and the tiled, rayon-parallel `x Wᵀ` driver with a fused
//! epilogue that linear and patch_embed share.

use rayon::prelude::*;

use super::{as_f32_mut, exp_f32, internal, store};
use crate::element::Element;
use crate::error::Result;
use crate::ops::Activation;

/// A read-only strided f32 matrix: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(super) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `[rows, cols]` block with row stride `ld`.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: ld,
            cs: 1,
        }
    }

    /// The transpose, as a view of the same memory.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Whether every element lies inside `data` (so sgemm never reads past it).
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.rs)
            .zip((self.cols - 1).checked_mul(self.cs))
            .and_then(|(a, b)| a.checked_add(b));
        matches!(last, Some(l) if l < self.data.len())
            && isize::try_from(self.rs).is_ok()
            && isize::try_from(self.cs).is_ok()
    }
}

/// `c[i·ldc + j] = Σ_p a(i,p)·b(p,j)` for i < a.rows, j < b.cols. `c` need not be
/// initialised (NaN there is overwritten, never read).
pub(super) fn sgemm(a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32], ldc: usize) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        return Err(internal("sgemm: inner dimensions differ"));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let c_end = (m - 1).checked_mul(ldc).and_then(|v| v.checked_add(n));
    if ldc < n || !matches!(c_end, Some(e) if e <= c.len()) || isize::try_from(ldc).is_err() {
        return Err(internal("sgemm: output block out of bounds"));
    }
    if k == 0 {
        // Empty sum; matrixmultiply would scale C by beta, which keeps NaN poison.
        for row in c.chunks_mut(ldc).take(m) {
            row[..n].fill(0.0);
        }
        return Ok(());
    }
    if !a.in_bounds() || !b.in_bounds() {
        return Err(internal("sgemm: input block out of bounds"));
    }
    // SAFETY: every element sgemm reads, a[i·rsa + p·csa] (i < m, p < k) and
    // b[p·rsb + j·csb] (p < k, j < n), was checked above to lie inside its slice;
    // every element it writes, c[i·ldc + j] (i < m, j < n), lies inside `c`
    // (c_end ≤ c.len()) and is distinct (ldc ≥ n, column stride 1). All strides fit
    // isize. beta = 0, so C is written without being read. The shared borrows of
    // `a`/`b` and the unique borrow of `c` cannot alias.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            0.0,
            c.as_mut_ptr(),
            ldc as isize,
            1,
        );
    }
    Ok(())
}

/// Where the rows of the left operand come from.
pub(super) enum ASource<'a> {
    /// Row-major `[m, k]` f32, used in place.
    F32(&'a [f32]),
    /// `fill(r0, dst)` writes rows `r0 .. r0 + dst.len()/k` as row-major f32.
    Fill(&'a (dyn Fn(usize, &mut [f32]) + Sync)),
}

/// `out = residual + act(acc + bias)`, applied to f32 accumulators before the one rounding.
pub(super) struct Epilogue<'a, T> {
    pub bias: Option<&'a [T]>,
    pub act: Activation,
    /// Residual `[rr, n]`; output row r adds residual row r % rr (rr = m for a plain
    /// residual, N tokens for the position embedding).
    pub residual: Option<(&'a [T], usize)>,
}

/// gelu_tanh(x) = 0.5·x·(1 + tanh(u)) = x·sigmoid(2u), u = √(2/π)·(x + 0.044715·x³);
/// the sigmoid form needs one vectorisable exp and no libm tanh. At −∞ it is NaN,
/// as the tanh form (−∞ · 0) is in PyTorch and on the GPU backends; `exp_f32`
/// clamps, so that case is chosen explicitly (a blend, still vectorised).
#[inline(always)]
pub(super) fn gelu_tanh(x: f32) -> f32 {
    const C2: f32 = 2.0 * 0.797_884_6; // 2·√(2/π)
    let g = x / (1.0 + exp_f32(-C2 * (x + 0.044715 * x * x * x)));
    if x == f32::NEG_INFINITY {
        f32::NAN
    } else {
        g
    }
}

impl<T: Element> Epilogue<'_, T> {
    /// Whether the bias and residual hold what an `[m, n]` output reads.
    pub(super) fn fits(&self, m: usize, n: usize) -> bool {
        let res_ok = match self.residual {
            Some((r, rr)) => rr > 0 && rr.checked_mul(n).is_some_and(|l| l <= r.len()),
            None => true,
        };
        res_ok && self.bias.is_none_or(|b| b.len() >= n) && m.checked_mul(n).is_some()
    }

    /// Apply to a tile of `rows × cols` accumulators (row stride `ld`) holding output
    /// rows `r0..` and columns `c0..` of an `[m, n]` result.
    pub(super) fn apply(
        &self,
        tile: &mut [f32],
        ld: usize,
        r0: usize,
        c0: usize,
        cols: usize,
        n: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if super::isa().avx512 {
            // SAFETY: the CPU has the features `apply_avx512` is compiled for
            // (`isa()` detected them); it is `apply_any` compiled with them.
            unsafe { self.apply_avx512(tile, ld, r0, c0, cols, n) };
            return;
        }
        self.apply_any(tile, ld, r0, c0, cols, n);
    }

    /// [`Self::apply_any`] compiled for AVX-512, so its loops (GELU's exp
    /// included) vectorise 16 wide; the crate's baseline is SSE2. (An explicit
    /// function: a closure passed to a `target_feature` function is not reliably
    /// inlined into it, and then runs without the features.)
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW, VL, AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    unsafe fn apply_avx512(
        &self,
        tile: &mut [f32],
        ld: usize,
        r0: usize,
        c0: usize,
        cols: usize,
        n: usize,
    ) {
        self.apply_any(tile, ld, r0, c0, cols, n);
    }

    /// Rows `r0..` of sums, `cols` each (`rows[i·cols ..]`, columns from `c0`),
    /// through the epilogue into `dst` (row i's `cols` outputs; the one
    /// rounding), compiled for AVX-512 where the CPU has it.
    pub(super) fn finish_rows<T2: Element>(
        &self,
        rows: &mut [f32],
        cols: usize,
        dst: &mut [&mut [T2]],
        r0: usize,
        c0: usize,
        n: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if super::isa().avx512 {
            // SAFETY: the CPU has the features `finish_avx512` is compiled for
            // (`isa()` detected them); it is `finish_any` compiled with them.
            unsafe { self.finish_avx512(rows, cols, dst, r0, c0, n) };
            return;
        }
        self.finish_any(rows, cols, dst, r0, c0, n);
    }

    /// [`Self::finish_any`] compiled for AVX-512 (epilogue and rounding 16
    /// wide).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW, VL, AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    unsafe fn finish_avx512<T2: Element>(
        &self,
        rows: &mut [f32],
        cols: usize,
        dst: &mut [&mut [T2]],
        r0: usize,
        c0: usize,
        n: usize,
    ) {
        self.finish_any(rows, cols, dst, r0, c0, n);
    }

    #[inline(always)]
    fn finish_any<T2: Element>(
        &self,
        rows: &mut [f32],
        cols: usize,
        dst: &mut [&mut [T2]],
        r0: usize,
        c0: usize,
        n: usize,
    ) {
        for (i, (row, d)) in rows.chunks_mut(cols).zip(dst.iter_mut()).enumerate() {
            self.apply_any(row, cols, r0 + i, c0, cols, n);
            super::store(row, d);
        }
    }

    #[inline(always)]
    fn apply_any(&self, tile: &mut [f32], ld: usize, r0: usize, c0: usize, cols: usize, n: usize) {
        for (i, row) in tile.chunks_mut(ld).enumerate() {
            let row = &mut row[..cols];
            if let Some(b) = self.bias {
                for (v, b) in row.iter_mut().zip(&b[c0..c0 + cols]) {
                    *v += b.to_f32();
                }
            }
            if self.act == Activation::GeluTanh {
                for v in row.iter_mut() {
                    *v = gelu_tanh(*v);
                }
            }
            if let Some((res, rr)) = self.residual {
                let r = (r0 + i) % rr;
                for (v, s) in row.iter_mut().zip(&res[r * n + c0..][..cols]) {
                    *v += s.to_f32();
                }
            }
        }
    }
}

/// Rows per row block and columns per column block for an `[m, n]` output, so
/// there are a few tasks per thread and each is big enough that matrixmultiply's
/// packing stays small next to the arithmetic.
fn blocking(m: usize, n: usize) -> (usize, usize) {
    const MIN_ROWS: usize = 128;
    const MIN_COLS: usize = 256;
    let tasks = 3 * rayon::current_num_threads().max(1);
    let row_blocks = m.div_ceil(MIN_ROWS).clamp(1, tasks);
    let rb = m.div_ceil(row_blocks);
    let col_blocks = tasks.div_ceil(row_blocks).clamp(1, (n / MIN_COLS).max(1));
    // Multiples of 16 keep matrixmultiply's column panels whole.
    let cb = n.div_ceil(col_blocks).div_ceil(16) * 16;
    (rb, cb.min(n))
}

/// `out[r, j] = epilogue(Σ_p a[r, p]·w[j, p])`: a `[m, k]`, w row-major `[n, k]`
/// (read through strides, never transposed), out `[m, n]`.
pub(super) fn matmul_wt<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: ASource<'_>,
    w: &[f32],
    epi: &Epilogue<'_, T>,
    out: &mut [T],
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let len_ok = |len: usize, r: usize, c: usize| matches!(r.checked_mul(c), Some(x) if x <= len);
    let a_ok = match a {
        ASource::F32(a) => len_ok(a.len(), m, k),
        ASource::Fill(_) => true,
    };
    if !a_ok || !epi.fits(m, n) || !len_ok(w.len(), n, k) || !len_ok(out.len(), m, n) {
        return Err(internal("matmul: operand shorter than its dims"));
    }
    let (rb, cb) = blocking(m, n);
    let wt = MatRef::rows(w, n, k, k).t();

    out[..m * n]
        .par_chunks_mut(rb * n)
        .enumerate()
        .try_for_each(|(bi, out_rows)| -> Result<()> {
            let r0 = bi * rb;
            let rows = out_rows.len() / n;
            // The row block of A, widened / gathered once for all its column blocks.
            let filled;
            let a_blk = match a {
                ASource::F32(a) => MatRef::rows(&a[r0 * k..], rows, k, k),
                ASource::Fill(fill) => {
                    let mut buf = vec![0.0f32; rows * k];
                    fill(r0, &mut buf);
                    filled = buf;
                    MatRef::rows(&filled, rows, k, k)
                }
            };
            if cb >= n {
                // One column block: accumulate straight into the output when it is f32.
                if let Some(o) = as_f32_mut(out_rows) {
                    sgemm(a_blk, wt, o, n)?;
                    epi.apply(o, n, r0, 0, n, n);
                } else {
                    let mut acc = vec![0.0f32; rows * n];
                    sgemm(a_blk, wt, &mut acc, n)?;
                    epi.apply(&mut acc, n, r0, 0, n, n);
                    store(&acc, out_rows);
                }
                return Ok(());
            }
            let tiles = (0..n.div_ceil(cb))
                .into_par_iter()
                .map(|ci| -> Result<(usize, usize, Vec<f32>)> {
                    let c0 = ci * cb;
                    let cols = cb.min(n - c0);
                    let b_blk = MatRef::rows(&w[c0 * k..], cols, k, k).t();
                    let mut acc = vec![0.0f32; rows * cols];
                    sgemm(a_blk, b_blk, &mut acc, cols)?;
                    epi.apply(&mut acc, cols, r0, c0, cols, n);
                    Ok((c0, cols, acc))
                })
                .collect::<Result<Vec<_>>>()?;
            for (c0, cols, acc) in tiles {
                for (dst, src) in out_rows.chunks_mut(n).zip(acc.chunks(cols)) {
                    store(src, &mut dst[c0..c0 + cols]);
                }
            }
            Ok(())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| a[i * k + p] as f64 * w[j * k + p] as f64)
                    .sum();
            }
        }
        c
    }

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn large_matmul_matches_naive_loop() {
        // Several row and column blocks, edges no tile divides.
        for &(m, k, n) in &[(517, 97, 1031), (3, 200, 2050), (1, 5, 1), (300, 1, 17)] {
            let a = lcg(m * k, 1);
            let w = lcg(n * k, 2);
            let mut out = vec![f32::NAN; m * n];
            let epi = Epilogue::<f32> {
                bias: None,
                act: Activation::None,
                residual: None,
            };
            matmul_wt(m, k, n, ASource::F32(&a), &w, &epi, &mut out).unwrap();
            let want = naive(&a, &w, m, k, n);
            // A NaN (an element never written) is the largest error: the fold keeps it.
            let err = out
                .iter()
                .zip(&want)
                .map(|(&o, &r)| (o as f64 - r).abs())
                .fold(0.0, |m: f64, d| if d.is_nan() || d > m { d } else { m });
            assert!(err < 1e-4, "m={m} k={k} n={n}: max error {err}");
            let (num, den) = out.iter().zip(&want).fold((0.0, 0.0), |(n, d), (&o, &r)| {
                (n + (o as f64 - r).powi(2), d + r * r)
            });
            let rel = (num / den.max(f64::MIN_POSITIVE)).sqrt();
            assert!(rel <= 1e-5, "m={m} k={k} n={n}: relative L2 {rel:e}");
        }
    }

    #[test]
    fn sgemm_rejects_short_operands() {
        let a = [1.0f32; 4];
        let mut c = [0.0f32; 4];
        let bad = MatRef::rows(&a, 3, 2, 2);
        assert!(sgemm(bad, MatRef::rows(&a, 2, 2, 2), &mut c, 2).is_err());
        let ok = MatRef::rows(&a, 2, 2, 2);
        assert!(sgemm(ok, ok, &mut c[..3], 2).is_err());
        sgemm(ok, ok, &mut c, 2).unwrap();
        assert_eq!(c, [2.0; 4]);
    }
}
