//! Device failures are errors, not aborts (issue #7): allocations larger than the
//! device, and buffers of two device handles mixed at run time. (No CUDA driver
//! and no wgpu adapter are covered by cuda_no_driver.rs and wgpu_no_adapter.rs.)

use std::path::Path;

use tessera::model::VisionModel;
use tessera::{Cpu, DeviceBuffer, Error, Wgpu};

fn wgpu() -> Option<Wgpu> {
    crate::common::device_or_skip("wgpu", "TESSERA_REQUIRE_WGPU", Wgpu::new)
}

fn model_dir(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn cpu_huge_allocation_is_out_of_memory() {
    // 2^60 elements: 4 EiB of f32, more than any machine has.
    let r = DeviceBuffer::<f32, Cpu>::zeros(&Cpu, &[1 << 40, 1 << 20]);
    assert!(matches!(r, Err(Error::OutOfMemory { .. })), "{r:?}");
    let r = DeviceBuffer::<tessera::bf16, Cpu>::full(&Cpu, &[1 << 62], tessera::bf16::ONE);
    assert!(matches!(r, Err(Error::OutOfMemory { .. })), "{r:?}");
    // A shape whose element count overflows usize.
    let r = DeviceBuffer::<f32, Cpu>::zeros(&Cpu, &[1 << 40, 1 << 40]);
    assert!(matches!(r, Err(Error::Input { .. })), "{r:?}");
    // A memory bank for an absurd batch.
    let model = VisionModel::<f32, Cpu>::load(model_dir("mga_tiny"), &Cpu).unwrap();
    let r = model.new_memory(1 << 50);
    assert!(matches!(r, Err(Error::OutOfMemory { .. })), "{r:?}");
}

#[test]
fn wgpu_huge_allocation_is_an_error() {
    let Some(dev) = wgpu() else { return };
    // 4 TiB, 256 TiB, and 2^64 bytes (the byte count saturates); `full` (the
    // poison value tests use) and `zeros` alike.
    for shape in [&[1usize << 40][..], &[1 << 20, 1 << 20, 64], &[1 << 62]] {
        let r = DeviceBuffer::<f32, Wgpu>::zeros(&dev, shape);
        assert!(
            matches!(r, Err(Error::OutOfMemory { .. })),
            "{shape:?}: {r:?}"
        );
        let r = DeviceBuffer::<f32, Wgpu>::full(&dev, shape, f32::NAN);
        assert!(
            matches!(r, Err(Error::OutOfMemory { .. })),
            "{shape:?}: {r:?}"
        );
    }
    // The device still works afterwards.
    let x = DeviceBuffer::from_slice(&dev, &[1.0f32, 2.0], &[2]).unwrap();
    assert_eq!(x.to_vec().unwrap(), vec![1.0, 2.0]);
}

/// A model on one wgpu device and pixels on another: `DeviceMismatch`, not a
/// wgpu validation panic.
#[test]
fn two_wgpu_devices_mixed_at_run_time() {
    let (Some(a), Some(b)) = (wgpu(), wgpu()) else {
        return;
    };
    let model = VisionModel::<f32, Wgpu>::load(model_dir("siglip_tiny"), &a).unwrap();
    let px_b = DeviceBuffer::<f32, Wgpu>::zeros(&b, &model.config().pixel_shape(1)).unwrap();
    match model.forward(&px_b, None) {
        Err(Error::DeviceMismatch { tensor, .. }) => assert!(!tensor.is_empty()),
        other => panic!("expected DeviceMismatch, got {:?}", other.map(|_| ())),
    }
    // Pixels on the model's device work.
    let px_a = DeviceBuffer::<f32, Wgpu>::zeros(&a, &model.config().pixel_shape(1)).unwrap();
    model.forward(&px_a, None).unwrap();

    // A memory model on `a` with pixels on `b`, and a bank from another model.
    let mga = VisionModel::<f32, Wgpu>::load(model_dir("mga_tiny"), &a).unwrap();
    let mut bank = mga.new_memory(1).unwrap();
    let r = mga.forward(&px_b, Some(&mut bank));
    assert!(
        matches!(r, Err(Error::DeviceMismatch { .. })),
        "{:?}",
        r.map(|_| ())
    );
    let mga_b = VisionModel::<f32, Wgpu>::load(model_dir("mga_tiny"), &b).unwrap();
    let mut bank_b = mga_b.new_memory(1).unwrap();
    let r = mga.forward(&px_a, Some(&mut bank_b));
    assert!(matches!(r, Err(Error::Input { .. })), "{:?}", r.map(|_| ()));
    // Ops directly: a weight of one device, an input of the other.
    let w = DeviceBuffer::<f32, Wgpu>::zeros(&a, &[4, 4]).unwrap();
    let x = DeviceBuffer::<f32, Wgpu>::zeros(&b, &[2, 4]).unwrap();
    let r = tessera::ops::linear(&x, &w, None, tessera::ops::Activation::None, None);
    assert!(matches!(r, Err(Error::DeviceMismatch { .. })), "{r:?}");
}
