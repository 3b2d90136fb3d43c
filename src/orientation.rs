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
    pick(tag, xmp.as_deref())
}

/// A JPEG file's orientation, as [`of`] finds it.
#[cfg(feature = "libjpeg")]
pub(crate) fn of_jpeg(bytes: &[u8]) -> Orientation {
    let m = jpeg_metadata(bytes);
    pick(
        m.exif.as_deref().and_then(ifd0_orientation),
        m.xmp.as_deref(),
    )
}

/// The EXIF tag's orientation (`tag`: the IFD0 entry, when there is one), else
/// XMP's.
fn pick(tag: Option<Option<u32>>, xmp: Option<&[u8]>) -> Orientation {
    let value = match tag {
        Some(value) => value,
        None => xmp.and_then(xmp_orientation),
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
    let (mut animated, mut after_pixels) = (false, false);
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
        match kind {
            b"IEND" => break,
            // An animated PNG: Pillow reads its metadata up to the next frame.
            b"acTL" => animated = be32(data).is_some_and(|frames| frames > 1),
            b"IDAT" => after_pixels = true,
            b"fcTL" if animated && after_pixels => break,
            b"eXIf" => exif = Some([b"Exif\0\0", data].concat()),
            b"tEXt" => {
                let (k, v) = split_key(data);
                match k {
                    b"exif" => exif = Some(v.to_vec()),
                    b"Raw profile type exif" => raw_profile = Some(v.to_vec()),
                    b"XML:com.adobe.xmp" => xmp_text = Some(v.to_vec()),
                    _ => {}
                }
            }
            b"zTXt" => {
                let (k, v) = split_key(data);
                // Method 0 (zlib) only; a broken stream reads as empty text.
                let text = || match v.split_first() {
                    Some((0, z)) => Some(inflate(z).unwrap_or_default()),
                    _ => None,
                };
                match k {
                    b"Raw profile type exif" => raw_profile = text().or(raw_profile),
                    b"XML:com.adobe.xmp" => xmp_text = text().or(xmp_text),
                    _ => {}
                }
            }
            b"iTXt" => {
                let (k, rest) = split_key(data);
                if k != b"Raw profile type exif" && k != b"XML:com.adobe.xmp" {
                    continue;
                }
                let [flag, method, rest @ ..] = rest else {
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

/// A text chunk's keyword and the rest, split at the first NUL (all keyword when
/// there is none, as Pillow reads a broken tEXt).
fn split_key(d: &[u8]) -> (&[u8], &[u8]) {
    match d.iter().position(|&c| c == 0) {
        Some(i) => (&d[..i], &d[i + 1..]),
        None => (d, &[]),
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

/// JPEG: the marker segments before the first scan, walked as Pillow's JPEG
/// reader walks them (bytes between segments that are not 0xFF are skipped; SOI,
/// EOI, RSTn, JPG and JPGn carry no length). APP1 `Exif\0\0` segments are joined
/// (the later ones without their prefix), the last APP1 XMP packet wins.
fn jpeg_metadata(bytes: &[u8]) -> Metadata {
    const XMP: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
    let mut m = Metadata::default();
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return m;
    }
    let mut pos = 2;
    while let Some(&b) = bytes.get(pos) {
        if b != 0xFF {
            pos += 1;
            continue;
        }
        let Some(&marker) = bytes.get(pos + 1) else {
            break;
        };
        match marker {
            // Fill: the second 0xFF starts the marker.
            0xFF => {
                pos += 1;
                continue;
            }
            0x00 | 0xC8 | 0xD0..=0xD9 | 0xF0..=0xFD => {
                pos += 2;
                continue;
            }
            0xC0..=0xC7 | 0xC9..=0xCF | 0xDA..=0xDF | 0xE0..=0xEF | 0xFE => {}
            _ => break, // Pillow: "no marker found"
        }
        let Some(len) = bytes
            .get(pos + 2..pos + 4)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        else {
            break;
        };
        let Some(seg) = len
            .checked_sub(2)
            .and_then(|n| bytes.get(pos + 4..pos + 4 + n))
        else {
            break;
        };
        if marker == 0xDA {
            break;
        }
        pos += 2 + len;
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
/// without its `Exif\0\0` prefix, or a TIFF file; classic or BigTIFF), read as
/// Pillow's `ImageFileDirectory_v2.load` reads it: entries of unknown type, with no
/// data, or whose data lies outside the block are skipped (as if absent); the first
/// entry kept wins. `None`: absent (Pillow then looks at XMP). `Some(v)`: present,
/// `v` its first value when that is a whole number (SHORT, LONG, the signed types,
/// LONG8, IFD, and FLOAT, DOUBLE or RATIONAL values that are integers, which
/// Pillow's dict lookup matches); `Some(None)` when Pillow holds no number there
/// (BYTE, ASCII, UNDEFINED) or not a whole one: present, nothing applied.
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
    let uint_of = |b: &[u8]| -> u64 {
        if le {
            b.iter().rev().fold(0, |a, &x| a << 8 | x as u64)
        } else {
            b.iter().fold(0, |a, &x| a << 8 | x as u64)
        }
    };
    let uint =
        |at: usize, n: usize| -> Option<u64> { Some(uint_of(d.get(at..at.checked_add(n)?)?)) };
    let (ifd, count_size, entry_size, inline) = if big {
        (uint(8, 8)?, 8, 20, 8)
    } else {
        (uint(4, 4)?, 2, 12, 4)
    };
    let first = usize::try_from(ifd).ok()?.checked_add(count_size)?;
    let entries = uint(first - count_size, count_size)?;
    let limit = d.len() as u64;
    let mut total = 0u64; // out-of-line bytes so far (Pillow skips past the block's size)
    let mut kept = std::collections::HashSet::new();
    for i in 0..entries {
        // A short read ends the directory, keeping what was read.
        let entry = usize::try_from(i)
            .ok()
            .and_then(|i| first.checked_add(i.checked_mul(entry_size)?))
            .and_then(|e| d.get(e..e.checked_add(entry_size)?));
        let Some(entry) = entry else { break };
        let tag = uint_of(&entry[..2]) as u16;
        if kept.contains(&tag) {
            continue;
        }
        let kind = uint_of(&entry[2..4]);
        let count = uint_of(&entry[4..4 + inline]);
        let field = &entry[4 + inline..];
        let unit: u64 = match kind {
            1 | 2 | 6 | 7 => 1,
            3 | 8 => 2,
            4 | 9 | 11 | 13 => 4,
            5 | 10 | 12 | 16 => 8,
            _ => continue, // a type Pillow does not load
        };
        let Some(size) = count.checked_mul(unit) else {
            continue;
        };
        let value: &[u8] = if size > inline as u64 {
            let offset = uint_of(field);
            if offset >= 1 << 63 {
                continue;
            }
            total = total.saturating_add(size);
            if total > limit {
                continue;
            }
            let at = usize::try_from(offset).ok().zip(usize::try_from(size).ok());
            match at.and_then(|(o, n)| d.get(o..o.checked_add(n)?)) {
                Some(v) => v,
                None => continue, // a short read: skipped
            }
        } else {
            &field[..size as usize]
        };
        if value.is_empty() {
            continue;
        }
        kept.insert(tag);
        if tag == 0x0112 {
            return Some(first_whole_number(kind, value, &uint_of));
        }
    }
    None
}

/// The first value of a directory entry of `kind` as a whole number, if it is one
/// (see [`ifd0_orientation`]); `v` holds at least one value.
fn first_whole_number(kind: u64, v: &[u8], uint_of: &dyn Fn(&[u8]) -> u64) -> Option<u32> {
    let int = |x: i64| u32::try_from(x).ok();
    let whole =
        |x: f64| (x.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&x)).then_some(x as u32);
    match kind {
        3 => int(uint_of(&v[..2]) as i64),
        4 | 13 => int(uint_of(&v[..4]) as i64),
        16 => u32::try_from(uint_of(&v[..8])).ok(),
        6 => int(v[0] as i8 as i64),
        8 => int(uint_of(&v[..2]) as u16 as i16 as i64),
        9 => int(uint_of(&v[..4]) as u32 as i32 as i64),
        11 => whole(f32::from_bits(uint_of(&v[..4]) as u32) as f64),
        12 => whole(f64::from_bits(uint_of(&v[..8]))),
        5 | 10 => {
            let (n, den) = (uint_of(&v[..4]), uint_of(&v[4..8]));
            let (n, den) = if kind == 10 {
                (n as u32 as i32 as f64, den as u32 as i32 as f64)
            } else {
                (n as f64, den as f64)
            };
            // Pillow keeps the fraction (NaN when the denominator is 0).
            if den == 0.0 {
                None
            } else {
                whole(n / den)
            }
        }
        _ => None, // BYTE, ASCII, UNDEFINED: bytes or text, no number
    }
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
            // Two SHORTs in the entry: the first counts (Pillow truncates).
            let d = ifd(le, &[(0x0112, 3, 2, 6)]);
            assert_eq!(ifd0_orientation(&d), Some(Some(6)));
            // Twice: the first kept entry wins.
            let d = ifd(le, &[(0x0112, 3, 1, 6), (0x0112, 3, 1, 3)]);
            assert_eq!(ifd0_orientation(&d), Some(Some(6)));
            // BYTE: present (bytes in Pillow), no number: nothing, no XMP.
            let byte6 = if le { 6 } else { 6 << 24 };
            assert_eq!(
                ifd0_orientation(&ifd(le, &[(0x0112, 1, 1, byte6)])),
                Some(None)
            );
            // FLOAT 6.0 matches 6 in Pillow's lookup.
            let d = ifd(le, &[(0x0112, 11, 1, 6.0f32.to_bits())]);
            assert_eq!(ifd0_orientation(&d), Some(Some(6)));
            // No data, an unknown type, data past the block: skipped, as absent…
            assert_eq!(ifd0_orientation(&ifd(le, &[(0x0112, 3, 0, 6)])), None);
            assert_eq!(ifd0_orientation(&ifd(le, &[(0x0112, 99, 1, 6)])), None);
            assert_eq!(ifd0_orientation(&ifd(le, &[(0x0112, 3, 9, 9999)])), None);
            // …and a later entry then counts.
            let d = ifd(le, &[(0x0112, 99, 1, 3), (0x0112, 3, 1, 8)]);
            assert_eq!(ifd0_orientation(&d), Some(Some(8)));
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
        let files = std::fs::read_dir(&dir)
            .unwrap()
            .chain(std::fs::read_dir(dir.join("jpeg")).unwrap());
        for entry in files {
            let path = entry.unwrap().path();
            if !path.is_file() || path.extension().is_some_and(|e| e == "safetensors") {
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
                    // libjpeg's errors unwind out of C and come back as values.
                    #[cfg(feature = "libjpeg")]
                    if path.extension().is_some_and(|e| e == "jpg") {
                        let small = |_: u64, _: u64, bytes: u64, _: &str| {
                            (bytes <= 1 << 24).then_some(()).ok_or_else(String::new)
                        };
                        let _ = crate::cpu::jpeg::decode_rgb(data, &small, None);
                    }
                }
            }
            seen += 1;
        }
        assert!(seen >= 20, "{seen} fixtures");
    }

    /// Bytes that are not 0xFF between two segments are skipped, as Pillow skips
    /// them: the EXIF block after them still counts.
    #[test]
    fn jpeg_junk_between_segments_is_skipped() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/images/formats/orient6.jpg");
        let bytes = std::fs::read(path).unwrap();
        let app1 = bytes.windows(2).position(|w| w == [0xFF, 0xE1]).unwrap();
        assert!(app1 > 2);
        let junk = [&bytes[..app1], &[0, 0, 0x17][..], &bytes[app1..]].concat();
        for b in [&bytes, &junk] {
            let m = jpeg_metadata(b);
            assert_eq!(ifd0_orientation(m.exif.as_deref().unwrap()), Some(Some(6)));
        }
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
