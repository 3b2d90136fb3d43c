//! `VisionConfig`: the SigLIP vision tower's hyper-parameters, read from a
//! Hugging Face `config.json` (see MODEL.md, "Files").

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The hyper-parameters of a SigLIP vision tower, with the memory-gated attention
/// extension. Read with [`VisionConfig::from_file`]; every value has been checked
/// (heads divide the width, a patch fits the image, memory layers exist).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Which tower: SigLIP (square images) or SigLIP 2 NaFlex (images at their own
    /// aspect ratio, packed batches).
    pub architecture: Architecture,
    /// D, the model width.
    pub hidden_size: usize,
    /// F, the MLP's inner width.
    pub intermediate_size: usize,
    /// L, the number of encoder layers.
    pub num_hidden_layers: usize,
    /// H, the number of attention heads (also used by the pooling head).
    pub num_attention_heads: usize,
    /// C, input channels (default 3).
    pub num_channels: usize,
    /// I, the side of the square input image. SigLIP 2 has no fixed image size:
    /// there it is G·P, the side its position grid stands for.
    pub image_size: usize,
    /// P, the side of a square patch.
    pub patch_size: usize,
    /// LayerNorm epsilon (default 1e-6).
    pub layer_norm_eps: f32,
    /// Whether the model has the attention-pooling head (default true).
    pub vision_use_head: bool,
    /// E, memory experts per memory layer (0 = no memory).
    pub memory_experts: usize,
    /// M, memory slots per expert (0 when there is no memory).
    pub memory_slots: usize,
    /// Indices of the layers with memory-gated attention, ascending; empty when E = 0.
    pub memory_layers: Vec<usize>,
    /// Keys absent from config.json (their values are transformers' defaults).
    defaulted: Vec<&'static str>,
    /// `"vision_config."` when the vision config sits inside a SiglipConfig.
    key_prefix: &'static str,
}

/// The two vision towers tessera runs (MODEL.md, "Forward pass" and "Variable
/// resolution").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// SigLIP (`siglip_vision_model`): images `[B, C, I, I]`, a stride-P
    /// convolution, a position table of ⌊I/P⌋² rows. Run with
    /// [`VisionModel::forward`](super::VisionModel::forward).
    Siglip,
    /// SigLIP 2 NaFlex (`siglip2_vision_model`): each image its own grid of
    /// h × w patches, a Linear patch embedding, the G × G position grid resized
    /// per image (antialiased bilinear). Run on packed batches with
    /// [`VisionModel::forward_packed`](super::VisionModel::forward_packed).
    Siglip2,
}

impl Architecture {
    /// The `model_type` of the vision tower.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Siglip => "siglip_vision_model",
            Self::Siglip2 => "siglip2_vision_model",
        }
    }
}

impl Default for VisionConfig {
    /// transformers' `SiglipVisionConfig` defaults, which every absent key takes
    /// (SigLIP-base/16 at 224 px), every key marked as defaulted. The memory
    /// extension has no transformers default: none.
    fn default() -> Self {
        Self {
            architecture: Architecture::Siglip,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 16,
            layer_norm_eps: 1e-6,
            vision_use_head: true,
            memory_experts: 0,
            memory_slots: 0,
            memory_layers: Vec::new(),
            defaulted: DEFAULTED_KEYS.to_vec(),
            key_prefix: "",
        }
    }
}

/// The keys with a transformers default, in config.json's usual order.
const DEFAULTED_KEYS: [&str; 9] = [
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_channels",
    "image_size",
    "patch_size",
    "layer_norm_eps",
    "vision_use_head",
];

impl VisionConfig {
    /// Read and check `config.json`: a SiglipVisionConfig, or a full SiglipConfig whose
    /// `vision_config` holds one. Errors name the file and the key.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.len() > LIMIT_FILE_BYTES {
            return Err(cfg_err(
                path,
                format!(
                    "{} bytes is too large for a config (at most {LIMIT_FILE_BYTES})",
                    meta.len()
                ),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parse and check a config from JSON text; `file` is only used in error messages.
    ///
    /// Every key that is absent takes the default of transformers'
    /// `SiglipVisionConfig` (see [`VisionConfig::default`]); the keys that did are
    /// listed by [`defaulted`](Self::defaulted), so a load that finds tensors of
    /// other sizes can say which default was wrong.
    pub fn from_json_str(text: &str, file: impl AsRef<Path>) -> Result<Self> {
        let file = file.as_ref().to_path_buf();
        let root: Value = serde_json::from_str(text).map_err(|e| Error::Config {
            file: file.clone(),
            msg: format!("not valid JSON: {e}"),
        })?;
        let Value::Object(root) = root else {
            return Err(cfg_err(
                &file,
                "expected a JSON object at the top level".into(),
            ));
        };
        let model_type = match root.get("model_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(other) => {
                return Err(cfg_err(
                    &file,
                    format!("key `model_type` must be a string, found {other}"),
                ))
            }
        };
        let empty = Map::new();
        // The tower named at the top level (before looking at a nested vision_config).
        let root_arch = match model_type {
            None | Some("siglip_vision_model") | Some("siglip") => Architecture::Siglip,
            Some("siglip2_vision_model") | Some("siglip2") => Architecture::Siglip2,
            Some(other) => {
                return Err(cfg_err(
                    &file,
                    format!(
                        "key `model_type`: \"{other}\" is not a SigLIP vision model (expected \
                         \"siglip_vision_model\", \"siglip\", \"siglip2_vision_model\" or \"siglip2\")"
                    ),
                ))
            }
        };
        let whole_model = matches!(model_type, Some("siglip") | Some("siglip2"));
        let (obj, prefix) = match root.get("vision_config") {
            Some(Value::Object(v)) => (v, "vision_config."),
            Some(Value::Null) => (&empty, "vision_config."),
            None if whole_model => (&empty, "vision_config."),
            None => (&root, ""),
            Some(other) => {
                return Err(cfg_err(
                    &file,
                    format!("key `vision_config` must be an object, found {other}"),
                ))
            }
        };
        let architecture = match obj.get("model_type") {
            // The root itself, checked above.
            _ if prefix.is_empty() => root_arch,
            Some(Value::String(t)) if t == "siglip_vision_model" => Architecture::Siglip,
            Some(Value::String(t)) if t == "siglip2_vision_model" => Architecture::Siglip2,
            None | Some(Value::Null) => root_arch,
            Some(t) => {
                return Err(cfg_err(
                    &file,
                    format!(
                        "key `{prefix}model_type`: {t} is not a SigLIP vision tower \
                         (expected \"siglip_vision_model\" or \"siglip2_vision_model\")"
                    ),
                ));
            }
        };
        let mut r = Reader {
            obj,
            file: &file,
            prefix,
            defaulted: Vec::new(),
        };

        let d = Self::default();
        let hidden_size = r.usize_or("hidden_size", d.hidden_size)?;
        let intermediate_size = r.usize_or("intermediate_size", d.intermediate_size)?;
        let num_hidden_layers = r.usize_or("num_hidden_layers", d.num_hidden_layers)?;
        let num_attention_heads = r.usize_or("num_attention_heads", d.num_attention_heads)?;
        let num_channels = r.usize_or("num_channels", d.num_channels)?;
        let patch_size = r.usize_or("patch_size", d.patch_size)?;
        // SigLIP: the image side. SigLIP 2: no image side, a position grid of
        // num_patches = G² entries (Siglip2VisionConfig's default 256).
        let image_size = match architecture {
            Architecture::Siglip => r.usize_or("image_size", d.image_size)?,
            Architecture::Siglip2 => {
                // The patch first: the image side below is derived from it.
                if patch_size == 0 || patch_size > LIMIT_IMAGE {
                    return Err(r.err(
                        "patch_size",
                        format!("{patch_size}: must be between 1 and {LIMIT_IMAGE}"),
                    ));
                }
                let n = r.usize_or("num_patches", DEFAULT_SIGLIP2_NUM_PATCHES)?;
                let g = n.isqrt();
                if n == 0 || g * g != n {
                    return Err(r.err(
                        "num_patches",
                        format!("{n} is not the square of a grid side (the position table is a G × G grid)"),
                    ));
                }
                if g.saturating_mul(patch_size) > LIMIT_IMAGE {
                    return Err(r.err(
                        "num_patches",
                        format!(
                            "{n}: a {g} × {g} grid of {patch_size} px patches is wider than \
                             {LIMIT_IMAGE} px (implausibly large)"
                        ),
                    ));
                }
                g * patch_size
            }
        };
        let layer_norm_eps = match r.f64_opt("layer_norm_eps")? {
            Some(v) => v,
            None => {
                r.defaulted.push("layer_norm_eps");
                f64::from(d.layer_norm_eps)
            }
        };
        let vision_use_head = match r.bool_opt("vision_use_head")? {
            Some(v) => v,
            None => {
                r.defaulted.push("vision_use_head");
                d.vision_use_head
            }
        };
        let memory_experts = r.usize_opt("memory_experts")?.unwrap_or(0);
        // As f32 (what the kernels use): positive, finite, and not so small that it
        // rounds to 0; named here with the value the file gives.
        let eps32 = layer_norm_eps as f32;
        if !(layer_norm_eps.is_finite() && eps32.is_finite() && eps32 > 0.0) {
            return Err(r.err(
                "layer_norm_eps",
                format!("must be a finite number > 0 (as f32), found {layer_norm_eps}"),
            ));
        }
        match obj.get("hidden_act") {
            None => {}
            Some(Value::String(s)) if s == "gelu_pytorch_tanh" => {}
            Some(other) => {
                return Err(r.err(
                    "hidden_act",
                    format!("only \"gelu_pytorch_tanh\" is supported, found {other}"),
                ))
            }
        }

        // Bounded here, before the default memory layers (all of them) are listed.
        if num_hidden_layers > LIMIT_LAYERS {
            return Err(r.err(
                "num_hidden_layers",
                too_large(num_hidden_layers, LIMIT_LAYERS),
            ));
        }
        let (memory_slots, memory_layers) = if memory_experts > 0 {
            let slots = r.usize_opt("memory_slots")?.ok_or_else(|| {
                r.err(
                    "memory_slots",
                    format!("missing (required when memory_experts is {memory_experts})"),
                )
            })?;
            let layers = match obj.get("memory_layers") {
                None | Some(Value::Null) => (0..num_hidden_layers).collect(),
                Some(Value::Array(items)) => {
                    let mut layers = Vec::with_capacity(items.len());
                    for item in items {
                        let Some(l) = item.as_u64().and_then(|v| usize::try_from(v).ok()) else {
                            return Err(r.err(
                                "memory_layers",
                                format!("entries must be layer indices, found {item}"),
                            ));
                        };
                        layers.push(l);
                    }
                    layers.sort_unstable();
                    layers
                }
                Some(other) => {
                    return Err(r.err(
                        "memory_layers",
                        format!("must be a list of layer indices, found {other}"),
                    ))
                }
            };
            (slots, layers)
        } else {
            if let Some(Value::Array(items)) = obj.get("memory_layers") {
                if !items.is_empty() {
                    return Err(r.err(
                        "memory_layers",
                        "lists layers but memory_experts is 0 (or missing)".into(),
                    ));
                }
            }
            (0, Vec::new())
        };

        let defaulted = std::mem::take(&mut r.defaulted);
        let config = Self {
            architecture,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_channels,
            image_size,
            patch_size,
            layer_norm_eps: layer_norm_eps as f32,
            vision_use_head,
            memory_experts,
            memory_slots,
            memory_layers,
            defaulted,
            key_prefix: prefix,
        };
        match config.invalid() {
            Some((key, msg)) => Err(r.err(key, msg)),
            None => Ok(config),
        }
    }

    /// Check the values of a config built in code (a changed
    /// [`VisionConfig::default`]) as [`from_json_str`](Self::from_json_str)
    /// checks a file's: sizes at least 1 and within sane limits, heads that
    /// divide the width, a patch that fits the image, a positive `layer_norm_eps`,
    /// memory layers that exist. [`VisionModel::random`](super::VisionModel::random)
    /// calls it; the error names the field.
    pub fn validate(&self) -> Result<()> {
        match self.invalid() {
            Some((key, msg)) => Err(Error::Input {
                tensor: format!("VisionConfig.{key}"),
                msg,
            }),
            None => Ok(()),
        }
    }

    /// The first field whose value tessera cannot run, and why.
    fn invalid(&self) -> Option<(&'static str, String)> {
        let c = self;
        if c.architecture == Architecture::Siglip2 && c.memory_experts > 0 {
            return Some((
                "memory_experts",
                "memory-gated attention is defined for SigLIP towers of fixed image size, \
                 not for SigLIP 2's variable resolution"
                    .into(),
            ));
        }
        for (key, v) in [
            ("hidden_size", c.hidden_size),
            ("intermediate_size", c.intermediate_size),
            ("num_attention_heads", c.num_attention_heads),
            ("num_channels", c.num_channels),
            ("image_size", c.image_size),
            ("patch_size", c.patch_size),
        ] {
            if v == 0 {
                return Some((key, "must be at least 1, found 0".into()));
            }
        }
        // Sane limits, far above any released SigLIP (so400m: D 1152, F 4304, 27
        // layers, 384 px), checked before anything is sized from these values.
        for (key, v, max) in [
            ("hidden_size", c.hidden_size, LIMIT_WIDTH),
            ("intermediate_size", c.intermediate_size, LIMIT_WIDTH),
            ("num_hidden_layers", c.num_hidden_layers, LIMIT_LAYERS),
            ("num_attention_heads", c.num_attention_heads, LIMIT_WIDTH),
            ("num_channels", c.num_channels, LIMIT_CHANNELS),
            ("image_size", c.image_size, LIMIT_IMAGE),
            ("patch_size", c.patch_size, LIMIT_IMAGE),
            ("memory_experts", c.memory_experts, LIMIT_MEMORY),
        ] {
            if v > max {
                return Some((key, too_large(v, max)));
            }
        }
        if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Some((
                "num_attention_heads",
                format!(
                    "{} heads do not divide hidden_size {}",
                    c.num_attention_heads, c.hidden_size
                ),
            ));
        }
        // The stride-P convolution covers the first ⌊I/P⌋·P pixels of each side
        // (so400m/14 at 384 px: 27 × 27 patches over 378 px); it needs one patch.
        if c.patch_size > c.image_size {
            return Some((
                "patch_size",
                format!(
                    "patch_size {} is larger than image_size {}",
                    c.patch_size, c.image_size
                ),
            ));
        }
        // Positive, finite, and not so small that it rounds to 0 as f32 (then a
        // constant row would divide 0 by 0).
        if !(c.layer_norm_eps.is_finite() && c.layer_norm_eps > 0.0) {
            return Some((
                "layer_norm_eps",
                format!(
                    "must be a finite number > 0 (as f32), found {}",
                    c.layer_norm_eps
                ),
            ));
        }
        if c.memory_experts > 0 {
            if c.memory_slots == 0 || c.memory_slots > LIMIT_MEMORY {
                return Some((
                    "memory_slots",
                    format!(
                        "must be between 1 and {LIMIT_MEMORY} when memory_experts is {}, found {}",
                        c.memory_experts, c.memory_slots
                    ),
                ));
            }
            if let Some(&l) = c.memory_layers.iter().find(|&&l| l >= c.num_hidden_layers) {
                return Some((
                    "memory_layers",
                    format!(
                        "layer index {l} is out of range (the model has {} layers)",
                        c.num_hidden_layers
                    ),
                ));
            }
            if let Some(w) = c.memory_layers.windows(2).find(|w| w[0] >= w[1]) {
                let msg = if w[0] == w[1] {
                    format!("layer index {} is listed twice", w[0])
                } else {
                    format!("must be ascending, found {} before {}", w[0], w[1])
                };
                return Some(("memory_layers", msg));
            }
        } else if !c.memory_layers.is_empty() {
            return Some((
                "memory_layers",
                "lists layers but memory_experts is 0 (or missing)".into(),
            ));
        } else if c.memory_slots != 0 {
            return Some((
                "memory_slots",
                format!("{} slots but memory_experts is 0", c.memory_slots),
            ));
        }
        None
    }

    /// The keys config.json left out, whose values are transformers' defaults.
    pub fn defaulted(&self) -> &[&'static str] {
        &self.defaulted
    }

    /// "`hidden_size` = 768, `num_channels` = 3": the keys that took
    /// transformers' defaults and the values they took, or `None`.
    pub fn defaults_taken(&self) -> Option<String> {
        let parts: Vec<String> = self
            .defaulted
            .iter()
            .map(|k| format!("`{}` = {}", self.key_name(k), self.value_text(k)))
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// `key` as config.json spells it (`vision_config.hidden_size` inside a
    /// SiglipConfig), for messages.
    pub fn key_name(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    /// "`vision_config.hidden_size` is absent from config.json and took
    /// transformers' default 768" for each of `keys` that took its default, or
    /// `None` when every one of them was given.
    pub(crate) fn default_note(&self, keys: &[&str]) -> Option<String> {
        let notes: Vec<String> = keys
            .iter()
            .filter(|k| self.defaulted.contains(k))
            .map(|k| {
                format!(
                    "`{}` is absent from config.json and took transformers' default {}",
                    self.key_name(k),
                    self.value_text(k)
                )
            })
            .collect();
        (!notes.is_empty()).then(|| notes.join("; "))
    }

    fn value_text(&self, key: &str) -> String {
        match key {
            "hidden_size" => self.hidden_size.to_string(),
            "intermediate_size" => self.intermediate_size.to_string(),
            "num_hidden_layers" => self.num_hidden_layers.to_string(),
            "num_attention_heads" => self.num_attention_heads.to_string(),
            "num_channels" => self.num_channels.to_string(),
            "image_size" => self.image_size.to_string(),
            "num_patches" => self.num_patches().to_string(),
            "patch_size" => self.patch_size.to_string(),
            "layer_norm_eps" => self.layer_norm_eps.to_string(),
            "vision_use_head" => self.vision_use_head.to_string(),
            other => format!("(of `{other}`)"),
        }
    }

    /// hd = D / H.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// N = ⌊I / P⌋², tokens per image (pixels past ⌊I/P⌋·P are not used); for
    /// SigLIP 2, G², the rows of the position table (config.json's `num_patches`).
    pub fn num_patches(&self) -> usize {
        let g = self.position_grid();
        g * g
    }

    /// G, the side of the position grid: ⌊I / P⌋ (SigLIP), √num_patches (SigLIP 2).
    pub fn position_grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// C·P·P, the values of one flattened patch.
    pub fn patch_values(&self) -> usize {
        self.num_channels * self.patch_size * self.patch_size
    }

    /// Whether the model carries a memory bank between segments.
    pub fn has_memory(&self) -> bool {
        self.memory_experts > 0 && !self.memory_layers.is_empty()
    }

    /// Whether layer `i` uses memory-gated attention.
    pub fn is_memory_layer(&self, i: usize) -> bool {
        self.memory_experts > 0 && self.memory_layers.contains(&i)
    }

    /// The shape of one image batch, `[batch, C, I, I]`.
    pub fn pixel_shape(&self, batch: usize) -> [usize; 4] {
        [batch, self.num_channels, self.image_size, self.image_size]
    }
}

/// Siglip2VisionConfig's `num_patches` (a 16 × 16 position grid).
const DEFAULT_SIGLIP2_NUM_PATCHES: usize = 256;

/// Upper bound for widths and head counts (D, F, H).
const LIMIT_WIDTH: usize = 1 << 16;
/// Upper bound for the number of encoder layers.
const LIMIT_LAYERS: usize = 1024;
/// Upper bound for input channels.
const LIMIT_CHANNELS: usize = 64;
/// Upper bound for the image and patch side, in pixels (the image processors'
/// own bound, `preprocess::MAX_SIDE`).
const LIMIT_IMAGE: usize = crate::preprocess::MAX_SIDE;
/// Upper bound for memory experts and slots.
const LIMIT_MEMORY: usize = 1 << 16;
/// Largest config.json tessera reads.
const LIMIT_FILE_BYTES: u64 = 16 << 20;

fn too_large(v: usize, max: usize) -> String {
    format!("{v} is implausibly large (at most {max})")
}

fn cfg_err(file: &Path, msg: String) -> Error {
    Error::Config {
        file: file.to_path_buf(),
        msg,
    }
}

struct Reader<'a> {
    obj: &'a Map<String, Value>,
    file: &'a PathBuf,
    prefix: &'static str,
    /// Keys read with `*_or` that were absent.
    defaulted: Vec<&'static str>,
}

impl Reader<'_> {
    fn err(&self, key: &str, msg: String) -> Error {
        cfg_err(self.file, format!("key `{}{key}`: {msg}", self.prefix))
    }

    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) => Ok(Some(n)),
                None => Err(self.err(key, format!("must be a non-negative integer, found {v}"))),
            },
        }
    }

    /// The value of `key`, or `default` (recorded as taken) when it is absent.
    fn usize_or(&mut self, key: &'static str, default: usize) -> Result<usize> {
        match self.usize_opt(key)? {
            Some(v) => Ok(v),
            None => {
                self.defaulted.push(key);
                Ok(default)
            }
        }
    }

    fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("must be a number, found {v}"))),
        }
    }

    fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(key, format!("must be true or false, found {v}"))),
        }
    }
}
