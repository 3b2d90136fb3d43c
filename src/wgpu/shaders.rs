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
//! [`reflect`] reads a generated source with naga (the parser wgpu itself uses):
//! its bindings by name, its `Params` uniform's layout, its entry points'
//! workgroup sizes and its `const`s — so the host binds by name, checks its
//! `#[repr(C)]` uniform structs against the shader, and sizes its dispatches
//! from the shader's own numbers instead of copies of them.

use crate::element::DType;
use crate::error::{Error, Result};

const COMMON: &str = include_str!("../../shaders/common.wgsl");
const GEMM: &str = include_str!("../../shaders/gemm.wgsl");
const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");

/// One shader file of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Shader {
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
    #[cfg(test)]
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
    #[cfg(test)]
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
}

/// A generated variant: cache key and full source.
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) struct ShaderVariant {
    pub key: String,
    pub shader: Shader,
    pub source: String,
}

/// Every variant the backend can build: each op in f32 and bf16, casts all four ways.
#[cfg(test)]
pub(crate) fn all_variants() -> Vec<ShaderVariant> {
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

/// What a binding of a shader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BindingKind {
    Uniform,
    StorageRead,
    StorageReadWrite,
}

/// One `@group(0) @binding(i) var<...> name` of a shader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binding {
    pub name: String,
    pub index: u32,
    pub kind: BindingKind,
}

/// One member of the uniform struct: name, byte offset, scalar type (`u32`, `f32`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub name: String,
    pub offset: u32,
    pub scalar: &'static str,
}

/// What the host needs to know of a generated shader, read by naga.
#[derive(Debug, Clone)]
pub(crate) struct Reflection {
    /// Group 0's bindings, by binding index.
    pub bindings: Vec<Binding>,
    /// The uniform struct's members and its size in bytes.
    pub uniform: Vec<Member>,
    pub uniform_size: u32,
    /// Each compute entry point's workgroup size.
    pub workgroups: Vec<(String, [u32; 3])>,
    /// The module's scalar `u32` constants.
    pub constants: Vec<(String, u32)>,
}

impl Reflection {
    /// The shader's `const NAME: u32`.
    pub fn constant(&self, name: &str) -> Result<u32> {
        self.constants
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, v)| v)
            .ok_or_else(|| Error::Internal(format!("the shader has no `const {name}: u32`")))
    }

    /// The workgroup size of entry point `entry`.
    pub fn workgroup(&self, entry: &str) -> Result<[u32; 3]> {
        self.workgroups
            .iter()
            .find(|(n, _)| n == entry)
            .map(|&(_, w)| w)
            .ok_or_else(|| Error::Internal(format!("the shader has no entry point `{entry}`")))
    }
}

/// Parse and validate a generated source with naga and read its interface.
/// `key` names the variant in errors (a parse error here is a bug in tessera).
pub(crate) fn reflect(key: &str, source: &str) -> Result<Reflection> {
    use naga::{AddressSpace, Literal, ScalarKind, TypeInner};
    let module = naga::front::wgsl::parse_str(source).map_err(|e| {
        Error::Internal(format!(
            "WGSL of {key} does not parse:\n{}",
            e.emit_to_string_with_path(source, key)
        ))
    })?;
    let scalar_name = |ty: naga::Handle<naga::Type>| match module.types[ty].inner {
        TypeInner::Scalar(s) if s.width == 4 && s.kind == ScalarKind::Uint => "u32",
        TypeInner::Scalar(s) if s.width == 4 && s.kind == ScalarKind::Sint => "i32",
        TypeInner::Scalar(s) if s.width == 4 && s.kind == ScalarKind::Float => "f32",
        _ => "other",
    };
    let mut bindings = Vec::new();
    let (mut uniform, mut uniform_size) = (Vec::new(), 0);
    for (_, g) in module.global_variables.iter() {
        let Some(rb) = &g.binding else { continue };
        let name = g.name.clone().unwrap_or_default();
        let kind = match g.space {
            AddressSpace::Uniform => {
                if let TypeInner::Struct { members, span } = &module.types[g.ty].inner {
                    uniform_size = *span;
                    uniform = members
                        .iter()
                        .map(|m| Member {
                            name: m.name.clone().unwrap_or_default(),
                            offset: m.offset,
                            scalar: scalar_name(m.ty),
                        })
                        .collect();
                }
                BindingKind::Uniform
            }
            AddressSpace::Storage { access } => {
                if access.contains(naga::StorageAccess::STORE) {
                    BindingKind::StorageReadWrite
                } else {
                    BindingKind::StorageRead
                }
            }
            _ => continue,
        };
        if rb.group != 0 {
            return Err(Error::Internal(format!(
                "{key}: binding `{name}` is in group {}, tessera binds group 0 only",
                rb.group
            )));
        }
        bindings.push(Binding {
            name,
            index: rb.binding,
            kind,
        });
    }
    bindings.sort_by_key(|b| b.index);
    let workgroups = module
        .entry_points
        .iter()
        .map(|e| (e.name.clone(), e.workgroup_size))
        .collect();
    let constants = module
        .constants
        .iter()
        .filter_map(|(_, c)| match module.global_expressions[c.init] {
            naga::Expression::Literal(Literal::U32(v)) => Some((c.name.clone()?, v)),
            _ => None,
        })
        .collect();
    Ok(Reflection {
        bindings,
        uniform,
        uniform_size,
        workgroups,
        constants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(key: &str, source: &str) -> std::result::Result<naga::Module, String> {
        let module = naga::front::wgsl::parse_str(source).map_err(|e| {
            let line = e.location(source).map_or(0, |l| l.line_number);
            format!(
                "{key}: WGSL parse error at line {line}:\n{}",
                e.emit_to_string_with_path(source, key)
            )
        })?;
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .map_err(|e| {
            let line = e.location(source).map_or(0, |l| l.line_number);
            format!(
                "{key}: WGSL validation error at line {line}:\n{}",
                e.emit_to_string_with_path(source, key)
            )
        })?;
        Ok(module)
    }

    /// Every variant (each op in f32 and bf16, casts all four ways) parses and
    /// validates with naga, without a GPU; a failure names the variant and the
    /// line (the shader file's own lines come first, so they are the file's).
    #[test]
    fn every_shader_variant_validates() {
        let variants = all_variants();
        // 7 ops × 2 dtypes + 4 casts.
        assert_eq!(variants.len(), 18);
        let mut failures = Vec::new();
        for v in &variants {
            match validate(&v.key, &v.source) {
                Ok(module) => {
                    for entry in v.shader.entry_points() {
                        if !module.entry_points.iter().any(|e| e.name == *entry) {
                            failures.push(format!("{}: no entry point `{entry}`", v.key));
                        }
                    }
                }
                Err(e) => failures.push(e),
            }
            for token in ["ELEM_R", "ELEM_W"] {
                if v.source.contains(token) {
                    failures.push(format!("{}: `{token}` left in the source", v.key));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    /// Reflection reads what the files say: the uniform first, a written tensor,
    /// the 16-byte-padded uniform, the workgroup sizes and constants.
    #[test]
    fn reflection_reads_bindings_uniform_and_constants() {
        for v in all_variants() {
            let r = reflect(&v.key, &v.source).unwrap();
            assert_eq!(r.bindings[0].kind, BindingKind::Uniform, "{}", v.key);
            assert_eq!(r.bindings[0].index, 0, "{}", v.key);
            assert!(
                r.bindings
                    .iter()
                    .any(|b| b.kind == BindingKind::StorageReadWrite),
                "{} writes nothing",
                v.key
            );
            assert!(
                r.uniform_size > 0 && r.uniform_size.is_multiple_of(16),
                "{}",
                v.key
            );
            for e in v.shader.entry_points() {
                assert!(r.workgroup(e).unwrap()[0] > 0, "{}", v.key);
            }
        }
        let linear = Shader::Linear.source(DType::F32, DType::F32);
        let r = reflect("linear_f32", &linear).unwrap();
        assert_eq!(r.constant("TILE_M").unwrap(), 64);
        let names: Vec<&str> = r.bindings.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["P", "x", "w", "bias", "res", "dst"]);
        assert_eq!(r.uniform[0].name, "m");
        assert_eq!(r.uniform[0].scalar, "u32");
    }
}
