//! The wgpu backend: every op a hand-written WGSL compute shader (`shaders/`),
//! run through wgpu on Vulkan, Metal or DX12. One file per op beside the device
//! (`device.rs`) and the launch machinery (`launch.rs`); each op file declares its
//! shader's uniform as a `#[repr(C)]` struct, checked against the shader by naga.
//! With the `wgpu` feature off, `stub.rs` provides the same public types,
//! unconstructible.

#[cfg(feature = "wgpu")]
mod attention;
#[cfg(feature = "wgpu")]
mod batch;
#[cfg(feature = "wgpu")]
mod device;
#[cfg(feature = "wgpu")]
mod elementwise;
#[cfg(feature = "wgpu")]
mod launch;
#[cfg(feature = "wgpu")]
mod layer_norm;
#[cfg(feature = "wgpu")]
mod linear;
#[cfg(feature = "wgpu")]
mod memory;
#[cfg(feature = "wgpu")]
mod patch_embed;
#[cfg(feature = "wgpu")]
mod shaders;

#[cfg(feature = "wgpu")]
pub use device::{Wgpu, WgpuAdapterInfo};

#[cfg(not(feature = "wgpu"))]
mod stub;
#[cfg(not(feature = "wgpu"))]
pub use stub::{Wgpu, WgpuAdapterInfo};

#[cfg(feature = "wgpu")]
crate::ops::kernels_from_op_files!(Wgpu);

/// Check the uniform struct an op declares against a shader variant's `Params`.
#[cfg(all(test, feature = "wgpu"))]
fn check_op_uniform(
    shader: shaders::Shader,
    key: &str,
    r: &shaders::Reflection,
) -> crate::error::Result<()> {
    use launch::check_uniform;
    use shaders::Shader;
    match shader {
        Shader::Add | Shader::Cast => check_uniform::<elementwise::LenParams>(key, r),
        Shader::LayerNorm => check_uniform::<layer_norm::LayerNormParams>(key, r),
        Shader::Linear => check_uniform::<linear::LinearParams>(key, r),
        Shader::PatchEmbed => check_uniform::<patch_embed::PatchEmbedParams>(key, r),
        Shader::Attention => check_uniform::<attention::AttentionParams>(key, r),
        Shader::MemoryRead => check_uniform::<memory::MemoryReadParams>(key, r),
        Shader::MemoryWrite => check_uniform::<memory::MemoryWriteParams>(key, r),
    }
}
