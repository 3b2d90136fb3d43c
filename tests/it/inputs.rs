//! Bad inputs are clear errors (issue #7): wrong pixel shapes, empty batches,
//! non-finite pixels, files that are not images, odd image modes, missing paths.
//! (The corpus of broken files through the CLI is in cli/tests.)
//!
//! Decisions tested here:
//! - B = 0 is an `Err` everywhere (forward, `load_images(&[])`, the CLI);
//! - the library forward does not check values: NaN/Inf pixels propagate to the
//!   outputs of the images holding them; `preprocess::check_finite` and the CLI
//!   refuse them with an error naming the tensor and the first bad index.

use std::path::{Path, PathBuf};

use tessera::model::VisionModel;
use tessera::preprocess;
use tessera::{Cpu, DeviceBuffer, Error};

use crate::common::root;

fn tmp(name: &str) -> PathBuf {
    crate::common::tmp_in("inputs", name)
}

fn siglip() -> VisionModel<f32, Cpu> {
    VisionModel::load(root().join("tests/data/siglip_tiny"), &Cpu).unwrap()
}

fn input_err(r: tessera::Result<impl Sized>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            assert!(matches!(e, Error::Input { .. }), "{e:?}");
            e.to_string()
        }
    }
}

#[test]
fn wrong_pixel_shapes_are_errors() {
    let model = siglip();
    for shape in [
        &[1, 1, 32, 32][..],
        &[1, 4, 32, 32],
        &[1, 3, 16, 16],
        &[1, 3, 32, 31],
        &[3, 32, 32],
        &[1, 1, 3, 32, 32],
        &[1],
    ] {
        let px = DeviceBuffer::<f32, Cpu>::zeros(&Cpu, shape).unwrap();
        let msg = input_err(model.forward(&px, None));
        assert!(msg.contains("pixel_values"), "{msg}");
        assert!(msg.contains(&format!("{shape:?}")), "{msg}");
    }
}

#[test]
fn empty_batch_is_an_error() {
    let model = siglip();
    let px = DeviceBuffer::<f32, Cpu>::zeros(&Cpu, &[0, 3, 32, 32]).unwrap();
    let msg = input_err(model.forward(&px, None));
    assert!(msg.contains("B ≥ 1"), "{msg}");
    let mga = VisionModel::<f32, Cpu>::load(root().join("tests/data/mga_tiny"), &Cpu).unwrap();
    let mut bank = mga.new_memory(0).unwrap();
    input_err(mga.forward(&px, Some(&mut bank)));
    let none: [&str; 0] = [];
    let msg = input_err(preprocess::load_images(&none, 32));
    assert!(msg.contains("pixel_values"), "{msg}");
}

/// Non-finite values propagate through the library forward, only to the image
/// that holds them.
#[test]
fn non_finite_pixels_propagate_in_the_library() {
    let model = siglip();
    let n = 3 * 32 * 32;
    let mut px: Vec<f32> = (0..2 * n).map(|i| ((i % 89) as f32 / 44.0) - 1.0).collect();
    let clean = px.clone();
    px[5] = f32::NAN;
    px[n - 1] = f32::INFINITY;
    let out = model
        .forward(
            &DeviceBuffer::from_slice(&Cpu, &px, &[2, 3, 32, 32]).unwrap(),
            None,
        )
        .unwrap();
    let ref_out = model
        .forward(
            &DeviceBuffer::from_slice(&Cpu, &clean, &[2, 3, 32, 32]).unwrap(),
            None,
        )
        .unwrap();
    let got = out.last_hidden_state.to_vec().unwrap();
    let want = ref_out.last_hidden_state.to_vec().unwrap();
    let half = got.len() / 2;
    assert!(got[..half].iter().any(|v| !v.is_finite()));
    assert_eq!(got[half..], want[half..], "image 1 is unaffected");
    let pooled = out.pooler_output.unwrap().to_vec().unwrap();
    assert!(pooled[..64].iter().all(|v| !v.is_finite()));
    assert!(pooled[64..].iter().all(|v| v.is_finite()));
}

#[test]
fn check_finite_names_tensor_and_index() {
    let mut v = vec![0.0f32; 2 * 3 * 4 * 4];
    preprocess::check_finite("pixel_values", &v, &[2, 3, 4, 4]).unwrap();
    v[93] = f32::NEG_INFINITY; // [1, 2, 3, 1], after the NaN below
    v[60] = f32::NAN;
    let msg = input_err(preprocess::check_finite("pixel_values", &v, &[2, 3, 4, 4]));
    assert!(msg.contains("pixel_values"), "{msg}");
    assert!(
        msg.contains("[1, 0, 3, 0]") && msg.contains("flat 60"),
        "{msg}"
    );
    let msg = input_err(preprocess::check_finite("x", &v, &[7]));
    assert!(msg.contains("flat index 60"), "{msg}");
}

fn image_err(path: &Path) -> String {
    match preprocess::load_image(path, 32) {
        Ok(_) => panic!("{} loaded as an image", path.display()),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            msg
        }
    }
}

/// A minimal PNG writer (stored deflate blocks) for modes the image crate does not
/// write: palette images.
fn png(
    width: u32,
    height: u32,
    color_type: u8,
    bit_depth: u8,
    chunks: &[(&[u8; 4], Vec<u8>)],
    raw: &[u8],
) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[bit_depth, color_type, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    for (kind, data) in chunks {
        chunk(&mut out, kind, data);
    }
    // zlib: header, one stored block, adler32.
    let mut z = vec![0x78, 0x01, 0x01];
    z.extend_from_slice(&(raw.len() as u16).to_le_bytes());
    z.extend_from_slice(&(!(raw.len() as u16)).to_le_bytes());
    z.extend_from_slice(raw);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    if !raw.is_empty() {
        chunk(&mut out, b"IDAT", &z);
    }
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn palette_and_grey_alpha_images_convert_like_pil() {
    // 3×1 palette image, 8-bit indices 2, 0, 1; index 1 is transparent (tRNS).
    let palette = vec![10, 20, 30, 40, 50, 60, 70, 80, 90];
    let raw = [0u8, 2, 0, 1]; // filter byte 0, then the indices
    let p = tmp("palette.png");
    std::fs::write(
        &p,
        png(
            3,
            1,
            3,
            8,
            &[(b"PLTE", palette), (b"tRNS", vec![255, 0])],
            &raw,
        ),
    )
    .unwrap();
    let img = preprocess::read_rgb8(&p).unwrap();
    // PIL: P (with transparency) → RGB looks each index up; alpha is dropped.
    assert_eq!(img.data, vec![70, 80, 90, 10, 20, 30, 40, 50, 60]);

    // Grey + alpha, 8-bit: grey replicated, alpha dropped.
    let la = image::ImageBuffer::<image::LumaA<u8>, _>::from_fn(2, 1, |x, _| {
        image::LumaA([[7u8, 200][x as usize], [0u8, 128][x as usize]])
    });
    let p = tmp("la8.png");
    la.save(&p).unwrap();
    assert_eq!(
        preprocess::read_rgb8(&p).unwrap().data,
        vec![7, 7, 7, 200, 200, 200]
    );

    // RGBA 8-bit: alpha dropped, not composited.
    let rgba = image::RgbaImage::from_raw(1, 1, vec![1, 2, 3, 0]).unwrap();
    let p = tmp("rgba8.png");
    rgba.save(&p).unwrap();
    assert_eq!(preprocess::read_rgb8(&p).unwrap().data, vec![1, 2, 3]);
}

/// Photos in formats this build does not decode (HEIC from a phone, AVIF, QOI,
/// ...) are errors that name the file and the format and say what to do, whatever
/// the file is called.
#[test]
fn undecoded_formats_are_named() {
    let ftyp = |brand: &[u8; 4]| {
        let mut b = vec![0, 0, 0, 24];
        b.extend_from_slice(b"ftyp");
        b.extend_from_slice(brand);
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(b"mif1heic");
        b.extend_from_slice(&[0; 64]);
        b
    };
    let mut qoi = b"qoif".to_vec();
    qoi.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 8, 3, 0]);
    qoi.extend_from_slice(&[0; 32]);
    for (name, bytes, format) in [
        ("IMG_0001.HEIC", ftyp(b"heic"), "HEIC"),
        ("burst.jpg", ftyp(b"heix"), "HEIC"),
        ("still.heif", ftyp(b"mif1"), "HEIF"),
        ("photo.avif", ftyp(b"avif"), "AVIF"),
        ("pixels.qoi", qoi, "QOI"),
    ] {
        let p = tmp(name);
        std::fs::write(&p, &bytes).unwrap();
        let e = image_err(&p);
        assert!(
            e.contains(&format!("{format} images are not decoded")),
            "{name}: {e}"
        );
        assert!(e.contains(name) && e.contains("convert it"), "{name}: {e}");
    }
}

/// A file that cannot seek (a FIFO, as `--image <(curl …)` gives) decodes as the
/// file it carries; a device of endless zeros is refused from its first bytes.
#[cfg(unix)]
#[test]
fn pipes_decode_and_devices_are_refused_at_once() {
    let file = root().join("tests/data/images/waves_64x48.png");
    for (name, source) in [
        ("pipe.png", file),
        ("pipe.jpg", root().join("tests/data/images/waves_64x48.jpg")),
    ] {
        let fifo = tmp(name);
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: mkfifo not available");
            return;
        }
        let bytes = std::fs::read(&source).unwrap();
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::write(fifo, bytes))
        };
        let got = preprocess::read_rgb8(&fifo);
        writer.join().unwrap().unwrap();
        assert_eq!(
            got.unwrap(),
            preprocess::read_rgb8(&source).unwrap(),
            "{name}"
        );
        let _ = std::fs::remove_file(&fifo);
    }
    let e = image_err(Path::new("/dev/zero"));
    assert!(e.contains("not a recognised image format"), "{e}");
}

#[test]
fn files_that_are_not_images_are_errors() {
    let text = tmp("notes.png");
    std::fs::write(&text, "this is a text file, not a picture\n").unwrap();
    image_err(&text);
    let text = tmp("notes.dat");
    std::fs::write(&text, "this is a text file, not a picture\n").unwrap();
    assert!(image_err(&text).contains("not a recognised image format"));
    let empty = tmp("empty.png");
    std::fs::write(&empty, b"").unwrap();
    image_err(&empty);
    // A real PNG cut in half.
    let full = std::fs::read(root().join("tests/data/images/waves_64x48.png")).unwrap();
    let cut = tmp("cut.png");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    image_err(&cut);
    // A PNG header claiming 60000×60000 pixels and no data: an error, not an
    // attempt to allocate 10 GiB.
    let huge = tmp("huge.png");
    std::fs::write(&huge, png(60_000, 60_000, 2, 8, &[], &[])).unwrap();
    image_err(&huge);
    // The same with image data (30000×30000, 2.7 GB decoded): refused by the
    // decoder's memory limit before any allocation, upright or not.
    std::fs::write(&huge, png(30_000, 30_000, 2, 8, &[], &[0])).unwrap();
    let msg = image_err(&huge);
    assert!(msg.contains("limit"), "{msg}");
    let msg = preprocess::read_rgb8_upright(&huge)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("huge.png") && msg.contains("limit"), "{msg}");
    // Under the pixel bound, a 16-bit RGBA PNG of 10 000² pixels (800 MB
    // decoded, past the image crate's default 512 MiB) is not refused for its
    // size, as Pillow opens it: it fails on its missing rows.
    std::fs::write(&huge, png(10_000, 10_000, 6, 16, &[], &[0])).unwrap();
    let msg = image_err(&huge);
    assert!(
        !msg.contains("more than") && !msg.contains("limit"),
        "{msg}"
    );
    // A grey PNG of 13 380² pixels (179 million, past Pillow's decompression-bomb
    // bound; 179 MB decoded: under the decoder's byte limit, but 537 MB as RGB):
    // refused from its header, as Pillow refuses it, upright or not. 13 377²
    // (178.94 million, under the bound) is not refused for its size (it fails
    // later, on the missing rows).
    std::fs::write(&huge, png(13_380, 13_380, 0, 8, &[], &[0])).unwrap();
    let msg = image_err(&huge);
    assert!(msg.contains("decompression bomb"), "{msg}");
    let msg = preprocess::read_rgb8_upright(&huge)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("decompression bomb"), "{msg}");
    std::fs::write(&huge, png(13_377, 13_377, 0, 8, &[], &[0])).unwrap();
    let msg = image_err(&huge);
    assert!(!msg.contains("decompression bomb"), "{msg}");
    // A zero-width PNG.
    let zero = tmp("zero.png");
    std::fs::write(&zero, png(0, 1, 2, 8, &[], &[0])).unwrap();
    image_err(&zero);
    // A JPEG cut to its first bytes.
    let jpg = std::fs::read(root().join("tests/data/images/waves_64x48.jpg")).unwrap();
    let cutj = tmp("cut.jpg");
    std::fs::write(&cutj, &jpg[..64]).unwrap();
    image_err(&cutj);
    // A missing file and a directory.
    let msg = image_err(&tmp("no_such_image.png"));
    assert!(msg.contains("no_such_image.png"), "{msg}");
    image_err(&std::env::temp_dir());
}

#[test]
fn missing_model_paths_are_named() {
    for p in ["no/such/model", "tests/data/siglip_tiny/config.json"] {
        let e = VisionModel::<f32, Cpu>::load(root().join(p), &Cpu).unwrap_err();
        assert!(e.to_string().contains(p), "{e}");
    }
}

/// `model::check_safetensors` refuses a pixel file whose offsets sum past
/// u64::MAX (the safetensors crate's own length check overflows on it: a panic in
/// debug builds), naming the file and the tensor.
#[test]
fn check_safetensors_refuses_overflowing_offsets() {
    let bytes = crate::common::overflowing_safetensors();
    let file = Path::new("pixels.safetensors");
    let msg = tessera::model::check_safetensors(file, &bytes)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("pixels.safetensors") && msg.contains("past the end"),
        "{msg}"
    );
    // A valid file passes.
    let good = std::fs::read(root().join("tests/data/siglip_tiny/io.safetensors")).unwrap();
    tessera::model::check_safetensors(file, &good).unwrap();
}

/// Shapes whose products overflow (a zero-batch buffer may declare any sides):
/// the ops return shape errors naming the tensor instead of overflowing.
#[test]
fn ops_refuse_shapes_whose_sizes_overflow() {
    use tessera::ops;
    let big = 1usize << 40;
    let px = DeviceBuffer::<f32, Cpu>::zeros(&Cpu, &[0, 1, big, big]).unwrap();
    let w = DeviceBuffer::<f32, Cpu>::zeros(&Cpu, &[4, 1, 2, 2]).unwrap();
    let b = DeviceBuffer::<f32, Cpu>::zeros(&Cpu, &[4]).unwrap();
    let err = ops::patch_embed(&px, &w, &b, &b, big)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pixels"), "{err}");
    let h = DeviceBuffer::<f32, Cpu>::zeros(&Cpu, &[0, 5, 1]).unwrap();
    let bank = DeviceBuffer::<f32, Cpu>::zeros(&Cpu, &[0, 1, usize::MAX, 1]).unwrap();
    let rw = DeviceBuffer::<f32, Cpu>::zeros(&Cpu, &[1, 1]).unwrap();
    let rb = DeviceBuffer::<f32, Cpu>::zeros(&Cpu, &[1]).unwrap();
    let err = ops::memory_read(&h, &bank, &rw, &rb)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bank"), "{err}");
}

/// The allocating ops check every operand before sizing their output from the
/// others: a wrong tensor is named, where a huge `out` used to be allocated (or
/// refused as out of memory) first.
#[test]
fn ops_name_a_wrong_operand_before_allocating() {
    use tessera::ops::{self, Activation};
    let zeros = |shape: &[usize]| DeviceBuffer::<f32, Cpu>::zeros(&Cpu, shape).unwrap();
    let named = |r: tessera::Result<DeviceBuffer<f32, Cpu>>, tensor: &str| {
        let e = r.expect_err("a wrong operand is an error");
        let msg = e.to_string();
        assert!(
            !matches!(e, Error::OutOfMemory { .. }) && msg.contains(&format!("`{tensor}`")),
            "{msg}"
        );
    };
    // out would be [2^20, 2^20, 1]: 4 TiB.
    let (q, kv) = (zeros(&[1, 1 << 20, 1]), zeros(&[1 << 20, 1, 2]));
    named(ops::attention(&q, &kv, &kv, 1), "k");
    // out would be [1, 2^20, 2^16] (256 GiB); `position` is wrong.
    let (px, w, b) = (
        zeros(&[1, 1, 1024, 1024]),
        zeros(&[1 << 16, 1]),
        zeros(&[1 << 16]),
    );
    named(
        ops::patch_embed(&px, &w, &b, &zeros(&[1, 1]), 1),
        "position",
    );
    // out would be [2^20, 2^20]; `bias` is wrong.
    let (x, w) = (zeros(&[1 << 20, 1]), zeros(&[1 << 20, 1]));
    let bias = zeros(&[3]);
    named(
        ops::linear(&x, &w, Some(&bias), Activation::None, None),
        "bias",
    );
}
