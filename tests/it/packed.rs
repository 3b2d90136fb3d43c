//! SigLIP 2 packed batches (`pack` + `forward_packed`) beyond the golden case:
//! images in one packed sequence do not see each other, packing order only
//! permutes the outputs, a padded tensor's padding is never read, the packed
//! workspace is reused, bad inputs are errors, and bf16 tracks f32. On every
//! device present.
//!
//! Expected values come from other runs of the model (each image alone, another
//! order, zero padding, the f32 model), never from the run under test.

use std::path::{Path, PathBuf};

use crate::common::{rel_l2, to_f64, Rng};
use tessera::model::{Architecture, ImagePatches, PackedOutput, VisionModel};
use tessera::{bf16, DeviceBuffer, Element, Kernels, VisionConfig};

/// Agreement between runs of the same f32 model on the same image (alone or
/// packed with others, in any order): only summation order may differ.
const SAME_IMAGE_BAR: f64 = 1e-6;

fn data_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(case)
}

fn siglip2_tiny<T: Element, D: Kernels<T>>(dev: &D) -> VisionModel<T, D> {
    VisionModel::<T, D>::load(data_dir("siglip2/siglip2_tiny"), dev).unwrap()
}

/// Images of the given grids with random patch values in [-1, 1), for a model
/// of `cpp` values per patch.
fn random_images(rng: &mut Rng, grids: &[(usize, usize)], cpp: usize) -> Vec<ImagePatches> {
    grids
        .iter()
        .map(|&(h, w)| ImagePatches {
            height: h,
            width: w,
            values: rng.vec::<f32>(h * w * cpp, 1.0),
        })
        .collect()
}

/// The outputs of a packed forward on the host, per image:
/// (last_hidden_state rows, pooler_output row).
struct PerImage {
    last: Vec<Vec<f64>>,
    pooled: Vec<Vec<f64>>,
}

fn per_image<T: Element, D: Kernels<T>>(out: &PackedOutput<T, D>, d: usize) -> PerImage {
    let last = to_f64(&out.last_hidden_state.to_vec().unwrap());
    let pooled = to_f64(&out.pooler_output.as_ref().unwrap().to_vec().unwrap());
    let seg = &out.segments;
    assert_eq!(last.len(), seg.total() * d);
    assert_eq!(pooled.len(), seg.count() * d);
    PerImage {
        last: (0..seg.count())
            .map(|b| {
                let r = seg.range(b);
                last[r.start * d..r.end * d].to_vec()
            })
            .collect(),
        pooled: pooled.chunks(d).map(<[f64]>::to_vec).collect(),
    }
}

fn run<T: Element, D: Kernels<T>>(model: &VisionModel<T, D>, images: &[ImagePatches]) -> PerImage {
    let batch = model.pack(images).unwrap();
    let out = model.forward_packed(&batch).unwrap();
    per_image(&out, model.config().hidden_size)
}

fn assert_agree(what: &str, got: &[f64], want: &[f64], bar: f64) {
    let err = rel_l2(got, want);
    assert!(
        err <= bar,
        "{what}: relative L2 error {err:e} exceeds {bar:e}"
    );
}

/// Three images of different grids packed together give, for each image, what
/// the image gives alone; packed in reverse order, the outputs come back in
/// reverse order.
fn check_no_cross_talk<D: Kernels<f32>>(dev: &D) {
    let model = siglip2_tiny::<f32, D>(dev);
    let cpp = model.config().patch_values();
    let grids = [(2, 3), (4, 4), (1, 5)];
    let mut rng = Rng::new("packed_no_cross_talk");
    let images = random_images(&mut rng, &grids, cpp);

    let batch = model.pack(&images).unwrap();
    assert_eq!(batch.images(), 3);
    assert_eq!(batch.tokens(), 6 + 16 + 5);
    assert_eq!(batch.spatial_shapes(), &grids);
    let out = model.forward_packed(&batch).unwrap();
    assert_eq!(out.segments.lengths().collect::<Vec<_>>(), [6, 16, 5]);
    assert_eq!(out.last_hidden_state.shape(), &[27, 64]);
    let together = per_image(&out, 64);

    let alone: Vec<PerImage> = images
        .iter()
        .map(|img| run(&model, std::slice::from_ref(img)))
        .collect();
    for (i, a) in alone.iter().enumerate() {
        assert_agree(
            &format!(
                "image {i} {:?} last_hidden_state, packed vs alone",
                grids[i]
            ),
            &together.last[i],
            &a.last[0],
            SAME_IMAGE_BAR,
        );
        assert_agree(
            &format!("image {i} {:?} pooler_output, packed vs alone", grids[i]),
            &together.pooled[i],
            &a.pooled[0],
            SAME_IMAGE_BAR,
        );
    }
    // The images' outputs differ from each other, so a permutation (or one
    // image's rows standing in for another's) would be seen.
    for i in 0..3 {
        for j in i + 1..3 {
            assert!(
                rel_l2(&alone[i].pooled[0], &alone[j].pooled[0]) > 1e-2,
                "images {i} and {j} pool to the same vector"
            );
        }
    }

    // Reversed order: output j is image 2 − j.
    let reversed: Vec<ImagePatches> = images.iter().rev().cloned().collect();
    let rev = run(&model, &reversed);
    for j in 0..3 {
        let i = 2 - j;
        assert_agree(
            &format!("reversed: output {j} last_hidden_state vs image {i} alone"),
            &rev.last[j],
            &alone[i].last[0],
            SAME_IMAGE_BAR,
        );
        assert_agree(
            &format!("reversed: output {j} pooler_output vs image {i} alone"),
            &rev.pooled[j],
            &alone[i].pooled[0],
            SAME_IMAGE_BAR,
        );
    }

    // The same image twice in one batch: both copies give the image alone.
    let twice = vec![images[1].clone(), images[0].clone(), images[1].clone()];
    let out = run(&model, &twice);
    for b in [0, 2] {
        assert_agree(
            &format!("duplicate at {b}"),
            &out.pooled[b],
            &alone[1].pooled[0],
            SAME_IMAGE_BAR,
        );
    }
}

/// A padded batch `[B, Pmax, C·P·P]` of `images` with `fill` in every padding
/// value, its mask and its spatial shapes.
fn padded(
    images: &[ImagePatches],
    pmax: usize,
    cpp: usize,
    fill: f32,
) -> (Vec<f32>, Vec<i64>, Vec<i64>) {
    let mut px = vec![fill; images.len() * pmax * cpp];
    let mut mask = vec![0i64; images.len() * pmax];
    let mut shapes = Vec::new();
    for (b, img) in images.iter().enumerate() {
        px[b * pmax * cpp..][..img.values.len()].copy_from_slice(&img.values);
        mask[b * pmax..][..img.len()].fill(1);
        shapes.extend([img.height as i64, img.width as i64]);
    }
    (px, mask, shapes)
}

/// Values in the padding rows of a padded tensor (huge, NaN, ±Inf) change
/// nothing: the outputs are those of zero padding, and those of the images
/// given directly; the padded layout's padding rows are 0. A changed real value
/// does change them.
fn check_padding_is_ignored<D: Kernels<f32>>(dev: &D) {
    let model = siglip2_tiny::<f32, D>(dev);
    let cpp = model.config().patch_values();
    let pmax = 16;
    let grids = [(2, 3), (4, 4), (1, 5)];
    let mut rng = Rng::new("packed_padding_is_ignored");
    let images = random_images(&mut rng, &grids, cpp);

    let forward = |images: &[ImagePatches]| {
        let out = model.forward_packed(&model.pack(images).unwrap()).unwrap();
        (
            out.last_hidden_state_padded(pmax).unwrap(),
            out.pooler_output.unwrap().to_vec().unwrap(),
        )
    };
    let direct = forward(&images);
    let shape = [grids.len(), pmax, cpp];
    let (px, mask, shapes) = padded(&images, pmax, cpp, 0.0);
    let zero = ImagePatches::from_padded(&px, shape, &mask, &shapes).unwrap();
    assert_eq!(zero, images);
    let with_zeros = forward(&zero);
    assert_eq!(
        with_zeros, direct,
        "zero padding vs the images given directly"
    );

    for fill in [1e6, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let (px, mask, shapes) = padded(&images, pmax, cpp, fill);
        assert!(px.iter().any(|v| v.to_bits() == fill.to_bits()));
        let got = forward(&ImagePatches::from_padded(&px, shape, &mask, &shapes).unwrap());
        assert!(
            got.0.iter().chain(&got.1).all(|v| v.is_finite()),
            "padding {fill}: non-finite outputs"
        );
        assert_eq!(got, with_zeros, "padding {fill} changed the outputs");
    }
    // The padded layout: image b's rows past its patches are 0, the rest as packed.
    let d = model.config().hidden_size;
    for (b, img) in images.iter().enumerate() {
        let rows = &with_zeros.0[b * pmax * d..(b + 1) * pmax * d];
        assert!(rows[img.len() * d..].iter().all(|&v| v == 0.0), "image {b}");
        assert!(rows[..img.len() * d].iter().any(|&v| v != 0.0), "image {b}");
    }
    // Not a tautology: a huge value in a real patch of image 1 does change image 1.
    let (mut px, mask, shapes) = padded(&images, pmax, cpp, 0.0);
    px[pmax * cpp + 5] = 1e3;
    let changed = forward(&ImagePatches::from_padded(&px, shape, &mask, &shapes).unwrap());
    assert_ne!(changed.1[d..2 * d], with_zeros.1[d..2 * d]);
    assert_eq!(changed.1[..d], with_zeros.1[..d], "image 0 saw image 1");
}

/// After a forward of a large batch, one that fits (fewer or as many tokens and
/// images) allocates only its outputs — 2 buffers with a head, 1 without — and
/// gives what a fresh model gives; one that does not fit allocates a workspace.
fn check_workspace_reuse<D: Kernels<f32>>(dev: &D) {
    let model = siglip2_tiny::<f32, D>(dev);
    let fresh = siglip2_tiny::<f32, D>(dev);
    let cpp = model.config().patch_values();
    let mut rng = Rng::new("packed_workspace_reuse");
    let large = random_images(&mut rng, &[(4, 4), (3, 5), (2, 2)], cpp);
    let small = random_images(&mut rng, &[(2, 3), (1, 4)], cpp);
    let allocations_of = |batch| {
        let before = tessera::buffer::thread_allocations();
        let out = model.forward_packed(batch).unwrap();
        (tessera::buffer::thread_allocations() - before, out)
    };

    let large_batch = model.pack(&large).unwrap();
    let (first, _) = allocations_of(&large_batch);
    assert!(first > 2, "the first forward made only {first} buffers");
    let small_batch = model.pack(&small).unwrap();
    let (n, out) = allocations_of(&small_batch);
    assert_eq!(n, 2, "a smaller batch after a larger one allocated");
    let got = per_image(&out, 64);
    let want = run(&fresh, &small);
    for b in 0..small.len() {
        assert_agree(
            &format!("reused workspace, image {b}"),
            &got.last[b],
            &want.last[b],
            SAME_IMAGE_BAR,
        );
        assert_agree(
            &format!("reused workspace, pooled {b}"),
            &got.pooled[b],
            &want.pooled[b],
            SAME_IMAGE_BAR,
        );
    }
    let (n, _) = allocations_of(&large_batch);
    assert_eq!(n, 2, "the same batch again allocated");
    // More images than any batch so far, though fewer tokens: a new workspace.
    let many = model
        .pack(&random_images(&mut rng, &[(1, 1); 4], cpp))
        .unwrap();
    let (n, _) = allocations_of(&many);
    assert!(n > 2, "4 images after at most 3: only {n} buffers");
    // More tokens than any batch so far: a new workspace too.
    let longer = model
        .pack(&random_images(&mut rng, &[(4, 4), (4, 4), (3, 3)], cpp))
        .unwrap();
    let (n, _) = allocations_of(&longer);
    assert!(n > 2, "41 tokens after at most 35: only {n} buffers");
    // …which then serves both earlier batches.
    for batch in [&large_batch, &small_batch] {
        let (n, _) = allocations_of(batch);
        assert_eq!(n, 2);
    }

    // Without a head: one output.
    let mut config = model.config().clone();
    config.vision_use_head = false;
    let nohead = VisionModel::<f32, D>::random(config, dev, 3).unwrap();
    let batch = nohead.pack(&large).unwrap();
    let out = nohead.forward_packed(&batch).unwrap();
    assert!(out.pooler_output.is_none());
    let batch = nohead.pack(&small).unwrap();
    let before = tessera::buffer::thread_allocations();
    nohead.forward_packed(&batch).unwrap();
    assert_eq!(tessera::buffer::thread_allocations() - before, 1, "no head");
}

fn err_text<T>(r: tessera::Result<T>, what: &str) -> String {
    match r {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "`{n}` not in: {msg}");
    }
}

/// A SigLIP 2 config with patch side `patch` and `grid`² position entries
/// (otherwise siglip2_tiny's), for a random model.
fn siglip2_config(patch: usize, grid: usize) -> VisionConfig {
    let mut v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data_dir("siglip2/siglip2_tiny/config.json")).unwrap(),
    )
    .unwrap();
    v["patch_size"] = patch.into();
    v["num_patches"] = (grid * grid).into();
    VisionConfig::from_json_str(&v.to_string(), "random.json").unwrap()
}

/// Every misuse is an `Err` with a message that says what is wrong.
fn check_errors<D: Kernels<f32>>(dev: &D) {
    let model = siglip2_tiny::<f32, D>(dev);
    let cpp = model.config().patch_values();
    let mut rng = Rng::new("packed_errors");
    let images = random_images(&mut rng, &[(2, 3), (4, 4)], cpp);

    // forward (fixed size) on SigLIP 2.
    let pixels = DeviceBuffer::<f32, D>::zeros(dev, &[1, 3, 16, 16]).unwrap();
    let msg = err_text(model.forward(&pixels, None), "forward on SigLIP 2");
    assert_mentions(&msg, &["pixel_values", "pack"]);
    let msg = err_text(
        model
            .new_output(1)
            .and_then(|mut o| model.forward_into(&pixels, None, &mut o)),
        "forward_into on SigLIP 2",
    );
    assert_mentions(&msg, &["pixel_values"]);

    // pack on SigLIP.
    let siglip = VisionModel::<f32, D>::load(data_dir("siglip_tiny"), dev).unwrap();
    assert_eq!(siglip.config().architecture, Architecture::Siglip);
    let siglip_images = random_images(&mut rng, &[(2, 2)], siglip.config().patch_values());
    let msg = err_text(siglip.pack(&siglip_images), "pack on SigLIP");
    assert_mentions(&msg, &["pixel_values", "SigLIP"]);
    // …nor does SigLIP run a SigLIP 2 batch.
    let batch = model.pack(&images).unwrap();
    let msg = err_text(siglip.forward_packed(&batch), "forward_packed on SigLIP");
    assert_mentions(&msg, &["rows"]);

    // Values of the wrong length: the image is named, with both counts.
    let mut bad = images.clone();
    bad[1].values.pop();
    let msg = err_text(model.pack(&bad), "short values");
    assert_mentions(&msg, &["pixel_values", "image 1", "4 × 4", "768", "767"]);
    let mut bad = images.clone();
    bad[0].values.extend([0.0; 48]);
    let msg = err_text(model.pack(&bad), "long values");
    assert_mentions(&msg, &["image 0", "288", "336"]);
    // An empty grid.
    let mut bad = images.clone();
    bad[1] = ImagePatches {
        height: 0,
        width: 4,
        values: Vec::new(),
    };
    let msg = err_text(model.pack(&bad), "empty grid");
    assert_mentions(&msg, &["image 1"]);
    // No images.
    let msg = err_text(model.pack(&[]), "no images");
    assert_mentions(&msg, &["pixel_values"]);

    // A batch packed by a model of another patch size or grid.
    for (patch, grid) in [(2, 4), (4, 5), (2, 3)] {
        let other = VisionModel::<f32, D>::random(siglip2_config(patch, grid), dev, 11).unwrap();
        let other_images =
            random_images(&mut rng, &[(2, 3), (1, 2)], other.config().patch_values());
        let foreign = other.pack(&other_images).unwrap();
        let msg = err_text(
            model.forward_packed(&foreign),
            &format!("batch of patch {patch}, grid {grid}"),
        );
        let width = 3 * patch * patch + grid * grid;
        assert_mentions(&msg, &["rows", &width.to_string(), "64"]);
        // The other model itself runs it.
        other.forward_packed(&foreign).unwrap();
    }
    // A batch packed by another model of the same config is fine, and the same.
    let twin = siglip2_tiny::<f32, D>(dev);
    let a = per_image(
        &model.forward_packed(&twin.pack(&images).unwrap()).unwrap(),
        64,
    );
    let b = per_image(&model.forward_packed(&batch).unwrap(), 64);
    assert_eq!(a.pooled, b.pooled);
}

/// Two SigLIP 2 models whose rows have the same width (3·P² + G²) but split it
/// differently: P = 4, G = 2 (48 + 4) and P = 3, G = 5 (27 + 25). One model's
/// batch must not run on the other.
fn check_foreign_batch_of_same_width<D: Kernels<f32>>(dev: &D) {
    let a = VisionModel::<f32, D>::random(siglip2_config(4, 2), dev, 1).unwrap();
    let b = VisionModel::<f32, D>::random(siglip2_config(3, 5), dev, 2).unwrap();
    assert_eq!(
        a.config().patch_values() + a.config().num_patches(),
        b.config().patch_values() + b.config().num_patches()
    );
    let mut rng = Rng::new("packed_foreign_same_width");
    let images = random_images(&mut rng, &[(2, 3)], b.config().patch_values());
    let batch = b.pack(&images).unwrap();
    let msg = err_text(
        a.forward_packed(&batch),
        "a batch of P = 3, G = 5 on P = 4, G = 2",
    );
    assert_mentions(&msg, &["pack with this model"]);
}

/// bf16 against f32 on the same images: within the bf16 bar.
fn check_bf16<D: Kernels<f32> + Kernels<bf16>>(dev: &D) {
    let m32 = siglip2_tiny::<f32, D>(dev);
    let m16 = siglip2_tiny::<bf16, D>(dev);
    let cpp = m32.config().patch_values();
    let mut rng = Rng::new("packed_bf16");
    let images = random_images(&mut rng, &[(2, 3), (4, 4), (1, 5), (5, 3)], cpp);
    let want = run(&m32, &images);
    let got = run(&m16, &images);
    let flat = |v: &[Vec<f64>]| v.concat();
    let bar = crate::common::bar::<bf16>();
    let err = rel_l2(&flat(&got.last), &flat(&want.last));
    eprintln!(
        "packed bf16 on {}: last_hidden_state rel L2 {err:.3e}",
        dev.describe()
    );
    assert!(err <= bar, "bf16 last_hidden_state: {err:e} > {bar:e}");
    let err = rel_l2(&flat(&got.pooled), &flat(&want.pooled));
    eprintln!(
        "packed bf16 on {}: pooler_output rel L2 {err:.3e}",
        dev.describe()
    );
    assert!(err <= bar, "bf16 pooler_output: {err:e} > {bar:e}");
    // And bf16 is not f32 in disguise: the outputs differ.
    assert_ne!(flat(&got.pooled), flat(&want.pooled));
}

macro_rules! packed_suite {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn no_cross_talk_and_order() {
                let Some(dev) = $make else { return };
                check_no_cross_talk(&dev);
            }
            #[test]
            fn padding_is_ignored() {
                let Some(dev) = $make else { return };
                check_padding_is_ignored(&dev);
            }
            #[test]
            fn workspace_is_reused() {
                let Some(dev) = $make else { return };
                check_workspace_reuse(&dev);
            }
            #[test]
            fn errors_are_values() {
                let Some(dev) = $make else { return };
                check_errors(&dev);
            }
            #[test]
            fn foreign_batch_of_same_width_is_refused() {
                let Some(dev) = $make else { return };
                check_foreign_batch_of_same_width(&dev);
            }
            #[test]
            fn bf16_tracks_f32() {
                let Some(dev) = $make else { return };
                check_bf16(&dev);
            }
        }
    };
}

packed_suite!(cpu, Some(tessera::Cpu));
packed_suite!(
    wgpu,
    crate::common::device_or_skip("wgpu", "TESSERA_REQUIRE_WGPU", tessera::Wgpu::new)
);
packed_suite!(
    cuda,
    crate::common::device_or_skip("cuda", "TESSERA_REQUIRE_CUDA", || tessera::Cuda::new(0))
);

/// `last_hidden_state_padded` on outputs whose public fields disagree: a
/// tensor with fewer or more rows than its segments, one not of rank 2, and an
/// image longer than `max_patches` are errors naming `last_hidden_state`, not
/// panics or rows read from the wrong image; consistent fields give the padded
/// layout, each image's rows in place and zeros after them.
#[test]
fn padded_layout_checks_its_segments() {
    use tessera::ops::Segments;
    use tessera::Cpu;
    let dev = Cpu;
    let d = 2;
    let values: Vec<f32> = (1..=10).map(|v| v as f32).collect();
    let output = |rows: usize, shape: &[usize], lengths: &[usize]| PackedOutput::<f32, Cpu> {
        last_hidden_state: DeviceBuffer::from_slice(&dev, &values[..rows * d], shape).unwrap(),
        pooler_output: None,
        segments: Segments::from_lengths(lengths).unwrap(),
    };
    // 5 rows of 2: images of 3 and 2 patches.
    let ok = output(5, &[5, 2], &[3, 2]);
    assert_eq!(
        ok.last_hidden_state_padded(4).unwrap(),
        [1., 2., 3., 4., 5., 6., 0., 0., 7., 8., 9., 10., 0., 0., 0., 0.]
    );
    for (what, out, max) in [
        (
            "fewer rows than the segments",
            output(4, &[4, 2], &[3, 2]),
            4,
        ),
        (
            "more rows than the segments",
            output(5, &[5, 2], &[2, 2]),
            4,
        ),
        ("rank 3", output(5, &[5, 1, 2], &[3, 2]), 4),
        ("an image past max_patches", output(5, &[5, 2], &[3, 2]), 2),
    ] {
        let e = out
            .last_hidden_state_padded(max)
            .expect_err(what)
            .to_string();
        assert!(e.contains("last_hidden_state"), "{what}: {e}");
    }
}
