//! SigLIP 2 NaFlex inputs (MODEL.md, "Variable resolution"): images as grids of
//! patches at their own aspect ratio, packed into one sequence.
//!
//! [`ImagePatches`] is one image on the host; [`VisionModel::pack`] turns a list
//! of them into a [`PackedBatch`] on the device, and
//! [`VisionModel::forward_packed`] runs it. A packed batch is its own type: a
//! padded `DeviceBuffer` cannot be passed where packed offsets are expected, nor
//! the reverse.
//!
//! **Position embedding.** The G × G position grid is resized to each image's
//! h × w by PyTorch's `F.interpolate(mode="bilinear", align_corners=False,
//! antialias=True)`. That resize is linear and separable, so position row
//! `(i, j)` is `Σ Wy[i, gy]·Wx[j, gx]·table[gy·G + gx]`. tessera computes the
//! coefficients `Wy[i]⊗Wx[j]` on the host (once per image, from the two small
//! weight matrices `resize_weights` makes) and appends them to the token's patch
//! values: the model's joined weight `[W_patch | tableᵀ]` then computes the patch
//! embedding and its position in the same GEMM, on every backend, with no
//! resize kernel. Host cost: the nonzero products only (a few per token when a
//! side grows, about G²/(h·w) when it shrinks); BENCHMARKS.md has the figures.
//!
//! **Grids one patch wide.** PyTorch's CPU kernel gives every row of an
//! `(h, 1)` output row 0's values (its CUDA kernel and the formula do not), so
//! transformers on the CPU computes wrong positions for hᵢ × 1 grids (a tall
//! 3000 × 20 px image at patch 16 is 150 × 1). tessera follows the formula,
//! i.e. transformers on a GPU; the golden case `siglip2/width1` pins it.
//!
//! ```no_run
//! use tessera::model::VisionModel;
//! use tessera::preprocess::Siglip2Processor;
//! use tessera::{bf16, Cuda};
//!
//! let gpu = Cuda::new(0)?;
//! let model = VisionModel::<bf16, Cuda>::load("google/siglip2-base-patch16-naflex", &gpu)?;
//! let processor = Siglip2Processor::new(16, 256);
//! let images = ["wide.jpg", "tall.png"]
//!     .iter()
//!     .map(|f| processor.load_image(f))
//!     .collect::<tessera::Result<Vec<_>>>()?;
//! let batch = model.pack(&images)?; // one sequence, per-image offsets, on the GPU
//! let out = model.forward_packed(&batch)?; // last_hidden_state [Σ hᵢ·wᵢ, D]
//! println!("{:?}", out.pooler_output); // [2, D]
//! # Ok::<(), tessera::Error>(())
//! ```
//!
//! [`VisionModel::pack`]: super::VisionModel::pack
//! [`VisionModel::forward_packed`]: super::VisionModel::forward_packed

use crate::buffer::DeviceBuffer;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::{Kernels, Segments};

/// One image as SigLIP 2 takes it: a grid of `height × width` patches in
/// row-major order, each patch's `C·P·P` values flattened channel-last
/// (py, px, c), as Siglip2ImageProcessor makes them.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePatches {
    /// hᵢ, patches down.
    pub height: usize,
    /// wᵢ, patches across.
    pub width: usize,
    /// `[hᵢ·wᵢ, C·P·P]`, flat.
    pub values: Vec<f32>,
}

impl ImagePatches {
    /// The images of a padded batch as transformers writes it: `pixel_values`
    /// `[B, Pmax, C·P·P]` (`shape`), `pixel_attention_mask` `[B, Pmax]` and
    /// `spatial_shapes` `[B, 2]` = (hᵢ, wᵢ). Image b's mask must be 1 on its first
    /// hᵢ·wᵢ patches and 0 after (what Siglip2ImageProcessor writes); any other
    /// mask, a grid that does not fit in Pmax or an empty grid is an error naming
    /// the tensor and the image.
    pub fn from_padded(
        pixel_values: &[f32],
        shape: [usize; 3],
        mask: &[i64],
        spatial_shapes: &[i64],
    ) -> Result<Vec<Self>> {
        let [b, pmax, cpp] = shape;
        let bad = |tensor: &str, msg: String| Error::Input {
            tensor: tensor.into(),
            msg,
        };
        let numel = b.checked_mul(pmax).and_then(|n| n.checked_mul(cpp));
        if numel != Some(pixel_values.len()) || b == 0 || pmax == 0 || cpp == 0 {
            return Err(bad(
                "pixel_values",
                format!(
                    "{} values do not make a non-empty [B, Pmax, C·P·P] = {shape:?}",
                    pixel_values.len()
                ),
            ));
        }
        if mask.len() != b * pmax {
            return Err(bad(
                "pixel_attention_mask",
                format!(
                    "has {} values, expected [B, Pmax] = [{b}, {pmax}]",
                    mask.len()
                ),
            ));
        }
        if spatial_shapes.len() != 2 * b {
            return Err(bad(
                "spatial_shapes",
                format!(
                    "has {} values, expected [B, 2] = [{b}, 2]",
                    spatial_shapes.len()
                ),
            ));
        }
        let mut images = Vec::with_capacity(b);
        for i in 0..b {
            let (h, w) = (spatial_shapes[2 * i], spatial_shapes[2 * i + 1]);
            let side = |v: i64| usize::try_from(v).ok().filter(|&v| v >= 1);
            let (Some(hu), Some(wu)) = (side(h), side(w)) else {
                return Err(bad(
                    "spatial_shapes",
                    format!("image {i}: ({h}, {w}) is not a grid of at least 1 × 1 patches"),
                ));
            };
            let n = hu.checked_mul(wu).filter(|&n| n <= pmax).ok_or_else(|| {
                bad(
                    "spatial_shapes",
                    format!("image {i}: {h} × {w} patches do not fit in Pmax = {pmax}"),
                )
            })?;
            let row = &mask[i * pmax..(i + 1) * pmax];
            if let Some(p) = row
                .iter()
                .enumerate()
                .position(|(p, &m)| m != i64::from(p < n))
            {
                return Err(bad(
                    "pixel_attention_mask",
                    format!(
                        "image {i}: entry {p} is {}, but spatial_shapes ({h}, {w}) means 1 on \
                         the first {n} patches and 0 after",
                        row[p]
                    ),
                ));
            }
            let start = i * pmax * cpp;
            images.push(Self {
                height: hu,
                width: wu,
                values: pixel_values[start..start + n * cpp].to_vec(),
            });
        }
        Ok(images)
    }

    /// Patches of this image, hᵢ·wᵢ.
    pub fn len(&self) -> usize {
        self.height.saturating_mul(self.width)
    }

    /// Whether the grid is empty (never, for images that pass `pack`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The weights of PyTorch's antialiased bilinear resize of one axis from
/// `input` to `output` samples (`F.interpolate(mode="bilinear",
/// align_corners=False, antialias=True)`, the separable `_upsample_bilinear2d_aa`):
/// `[output, input]` row-major, each row summing to 1.
///
/// scale = input/output; support = max(scale, 1); output i is centred at
/// scale·(i + ½) and takes inputs j from ⌊center − support + ½⌋ to
/// ⌊center + support + ½⌋ (clamped) with the tent weight
/// max(0, 1 − |(j − center + ½)/max(scale, 1)|), normalised. Growing a side this
/// is plain bilinear; shrinking it averages over the wider support.
///
/// (PyTorch's CPU kernel gives a wrong result for an output side of 1 along the
/// last axis — every row then copies row 0's weights; its CUDA kernel and this
/// function follow the formula.)
pub(crate) fn resize_weights(input: usize, output: usize) -> Vec<f64> {
    let mut out = vec![0.0; input * output];
    if input == 0 || output == 0 {
        return out;
    }
    let scale = input as f64 / output as f64;
    let support = if scale >= 1.0 { scale } else { 1.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    for i in 0..output {
        let center = scale * (i as f64 + 0.5);
        // PyTorch truncates toward zero (an int64 cast), then clamps.
        let lo = ((center - support + 0.5).trunc().max(0.0)) as usize;
        let hi = ((center + support + 0.5).trunc() as usize).min(input);
        let row = &mut out[i * input..(i + 1) * input];
        let mut total = 0.0;
        for (j, w) in row.iter_mut().enumerate().take(hi).skip(lo) {
            let x = ((j as f64 - center + 0.5) * invscale).abs();
            *w = if x < 1.0 { 1.0 - x } else { 0.0 };
            total += *w;
        }
        if total != 0.0 {
            for w in &mut row[lo..hi.max(lo)] {
                *w /= total;
            }
        }
    }
    out
}

/// Fill `rows` with the packed rows of `images` for a model of position grid
/// `grid` and patch size `cpp` values: per token `[patch values | Wy[i] ⊗
/// Wx[j]]`, converted to `T`, `[Σ hᵢ·wᵢ, cpp + grid²]` flat. Every element is
/// written (a reused vector needs no clearing); images are filled in parallel.
pub(crate) fn fill_packed_rows<T: Element>(
    rows: &mut Vec<T>,
    images: &[ImagePatches],
    cpp: usize,
    grid: usize,
) -> Result<()> {
    use rayon::prelude::*;
    let g2 = grid * grid;
    let width = cpp + g2;
    let tokens: usize = images.iter().map(ImagePatches::len).sum();
    let n = tokens.checked_mul(width).ok_or_else(|| Error::Input {
        tensor: "pixel_values".into(),
        msg: format!("{tokens} patches of {width} values overflow"),
    })?;
    if rows.len() > n {
        rows.truncate(n);
    } else {
        rows.try_reserve_exact(n - rows.len())
            .map_err(|_| Error::OutOfMemory {
                device: "host".into(),
                bytes: (n as u64).saturating_mul(T::DTYPE.size() as u64),
                tensor: "packed pixel_values".into(),
            })?;
        rows.resize(n, T::default());
    }
    // Each image's rows, split off in order.
    let mut parts = Vec::with_capacity(images.len());
    let mut rest = rows.as_mut_slice();
    for img in images {
        let (part, tail) = rest.split_at_mut(img.len() * width);
        parts.push((img, part));
        rest = tail;
    }
    parts.into_par_iter().for_each(|(img, part)| {
        // Each axis' weights with the range of grid cells they touch (a few when
        // growing, about G/h when shrinking): only those products are written,
        // the rest of the row stays 0.
        let axis = |out: usize| {
            let w = resize_weights(grid, out);
            (0..out)
                .map(|i| {
                    let row = &w[i * grid..(i + 1) * grid];
                    let lo = row.iter().position(|&v| v != 0.0).unwrap_or(0);
                    let hi = row.iter().rposition(|&v| v != 0.0).map_or(lo, |p| p + 1);
                    (lo, row[lo..hi].to_vec())
                })
                .collect::<Vec<_>>()
        };
        let (wy, wx) = (axis(img.height), axis(img.width));
        for (t, row) in part.chunks_exact_mut(width).enumerate() {
            let (i, j) = (t / img.width, t % img.width);
            let (patch, coef) = row.split_at_mut(cpp);
            for (o, &v) in patch.iter_mut().zip(&img.values[t * cpp..(t + 1) * cpp]) {
                *o = T::from_f32(v);
            }
            coef.fill(T::default());
            let ((ylo, ys), (xlo, xs)) = (&wy[i], &wx[j]);
            for (gy, &a) in (*ylo..).zip(ys) {
                let at = gy * grid + xlo;
                for (o, &b) in coef[at..at + xs.len()].iter_mut().zip(xs) {
                    *o = T::from_f32((a * b) as f32);
                }
            }
        }
    });
    Ok(())
}

/// A batch of SigLIP 2 images packed into one sequence on device `D`: every
/// image's real patches, one after another, with per-image offsets — no padding.
/// Made by [`VisionModel::pack`](super::VisionModel::pack), run by
/// [`VisionModel::forward_packed`](super::VisionModel::forward_packed).
///
/// It is not a `DeviceBuffer`, so a padded tensor cannot stand in for it, nor it
/// for one (the compile-fail proofs are in [`proofs`](crate::proofs), section 4),
/// and only `pack` makes one (its fields are private):
///
/// ```compile_fail,E0451
/// use tessera::{Cpu, DeviceBuffer, model::PackedBatch};
/// fn forge(rows: DeviceBuffer<f32, Cpu>) -> PackedBatch<f32, Cpu> {
///     PackedBatch { rows, segments: todo!(), shapes: vec![], geometry: (3, 16, 16) }
/// }
/// ```
pub struct PackedBatch<T: Element, D: Kernels<T>> {
    /// `[Σ hᵢ·wᵢ, C·P·P + G²]`: patch values, then position coefficients.
    pub(super) rows: DeviceBuffer<T, D>,
    pub(super) segments: Segments,
    pub(super) shapes: Vec<(usize, usize)>,
    /// The geometry it was packed for: (C, P, G). Two models whose rows have the
    /// same width but another split (patch values vs position coefficients)
    /// must not read each other's batches.
    pub(super) geometry: (usize, usize, usize),
}

impl<T: Element, D: Kernels<T>> PackedBatch<T, D> {
    /// Where each image's rows are.
    pub fn segments(&self) -> &Segments {
        &self.segments
    }

    /// (hᵢ, wᵢ) of each image.
    pub fn spatial_shapes(&self) -> &[(usize, usize)] {
        &self.shapes
    }

    /// Number of images.
    pub fn images(&self) -> usize {
        self.shapes.len()
    }

    /// Patches of all images together.
    pub fn tokens(&self) -> usize {
        self.segments.total()
    }
}

impl<T: Element, D: Kernels<T>> std::fmt::Debug for PackedBatch<T, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedBatch")
            .field("rows", &self.rows)
            .field("spatial_shapes", &self.shapes)
            .finish()
    }
}

/// What [`VisionModel::forward_packed`](super::VisionModel::forward_packed)
/// returns: the packed outputs and where each image's rows are.
pub struct PackedOutput<T: Element, D: Kernels<T>> {
    /// `post_layernorm(x)` of every real patch, `[Σ hᵢ·wᵢ, D]`.
    pub last_hidden_state: DeviceBuffer<T, D>,
    /// The pooling head's output per image `[B, D]`; `None` without a head.
    pub pooler_output: Option<DeviceBuffer<T, D>>,
    /// Image b's rows of `last_hidden_state`.
    pub segments: Segments,
}

impl<T: Element, D: Kernels<T>> PackedOutput<T, D> {
    /// `last_hidden_state` in transformers' padded layout `[B, max_patches, D]` on
    /// the host, the rows past each image's patches 0 (MODEL.md). Errors when an
    /// image has more than `max_patches` patches, or the layout does not fit in
    /// host memory.
    pub fn last_hidden_state_padded(&self, max_patches: usize) -> Result<Vec<T>> {
        let seg = &self.segments;
        if seg.max_len() > max_patches {
            return Err(Error::Input {
                tensor: "last_hidden_state".into(),
                msg: format!(
                    "an image has {} patches, more than max_patches = {max_patches}",
                    seg.max_len()
                ),
            });
        }
        // The fields are public: a caller may pair a tensor with segments that do
        // not describe it.
        let shape = self.last_hidden_state.shape();
        let &[rows, d] = shape else {
            return Err(Error::Shape {
                op: "last_hidden_state_padded",
                tensor: "last_hidden_state".into(),
                got: shape.to_vec(),
                expected: "[Σ patches, D]".into(),
            });
        };
        if rows != seg.total() {
            return Err(Error::Input {
                tensor: "last_hidden_state".into(),
                msg: format!(
                    "has {rows} rows, but its segments hold {} patches",
                    seg.total()
                ),
            });
        }
        let n = seg
            .count()
            .checked_mul(max_patches)
            .and_then(|n| n.checked_mul(d))
            .ok_or_else(|| Error::Input {
                tensor: "last_hidden_state".into(),
                msg: format!("[{}, {max_patches}, {d}] overflows", seg.count()),
            })?;
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|_| Error::OutOfMemory {
            device: "host".into(),
            bytes: (n as u64).saturating_mul(T::DTYPE.size() as u64),
            tensor: "last_hidden_state (padded)".into(),
        })?;
        out.resize(n, T::default());
        let packed = self.last_hidden_state.to_vec()?;
        for b in 0..seg.count() {
            let r = seg.range(b);
            let dst = b * max_patches * d;
            out[dst..dst + r.len() * d].copy_from_slice(&packed[r.start * d..r.end * d]);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `resize_weights` against PyTorch 2.15's `F.interpolate(mode="bilinear",
    /// align_corners=False, antialias=True)` of the identity, in float64 (the
    /// values below are torch's output, printed): `x = eye(a).reshape(a, 1, 1, a)`,
    /// `F.interpolate(x, size=(1, b), ...).reshape(a, b).T`.
    #[test]
    fn resize_weights_match_pytorch() {
        let cases: [(usize, usize, &[&[f64]]); 4] = [
            // Shrinking: the support widens (4 → 3, 4 → 2).
            (
                4,
                3,
                &[
                    &[0.7, 0.3, 0.0, 0.0],
                    &[0.0, 0.5, 0.5, 0.0],
                    &[0.0, 0.0, 0.3, 0.7],
                ],
            ),
            (
                4,
                2,
                &[
                    &[3.0 / 7.0, 3.0 / 7.0, 1.0 / 7.0, 0.0],
                    &[0.0, 1.0 / 7.0, 3.0 / 7.0, 3.0 / 7.0],
                ],
            ),
            // Growing: plain bilinear, edges clamped (4 → 6, 4 → 5).
            (
                4,
                6,
                &[
                    &[1.0, 0.0, 0.0, 0.0],
                    &[0.5, 0.5, 0.0, 0.0],
                    &[0.0, 5.0 / 6.0, 1.0 / 6.0, 0.0],
                    &[0.0, 1.0 / 6.0, 5.0 / 6.0, 0.0],
                    &[0.0, 0.0, 0.5, 0.5],
                    &[0.0, 0.0, 0.0, 1.0],
                ],
            ),
            (
                4,
                5,
                &[
                    &[1.0, 0.0, 0.0, 0.0],
                    &[0.3, 0.7, 0.0, 0.0],
                    &[0.0, 0.5, 0.5, 0.0],
                    &[0.0, 0.0, 0.7, 0.3],
                    &[0.0, 0.0, 0.0, 1.0],
                ],
            ),
        ];
        for (a, b, want) in cases {
            let w = resize_weights(a, b);
            for (i, row) in want.iter().enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    let got = w[i * a + j];
                    assert!((got - v).abs() < 1e-12, "{a}→{b} [{i}][{j}]: {got} vs {v}");
                }
            }
        }
        // Row 3 of the SigLIP 2 grid (16) shrunk to 7 and grown to 25.
        let w = resize_weights(16, 7);
        let mut want = [0.0; 16];
        want[6..10].copy_from_slice(&[
            0.152777777778,
            0.347222222222,
            0.347222222222,
            0.152777777778,
        ]);
        for (j, &v) in want.iter().enumerate() {
            assert!((w[3 * 16 + j] - v).abs() < 1e-11, "16→7 [3][{j}]");
        }
        let w = resize_weights(16, 25);
        let mut want = [0.0; 16];
        want[1..3].copy_from_slice(&[0.26, 0.74]);
        for (j, &v) in want.iter().enumerate() {
            assert!((w[3 * 16 + j] - v).abs() < 1e-11, "16→25 [3][{j}]");
        }
    }

    #[test]
    fn resize_weights_keep_identity_and_sum_to_one() {
        for n in 1..20 {
            let w = resize_weights(n, n);
            for i in 0..n {
                for j in 0..n {
                    assert_eq!(w[i * n + j], f64::from(u8::from(i == j)));
                }
            }
        }
        for (a, b) in [(16, 1), (16, 7), (16, 25), (3, 64), (64, 3), (1, 5)] {
            let w = resize_weights(a, b);
            for i in 0..b {
                let s: f64 = w[i * a..(i + 1) * a].iter().sum();
                assert!((s - 1.0).abs() < 1e-12, "{a}→{b} row {i} sums to {s}");
                assert!(w[i * a..(i + 1) * a]
                    .iter()
                    .all(|&v| (0.0..=1.0).contains(&v)));
            }
        }
    }

    #[test]
    fn from_padded_checks_mask_and_shapes() {
        let px = vec![0.5f32; 2 * 4 * 3];
        let ok =
            ImagePatches::from_padded(&px, [2, 4, 3], &[1, 1, 1, 0, 1, 1, 1, 1], &[1, 3, 2, 2])
                .unwrap();
        assert_eq!((ok[0].height, ok[0].width, ok[0].values.len()), (1, 3, 9));
        assert_eq!((ok[1].height, ok[1].width, ok[1].values.len()), (2, 2, 12));
        let e = ImagePatches::from_padded(&px, [2, 4, 3], &[1, 0, 1, 0, 1, 1, 1, 1], &[1, 3, 2, 2])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pixel_attention_mask") && e.contains("image 0"),
            "{e}"
        );
        let e = ImagePatches::from_padded(&px, [2, 4, 3], &[1, 1, 1, 0, 1, 1, 1, 1], &[1, 3, 3, 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("spatial_shapes") && e.contains("image 1"), "{e}");
        let e = ImagePatches::from_padded(&px, [2, 4, 3], &[1, 1, 1, 0, 1, 1, 1, 1], &[0, 3, 2, 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("spatial_shapes") && e.contains("image 0"), "{e}");
        let e = ImagePatches::from_padded(&px, [2, 4, 2], &[1; 8], &[2, 2, 2, 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("pixel_values"), "{e}");
    }
}
