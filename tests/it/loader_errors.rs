//! Loader and config errors: each is an `Err` whose message names the file and the
//! tensor or key. Broken fixtures are written from siglip_tiny at test time.

use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use tessera::model::{Architecture, VisionConfig, VisionModel};
use tessera::{bf16, Cpu, DeviceBuffer};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/siglip_tiny")
}

/// (name, dtype, shape, bytes) of every tensor in siglip_tiny's checkpoint.
type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

fn tensors() -> Vec<Entry> {
    let bytes = std::fs::read(golden_dir().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<Entry> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn config_text() -> String {
    std::fs::read_to_string(golden_dir().join("config.json")).unwrap()
}

/// Write a model folder `name` with `config` and `entries`; returns its path.
fn fixture(name: &str, config: &str, entries: &[Entry]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("loader_errors")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    let views: Vec<(String, TensorView<'_>)> = entries
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    match VisionModel::<f32, Cpu>::load(dir, &Cpu) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "`{n}` not in: {msg}");
    }
}

#[test]
fn missing_tensor_is_named() {
    let mut t = tensors();
    t.retain(|e| e.0 != "vision_model.encoder.layers.1.mlp.fc2.bias");
    let dir = fixture("missing", &config_text(), &t);
    let msg = load_err(&dir);
    assert_mentions(
        &msg,
        &[
            "model.safetensors",
            "encoder.layers.1.mlp.fc2.bias",
            "missing",
        ],
    );
}

#[test]
fn wrong_shape_names_both_shapes() {
    let mut t = tensors();
    let e = t
        .iter_mut()
        .find(|e| e.0 == "vision_model.encoder.layers.0.self_attn.q_proj.weight")
        .unwrap();
    e.2 = vec![32, 128];
    let dir = fixture("shape", &config_text(), &t);
    let msg = load_err(&dir);
    assert_mentions(
        &msg,
        &[
            "model.safetensors",
            "self_attn.q_proj.weight",
            "[32, 128]",
            "[64, 64]",
        ],
    );
}

#[test]
fn unsupported_dtype_is_named() {
    let mut t = tensors();
    let e = t
        .iter_mut()
        .find(|e| e.0 == "vision_model.post_layernorm.weight")
        .unwrap();
    e.1 = Dtype::I32;
    let dir = fixture("dtype", &config_text(), &t);
    let msg = load_err(&dir);
    assert_mentions(&msg, &["model.safetensors", "post_layernorm.weight", "I32"]);
}

#[test]
fn head_tensors_required_only_with_head() {
    let mut t = tensors();
    t.retain(|e| !e.0.contains(".head."));
    let dir = fixture("nohead_missing", &config_text(), &t);
    let msg = load_err(&dir);
    assert_mentions(&msg, &["model.safetensors", "head."]);
    let cfg = config_text().replacen('{', "{\"vision_use_head\": false,", 1);
    let dir = fixture("nohead_ok", &cfg, &t);
    let model = VisionModel::<f32, Cpu>::load(&dir, &Cpu).unwrap();
    assert!(!model.config().vision_use_head);
}

/// f16 bits → f32, written out on the bits (independently of the `half` crate
/// the loader decodes with): every f16 is exact in f32.
fn f16_bits_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = i32::from((h >> 10) & 0x1F);
    let man = u32::from(h & 0x3FF);
    let magnitude = match exp {
        0 => man as f32 * 2f32.powi(-24), // zero and subnormals: man·2^-24, exact
        31 if man == 0 => f32::INFINITY,
        31 => f32::NAN,
        e => f32::from_bits((((e - 15 + 127) as u32) << 23) | (man << 13)),
    };
    f32::from_bits(magnitude.to_bits() | sign)
}

/// The F32 tensors of `entries` for which `dtype_of` gives F16 or BF16, stored in
/// that type (rounded to nearest by the `half` crate); returns those entries, and
/// F32 entries of the values they decode to (decoded on the bits here: f16 by
/// [`f16_bits_to_f32`], bf16 as the high half of an f32).
fn stored_as(
    entries: &[Entry],
    dtype_of: impl Fn(&str) -> Option<Dtype>,
) -> (Vec<Entry>, Vec<Entry>) {
    let mut stored = Vec::new();
    let mut decoded = Vec::new();
    for e in entries {
        assert_eq!(e.1, Dtype::F32, "{}", e.0);
        let Some(dtype) = dtype_of(&e.0) else {
            stored.push(e.clone());
            decoded.push(e.clone());
            continue;
        };
        let values =
            e.3.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        let bits: Vec<u16> = match dtype {
            Dtype::F16 => values.map(|v| half::f16::from_f32(v).to_bits()).collect(),
            Dtype::BF16 => values.map(|v| bf16::from_f32(v).to_bits()).collect(),
            other => panic!("{other:?}"),
        };
        let back: Vec<u8> = bits
            .iter()
            .flat_map(|&b| match dtype {
                Dtype::F16 => f16_bits_to_f32(b).to_le_bytes(),
                _ => f32::from_bits(u32::from(b) << 16).to_le_bytes(),
            })
            .collect();
        let bytes = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        stored.push((e.0.clone(), dtype, e.2.clone(), bytes));
        decoded.push((e.0.clone(), Dtype::F32, e.2.clone(), back));
    }
    (stored, decoded)
}

/// siglip_tiny's golden pixels `[2, 3, 32, 32]` and outputs (transformers, F32
/// weights): (pixels, last_hidden_state, pooler_output).
fn golden_io() -> (Vec<f32>, Vec<f64>, Vec<f64>) {
    let bytes = std::fs::read(golden_dir().join("io.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let read = |name: &str| -> Vec<f32> {
        let view = st.tensor(name).unwrap();
        assert_eq!(view.dtype(), Dtype::F32);
        view.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let wide = |v: Vec<f32>| v.into_iter().map(f64::from).collect();
    (
        read("pixel_values"),
        wide(read("last_hidden_state")),
        wide(read("pooler_output")),
    )
}

/// (last_hidden_state, pooler_output) of the f32 model in `dir` on `pixels`.
fn forward_both(dir: &Path, pixels: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let model = VisionModel::<f32, Cpu>::load(dir, &Cpu).unwrap();
    let px = DeviceBuffer::from_slice(&Cpu, pixels, &[2, 3, 32, 32]).unwrap();
    let out = model.forward(&px, None).unwrap();
    (
        out.last_hidden_state.to_vec().unwrap(),
        out.pooler_output.unwrap().to_vec().unwrap(),
    )
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Names without the `vision_model.` prefix (transformers 5.x), F16 and BF16
/// storage, and a full SiglipConfig with `vision_config` all load; the F16 and
/// BF16 tensors hold their stored values: the model's outputs are bit for bit
/// those of an F32 checkpoint of the values the test decoded from the same bits.
#[test]
fn accepted_variants_load() {
    // Layer 0 in F16 (the values here are small; precision is f16's), layer 1 in BF16.
    let dtype_of = |name: &str| {
        if name.contains("layers.0.") {
            Some(Dtype::F16)
        } else if name.contains("layers.1.") {
            Some(Dtype::BF16)
        } else {
            None
        }
    };
    let (mut t, decoded) = stored_as(&tensors(), dtype_of);
    assert!(t.iter().any(|e| e.1 == Dtype::F16) && t.iter().any(|e| e.1 == Dtype::BF16));
    for e in &mut t {
        e.0 = e.0.trim_start_matches("vision_model.").to_string();
    }
    let full = format!(
        "{{\"model_type\": \"siglip\", \"text_config\": {{\"hidden_size\": 32}}, \"vision_config\": {}}}",
        config_text()
    );
    let dir = fixture("variants", &full, &t);
    let model = VisionModel::<f32, Cpu>::load(&dir, &Cpu).unwrap();
    assert_eq!(model.config().hidden_size, 64);
    let model = VisionModel::<bf16, Cpu>::load(&dir, &Cpu).unwrap();
    assert_eq!(model.config().num_patches(), 16);
    let (pixels, ..) = golden_io();
    let (last, pooled) = forward_both(&dir, &pixels);
    let (want_last, want_pooled) = forward_both(
        &fixture("variants_decoded", &config_text(), &decoded),
        &pixels,
    );
    assert!(
        bits(&last) == bits(&want_last),
        "last_hidden_state of the F16/BF16 checkpoint"
    );
    assert!(
        bits(&pooled) == bits(&want_pooled),
        "pooler_output of the F16/BF16 checkpoint"
    );
}

/// A checkpoint stored wholly in F16, and one wholly in BF16 (each made here from
/// siglip_tiny's F32 tensors, rounded to nearest), load as f32 models that give
/// (1) bit for bit the outputs of an F32 checkpoint of the values the test decodes
/// from the same bits (the loader's decoding, exactly), and (2) outputs close to
/// transformers' for the F32 weights. Rounding moves every weight by at most u
/// relative (u: f16 2^-11, bf16 2^-8), independently from weight to weight, and
/// the outputs move by about as much relative (measured 1.1u to 1.3u, the
/// deterministic values of this checkpoint and these pixels), so the bar is 3u
/// (f16 1.5e-3, bf16 1.2e-2); and at least 0.01u, so a checkpoint whose rounding
/// was lost (the F32 one, 1e-6 from the golden outputs) fails too.
#[test]
fn f16_and_bf16_checkpoints_hold_their_values() {
    let (pixels, golden_last, golden_pooled) = golden_io();
    for (dtype, u) in [(Dtype::F16, 2f64.powi(-11)), (Dtype::BF16, 2f64.powi(-8))] {
        let (stored, decoded) = stored_as(&tensors(), |_| Some(dtype));
        assert!(stored.iter().all(|e| e.1 == dtype));
        let name = format!("{dtype:?}").to_lowercase();
        let (last, pooled) = forward_both(
            &fixture(&format!("all_{name}"), &config_text(), &stored),
            &pixels,
        );
        let (want_last, want_pooled) = forward_both(
            &fixture(&format!("all_{name}_decoded"), &config_text(), &decoded),
            &pixels,
        );
        assert!(
            bits(&last) == bits(&want_last),
            "{dtype:?}: last_hidden_state"
        );
        assert!(
            bits(&pooled) == bits(&want_pooled),
            "{dtype:?}: pooler_output"
        );
        for (what, got, golden) in [
            ("last_hidden_state", &last, &golden_last),
            ("pooler_output", &pooled, &golden_pooled),
        ] {
            let got: Vec<f64> = got.iter().map(|&v| f64::from(v)).collect();
            let err = crate::common::rel_l2(&got, golden);
            eprintln!("{dtype:?} checkpoint {what}: rel L2 {err:.3e} (u = {u:.3e})");
            assert!(
                err <= 3.0 * u && err >= 0.01 * u,
                "{dtype:?} checkpoint {what}: relative L2 error {err:e} against the F32 golden outputs, outside [{:e}, {:e}]",
                0.01 * u,
                3.0 * u
            );
        }
    }
}

/// Unprefixed names give exactly the same model as prefixed ones.
#[test]
fn unprefixed_names_give_the_same_outputs() {
    let mut t = tensors();
    for e in &mut t {
        e.0 = e.0.trim_start_matches("vision_model.").to_string();
    }
    let dir = fixture("unprefixed", &config_text(), &t);
    let a = VisionModel::<f32, Cpu>::load(&dir, &Cpu).unwrap();
    let b = VisionModel::<f32, Cpu>::load(golden_dir(), &Cpu).unwrap();
    let px: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| ((i % 97) as f32 / 48.0) - 1.0)
        .collect();
    let pixels = DeviceBuffer::from_slice(&Cpu, &px, &[2, 3, 32, 32]).unwrap();
    let oa = a.forward(&pixels, None).unwrap();
    let ob = b.forward(&pixels, None).unwrap();
    assert_eq!(
        oa.last_hidden_state.to_vec().unwrap(),
        ob.last_hidden_state.to_vec().unwrap()
    );
}

#[test]
fn corrupt_or_missing_files_are_named() {
    let dir = fixture("corrupt", &config_text(), &tensors());
    std::fs::write(dir.join("model.safetensors"), b"definitely not safetensors").unwrap();
    assert_mentions(&load_err(&dir), &["model.safetensors"]);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert_mentions(&load_err(&dir), &["model.safetensors"]);
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert_mentions(&load_err(&dir), &["config.json"]);
    assert_mentions(&load_err(Path::new("no/such/model")), &["no/such/model"]);
}

/// Replace `"key": value` in the golden config (or add it when absent).
fn with_key(key: &str, value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&config_text()).unwrap();
    v[key] = serde_json::from_str(value).unwrap();
    v.to_string()
}

fn without_key(key: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&config_text()).unwrap();
    v.as_object_mut().unwrap().remove(key);
    v.to_string()
}

fn config_err(name: &str, text: &str) -> String {
    let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("loader_errors")
        .join(format!("{name}.json"));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, text).unwrap();
    match VisionConfig::from_file(&file) {
        Ok(c) => panic!("{name}: accepted {c:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("{name}.json")), "{msg}");
            msg
        }
    }
}

#[test]
fn bad_config_values_name_file_and_key() {
    let msg = config_err("heads", &with_key("num_attention_heads", "5"));
    assert_mentions(&msg, &["num_attention_heads", "64"]);
    let msg = config_err("patch", &with_key("patch_size", "33"));
    assert_mentions(&msg, &["patch_size", "32"]);
    let msg = config_err("act", &with_key("hidden_act", "\"gelu\""));
    assert_mentions(&msg, &["hidden_act", "gelu_pytorch_tanh"]);
    let msg = config_err("slots", &with_key("memory_experts", "4"));
    assert_mentions(&msg, &["memory_slots"]);
    let text = {
        let mut v: serde_json::Value =
            serde_json::from_str(&with_key("memory_experts", "4")).unwrap();
        v["memory_slots"] = 8.into();
        v["memory_layers"] = serde_json::json!([0, 2]);
        v.to_string()
    };
    let msg = config_err("mem_layers", &text);
    assert_mentions(&msg, &["memory_layers", "2"]);
    let msg = config_err("type", &with_key("image_size", "\"big\""));
    assert_mentions(&msg, &["image_size"]);
    let msg = config_err("json", "{ not json");
    assert_mentions(&msg, &["JSON"]);
    let msg = config_err("zero", &with_key("hidden_size", "0"));
    assert_mentions(&msg, &["hidden_size"]);
    let nested = format!("{{\"vision_config\": {}}}", with_key("patch_size", "0"));
    let msg = config_err("nested", &nested);
    assert_mentions(&msg, &["vision_config.patch_size"]);
    let msg = config_err("clip", r#"{"model_type": "clip_vision_model"}"#);
    assert_mentions(&msg, &["model_type", "clip_vision_model"]);
}

/// A config built in code is checked as a file's is: `VisionModel::random` of a
/// changed default refuses it with the field named (it used to divide by zero on
/// a zero patch).
#[test]
fn random_model_checks_its_config() {
    type Change = fn(&mut VisionConfig);
    let cases: [(&str, Change); 9] = [
        ("patch_size", |c| c.patch_size = 0),
        ("num_attention_heads", |c| c.num_attention_heads = 0),
        ("num_attention_heads", |c| c.num_attention_heads = 5),
        ("hidden_size", |c| c.hidden_size = usize::MAX / 2),
        ("patch_size", |c| c.patch_size = c.image_size + 1),
        ("layer_norm_eps", |c| c.layer_norm_eps = f32::NAN),
        ("memory_slots", |c| {
            c.memory_experts = 2;
            c.memory_layers = vec![0];
        }),
        ("memory_layers", |c| {
            (c.memory_experts, c.memory_slots) = (2, 4);
            c.memory_layers = vec![1, 0];
        }),
        ("memory_layers", |c| {
            (c.memory_experts, c.memory_slots) = (2, 4);
            c.memory_layers = vec![c.num_hidden_layers];
        }),
    ];
    for (field, change) in cases {
        let mut c = VisionConfig::default();
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers) = (64, 128, 2);
        (c.num_attention_heads, c.image_size, c.patch_size) = (4, 32, 16);
        VisionModel::<f32, Cpu>::random(c.clone(), &Cpu, 1).expect("the unchanged config runs");
        change(&mut c);
        match VisionModel::<f32, Cpu>::random(c.clone(), &Cpu, 1) {
            Ok(_) => panic!("{field}: accepted {c:?}"),
            Err(e) => assert_mentions(&e.to_string(), &[&format!("VisionConfig.{field}")]),
        }
    }
}

/// Absent keys take transformers' SiglipVisionConfig defaults, and say so.
#[test]
fn absent_keys_take_transformers_defaults() {
    let c =
        VisionConfig::from_json_str(r#"{"model_type": "siglip_vision_model"}"#, "c.json").unwrap();
    let d = VisionConfig::default();
    assert_eq!(
        (
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers,
            c.num_attention_heads
        ),
        (768, 3072, 12, 12)
    );
    assert_eq!((c.num_channels, c.image_size, c.patch_size), (3, 224, 16));
    assert_eq!((c.layer_norm_eps, c.vision_use_head), (1e-6, true));
    assert_eq!(d.hidden_size, c.hidden_size);
    assert_eq!(c.defaulted().len(), 9, "{:?}", c.defaulted());
    // A SiglipConfig with no vision_config at all is SigLIP-base/16.
    let c = VisionConfig::from_json_str(r#"{"model_type": "siglip"}"#, "c.json").unwrap();
    assert_eq!((c.hidden_size, c.image_size, c.patch_size), (768, 224, 16));
    // so400m/14 at 384: 27 × 27 patches over 378 px.
    let c = VisionConfig::from_json_str(
        r#"{"vision_config": {"hidden_size": 1152, "image_size": 384, "intermediate_size": 4304,
            "model_type": "siglip_vision_model", "num_attention_heads": 16,
            "num_hidden_layers": 27, "patch_size": 14}}"#,
        "c.json",
    )
    .unwrap();
    assert_eq!(c.num_patches(), 729);
    assert_eq!(
        c.defaulted(),
        ["num_channels", "layer_norm_eps", "vision_use_head"]
    );
}

/// A default that disagrees with the checkpoint is an error naming the key (as
/// config.json spells it), the default it took and the tensor's shape.
#[test]
fn wrong_default_names_key_default_and_shape() {
    let dir = fixture("default_hidden", &without_key("hidden_size"), &tensors());
    let msg = load_err(&dir);
    assert_mentions(
        &msg,
        &[
            "embeddings.patch_embedding.weight",
            "[64, 3, 8, 8]",
            "`hidden_size`",
            "default 768",
        ],
    );
    let nested = format!(
        "{{\"model_type\": \"siglip\", \"vision_config\": {}}}",
        without_key("patch_size")
    );
    let dir = fixture("default_patch", &nested, &tensors());
    let msg = load_err(&dir);
    assert_mentions(
        &msg,
        &["[64, 3, 8, 8]", "`vision_config.patch_size`", "default 16"],
    );
    let dir = fixture(
        "default_layers",
        &without_key("num_hidden_layers"),
        &tensors(),
    );
    let msg = load_err(&dir);
    assert_mentions(
        &msg,
        &[
            "encoder.layers.2",
            "missing",
            "`num_hidden_layers`",
            "default 12",
        ],
    );
}

#[test]
fn config_defaults() {
    let mut v: serde_json::Value = serde_json::from_str(&config_text()).unwrap();
    for k in ["num_channels", "layer_norm_eps", "hidden_act"] {
        v.as_object_mut().unwrap().remove(k);
    }
    v["memory_experts"] = 2.into();
    v["memory_slots"] = 3.into();
    let c = VisionConfig::from_json_str(&v.to_string(), "config.json").unwrap();
    assert_eq!(c.num_channels, 3);
    assert_eq!(c.layer_norm_eps, 1e-6);
    assert!(c.vision_use_head);
    assert_eq!(c.memory_layers, vec![0, 1], "every layer by default");
}

/// Write each group of `shards` as one safetensors file, plus
/// model.safetensors.index.json mapping every name to its file, into a fresh folder.
fn sharded_fixture(name: &str, shards: &[Vec<Entry>]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("loader_errors")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config_text()).unwrap();
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, shards.len());
        let views: Vec<(String, TensorView<'_>)> = shard
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        std::fs::write(
            dir.join(&file),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
        for (n, ..) in shard {
            weight_map.insert(n.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    dir
}

/// siglip_tiny's tensors in two shards (first half, second half).
fn halves() -> Vec<Vec<Entry>> {
    let t = tensors();
    let half = t.len().div_ceil(2);
    vec![t[..half].to_vec(), t[half..].to_vec()]
}

fn forward_last(dir: &Path) -> Vec<f32> {
    let model = VisionModel::<f32, Cpu>::load(dir, &Cpu).unwrap();
    let px: Vec<f32> = (0..3 * 32 * 32)
        .map(|i| ((i % 89) as f32 / 44.0) - 1.0)
        .collect();
    let pixels = DeviceBuffer::from_slice(&Cpu, &px, &[1, 3, 32, 32]).unwrap();
    model
        .forward(&pixels, None)
        .unwrap()
        .last_hidden_state
        .to_vec()
        .unwrap()
}

/// A sharded checkpoint loads like the single file it was cut from; a shard that
/// holds only another tower's tensors is never opened.
#[test]
fn sharded_checkpoint_loads_like_one_file() {
    let text: Vec<Entry> = vec![
        ("logit_scale".into(), Dtype::F32, vec![1], vec![0; 4]),
        (
            "text_model.embeddings.token_embedding.weight".into(),
            Dtype::F32,
            vec![2, 2],
            vec![0; 16],
        ),
    ];
    let mut shards = vec![text];
    shards.extend(halves());
    let dir = sharded_fixture("sharded", &shards);
    let want = forward_last(&golden_dir());
    assert_eq!(forward_last(&dir), want);
    std::fs::remove_file(dir.join("model-00001-of-00003.safetensors")).unwrap();
    assert_eq!(forward_last(&dir), want);
}

#[test]
fn sharded_checkpoint_errors_name_shard_and_tensor() {
    // A missing shard: the error names the index, a tensor mapped to it and the file.
    let dir = sharded_fixture("shard_missing", &halves());
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    assert_mentions(
        &load_err(&dir),
        &[
            "model.safetensors.index.json",
            "vision_model.",
            "model-00002-of-00002.safetensors",
            "does not exist",
        ],
    );
    // A tensor mapped to a shard that does not hold it.
    let dir = sharded_fixture("shard_wrong", &halves());
    let path = dir.join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    index["weight_map"]["vision_model.post_layernorm.bias"] =
        "model-00001-of-00002.safetensors".into();
    assert!(halves()[1]
        .iter()
        .any(|e| e.0 == "vision_model.post_layernorm.bias"));
    std::fs::write(&path, index.to_string()).unwrap();
    assert_mentions(
        &load_err(&dir),
        &[
            "vision_model.post_layernorm.bias",
            "model-00001-of-00002.safetensors",
            "does not hold it",
        ],
    );
    // A shard outside the folder is refused.
    index["weight_map"]["vision_model.post_layernorm.bias"] =
        "../siglip_tiny/model.safetensors".into();
    std::fs::write(&path, index.to_string()).unwrap();
    assert_mentions(&load_err(&dir), &["post_layernorm.bias", "not a file name"]);
    // No weight_map.
    std::fs::write(&path, "{\"metadata\": {}}").unwrap();
    assert_mentions(
        &load_err(&dir),
        &["model.safetensors.index.json", "weight_map"],
    );
    // Neither weights file: both names in the message.
    std::fs::remove_file(&path).unwrap();
    assert_mentions(
        &load_err(&dir),
        &["model.safetensors", "model.safetensors.index.json"],
    );
}

// ---------------------------------------------------------------------------
// SigLIP 2 (NaFlex) configs and checkpoints.

fn siglip2_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/siglip2/siglip2_tiny")
}

fn siglip2_config() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(siglip2_dir().join("config.json")).unwrap())
        .unwrap()
}

/// A model folder `name` holding siglip2_tiny's checkpoint, copied unchanged,
/// and `config` as config.json.
fn siglip2_fixture(name: &str, config: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("loader_errors")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        siglip2_dir().join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    dir
}

/// A bare `siglip2_vision_model` takes transformers' Siglip2VisionConfig
/// defaults: base/16 with a 16 × 16 position grid (num_patches 256).
#[test]
fn siglip2_absent_keys_take_siglip2_defaults() {
    let c =
        VisionConfig::from_json_str(r#"{"model_type": "siglip2_vision_model"}"#, "c.json").unwrap();
    assert_eq!(c.architecture, Architecture::Siglip2);
    assert_eq!(
        (
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers,
            c.num_attention_heads
        ),
        (768, 3072, 12, 12)
    );
    assert_eq!((c.num_channels, c.patch_size), (3, 16));
    assert_eq!((c.num_patches(), c.position_grid()), (256, 16));
    assert_eq!(c.image_size, 16 * 16, "G·P");
    assert_eq!(c.patch_values(), 3 * 16 * 16);
    assert_eq!((c.layer_norm_eps, c.vision_use_head), (1e-6, true));
    assert_eq!(c.memory_experts, 0);
    let mut defaulted = c.defaulted().to_vec();
    defaulted.sort_unstable();
    let mut want = vec![
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_channels",
        "patch_size",
        "num_patches",
        "layer_norm_eps",
        "vision_use_head",
    ];
    want.sort_unstable();
    assert_eq!(defaulted, want, "SigLIP 2 has num_patches, not image_size");
    let taken = c.defaults_taken().unwrap();
    assert!(taken.contains("`num_patches` = 256"), "{taken}");

    // A SigLIP config of the same text is still SigLIP (image_size, not num_patches).
    let c =
        VisionConfig::from_json_str(r#"{"model_type": "siglip_vision_model"}"#, "c.json").unwrap();
    assert_eq!(c.architecture, Architecture::Siglip);
    assert!(!c.defaulted().contains(&"num_patches"));
}

/// Sizes that would make huge images are refused before anything is sized from
/// them, naming the key the file has (SigLIP 2's image side is derived).
#[test]
fn image_sizes_are_bounded_and_named() {
    let msg = config_err("huge_image", &with_key("image_size", "16384"));
    assert_mentions(&msg, &["image_size", "4096"]);
    let mut v = siglip2_config();
    v["patch_size"] = 0.into();
    let msg = config_err("siglip2_patch0", &v.to_string());
    assert_mentions(&msg, &["patch_size"]);
    assert!(!msg.contains("image_size"), "{msg}");
    let mut v = siglip2_config();
    v["num_patches"] = 256.into();
    v["patch_size"] = 2048.into();
    let msg = config_err("siglip2_wide", &v.to_string());
    assert_mentions(&msg, &["num_patches", "2048"]);
    assert!(!msg.contains("`image_size`"), "{msg}");
}

/// The tiny golden config reads as SigLIP 2 with its own grid; `image_size`
/// in a SigLIP 2 config does not change the grid.
#[test]
fn siglip2_tower_config_reads_num_patches() {
    let c = VisionConfig::from_file(siglip2_dir().join("config.json")).unwrap();
    assert_eq!(c.architecture, Architecture::Siglip2);
    assert_eq!((c.num_patches(), c.position_grid()), (16, 4));
    assert_eq!((c.patch_size, c.patch_values(), c.image_size), (4, 48, 16));
    assert!(c.defaulted().is_empty(), "{:?}", c.defaulted());
    let mut v = siglip2_config();
    v["num_patches"] = 49.into();
    v["image_size"] = 224.into();
    let c = VisionConfig::from_json_str(&v.to_string(), "c.json").unwrap();
    assert_eq!(
        (c.num_patches(), c.position_grid(), c.image_size),
        (49, 7, 28)
    );
}

/// A whole Siglip2Config: the tower is `vision_config`, whether or not it names
/// its own model_type; keys it leaves out are named with the prefix.
#[test]
fn siglip2_whole_model_config() {
    let tower = siglip2_config();
    let mut bare = tower.clone();
    bare.as_object_mut().unwrap().remove("model_type");
    for (what, vision) in [("with model_type", &tower), ("without", &bare)] {
        let text = serde_json::json!({
            "model_type": "siglip2",
            "text_config": {"hidden_size": 32, "model_type": "siglip2_text_model"},
            "vision_config": vision,
        })
        .to_string();
        let c = VisionConfig::from_json_str(&text, "c.json").unwrap();
        assert_eq!(c.architecture, Architecture::Siglip2, "{what}");
        assert_eq!(
            (
                c.hidden_size,
                c.num_patches(),
                c.position_grid(),
                c.patch_size
            ),
            (64, 16, 4, 4),
            "{what}"
        );
        assert!(c.defaulted().is_empty(), "{what}: {:?}", c.defaulted());
    }
    // Without num_patches: the SigLIP 2 default, named as config.json spells it.
    let mut partial = bare.clone();
    partial.as_object_mut().unwrap().remove("num_patches");
    let text = serde_json::json!({"model_type": "siglip2", "vision_config": partial}).to_string();
    let c = VisionConfig::from_json_str(&text, "c.json").unwrap();
    assert_eq!(
        (c.architecture, c.num_patches()),
        (Architecture::Siglip2, 256)
    );
    assert_eq!(c.defaulted(), ["num_patches"]);
    assert_eq!(c.key_name("num_patches"), "vision_config.num_patches");
    // A Siglip2Config with no vision_config at all is the default tower.
    let c = VisionConfig::from_json_str(r#"{"model_type": "siglip2"}"#, "c.json").unwrap();
    assert_eq!(c.architecture, Architecture::Siglip2);
    assert_eq!(
        (c.hidden_size, c.num_patches(), c.patch_size),
        (768, 256, 16)
    );
    // A whole SiglipConfig around the same tower (no nested model_type) is SigLIP.
    let mut siglip = bare.clone();
    siglip.as_object_mut().unwrap().remove("num_patches");
    siglip["image_size"] = 16.into();
    let text = serde_json::json!({"model_type": "siglip", "vision_config": siglip}).to_string();
    let c = VisionConfig::from_json_str(&text, "c.json").unwrap();
    assert_eq!(c.architecture, Architecture::Siglip);
}

fn siglip2_with(key: &str, value: serde_json::Value) -> String {
    let mut v = siglip2_config();
    v[key] = value;
    v.to_string()
}

#[test]
fn siglip2_bad_config_values_name_the_key() {
    for (name, n) in [("np15", 15), ("np0", 0), ("np2", 2)] {
        let msg = config_err(name, &siglip2_with("num_patches", n.into()));
        assert_mentions(&msg, &["num_patches", &n.to_string()]);
    }
    let msg = config_err("np_str", &siglip2_with("num_patches", "16".into()));
    assert_mentions(&msg, &["num_patches"]);
    // Nested: the key is named with its prefix.
    let mut tower = siglip2_config();
    tower["num_patches"] = 15.into();
    let text = serde_json::json!({"model_type": "siglip2", "vision_config": tower}).to_string();
    let msg = config_err("np_nested", &text);
    assert_mentions(&msg, &["vision_config.num_patches", "15"]);
    // Memory-gated attention is for SigLIP only, with or without its other keys.
    let msg = config_err("s2_mem", &siglip2_with("memory_experts", 4.into()));
    assert_mentions(&msg, &["memory_experts"]);
    let mut v = siglip2_config();
    v["memory_experts"] = 2.into();
    v["memory_slots"] = 4.into();
    v["memory_layers"] = serde_json::json!([0]);
    let msg = config_err("s2_mem_full", &v.to_string());
    assert_mentions(&msg, &["memory_experts"]);
    // memory_experts 0 is no memory: accepted.
    let c =
        VisionConfig::from_json_str(&siglip2_with("memory_experts", 0.into()), "c.json").unwrap();
    assert_eq!(c.memory_experts, 0);
    // Unknown model types, at the root and nested.
    let msg = config_err("s3", r#"{"model_type": "siglip3_vision_model"}"#);
    assert_mentions(&msg, &["model_type", "siglip3_vision_model"]);
    let mut tower = siglip2_config();
    tower["model_type"] = "clip_vision_model".into();
    let text = serde_json::json!({"model_type": "siglip2", "vision_config": tower}).to_string();
    let msg = config_err("s2_nested_type", &text);
    assert_mentions(&msg, &["vision_config.model_type", "clip_vision_model"]);
}

/// The SigLIP 2 golden checkpoint loads; with num_patches left out, the
/// default 256 disagrees with its 16-row position table, and the error names
/// the tensor, both shapes, the key and the default it took.
#[test]
fn siglip2_wrong_grid_names_tensor_key_and_default() {
    let ok = siglip2_fixture("s2_ok", &siglip2_config().to_string());
    let model = VisionModel::<f32, Cpu>::load(&ok, &Cpu).unwrap();
    assert_eq!(model.config().architecture, Architecture::Siglip2);

    let mut v = siglip2_config();
    v.as_object_mut().unwrap().remove("num_patches");
    let dir = siglip2_fixture("s2_default_grid", &v.to_string());
    let msg = load_err(&dir);
    assert_mentions(
        &msg,
        &[
            "model.safetensors",
            "embeddings.position_embedding.weight",
            "[16, 64]",
            "[256, 64]",
            "`num_patches`",
            "default 256",
        ],
    );
    // Inside a Siglip2Config the key carries its prefix.
    let text = serde_json::json!({"model_type": "siglip2", "vision_config": v}).to_string();
    let dir = siglip2_fixture("s2_default_grid_nested", &text);
    assert_mentions(
        &load_err(&dir),
        &[
            "embeddings.position_embedding.weight",
            "`vision_config.num_patches`",
            "default 256",
        ],
    );
    // A num_patches given (wrongly) is no default: the shapes, no default note.
    let dir = siglip2_fixture("s2_given_grid", &siglip2_with("num_patches", 25.into()));
    let msg = load_err(&dir);
    assert_mentions(
        &msg,
        &[
            "embeddings.position_embedding.weight",
            "[16, 64]",
            "[25, 64]",
        ],
    );
    assert!(!msg.contains("default"), "{msg}");
    // A SigLIP 2 checkpoint read as SigLIP: the Linear patch embedding is not a
    // convolution.
    let mut v = siglip2_config();
    v["model_type"] = "siglip_vision_model".into();
    v.as_object_mut().unwrap().remove("num_patches");
    v["image_size"] = 16.into();
    let dir = siglip2_fixture("s2_as_siglip", &v.to_string());
    assert_mentions(
        &load_err(&dir),
        &[
            "embeddings.patch_embedding.weight",
            "[64, 48]",
            "[64, 3, 4, 4]",
        ],
    );
    // A patch size the Linear's width does not match: named with the keys behind it.
    let dir = siglip2_fixture("s2_patch", &siglip2_with("patch_size", 2.into()));
    assert_mentions(
        &load_err(&dir),
        &["embeddings.patch_embedding.weight", "[64, 48]", "[64, 12]"],
    );
}
