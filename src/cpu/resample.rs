//! The arithmetic of Pillow's 8-bit resampling passes (`ImagingResampleHorizontal_8bpc`,
//! `ImagingResampleVertical_8bpc`) for [`crate::preprocess::resize`], vectorised
//! without changing a bit, compiled for AVX2 where the CPU has it (detected at run
//! time; `TESSERA_CPU_ISA=portable` turns it off).
//!
//! Every output byte is `clip8(2^21 + Σ pixel·weight)` with fixed-point weights
//! (22 fractional bits) that `preprocess` computes as Pillow does. The sums are
//! wrapping `i32` additions: in any order they give the same value, so the passes
//! may sum blocks of bytes at a time instead of one output byte at a time, the
//! horizontal pass may run as the vertical one on the image turned a quarter,
//! and a weight may be split in two 16-bit halves whose sums are added at the end.

/// Fractional bits of the fixed-point weights (Pillow's `PRECISION_BITS`).
pub(crate) const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Lanes of the horizontal pass's sums: 8 pixels × 3 channels, a multiple of 3
/// so that lane `l` always holds channel `l mod 3`.
const LANES: usize = 24;

/// Taps above which [`horizontal`] sums one pixel at a time (without AVX2).
const LONG_TAPS: usize = 32;

/// Taps above which [`horizontal`] takes the channel planes (with AVX2).
const PLANE_TAPS: usize = 12;

/// Pixels per side of the square blocks [`transpose`] moves.
const BLOCK: usize = 32;

/// Pillow's rounding to a byte: the sum's integer part, clamped to 0..=255.
pub(crate) fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One output index's taps: the first input index and the weights.
pub(crate) type Taps = (usize, Vec<i32>);

/// RGB rows of `width` pixels (`src`, `rows·width·3` bytes) resampled along x to
/// `taps.len()` pixels each. Taps must lie inside the row (first + len ≤ width).
///
/// With AVX2, taps longer than [`PLANE_TAPS`] (bicubic shrinking by more than
/// about 3) take the channel planes (`x86::horizontal_planes_avx2`: 16 taps a
/// pair of `pmaddwd`), the others [`horizontal_turned`]. Without AVX2, short
/// taps (≤ [`LONG_TAPS`]: bicubic shrinking by less than about 8, and every
/// enlargement) take [`horizontal_turned`], long ones [`horizontal_lanes`]: the
/// latter pays a fixed cost per output pixel that many taps amortise, the former
/// two turns of the image, which cost more the larger it is. Measured on a Zen 4
/// core (bicubic; turned / lanes / planes, each forced; the vertical pass as it
/// was before its column blocks): 640×480 → 224 (12 taps) 0.73 / – / 0.73 ms, → 384
/// (7) 0.97 / – / 1.19; 1600×1200 → 224 3.5 / – / 2.2; 4032×3024 → 224 – / 17.2
/// / 9.8, → 384 – / 22.3 / 11.6 (turned there: ~4× lanes).
pub(crate) fn horizontal(src: &[u8], width: usize, taps: &[Taps]) -> Vec<u8> {
    debug_assert!(taps.iter().all(|(first, k)| first + k.len() <= width));
    let longest = taps.iter().map(|(_, k)| k.len()).max().unwrap_or(0);
    #[cfg(target_arch = "x86_64")]
    if longest > PLANE_TAPS && super::isa().avx2 {
        if let Some(split) = SplitTaps::new(taps) {
            // SAFETY: the CPU has AVX2 (`isa()` detected it).
            return unsafe { x86::horizontal_planes_avx2(src, width, &split) };
        }
    }
    if longest > LONG_TAPS {
        horizontal_lanes(src, width, taps)
    } else {
        horizontal_turned(src, width, taps)
    }
}

/// Long taps with their weights split for 16-bit multiplies (`pmaddwd`): each
/// weight `w = hi·2¹¹ + lo` with `lo` in `0..2¹¹`, so that over a run of bytes
/// `Σ p·w = 2¹¹·Σ p·hi + Σ p·lo`, both sums exact in `i32` (wrapping, as the
/// whole), per output pixel zero-padded to whole chunks of [`CHUNK`] taps.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct SplitTaps {
    /// Per output pixel: its first input pixel, and its chunks' offset in
    /// `hi` / `lo` (in chunks) and count.
    spans: Vec<(usize, usize, usize)>,
    hi: Vec<[i16; CHUNK]>,
    lo: Vec<[i16; CHUNK]>,
    /// Length of a channel plane: every span's chunks lie inside it.
    plane: usize,
}

/// Taps a chunk of [`SplitTaps`]: one 256-bit vector of 16-bit lanes.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const CHUNK: usize = 16;

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl SplitTaps {
    /// `None` when a weight's high part does not fit 16 bits (|w| ≥ 2²⁶:
    /// never for Pillow's normalised filters).
    fn new(taps: &[Taps]) -> Option<Self> {
        let mut spans = Vec::with_capacity(taps.len());
        let (mut hi, mut lo) = (Vec::new(), Vec::new());
        let mut plane = 0;
        for (first, k) in taps {
            let chunks = k.len().div_ceil(CHUNK);
            spans.push((*first, hi.len(), chunks));
            plane = plane.max(first + chunks * CHUNK);
            for c in k.chunks(CHUNK) {
                let (mut h, mut l) = ([0i16; CHUNK], [0i16; CHUNK]);
                for ((h, l), &w) in h.iter_mut().zip(&mut l).zip(c) {
                    *h = i16::try_from(w >> 11).ok()?;
                    *l = (w & 0x7ff) as i16;
                }
                hi.push(h);
                lo.push(l);
            }
        }
        Some(SplitTaps {
            spans,
            hi,
            lo,
            plane,
        })
    }
}

/// [`horizontal`] as [`vertical`]'s pass on the image turned a quarter (columns
/// as rows), whole rows of sums at a time, and the result turned back: a
/// pixel's output bytes are the same sums.
fn horizontal_turned(src: &[u8], width: usize, taps: &[Taps]) -> Vec<u8> {
    let w3 = width * 3;
    if w3 == 0 || taps.is_empty() {
        return Vec::new();
    }
    let rows = src.len() / w3;
    let turned = transpose(&src[..rows * w3], width, rows);
    let sums = vertical(&turned, rows * 3, taps);
    transpose(&sums, rows, taps.len())
}

/// [`horizontal`] one output pixel at a time, for long taps.
///
/// A pixel's taps are one run of `3·len` bytes, multiplied by its weights repeated
/// per channel (zero-padded to whole [`LANES`]) into lane-wise sums, added per
/// channel at the end.
fn horizontal_lanes(src: &[u8], width: usize, taps: &[Taps]) -> Vec<u8> {
    let w3 = width * 3;
    let out_w3 = taps.len() * 3;
    if w3 == 0 || out_w3 == 0 {
        return Vec::new();
    }
    // Per output pixel: (first byte of its run, offset of its weights, run length).
    let mut weights: Vec<i32> = Vec::new();
    let mut spans = Vec::with_capacity(taps.len());
    for (first, k) in taps {
        let at = weights.len();
        let run = (3 * k.len()).div_ceil(LANES) * LANES;
        weights.extend(k.iter().flat_map(|&w| [w; 3]));
        weights.resize(at + run, 0);
        spans.push((first * 3, at, run));
    }
    // Each row is copied into zero padding long enough for every run.
    let padded = spans
        .iter()
        .map(|&(s, _, n)| s + n)
        .max()
        .unwrap_or(0)
        .max(w3);
    let mut row = vec![0u8; padded];
    let mut out = vec![0u8; src.len() / w3 * out_w3];
    let sums = lane_sums_fn();
    for (src_row, out_row) in src.chunks_exact(w3).zip(out.chunks_exact_mut(out_w3)) {
        row[..w3].copy_from_slice(src_row);
        for (&(s, at, n), px) in spans.iter().zip(out_row.chunks_exact_mut(3)) {
            let acc = sums(&row[s..s + n], &weights[at..at + n]);
            for (c, v) in px.iter_mut().enumerate() {
                let sum = acc[c..]
                    .iter()
                    .step_by(3)
                    .fold(1i32 << (PRECISION_BITS - 1), |a, &x| a.wrapping_add(x));
                *v = clip8(sum);
            }
        }
    }
    out
}

/// An RGB image of `width × height` pixels (`src`, row after row) turned into
/// one of `height × width`: output row `x` holds input column `x`, top to
/// bottom. Moved in blocks of [`BLOCK`]² pixels, so that both sides stay in
/// cache.
fn transpose(src: &[u8], width: usize, height: usize) -> Vec<u8> {
    debug_assert_eq!(src.len(), width * height * 3);
    let mut out = vec![0u8; src.len()];
    let (src, _) = src.as_chunks::<3>();
    let (dst, _) = out.as_chunks_mut::<3>();
    for y0 in (0..height).step_by(BLOCK) {
        let y1 = (y0 + BLOCK).min(height);
        for x0 in (0..width).step_by(BLOCK) {
            let x1 = (x0 + BLOCK).min(width);
            for y in y0..y1 {
                let row = &src[y * width + x0..y * width + x1];
                for (x, px) in (x0..x1).zip(row) {
                    dst[x * height + y] = *px;
                }
            }
        }
    }
    out
}

/// Rows of `row_len` bytes (`src`) resampled along y: output row `i` is
/// `clip8(2^21 + Σⱼ src row (first + j)·kⱼ)` element by element, [`COLUMNS`]
/// bytes at a time through all the taps (the sums held in registers: the resize
/// of a 640×480 photo to 224 or 384 1.1× as fast as with each tap's whole row
/// added into a row of sums in memory, on a Zen 4 core). Taps must lie inside
/// `src`.
pub(crate) fn vertical(src: &[u8], row_len: usize, taps: &[Taps]) -> Vec<u8> {
    debug_assert!(taps
        .iter()
        .all(|(first, k)| (first + k.len()) * row_len <= src.len()));
    let mut out = vec![0u8; taps.len() * row_len];
    if row_len == 0 {
        return out;
    }
    let block = block_fn();
    for ((first, k), out_row) in taps.iter().zip(out.chunks_exact_mut(row_len)) {
        // Whole blocks of COLUMNS with the sums in registers; the rest as a last
        // block ending at the row's end (its first columns computed twice, the
        // same bytes), or byte by byte in a row shorter than a block.
        let (blocks, rest) = out_row.as_chunks_mut::<COLUMNS>();
        for (b, dst) in blocks.iter_mut().enumerate() {
            block(src, row_len, *first, k, b * COLUMNS, dst);
        }
        if rest.is_empty() {
            continue;
        }
        if row_len >= COLUMNS {
            let col = row_len - COLUMNS;
            let mut last = [0u8; COLUMNS];
            block(src, row_len, *first, k, col, &mut last);
            out_row[col..].copy_from_slice(&last);
            continue;
        }
        for (i, o) in rest.iter_mut().enumerate() {
            let sum = k
                .iter()
                .enumerate()
                .fold(1i32 << (PRECISION_BITS - 1), |a, (j, &w)| {
                    a.wrapping_add(i32::from(src[(first + j) * row_len + i]) * w)
                });
            *o = clip8(sum);
        }
    }
    out
}

/// Columns of the vertical pass summed at once: their sums stay in registers
/// (eight 256-bit vectors) through all of an output row's taps.
const COLUMNS: usize = 64;

/// Output bytes `col..col + COLUMNS` of a vertical pass's output row with taps
/// `(first, k)` into `dst`.
#[inline(always)]
fn block(src: &[u8], row_len: usize, first: usize, k: &[i32], col: usize, dst: &mut [u8; COLUMNS]) {
    let mut acc = [1i32 << (PRECISION_BITS - 1); COLUMNS];
    for (j, &w) in k.iter().enumerate() {
        let at = (first + j) * row_len + col;
        let Some(row) = src.get(at..at + COLUMNS) else {
            return; // unreachable: the taps lie inside `src`
        };
        for (a, &p) in acc.iter_mut().zip(row) {
            *a = a.wrapping_add(i32::from(p) * w);
        }
    }
    for (o, &a) in dst.iter_mut().zip(&acc) {
        *o = clip8(a);
    }
}

#[inline(never)]
fn block_portable(
    src: &[u8],
    row_len: usize,
    first: usize,
    k: &[i32],
    col: usize,
    dst: &mut [u8; COLUMNS],
) {
    block(src, row_len, first, k, col, dst)
}

/// [`block`] for this CPU.
fn block_fn() -> impl Fn(&[u8], usize, usize, &[i32], usize, &mut [u8; COLUMNS]) {
    #[cfg(target_arch = "x86_64")]
    let avx2 = super::isa().avx2;
    #[cfg(not(target_arch = "x86_64"))]
    let avx2 = false;
    move |src: &[u8],
          row_len: usize,
          first: usize,
          k: &[i32],
          col: usize,
          dst: &mut [u8; COLUMNS]| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU has AVX2 (`isa()` detected it); the function is
            // safe Rust otherwise.
            return unsafe { x86::block_avx2(src, row_len, first, k, col, dst) };
        }
        block_portable(src, row_len, first, k, col, dst)
    }
}

/// `acc[l] = Σ_c bytes[c·LANES + l]·k[c·LANES + l]` (wrapping) over whole chunks.
/// Called through out-of-line wrappers (`lane_sums_portable`, `x86::lane_sums_avx2`):
/// inlined into the pass's loops the compiler spreads the lanes over scalar
/// registers; on its own it keeps them in vector registers (measured 2.4× faster
/// portable, 5× with AVX2).
#[inline(always)]
fn lane_sums(bytes: &[u8], k: &[i32]) -> [i32; LANES] {
    let mut acc = [0i32; LANES];
    let (bytes, _) = bytes.as_chunks::<LANES>();
    let (k, _) = k.as_chunks::<LANES>();
    for (bytes, k) in bytes.iter().zip(k) {
        for ((a, &b), &w) in acc.iter_mut().zip(bytes).zip(k) {
            *a = a.wrapping_add(i32::from(b) * w);
        }
    }
    acc
}

#[inline(never)]
fn lane_sums_portable(bytes: &[u8], k: &[i32]) -> [i32; LANES] {
    lane_sums(bytes, k)
}

/// [`lane_sums`] for this CPU.
fn lane_sums_fn() -> impl Fn(&[u8], &[i32]) -> [i32; LANES] {
    #[cfg(target_arch = "x86_64")]
    let avx2 = super::isa().avx2;
    #[cfg(not(target_arch = "x86_64"))]
    let avx2 = false;
    move |bytes: &[u8], k: &[i32]| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU has AVX2 (`isa()` detected it); the function is
            // safe Rust otherwise.
            return unsafe { x86::lane_sums_avx2(bytes, k) };
        }
        lane_sums_portable(bytes, k)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{SplitTaps, CHUNK, LANES, PRECISION_BITS};
    use std::arch::x86_64::*;

    /// [`super::horizontal`] for long taps: each row split into three channel
    /// planes, then per output pixel and channel a dot product of its run with
    /// the split weights, 16 taps a `pmaddwd` pair, the three sums reduced and
    /// rounded together.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn horizontal_planes_avx2(
        src: &[u8],
        width: usize,
        split: &SplitTaps,
    ) -> Vec<u8> {
        let w3 = width * 3;
        let out_w3 = split.spans.len() * 3;
        if w3 == 0 || out_w3 == 0 {
            return Vec::new();
        }
        let len = split.plane.max(width);
        // The planes' tails past `width` stay zero: the runs' padding reads them.
        let mut planes = [vec![0u8; len], vec![0u8; len], vec![0u8; len]];
        let mut out = vec![0u8; src.len() / w3 * out_w3];
        let half = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
        for (row, out_row) in src.chunks_exact(w3).zip(out.chunks_exact_mut(out_w3)) {
            let [r, g, b] = &mut planes;
            deinterleave(row, &mut r[..width], &mut g[..width], &mut b[..width]);
            for (&(first, at, n), px) in split.spans.iter().zip(out_row.chunks_exact_mut(3)) {
                let hi = &split.hi[at..at + n];
                let lo = &split.lo[at..at + n];
                let run = first..first + n * CHUNK;
                let (r, g, b) = (
                    &planes[0][run.clone()],
                    &planes[1][run.clone()],
                    &planes[2][run],
                );
                let (r, g, b) = (
                    r.as_chunks::<CHUNK>().0,
                    g.as_chunks::<CHUNK>().0,
                    b.as_chunks::<CHUNK>().0,
                );
                let mut ah = [_mm256_setzero_si256(); 3];
                let mut al = [_mm256_setzero_si256(); 3];
                for ((((r, g), b), h), l) in r.iter().zip(g).zip(b).zip(hi).zip(lo) {
                    // SAFETY: 32-byte unaligned loads from 16-lane i16 arrays.
                    let (h, l) = unsafe {
                        (
                            _mm256_loadu_si256(h.as_ptr().cast()),
                            _mm256_loadu_si256(l.as_ptr().cast()),
                        )
                    };
                    for (c, bytes) in [r, g, b].into_iter().enumerate() {
                        // SAFETY: a 16-byte unaligned load from a 16-byte array.
                        let v =
                            _mm256_cvtepu8_epi16(unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) });
                        ah[c] = _mm256_add_epi32(ah[c], _mm256_madd_epi16(v, h));
                        al[c] = _mm256_add_epi32(al[c], _mm256_madd_epi16(v, l));
                    }
                }
                let sums: [__m256i; 3] = std::array::from_fn(|c| {
                    _mm256_add_epi32(_mm256_slli_epi32::<11>(ah[c]), al[c])
                });
                // [R G B B] in 32-bit lanes: pairwise sums, then the two halves.
                let rg = _mm256_hadd_epi32(sums[0], sums[1]);
                let bb = _mm256_hadd_epi32(sums[2], sums[2]);
                let rgbb = _mm256_hadd_epi32(rg, bb);
                let acc = _mm_add_epi32(
                    _mm256_castsi256_si128(rgbb),
                    _mm256_extracti128_si256::<1>(rgbb),
                );
                // clip8: the integer part (arithmetic shift), saturated to a byte.
                let v = _mm_srai_epi32::<{ PRECISION_BITS as i32 }>(_mm_add_epi32(acc, half));
                let v = _mm_packus_epi16(_mm_packs_epi32(v, v), v);
                let bytes = (_mm_cvtsi128_si32(v) as u32).to_le_bytes();
                px.copy_from_slice(&bytes[..3]);
            }
        }
        out
    }

    /// An RGB row into its three channel planes, 16 pixels a step (`pshufb`).
    #[target_feature(enable = "avx2")]
    fn deinterleave(row: &[u8], r: &mut [u8], g: &mut [u8], b: &mut [u8]) {
        // For output channel c, which byte of each of the 3 input vectors goes
        // to output byte i (-1: none): pixel i's channel c is byte 3i + c.
        const fn masks(c: usize) -> [[i8; 16]; 3] {
            let mut m = [[-1i8; 16]; 3];
            let mut i = 0;
            while i < 16 {
                let at = 3 * i + c;
                m[at / 16][i] = (at % 16) as i8;
                i += 1;
            }
            m
        }
        const M: [[[i8; 16]; 3]; 3] = [masks(0), masks(1), masks(2)];
        // SAFETY: loads of 16-byte arrays.
        let m = M.map(|c| c.map(|v| unsafe { _mm_loadu_si128(v.as_ptr().cast()) }));
        let (blocks, tail) = row.as_chunks::<48>();
        let mut planes = [r, g, b];
        for (i, block) in blocks.iter().enumerate() {
            // SAFETY: three 16-byte loads inside a 48-byte array.
            let v = unsafe {
                let p = block.as_ptr();
                [
                    _mm_loadu_si128(p.cast()),
                    _mm_loadu_si128(p.add(16).cast()),
                    _mm_loadu_si128(p.add(32).cast()),
                ]
            };
            for (c, plane) in planes.iter_mut().enumerate() {
                let x = _mm_or_si128(
                    _mm_or_si128(
                        _mm_shuffle_epi8(v[0], m[c][0]),
                        _mm_shuffle_epi8(v[1], m[c][1]),
                    ),
                    _mm_shuffle_epi8(v[2], m[c][2]),
                );
                let dst = &mut plane.as_chunks_mut::<16>().0[i];
                // SAFETY: a 16-byte store into a 16-byte array.
                unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), x) };
            }
        }
        let done = 16 * blocks.len();
        for (i, px) in tail.as_chunks::<3>().0.iter().enumerate() {
            planes[0][done + i] = px[0];
            planes[1][done + i] = px[1];
            planes[2][done + i] = px[2];
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn lane_sums_avx2(bytes: &[u8], k: &[i32]) -> [i32; LANES] {
        super::lane_sums(bytes, k)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn block_avx2(
        src: &[u8],
        row_len: usize,
        first: usize,
        k: &[i32],
        col: usize,
        dst: &mut [u8; super::COLUMNS],
    ) {
        super::block(src, row_len, first, k, col, dst)
    }
}

/// [`horizontal`] as Pillow writes it, one output byte at a time: the reference
/// the vectorised paths are tested against (here, and in `preprocess`'s resize
/// test).
#[cfg(test)]
pub(crate) fn horizontal_reference(src: &[u8], width: usize, taps: &[Taps]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in src.chunks_exact(width * 3) {
        for (first, k) in taps {
            for c in 0..3 {
                let acc = k
                    .iter()
                    .enumerate()
                    .fold(1i32 << (PRECISION_BITS - 1), |a, (i, &w)| {
                        a.wrapping_add(i32::from(row[(first + i) * 3 + c]) * w)
                    });
                out.push(clip8(acc));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift32.
    fn next(s: &mut u32) -> u32 {
        *s ^= *s << 13;
        *s ^= *s >> 17;
        *s ^= *s << 5;
        *s
    }

    /// Every horizontal path, whichever the dispatch picks on this CPU, equals the
    /// byte-at-a-time loop: taps of 1 to 90 (one chunk, several, a partial
    /// last one), weights of both signs whose sums wrap, runs that end at the
    /// row's last pixel, rows of fewer pixels than a `pshufb` step.
    #[test]
    fn every_horizontal_path_equals_the_reference() {
        let mut s = 0x2545_f491u32;
        for (width, rows, outs, max_taps) in [
            (61, 5, 9, 61),
            (200, 3, 17, 90),
            (5, 4, 3, 5),
            (16, 2, 4, 16),
            (33, 3, 40, 20),
        ] {
            let src: Vec<u8> = (0..width * rows * 3).map(|_| next(&mut s) as u8).collect();
            let taps: Vec<Taps> = (0..outs)
                .map(|i| {
                    let n = 1 + next(&mut s) as usize % max_taps.min(width);
                    // The last output's run ends at the row's last pixel.
                    let first = if i + 1 == outs {
                        width - n
                    } else {
                        next(&mut s) as usize % (width - n + 1)
                    };
                    let k = (0..n)
                        .map(|_| match next(&mut s) % 8 {
                            // The largest weights whose products fit i32 (the
                            // passes' own arithmetic, Pillow's too).
                            0 => (1 << 23) - 1,
                            1 => -(1 << 23),
                            _ => (next(&mut s) % (1 << 23)) as i32 - (1 << 21),
                        })
                        .collect();
                    (first, k)
                })
                .collect();
            let want = horizontal_reference(&src, width, &taps);
            let what = format!("{width} px × {rows} rows → {outs}");
            assert_eq!(horizontal(&src, width, &taps), want, "dispatch: {what}");
            assert_eq!(horizontal_lanes(&src, width, &taps), want, "lanes: {what}");
            assert_eq!(
                horizontal_turned(&src, width, &taps),
                want,
                "turned: {what}"
            );
            #[cfg(target_arch = "x86_64")]
            if crate::cpu::isa().avx2 {
                let split = SplitTaps::new(&taps).expect("weights within 2^26");
                // SAFETY: the CPU has AVX2.
                let got = unsafe { x86::horizontal_planes_avx2(&src, width, &split) };
                assert_eq!(got, want, "planes: {what}");
            }
        }
        // A weight past the split's range is refused (the other paths take it).
        assert!(SplitTaps::new(&[(0, vec![1 << 26])]).is_none());
        assert!(SplitTaps::new(&[(0, vec![-(1 << 26) - 1])]).is_none());
    }
}
