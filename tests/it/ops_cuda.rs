//! The generic op suite on the CUDA backend. Skips (with a printed notice) when no
//! CUDA device can be opened, unless TESSERA_REQUIRE_CUDA=1.
op_suite!(crate::common::device_or_skip(
    "cuda",
    "TESSERA_REQUIRE_CUDA",
    || tessera::Cuda::new(0)
));

/// Two handles are two devices; clones of one handle are the same device.
#[test]
fn handles_identity() {
    use tessera::Device;
    let Some(a) =
        crate::common::device_or_skip("cuda", "TESSERA_REQUIRE_CUDA", || tessera::Cuda::new(0))
    else {
        return;
    };
    assert!(a.same_device(&a.clone()));
    assert_eq!(a.ordinal(), 0);
    let b = tessera::Cuda::new(0).unwrap();
    assert!(!a.same_device(&b));
    let x = tessera::DeviceBuffer::from_slice(&b, &[1.0f32, 2.0], &[2]).unwrap();
    let y = tessera::DeviceBuffer::from_slice(&a, &[1.0f32, 2.0], &[2]).unwrap();
    let err = tessera::ops::add(&y, &x).unwrap_err();
    assert!(
        matches!(err, tessera::Error::DeviceMismatch { .. }),
        "{err}"
    );
}

/// An ordinal past the last device is an error, not a panic.
#[test]
fn bad_ordinal_is_an_error() {
    if let Err(e) = tessera::Cuda::device_count() {
        if crate::common::required("TESSERA_REQUIRE_CUDA") {
            panic!("TESSERA_REQUIRE_CUDA is set but there is no CUDA driver: {e}");
        }
        crate::common::skip_notice("no CUDA driver");
        return;
    }
    let err = tessera::Cuda::new(10_000).unwrap_err();
    assert!(err.to_string().contains("10000"), "{err}");
}

/// The persistent GEMMs with several tiles a block and more k-tiles a tile than
/// stages, at a shape no tile divides: on a 132-SM Hopper 2100 × 1544 is 221
/// tiles of 128 × 128 (the ping-pong kernel under `TESSERA_CUDA_SM90_TILE_N=128`:
/// most blocks give each consumer warpgroup a tile, so their turns and the
/// shared stage ring are exercised), K 1032 17 k-tiles of 64 against 6 stages,
/// the last one partial. The op suite's shapes fit in one tile a block on a
/// GPU. (`ops_cuda::linear*`: what gpu-check's sanitizer runs take.)
#[test]
fn linear_persistent_many_tiles() {
    use tessera::ops::Activation;
    let Some(dev) =
        crate::common::device_or_skip("cuda", "TESSERA_REQUIRE_CUDA", || tessera::Cuda::new(0))
    else {
        return;
    };
    let mut rng = crate::common::Rng::new("linear_persistent_many_tiles");
    let shape = (2100, 1032, 1544);
    for (act, bias, res) in [
        (Activation::GeluTanh, true, false),
        (Activation::None, true, true),
    ] {
        crate::common::check_linear_case::<half::bf16, _>(&dev, &mut rng, shape, act, bias, res);
    }
    crate::common::check_linear_case::<f32, _>(&dev, &mut rng, shape, Activation::None, true, true);
}

/// Patch embedding at SigLIP so400m's geometry (384 px, patch 14, D 1152):
/// on a Hopper GPU, patchify into [2187, 592] (K = 588 padded, the weight
/// too), then the wgmma GEMM over 18 tile rows, the position embedding's 729
/// rows repeating inside them. The op suite's shapes fit in one tile.
#[test]
fn patch_embed_so400m_geometry() {
    let Some(dev) =
        crate::common::device_or_skip("cuda", "TESSERA_REQUIRE_CUDA", || tessera::Cuda::new(0))
    else {
        return;
    };
    let mut rng = crate::common::Rng::new("patch_embed_so400m_geometry");
    let shape = (3, 3, 384, 14, 1152);
    crate::common::check_patch_embed_case::<half::bf16, _>(&dev, &mut rng, shape);
    crate::common::check_patch_embed_case::<f32, _>(&dev, &mut rng, shape);
}
