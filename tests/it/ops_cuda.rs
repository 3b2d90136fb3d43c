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
