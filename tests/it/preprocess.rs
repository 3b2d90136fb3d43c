//! Preprocessing against the pixel_values SigLIP's own image processor made of the
//! images in tests/data/images (size 32): max |Δ| ≤ 1e-6 for the image already at
//! size, mean |Δ| ≤ 0.02 for the resized ones.

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use tessera::preprocess;

fn images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images")
}

fn reference(name: &str) -> Vec<f32> {
    let path = images().join("pixel_values_32.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(name).unwrap();
    assert_eq!(view.shape(), &[1, 3, 32, 32]);
    view.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// (max |Δ|, mean |Δ|) between our pixel_values and the reference.
fn deltas(name: &str) -> (f32, f32) {
    let ours = preprocess::load_image(images().join(name), 32).unwrap();
    let theirs = reference(name);
    assert_eq!(ours.len(), theirs.len());
    let diffs: Vec<f32> = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .collect();
    let max = crate::common::max_or_nan(diffs.iter().map(|&d| d as f64)) as f32;
    let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
    eprintln!("{name}: max |Δ| {max:.3e}, mean |Δ| {mean:.3e}");
    (max, mean)
}

#[test]
fn image_at_size_matches_exactly() {
    let (max, _) = deltas("grid_32x32.png");
    assert!(max <= 1e-6, "max |Δ| {max}");
}

#[test]
fn resized_png_matches() {
    let (_, mean) = deltas("waves_64x48.png");
    assert!(mean <= 0.02, "mean |Δ| {mean}");
}

#[test]
fn resized_jpeg_matches() {
    let (_, mean) = deltas("waves_64x48.jpg");
    assert!(mean <= 0.02, "mean |Δ| {mean}");
}

/// WebP, GIF, BMP and TIFF decode to the bytes Pillow's `convert("RGB")` makes of
/// them (scripts/make_format_fixture.py): lossless ones, palettes, a transparent
/// index and alpha (dropped, not composited), and lossy WebP too (image-webp's
/// YUV → RGB rounds as libwebp's does on this image): byte for byte.
#[test]
fn other_formats_decode_as_pillow_does() {
    for (name, max, mean) in against_pillow("formats", "pil_rgb.safetensors", 8) {
        assert_eq!(max, 0, "{name}: not Pillow's bytes (mean |Δ| {mean})");
    }
}

/// Each file of a Pillow fixture (`FIXTURE` in `images()/DIR`: one [H, W, 3] u8
/// tensor per file name, `count` of them) read by `read_rgb8`: its name, and the
/// max and mean |Δ| from Pillow's bytes (same size asserted).
fn against_pillow(dir: &str, fixture: &str, count: usize) -> Vec<(String, i32, f64)> {
    let dir = images().join(dir);
    let bytes = std::fs::read(dir.join(fixture)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    assert_eq!(names.len(), count, "{names:?}");
    names
        .into_iter()
        .map(|name| {
            let view = st.tensor(&name).unwrap();
            let ours = preprocess::read_rgb8(dir.join(&name)).unwrap();
            assert_eq!([ours.height, ours.width, 3], view.shape(), "{name}: size");
            let diffs: Vec<i32> = ours
                .data
                .iter()
                .zip(view.data())
                .map(|(&a, &b)| (a as i32 - b as i32).abs())
                .collect();
            let max = diffs.iter().copied().max().unwrap_or(0);
            let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
            eprintln!("{name}: max |Δ| {max}, mean |Δ| {mean:.3}");
            (name, max, mean)
        })
        .collect()
}

/// JPEG decodes to the bytes Pillow 13's `convert("RGB")` makes of it
/// (scripts/make_jpeg_fixture.py): 4:4:4, 4:2:2 and 4:2:0 chroma, baseline and
/// progressive, sides no block divides, grey, CMYK. Byte for byte with the
/// `libjpeg` feature (libjpeg-turbo's code, as Pillow's); within 4 levels without
/// it (zune-jpeg).
#[test]
fn jpeg_decodes_as_pillow_does() {
    let bar = if cfg!(feature = "libjpeg") { 0 } else { 4 };
    for (name, max, _) in against_pillow("formats/jpeg", "pil_jpeg.safetensors", 10) {
        // zune-jpeg's CMYK is not Pillow's: only the libjpeg path is held to it.
        if cfg!(feature = "libjpeg") || name != "cmyk.jpg" {
            assert!(max <= bar, "{name}: max |Δ| {max} from Pillow's bytes");
        }
    }
    let dir = images().join("formats/jpeg");
    // A file cut short is an error naming it (Pillow: "image file is truncated"),
    // not an image with grey rows.
    let whole = std::fs::read(dir.join("s420_prog.jpg")).unwrap();
    let tmp = std::env::temp_dir().join(format!("tessera-cut-{}.jpg", std::process::id()));
    for cut in [whole.len() / 2, 20, 2] {
        std::fs::write(&tmp, &whole[..cut]).unwrap();
        let err = preprocess::read_rgb8(&tmp).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("tessera-cut")),
            "cut at {cut}: {err:?}"
        );
    }
    let _ = std::fs::remove_file(&tmp);
}

/// The largest |Δ| between two byte images of the same length.
fn max_diff(a: &[u8], b: &[u8]) -> i32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as i32 - y as i32).abs())
        .max()
        .unwrap_or(0)
}

/// The draft fixture: (file, wanted width, wanted height, Pillow's bytes, its
/// height and width) per `FILE@WxH` tensor of pil_jpeg_draft.safetensors.
fn pillow_drafts() -> Vec<(String, usize, usize, Vec<u8>, usize, usize)> {
    let dir = images().join("formats/jpeg");
    let bytes = std::fs::read(dir.join("pil_jpeg_draft.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let (file, want) = name.split_once('@').unwrap();
            let (w, h) = want.split_once('x').unwrap();
            let shape = view.shape();
            (
                file.to_string(),
                w.parse().unwrap(),
                h.parse().unwrap(),
                view.data().to_vec(),
                shape[0],
                shape[1],
            )
        })
        .collect();
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

/// `ImageProcessor::jpeg_draft` decodes as Pillow's `draft("RGB", size)` then
/// `convert("RGB")` (scripts/make_jpeg_fixture.py): for each fixture file at the
/// sizes that make Pillow pick 1/2, 1/4 and 1/8, the drafted size and, with the
/// `libjpeg` feature (libjpeg-turbo's scaled IDCTs, as Pillow's), the bytes.
/// Without the flag, or for a processor that does not resize, the file decodes in full.
#[test]
fn jpeg_draft_decodes_as_pillow_does() {
    let dir = images().join("formats/jpeg");
    let drafts = pillow_drafts();
    assert_eq!(drafts.len(), 30);
    for (file, w, h, pil, ph, pw) in &drafts {
        let path = dir.join(file);
        let drafted = preprocess::ImageProcessor {
            jpeg_draft: true,
            width: *w,
            height: *h,
            ..preprocess::ImageProcessor::siglip(8)
        };
        let full = preprocess::read_rgb8(&path).unwrap();
        let got = drafted.read(&path).unwrap();
        if cfg!(feature = "libjpeg") {
            assert_eq!((got.height, got.width), (*ph, *pw), "{file}@{w}x{h}: size");
            let d = max_diff(&got.data, pil);
            assert_eq!(d, 0, "{file}@{w}x{h}: max |Δ| {d} from Pillow's bytes");
            assert!(got.width < full.width, "{file}@{w}x{h}: not reduced");
        } else {
            assert_eq!(got, full, "{file}: zune-jpeg decodes in full");
        }
        let off = preprocess::ImageProcessor {
            jpeg_draft: false,
            ..drafted.clone()
        };
        let no_resize = preprocess::ImageProcessor {
            do_resize: false,
            ..drafted
        };
        for (p, what) in [(off, "without the flag"), (no_resize, "without resizing")] {
            assert_eq!(p.read(&path).unwrap(), full, "{file}: drafted {what}");
        }
    }
    // Other formats have no draft mode; an image smaller than twice the size
    // decodes in full.
    let png = images().join("waves_64x48.png");
    let p = |w, h| preprocess::ImageProcessor {
        jpeg_draft: true,
        width: w,
        height: h,
        ..preprocess::ImageProcessor::siglip(8)
    };
    assert_eq!(
        p(8, 8).read(&png).unwrap(),
        preprocess::read_rgb8(&png).unwrap()
    );
    let jpg = dir.join("photo_420.jpg");
    assert_eq!(
        p(82, 8).read(&jpg).unwrap(),
        preprocess::read_rgb8(&jpg).unwrap()
    );
}

/// SigLIP 2 with `jpeg_draft`: the draft is asked for the size the file's own
/// sides resize to, then the drafted image is processed as Siglip2ImageProcessor
/// would process it (its grid from the drafted sides). photo_420.jpg is 163 × 122;
/// at patch 4 the sizes (computed by transformers' search by hand) are 12 × 8 for
/// 6 patches (Pillow's scale 1/8), 24 × 16 for 24 (1/4) and 92 × 68 for 400 (none).
#[test]
fn siglip2_jpeg_draft_processes_the_drafted_image() {
    let path = images().join("formats/jpeg/photo_420.jpg");
    let drafts = pillow_drafts();
    for (patches, scale) in [(6, 8), (24, 4), (400, 1)] {
        let mut p = preprocess::Siglip2Processor::new(4, patches);
        let full = p.load_image(&path).unwrap();
        p.image.jpeg_draft = true;
        let got = p.load_image(&path).unwrap();
        if scale == 1 || !cfg!(feature = "libjpeg") {
            assert_eq!(got, full, "{patches} patches: drafted");
            continue;
        }
        let (.., pil, ph, pw) = drafts
            .iter()
            .find(|d| d.0 == "photo_420.jpg" && d.1 == 163 / scale)
            .unwrap();
        let img = preprocess::Rgb8 {
            width: *pw,
            height: *ph,
            data: pil.clone(),
        };
        assert_eq!(got, p.patches(&img).unwrap(), "{patches} patches");
        assert_ne!(got, full, "{patches} patches: not drafted");
    }
}

/// EXIF orientation: `read_rgb8` keeps the pixels as stored (what an image
/// processor given `Image.open(f)` sees), `read_rgb8_upright` turns them as
/// `ImageOps.exif_transpose` does (transformers' load_image), for all eight
/// orientations (PNG eXIf, byte for byte) and a JPEG (its decoder within a few
/// levels of Pillow's); `ImageProcessor::upright` switches between the two.
#[test]
fn exif_orientation_is_applied_only_when_asked() {
    let dir = images().join("formats");
    let bytes = std::fs::read(dir.join("pil_upright.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let stored = st.tensor("stored").unwrap();
    assert_eq!(stored.shape(), &[8, 12, 3]);
    let mut names: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| *n != "stored" && !n.ends_with("@stored"))
        .map(String::from)
        .collect();
    names.sort();
    assert_eq!(names.len(), 19, "{names:?}");
    for name in names {
        let want = st.tensor(&name).unwrap();
        let jpeg = name.ends_with(".jpg") && !cfg!(feature = "libjpeg");
        let bar = if jpeg { 8 } else { 0 };
        let up = preprocess::read_rgb8_upright(dir.join(&name)).unwrap();
        assert_eq!(
            [up.height, up.width, 3],
            want.shape(),
            "{name}: upright size"
        );
        let d = max_diff(&up.data, want.data());
        assert!(d <= bar, "{name}: upright max |Δ| {d}");
        let raw = preprocess::read_rgb8(dir.join(&name)).unwrap();
        let stored = st
            .tensor(&format!("{name}@stored"))
            .unwrap_or(stored.clone());
        assert_eq!(
            [raw.height, raw.width, 3],
            stored.shape(),
            "{name}: stored size"
        );
        let d = max_diff(&raw.data, stored.data());
        assert!(d <= bar, "{name}: as stored max |Δ| {d}");
        // Orientations 5–8 swap the sides: the processor resizes what it is given.
        let flag = |upright| preprocess::ImageProcessor {
            upright,
            ..preprocess::ImageProcessor::siglip(8)
        };
        assert_eq!(flag(true).read(dir.join(&name)).unwrap(), up, "{name}");
        assert_eq!(flag(false).read(dir.join(&name)).unwrap(), raw, "{name}");
    }
}

#[test]
fn grayscale_is_replicated_to_rgb() {
    let (_, mean) = deltas("gray_64x48.png");
    assert!(mean <= 0.02, "mean |Δ| {mean}");
    let px = preprocess::load_image(images().join("gray_64x48.png"), 32).unwrap();
    let plane = 32 * 32;
    assert_eq!(px[..plane], px[plane..2 * plane]);
    assert_eq!(px[..plane], px[2 * plane..]);
}

#[test]
fn batch_is_concatenated_in_order() {
    let names = ["grid_32x32.png", "waves_64x48.png"];
    let paths: Vec<PathBuf> = names.iter().map(|n| images().join(n)).collect();
    let batch = preprocess::load_images(&paths, 32).unwrap();
    let one = preprocess::load_image(&paths[1], 32).unwrap();
    assert_eq!(batch.len(), 2 * 3 * 32 * 32);
    assert_eq!(&batch[3 * 32 * 32..], &one[..]);
}

#[test]
fn errors_name_the_file() {
    let missing = images().join("no_such_image.png");
    let msg = preprocess::load_image(&missing, 32)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no_such_image.png"), "{msg}");

    // Not an image at all.
    let not_image = images().join("pixel_values_32.safetensors");
    let msg = preprocess::load_image(&not_image, 32)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("pixel_values_32.safetensors"), "{msg}");

    // A truncated PNG.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("preprocess_errors");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(images().join("waves_64x48.png")).unwrap();
    let truncated = dir.join("truncated.png");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let msg = preprocess::load_image(&truncated, 32)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("truncated.png"), "{msg}");
}

/// PIL's convert("RGB") for formats the golden images do not cover: alpha is
/// dropped, 16-bit RGB keeps the high byte, 16-bit grey clips at 255.
#[test]
fn pil_style_conversions() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("preprocess_formats");
    std::fs::create_dir_all(&dir).unwrap();

    let rgba =
        image::RgbaImage::from_fn(4, 4, |x, y| image::Rgba([x as u8 * 60, y as u8 * 60, 7, 0]));
    let p = dir.join("rgba.png");
    rgba.save(&p).unwrap();
    let rgb = preprocess::read_rgb8(&p).unwrap();
    assert_eq!(&rgb.data[..6], &[0, 0, 7, 60, 0, 7]);

    let rgb16 = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(2, 1, |x, _| {
        image::Rgb([0x12ff + x as u16 * 0x100, 0x00ff, 0xffff])
    });
    let p = dir.join("rgb16.png");
    rgb16.save(&p).unwrap();
    let rgb = preprocess::read_rgb8(&p).unwrap();
    assert_eq!(rgb.data, vec![0x12, 0x00, 0xff, 0x13, 0x00, 0xff]);

    let gray16 = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(3, 1, |x, _| {
        image::Luma([[17u16, 255, 4000][x as usize]])
    });
    let p = dir.join("gray16.png");
    gray16.save(&p).unwrap();
    let rgb = preprocess::read_rgb8(&p).unwrap();
    assert_eq!(rgb.data, vec![17, 17, 17, 255, 255, 255, 255, 255, 255]);
}

/// Values lie in [−1, 1] and the resize lands exactly on the requested size.
#[test]
fn values_and_sizes() {
    for size in [1usize, 7, 32, 100] {
        let px = preprocess::load_image(images().join("waves_64x48.png"), size).unwrap();
        assert_eq!(px.len(), 3 * size * size);
        assert!(px.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}

/// A hand-made `Rgb8` whose data does not match its size is an error, not a panic.
#[test]
fn malformed_rgb8_is_an_error() {
    let bad = preprocess::Rgb8 {
        width: 4,
        height: 4,
        data: vec![0; 5],
    };
    assert!(preprocess::pixel_values_from_rgb8(&bad, 32).is_err());
    assert!(preprocess::resize_bicubic(&bad, 8, 8).is_err());
    let ok = preprocess::Rgb8 {
        width: 2,
        height: 1,
        data: vec![0, 128, 255, 255, 128, 0],
    };
    assert!(preprocess::resize_bicubic(&ok, 0, 3).is_err());
    let px = preprocess::pixel_values_from_rgb8(&ok, 3).unwrap();
    assert_eq!(px.len(), 27);
}

/// Every PIL filter against what Pillow itself made (scripts/make_resample_fixture.py):
/// shrinking, stretching and mixed sizes, byte for byte.
#[test]
fn resize_matches_pillow_for_every_filter() {
    use preprocess::Resample;
    let bytes = std::fs::read(images().join("pil_resize.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let src = preprocess::read_rgb8(images().join("waves_64x48.png")).unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, view) in st.tensors() {
        let (filter, size) = name.split_once('.').unwrap();
        let resample = match filter {
            "nearest" => Resample::Nearest,
            "lanczos" => Resample::Lanczos,
            "bilinear" => Resample::Bilinear,
            "bicubic" => Resample::Bicubic,
            "box" => Resample::Box,
            "hamming" => Resample::Hamming,
            other => panic!("unknown filter {other}"),
        };
        let (w, h) = size.split_once('x').unwrap();
        let (w, h): (usize, usize) = (w.parse().unwrap(), h.parse().unwrap());
        assert_eq!(view.shape(), &[h, w, 3], "{name}");
        let ours = preprocess::resize(&src, w, h, resample).unwrap();
        let diff = ours
            .data
            .iter()
            .zip(view.data())
            .filter(|(a, b)| a != b)
            .count();
        if diff > 0 {
            failures.push(format!(
                "{name}: {diff} of {} bytes differ from Pillow",
                view.data().len()
            ));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(checked, 24);
}

/// Sizes past the bound are errors, not capacity-overflow panics or a
/// tens-of-gigabytes allocation; the bound still lets a 12 MP photo through and
/// an image grow to 4096² pixels, and a 1-pixel-wide image grow along x.
#[test]
fn resize_refuses_absurd_sizes() {
    use preprocess::{Resample, Rgb8};
    let img = |width: usize, height: usize| Rgb8 {
        width,
        height,
        data: vec![7; width * height * 3],
    };
    let small = img(8, 6);
    for (w, h) in [
        (usize::MAX, 1),
        (usize::MAX / 2, 3),
        (1, usize::MAX),
        (100_000, 100_000),
        (4097 * 4096, 1),
        (0, 5),
    ] {
        for filter in [Resample::Nearest, Resample::Bicubic] {
            let e = preprocess::resize(&small, w, h, filter).unwrap_err();
            assert!(e.to_string().contains(&format!("to {w}×{h}")), "{e}");
        }
    }
    // The pass along x alone would be 2^24 × 6000 pixels.
    let tall = img(1, 6000);
    let e = preprocess::resize(&tall, 1 << 24, 1, Resample::Bicubic).unwrap_err();
    assert!(e.to_string().contains("along x"), "{e}");
    for (w, h) in [(4096, 4096), (4096 * 4096, 1)] {
        let out = preprocess::resize(&img(1, 1), w, h, Resample::Bilinear).unwrap();
        assert_eq!((out.width, out.height, out.data.len()), (w, h, w * h * 3));
        assert!(out.data.iter().all(|&v| v == 7));
    }
    let photo = img(4032, 3024);
    let out = preprocess::resize(&photo, 224, 224, Resample::Bicubic).unwrap();
    assert_eq!(out.data.len(), 224 * 224 * 3);
}

fn processor(json: &str) -> tessera::Result<preprocess::ImageProcessor> {
    preprocess::ImageProcessor::from_json_str(json, "preprocessor_config.json")
}

/// Google's SigLIP preprocessor_config.json gives SigLIP's defaults; absent keys
/// take SiglipImageProcessor's.
#[test]
fn preprocessor_config_is_read() {
    let google = r#"{"do_normalize": true, "do_rescale": true, "do_resize": true,
        "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "SiglipImageProcessor",
        "image_std": [0.5, 0.5, 0.5], "processor_class": "SiglipProcessor", "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": {"height": 384, "width": 384}}"#;
    let p = processor(google).unwrap();
    assert_eq!(p, preprocess::ImageProcessor::siglip(384));
    assert_eq!(
        processor("{}").unwrap(),
        preprocess::ImageProcessor::siglip(224)
    );
    let p = processor(
        r#"{"resample": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073], "size": 32}"#,
    )
    .unwrap();
    assert_eq!(p.resample, preprocess::Resample::Bilinear);
    assert_eq!((p.height, p.width), (32, 32));
    assert_eq!(p.image_mean[2], 0.408_210_73);
}

#[test]
fn preprocessor_config_errors_name_the_key() {
    for (json, key) in [
        (r#"{"resample": 9}"#, "resample"),
        (r#"{"size": {"shortest_edge": 224}}"#, "size"),
        (r#"{"size": {"height": 0, "width": 4}}"#, "size.height"),
        (r#"{"image_std": [0.5, 0.0, 0.5]}"#, "image_std"),
        (r#"{"image_mean": [0.5, 0.5]}"#, "image_mean"),
        (r#"{"do_resize": "yes"}"#, "do_resize"),
        (r#"{"rescale_factor": "1/255"}"#, "rescale_factor"),
        // Accepted numbers that would make inf / NaN pixel values.
        (r#"{"rescale_factor": 1e300}"#, "rescale_factor"),
        (r#"{"image_std": [0.5, 1e-44, 0.5]}"#, "image_std"),
        (r#"{"size": 5000}"#, "size"),
        ("[1, 2]", "JSON object"),
        // Other processors' steps, refused rather than left out.
        (
            r#"{"image_processor_type": "CLIPImageProcessor"}"#,
            "image_processor_type",
        ),
        (r#"{"do_center_crop": true}"#, "do_center_crop"),
        (r#"{"do_pad": true}"#, "do_pad"),
    ] {
        let msg = processor(json).unwrap_err().to_string();
        assert!(
            msg.contains(key) && msg.contains("preprocessor_config.json"),
            "{json}: {msg}"
        );
    }
    // The same keys where they ask for nothing are fine.
    for json in [
        r#"{"image_processor_type": "SiglipImageProcessorFast", "do_center_crop": false}"#,
        r#"{"image_processor_type": "Siglip2ImageProcessor", "do_pad": null}"#,
    ] {
        processor(json).unwrap();
    }
}

/// Other mean, std and filter: for the image already at size the result is the
/// reference's pixels renormalised; for a resized one, Pillow's own bilinear
/// resize (the fixture) normalised.
#[test]
fn preprocessor_settings_are_applied() {
    let custom = r#"{"size": {"height": 32, "width": 32}, "resample": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711]}"#;
    let p = processor(custom).unwrap();
    let ours = p.load_image(images().join("grid_32x32.png")).unwrap();
    let plane = 32 * 32;
    for (i, (&o, &r)) in ours.iter().zip(&reference("grid_32x32.png")).enumerate() {
        let c = i / plane;
        let raw = r as f64 * 0.5 + 0.5; // the reference normalises with 0.5, 0.5
        let want = (raw - p.image_mean[c] as f64) / p.image_std[c] as f64;
        assert!(
            (o as f64 - want).abs() <= 1e-5,
            "grid at {i}: {o} vs {want}"
        );
    }
    let bytes = std::fs::read(images().join("pil_resize.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let pil = st.tensor("bilinear.32x32").unwrap();
    let ours = p.load_image(images().join("waves_64x48.png")).unwrap();
    for (i, &px) in pil.data().iter().enumerate() {
        let (pos, c) = (i / 3, i % 3);
        let want = (px as f64 / 255.0 - p.image_mean[c] as f64) / p.image_std[c] as f64;
        let got = ours[c * plane + pos] as f64;
        assert!((got - want).abs() <= 1e-5, "waves at {i}: {got} vs {want}");
    }
    // No resize allowed: an image of another size is an error naming the sizes.
    let p = processor(r#"{"do_resize": false, "size": {"height": 32, "width": 32}}"#).unwrap();
    let msg = p
        .load_image(images().join("waves_64x48.png"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("64×48") && msg.contains("waves_64x48.png"),
        "{msg}"
    );
    assert!(p.load_image(images().join("grid_32x32.png")).is_ok());
}

/// What Siglip2ImageProcessor (patch 4, max_num_patches 24) made of `name`:
/// (spatial shape, the real patches' values).
fn siglip2_reference(name: &str) -> ((usize, usize), Vec<f32>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/siglip2/images/siglip2_pixels.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let shape = st.tensor(&format!("{name}.spatial_shapes")).unwrap();
    let hw: Vec<i64> = shape
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let (h, w) = (hw[0] as usize, hw[1] as usize);
    let mask = st.tensor(&format!("{name}.pixel_attention_mask")).unwrap();
    let ones = mask
        .data()
        .chunks_exact(4)
        .filter(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) == 1)
        .count();
    assert_eq!(ones, h * w, "{name}: mask and spatial shape agree");
    let px = st.tensor(&format!("{name}.pixel_values")).unwrap();
    assert_eq!(px.shape(), &[1, 24, 48]);
    let values = px
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .take(h * w * 48)
        .collect();
    ((h, w), values)
}

/// SigLIP 2 preprocessing of every test image: the same grid of patches as
/// Siglip2ImageProcessor (its aspect-ratio search), values within mean |Δ| 0.02,
/// and for the PNGs (decoded alike, every one resized here) max |Δ| ≤ 1e-6: the
/// bilinear resize is Pillow's to the bit.
#[test]
fn siglip2_processor_matches_transformers() {
    let p = preprocess::Siglip2Processor::new(4, 24);
    for name in [
        "grid_32x32.png",
        "gray_64x48.png",
        "waves_64x48.png",
        "waves_64x48.jpg",
    ] {
        let ours = p.load_image(images().join(name)).unwrap();
        let ((h, w), theirs) = siglip2_reference(name);
        assert_eq!((ours.height, ours.width), (h, w), "{name}: grid");
        assert_eq!(ours.values.len(), theirs.len(), "{name}");
        let diffs: Vec<f32> = ours
            .values
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let max = crate::common::max_or_nan(diffs.iter().map(|&d| d as f64)) as f32;
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        eprintln!("siglip2 {name}: {h}×{w} patches, max |Δ| {max:.3e}, mean |Δ| {mean:.3e}");
        assert!(mean <= 0.02, "{name}: mean |Δ| {mean}");
        if name.ends_with(".png") {
            assert!(max <= 1e-6, "{name}: max |Δ| {max}");
        }
    }
}

/// The aspect-ratio search against values transformers'
/// `get_image_size_for_max_num_patches` returns (computed with transformers 5.23).
#[test]
fn siglip2_target_sizes() {
    // (height, width, patch, max_num_patches) → (height, width) from
    // transformers.models.siglip2.image_processing_siglip2.get_image_size_for_max_num_patches.
    type Case = ((usize, usize, usize, usize), (usize, usize));
    let cases: &[Case] = &[
        ((48, 64, 4, 24), (16, 24)),
        ((32, 32, 4, 24), (16, 16)),
        ((480, 640, 16, 256), (224, 288)),
        ((640, 480, 16, 256), (288, 224)),
        ((1080, 1920, 16, 256), (192, 336)),
        ((100, 3000, 16, 256), (48, 1360)),
        ((224, 224, 16, 256), (256, 256)),
        ((512, 512, 16, 1024), (512, 512)),
        ((37, 91, 14, 729), (238, 588)),
        ((10, 10, 16, 64), (128, 128)),
        ((3000, 20, 16, 256), (2400, 16)),
        ((768, 1024, 16, 576), (336, 432)),
    ];
    for &((h, w, patch, max), want) in cases {
        let p = preprocess::Siglip2Processor::new(patch, max);
        assert_eq!(
            p.target_size(h, w),
            want,
            "{h}×{w}, patch {patch}, max {max}"
        );
    }
}

/// Processors built in code are held to the same bounds: a size past 4096², or
/// a normalisation that overflows, is an error naming the image processor, not a
/// huge allocation or NaN pixels; SigLIP 2's patch budget likewise.
#[test]
fn processors_refuse_huge_sizes_and_overflowing_normalisation() {
    let img = preprocess::Rgb8 {
        width: 2,
        height: 2,
        data: vec![7; 12],
    };
    let msg = preprocess::ImageProcessor::siglip(1 << 31)
        .pixel_values(&img)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("image processor"), "{msg}");
    let p = preprocess::ImageProcessor {
        image_std: [0.5, 1e-44, 0.5],
        ..preprocess::ImageProcessor::siglip(2)
    };
    let msg = p.pixel_values(&img).unwrap_err().to_string();
    assert!(
        msg.contains("image_std") && msg.contains("channel 1"),
        "{msg}"
    );
    for (patch, n) in [(1 << 20, 1), (16, 1 << 15), (1024, 64)] {
        let msg = preprocess::Siglip2Processor::new(patch, n)
            .patches(&img)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("image processor"), "{patch} {n}: {msg}");
    }
    let err = preprocess::Siglip2Processor::for_model(None, 16, Some(1 << 15)).unwrap_err();
    assert!(err.to_string().contains("max_patches"), "{err}");
    assert!(preprocess::Siglip2Processor::for_model(None, 16, Some(4096)).is_ok());
}
