//! An image file's orientation, found where Pillow 13 finds it, for
//! [`crate::preprocess::read_rgb8_upright`] (transformers' `load_image`, which calls
//! `ImageOps.exif_transpose`) and for TIFF files, which Pillow turns upright as it
//! loads them (`Image.open(f)` of a TIFF is already upright).
//!
//! Pillow's rule (`Image.getexif`): the EXIF block's first directory (IFD0) tag 0x0112;
//! only when that tag is absent, the XMP packet's `tiff:Orientation="N"` or
//! `<tiff:Orientation>N`. Values 2–8 turn the image; anything else leaves it. Where
//! each format keeps them, as Pillow reads them:
//!
//! | format | EXIF | XMP |
//! | --- | --- | --- |
//! | PNG | the last `eXIf` chunk, before or after the pixels; else a `Raw profile type exif` text chunk (ImageMagick's hex) | a `XML:com.adobe.xmp` text chunk |
//! | JPEG | the APP1 `Exif` segments | the last APP1 XMP segment |
//! | WebP | the `EXIF` chunk | the `XMP ` chunk |
//! | TIFF | the file's own first directory | tag 700 |
//!
//! GIF and BMP have neither for Pillow. Metadata that Pillow would refuse with an
//! exception (a broken zlib stream, bad hex) counts here as absent: the image is
//! used as stored.

use std::io::Read;

use image::metadata::Orientation;
use image::{ImageDecoder, ImageFormat};

/// Text chunks larger than this are dropped (Pillow refuses them: `MAX_TEXT_CHUNK`).
const MAX_TEXT_CHUNK: u64 = 1 << 20;

/// The orientation Pillow applies to the image in `bytes` (a file of `format`,
/// which `decoder` reads).
pub(crate) fn of(
    bytes: &[u8],
    format: ImageFormat,
    decoder: &mut impl ImageDecoder,
) -> Orientation {
    let tagged = |exif: Option<&[u8]>| exif.and_then(ifd0_orientation);
    let (tag, xmp) = match format {
        ImageFormat::Png => {
            let m = png_metadata(bytes);
            (tagged(m.exif.as_deref()), m.xmp)
        }
        ImageFormat::Jpeg => {
            let m = jpeg_metadata(bytes);
            (tagged(m.exif.as_deref()), m.xmp)
        }
        ImageFormat::WebP => {
            let exif = decoder.exif_metadata().ok().flatten();
            (
                tagged(exif.as_deref()),
                decoder.xmp_metadata().ok().flatten(),
            )
        }
        ImageFormat::Tiff => (tagged(Some(bytes)), decoder.xmp_metadata().ok().flatten()),
        _ => (None, None),
    };
    let value = match tag {
        Some(value) => value,
        None => xmp.as_deref().and_then(xmp_orientation),
    };
    match value {
        Some(v @ 2..=8) => Orientation::from_exif(v as u8).unwrap_or(Orientation::NoTransforms),
        _ => Orientation::NoTransforms,
    }
}

#[derive(Default)]
struct Metadata {
    exif: Option<Vec<u8>>,
    xmp: Option<Vec<u8>>,
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// `data` inflated (zlib), or `None` when it is broken or inflates past
/// [`MAX_TEXT_CHUNK`].
fn inflate(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(MAX_TEXT_CHUNK + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() as u64 <= MAX_TEXT_CHUNK).then_some(out)
}

/// PNG: every chunk to IEND (Pillow reads those after the pixels too before it
/// transposes). Later chunks replace earlier ones, as in Pillow's `info`.
fn png_metadata(bytes: &[u8]) -> Metadata {
    let mut exif = None;
    let mut raw_profile: Option<Vec<u8>> = None;
    let mut xmp_text: Option<Vec<u8>> = None; // info["XML:com.adobe.xmp"]
    let mut xmp_itxt: Option<Vec<u8>> = None; // info["xmp"] (iTXt only)
    let mut pos = 8;
    while let (Some(len), Some(kind)) =
        (bytes.get(pos..).and_then(be32), bytes.get(pos + 4..pos + 8))
    {
        let start = pos + 8;
        let Some(data) = start
            .checked_add(len as usize)
            .and_then(|end| bytes.get(start..end))
        else {
            break;
        };
        pos = start + len as usize + 4;
        let split = |d: &'_ [u8]| -> (Vec<u8>, Vec<u8>) {
            match d.iter().position(|&c| c == 0) {
                Some(i) => (d[..i].to_vec(), d[i + 1..].to_vec()),
                None => (d.to_vec(), Vec::new()),
            }
        };
        match kind {
            b"IEND" => break,
            b"eXIf" => exif = Some([b"Exif\0\0", data].concat()),
            b"tEXt" => {
                let (k, v) = split(data);
                match k.as_slice() {
                    b"exif" => exif = Some(v),
                    b"Raw profile type exif" => raw_profile = Some(v),
                    b"XML:com.adobe.xmp" => xmp_text = Some(v),
                    _ => {}
                }
            }
            b"zTXt" => {
                let (k, v) = split(data);
                // Method 0 (zlib) only; a broken stream reads as empty text.
                let text = || match v.split_first() {
                    Some((0, z)) => Some(inflate(z).unwrap_or_default()),
                    _ => None,
                };
                match k.as_slice() {
                    b"Raw profile type exif" => raw_profile = text().or(raw_profile),
                    b"XML:com.adobe.xmp" => xmp_text = text().or(xmp_text),
                    _ => {}
                }
            }
            b"iTXt" => {
                let (k, rest) = split(data);
                if k != b"Raw profile type exif" && k != b"XML:com.adobe.xmp" {
                    continue;
                }
                let [flag, method, rest @ ..] = rest.as_slice() else {
                    continue;
                };
                // language \0 translated keyword \0 text
                let mut parts = rest.splitn(3, |&c| c == 0);
                let (Some(_), Some(_), Some(text)) = (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let text = match (flag, method) {
                    (0, _) => text.to_vec(),
                    (_, 0) => match inflate(text) {
                        Some(t) => t,
                        None => continue,
                    },
                    _ => continue,
                };
                if k == b"XML:com.adobe.xmp" {
                    xmp_itxt = Some(text.clone());
                }
                // Pillow keeps the text under its keyword only when it is UTF-8.
                if std::str::from_utf8(&text).is_ok() {
                    if k == b"XML:com.adobe.xmp" {
                        xmp_text = Some(text);
                    } else {
                        raw_profile = Some(text);
                    }
                }
            }
            _ => {}
        }
    }
    Metadata {
        exif: exif.or_else(|| raw_profile.as_deref().and_then(raw_profile_exif)),
        xmp: xmp_text.filter(|x| !x.is_empty()).or(xmp_itxt),
    }
}

/// ImageMagick's "Raw profile type exif": `\nexif\n  LENGTH\nHEX…` — the hex from the
/// fourth line on, whitespace ignored (Pillow: `bytes.fromhex("".join(lines[3:]))`).
fn raw_profile_exif(text: &[u8]) -> Option<Vec<u8>> {
    let hex: Vec<u8> = text
        .split(|&c| c == b'\n')
        .skip(3)
        .flatten()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    hex.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// JPEG: the marker segments before the first scan. APP1 `Exif\0\0` segments are
/// joined (the later ones without their prefix), the last APP1 XMP packet wins.
fn jpeg_metadata(bytes: &[u8]) -> Metadata {
    const XMP: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
    let mut m = Metadata::default();
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return m;
    }
    let mut pos = 2;
    loop {
        // Fill bytes (0xFF) before a marker.
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(pos), bytes.get(pos + 1)) else {
            break;
        };
        pos += 2;
        match marker {
            0xDA | 0xD9 => break,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = bytes
            .get(pos..pos + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        else {
            break;
        };
        let Some(seg) = len
            .checked_sub(2)
            .and_then(|n| bytes.get(pos + 2..pos + 2 + n))
        else {
            break;
        };
        pos += len;
        if marker != 0xE1 {
            continue;
        }
        if seg.starts_with(b"Exif\0\0") {
            match &mut m.exif {
                Some(e) => e.extend_from_slice(&seg[6..]),
                None => m.exif = Some(seg.to_vec()),
            }
        } else if let Some(x) = seg.strip_prefix(XMP) {
            m.xmp = Some(x.to_vec());
        }
    }
    m
}

/// Tag 0x0112 of the first directory of a TIFF structure (an EXIF block, with or
/// without its `Exif\0\0` prefix, or a TIFF file; classic or BigTIFF): `None` when
/// the tag is absent or the structure unreadable, `Some(None)` when it is present but
/// not one integer (Pillow then applies nothing and does not look at XMP).
fn ifd0_orientation(data: &[u8]) -> Option<Option<u32>> {
    let mut d = data;
    for _ in 0..2 {
        d = d.strip_prefix(b"Exif\0\0").unwrap_or(d);
    }
    let big = match d.get(..4)? {
        b"II*\0" | b"MM\0*" => false,
        b"II+\0" | b"MM\0+" => true,
        _ => return None,
    };
    let le = d[0] == b'I';
    let uint = |at: usize, n: usize| -> Option<u64> {
        let b = d.get(at..at.checked_add(n)?)?;
        Some(if le {
            b.iter().rev().fold(0, |a, &x| a << 8 | x as u64)
        } else {
            b.iter().fold(0, |a, &x| a << 8 | x as u64)
        })
    };
    let (ifd, count_size, entry_size, value_size) = if big {
        (uint(8, 8)?, 8, 20, 8)
    } else {
        (uint(4, 4)?, 2, 12, 4)
    };
    let ifd = usize::try_from(ifd).ok()?;
    let entries = uint(ifd, count_size)?;
    let mut found = None;
    for i in 0..entries.min(4096) as usize {
        let e = ifd + count_size + i * entry_size;
        let Some(tag) = uint(e, 2) else { break };
        if tag != 0x0112 {
            continue;
        }
        let (kind, count) = (uint(e + 2, 2)?, uint(e + 4, value_size)?);
        let v = e + 4 + value_size;
        // One integer, held in the entry itself (left-justified).
        let value = match (kind, count) {
            (1, 1) => uint(v, 1),
            (3, 1) => uint(v, 2),
            (4, 1) => uint(v, 4),
            (6, 1) => uint(v, 1).map(|x| x as u8 as i8 as i64 as u64),
            (8, 1) => uint(v, 2).map(|x| x as u16 as i16 as i64 as u64),
            (9, 1) => uint(v, 4).map(|x| x as u32 as i32 as i64 as u64),
            (16 | 17, 1) if big => uint(v, 8),
            _ => None,
        };
        found = Some(value.and_then(|x| u32::try_from(x).ok()));
    }
    found
}

/// Pillow's `re.search(rb'tiff:Orientation(="|>)([0-9])', xmp)`.
fn xmp_orientation(xmp: &[u8]) -> Option<u32> {
    const KEY: &[u8] = b"tiff:Orientation";
    (0..xmp.len()).find_map(|i| {
        let digit = match xmp[i..].strip_prefix(KEY)? {
            [b'=', b'"', d, ..] | [b'>', d, ..] => *d,
            _ => return None,
        };
        digit.is_ascii_digit().then(|| (digit - b'0') as u32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xmp_forms_and_the_first_match() {
        assert_eq!(xmp_orientation(b"<a tiff:Orientation=\"6\"/>"), Some(6));
        assert_eq!(
            xmp_orientation(b"<tiff:Orientation>8</tiff:Orientation>"),
            Some(8)
        );
        assert_eq!(
            xmp_orientation(b"tiff:Orientation='6' tiff:Orientation=\"3\""),
            Some(3)
        );
        assert_eq!(xmp_orientation(b"tiff:Orientation=\"x\""), None);
        assert_eq!(xmp_orientation(b"tiff:Orientation>"), None);
        assert_eq!(xmp_orientation(b"x tiff:Orientation>5"), Some(5));
        assert_eq!(xmp_orientation(b""), None);
    }

    fn ifd(le: bool, entries: &[(u16, u16, u32, u32)]) -> Vec<u8> {
        let w16 = |v: u16| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let w32 = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let mut d = if le {
            b"II*\0".to_vec()
        } else {
            b"MM\0*".to_vec()
        };
        d.extend(w32(8));
        d.extend(w16(entries.len() as u16));
        for &(tag, kind, count, value) in entries {
            d.extend(w16(tag));
            d.extend(w16(kind));
            d.extend(w32(count));
            // SHORT values sit in the first two bytes of the field.
            if kind == 3 {
                d.extend(w16(value as u16));
                d.extend([0, 0]);
            } else {
                d.extend(w32(value));
            }
        }
        d.extend(w32(0));
        d
    }

    #[test]
    fn ifd0_tag_in_either_byte_order() {
        for le in [true, false] {
            let d = ifd(le, &[(0x010F, 2, 4, 0), (0x0112, 3, 1, 6)]);
            assert_eq!(ifd0_orientation(&d), Some(Some(6)));
            assert_eq!(
                ifd0_orientation(&[b"Exif\0\0", &d[..]].concat()),
                Some(Some(6))
            );
            let d = ifd(le, &[(0x0112, 4, 1, 8)]);
            assert_eq!(ifd0_orientation(&d), Some(Some(8)));
            // Present but two values: applies nothing, and XMP is not consulted.
            let d = ifd(le, &[(0x0112, 3, 2, 6)]);
            assert_eq!(ifd0_orientation(&d), Some(None));
            assert_eq!(ifd0_orientation(&ifd(le, &[(0x0110, 3, 1, 6)])), None);
            // Truncated: unreadable, absent.
            let d = ifd(le, &[(0x0112, 3, 1, 6)]);
            assert_eq!(ifd0_orientation(&d[..12]), None);
        }
        assert_eq!(ifd0_orientation(b"not a tiff"), None);
        assert_eq!(ifd0_orientation(b""), None);
    }

    /// Every prefix of each fixture, and copies with bytes changed, read without a
    /// panic (the readers index only through `get`).
    #[test]
    fn damaged_files_do_not_panic() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/formats");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "safetensors") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ bytes.len() as u64;
            for cut in 0..=bytes.len() {
                let mut b = bytes[..cut].to_vec();
                // A few bytes set to values that make lengths and offsets large.
                for _ in 0..3 {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    if !b.is_empty() {
                        let i = (state >> 33) as usize % b.len();
                        b[i] = [0xFF, 0x00, 0x7F, (state >> 20) as u8][(state & 3) as usize];
                    }
                }
                for data in [&bytes[..cut], &b[..]] {
                    let _ = png_metadata(data);
                    let _ = jpeg_metadata(data);
                    let _ = ifd0_orientation(data);
                    let _ = xmp_orientation(data);
                }
            }
            seen += 1;
        }
        assert!(seen >= 20, "{seen} fixtures");
    }

    #[test]
    fn raw_profile_hex() {
        assert_eq!(
            raw_profile_exif(b"\nexif\n       4\n4578\n6966\n"),
            Some(b"Exif".to_vec())
        );
        assert_eq!(raw_profile_exif(b"\nexif\n 4\n45x8\n"), None);
        assert_eq!(raw_profile_exif(b"\nexif\n 4\n457\n"), None);
    }
}
