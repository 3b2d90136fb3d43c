//! JPEG decoding by libjpeg-turbo's C code (mozjpeg's build of it, cargo feature
//! `libjpeg`, on by default), set up as Pillow 13 sets it up: the accurate integer
//! IDCT and fancy chroma upsampling, YCbCr → RGB by libjpeg, grey replicated,
//! CMYK / YCCK read as Adobe's inverted CMYK and turned to RGB by Pillow's
//! `convert("RGB")` formula. The bytes are those of `Image.open(f).convert("RGB")`
//! (checked against fixtures Pillow wrote, tests/it/preprocess.rs); zune-jpeg,
//! the image crate's decoder, differs by up to 4 levels.
//!
//! libjpeg reports errors by calling `error_exit`, which must not return: ours
//! unwinds (the C code is built with `-fexceptions`, mozjpeg-sys's `unwinding`)
//! and the unwind is caught here, so every error is a value. A file that ends
//! before its pixels do is an error, as in Pillow ("image file is truncated"),
//! where libjpeg would fill the rest with grey and warn.
//!
//! Draft decoding ([`Draft`]) is Pillow's `Image.draft(mode, size)`: libjpeg
//! decodes at 1/2, 1/4 or 1/8 of the size through its scaled inverse DCTs,
//! the smallest of those still at least `size` in both directions.

use std::os::raw::c_int;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use mozjpeg::{ColorSpace, Decompress};
use mozjpeg_sys as ffi;

use crate::preprocess::Draft;

/// A decoded image: width, height, and `width · height · 3` RGB bytes.
pub(crate) struct Decoded {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// What an unwind out of libjpeg carries: its message.
struct Failure(String);

/// Pillow's `JpegImageFile.draft` scale for an image of `width × height` asked
/// for at least `want_w × want_h`: `min(width // want_w, height // want_h)`
/// rounded down to 8, 4, 2 or 1. (A zero wanted side asks for no scaling.)
pub(crate) fn draft_scale(width: usize, height: usize, want_w: usize, want_h: usize) -> usize {
    if want_w == 0 || want_h == 0 {
        return 1;
    }
    let scale = (width / want_w).min(height / want_h);
    [8, 4, 2].into_iter().find(|&s| scale >= s).unwrap_or(1)
}

/// The size check of an image's header: width, height, the bytes its samples
/// take at full size and their type; an error refuses the image.
pub(crate) type SizeCheck = dyn Fn(u64, u64, u64, &str) -> Result<(), String>;

/// `bytes` (a JPEG file) as RGB, refused by `check` (from its full size) before
/// anything is allocated; with `draft`, decoded at the reduced size
/// [`draft_scale`] picks for what it asks. Errors are messages (the caller
/// names the file).
pub(crate) fn decode_rgb(
    bytes: &[u8],
    check: &SizeCheck,
    draft: Option<Draft>,
) -> Result<Decoded, String> {
    match catch_unwind(AssertUnwindSafe(|| decode(bytes, check, draft))) {
        Ok(result) => result,
        Err(payload) => Err(match payload.downcast::<Failure>() {
            Ok(f) => f.0,
            Err(_) => "the JPEG decoder failed".to_string(),
        }),
    }
}

fn decode(bytes: &[u8], check: &SizeCheck, draft: Option<Draft>) -> Result<Decoded, String> {
    let io = |e: std::io::Error| e.to_string();
    let mut d = Decompress::with_err(error_mgr())
        .from_mem(bytes)
        .map_err(io)?;
    let (width, height) = d.size();
    let cmyk = matches!(d.color_space(), ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK);
    let channels: u64 = if cmyk { 4 } else { 3 };
    let samples = (width as u64) * (height as u64) * channels;
    check(
        width as u64,
        height as u64,
        samples,
        if cmyk { "CMYK" } else { "RGB" },
    )?;
    if width == 0 || height == 0 {
        return Err("image has no pixels".into());
    }
    if let Some(want) = draft {
        let (w, h) = want(width, height);
        // libjpeg scales by scale_num / 8: 8, 4, 2 or 1 eighths.
        let s = draft_scale(width, height, w, h);
        d.scale((8 / s) as u8);
    }
    let space = if cmyk {
        ColorSpace::JCS_CMYK
    } else {
        ColorSpace::JCS_RGB
    };
    let mut started = d.to_colorspace(space).map_err(io)?;
    // The output size (ceil(side / scale) when drafted, as Pillow's).
    let (width, height) = (started.width(), started.height());
    let samples: Vec<u8> = started.read_scanlines().map_err(io)?;
    // Not `finish`: it reads on to the end-of-image marker, which Pillow does not
    // ask for once it has every row.
    drop(started);
    let data = if cmyk {
        samples.chunks_exact(4).flat_map(cmyk_to_rgb).collect()
    } else {
        samples
    };
    Ok(Decoded {
        width,
        height,
        data,
    })
}

/// One pixel of libjpeg's CMYK output as Pillow makes it RGB: read as Adobe's
/// inverted CMYK (`CMYK;I`), then `convert("RGB")`'s `cmyk2rgb`:
/// `255 − k − c·(255 − k)/255`, rounded as its `MULDIV255`.
fn cmyk_to_rgb(p: &[u8]) -> [u8; 3] {
    let (c, m, y, k) = (255 - p[0], 255 - p[1], 255 - p[2], 255 - p[3]);
    let nk = 255 - i32::from(k);
    let channel = |v: u8| {
        let t = i32::from(v) * nk + 128;
        (nk - (((t >> 8) + t) >> 8)).clamp(0, 255) as u8
    };
    [channel(c), channel(m), channel(y)]
}

/// libjpeg's standard error manager with our exits: errors and a premature end
/// of the file unwind with their message; other warnings (junk between markers)
/// are ignored, as Pillow ignores them.
fn error_mgr() -> ffi::jpeg_error_mgr {
    // SAFETY: `jpeg_error_mgr` is a C struct of function pointers (`Option`s),
    // integers and raw pointers, for which all-zero bytes are valid values; it is
    // then filled by `jpeg_std_error`, as libjpeg's own programs do.
    let mut err: ffi::jpeg_error_mgr = unsafe { std::mem::zeroed() };
    // SAFETY: `err` is a valid, exclusively borrowed error manager.
    unsafe { ffi::jpeg_std_error(&mut err) };
    err.error_exit = Some(error_exit);
    err.emit_message = Some(emit_message);
    err
}

/// libjpeg's text for its current message.
fn message(cinfo: &mut ffi::jpeg_common_struct) -> String {
    let mut buffer = [0u8; 80];
    // SAFETY: `cinfo.err` points at the error manager libjpeg was given (ours,
    // alive for the whole decode); its `format_message` (libjpeg's) writes at most
    // 80 bytes (JMSG_LENGTH_MAX), NUL-terminated, into the buffer. The binding
    // declares the buffer `&[u8; 80]`; it is passed a pointer to our own mutable
    // array, which nothing else reads while the C function writes it.
    unsafe {
        let err = &*cinfo.err;
        if let Some(format) = err.format_message {
            let format: unsafe extern "C-unwind" fn(&mut ffi::jpeg_common_struct, *mut u8) =
                std::mem::transmute(format);
            format(cinfo, buffer.as_mut_ptr());
        } else {
            return format!("libjpeg error {}", err.msg_code);
        }
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    let msg = message(cinfo);
    resume_unwind(Box::new(Failure(msg)))
}

extern "C-unwind" fn emit_message(cinfo: &mut ffi::jpeg_common_struct, level: c_int) {
    // SAFETY: as in `message`: `cinfo.err` is our error manager.
    let code = unsafe { (*cinfo.err).msg_code };
    if level < 0 && code == ffi::JWRN_JPEG_EOF as c_int {
        resume_unwind(Box::new(Failure(
            "image file is truncated (the JPEG data ends before its pixels)".into(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_is_pillows_cmyk2rgb() {
        // Pillow 13: Image.frombytes("CMYK", (1, 1), bytes([c, m, y, k])).convert("RGB"),
        // for the inverted values libjpeg gives (255 − each).
        for (cmyk, rgb) in [
            ([0u8, 0, 0, 0], [255u8, 255, 255]),
            ([255, 255, 255, 255], [0, 0, 0]),
            ([128, 64, 200, 30], [112, 169, 49]),
        ] {
            let stored = cmyk.map(|v| 255 - v);
            assert_eq!(cmyk_to_rgb(&stored), rgb, "{cmyk:?}");
        }
    }

    #[test]
    fn draft_scale_is_pillows() {
        // Pillow's JpegImageFile.draft: min(W // w, H // h), then the first of
        // 8, 4, 2, 1 it reaches. A 12 MP photo for SigLIP at 384: min(10, 7) = 7.
        for (w, h, ww, wh, s) in [
            (4032, 3024, 384, 384, 4),
            (4032, 3024, 224, 224, 8),
            (3024, 4032, 224, 224, 8),
            (1000, 1000, 384, 384, 2),
            (767, 1000, 384, 384, 1),
            (768, 768, 384, 384, 2),
            (383, 383, 384, 384, 1),
            (4000, 100, 10, 60, 1),
            (4032, 3024, 0, 384, 1),
        ] {
            assert_eq!(draft_scale(w, h, ww, wh), s, "{w}×{h} for {ww}×{wh}");
        }
    }

    #[test]
    fn broken_files_are_errors() {
        let any = |_: u64, _: u64, _: u64, _: &str| Ok(());
        assert!(decode_rgb(b"not a jpeg at all", &any, None).is_err());
        assert!(decode_rgb(&[0xff, 0xd8, 0xff], &any, None).is_err());
        assert!(decode_rgb(&[], &any, None).is_err());
    }
}
