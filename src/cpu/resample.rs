//! The arithmetic of Pillow's 8-bit resampling passes (`ImagingResampleHorizontal_8bpc`,
//! `ImagingResampleVertical_8bpc`) for [`crate::preprocess::resize`], vectorised
//! without changing a bit, compiled for AVX2 where the CPU has it (detected at run
//! time; `TESSERA_CPU_ISA=portable` turns it off).
//!
//! Every output byte is `clip8(2^21 + Σ pixel·weight)` with fixed-point weights
//! (22 fractional bits) that `preprocess` computes as Pillow does. The sums are
//! wrapping `i32` additions: in any order they give the same value, so the passes
//! may add a whole row at a time instead of one output byte at a time, and the
//! horizontal pass may run as the vertical one on the image turned a quarter.

/// Fractional bits of the fixed-point weights (Pillow's `PRECISION_BITS`).
pub(crate) const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Lanes of the horizontal pass's sums: 8 pixels × 3 channels, a multiple of 3
/// so that lane `l` always holds channel `l mod 3`.
const LANES: usize = 24;

/// Taps above which [`horizontal`] sums one pixel at a time.
const LONG_TAPS: usize = 32;

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
/// Short taps (with bicubic, a shrink by less than about 8, and every
/// enlargement) take [`horizontal_turned`], long ones [`horizontal_lanes`]: the
/// latter pays a fixed cost per output pixel that many taps amortise, the
/// former two turns of the image, which cost more the larger it is (measured on
/// a Zen 4 core: 640×480 → 224 0.45 ms against 1.26, 1600×1200 → 224 2.1
/// against 3.0, 4032×3024 → 224 41 against 10.7).
pub(crate) fn horizontal(src: &[u8], width: usize, taps: &[Taps]) -> Vec<u8> {
    debug_assert!(taps.iter().all(|(first, k)| first + k.len() <= width));
    let longest = taps.iter().map(|(_, k)| k.len()).max().unwrap_or(0);
    if longest > LONG_TAPS {
        horizontal_lanes(src, width, taps)
    } else {
        horizontal_turned(src, width, taps)
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
/// `clip8(2^21 + Σⱼ src row (first + j)·kⱼ)` element by element, accumulated a
/// whole row at a time. Taps must lie inside `src`.
pub(crate) fn vertical(src: &[u8], row_len: usize, taps: &[Taps]) -> Vec<u8> {
    debug_assert!(taps
        .iter()
        .all(|(first, k)| (first + k.len()) * row_len <= src.len()));
    let mut out = vec![0u8; taps.len() * row_len];
    if row_len == 0 {
        return out;
    }
    let mut acc = vec![0i32; row_len];
    let add = add_row_fn();
    for ((first, k), out_row) in taps.iter().zip(out.chunks_exact_mut(row_len)) {
        acc.fill(1 << (PRECISION_BITS - 1));
        for (row, &w) in src.chunks_exact(row_len).skip(*first).zip(k) {
            add(&mut acc, row, w);
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
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

/// `acc[i] += row[i]·w` (wrapping).
#[inline(always)]
fn add_row(acc: &mut [i32], row: &[u8], w: i32) {
    for (a, &p) in acc.iter_mut().zip(row) {
        *a = a.wrapping_add(i32::from(p) * w);
    }
}

#[inline(never)]
fn lane_sums_portable(bytes: &[u8], k: &[i32]) -> [i32; LANES] {
    lane_sums(bytes, k)
}

#[inline(never)]
fn add_row_portable(acc: &mut [i32], row: &[u8], w: i32) {
    add_row(acc, row, w)
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

/// [`add_row`] for this CPU.
fn add_row_fn() -> impl Fn(&mut [i32], &[u8], i32) {
    #[cfg(target_arch = "x86_64")]
    let avx2 = super::isa().avx2;
    #[cfg(not(target_arch = "x86_64"))]
    let avx2 = false;
    move |acc: &mut [i32], row: &[u8], w: i32| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU has AVX2 (`isa()` detected it); the function is
            // safe Rust otherwise.
            return unsafe { x86::add_row_avx2(acc, row, w) };
        }
        add_row_portable(acc, row, w)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::LANES;

    #[target_feature(enable = "avx2")]
    pub(super) fn lane_sums_avx2(bytes: &[u8], k: &[i32]) -> [i32; LANES] {
        super::lane_sums(bytes, k)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn add_row_avx2(acc: &mut [i32], row: &[u8], w: i32) {
        super::add_row(acc, row, w)
    }
}
