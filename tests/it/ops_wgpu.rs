//! The generic op suite on the wgpu backend (lavapipe / llvmpipe where there is
//! no GPU). Skips with a notice when no adapter exists, unless
//! TESSERA_REQUIRE_WGPU=1.
op_suite!(device_or_skip(
    "wgpu",
    "TESSERA_REQUIRE_WGPU",
    tessera::Wgpu::new
));

mod wgpu_specific {
    use crate::common::device_or_skip;
    use tessera::{ops, DeviceBuffer, Error, Wgpu};

    fn device() -> Option<Wgpu> {
        device_or_skip("wgpu", "TESSERA_REQUIRE_WGPU", Wgpu::new)
    }

    /// Buffers of two separately made devices must not mix: an error, not a crash.
    #[test]
    fn two_devices_do_not_mix() {
        let (Some(a), Some(b)) = (device(), device()) else {
            return;
        };
        use tessera::Device;
        assert!(a.same_device(&a.clone()));
        assert!(!a.same_device(&b));
        let x = DeviceBuffer::from_slice(&a, &[1.0f32, 2.0], &[2]).unwrap();
        let y = DeviceBuffer::from_slice(&b, &[3.0f32, 4.0], &[2]).unwrap();
        match ops::add(&x, &y) {
            Err(Error::DeviceMismatch { op, tensor, .. }) => {
                assert_eq!(op, "add");
                assert_eq!(tensor, "b");
            }
            other => panic!("expected DeviceMismatch, got {other:?}"),
        }
        // Each device still works on its own.
        assert_eq!(ops::add(&x, &x).unwrap().to_vec().unwrap(), vec![2.0, 4.0]);
    }

    #[test]
    fn adapter_info_is_filled() {
        let Some(dev) = device() else { return };
        let info = dev.adapter_info();
        eprintln!("wgpu adapter: {info:?}");
        assert!(!info.name.is_empty());
        use tessera::Device;
        assert!(dev.describe().starts_with("wgpu ("));
    }

    /// Odd lengths in bf16: neighbours sharing a packed word must both survive.
    #[test]
    fn bf16_odd_lengths_round_trip() {
        let Some(dev) = device() else { return };
        for n in [1usize, 3, 5, 257] {
            let v: Vec<tessera::bf16> = (0..n)
                .map(|i| tessera::bf16::from_f32(i as f32 - 7.5))
                .collect();
            let x = DeviceBuffer::from_slice(&dev, &v, &[n]).unwrap();
            assert_eq!(x.to_vec().unwrap(), v);
            let y = ops::add(&x, &x).unwrap().to_vec().unwrap();
            for (i, (a, b)) in v.iter().zip(&y).enumerate() {
                assert_eq!(b.to_f32(), 2.0 * a.to_f32(), "n={n} at {i}");
            }
        }
    }

    /// More workgroups than one grid dimension holds (> 65535): split across x/y.
    /// Every row differs and the output is poisoned, so a workgroup that read or
    /// wrote the wrong row (or none) fails.
    #[test]
    fn large_grid_is_split() {
        use crate::common::{assert_close, poisoned, ref_layer_norm, to_f64};
        let Some(dev) = device() else { return };
        let (rows, cols) = (70_000, 3);
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0)
            .collect();
        let (w, b) = ([1.0f32, -2.0, 0.5], [0.5f32, 0.25, -1.0]);
        let mut y = poisoned::<f32, Wgpu>(&dev, &[rows, cols]);
        // One row per workgroup: 70 000 workgroups.
        ops::layer_norm_into(
            &DeviceBuffer::from_slice(&dev, &x, &[rows, cols]).unwrap(),
            &DeviceBuffer::from_slice(&dev, &w, &[cols]).unwrap(),
            &DeviceBuffer::from_slice(&dev, &b, &[cols]).unwrap(),
            1e-6,
            &mut y,
        )
        .unwrap();
        let reference = ref_layer_norm(&to_f64(&x), &to_f64(&w), &to_f64(&b), rows, cols, 1e-6);
        assert_close(
            "layer norm over 70 000 workgroups",
            &y.to_vec().unwrap(),
            &reference,
        );
    }

    /// Head dims above the kernel's limit are a clear error.
    #[test]
    fn head_dim_above_128_is_unsupported() {
        let Some(dev) = device() else { return };
        let q = DeviceBuffer::<f32, _>::zeros(&dev, &[1, 1, 130]).unwrap();
        match ops::attention(&q, &q, &q, 1) {
            Err(Error::Unsupported { op, .. }) => assert_eq!(op, "attention"),
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    /// An output larger than the adapter can hold is an out-of-memory error. (k = 0
    /// keeps the inputs empty, so nothing large is made on the host.)
    #[test]
    fn oversized_output_is_out_of_memory() {
        let Some(dev) = device() else { return };
        let n = 1 << 20;
        let x = DeviceBuffer::<f32, _>::zeros(&dev, &[n, 0]).unwrap();
        let w = DeviceBuffer::<f32, _>::zeros(&dev, &[n, 0]).unwrap();
        match ops::linear(&x, &w, None, ops::Activation::None, None) {
            Err(Error::OutOfMemory { bytes, .. }) => assert!(bytes >= 1 << 42),
            other => panic!("expected OutOfMemory, got {other:?}"),
        }
    }
}
