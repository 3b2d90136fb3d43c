//! The model against the golden cases of tests/data (transformers, float64), through
//! the library API, in f32 and bf16, on every device present.
//!
//! Bars (relative L2 per output tensor): f32 ≤ 1e-5, bf16 ≤ 2e-2.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::common::rel_l2;
use safetensors::{Dtype, SafeTensors};
use tessera::model::{ImagePatches, VisionModel};
use tessera::{bf16, DeviceBuffer, Element, Kernels};

fn data_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(case)
}

/// An F32 tensor from a safetensors file: (shape, values as f64).
struct Tensor {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn read_io(case: &str) -> HashMap<String, Tensor> {
    let path = data_dir(case).join("io.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            // F32 values; SigLIP 2's mask (I32) and spatial shapes (I64) as f64 too.
            let data = match view.dtype() {
                Dtype::F32 => view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                    .collect(),
                Dtype::I32 => view
                    .data()
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                    .collect(),
                Dtype::I64 => view
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                other => panic!("{name}: dtype {other:?}"),
            };
            (
                name,
                Tensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            )
        })
        .collect()
}

fn bar<T: Element>() -> f64 {
    crate::common::bar::<T>()
}

/// Run one case through `VisionModel<T, D>` and compare every output tensor;
/// returns (name, rel-L2) for the record.
fn check_case<T: Element, D: Kernels<T>>(dev: &D, case: &str) -> Vec<(String, f64)> {
    let io = read_io(case);
    let model = VisionModel::<T, D>::load(data_dir(case), dev)
        .unwrap_or_else(|e| panic!("{case}: load failed: {e}"));
    let cfg = model.config().clone();
    let px = &io["pixel_values"];
    // [S, B, C, I, I] for segment cases, [B, C, I, I] otherwise.
    let (segments, seg_shape) = match px.shape.len() {
        5 => (px.shape[0], px.shape[1..].to_vec()),
        4 => (1, px.shape.clone()),
        r => panic!("{case}: pixel_values of rank {r}"),
    };
    let batch = seg_shape[0];
    let seg_len: usize = seg_shape.iter().product();
    let mut memory = model.new_memory(batch).unwrap();
    let mut last = Vec::new();
    let mut pooled = Vec::new();
    for s in 0..segments {
        let host: Vec<T> = px.data[s * seg_len..(s + 1) * seg_len]
            .iter()
            .map(|&v| T::from_f32(v as f32))
            .collect();
        let pixels = DeviceBuffer::from_slice(dev, &host, &seg_shape).unwrap();
        let out = model
            .forward(&pixels, Some(&mut memory))
            .unwrap_or_else(|e| panic!("{case}: forward failed: {e}"));
        assert_eq!(
            out.last_hidden_state.shape(),
            &[batch, cfg.num_patches(), cfg.hidden_size]
        );
        last.extend(crate::common::to_f64(
            &out.last_hidden_state.to_vec().unwrap(),
        ));
        match (&out.pooler_output, cfg.vision_use_head) {
            (Some(p), true) => {
                assert_eq!(p.shape(), &[batch, cfg.hidden_size]);
                pooled.extend(crate::common::to_f64(&p.to_vec().unwrap()));
            }
            (None, false) => {}
            (p, head) => panic!("{case}: pooler_output {p:?} with vision_use_head {head}"),
        }
    }
    let mut got: Vec<(String, Vec<f64>)> = vec![("last_hidden_state".into(), last)];
    if cfg.vision_use_head {
        got.push(("pooler_output".into(), pooled));
    } else {
        assert!(!io.contains_key("pooler_output"));
    }
    for (l, state) in memory.layers() {
        got.push((
            format!("memory.layers.{l}"),
            crate::common::to_f64(&state.to_vec().unwrap()),
        ));
    }
    let expected_names = io.keys().filter(|k| *k != "pixel_values").count();
    assert_eq!(got.len(), expected_names, "{case}: outputs {:?}", io.keys());

    let mut errors = Vec::new();
    for (name, values) in got {
        let reference = io
            .get(&name)
            .unwrap_or_else(|| panic!("{case}: golden has no {name}"));
        let err = rel_l2(&values, &reference.data);
        eprintln!(
            "{case} [{} on {}] {name}: rel L2 {err:.3e}",
            T::DTYPE,
            dev.describe()
        );
        assert!(
            err <= bar::<T>(),
            "{case} [{}] {name}: relative L2 error {err:e} exceeds {:e}",
            T::DTYPE,
            bar::<T>()
        );
        errors.push((name, err));
    }
    errors
}

/// A SigLIP 2 case (padded `pixel_values`, `pixel_attention_mask`,
/// `spatial_shapes`) through `pack` + `forward_packed`, outputs compared in
/// transformers' padded layout (padding rows 0 on both sides).
fn check_siglip2_case<T: Element, D: Kernels<T>>(dev: &D, case: &str) {
    check_siglip2_io::<T, D>(dev, case, case)
}

/// [`check_siglip2_case`] with the model of `model_case` and the inputs and
/// outputs of `case`.
fn check_siglip2_io<T: Element, D: Kernels<T>>(dev: &D, model_case: &str, case: &str) {
    let io = read_io(case);
    let model = VisionModel::<T, D>::load(data_dir(model_case), dev)
        .unwrap_or_else(|e| panic!("{model_case}: load failed: {e}"));
    let px = &io["pixel_values"];
    let [b, pmax, cpp] = px.shape[..] else {
        panic!("{case}: pixel_values {:?}", px.shape)
    };
    let as_i64 = |t: &Tensor| t.data.iter().map(|&v| v as i64).collect::<Vec<_>>();
    let images = ImagePatches::from_padded(
        &px.data.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        [b, pmax, cpp],
        &as_i64(&io["pixel_attention_mask"]),
        &as_i64(&io["spatial_shapes"]),
    )
    .unwrap();
    let packed = model.pack(&images).unwrap();
    let real: usize = images.iter().map(|i| i.len()).sum();
    assert_eq!(packed.tokens(), real);
    let out = model
        .forward_packed(&packed)
        .unwrap_or_else(|e| panic!("{case}: forward_packed failed: {e}"));
    let d = model.config().hidden_size;
    assert_eq!(out.last_hidden_state.shape(), &[real, d]);
    let last = crate::common::to_f64(&out.last_hidden_state_padded(pmax).unwrap());
    let pooled = crate::common::to_f64(&out.pooler_output.as_ref().unwrap().to_vec().unwrap());
    for (name, values) in [("last_hidden_state", last), ("pooler_output", pooled)] {
        let err = rel_l2(&values, &io[name].data);
        eprintln!(
            "{case} [{} on {}] {name}: rel L2 {err:.3e}",
            T::DTYPE,
            dev.describe()
        );
        assert!(
            err <= bar::<T>(),
            "{case} [{}] {name}: relative L2 error {err:e} exceeds {:e}",
            T::DTYPE,
            bar::<T>()
        );
    }
}

macro_rules! golden_suite {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn siglip_tiny_f32() {
                let Some(dev) = $make else { return };
                check_case::<f32, _>(&dev, "siglip_tiny");
            }
            #[test]
            fn siglip_tiny_bf16() {
                let Some(dev) = $make else { return };
                check_case::<bf16, _>(&dev, "siglip_tiny");
            }
            /// The BF16 checkpoint loaded as f32 (exact upcast) must meet the f32 bar.
            #[test]
            fn siglip_tiny_bf16_checkpoint_as_f32() {
                let Some(dev) = $make else { return };
                check_case::<f32, _>(&dev, "siglip_tiny_bf16");
            }
            #[test]
            fn siglip_tiny_bf16_checkpoint_as_bf16() {
                let Some(dev) = $make else { return };
                check_case::<bf16, _>(&dev, "siglip_tiny_bf16");
            }
            #[test]
            fn siglip_tiny_nohead_f32() {
                let Some(dev) = $make else { return };
                check_case::<f32, _>(&dev, "siglip_tiny_nohead");
            }
            #[test]
            fn siglip_tiny_nohead_bf16() {
                let Some(dev) = $make else { return };
                check_case::<bf16, _>(&dev, "siglip_tiny_nohead");
            }
            /// Three segments with the memory carried; final memory states compared.
            #[test]
            fn mga_tiny_f32() {
                let Some(dev) = $make else { return };
                check_case::<f32, _>(&dev, "mga_tiny");
            }
            #[test]
            fn mga_tiny_bf16() {
                let Some(dev) = $make else { return };
                check_case::<bf16, _>(&dev, "mga_tiny");
            }
            /// Image 30, patch 8: 3×3 patches, the last 6 px of each side dropped;
            /// config.json as transformers 4.x saved it (defaults left out).
            #[test]
            fn real_remainder_f32() {
                let Some(dev) = $make else { return };
                check_case::<f32, _>(&dev, "real/real_remainder");
            }
            #[test]
            fn real_remainder_bf16() {
                let Some(dev) = $make else { return };
                check_case::<bf16, _>(&dev, "real/real_remainder");
            }
            /// A whole SiglipModel checkpoint (text tower, logit_scale/bias) with a
            /// SiglipConfig whose vision_config leaves defaults out.
            #[test]
            fn real_fullmodel_f32() {
                let Some(dev) = $make else { return };
                check_case::<f32, _>(&dev, "real/real_fullmodel");
            }
            #[test]
            fn real_fullmodel_bf16() {
                let Some(dev) = $make else { return };
                check_case::<bf16, _>(&dev, "real/real_fullmodel");
            }
            /// SigLIP 2: 4×4, 2×6 and 5×3 grids packed (the position grid kept,
            /// shrunk with antialiasing, stretched).
            #[test]
            fn siglip2_tiny_f32() {
                let Some(dev) = $make else { return };
                check_siglip2_case::<f32, _>(&dev, "siglip2/siglip2_tiny");
            }
            #[test]
            fn siglip2_tiny_bf16() {
                let Some(dev) = $make else { return };
                check_siglip2_case::<bf16, _>(&dev, "siglip2/siglip2_tiny");
            }
            #[test]
            fn siglip2_tiny_bf16_checkpoint_as_f32() {
                let Some(dev) = $make else { return };
                check_siglip2_case::<f32, _>(&dev, "siglip2/siglip2_tiny_bf16");
            }
            /// Grids one patch wide (5×1, 3×1) and tall (1×5): the position
            /// resize as the formula and PyTorch's CUDA kernel compute it (its CPU
            /// kernel copies row 0 there; scripts/make_siglip2_width1.py).
            #[test]
            fn siglip2_width1_f32() {
                let Some(dev) = $make else { return };
                check_siglip2_io::<f32, _>(&dev, "siglip2/siglip2_tiny", "siglip2/width1");
            }
            #[test]
            fn siglip2_width1_bf16() {
                let Some(dev) = $make else { return };
                check_siglip2_io::<bf16, _>(&dev, "siglip2/siglip2_tiny", "siglip2/width1");
            }
            #[test]
            fn siglip2_tiny_bf16_checkpoint_as_bf16() {
                let Some(dev) = $make else { return };
                check_siglip2_case::<bf16, _>(&dev, "siglip2/siglip2_tiny_bf16");
            }
        }
    };
}

golden_suite!(cpu, Some(tessera::Cpu));
golden_suite!(
    wgpu,
    crate::common::device_or_skip("wgpu", "TESSERA_REQUIRE_WGPU", tessera::Wgpu::new)
);
golden_suite!(
    cuda,
    crate::common::device_or_skip("cuda", "TESSERA_REQUIRE_CUDA", || tessera::Cuda::new(0))
);

/// A model with memory refuses to run without a bank, and with a bank of another
/// batch size; a bank from another model is refused too.
#[test]
fn memory_bank_is_checked() {
    let dev = tessera::Cpu;
    let model = VisionModel::<f32, _>::load(data_dir("mga_tiny"), &dev).unwrap();
    let pixels = DeviceBuffer::zeros(&dev, &model.config().pixel_shape(2)).unwrap();
    let err = model.forward(&pixels, None).err().expect("no bank");
    assert!(err.to_string().contains("memory"), "{err}");
    let mut wrong_batch = model.new_memory(3).unwrap();
    let err = model
        .forward(&pixels, Some(&mut wrong_batch))
        .err()
        .expect("wrong batch");
    assert!(err.to_string().contains("batch"), "{err}");
    let other = VisionModel::<f32, _>::load(data_dir("mga_tiny"), &dev).unwrap();
    let mut foreign = other.new_memory(2).unwrap();
    assert!(model.forward(&pixels, Some(&mut foreign)).is_err());
    let shapes: Vec<_> = model
        .new_memory(2)
        .unwrap()
        .layers()
        .map(|(l, s)| (l, s.shape().to_vec()))
        .collect();
    assert_eq!(shapes, vec![(0, vec![2, 4, 8, 64]), (1, vec![2, 4, 8, 64])]);
}

/// Wrong pixel shapes are errors naming `pixel_values` and both shapes.
#[test]
fn pixel_shape_is_checked() {
    let dev = tessera::Cpu;
    let model = VisionModel::<f32, _>::load(data_dir("siglip_tiny"), &dev).unwrap();
    let pixels = DeviceBuffer::zeros(&dev, &[1, 3, 16, 16]).unwrap();
    let msg = model.forward(&pixels, None).err().unwrap().to_string();
    assert!(
        msg.contains("pixel_values") && msg.contains("[1, 3, 16, 16]") && msg.contains("32"),
        "{msg}"
    );
}

/// `forward_into` checks its output buffers before any work: a wrong one is an
/// error naming it, and the memory bank is left as it was (it used to be
/// advanced by every memory layer before the last layer norm found the mismatch).
#[test]
fn forward_into_checks_out_before_the_bank_moves() {
    let dev = tessera::Cpu;
    let model = VisionModel::<f32, _>::load(data_dir("mga_tiny"), &dev).unwrap();
    let pixels = DeviceBuffer::full(&dev, &model.config().pixel_shape(2), 0.25f32).unwrap();
    let state = |bank: &tessera::model::MemoryBank<f32, tessera::Cpu>| -> Vec<Vec<f32>> {
        bank.layers().map(|(_, s)| s.to_vec().unwrap()).collect()
    };
    type Spoil = fn(&mut tessera::model::VisionOutput<f32, tessera::Cpu>);
    let spoils: [(&str, Spoil); 4] = [
        ("last_hidden_state", |o| {
            o.last_hidden_state = DeviceBuffer::zeros(&tessera::Cpu, &[1, 1, 1]).unwrap()
        }),
        ("last_hidden_state", |o| {
            o.last_hidden_state = DeviceBuffer::zeros(&tessera::Cpu, &[1, 4, 64]).unwrap()
        }),
        ("pooler_output", |o| o.pooler_output = None),
        ("pooler_output", |o| {
            o.pooler_output = Some(DeviceBuffer::zeros(&tessera::Cpu, &[2, 63]).unwrap())
        }),
    ];
    for (tensor, spoil) in spoils {
        let mut bank = model.new_memory(2).unwrap();
        let before = state(&bank);
        let mut out = model.new_output(2).unwrap();
        spoil(&mut out);
        let msg = model
            .forward_into(&pixels, Some(&mut bank), &mut out)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(tensor), "{msg}");
        assert_eq!(state(&bank), before, "{tensor}: the bank moved");
        // The right buffers run, and move the bank.
        let mut out = model.new_output(2).unwrap();
        model
            .forward_into(&pixels, Some(&mut bank), &mut out)
            .unwrap();
        assert_ne!(state(&bank), before);
    }
}

/// After the first call at a batch size, `forward_into` allocates nothing (the
/// workspace and the outputs are reused) and gives the same result every time;
/// `forward` allocates only its two outputs. On every device present.
fn workspace_is_reused<D: Kernels<f32>>(dev: &D) {
    for case in ["siglip_tiny", "mga_tiny"] {
        let model = VisionModel::<f32, D>::load(data_dir(case), dev).unwrap();
        let pixels = DeviceBuffer::full(dev, &model.config().pixel_shape(2), 0.25f32).unwrap();
        let mut out = model.new_output(2).unwrap();
        let mut bank = model.new_memory(2).unwrap();
        model
            .forward_into(&pixels, Some(&mut bank), &mut out)
            .unwrap();
        let first = out.last_hidden_state.to_vec().unwrap();
        let mut bank = model.new_memory(2).unwrap();
        let before = tessera::buffer::thread_allocations();
        model
            .forward_into(&pixels, Some(&mut bank), &mut out)
            .unwrap();
        assert_eq!(
            tessera::buffer::thread_allocations() - before,
            0,
            "{case}: forward_into allocated"
        );
        assert_eq!(
            out.last_hidden_state.to_vec().unwrap(),
            first,
            "{case}: not deterministic"
        );
        let mut bank = model.new_memory(2).unwrap();
        let before = tessera::buffer::thread_allocations();
        let again = model.forward(&pixels, Some(&mut bank)).unwrap();
        assert_eq!(
            tessera::buffer::thread_allocations() - before,
            2,
            "{case}: forward allocated"
        );
        assert_eq!(again.last_hidden_state.to_vec().unwrap(), first);
    }
}

#[test]
fn workspace_is_reused_on_cpu() {
    workspace_is_reused(&tessera::Cpu);
}

#[test]
fn workspace_is_reused_on_wgpu() {
    if let Some(dev) =
        crate::common::device_or_skip("wgpu", "TESSERA_REQUIRE_WGPU", tessera::Wgpu::new)
    {
        workspace_is_reused(&dev);
    }
}

#[test]
fn workspace_is_reused_on_cuda() {
    if let Some(dev) =
        crate::common::device_or_skip("cuda", "TESSERA_REQUIRE_CUDA", || tessera::Cuda::new(0))
    {
        workspace_is_reused(&dev);
    }
}

/// `VisionModel::random` walks the same tensors as a checkpoint: a 12-layer model
/// at a remainder image size runs, and its activations stay finite and non-trivial
/// through the depth (the scaling of the random weights).
#[test]
fn random_weights_run_through_the_depth() {
    let config = tessera::VisionConfig::from_json_str(
        r#"{"hidden_size": 96, "intermediate_size": 192, "num_hidden_layers": 12,
            "num_attention_heads": 4, "image_size": 60, "patch_size": 14}"#,
        "random.json",
    )
    .unwrap();
    let model = VisionModel::<f32, tessera::Cpu>::random(config, &tessera::Cpu, 7).unwrap();
    let pixels = DeviceBuffer::full(&tessera::Cpu, &model.config().pixel_shape(2), 0.5f32).unwrap();
    let out = model.forward(&pixels, None).unwrap();
    assert_eq!(out.last_hidden_state.shape(), &[2, 16, 96]);
    let v = out.pooler_output.unwrap().to_vec().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
    let rms = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    assert!(rms > 0.05 && rms < 50.0, "pooler rms {rms}");
}

/// The launch counter `tessera bench` reports: one wgpu dispatch per op of the
/// forward — patch embedding, 7 per layer (2 norms, qkv, attention, out_proj,
/// fc1, fc2), the post norm, 6 in the head (kv, attention, out_proj, norm, fc1,
/// fc2) — counted on the device, so a fused or split op changes it knowingly.
/// The CPU has no launches.
#[test]
fn launch_count_of_a_forward() {
    use tessera::Device;
    assert_eq!(tessera::Cpu.launch_count(), None);
    let Some(dev) =
        crate::common::device_or_skip("wgpu", "TESSERA_REQUIRE_WGPU", tessera::Wgpu::new)
    else {
        return;
    };
    let model = VisionModel::<f32, _>::load(data_dir("siglip_tiny"), &dev).unwrap();
    let pixels = DeviceBuffer::zeros(&dev, &model.config().pixel_shape(2)).unwrap();
    let before = dev.launch_count().unwrap();
    model.forward(&pixels, None).unwrap();
    let layers = model.config().num_hidden_layers as u64;
    assert_eq!(dev.launch_count().unwrap() - before, 1 + 7 * layers + 1 + 6);
}

/// The same buffers through `forward_into` call after call (new pixels written
/// in place with `copy_from_host`, a memory bank carried): every call's outputs
/// and bank match the CPU's. On CUDA this is the path of CUDA graphs — the
/// first call runs, the second is captured, the rest replay the graph — and a
/// replay must launch what a call does (the launch count per call stays the
/// same). The bf16 model's linears (K 256 and 1024 at 16 rows) take the split-K
/// GEMM on a GPU, so its scratch buffer is inside the captured graph.
///
/// The golden cases' first calls are their golden segments (one for
/// siglip_tiny, three with the bank carried for mga_tiny), and after them the
/// outputs and the bank of both the device and the CPU are compared with
/// transformers' too, so the test fails where both sides are wrong alike (on the
/// CPU it compares the CPU with itself otherwise).
fn repeated_forward_matches_cpu<D: Kernels<f32> + Kernels<bf16>>(dev: &D) {
    for case in ["siglip_tiny", "mga_tiny"] {
        let model = VisionModel::<f32, D>::load(data_dir(case), dev).unwrap();
        let cpu = VisionModel::<f32, _>::load(data_dir(case), &tessera::Cpu).unwrap();
        repeated_forward(case, &model, &cpu, 2, Some(&read_io(case)));
    }
    let config = crate::common::splitk_config();
    let model = VisionModel::<bf16, D>::random(config.clone(), dev, 5).unwrap();
    let cpu = VisionModel::<bf16, _>::random(config, &tessera::Cpu, 5).unwrap();
    repeated_forward("random bf16", &model, &cpu, 1, None);
}

/// The outputs of the golden segments so far, on the device and on the CPU.
#[derive(Default)]
struct Seen {
    last: [Vec<f64>; 2],
    pooled: [Vec<f64>; 2],
}

fn repeated_forward<T: Element, D: Kernels<T>>(
    case: &str,
    model: &VisionModel<T, D>,
    cpu: &VisionModel<T, tessera::Cpu>,
    batch: usize,
    golden: Option<&HashMap<String, Tensor>>,
) {
    let dev = model.device();
    let mut rng = crate::common::Rng::new("repeated_forward_matches_cpu");
    let shape = model.config().pixel_shape(batch);
    let n: usize = shape.iter().product();
    let mut pixels = DeviceBuffer::<T, D>::zeros(dev, &shape).unwrap();
    let mut out = model.new_output(batch).unwrap();
    let mut bank = model.new_memory(batch).unwrap();
    let mut cpu_bank = cpu.new_memory(batch).unwrap();
    let mut per_call = Vec::new();
    // The golden segments, each `n` pixels.
    let segments = golden.map_or(0, |io| io["pixel_values"].data.len() / n);
    let mut seen = Seen::default();
    for call in 0..5 {
        let host: Vec<T> = match golden {
            Some(io) if call < segments => io["pixel_values"].data[call * n..(call + 1) * n]
                .iter()
                .map(|&v| T::from_f32(v as f32))
                .collect(),
            _ => rng.vec(n, 1.0),
        };
        pixels.copy_from_host(&host).unwrap();
        let before = dev.launch_count();
        model
            .forward_into(&pixels, Some(&mut bank), &mut out)
            .unwrap();
        dev.synchronize().unwrap();
        if let (Some(a), Some(b)) = (before, dev.launch_count()) {
            per_call.push(b - a);
        }
        let want = cpu
            .forward(
                &DeviceBuffer::from_slice(&tessera::Cpu, &host, &shape).unwrap(),
                Some(&mut cpu_bank),
            )
            .unwrap();
        let what = format!("{case} call {call}");
        let close = |name: &str, got: Vec<T>, want: Vec<T>| {
            let err = rel_l2(&crate::common::to_f64(&got), &crate::common::to_f64(&want));
            let bar = crate::common::bar::<T>();
            assert!(
                err <= bar,
                "{what}: {name} relative L2 {err:e} (bar {bar:e})"
            );
        };
        close(
            "last_hidden_state",
            out.last_hidden_state.to_vec().unwrap(),
            want.last_hidden_state.to_vec().unwrap(),
        );
        match (&out.pooler_output, &want.pooler_output) {
            (Some(g), Some(w)) => close("pooler_output", g.to_vec().unwrap(), w.to_vec().unwrap()),
            (None, None) => assert!(!model.config().vision_use_head, "{what}: no pooler_output"),
            (g, w) => panic!(
                "{what}: pooler_output on the device {}, on the CPU {}",
                if g.is_some() { "present" } else { "missing" },
                if w.is_some() { "present" } else { "missing" },
            ),
        }
        assert_eq!(
            bank.layers().count(),
            cpu_bank.layers().count(),
            "{what}: memory layers"
        );
        for ((l, g), (_, w)) in bank.layers().zip(cpu_bank.layers()) {
            close(
                &format!("memory of layer {l}"),
                g.to_vec().unwrap(),
                w.to_vec().unwrap(),
            );
        }
        if let Some(io) = golden.filter(|_| call < segments) {
            let f = |v: Vec<T>| crate::common::to_f64(&v);
            let outputs = [
                (
                    out.last_hidden_state.to_vec().unwrap(),
                    out.pooler_output.as_ref().map(|p| p.to_vec().unwrap()),
                ),
                (
                    want.last_hidden_state.to_vec().unwrap(),
                    want.pooler_output.as_ref().map(|p| p.to_vec().unwrap()),
                ),
            ];
            for (side, (last, pooled)) in outputs.into_iter().enumerate() {
                seen.last[side].extend(f(last));
                seen.pooled[side].extend(pooled.map(f).unwrap_or_default());
            }
            if call + 1 == segments {
                check_golden(&what, io, &seen, (&bank, &cpu_bank));
            }
        }
    }
    if let Some(first) = per_call.first() {
        assert!(
            per_call.iter().all(|c| c == first) && *first > 0,
            "{case}: kernel launches per call {per_call:?}"
        );
    }
}

/// After the golden segments: the outputs and the bank of the device (side 0)
/// and of the CPU (side 1) within the bar of transformers'.
fn check_golden<T: Element, D: Kernels<T>>(
    what: &str,
    io: &HashMap<String, Tensor>,
    seen: &Seen,
    banks: (
        &tessera::model::MemoryBank<T, D>,
        &tessera::model::MemoryBank<T, tessera::Cpu>,
    ),
) {
    let bar = crate::common::bar::<T>();
    let check = |name: &str, side: usize, got: &[f64]| {
        let want = &io
            .get(name)
            .unwrap_or_else(|| panic!("{what}: golden has no {name}"))
            .data;
        let err = rel_l2(got, want);
        let on = ["the device", "the CPU"][side];
        assert!(
            err <= bar,
            "{what} on {on}: {name} against the golden outputs, relative L2 {err:e} (bar {bar:e})"
        );
    };
    let mut names = 1;
    for side in 0..2 {
        check("last_hidden_state", side, &seen.last[side]);
        if io.contains_key("pooler_output") {
            check("pooler_output", side, &seen.pooled[side]);
        }
    }
    if io.contains_key("pooler_output") {
        names += 1;
    }
    let (device_bank, cpu_bank) = banks;
    for (l, state) in device_bank.layers() {
        check(
            &format!("memory.layers.{l}"),
            0,
            &crate::common::to_f64(&state.to_vec().unwrap()),
        );
        names += 1;
    }
    for (l, state) in cpu_bank.layers() {
        check(
            &format!("memory.layers.{l}"),
            1,
            &crate::common::to_f64(&state.to_vec().unwrap()),
        );
    }
    // Every golden output was compared.
    assert_eq!(
        names,
        io.len() - 1,
        "{what}: golden outputs {:?}",
        io.keys()
    );
}

#[test]
fn repeated_forward_matches_cpu_on_cpu() {
    repeated_forward_matches_cpu(&tessera::Cpu);
}

#[test]
fn repeated_forward_matches_cpu_on_wgpu() {
    if let Some(dev) =
        crate::common::device_or_skip("wgpu", "TESSERA_REQUIRE_WGPU", tessera::Wgpu::new)
    {
        repeated_forward_matches_cpu(&dev);
    }
}

#[test]
fn repeated_forward_matches_cpu_on_cuda() {
    if let Some(dev) =
        crate::common::device_or_skip("cuda", "TESSERA_REQUIRE_CUDA", || tessera::Cuda::new(0))
    {
        repeated_forward_matches_cpu(&dev);
    }
}
