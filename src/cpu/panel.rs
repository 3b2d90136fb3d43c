//! The AVX-512 GEMM of the CPU backend: `out = epilogue(A Wᵀ)` with A `[m, k]`
//! and W `[n, k]` both bf16 (multiplied by `vdpbf16ps`, which adds the products of
//! one pair of bf16 from each operand into an f32 lane, without widening either
//! operand) or both f32 (`vfmadd`).
//!
//! Used for linear and patch embedding where the CPU has the instructions
//! (detected at run time, [`super::isa`]; AVX-512 BF16 for bf16) and
//! `TESSERA_CPU_ISA` is not `portable`; elsewhere [`super::gemm`]'s
//! matrixmultiply SGEMM (bf16 widened first). The products of two bf16 values are
//! exact in f32, so the bf16 paths differ only in the order of the f32 sums — and
//! in `vdpbf16ps` treating subnormal bf16 inputs (|x| < 2⁻¹²⁶) as zero.
//!
//! Shape of the computation (an outer-product kernel, no horizontal sums), in
//! *units* of 4 bytes — a pair of bf16, or one f32:
//! - the output is cut into tiles of ≤ [`TILE_ROWS`] rows × ≤ [`TILE_COLS`]
//!   columns (narrower when that gives too few tasks), computed in parallel;
//! - a tile's rows of A are packed once into panels of 32 rows: for each unit of
//!   the inner dimension, the 32 rows' units side by side (128 bytes, two zmm
//!   registers), rows past the tile and a bf16 odd tail zero;
//! - the micro-kernel takes one panel and [`NR`] rows of W: per unit it loads the
//!   panel's two registers and, for each of the NR columns, broadcasts W's unit to
//!   all lanes — 24 `vdpbf16ps` / `vfmadd231ps` into 24 zmm accumulators, each the
//!   16 sums of one column for 16 rows. The NR rows' units of one chunk of [`KCP`]
//!   are first copied side by side (6 KiB, in L1 across panels: W's own rows lie
//!   k elements apart, and where that is a multiple of 4 KiB all twelve would
//!   share L1 sets — measured 25 % slower at k = 3072 in f32);
//! - sums go to a column-major scratch tile, are summed over chunks of KCP
//!   units, and stay f32 until the epilogue and the one rounding on store,
//!   which each tile does for its columns of every row straight into the output.
//!   Packing A runs in parallel too.
//!
//! [`attention_head`] uses the same kernel for one head of attention, with K and
//! V as the packed operand so that neither the scores nor the output need a
//! transpose.

use half::bf16;
use rayon::prelude::*;

use super::gemm::Epilogue;
use super::internal;
use crate::element::Element;
use crate::error::Result;

/// Rows per packed panel: two zmm registers of 16 f32 lanes.
const PANEL: usize = 32;
/// Rows of W (output columns) per micro-kernel call.
const NR: usize = 12;
/// Units of the inner dimension per chunk: NR rows of W (6 KiB) and the panel
/// being read (16 KiB) fit in L1 together, so W's rows stay there across panels
/// (at 256 the panel alone filled a 32 KiB L1 and evicted them: measured 10–25 %
/// slower on Zen 4).
const KCP: usize = 128;
/// Most output rows per tile: the tile's panels of one chunk (≤ 8 × 16 KiB) stay
/// in L2 while W's rows pass once per tile.
const TILE_ROWS: usize = 8 * PANEL;
/// Most output columns per tile (a multiple of NR).
const TILE_COLS: usize = 16 * NR;

/// An element type the panel GEMM multiplies: bf16 (two per unit) or f32 (one).
pub(super) trait PanelElem: bytemuck::Pod + Default + Send + Sync + 'static {
    /// Elements per 4-byte unit.
    const UNIT: usize;
    /// Whether this machine runs the kernel (and `TESSERA_CPU_ISA` allows it).
    fn available() -> bool;
    /// The unit of `chunk` (1 ..= UNIT elements; missing ones zero), as bits.
    fn unit(chunk: &[Self]) -> u32;
    /// `rows` rows of f32 probabilities (row i at `p[i·ld ..]`, `k` used) as
    /// rows of this type, same layout: f32 as they are, bf16 rounded.
    fn probs(p: &[f32], ld: usize, rows: usize, k: usize) -> std::borrow::Cow<'_, [Self]>;
    /// `dst[j·ld + lane] += Σ_{u < nu} a[u·sa + lane] · w[j·KCP + u]` (units),
    /// see [`panel_add`].
    ///
    /// # Safety
    /// As `x86::panel_bf16` / `x86::panel_f32`: the CPU has the kernel's
    /// features ([`Self::available`]); `a` is valid for `(nu − 1)·sa + 32` u32,
    /// `w` for `(NR − 1)·KCP + nu` u32, nu ≤ KCP; `dst + j·ld + lane` is valid
    /// for reads and writes for j < NR, lane < 32.
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel(
        a: *const u32,
        sa: usize,
        w: *const u32,
        nu: usize,
        half: bool,
        dst: *mut f32,
        ld: usize,
    );
}

impl PanelElem for bf16 {
    const UNIT: usize = 2;
    fn available() -> bool {
        super::isa().avx512_bf16
    }
    fn unit(chunk: &[Self]) -> u32 {
        let hi = chunk.get(1).map_or(0, |x| u32::from(x.to_bits()));
        u32::from(chunk[0].to_bits()) | (hi << 16)
    }
    fn probs(p: &[f32], ld: usize, rows: usize, k: usize) -> std::borrow::Cow<'_, [Self]> {
        let mut out = vec![bf16::ZERO; rows * ld];
        for (dst, src) in out.chunks_mut(ld).zip(p.chunks(ld)) {
            round_bf16(&src[..k], &mut dst[..k]);
        }
        std::borrow::Cow::Owned(out)
    }
    unsafe fn kernel(
        a: *const u32,
        sa: usize,
        w: *const u32,
        nu: usize,
        half: bool,
        dst: *mut f32,
        ld: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded; the caller upholds `kernel`'s contract, which is
        // `panel_bf16`'s.
        unsafe {
            x86::panel_bf16(a, sa, w, nu, half, dst, ld)
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (a, sa, w, nu, half, dst, ld);
    }
}

impl PanelElem for f32 {
    const UNIT: usize = 1;
    fn available() -> bool {
        super::isa().avx512
    }
    fn unit(chunk: &[Self]) -> u32 {
        chunk[0].to_bits()
    }
    fn probs(p: &[f32], _: usize, _: usize, _: usize) -> std::borrow::Cow<'_, [Self]> {
        std::borrow::Cow::Borrowed(p)
    }
    unsafe fn kernel(
        a: *const u32,
        sa: usize,
        w: *const u32,
        nu: usize,
        half: bool,
        dst: *mut f32,
        ld: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded; the caller upholds `kernel`'s contract, which is
        // `panel_f32`'s.
        unsafe {
            x86::panel_f32(a, sa, w, nu, half, dst, ld)
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (a, sa, w, nu, half, dst, ld);
    }
}

/// Where the rows of A come from.
pub(super) enum PanelSource<'a, S> {
    /// Row-major `[m, k]`, used in place.
    Rows(&'a [S]),
    /// `fill(r0, dst)` writes rows `r0 .. r0 + dst.len()/k`, row-major.
    Fill(&'a (dyn Fn(usize, &mut [S]) + Sync)),
}

/// `out[r, j] = epilogue(Σ_p a[r, p]·w[j, p])` for a `[m, k]`, w `[n, k]`, out
/// `[m, n]`. Errors (never runs) where `S::available()` is false.
pub(super) fn matmul_wt<S: PanelElem, T: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: PanelSource<'_, S>,
    w: &[S],
    epi: &Epilogue<'_, T>,
    out: &mut [T],
) -> Result<()> {
    if !S::available() {
        return Err(internal(
            "panel GEMM called on a CPU without its instructions",
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let len_ok = |len: usize, r: usize, c: usize| matches!(r.checked_mul(c), Some(x) if x <= len);
    let a_ok = match a {
        PanelSource::Rows(a) => len_ok(a.len(), m, k),
        PanelSource::Fill(_) => true,
    };
    if !a_ok
        || !epi.fits(m, n)
        || !len_ok(w.len(), n, k)
        || !len_ok(out.len(), m, n)
        || m.checked_mul(k).is_none()
    {
        return Err(internal("panel matmul: operand shorter than its dims"));
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

    out[..m * n]
        .par_chunks_mut(block_rows * n)
        .enumerate()
        .try_for_each(|(bi, out_rows)| -> Result<()> {
            let r0 = bi * block_rows;
            let rows = out_rows.len() / n;
            let filled;
            let a_blk: &[S] = match a {
                PanelSource::Rows(a) => &a[r0 * k..][..rows * k],
                PanelSource::Fill(fill) => {
                    let mut buf = vec![S::default(); rows * k];
                    fill(r0, &mut buf);
                    filled = buf;
                    &filled
                }
            };
            let panels = pack_panels(a_blk, rows, k, k, true);
            // Each column tile writes its columns of the block's rows: the rows
            // split at the tile boundaries, one list of row pieces per tile.
            let mut pieces: Vec<Vec<&mut [T]>> =
                (0..col_tiles).map(|_| Vec::with_capacity(rows)).collect();
            for row in out_rows.chunks_mut(n) {
                let mut rest = row;
                for list in &mut pieces {
                    let (mine, tail) = rest.split_at_mut(tile_cols.min(rest.len()));
                    list.push(mine);
                    rest = tail;
                }
            }
            pieces
                .into_par_iter()
                .enumerate()
                .try_for_each(|(ci, mut dst_rows)| -> Result<()> {
                    let c0 = ci * tile_cols;
                    let cols = tile_cols.min(n - c0);
                    let w_tile = &w[c0 * k..(c0 + cols) * k];
                    let lay = ALayout {
                        panel: k.div_ceil(S::UNIT) * PANEL,
                        unit: PANEL,
                    };
                    // Column-major sums; 16 rows at a time are gathered (a
                    // transpose), finished by the epilogue and stored (the one
                    // rounding) straight into `out`.
                    let tcol = col_sums(&panels, lay, rows, w_tile, cols, k, k)?;
                    let ld = rows.div_ceil(PANEL) * PANEL;
                    let mut buf = vec![0.0f32; GATHER * cols];
                    for (b, dst) in dst_rows.chunks_mut(GATHER).enumerate() {
                        gather_rows(&tcol, ld, b * GATHER, cols, &mut buf)?;
                        epi.finish_rows(&mut buf, cols, dst, r0 + b * GATHER, c0, n);
                    }
                    Ok(())
                })
        })
}

/// Rows gathered at a time from column-major sums: one 16 × 16 transpose.
const GATHER: usize = 16;

/// `buf[r·cols + j] = tcol[j·ld + i0 + r]` for r < 16, j < cols: 16 rows of
/// column-major sums, row-major (16 × 16 register transposes where the CPU has
/// AVX-512). Rows `i0 .. i0 + 16` must lie within the padded column (`i0 + 16 ≤
/// ld`, as any 16-aligned `i0` below a multiple of 32 does).
fn gather_rows(tcol: &[f32], ld: usize, i0: usize, cols: usize, buf: &mut [f32]) -> Result<()> {
    let fits = cols == 0 || (i0 + GATHER <= ld && (cols - 1) * ld + i0 + GATHER <= tcol.len());
    if !fits || buf.len() < GATHER * cols {
        return Err(internal("gather: rows past the column-major sums"));
    }
    #[cfg(target_arch = "x86_64")]
    if super::isa().avx512 {
        // SAFETY: the CPU has AVX-512 F (`isa()` detected it). `gather16` reads
        // tcol[j·ld + i0 + r] for j < cols, r < 16 — inside `tcol` by the check
        // (cols − 1)·ld + i0 + 16 ≤ tcol.len() — and writes buf[r·cols + j],
        // inside `buf` (≥ 16·cols long).
        unsafe { x86::gather16(tcol.as_ptr(), ld, i0, cols, buf.as_mut_ptr()) };
        return Ok(());
    }
    for (r, row) in buf.chunks_mut(cols).take(GATHER).enumerate() {
        for (v, col) in row.iter_mut().zip(tcol.chunks(ld)) {
            *v = col[i0 + r];
        }
    }
    Ok(())
}

/// A's `rows` rows of `k` elements (row `i` at `a[i·lda ..]`) as panels: u32
/// `[panel][unit][lane]` is the unit `a[(panel·32 + lane)·lda + unit·UNIT ..]`,
/// zero past the rows and past `k`. Panels in parallel when `par` (packing is a
/// pass over all of A's block), on this thread otherwise. `a` holds the rows
/// (checked by the callers: `(rows − 1)·lda + k ≤ a.len()`).
fn pack_panels<S: PanelElem>(a: &[S], rows: usize, k: usize, lda: usize, par: bool) -> Vec<u32> {
    let units = k.div_ceil(S::UNIT);
    let mut out = vec![0u32; rows.div_ceil(PANEL) * units * PANEL];
    if k == 0 {
        return out;
    }
    // Rows of whole units (f32; bf16 of even k and lda, 4-byte aligned) as u32
    // words, `ldu` apart: 16 rows at a time go through register transposes.
    let words = (k.is_multiple_of(S::UNIT) && lda.is_multiple_of(S::UNIT))
        .then(|| bytemuck::try_cast_slice::<S, u32>(&a[..a.len() / S::UNIT * S::UNIT]).ok())
        .flatten();
    let ldu = lda / S::UNIT;
    let pack = |(p, dst): (usize, &mut [u32])| {
        let r0 = p * PANEL;
        let valid = PANEL.min(rows - r0);
        let mut lane0 = 0;
        if let Some(words) = words {
            while lane0 + 16 <= valid && pack16(words, r0 + lane0, ldu, units, dst, lane0) {
                lane0 += 16;
            }
        }
        for lane in lane0..valid {
            let row = &a[(r0 + lane) * lda..][..k];
            for (u, chunk) in row.chunks(S::UNIT).enumerate() {
                dst[u * PANEL + lane] = S::unit(chunk);
            }
        }
    };
    if par {
        out.par_chunks_mut(units * PANEL).enumerate().for_each(pack);
    } else {
        out.chunks_mut(units * PANEL).enumerate().for_each(pack);
    }
    out
}

/// `dst[u·32 + lane0 + l] = words[(row0 + l)·ldu + u]` for l < 16, u < units,
/// by 16 × 16 register transposes; false (nothing written) without AVX-512 or
/// when an operand is shorter than that.
fn pack16(
    words: &[u32],
    row0: usize,
    ldu: usize,
    units: usize,
    dst: &mut [u32],
    lane0: usize,
) -> bool {
    let fits = units > 0
        && (row0 + 15)
            .checked_mul(ldu)
            .is_some_and(|x| x + units <= words.len())
        && (units - 1) * PANEL + lane0 + 16 <= dst.len();
    #[cfg(target_arch = "x86_64")]
    if fits && super::isa().avx512 {
        // SAFETY: the CPU has AVX-512 F (`isa()` detected it). `pack16` reads
        // words[(row0 + l)·ldu + u] for l < 16, u < units — inside `words` by the
        // check (row0 + 15)·ldu + units ≤ words.len() — and writes
        // dst[u·32 + lane0 + l], inside `dst` by the check.
        unsafe { x86::pack16(words.as_ptr(), row0, ldu, units, dst.as_mut_ptr(), lane0) };
        return true;
    }
    let _ = (fits, words, row0, ldu, units, dst, lane0);
    false
}

/// A row-major operand of [`attention_head`]: `rows × cols`, element (i, j) at
/// `data[i·ld + j]`.
#[derive(Clone, Copy)]
pub(super) struct Strided<'a, S> {
    pub data: &'a [S],
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
}

impl<S> Strided<'_, S> {
    fn holds(&self) -> bool {
        self.cols <= self.ld
            && (self.rows == 0
                || (self.rows - 1)
                    .checked_mul(self.ld)
                    .and_then(|x| x.checked_add(self.cols))
                    .is_some_and(|x| x <= self.data.len()))
    }
}

/// Query rows per block of [`attention_head`]: bounds the score scratch.
const Q_BLOCK: usize = 128;

/// `softmax(q kᵀ · scale) v` for query rows of one head, on the calling thread
/// (a task of the attention op), into `out` `[rows, hd]` (f32, normalised).
/// `softmax(s, ld, nk, inv)` turns the scores of each row (`s[i·ld ..][..nk]`)
/// into unnormalised probabilities in place and writes one over its sum.
///
/// No transposes: K and V are A operands (keys, resp. head columns, in lanes;
/// packed once for all the query blocks), so the kernel leaves the scores
/// row-major (query i's keys in lanes of column i) and the output row-major
/// (query i's head columns in lanes); the probabilities are W's rows as they are
/// (f32) or rounded to bf16, as FlashAttention does for `P·V` on GPUs. Errors
/// (never runs) where `S::available()` is false or an operand is shorter than
/// its dims.
pub(super) fn attention_head<S: PanelElem>(
    q: Strided<'_, S>,
    k: Strided<'_, S>,
    v: Strided<'_, S>,
    softmax: impl Fn(&mut [f32], usize, usize, &mut [f32]),
    out: &mut [f32],
) -> Result<()> {
    let (rows, hd, nk) = (q.rows, q.cols, k.rows);
    if !S::available() {
        return Err(internal(
            "panel GEMM called on a CPU without its instructions",
        ));
    }
    if k.cols != hd
        || v.cols != hd
        || v.rows != nk
        || !q.holds()
        || !k.holds()
        || !v.holds()
        || rows.checked_mul(hd).is_none_or(|l| l > out.len())
    {
        return Err(internal("panel attention: operand shorter than its dims"));
    }
    if rows == 0 || hd == 0 {
        return Ok(());
    }
    if nk == 0 {
        out[..rows * hd].fill(0.0);
        return Ok(());
    }
    let k_panels = pack_panels(k.data, nk, hd, k.ld, false);
    let k_lay = ALayout {
        panel: hd.div_ceil(S::UNIT) * PANEL,
        unit: PANEL,
    };
    // V over keys: unit u of panel p, lane l = (V[UNIT·u ..][32p + l]), the
    // head's columns in lanes, zero past hd and past nk.
    let units = nk.div_ceil(S::UNIT);
    let v_pad = hd.div_ceil(PANEL);
    let mut v_panels = vec![0u32; v_pad * units * PANEL];
    for (u, keys) in v.data.chunks(S::UNIT * v.ld).take(units).enumerate() {
        for c in 0..hd {
            let pair: [S; 2] =
                std::array::from_fn(|e| keys.get(e * v.ld + c).copied().unwrap_or_default());
            let cnt = S::UNIT.min(nk - S::UNIT * u);
            v_panels[((c / PANEL) * units + u) * PANEL + c % PANEL] = S::unit(&pair[..cnt]);
        }
    }
    let v_lay = ALayout {
        panel: units * PANEL,
        unit: PANEL,
    };
    let ld = nk.div_ceil(PANEL) * PANEL;
    let hd_pad = v_pad * PANEL;
    let mut inv = vec![0.0f32; Q_BLOCK];
    for (bi, out_blk) in out[..rows * hd].chunks_mut(Q_BLOCK * hd).enumerate() {
        let r0 = bi * Q_BLOCK;
        let n = out_blk.len() / hd;
        // Scores: column i (query r0 + i) holds its keys in lanes.
        let mut s = col_sums(&k_panels, k_lay, nk, &q.data[r0 * q.ld..], n, hd, q.ld)?;
        softmax(&mut s, ld, nk, &mut inv[..n]);
        let p = S::probs(&s, ld, n, nk);
        let o = col_sums(&v_panels, v_lay, hd, &p, n, nk, ld)?;
        for ((dst, src), z) in out_blk.chunks_mut(hd).zip(o.chunks(hd_pad)).zip(&inv) {
            for (d, x) in dst.iter_mut().zip(src) {
                *d = x * z;
            }
        }
    }
    Ok(())
}

/// `src` rounded to bf16 (to nearest even; NaN stays NaN), a loop that
/// vectorises (half's conversion branches per element).
fn round_bf16(src: &[f32], dst: &mut [bf16]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        let b = x.to_bits();
        let r = if x.is_nan() {
            (b >> 16) | 0x40
        } else {
            b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16
        };
        *d = bf16::from_bits(r as u16);
    }
}

/// Where A's packed units lie: unit `u` of panel `p` is the 32 lanes at
/// `[p·panel + u·unit ..]` (row panels from [`pack_panels`]: `panel = units·32`,
/// `unit = 32`; column-major sums used as A: `panel = 32`, `unit = ld`).
#[derive(Clone, Copy)]
struct ALayout {
    panel: usize,
    unit: usize,
}

/// The column-major sums `[cols_pad][rows_pad]` (`cols_pad` a multiple of NR,
/// `rows_pad` of 32): element `[j][i] = Σ_p a(i, p)·w[j·ldw + p]` for i < rows,
/// j < cols, zero in padding rows; padding columns hold copies of the last.
fn col_sums<S: PanelElem>(
    a: &[u32],
    lay: ALayout,
    rows: usize,
    w: &[S],
    cols: usize,
    k: usize,
    ldw: usize,
) -> Result<Vec<f32>> {
    let units = k.div_ceil(S::UNIT);
    let n_panels = rows.div_ceil(PANEL);
    let rows_pad = n_panels * PANEL;
    // Column-major sums: column j of the tile is tcol[j·rows_pad ..][..rows_pad].
    let cols_pad = cols.div_ceil(NR) * NR;
    let mut tcol = vec![0.0f32; cols_pad * rows_pad];
    if k == 0 || cols == 0 {
        return Ok(tcol);
    }
    // The group's NR rows of W for one chunk, each at a fixed stride of KCP units:
    // contiguous (W's own rows lie k elements apart, and at k·size a multiple of
    // 4 KiB all twelve fall in the same L1 sets), and one base register for the
    // kernel. A bf16 odd tail's missing half is zero here, so it adds 0 · 0.
    let mut w_chunk = vec![0u32; NR * KCP];
    for u0 in (0..units).step_by(KCP) {
        let nu = KCP.min(units - u0);
        let elems = (S::UNIT * nu).min(k - S::UNIT * u0);
        for j0 in (0..cols).step_by(NR) {
            // Past the last column the kernel reads the last one again; those sums
            // land in the padding columns of `tcol` and are never read.
            for (j, dst) in w_chunk.chunks_mut(KCP).enumerate() {
                let row = &w[(j0 + j).min(cols - 1) * ldw + S::UNIT * u0..][..elems];
                copy_units(row, &mut dst[..nu]);
            }
            // W streams from memory once per tile: ask for the next group's rows of
            // this chunk (after the last group: the first group's rows of the next
            // chunk) while this group runs over the panels, a few rows before each
            // panel, so the requests spread over the group's arithmetic instead of
            // filling the miss buffers at once.
            let next: Option<(usize, usize, usize)> = if j0 + NR < cols {
                Some((j0 + NR, (j0 + 2 * NR).min(cols), S::UNIT * u0))
            } else if u0 + KCP < units {
                Some((0, NR.min(cols), S::UNIT * (u0 + KCP)))
            } else {
                None
            };
            for panel in 0..n_panels {
                if let Some((ja, jb, at)) = next {
                    let len = (S::UNIT * KCP).min(k - at);
                    for j in (ja + panel..jb).step_by(n_panels) {
                        prefetch(&w[j * ldw + at..][..len]);
                    }
                }
                let half = rows - panel * PANEL <= PANEL / 2;
                let a_panel = a
                    .get(panel * lay.panel + u0 * lay.unit..)
                    .ok_or_else(|| internal("panel: A shorter than its panels"))?;
                let dst = &mut tcol[j0 * rows_pad + panel * PANEL..];
                panel_add::<S>(a_panel, lay.unit, &w_chunk, nu, half, dst, rows_pad)?;
            }
        }
    }
    Ok(tcol)
}

/// Hint the CPU to bring `data` into the cache (one hint per 64-byte line).
#[inline]
fn prefetch<S>(data: &[S]) {
    #[cfg(target_arch = "x86_64")]
    {
        let bytes = std::mem::size_of_val(data);
        let base = data.as_ptr().cast::<i8>();
        for off in (0..bytes).step_by(64) {
            // SAFETY: prefetch only hints the cache and never faults; the address
            // is inside `data` (off < its size in bytes).
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(base.add(off))
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// `row`'s elements as units (`dst`'s bytes: a pair of bf16 in little-endian
/// order is the unit `lo | hi << 16`), zero past them.
fn copy_units<S: PanelElem>(row: &[S], dst: &mut [u32]) {
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(dst);
    let src: &[u8] = bytemuck::cast_slice(row);
    let n = src.len().min(bytes.len());
    bytes[..n].copy_from_slice(&src[..n]);
    bytes[n..].fill(0);
}

/// `dst[j·ld + lane] += Σ_{u < nu} a[u·sa + lane] · w[j·KCP + u]` (products of
/// units) for j < NR and lane < 32 (< 16 when `half`).
#[allow(clippy::too_many_arguments)]
fn panel_add<S: PanelElem>(
    a: &[u32],
    sa: usize,
    w: &[u32],
    nu: usize,
    half: bool,
    dst: &mut [f32],
    ld: usize,
) -> Result<()> {
    let fits = (NR - 1) * ld + PANEL <= dst.len();
    if nu == 0
        || nu > KCP
        || sa < PANEL
        || (nu - 1).checked_mul(sa).is_none_or(|x| x + PANEL > a.len())
        || w.len() < (NR - 1) * KCP + nu
        || !fits
        || !S::available()
    {
        return Err(internal("panel: operands shorter than the panel"));
    }
    // SAFETY: `S::available()` checked that the CPU has the kernel's features. It
    // reads a[u·sa + lane] for u < nu, lane < 32 (a.len() ≥ (nu − 1)·sa + 32),
    // w[j·KCP + u] for j < NR, u < nu ≤ KCP
    // (w.len() ≥ (NR − 1)·KCP + nu), and reads and writes dst[j·ld + lane] for
    // j < NR, lane < 32, inside `dst` by the check (NR − 1)·ld + 32 ≤ dst.len().
    unsafe { S::kernel(a.as_ptr(), sa, w.as_ptr(), nu, half, dst.as_mut_ptr(), ld) };
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{KCP, NR};

    /// The body of a panel kernel: `$b` gives W's unit `u` of column `j` as a
    /// broadcast register, `$madd(acc, a, b)` accumulates.
    /// No closures and no iterator adapters: a closure does not inherit
    /// `target_feature`, and one that is not inlined costs a call per step.
    macro_rules! panel_body {
        ($a:ident, $sa:ident, $nu:expr, $half:ident, $dst:ident, $ld:ident,
         |$u:ident, $j:ident| $b:expr, $madd:ident) => {{
            let full = $nu;
            if $half {
                let mut acc = [_mm512_setzero_ps(); NR];
                for $u in 0..full {
                    // SAFETY: u < nu: the 64 bytes at a + u·sa are inside `a`; the
                    // unit of W read by `$b` is inside each row (the caller's bound).
                    unsafe {
                        let a0 = _mm512_loadu_si512($a.add($u * $sa).cast());
                        for $j in 0..NR {
                            acc[$j] = $madd(acc[$j], a0, $b);
                        }
                    }
                }
                for (j, v) in acc.iter().enumerate() {
                    // SAFETY: dst + j·ld + 0..16 is inside the caller's guarantee.
                    unsafe {
                        let d = $dst.add(j * $ld);
                        _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), *v));
                    }
                }
                return;
            }
            let mut lo = [_mm512_setzero_ps(); NR];
            let mut hi = [_mm512_setzero_ps(); NR];
            for $u in 0..full {
                // SAFETY: u < nu: the 128 bytes at a + u·sa are inside `a`; the unit
                // of W read by `$b` is inside each row (the caller's bound).
                unsafe {
                    let a0 = _mm512_loadu_si512($a.add($u * $sa).cast());
                    let a1 = _mm512_loadu_si512($a.add($u * $sa + 16).cast());
                    for $j in 0..NR {
                        let b = $b;
                        lo[$j] = $madd(lo[$j], a0, b);
                        hi[$j] = $madd(hi[$j], a1, b);
                    }
                }
            }
            for j in 0..NR {
                // SAFETY: dst + j·ld + 0..32 is inside the caller's guarantee.
                unsafe {
                    let d = $dst.add(j * $ld);
                    _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), lo[j]));
                    let d = d.add(16);
                    _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), hi[j]));
                }
            }
        }};
    }

    /// `buf[r·cols + j] = tcol[j·ld + i0 + r]` for r < 16, j < cols, by 16 × 16
    /// transposes in registers (the columns past the last multiple of 16 one by
    /// one).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F; `tcol` must be valid for reading
    /// `(cols − 1)·ld + i0 + 16` f32 and `buf` for writing `16·cols`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather16(
        tcol: *const f32,
        ld: usize,
        i0: usize,
        cols: usize,
        buf: *mut f32,
    ) {
        let full = cols / 16 * 16;
        for j0 in (0..full).step_by(16) {
            // SAFETY: j0 + c < cols: each load reads tcol[(j0 + c)·ld + i0 ..][..16]
            // and each store writes buf[r·cols + j0 ..][..16], inside the caller's
            // bounds.
            unsafe {
                let mut m: [__m512; 16] =
                    std::array::from_fn(|c| _mm512_loadu_ps(tcol.add((j0 + c) * ld + i0)));
                transpose16(&mut m);
                for (r, v) in m.iter().enumerate() {
                    _mm512_storeu_ps(buf.add(r * cols + j0), *v);
                }
            }
        }
        for j in full..cols {
            for r in 0..16 {
                // SAFETY: j < cols, r < 16: inside the caller's bounds.
                unsafe { *buf.add(r * cols + j) = *tcol.add(j * ld + i0 + r) };
            }
        }
    }

    /// `dst[u·32 + lane0 + l] = words[(row0 + l)·ldu + u]` for l < 16, u < units
    /// (16 × 16 transposes, the units past the last multiple of 16 one by one).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F; `words` must be valid for reading
    /// `(row0 + 15)·ldu + units` u32 and `dst` for writing `(units − 1)·32 +
    /// lane0 + 16`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack16(
        words: *const u32,
        row0: usize,
        ldu: usize,
        units: usize,
        dst: *mut u32,
        lane0: usize,
    ) {
        let full = units / 16 * 16;
        for u0 in (0..full).step_by(16) {
            // SAFETY: u0 + 16 ≤ units: each load reads words[(row0 + l)·ldu + u0
            // ..][..16] and each store writes dst[(u0 + i)·32 + lane0 ..][..16],
            // inside the caller's bounds.
            unsafe {
                let mut m: [__m512; 16] = std::array::from_fn(|l| {
                    _mm512_castsi512_ps(_mm512_loadu_si512(words.add((row0 + l) * ldu + u0).cast()))
                });
                transpose16(&mut m);
                for (i, v) in m.iter().enumerate() {
                    _mm512_storeu_si512(
                        dst.add((u0 + i) * 32 + lane0).cast(),
                        _mm512_castps_si512(*v),
                    );
                }
            }
        }
        for u in full..units {
            for l in 0..16 {
                // SAFETY: u < units, l < 16: inside the caller's bounds.
                unsafe { *dst.add(u * 32 + lane0 + l) = *words.add((row0 + l) * ldu + u) };
            }
        }
    }

    /// Transpose the 16 × 16 matrix whose row c is `m[c]`.
    #[inline(always)]
    fn transpose16(m: &mut [__m512; 16]) {
        // SAFETY: register shuffles only, reached from `gather16` (AVX-512 F).
        unsafe {
            let lo = |a, b| _mm512_unpacklo_ps(a, b);
            let hi = |a, b| _mm512_unpackhi_ps(a, b);
            let mut t = [_mm512_setzero_ps(); 16];
            for p in 0..8 {
                t[2 * p] = lo(m[2 * p], m[2 * p + 1]);
                t[2 * p + 1] = hi(m[2 * p], m[2 * p + 1]);
            }
            let pd_lo = |a: __m512, b: __m512| {
                _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
            };
            let pd_hi = |a: __m512, b: __m512| {
                _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
            };
            for q in 0..4 {
                let b = 4 * q;
                m[b] = pd_lo(t[b], t[b + 2]);
                m[b + 1] = pd_hi(t[b], t[b + 2]);
                m[b + 2] = pd_lo(t[b + 1], t[b + 3]);
                m[b + 3] = pd_hi(t[b + 1], t[b + 3]);
            }
            for h in 0..2 {
                let b = 8 * h;
                for i in 0..4 {
                    t[b + i] = _mm512_shuffle_f32x4::<0x88>(m[b + i], m[b + 4 + i]);
                    t[b + 4 + i] = _mm512_shuffle_f32x4::<0xdd>(m[b + i], m[b + 4 + i]);
                }
            }
            for i in 0..8 {
                m[i] = _mm512_shuffle_f32x4::<0x88>(t[i], t[8 + i]);
                m[8 + i] = _mm512_shuffle_f32x4::<0xdd>(t[i], t[8 + i]);
            }
        }
    }

    /// `acc += a · b` over bf16 pairs.
    #[inline(always)]
    fn dp(acc: __m512, a: __m512i, b: __m512i) -> __m512 {
        // SAFETY: only reached inside functions compiled with AVX-512 BF16 (the
        // callers below); both casts are bit casts of 64 bytes of plain data.
        unsafe {
            _mm512_dpbf16_ps(
                acc,
                std::mem::transmute::<__m512i, __m512bh>(a),
                std::mem::transmute::<__m512i, __m512bh>(b),
            )
        }
    }

    /// `acc += a · b` over f32.
    #[inline(always)]
    fn fma(acc: __m512, a: __m512i, b: __m512i) -> __m512 {
        // SAFETY: only reached inside functions compiled with AVX-512 F and FMA.
        unsafe { _mm512_fmadd_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(b), acc) }
    }

    /// The bf16 panel kernel ([`super::PanelElem::kernel`]).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW, VL and BF16; `a` must be valid for reading
    /// `(nu − 1)·sa + 32` u32 and `w` for `(NR − 1)·KCP + nu` u32, nu ≤ KCP; `dst + j·ld +
    /// lane` must be valid for reads and writes for j < NR, lane < 32.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn panel_bf16(
        a: *const u32,
        sa: usize,
        w: *const u32,
        nu: usize,
        half: bool,
        dst: *mut f32,
        ld: usize,
    ) {
        panel_body!(
            a,
            sa,
            nu,
            half,
            dst,
            ld,
            |u, j| _mm512_set1_epi32(w.add(j * KCP + u).cast::<i32>().read()),
            dp
        )
    }

    /// The f32 panel kernel ([`super::PanelElem::kernel`]).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and FMA; otherwise as [`panel_bf16`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub(super) unsafe fn panel_f32(
        a: *const u32,
        sa: usize,
        w: *const u32,
        nu: usize,
        half: bool,
        dst: *mut f32,
        ld: usize,
    ) {
        panel_body!(
            a,
            sa,
            nu,
            half,
            dst,
            ld,
            |u, j| _mm512_set1_epi32(w.add(j * KCP + u).cast::<i32>().read()),
            fma
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Activation;

    fn values<S: Element>(n: usize, seed: u64) -> Vec<S> {
        crate::random::Rng::new(seed).vec(n, 1.0)
    }

    #[test]
    fn bf16_matches_f64_dot_products_at_edges() {
        check_edges::<bf16>(4e-3);
    }

    #[test]
    fn f32_matches_f64_dot_products_at_edges() {
        check_edges::<f32>(1e-6);
    }

    /// Whether `S`'s kernel is missing on this CPU: then the test says so and
    /// skips, or fails where `TESSERA_REQUIRE_AVX512=1`.
    fn skip<S: PanelElem + Element>() -> bool {
        if S::available() {
            return false;
        }
        let msg = format!("no AVX-512 kernel for {:?} on this CPU", S::DTYPE);
        assert!(
            std::env::var_os("TESSERA_REQUIRE_AVX512").is_none_or(|v| v != "1"),
            "{msg} (TESSERA_REQUIRE_AVX512=1)"
        );
        // Straight to stderr: libtest captures eprintln! of a passing test.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: {msg}");
        true
    }

    fn check_edges<S: PanelElem + Element>(bar: f64) {
        if skip::<S>() {
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
            let a: Vec<S> = values(m * k, 1 + m as u64);
            let w: Vec<S> = values(n * k, 2 + n as u64);
            let mut out = vec![S::from_f32(f32::NAN); m * n];
            let epi = Epilogue::<S> {
                bias: None,
                act: Activation::None,
                residual: None,
            };
            matmul_wt(m, k, n, PanelSource::Rows(&a), &w, &epi, &mut out).unwrap();
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| {
                            f64::from(a[i * k + p].to_f32()) * f64::from(w[j * k + p].to_f32())
                        })
                        .sum();
                    let got = f64::from(out[i * n + j].to_f32());
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
            assert!(
                rel < bar,
                "{:?} m={m} k={k} n={n}: relative L2 {rel:e}",
                S::DTYPE
            );
        }
    }

    #[test]
    fn gather_rows_transposes() {
        // Columns past the last multiple of 16 (37 = 2·16 + 5) and a second row
        // block (i0 = 16 of ld = 64).
        let (ld, cols) = (64, 37);
        let tcol: Vec<f32> = (0..ld * cols).map(|x| x as f32).collect();
        for i0 in [0, 16, 48] {
            let mut buf = vec![f32::NAN; GATHER * cols];
            gather_rows(&tcol, ld, i0, cols, &mut buf).unwrap();
            for r in 0..GATHER {
                for j in 0..cols {
                    assert_eq!(
                        buf[r * cols + j],
                        tcol[j * ld + i0 + r],
                        "i0={i0} r={r} j={j}"
                    );
                }
            }
        }
        let mut buf = vec![0.0; GATHER * cols];
        assert!(gather_rows(&tcol, ld, 56, cols, &mut buf).is_err());
        assert!(gather_rows(&tcol[..ld * cols - 1], ld, 48, cols, &mut buf).is_err());
    }

    #[test]
    fn short_operands_are_errors() {
        if skip::<bf16>() {
            return;
        }
        let a: Vec<bf16> = values(12, 3);
        let epi = Epilogue::<bf16> {
            bias: None,
            act: Activation::None,
            residual: None,
        };
        let mut out = vec![bf16::ZERO; 4];
        assert!(matmul_wt(2, 6, 2, PanelSource::Rows(&a[..11]), &a, &epi, &mut out).is_err());
        assert!(matmul_wt(2, 6, 2, PanelSource::Rows(&a), &a, &epi, &mut out[..3]).is_err());
        matmul_wt(2, 6, 2, PanelSource::Rows(&a), &a, &epi, &mut out).unwrap();
    }
}
