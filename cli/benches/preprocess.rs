//! Criterion benchmarks of the host work `tessera embed` does per image before
//! the device sees it: decoding (JPEG, PNG) and SigLIP preprocessing (PIL-exact
//! resize, rescale, normalise), at a camera photo's size (12 MP JPEG) and at the
//! 640 × 480 of the #13 photo set, for SigLIP-base (224 px, bicubic) and
//! so400m (384 px) and the SigLIP 2 NaFlex processor (bilinear, 256 patches),
//! with JPEGs also decoded in draft mode (`--jpeg-draft`).
//!
//! ```text
//! cargo bench --bench preprocess
//! ```
//!
//! On a GPU the embedding job's throughput is bounded by this work spread over
//! the host's cores; per-image times here are single-threaded.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tessera::preprocess::{read_rgb8, resize, ImageProcessor, Resample, Rgb8, Siglip2Processor};

/// A photo-like image (smooth colour gradients, edges and noise, so the encoders
/// neither collapse it nor meet pure noise), deterministic.
fn photo(width: usize, height: usize) -> Rgb8 {
    photo_with_noise(width, height, 17)
}

/// [`photo`] with noise of `levels` levels (17: ±8), or less: a JPEG of a less
/// noisy photo has less to entropy-decode per pixel.
fn photo_with_noise(width: usize, height: usize, levels: u32) -> Rgb8 {
    let mut data = Vec::with_capacity(width * height * 3);
    let mut state = 0x2545_f491_u32;
    for y in 0..height {
        for x in 0..width {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = (state % levels) as f32 - (levels / 2) as f32;
            let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
            let edge = if (x / 97 + y / 61) % 3 == 0 {
                60.0
            } else {
                0.0
            };
            for c in 0..3 {
                let base = 40.0 + 150.0 * (fx * (c as f32 + 1.0) * 1.3 + fy * 0.7).sin().abs();
                data.push((base + edge + noise).clamp(0.0, 255.0) as u8);
            }
        }
    }
    Rgb8 {
        width,
        height,
        data,
    }
}

/// `img` written as `name` (JPEG quality 90, or PNG by extension) in a temporary
/// folder.
fn write(img: &Rgb8, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-bench-pre-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary folder");
    let path = dir.join(name);
    let buf = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data.clone())
        .expect("pixels");
    if name.ends_with(".jpg") {
        let file = std::fs::File::create(&path).expect("create");
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(file, 90);
        enc.encode_image(&buf).expect("encode");
    } else {
        buf.save(&path).expect("encode");
    }
    path
}

fn preprocess(c: &mut Criterion) {
    let mut g = c.benchmark_group("preprocess");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let big = photo(4032, 3024);
    let small = photo(640, 480);
    let files = [
        ("12MP.jpg", write(&big, "12MP.jpg")),
        (
            "12MP-soft.jpg",
            write(&photo_with_noise(4032, 3024, 5), "12MP-soft.jpg"),
        ),
        ("640x480.jpg", write(&small, "640x480.jpg")),
        ("640x480.png", write(&small, "640x480.png")),
    ];
    for (name, path) in &files {
        g.bench_function(format!("decode {name}"), |b| {
            b.iter(|| read_rgb8(path).expect("decode"))
        });
    }
    let mid = photo(1600, 1200);
    for (name, img) in [("12MP", &big), ("1600x1200", &mid), ("640x480", &small)] {
        for (side, filter) in [(224, Resample::Bicubic), (384, Resample::Bicubic)] {
            g.bench_function(format!("resize {name} -> {side} {filter:?}"), |b| {
                b.iter(|| resize(img, side, side, filter).expect("resize"))
            });
        }
    }
    let base = ImageProcessor::siglip(224);
    let naflex = Siglip2Processor::new(16, 256);
    for (name, path) in &files {
        g.bench_function(format!("load_image siglip 224 {name}"), |b| {
            b.iter(|| base.load_image(path).expect("load"))
        });
        g.bench_function(format!("load_image siglip2 256 patches {name}"), |b| {
            b.iter(|| naflex.load_image(path).expect("load"))
        });
    }
    // The same with `jpeg_draft` (`--jpeg-draft`), and so400m's 384 px, for the JPEGs.
    let drafted = |p: ImageProcessor| ImageProcessor {
        jpeg_draft: true,
        ..p
    };
    let so400m = ImageProcessor::siglip(384);
    let mut naflex_draft = naflex.clone();
    naflex_draft.image.jpeg_draft = true;
    for (name, path) in files.iter().filter(|(n, _)| n.ends_with(".jpg")) {
        for (side, p) in [(224, &base), (384, &so400m)] {
            let draft = drafted(p.clone());
            if side == 384 {
                g.bench_function(format!("load_image siglip 384 {name}"), |b| {
                    b.iter(|| p.load_image(path).expect("load"))
                });
            }
            g.bench_function(format!("load_image siglip {side} jpeg_draft {name}"), |b| {
                b.iter(|| draft.load_image(path).expect("load"))
            });
        }
        g.bench_function(
            format!("load_image siglip2 256 patches jpeg_draft {name}"),
            |b| b.iter(|| naflex_draft.load_image(path).expect("load")),
        );
    }
    g.finish();
    if let Some((_, p)) = files.first() {
        if let Some(dir) = p.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

criterion_group!(benches, preprocess);
criterion_main!(benches);
