//! SigLIP image preprocessing: RGB, resize, rescale and normalise, as
//! transformers' SiglipImageProcessor (on PIL) does; its settings come from a
//! model's `preprocessor_config.json` ([`ImageProcessor`]).
//!
//! What an image file becomes:
//! 1. decode (PNG, JPEG, WebP, GIF's first frame, BMP, TIFF) and convert to 8-bit
//!    RGB the way PIL's
//!    `convert("RGB")` does: grey is replicated, alpha is dropped (not composited),
//!    16-bit RGB(A) and grey+alpha keep the high byte (PIL reads them so), and
//!    16-bit grey is clipped to 255 (PIL's `I;16` → `RGB`);
//! 2. resize to the processor's size with PIL's arithmetic for its filter
//!    (SigLIP: `BICUBIC`, a = −0.5; the support widened by the scale when
//!    shrinking, horizontal pass first, 22-bit fixed-point coefficients and
//!    rounding to u8 after each pass, as Pillow's `Resample.c` does); skipped when
//!    the image already has that size;
//! 3. `x · rescale_factor` (1/255), then `(x − mean) / std` per channel (0.5 and
//!    0.5: values in [−1, 1]).
//!
//! The result is channel-first f32, `[3, H, W]` per image.

use std::path::Path;

use image::DynamicImage;

use crate::cpu::resample::{self, PRECISION_BITS};
use crate::error::{Error, Result};

/// SigLIP's normalisation mean, per channel.
pub const IMAGE_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
/// SigLIP's normalisation standard deviation, per channel.
pub const IMAGE_STD: [f32; 3] = [0.5, 0.5, 0.5];

/// The revision of how image files become pixels here (decoding, orientation,
/// resizing, normalisation), raised whenever some file's pixels change, so that
/// rows made under two revisions are not mixed (`tessera embed --resume` refuses a
/// job journaled under another). 1: up to 2026-11-23; 2: TIFFs turned upright by
/// [`read_rgb8`] (as Pillow 13 opens them), and [`read_rgb8_upright`] reading the
/// orientation also from PNG `eXIf` after the pixels, ImageMagick's raw profile,
/// XMP, and the EXIF directory as Pillow's loader reads it; 3: with the `libjpeg`
/// feature (default), JPEG decoded by libjpeg-turbo's code, Pillow's bytes (builds
/// without the feature stay at 2: zune-jpeg).
pub const PIXELS_REVISION: u32 = if cfg!(feature = "libjpeg") { 3 } else { 2 };

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `height · width · 3` bytes, R, G, B per pixel, row after row.
    pub data: Vec<u8>,
}

fn image_err(file: &Path, msg: impl Into<String>) -> Error {
    Error::Image {
        file: file.to_path_buf(),
        msg: msg.into(),
    }
}

/// Decode an image file (PNG, JPEG, WebP, GIF — its first frame —, BMP or TIFF,
/// detected from its content), as Pillow 13's `Image.open(f)` holds it — the pixels
/// as stored, except that a TIFF is turned upright by its orientation tag, as Pillow
/// turns it when it opens it (for the others see [`read_rgb8_upright`]) —, and
/// convert it to 8-bit RGB as PIL's `convert("RGB")` does. Errors name the file.
pub fn read_rgb8(path: impl AsRef<Path>) -> Result<Rgb8> {
    decode(path.as_ref(), false, None)
}

/// [`read_rgb8`], then turned upright by the image's orientation, as transformers'
/// `load_image` does with `ImageOps.exif_transpose`: what a camera or phone that
/// stores its photos sideways meant. The orientation is read where Pillow reads it:
/// the EXIF tag (JPEG, PNG — also after the pixels, or ImageMagick's raw profile —,
/// WebP, TIFF), else the XMP packet's `tiff:Orientation`. (An image processor given
/// `Image.open(f)` sees the stored pixels: that is [`read_rgb8`], the default.)
pub fn read_rgb8_upright(path: impl AsRef<Path>) -> Result<Rgb8> {
    decode(path.as_ref(), true, None)
}

/// The formats this build decodes (the `image` crate's features, and JPEG).
const SUPPORTED: [image::ImageFormat; 6] = [
    image::ImageFormat::Png,
    image::ImageFormat::Jpeg,
    image::ImageFormat::WebP,
    image::ImageFormat::Gif,
    image::ImageFormat::Bmp,
    image::ImageFormat::Tiff,
];
/// The image formats tessera decodes, as error messages name them.
pub const SUPPORTED_FORMATS: &str = "PNG, JPEG, WebP, GIF, BMP and TIFF";

/// The error for a file recognised as `format` (files named `*.ext`), which this
/// build does not decode.
fn unsupported(format: &str, ext: &str) -> String {
    format!(
        "{format} images are not decoded by tessera ({SUPPORTED_FORMATS} are): convert it \
         first, e.g. `magick photo.{ext} photo.png`"
    )
}

/// The error for a file that failed to decode because it is HEIF (which the
/// `image` crate does not recognise: its content guess fails, and a `.jpg` name
/// then makes it a broken JPEG); `None` for any other file.
fn heif_error(path: &Path) -> Option<Error> {
    use std::io::Read;
    // Not a pipe again (reopening a FIFO waits for another writer); the head of
    // one is checked as it is read (`read_stream`).
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let mut head = Vec::with_capacity(12);
    std::fs::File::open(path)
        .ok()?
        .take(12)
        .read_to_end(&mut head)
        .ok()?;
    heif_brand(&head).map(|brand| image_err(path, unsupported(brand, "heic")))
}

/// "HEIC" or "HEIF" when `head` starts an ISO-BMFF file whose major brand is a
/// HEIF one (an iPhone's photos, for one); AVIF, the other HEIF family member,
/// the `image` crate recognises itself.
fn heif_brand(head: &[u8]) -> Option<&'static str> {
    if head.len() < 12 || &head[4..8] != b"ftyp" {
        return None;
    }
    match &head[8..12] {
        b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" => Some("HEIC"),
        b"mif1" | b"msf1" | b"mif2" => Some("HEIF"),
        _ => None,
    }
}

/// What a draft decode is asked for: from an image's stored `(width, height)`,
/// the `(width, height)` it must at least have (Pillow's `draft` size).
pub(crate) type Draft<'a> = &'a dyn Fn(usize, usize) -> (usize, usize);

/// Decode `path`; a failure of a HEIF file says so (see [`heif_error`]). With
/// `draft`, a JPEG is decoded at a reduced size (see [`ImageProcessor::jpeg_draft`]).
fn decode(path: &Path, upright: bool, draft: Option<Draft>) -> Result<Rgb8> {
    decode_file(path, upright, draft).map_err(|e| heif_error(path).unwrap_or(e))
}

fn decode_file(path: &Path, upright: bool, draft: Option<Draft>) -> Result<Rgb8> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let regular = file.metadata().map_err(|e| Error::io(path, e))?.is_file();
    if regular {
        let reader = image::ImageReader::new(std::io::BufReader::new(file));
        decode_reader(path, reader, |r| read_whole(path, r), upright, draft)
    } else {
        // A pipe (`--image <(curl …)`) or a device cannot seek back to guess the
        // format: read whole first, refusing at once what starts like no image
        // (`/dev/zero`).
        let bytes = read_stream(path, file)?;
        let reader = image::ImageReader::new(std::io::Cursor::new(bytes));
        decode_reader(path, reader, |c| Ok(c.into_inner()), upright, draft)
    }
}

/// Decode what `reader` reads from `path`; `whole` gives the file's bytes from
/// its start (for the JPEG decoder and the orientation, which may sit anywhere).
fn decode_reader<R: std::io::BufRead + std::io::Seek>(
    path: &Path,
    reader: image::ImageReader<R>,
    whole: impl FnOnce(R) -> Result<Vec<u8>>,
    upright: bool,
    draft: Option<Draft>,
) -> Result<Rgb8> {
    let mut reader = reader
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    // The decoders' own allocations (a PNG's row buffers) within the byte limit,
    // so that the pixel bound below is what refuses a huge image.
    reader.limits(decoder_limits());
    let format = match reader.format() {
        Some(f) if SUPPORTED.contains(&f) => f,
        Some(f) => {
            let name = format!("{f:?}").to_ascii_uppercase();
            let ext = f.extensions_str().first().copied().unwrap_or("img");
            return Err(image_err(path, unsupported(&name, ext)));
        }
        None => return Err(image_err(path, not_an_image())),
    };
    // JPEG as Pillow decodes it (libjpeg-turbo's code), where the feature is on.
    #[cfg(feature = "libjpeg")]
    if format == image::ImageFormat::Jpeg {
        let bytes = whole(reader.into_inner())?;
        let decoded = crate::cpu::jpeg::decode_rgb(&bytes, &check_size, draft)
            .map_err(|e| image_err(path, format!("could not decode image: {e}")))?;
        let mut img = DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(decoded.width as u32, decoded.height as u32, decoded.data)
                .ok_or_else(|| image_err(path, "the JPEG decoder gave a short image"))?,
        );
        if upright {
            img.apply_orientation(crate::orientation::of_jpeg(&bytes));
        }
        return Ok(to_rgb8_like_pil(img));
    }
    #[cfg(not(feature = "libjpeg"))]
    let _ = draft; // zune-jpeg decodes at full size only
                   // Pillow turns a TIFF upright as it loads it: `Image.open(f)` of a TIFF is
                   // upright already, so `read_rgb8` turns it too.
    if !(upright || format == image::ImageFormat::Tiff) {
        return decode_from(path, reader, None);
    }
    // The orientation may sit anywhere in the file (a PNG's eXIf after its pixels),
    // so the file already open is read whole.
    let bytes = whole(reader.into_inner())?;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(&bytes[..]));
    reader.set_format(format);
    reader.limits(decoder_limits());
    decode_from(path, reader, Some(&bytes))
}

fn not_an_image() -> String {
    format!("not a recognised image format ({SUPPORTED_FORMATS} are supported)")
}

/// A file that cannot seek (a pipe, a device), read whole: at most
/// [`MAX_FILE_BYTES`], and not past its first bytes when those start no image
/// format (`/dev/zero` is refused at once).
fn read_stream(path: &Path, file: std::fs::File) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut file = file.take(MAX_FILE_BYTES + 1);
    let mut bytes = Vec::new();
    // The head: enough for every format's signature (and HEIF's brand).
    (&mut file)
        .take(64)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if image::guess_format(&bytes).is_err() {
        return Err(heif_brand(&bytes).map_or_else(
            || image_err(path, not_an_image()),
            |brand| image_err(path, unsupported(brand, "heic")),
        ));
    }
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(image_err(
            path,
            format!("more than the {MAX_FILE_BYTES} bytes an image file may have"),
        ));
    }
    Ok(bytes)
}

/// The file already open, read whole from its start: at most
/// [`MAX_FILE_BYTES`].
fn read_whole(path: &Path, mut file: std::io::BufReader<std::fs::File>) -> Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let size = file
        .get_ref()
        .metadata()
        .map_err(|e| Error::io(path, e))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(image_err(
            path,
            format!("{size} bytes is more than the {MAX_FILE_BYTES} an image file may have"),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.rewind()
        .and_then(|()| file.read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// The largest image file read whole (to find its orientation, or a JPEG for
/// libjpeg): 512 MiB.
const MAX_FILE_BYTES: u64 = 512 << 20;

/// The most pixels an image may have: Pillow's `DecompressionBombError` bound,
/// twice `Image.MAX_IMAGE_PIXELS`. A byte limit alone would let a half-megabyte
/// grey PNG of 23 000² pixels through, then 1.6 GB of RGB.
const MAX_IMAGE_PIXELS: u64 = 2 * 89_478_485;

/// The most bytes a decoded image may take: 8 a pixel (16-bit RGBA) at the pixel
/// bound, 1.33 GiB, so that every 8- and 16-bit image Pillow opens is decoded
/// (a 144-megapixel RGBA scan is 576 MB); only 32-bit float TIFFs near the pixel
/// bound go past it.
const MAX_DECODED_BYTES: u64 = MAX_IMAGE_PIXELS * 8;

/// The decoders' memory limit ([`MAX_DECODED_BYTES`]; the image crate's default
/// is 512 MiB).
fn decoder_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    limits
}

/// The size checks made from an image's header, before its pixels are
/// allocated: Pillow's decompression-bomb bound on pixels, then the bytes the
/// decoded pixels (of the stored type, `stored`) take.
pub(crate) fn check_size(
    width: u64,
    height: u64,
    bytes: u64,
    stored: &str,
) -> std::result::Result<(), String> {
    let pixels = width * height;
    if pixels > MAX_IMAGE_PIXELS {
        return Err(format!(
            "{width}×{height} = {pixels} pixels is more than {MAX_IMAGE_PIXELS}, the limit past \
             which Pillow refuses an image as a decompression bomb"
        ));
    }
    if bytes > MAX_DECODED_BYTES {
        return Err(format!(
            "{width}×{height} {stored} pixels decode to {bytes} bytes, more than the \
             {MAX_DECODED_BYTES} an image may take"
        ));
    }
    Ok(())
}

/// Decode what `reader` reads (the file at `path`); with the file's `bytes`,
/// turned upright as Pillow would (`crate::orientation`).
fn decode_from<R: std::io::BufRead + std::io::Seek>(
    path: &Path,
    reader: image::ImageReader<R>,
    bytes: Option<&[u8]>,
) -> Result<Rgb8> {
    use image::ImageDecoder;
    let format = reader.format();
    let decode_err = |e: image::ImageError| image_err(path, decode_message(&e));
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let (w, h) = decoder.dimensions();
    // (The decoders' own refusal would read "Memory limit exceeded".)
    let stored = format!("{:?}", decoder.color_type());
    check_size(w.into(), h.into(), decoder.total_bytes(), &stored)
        .map_err(|e| image_err(path, e))?;
    let mut limits = decoder_limits();
    limits
        .reserve(decoder.total_bytes())
        .and_then(|()| decoder.set_limits(limits))
        .map_err(decode_err)?;
    let orientation = match (bytes, format) {
        (Some(bytes), Some(format)) => crate::orientation::of(bytes, format, &mut decoder),
        _ => image::metadata::Orientation::NoTransforms,
    };
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    img.apply_orientation(orientation);
    let rgb = to_rgb8_like_pil(img);
    if rgb.width == 0 || rgb.height == 0 {
        return Err(image_err(path, "image has no pixels"));
    }
    Ok(rgb)
}

/// A decoder's failure as a sentence: a file that ends early says so (the
/// decoders' own text for it is "failed to fill whole buffer"), and a PNG chunk
/// with a bad checksum is named by its type.
fn decode_message(e: &image::ImageError) -> String {
    if let image::ImageError::IoError(io) = e {
        if io.kind() == std::io::ErrorKind::UnexpectedEof {
            return "could not decode image: the file ends too early (truncated?)".into();
        }
    }
    let text = e.to_string();
    // png's CrcMismatch prints its chunk type as a Rust struct.
    if let Some(rest) = text.split("ChunkType { type: ").nth(1) {
        let chunk: String = rest
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        return format!(
            "could not decode image: the {chunk} chunk's checksum does not match its bytes (a damaged PNG)"
        );
    }
    format!("could not decode image: {text}")
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
        // Float TIFFs and future formats.
        other => data = other.to_rgb8().into_raw(),
    }
    Rgb8 {
        width: w,
        height: h,
        data,
    }
}

// ---------------------------------------------------------------------------
// PIL's resampling (Pillow, libImaging/Resample.c), for 8-bit images.

/// A PIL resampling filter, by the code `preprocessor_config.json` stores in
/// `resample` (`PIL.Image.Resampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resample {
    /// 0: the pixel whose centre is nearest.
    Nearest,
    /// 1: Lanczos-3 (`sinc(x)·sinc(x/3)`).
    Lanczos,
    /// 2: triangle filter.
    Bilinear,
    /// 3: cubic convolution with a = −0.5 (SigLIP's default).
    Bicubic,
    /// 4: box filter.
    Box,
    /// 5: Hamming-windowed sinc.
    Hamming,
}

impl Resample {
    /// The filter of PIL code `code` (0–5).
    pub fn from_pil_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => Resample::Nearest,
            1 => Resample::Lanczos,
            2 => Resample::Bilinear,
            3 => Resample::Bicubic,
            4 => Resample::Box,
            5 => Resample::Hamming,
            _ => return None,
        })
    }

    /// Pillow's filter support (in input pixels at scale 1) and kernel.
    fn filter(self) -> (f64, fn(f64) -> f64) {
        match self {
            // Nearest never convolves; Box is its convolution stand-in here.
            Resample::Nearest | Resample::Box => (0.5, box_filter),
            Resample::Bilinear => (1.0, bilinear_filter),
            Resample::Hamming => (1.0, hamming_filter),
            Resample::Bicubic => (2.0, bicubic_filter),
            Resample::Lanczos => (3.0, lanczos_filter),
        }
    }
}

fn box_filter(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 {
        1.0
    } else {
        0.0
    }
}

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn hamming_filter(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        1.0
    } else if x >= 1.0 {
        0.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x * (0.54 + 0.46 * x.cos())
    }
}

fn bicubic_filter(x: f64) -> f64 {
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

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos_filter(x: f64) -> f64 {
    if -3.0 < x && x < 3.0 {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Per output index: first input index and fixed-point weights (Pillow's
/// `precompute_coeffs` and `normalize_coeffs_8bpc`).
fn coefficients(in_size: usize, out_size: usize, filter: Resample) -> Vec<(usize, Vec<i32>)> {
    let (support, kernel) = filter.filter();
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let xmax = xmax.max(xmin);
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| kernel((x as f64 - center + 0.5) * ss))
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
/// Errors as [`resize`] does.
pub fn resize_bicubic(img: &Rgb8, width: usize, height: usize) -> Result<Rgb8> {
    resize(img, width, height, Resample::Bicubic)
}

/// Resize an RGB image as PIL's `Image.resize((width, height), filter)` does
/// (`reducing_gap=None`, as transformers calls it). Errors when `img.data` does
/// not hold `width × height` pixels, a size is 0, or the output (or the pass along
/// x, `width × img.height`) would hold more than [`MAX_SIDE`]² pixels and more
/// than the input.
pub fn resize(img: &Rgb8, width: usize, height: usize, filter: Resample) -> Result<Rgb8> {
    img.check()?;
    // `check` proved the input's pixel count fits.
    let limit = MAX_PIXELS.max(img.width * img.height);
    let too_many = |px: Option<usize>| px.is_none_or(|px| px > limit);
    if width == 0
        || height == 0
        || too_many(width.checked_mul(height))
        || too_many(width.checked_mul(img.height))
    {
        return Err(Error::Input {
            tensor: "image".into(),
            msg: format!(
                "cannot resize {}×{} to {width}×{height} (sides at least 1, at most \
                 {MAX_PIXELS} pixels ({MAX_SIDE}²) or the input's count, also after the pass along x)",
                img.width, img.height
            ),
        });
    }
    if filter == Resample::Nearest {
        return Ok(resize_nearest(img, width, height));
    }
    // Pillow's order: along x, then along y (the arithmetic: `cpu::resample`).
    let horizontal = (img.width != width).then(|| Rgb8 {
        width,
        height: img.height,
        data: resample::horizontal(
            &img.data,
            img.width,
            &coefficients(img.width, width, filter),
        ),
    });
    let cur = horizontal.as_ref().unwrap_or(img);
    if cur.height == height {
        return Ok(horizontal.unwrap_or_else(|| img.clone()));
    }
    let taps = coefficients(cur.height, height, filter);
    Ok(Rgb8 {
        width,
        height,
        data: resample::vertical(&cur.data, cur.width * 3, &taps),
    })
}

/// The resize as Pillow writes it, one output byte at a time: the reference the
/// vectorised passes are tested against.
#[cfg(test)]
fn resize_reference(img: &Rgb8, width: usize, height: usize, filter: Resample) -> Rgb8 {
    use crate::cpu::resample::clip8;
    let mut cur = img.clone();
    if cur.width != width {
        let coeffs = coefficients(cur.width, width, filter);
        cur = Rgb8 {
            width,
            height: cur.height,
            data: resample::horizontal_reference(&cur.data, cur.width, &coeffs),
        };
    }
    if cur.height != height {
        let coeffs = coefficients(cur.height, height, filter);
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
    cur
}

/// PIL's NEAREST resize (`ImagingScaleAffine`): output pixel x takes input
/// pixel ⌊xₒ⌋ with xₒ = s/2 + s + … + s (s = in/out), the sum accumulated in f64
/// step by step exactly as Pillow does (its rounding decides ties like 7.5·0.8).
fn resize_nearest(img: &Rgb8, width: usize, height: usize) -> Rgb8 {
    let pick = |out: usize, inp: usize| -> Vec<usize> {
        let step = inp as f64 / out as f64;
        let mut at = step * 0.5;
        (0..out)
            .map(|_| {
                let i = (at as usize).min(inp - 1);
                at += step;
                i
            })
            .collect()
    };
    let (xs, ys) = (pick(width, img.width), pick(height, img.height));
    let mut data = Vec::with_capacity(width * height * 3);
    for &y in &ys {
        for &x in &xs {
            let at = (y * img.width + x) * 3;
            data.extend_from_slice(&img.data[at..at + 3]);
        }
    }
    Rgb8 {
        width,
        height,
        data,
    }
}

/// How an image becomes pixel_values: the settings of transformers'
/// `SiglipImageProcessor`, read from a model's `preprocessor_config.json`
/// ([`ImageProcessor::from_file`]) or SigLIP's defaults at the model's size
/// ([`ImageProcessor::siglip`]).
///
/// Images are always converted to RGB (PIL's `convert("RGB")`); a processor with
/// `do_convert_rgb` false would hand other modes to the model unconverted, which a
/// 3-channel SigLIP cannot take, so the outputs agree wherever transformers runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    /// Resize to `height × width` (else the image must already have that size).
    pub do_resize: bool,
    /// Output height in pixels.
    pub height: usize,
    /// Output width in pixels.
    pub width: usize,
    /// The resize filter.
    pub resample: Resample,
    /// Multiply by `rescale_factor` (computed in f64, rounded to f32).
    pub do_rescale: bool,
    /// The factor (SigLIP: 1/255).
    pub rescale_factor: f64,
    /// `(x − mean) / std` per channel, in f32.
    pub do_normalize: bool,
    /// The mean per channel (R, G, B).
    pub image_mean: [f32; 3],
    /// The standard deviation per channel (R, G, B).
    pub image_std: [f32; 3],
    /// Turn image files upright by their orientation (EXIF, else XMP) when loading
    /// them ([`read_rgb8_upright`], as transformers' `load_image`). False by
    /// default, and never set by a `preprocessor_config.json`: the image
    /// processors themselves see what `Image.open(f)` holds ([`read_rgb8`]).
    pub upright: bool,
    /// Decode JPEGs in draft mode, as Pillow's `Image.draft("RGB", size)` with
    /// `size` the output size (a SigLIP 2 image's own target size): libjpeg's
    /// scaled inverse DCT gives 1/2, 1/4 or 1/8 of the image, the smallest of
    /// these at least `size` in both directions, and the resize starts from
    /// that. For a 12 MP photo and a 224 or 384 px model this takes 2–3× less
    /// time (the entropy decoding is not reduced; BENCHMARKS.md); the pixels are
    /// then those of a Pillow pipeline that calls `draft`, within a few levels
    /// of transformers' (which decodes in full), not equal. Other formats, images
    /// smaller than twice the size, and processors that do not resize decode as
    /// without it; so do builds without the `libjpeg` feature. False by
    /// default, never set by a `preprocessor_config.json`.
    pub jpeg_draft: bool,
}

impl ImageProcessor {
    /// SigLIP's preprocessing at `image_size` (what the model's config says):
    /// bicubic resize, rescale 1/255, normalise mean 0.5 and std 0.5.
    pub fn siglip(image_size: usize) -> Self {
        Self {
            do_resize: true,
            height: image_size,
            width: image_size,
            resample: Resample::Bicubic,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: IMAGE_MEAN,
            image_std: IMAGE_STD,
            upright: false,
            jpeg_draft: false,
        }
    }

    /// Read `preprocessor_config.json`. Absent keys take SiglipImageProcessor's
    /// defaults (224 × 224, bicubic, 1/255, mean and std 0.5). Errors name the
    /// file and the key.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read_small_config(path)?;
        Self::from_json_str(&text, path)
    }

    /// Parse a `preprocessor_config.json` text; `file` is used in messages.
    pub fn from_json_str(text: &str, file: impl AsRef<Path>) -> Result<Self> {
        use serde_json::Value;
        let file = file.as_ref();
        let err = |key: &str, msg: String| Error::Config {
            file: file.to_path_buf(),
            msg: if key.is_empty() {
                msg
            } else {
                format!("key `{key}`: {msg}")
            },
        };
        let root: Value =
            serde_json::from_str(text).map_err(|e| err("", format!("not valid JSON: {e}")))?;
        let Value::Object(obj) = root else {
            return Err(err("", "expected a JSON object at the top level".into()));
        };
        let get = |key: &str| obj.get(key).filter(|v| !v.is_null());
        let flag = |key: &str, default: bool| match get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(err(key, format!("must be true or false, found {v}"))),
        };
        let size_of = |v: &Value, key: &str| {
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| (1..=MAX_SIDE).contains(&n))
                .ok_or_else(|| {
                    err(
                        key,
                        format!("must be a size between 1 and {MAX_SIDE}, found {v}"),
                    )
                })
        };
        // Steps of other image processors that SigLIP's do not take: refused,
        // not silently left out (the pixels would not be the model's).
        if let Some(Value::String(t)) = get("image_processor_type") {
            if !t.starts_with("Siglip") {
                return Err(err(
                    "image_processor_type",
                    format!(
                        "\"{t}\": tessera preprocesses as SiglipImageProcessor and \
                         Siglip2ImageProcessor do"
                    ),
                ));
            }
        }
        for key in ["do_center_crop", "do_pad", "do_crop_margin"] {
            if flag(key, false)? {
                return Err(err(
                    key,
                    "true, a step SigLIP's image processors do not take (tessera does not \
                     implement it)"
                        .into(),
                ));
            }
        }
        let (height, width) = match get("size") {
            None => (224, 224),
            Some(Value::Object(m)) => match (m.get("height"), m.get("width")) {
                (Some(h), Some(w)) => (size_of(h, "size.height")?, size_of(w, "size.width")?),
                _ => {
                    return Err(err(
                        "size",
                        format!(
                            "expected {{\"height\": H, \"width\": W}} as SiglipImageProcessor \
                             uses, found {}",
                            Value::Object(m.clone())
                        ),
                    ))
                }
            },
            Some(v @ Value::Number(_)) => {
                let n = size_of(v, "size")?;
                (n, n)
            }
            Some(v) => return Err(err("size", format!("must be an object, found {v}"))),
        };
        let resample = match get("resample") {
            None => Resample::Bicubic,
            Some(v) => v
                .as_u64()
                .and_then(Resample::from_pil_code)
                .ok_or_else(|| {
                    err(
                        "resample",
                        format!("must be a PIL filter code 0–5, found {v}"),
                    )
                })?,
        };
        let rescale_factor = match get("rescale_factor") {
            None => 1.0 / 255.0,
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| err("rescale_factor", format!("must be a number, found {v}")))?,
        };
        let triple = |key: &str| -> Result<[f32; 3]> {
            match get(key) {
                None => Ok([0.5; 3]),
                Some(Value::Number(n)) => {
                    let x = n.as_f64().unwrap_or(f64::NAN) as f32;
                    Ok([x; 3])
                }
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0f32; 3];
                    for (o, v) in out.iter_mut().zip(a) {
                        *o = v.as_f64().ok_or_else(|| {
                            err(key, format!("entries must be numbers, found {v}"))
                        })? as f32;
                    }
                    Ok(out)
                }
                Some(v) => Err(err(
                    key,
                    format!("must be 3 numbers (one per RGB channel), found {v}"),
                )),
            }
        };
        let image_mean = triple("image_mean")?;
        let image_std = triple("image_std")?;
        if image_std.iter().chain(&image_mean).any(|v| !v.is_finite()) || image_std.contains(&0.0) {
            return Err(err(
                "image_std",
                format!("mean {image_mean:?} and std {image_std:?} must be finite, std non-zero"),
            ));
        }
        let p = Self {
            do_resize: flag("do_resize", true)?,
            height,
            width,
            resample,
            do_rescale: flag("do_rescale", true)?,
            rescale_factor,
            do_normalize: flag("do_normalize", true)?,
            image_mean,
            image_std,
            upright: false,
            jpeg_draft: false,
        };
        // (The sides were bounded above.) Named after the key that breaks it.
        if let Some(msg) = p.value_problem() {
            let tiny_std = p.image_std.iter().any(|s| !(1.0 / s).is_finite());
            return Err(err(
                if tiny_std {
                    "image_std"
                } else {
                    "rescale_factor"
                },
                msg,
            ));
        }
        Ok(p)
    }

    /// The output size within 1..=[`MAX_SIDE`]² pixels, and every output value finite: the
    /// rescale and normalisation are affine in the pixel, so its values at 0 and
    /// 255 bound them all (a `rescale_factor` of 1e300 or a std of 1e-44 would
    /// otherwise make inf and NaN embeddings silently).
    fn check(&self) -> Result<()> {
        let (h, w) = (self.height, self.width);
        let problem = if h == 0 || w == 0 || h.checked_mul(w).is_none_or(|px| px > MAX_PIXELS) {
            Some(format!(
                "resizes to {w}×{h} pixels; at least 1 and at most {MAX_PIXELS} ({MAX_SIDE}²)"
            ))
        } else {
            self.value_problem()
        };
        match problem {
            Some(msg) => Err(Error::Input {
                tensor: "image processor".into(),
                msg,
            }),
            None => Ok(()),
        }
    }

    /// What makes a pixel value non-finite, if anything (see [`Self::check`]).
    fn value_problem(&self) -> Option<String> {
        for c in 0..3 {
            for x in [0u8, 255] {
                let mut v = if self.do_rescale {
                    (f64::from(x) * self.rescale_factor) as f32
                } else {
                    f32::from(x)
                };
                if self.do_normalize {
                    v = (v - self.image_mean[c]) / self.image_std[c];
                }
                if !v.is_finite() {
                    return Some(format!(
                        "rescale_factor {}, image_mean {} and image_std {} make pixel value {x} \
                         of channel {c} {v}",
                        self.rescale_factor, self.image_mean[c], self.image_std[c]
                    ));
                }
            }
        }
        None
    }

    /// The processor for a model: its `preprocessor_config.json` when it has one
    /// (which must then produce the model's `image_size` square), else SigLIP's
    /// defaults at `image_size`.
    pub fn for_model(preprocessor: Option<&Path>, image_size: usize) -> Result<Self> {
        let Some(path) = preprocessor else {
            return Ok(Self::siglip(image_size));
        };
        let p = Self::from_file(path)?;
        if (p.height, p.width) != (image_size, image_size) {
            return Err(Error::Config {
                file: path.to_path_buf(),
                msg: format!(
                    "key `size`: {}×{} pixels, but the model takes {image_size}×{image_size} \
                     images (config.json's image_size)",
                    p.height, p.width
                ),
            });
        }
        Ok(p)
    }

    /// One decoded image → pixel_values `[3, height, width]` (channel-first, flat).
    pub fn pixel_values(&self, img: &Rgb8) -> Result<Vec<f32>> {
        img.check()?;
        self.check()?;
        let resized;
        let img = if img.width == self.width && img.height == self.height {
            img
        } else if self.do_resize {
            resized = resize(img, self.width, self.height, self.resample)?;
            &resized
        } else {
            return Err(Error::Input {
                tensor: "image".into(),
                msg: format!(
                    "is {}×{} pixels; the preprocessor does not resize (do_resize false) and \
                     the model takes {}×{}",
                    img.width, img.height, self.width, self.height
                ),
            });
        };
        let plane = self.width * self.height;
        let mut out = vec![0f32; 3 * plane];
        for (i, px) in img.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                // transformers rescales in f64 and rounds to f32, then normalises in f32.
                let mut v = if self.do_rescale {
                    (f64::from(px[c]) * self.rescale_factor) as f32
                } else {
                    f32::from(px[c])
                };
                if self.do_normalize {
                    v = (v - self.image_mean[c]) / self.image_std[c];
                }
                out[c * plane + i] = v;
            }
        }
        Ok(out)
    }

    /// An image file decoded to RGB ([`read_rgb8`]), or upright by its
    /// orientation when [`upright`](Self::upright) is set ([`read_rgb8_upright`]);
    /// a JPEG at a reduced size when [`jpeg_draft`](Self::jpeg_draft) is set and
    /// the processor resizes.
    pub fn read(&self, path: impl AsRef<Path>) -> Result<Rgb8> {
        let (w, h) = (self.width, self.height);
        self.read_drafted(path.as_ref(), &move |_, _| (w, h))
    }

    /// [`read`](Self::read), the draft size (when drafting) given by `want` from
    /// the image's stored width and height.
    fn read_drafted(&self, path: &Path, want: Draft) -> Result<Rgb8> {
        let draft = (self.jpeg_draft && self.do_resize).then_some(want);
        decode(path, self.upright, draft)
    }

    /// One image file → its pixel_values `[3, height, width]`. Errors name the file.
    pub fn load_image(&self, path: impl AsRef<Path>) -> Result<Vec<f32>> {
        let path = path.as_ref();
        self.pixel_values(&self.read(path)?)
            .map_err(|e| image_err(path, e.to_string()))
    }

    /// Several image files → pixel_values `[B, 3, height, width]` (flat), in
    /// order. An empty list is an error (tessera has no empty batches).
    pub fn load_images<P: AsRef<Path>>(&self, paths: &[P]) -> Result<Vec<f32>> {
        if paths.is_empty() {
            return Err(Error::Input {
                tensor: "pixel_values".into(),
                msg: "no image files given (a batch needs at least one image)".into(),
            });
        }
        let mut out = Vec::new();
        for p in paths {
            out.extend(self.load_image(p)?);
        }
        Ok(out)
    }
}

/// The most patches per image Siglip2Processor accepts: 2^14, 16× the largest
/// SigLIP 2 checkpoint's 1024.
const MAX_PATCHES_LIMIT: usize = 1 << 14;

/// The largest side (pixels) an image processor resizes to: 4096, 8× the largest
/// SigLIP checkpoint's 512. A `[3, 4096, 4096]` f32 image is 201 MB.
pub const MAX_SIDE: usize = 4096;

/// The most pixels a SigLIP 2 image may be resized to (`max_num_patches · P²`):
/// as many as a [`MAX_SIDE`] square (64× the released checkpoints' 1024 × 16²).
const MAX_PIXELS: usize = MAX_SIDE * MAX_SIDE;

/// Siglip2ImageProcessor (SigLIP 2 NaFlex, MODEL.md "Variable resolution"):
/// each image resized, keeping its aspect ratio, to the largest grid of
/// `hᵢ × wᵢ` patches with `hᵢ·wᵢ ≤ max_num_patches`, then rescaled, normalised
/// and cut into patches flattened channel-last (py, px, c).
#[derive(Debug, Clone, PartialEq)]
pub struct Siglip2Processor {
    /// Resize filter, rescale and normalisation (its `height`/`width` are not
    /// used: each image gets its own size). Siglip2ImageProcessor's defaults:
    /// bilinear, 1/255, mean and std 0.5.
    pub image: ImageProcessor,
    /// P, the side of a patch in pixels.
    pub patch_size: usize,
    /// The most patches an image may have.
    pub max_num_patches: usize,
}

impl Siglip2Processor {
    /// Siglip2ImageProcessor's defaults at `patch_size` and `max_num_patches`.
    pub fn new(patch_size: usize, max_num_patches: usize) -> Self {
        Self {
            image: ImageProcessor {
                resample: Resample::Bilinear,
                ..ImageProcessor::siglip(patch_size)
            },
            patch_size,
            max_num_patches,
        }
    }

    /// Parse a Siglip2ImageProcessor `preprocessor_config.json` text (`file` is
    /// used in messages): `resample` (default bilinear), `do_rescale`,
    /// `rescale_factor`, `do_normalize`, `image_mean`, `image_std`, `do_resize`,
    /// `patch_size` (default 16) and `max_num_patches` (default 256).
    pub fn from_json_str(text: &str, file: impl AsRef<Path>) -> Result<Self> {
        let file = file.as_ref();
        let image = ImageProcessor::from_json_str(text, file)?;
        // Parsed once more for the keys ImageProcessor does not know (the text
        // is valid JSON: from_json_str accepted it).
        let root: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Config {
            file: file.to_path_buf(),
            msg: format!("not valid JSON: {e}"),
        })?;
        let get = |key: &str| root.get(key).filter(|v| !v.is_null());
        let count = |key: &str, default: usize, max: usize| match get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| (1..=max).contains(&n))
                .ok_or_else(|| Error::Config {
                    file: file.to_path_buf(),
                    msg: format!("key `{key}`: must be an integer between 1 and {max}, found {v}"),
                }),
        };
        let resample = if get("resample").is_some() {
            image.resample
        } else {
            Resample::Bilinear
        };
        let p = Self {
            image: ImageProcessor { resample, ..image },
            patch_size: count("patch_size", 16, MAX_SIDE)?,
            max_num_patches: count("max_num_patches", 256, MAX_PATCHES_LIMIT)?,
        };
        p.check_budget().map_err(|msg| Error::Config {
            file: file.to_path_buf(),
            msg: format!("key `max_num_patches`: {msg}"),
        })?;
        Ok(p)
    }

    /// Read a model's `preprocessor_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read_small_config(path)?;
        Self::from_json_str(&text, path)
    }

    /// The patch side within 1..=[`MAX_SIDE`], the patch count within
    /// 1..=2^14, and the pixels they make within [`MAX_PIXELS`].
    fn check_budget(&self) -> std::result::Result<(), String> {
        let (p, n) = (self.patch_size, self.max_num_patches);
        if !(1..=MAX_SIDE).contains(&p) {
            return Err(format!(
                "patch_size is {p}; it must be between 1 and {MAX_SIDE}"
            ));
        }
        if !(1..=MAX_PATCHES_LIMIT).contains(&n) {
            return Err(format!(
                "{n} patches: an image has between 1 and {MAX_PATCHES_LIMIT} (SigLIP 2 \
                 checkpoints use 256 to 1024)"
            ));
        }
        if n.checked_mul(p * p).is_none_or(|px| px > MAX_PIXELS) {
            return Err(format!(
                "{n} patches of {p}×{p} px are more than {MAX_PIXELS} pixels ({MAX_SIDE}²) per image"
            ));
        }
        Ok(())
    }

    /// Whether the JSON object in `path` has `key` (for messages; false on any error).
    fn has_key(path: &Path, key: &str) -> bool {
        read_small_config(path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v.get(key).is_some_and(|v| !v.is_null()))
    }

    /// The processor for a SigLIP 2 model of patch `patch_size`: its
    /// `preprocessor_config.json` when it has one (whose `patch_size` must then
    /// be the model's), else the defaults; `max_patches` overrides
    /// `max_num_patches`.
    pub fn for_model(
        preprocessor: Option<&Path>,
        patch_size: usize,
        max_patches: Option<usize>,
    ) -> Result<Self> {
        let mut p = match preprocessor {
            None => Self::new(patch_size, 256),
            Some(path) => {
                let p = Self::from_file(path)?;
                if p.patch_size != patch_size {
                    let given = if Self::has_key(path, "patch_size") {
                        p.patch_size.to_string()
                    } else {
                        format!("absent (Siglip2ImageProcessor's default {})", p.patch_size)
                    };
                    return Err(Error::Config {
                        file: path.to_path_buf(),
                        msg: format!(
                            "key `patch_size`: {given}, but the model's patches are \
                             {patch_size} px (config.json's patch_size)"
                        ),
                    });
                }
                p
            }
        };
        if let Some(n) = max_patches {
            p.max_num_patches = n;
            p.check_budget().map_err(|msg| Error::Input {
                tensor: "max_patches".into(),
                msg,
            })?;
        }
        Ok(p)
    }

    /// The size (height, width) in pixels an image of `height × width` is resized
    /// to: Siglip2ImageProcessor's binary search over the scale (in f64, as
    /// Python does) for the largest multiple-of-P size keeping the aspect ratio
    /// with at most `max_num_patches` patches.
    pub fn target_size(&self, height: usize, width: usize) -> (usize, usize) {
        let p = self.patch_size as f64;
        let scaled = |scale: f64, size: usize| -> usize {
            let s = ((size as f64 * scale) / p).ceil() * p;
            s.max(p) as usize
        };
        let eps = 1e-5;
        let (mut lo, mut hi) = (eps / 10.0, 100.0);
        while hi - lo >= eps {
            let scale = (lo + hi) / 2.0;
            let (th, tw) = (scaled(scale, height), scaled(scale, width));
            let patches = (th as f64 / p) * (tw as f64 / p);
            if patches <= self.max_num_patches as f64 {
                lo = scale;
            } else {
                hi = scale;
            }
        }
        (scaled(lo, height), scaled(lo, width))
    }

    /// One decoded image → its patches.
    pub fn patches(&self, img: &Rgb8) -> Result<crate::model::ImagePatches> {
        img.check()?;
        let p = self.patch_size;
        self.check_budget().map_err(|msg| Error::Input {
            tensor: "image processor".into(),
            msg,
        })?;
        let (h, w) = if self.image.do_resize {
            self.target_size(img.height, img.width)
        } else {
            (img.height, img.width)
        };
        let (gh, gw) = (h / p, w / p);
        if h % p != 0 || w % p != 0 || gh * gw > self.max_num_patches || gh * gw == 0 {
            return Err(Error::Input {
                tensor: "image".into(),
                msg: if self.image.do_resize {
                    format!(
                        "is {}×{} pixels, resized to {w}×{h}: not a grid of 1 to {} patches of \
                         {p} px",
                        img.width, img.height, self.max_num_patches
                    )
                } else {
                    format!(
                        "is {}×{} pixels; without resizing (do_resize false) it must be a grid \
                         of at most {} patches of {p} px",
                        img.width, img.height, self.max_num_patches
                    )
                },
            });
        }
        let processor = ImageProcessor {
            height: h,
            width: w,
            ..self.image.clone()
        };
        let chw = processor.pixel_values(img)?;
        let plane = h * w;
        let mut values = Vec::with_capacity(3 * plane);
        for gy in 0..gh {
            for gx in 0..gw {
                for py in 0..p {
                    for px in 0..p {
                        let at = (gy * p + py) * w + gx * p + px;
                        values.extend((0..3).map(|c| chw[c * plane + at]));
                    }
                }
            }
        }
        Ok(crate::model::ImagePatches {
            height: gh,
            width: gw,
            values,
        })
    }

    /// One image file → its patches. Errors name the file.
    pub fn load_image(&self, path: impl AsRef<Path>) -> Result<crate::model::ImagePatches> {
        let path = path.as_ref();
        // Drafted (ImageProcessor::jpeg_draft) for the size the whole image
        // would be resized to; the grid is then the drafted image's own, as when
        // Pillow's draft precedes the image processor (the drafted sides' ratio
        // may differ a little from the file's, and the grid by a row or column).
        let want = |w: usize, h: usize| {
            let (th, tw) = self.target_size(h, w);
            (tw, th)
        };
        self.patches(&self.image.read_drafted(path, &want)?)
            .map_err(|e| image_err(path, e.to_string()))
    }
}

/// SigLIP's default steps 2 and 3 for an RGB image already decoded:
/// `[3, I, I]` channel-first f32 ([`ImageProcessor::siglip`]).
pub fn pixel_values_from_rgb8(img: &Rgb8, image_size: usize) -> Result<Vec<f32>> {
    ImageProcessor::siglip(image_size).pixel_values(img)
}

/// One image file → its pixel_values `[3, I, I]` (flattened, channel-first) with
/// SigLIP's default preprocessing.
pub fn load_image(path: impl AsRef<Path>, image_size: usize) -> Result<Vec<f32>> {
    let path = path.as_ref();
    if image_size == 0 {
        return Err(image_err(path, "the target image size is 0"));
    }
    ImageProcessor::siglip(image_size).load_image(path)
}

/// Several image files → pixel_values `[B, 3, I, I]` (flattened), in the given
/// order, with SigLIP's default preprocessing. An empty list is an error
/// (tessera has no empty batches: B = 0 is refused here, by the CLI and by
/// [`VisionModel::forward`](crate::VisionModel::forward)).
pub fn load_images<P: AsRef<Path>>(paths: &[P], image_size: usize) -> Result<Vec<f32>> {
    ImageProcessor::siglip(image_size).load_images(paths)
}

/// The text of a preprocessor config of at most 1 MiB.
fn read_small_config(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > 1 << 20 {
        return Err(Error::Config {
            file: path.to_path_buf(),
            msg: format!(
                "{} bytes is too large for a preprocessor config",
                meta.len()
            ),
        });
    }
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The header checks: Pillow's pixel bound first, then the decoded bytes (8
    /// a pixel at the bound pass; a 32-bit float RGBA image there does not).
    #[test]
    fn size_checks_take_what_pillow_opens() {
        let side = 13_377u64; // 178.94 million pixels: under the bound
        assert!(check_size(side, side, side * side * 8, "Rgba16").is_ok());
        let e = check_size(side, side, side * side * 16, "Rgba32F").unwrap_err();
        assert!(
            e.contains("13377×13377 Rgba32F pixels decode to 2863"),
            "{e}"
        );
        let e = check_size(13_380, 13_380, 13_380 * 13_380, "L8").unwrap_err();
        assert!(e.contains("decompression bomb"), "{e}");
        let e = check_size(200_000_000, 1, 0, "Rgb8").unwrap_err();
        assert!(e.contains("200000000×1 = 200000000 pixels"), "{e}");
    }

    /// A random image (xorshift from `seed`).
    fn noise(width: usize, height: usize, seed: u32) -> Rgb8 {
        let mut s = seed | 1;
        let data = (0..width * height * 3)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 7) as u8
            })
            .collect();
        Rgb8 {
            width,
            height,
            data,
        }
    }

    /// The vectorised passes equal Pillow's byte-at-a-time arithmetic for every
    /// filter: strong and slight shrinking (runs of many [`LANES`], and of less
    /// than one), stretching, one side only, and one-pixel images.
    #[test]
    fn vectorised_resize_equals_the_reference() {
        let filters = [
            Resample::Box,
            Resample::Bilinear,
            Resample::Hamming,
            Resample::Bicubic,
            Resample::Lanczos,
        ];
        let cases = [
            ((517, 389), (37, 29)),
            ((517, 389), (224, 224)),
            ((97, 61), (96, 60)),
            ((13, 7), (50, 31)),
            ((40, 30), (40, 11)),
            ((40, 30), (7, 30)),
            ((1, 1), (5, 3)),
            ((9, 1), (1, 1)),
        ];
        for (seed, ((w, h), (ow, oh))) in cases.into_iter().enumerate() {
            let img = noise(w, h, 0x9e37_79b9 ^ seed as u32);
            for f in filters {
                let fast = resize(&img, ow, oh, f).unwrap();
                let slow = resize_reference(&img, ow, oh, f);
                assert_eq!((fast.width, fast.height), (ow, oh));
                let diff = fast
                    .data
                    .iter()
                    .zip(&slow.data)
                    .filter(|(a, b)| a != b)
                    .count();
                assert_eq!(diff, 0, "{w}x{h} -> {ow}x{oh} {f:?}: {diff} bytes differ");
            }
        }
    }
}
