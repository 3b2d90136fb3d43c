//! Elementwise ops on wgpu: shaders/add.wgsl and shaders/cast.wgsl, one
//! invocation per 32-bit word of the output.

use super::launch::{u32_of, uniform, Pipeline};
use super::shaders::Shader;
use super::Wgpu;
use crate::element::Element;
use crate::error::Result;
use crate::ops::{AddArgs, CastArgs};

uniform! {
    /// `Params` of shaders/add.wgsl and shaders/cast.wgsl.
    pub(super) struct LenParams {
        len: u32,
    }
    pad 3
}

/// Workgroups for one invocation per 32-bit word of `len` elements.
fn word_groups(p: &Pipeline, len: usize) -> Result<u64> {
    Ok((len as u64)
        .div_ceil(2)
        .div_ceil(p.workgroup_invocations()?))
}

pub(super) fn add<T: Element>(dev: &Wgpu, a: AddArgs<'_, T, Wgpu>) -> Result<()> {
    const OP: &str = "add";
    let params = LenParams {
        len: u32_of(OP, "len", a.len)?,
        _pad: Default::default(),
    };
    let p = dev.pipeline::<LenParams>(Shader::Add, T::DTYPE, T::DTYPE, "main")?;
    dev.launch(
        OP,
        &params,
        &[
            ("a", &a.a.buffer),
            ("b", &a.b.buffer),
            ("dst", &a.out.buffer),
        ],
        &[(&p, word_groups(&p, a.len)?)],
    )
}

pub(super) fn cast<T: Element, U: Element>(dev: &Wgpu, a: CastArgs<'_, T, U, Wgpu>) -> Result<()> {
    const OP: &str = "cast";
    let params = LenParams {
        len: u32_of(OP, "len", a.len)?,
        _pad: Default::default(),
    };
    let p = dev.pipeline::<LenParams>(Shader::Cast, T::DTYPE, U::DTYPE, "main")?;
    dev.launch(
        OP,
        &params,
        &[("x", &a.x.buffer), ("dst", &a.out.buffer)],
        &[(&p, word_groups(&p, a.len)?)],
    )
}
