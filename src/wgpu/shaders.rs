//! WGSL sources of the wgpu backend and their per-dtype variants.
//!
//! Each shader under `shaders/` is written once against placeholder element
//! types: `array<ELEM_R>` for a read-only tensor and `array<ELEM_W>` for a written
//! one, accessed only through helpers `ld_NAME(i) -> f32`, `st_NAME(i, v)` and
//! `st2_NAME(i, v0, v1)` (i even: both halves of one 32-bit word). This module
//! substitutes the placeholders for a dtype and appends the helpers (plus
//! `common.wgsl`, the GEMM core for linear / patch_embed, the workgroup
//! reduction for layer_norm / memory_read) after the shader's
//! own text, so error line numbers still match the file.
//!
//! Storage is always `u32` words: f32 elements are bitcast; bf16 elements are
//! packed two per word (element 2w in the low half). A bf16 word written by one
//! invocation as a whole is a plain (atomic) store; a lone half (the edge of a
//! row segment whose other half belongs to another invocation) is written with
//! `atomicAnd` + `atomicOr` on its own half only, so two invocations never race
//! on one word. That is why written bf16 tensors are `array<atomic<u32>>`.
//!
//! Compiled regardless of the `wgpu` feature, so the naga test can validate every
//! variant without a GPU.

use crate::element::DType;

const COMMON: &str = include_str!("../../shaders/common.wgsl");
const GEMM: &str = include_str!("../../shaders/gemm.wgsl");
const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");

/// One shader file of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shader {
    Add,
    Cast,
    LayerNorm,
    Linear,
    PatchEmbed,
    Attention,
    MemoryRead,
    MemoryWrite,
}

impl Shader {
    /// Every shader.
    pub const ALL: [Shader; 8] = [
        Shader::Add,
        Shader::Cast,
        Shader::LayerNorm,
        Shader::Linear,
        Shader::PatchEmbed,
        Shader::Attention,
        Shader::MemoryRead,
        Shader::MemoryWrite,
    ];

    /// The op name (and file stem).
    pub fn name(self) -> &'static str {
        match self {
            Shader::Add => "add",
            Shader::Cast => "cast",
            Shader::LayerNorm => "layer_norm",
            Shader::Linear => "linear",
            Shader::PatchEmbed => "patch_embed",
            Shader::Attention => "attention",
            Shader::MemoryRead => "memory_read",
            Shader::MemoryWrite => "memory_write",
        }
    }

    /// The shader's own text, placeholders intact.
    pub fn text(self) -> &'static str {
        match self {
            Shader::Add => include_str!("../../shaders/add.wgsl"),
            Shader::Cast => include_str!("../../shaders/cast.wgsl"),
            Shader::LayerNorm => include_str!("../../shaders/layer_norm.wgsl"),
            Shader::Linear => include_str!("../../shaders/linear.wgsl"),
            Shader::PatchEmbed => include_str!("../../shaders/patch_embed.wgsl"),
            Shader::Attention => include_str!("../../shaders/attention.wgsl"),
            Shader::MemoryRead => include_str!("../../shaders/memory_read.wgsl"),
            Shader::MemoryWrite => include_str!("../../shaders/memory_write.wgsl"),
        }
    }

    /// Compute entry points.
    pub fn entry_points(self) -> &'static [&'static str] {
        match self {
            Shader::MemoryRead => &["gate_main", "read_main"],
            _ => &["main"],
        }
    }

    fn uses_gemm(self) -> bool {
        matches!(self, Shader::Linear | Shader::PatchEmbed)
    }

    /// Shaders with 256-invocation workgroups that call `workgroup_sum`.
    fn uses_reduce(self) -> bool {
        matches!(self, Shader::LayerNorm | Shader::MemoryRead)
    }

    /// Cache key of a variant, `{op}_{dtype}` (`cast_{from}_{to}` for casts).
    pub fn key(self, input: DType, output: DType) -> String {
        if self == Shader::Cast {
            format!("cast_{}_{}", input.name(), output.name())
        } else {
            format!("{}_{}", self.name(), input.name())
        }
    }

    /// Full WGSL of this shader with read tensors in `input` and written tensors
    /// in `output` (the same type except for casts).
    pub fn source(self, input: DType, output: DType) -> String {
        let text = self.text();
        let mut body = String::with_capacity(text.len() + 4096);
        let mut helpers = String::new();
        for line in text.lines() {
            if let Some(name) = tensor_binding(line, "ELEM_R") {
                helpers.push_str(&read_helpers(name, input));
                body.push_str(&line.replace("ELEM_R", "u32"));
            } else if let Some(name) = tensor_binding(line, "ELEM_W") {
                helpers.push_str(&write_helpers(name, output));
                let word = match output {
                    DType::F32 => "u32",
                    DType::BF16 => "atomic<u32>",
                };
                body.push_str(&line.replace("ELEM_W", word));
            } else {
                body.push_str(line);
            }
            body.push('\n');
        }
        body.push_str("\n// ---- generated element helpers ----\n");
        body.push_str(&helpers);
        body.push_str("\n// ---- common.wgsl ----\n");
        body.push_str(COMMON);
        if self.uses_gemm() {
            body.push_str("\n// ---- gemm.wgsl ----\n");
            body.push_str(GEMM);
        }
        if self.uses_reduce() {
            body.push_str("\n// ---- reduce.wgsl ----\n");
            body.push_str(REDUCE);
        }
        body
    }

    /// The bindings of group 0 in binding order, read from the source.
    pub fn bindings(self) -> Vec<BindingKind> {
        let mut out: Vec<(u32, BindingKind)> = Vec::new();
        for line in self.text().lines() {
            let Some(at) = line.find("@binding(") else {
                continue;
            };
            let rest = &line[at + "@binding(".len()..];
            let Some(num) = rest.split(')').next().and_then(|n| n.trim().parse().ok()) else {
                continue;
            };
            let kind = if line.contains("var<uniform>") {
                BindingKind::Uniform
            } else if line.contains("var<storage, read_write>") {
                BindingKind::StorageReadWrite
            } else {
                BindingKind::StorageRead
            };
            out.push((num, kind));
        }
        out.sort_by_key(|&(n, _)| n);
        out.into_iter().map(|(_, k)| k).collect()
    }
}

/// What a binding of a shader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingKind {
    Uniform,
    StorageRead,
    StorageReadWrite,
}

/// A generated variant: cache key and full source.
#[derive(Debug, Clone)]
pub struct ShaderVariant {
    pub key: String,
    pub shader: Shader,
    pub source: String,
}

/// Every variant the backend can build: each op in f32 and bf16, casts all four ways.
pub fn all_variants() -> Vec<ShaderVariant> {
    let mut v = Vec::new();
    for shader in Shader::ALL {
        for input in [DType::F32, DType::BF16] {
            let outputs = if shader == Shader::Cast {
                vec![DType::F32, DType::BF16]
            } else {
                vec![input]
            };
            for output in outputs {
                v.push(ShaderVariant {
                    key: shader.key(input, output),
                    shader,
                    source: shader.source(input, output),
                });
            }
        }
    }
    v
}

/// `NAME` of a line `... var<storage, ...> NAME: array<PLACEHOLDER>;`.
fn tensor_binding<'a>(line: &'a str, placeholder: &str) -> Option<&'a str> {
    if !line.contains("var<storage") || !line.contains(&format!("array<{placeholder}>")) {
        return None;
    }
    let left = line.split(':').next()?;
    left.split_whitespace().last()
}

fn read_helpers(name: &str, dtype: DType) -> String {
    match dtype {
        DType::F32 => {
            format!("fn ld_{name}(i: u32) -> f32 {{ return bitcast<f32>({name}[i]); }}\n")
        }
        DType::BF16 => format!(
            "fn ld_{name}(i: u32) -> f32 {{\n    let w = {name}[i >> 1u];\n    \
             return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (i & 1u) != 0u));\n}}\n"
        ),
    }
}

fn write_helpers(name: &str, dtype: DType) -> String {
    match dtype {
        DType::F32 => format!(
            "fn ld_{name}(i: u32) -> f32 {{ return bitcast<f32>({name}[i]); }}\n\
             fn st_{name}(i: u32, v: f32) {{ {name}[i] = bitcast<u32>(v); }}\n\
             fn st2_{name}(i: u32, v0: f32, v1: f32) {{\n    \
             {name}[i] = bitcast<u32>(v0);\n    {name}[i + 1u] = bitcast<u32>(v1);\n}}\n"
        ),
        DType::BF16 => format!(
            "fn ld_{name}(i: u32) -> f32 {{\n    let w = atomicLoad(&{name}[i >> 1u]);\n    \
             return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (i & 1u) != 0u));\n}}\n\
             fn st_{name}(i: u32, v: f32) {{\n    let h = bf16_bits(v);\n    \
             if ((i & 1u) == 0u) {{\n        atomicAnd(&{name}[i >> 1u], 0xffff0000u);\n        \
             atomicOr(&{name}[i >> 1u], h);\n    }} else {{\n        \
             atomicAnd(&{name}[i >> 1u], 0x0000ffffu);\n        \
             atomicOr(&{name}[i >> 1u], h << 16u);\n    }}\n}}\n\
             fn st2_{name}(i: u32, v0: f32, v1: f32) {{\n    \
             atomicStore(&{name}[i >> 1u], bf16_bits(v0) | (bf16_bits(v1) << 16u));\n}}\n"
        ),
    }
}
