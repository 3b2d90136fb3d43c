//! SigLIP image preprocessing: RGB, bicubic resize, scale and normalise.
//!
//! Reproduces what SigLIP's image processor (transformers, on PIL) makes of an
//! image file:
//! 1. decode (PNG or JPEG) and convert to 8-bit RGB the way PIL's
//!    `convert("RGB")` does: grey is replicated, alpha is dropped (not composited),
//!    16-bit RGB(A) and grey+alpha keep the high byte (PIL reads them so), and
//!    16-bit grey is clipped to 255 (PIL's `I;16` → `RGB`);
//! 2. resize to `image_size × image_size` with PIL's `BICUBIC` resampling
//!    (a = −0.5, the support widened by the scale when shrinking, horizontal pass
//!    first, 22-bit fixed-point coefficients and rounding to u8 after each pass,
//!    as Pillow's `Resample.c` does); skipped when the image already has that size;
//! 3. `x / 255`, then `(x − 0.5) / 0.5` per channel, so values lie in [−1, 1].
//!
//! The result is channel-first f32, `[3, I, I]` per image.

use std::path::Path;

use image::DynamicImage;

use crate::error::{Error, Result};

/// SigLIP's normalisation mean, per channel.
pub const IMAGE_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
/// SigLIP's normalisation standard deviation, per channel.
pub const IMAGE_STD: [f32; 3] = [0.5, 0.5, 0.5];

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

fn image_err(file: &Path, msg: impl Into<String>) -> Error {
    Error::Image {
        file: file.to_path_buf(),
        msg: msg.into(),
    }
}

/// Decode an image file (PNG or JPEG, detected from its content) and convert it to
/// 8-bit RGB as PIL's `convert("RGB")` does. Errors name the file.
pub fn read_rgb8(path: impl AsRef<Path>) -> Result<Rgb8> {
    let path = path.as_ref();
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    if reader.format().is_none() {
        return Err(image_err(
            path,
            "not a recognised image format (PNG and JPEG are supported)",
        ));
    }
    let img = reader
        .decode()
        .map_err(|e| image_err(path, format!("could not decode image: {e}")))?;
    let rgb = to_rgb8_like_pil(img);
    if rgb.width == 0 || rgb.height == 0 {
        return Err(image_err(path, "image has no pixels"));
    }
    Ok(rgb)
}

/// PIL's `convert("RGB")`, per decoded pixel format.
fn to_rgb8_like_pil(img: DynamicImage) -> Rgb8 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = Vec::with_capacity(w * h * 3);
    match img {
        DynamicImage::ImageRgb8(b) => data = b.into_raw(),
        DynamicImage::ImageRgba8(b) => {
            for p in b.pixels() {
                data.extend_from_slice(&p.0[..3]);
            }
        }
        DynamicImage::ImageLuma8(b) => {
            for p in b.pixels() {
                data.extend_from_slice(&[p.0[0]; 3]);
            }
        }
        DynamicImage::ImageLumaA8(b) => {
            for p in b.pixels() {
                data.extend_from_slice(&[p.0[0]; 3]);
            }
        }
        // PIL opens 16-bit grey PNGs as `I;16`; its conversion to RGB clips to 255.
        DynamicImage::ImageLuma16(b) => {
            for p in b.pixels() {
                data.extend_from_slice(&[p.0[0].min(255) as u8; 3]);
            }
        }
        // PIL reads 16-bit LA, RGB and RGBA PNGs by keeping each sample's high byte.
        DynamicImage::ImageLumaA16(b) => {
            for p in b.pixels() {
                data.extend_from_slice(&[(p.0[0] >> 8) as u8; 3]);
            }
        }
        DynamicImage::ImageRgb16(b) => {
            for p in b.pixels() {
                data.extend(p.0.iter().map(|&v| (v >> 8) as u8));
            }
        }
        DynamicImage::ImageRgba16(b) => {
            for p in b.pixels() {
                data.extend(p.0[..3].iter().map(|&v| (v >> 8) as u8));
            }
        }
        // Float and future formats (not produced by the PNG or JPEG decoders).
        other => data = other.to_rgb8().into_raw(),
    }
    Rgb8 {
        width: w,
        height: h,
        data,
    }
}

// ---------------------------------------------------------------------------
// PIL's BICUBIC resampling (Pillow, libImaging/Resample.c), for 8-bit images.

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output index: first input index and fixed-point weights.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let xmax = xmax.max(xmin);
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&v| {
                    let v = if total != 0.0 { v / total } else { v };
                    let s = v * f64::from(1u32 << PRECISION_BITS);
                    if v < 0.0 {
                        (s - 0.5) as i32
                    } else {
                        (s + 0.5) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

impl Rgb8 {
    /// Check that `data` holds `width × height` RGB pixels and that there is one.
    fn check(&self) -> Result<()> {
        let expected = self
            .width
            .checked_mul(self.height)
            .and_then(|n| n.checked_mul(3));
        if self.width == 0 || self.height == 0 || expected != Some(self.data.len()) {
            return Err(Error::Input {
                tensor: "image".into(),
                msg: format!(
                    "an RGB image of {}×{} pixels needs {} bytes, found {}",
                    self.width,
                    self.height,
                    expected.map_or("too many".to_string(), |n| n.to_string()),
                    self.data.len()
                ),
            });
        }
        Ok(())
    }
}

/// Resize an RGB image with PIL's `Image.resize(size, Image.BICUBIC)` arithmetic.
/// Errors when `img.data` does not hold `width × height` pixels or a size is 0.
pub fn resize_bicubic(img: &Rgb8, width: usize, height: usize) -> Result<Rgb8> {
    img.check()?;
    if width == 0 || height == 0 {
        return Err(Error::Input {
            tensor: "image".into(),
            msg: format!("cannot resize to {width}×{height}"),
        });
    }
    let mut cur = img.clone();
    if cur.width != width {
        let coeffs = coefficients(cur.width, width);
        let mut out = vec![0u8; width * cur.height * 3];
        for y in 0..cur.height {
            let row = &cur.data[y * cur.width * 3..(y + 1) * cur.width * 3];
            for (x, (xmin, k)) in coeffs.iter().enumerate() {
                for c in 0..3 {
                    let mut acc: i32 = 1 << (PRECISION_BITS - 1);
                    for (i, &w) in k.iter().enumerate() {
                        acc = acc.wrapping_add(i32::from(row[(xmin + i) * 3 + c]) * w);
                    }
                    out[(y * width + x) * 3 + c] = clip8(acc);
                }
            }
        }
        cur = Rgb8 {
            width,
            height: cur.height,
            data: out,
        };
    }
    if cur.height != height {
        let coeffs = coefficients(cur.height, height);
        let w3 = cur.width * 3;
        let mut out = vec![0u8; height * w3];
        for (y, (ymin, k)) in coeffs.iter().enumerate() {
            for i in 0..w3 {
                let mut acc: i32 = 1 << (PRECISION_BITS - 1);
                for (j, &w) in k.iter().enumerate() {
                    acc = acc.wrapping_add(i32::from(cur.data[(ymin + j) * w3 + i]) * w);
                }
                out[y * w3 + i] = clip8(acc);
            }
        }
        cur = Rgb8 {
            width: cur.width,
            height,
            data: out,
        };
    }
    Ok(cur)
}

/// Steps 2 and 3 for an RGB image already decoded: `[3, I, I]` channel-first f32.
pub fn pixel_values_from_rgb8(img: &Rgb8, image_size: usize) -> Result<Vec<f32>> {
    img.check()?;
    let resized;
    let img = if img.width == image_size && img.height == image_size {
        img
    } else {
        resized = resize_bicubic(img, image_size, image_size)?;
        &resized
    };
    let plane = image_size * image_size;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            // transformers rescales in f64 and rounds to f32, then normalises in f32.
            let scaled = (f64::from(px[c]) * (1.0 / 255.0)) as f32;
            out[c * plane + i] = (scaled - IMAGE_MEAN[c]) / IMAGE_STD[c];
        }
    }
    Ok(out)
}

/// One image file → its pixel_values `[3, I, I]` (flattened, channel-first).
pub fn load_image(path: impl AsRef<Path>, image_size: usize) -> Result<Vec<f32>> {
    let path = path.as_ref();
    if image_size == 0 {
        return Err(image_err(path, "the target image size is 0"));
    }
    pixel_values_from_rgb8(&read_rgb8(path)?, image_size)
        .map_err(|e| image_err(path, e.to_string()))
}

/// Several image files → pixel_values `[B, 3, I, I]` (flattened), in the given order.
/// An empty list is an error (tessera has no empty batches: B = 0 is refused
/// here, by the CLI and by [`VisionModel::forward`](crate::VisionModel::forward)).
pub fn load_images<P: AsRef<Path>>(paths: &[P], image_size: usize) -> Result<Vec<f32>> {
    if paths.is_empty() {
        return Err(Error::Input {
            tensor: "pixel_values".into(),
            msg: "no image files given (a batch needs at least one image)".into(),
        });
    }
    let mut out = Vec::new();
    for p in paths {
        out.extend(load_image(p, image_size)?);
    }
    Ok(out)
}

/// `Err` naming `tensor` and the first non-finite value's index (flat, and per
/// axis of `shape` when its element count matches) if `values` holds NaN or ±Inf.
///
/// Preprocessed images are always finite; pixel_values read from a file are not,
/// and the CLI refuses them with this check. The library's forward pass does not
/// check (it would cost a device round trip): non-finite inputs propagate to
/// non-finite outputs for the images that hold them.
pub fn check_finite(tensor: &str, values: &[f32], shape: &[usize]) -> Result<()> {
    let Some(pos) = values.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let at = if numel == Some(values.len()) && !shape.is_empty() {
        let mut idx = vec![0usize; shape.len()];
        let mut rest = pos;
        for (i, &d) in shape.iter().enumerate().rev() {
            idx[i] = rest % d.max(1);
            rest /= d.max(1);
        }
        format!("index {idx:?} (flat {pos})")
    } else {
        format!("flat index {pos}")
    };
    Err(Error::Input {
        tensor: tensor.to_string(),
        msg: format!("holds a non-finite value ({}) at {at}", values[pos]),
    })
}
