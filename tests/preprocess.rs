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
    let max = diffs.iter().cloned().fold(0.0, f32::max);
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
