//! Every WGSL shader variant (each op in f32 and bf16, casts all four ways) parses
//! and validates with naga, without a GPU. A failure names the variant and the
//! line of the generated source (the shader file's own lines come first, so its
//! line numbers are the file's).

use tessera::wgpu::shaders::{all_variants, Shader};

fn check(key: &str, source: &str) -> Result<naga::Module, String> {
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

#[test]
fn every_shader_variant_validates() {
    let variants = all_variants();
    // 7 ops × 2 dtypes + 4 casts.
    assert_eq!(variants.len(), 18);
    let mut failures = Vec::new();
    for v in &variants {
        match check(&v.key, &v.source) {
            Ok(module) => {
                for entry in v.shader.entry_points() {
                    if !module.entry_points.iter().any(|e| e.name == *entry) {
                        failures.push(format!("{}: no entry point `{entry}`", v.key));
                    }
                }
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn placeholders_are_all_substituted() {
    for v in all_variants() {
        for token in ["ELEM_R", "ELEM_W"] {
            assert!(
                !v.source.contains(token),
                "{}: `{token}` left in the generated source",
                v.key
            );
        }
    }
}

#[test]
fn binding_lists_match_sources() {
    use tessera::wgpu::shaders::BindingKind;
    for shader in Shader::ALL {
        let b = shader.bindings();
        assert_eq!(b.first(), Some(&BindingKind::Uniform), "{}", shader.name());
        assert!(
            b.contains(&BindingKind::StorageReadWrite),
            "{} writes nothing",
            shader.name()
        );
    }
}
