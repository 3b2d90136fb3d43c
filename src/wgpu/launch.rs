//! Pipelines and launches. A pipeline is built from a generated WGSL variant and
//! the shader's own interface as naga reads it ([`Reflection`]): tensors are bound
//! by the names the shader gives them, the uniform is a `#[repr(C)]` struct whose
//! fields are checked against the shader's `Params` (see [`uniform!`]), and
//! dispatch sizes come from the shader's workgroup sizes and `const`s.

use std::sync::Arc;

use wgpu::util::DeviceExt;

use super::device::{lock, Wgpu};
use super::shaders::{reflect, BindingKind, Reflection, Shader};
use crate::element::DType;
use crate::error::{Error, Result};

/// A uniform block: a `#[repr(C)]` Pod struct mirroring a shader's `Params`.
/// Declared with [`uniform!`], which records each field's name, offset and type.
pub(crate) trait Uniform: bytemuck::Pod {
    /// (name, byte offset, Rust type) of each field, in declaration order.
    const FIELDS: &'static [(&'static str, usize, &'static str)];
}

/// Declare a uniform struct of u32/f32 fields followed by `pad` padding words,
/// which WGSL's uniform layout needs to round the block up to 16 bytes (a
/// compile-time assertion checks the total), and its [`Uniform`] field list.
/// Build it with `_pad: Default::default()`.
macro_rules! uniform {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($field:ident : $ty:ty),* $(,)? } pad $pad:literal) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $(pub $field: $ty,)*
            /// Fills the block to a multiple of 16 bytes, as WGSL lays uniforms out.
            pub _pad: [u32; $pad],
        }
        const _: () = assert!(std::mem::size_of::<$name>() % 16 == 0, "a uniform block is a multiple of 16 bytes");
        impl $crate::wgpu::launch::Uniform for $name {
            const FIELDS: &'static [(&'static str, usize, &'static str)] =
                &[$((stringify!($field), std::mem::offset_of!($name, $field), stringify!($ty))),*];
        }
    };
}
pub(crate) use uniform;

/// Check a uniform struct against the shader's: every non-padding member of the
/// shader at the same offset with the same type, nothing more, the same size.
pub(crate) fn check_uniform<P: Uniform>(key: &str, r: &Reflection) -> Result<()> {
    let shader: Vec<(&str, usize, &str)> = r
        .uniform
        .iter()
        .filter(|m| !m.name.starts_with("_pad"))
        .map(|m| (m.name.as_str(), m.offset as usize, m.scalar))
        .collect();
    if shader != P::FIELDS || std::mem::size_of::<P>() != r.uniform_size as usize {
        return Err(Error::Internal(format!(
            "{key}: the host's uniform {:?} ({} bytes) is not the shader's Params {shader:?} \
             ({} bytes)",
            P::FIELDS,
            std::mem::size_of::<P>(),
            r.uniform_size
        )));
    }
    Ok(())
}

/// A compiled compute pipeline with its bind group layout and interface.
pub(crate) struct Pipeline {
    key: String,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    entry: &'static str,
    reflection: Arc<Reflection>,
}

impl Pipeline {
    /// The shader's `const NAME: u32`.
    pub(crate) fn constant(&self, name: &str) -> Result<u32> {
        self.reflection
            .constant(name)
            .map_err(|e| Error::Internal(format!("{}: {e}", self.key)))
    }

    /// Invocations per workgroup of this pipeline's entry point (x · y · z).
    pub(crate) fn workgroup_invocations(&self) -> Result<u64> {
        let [x, y, z] = self
            .reflection
            .workgroup(self.entry)
            .map_err(|e| Error::Internal(format!("{}: {e}", self.key)))?;
        Ok(u64::from(x) * u64::from(y) * u64::from(z))
    }
}

impl Wgpu {
    /// The pipeline of `shader`'s `entry` for the given dtypes with uniform `P`,
    /// compiled on first use and cached per device under `{op}_{dtype}[_{entry}]`.
    pub(crate) fn pipeline<P: Uniform>(
        &self,
        shader: Shader,
        input: DType,
        output: DType,
        entry: &'static str,
    ) -> Result<Arc<Pipeline>> {
        let mut key = shader.key(input, output);
        if entry != "main" {
            key.push('_');
            key.push_str(entry);
        }
        let inner = self.inner();
        // Held across compilation so two threads never build the same pipeline twice.
        let mut cache = lock(&inner.pipelines);
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let source = shader.source(input, output);
        let reflection = Arc::new(reflect(&key, &source)?);
        check_uniform::<P>(&key, &reflection)?;
        let dev = &inner.device;
        let p = self.guarded(&format!("compiling shader {key}"), 0, || {
            let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&key),
                source: wgpu::ShaderSource::Wgsl(source.as_str().into()),
            });
            let entries: Vec<wgpu::BindGroupLayoutEntry> = reflection
                .bindings
                .iter()
                .map(|b| wgpu::BindGroupLayoutEntry {
                    binding: b.index,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: match b.kind {
                            BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                            BindingKind::StorageRead => {
                                wgpu::BufferBindingType::Storage { read_only: true }
                            }
                            BindingKind::StorageReadWrite => {
                                wgpu::BufferBindingType::Storage { read_only: false }
                            }
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                })
                .collect();
            let layout = dev.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&key),
                entries: &entries,
            });
            let pl = dev.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&key),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&key),
                layout: Some(&pl),
                module: &module,
                entry_point: Some(entry),
                // Every shader writes its workgroup memory before reading it.
                compilation_options: wgpu::PipelineCompilationOptions {
                    zero_initialize_workgroup_memory: false,
                    ..Default::default()
                },
                cache: None,
            });
            (pipeline, layout)
        })?;
        let p = Arc::new(Pipeline {
            key: key.clone(),
            pipeline: p.0,
            layout: p.1,
            entry,
            reflection,
        });
        cache.insert(key, p.clone());
        Ok(p)
    }

    /// Workgroup grid for `groups` workgroups: (x, y) with x within the
    /// per-dimension limit; shaders number groups as y·x_count + x and skip the
    /// overshoot.
    fn grid(&self, op: &'static str, groups: u64) -> Result<(u32, u32)> {
        let max = u64::from(
            self.inner()
                .limits
                .max_compute_workgroups_per_dimension
                .max(1),
        );
        if groups <= max {
            return Ok((groups as u32, 1));
        }
        let y = groups.div_ceil(max);
        if y > max {
            return Err(Error::Unsupported {
                op,
                msg: format!("{groups} workgroups exceed this adapter's {max}×{max} grid"),
            });
        }
        Ok((max as u32, y as u32))
    }

    /// A read-only storage buffer holding `words` (small per-call data, such as a
    /// packed batch's offsets). The last one is kept: the same words again (every
    /// attention call of a forward) reuse it instead of a new buffer.
    pub(crate) fn upload_words(&self, op: &'static str, words: &[u32]) -> wgpu::Buffer {
        let inner = self.inner();
        let mut last = inner.words.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((w, buf)) = last.as_ref() {
            if w.as_slice() == words {
                return buf.clone();
            }
        }
        let buf = inner
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(op),
                contents: bytemuck::cast_slice(words),
                usage: wgpu::BufferUsages::STORAGE,
            });
        *last = Some((words.to_vec(), buf.clone()));
        buf
    }

    /// Record one compute pass ([`Wgpu::record`]): `dispatches` (pipeline,
    /// workgroups) run in order, each seeing the previous one's writes, over the
    /// same bindings: `params` as the shader's uniform and `tensors` bound by the
    /// names the shader's variables have. Does not wait.
    pub(crate) fn launch<P: Uniform>(
        &self,
        op: &'static str,
        params: &P,
        tensors: &[(&str, &wgpu::Buffer)],
        dispatches: &[(&Pipeline, u64)],
    ) -> Result<()> {
        let inner = self.inner();
        let max_binding = inner.limits.max_storage_buffer_binding_size;
        for (name, buf) in tensors {
            if buf.size() > max_binding {
                return Err(Error::Unsupported {
                    op,
                    msg: format!(
                        "tensor `{name}` is {} bytes, above this adapter's largest storage \
                         binding ({max_binding} bytes)",
                        buf.size()
                    ),
                });
            }
        }
        let mut grids = Vec::with_capacity(dispatches.len());
        for &(_, groups) in dispatches {
            grids.push(self.grid(op, groups)?);
        }
        inner.launches.fetch_add(
            dispatches.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let dev = &inner.device;
        // Bindings first, by name: a name the shader lacks, or a binding the call
        // does not fill, is a bug, reported before anything is recorded. Per
        // dispatch: (binding index, the tensor's buffer, or None for the uniform).
        let mut plans: Vec<Vec<(u32, Option<&wgpu::Buffer>)>> =
            Vec::with_capacity(dispatches.len());
        for &(pipeline, _) in dispatches {
            let r = &pipeline.reflection;
            let mut plan = Vec::with_capacity(r.bindings.len());
            for b in &r.bindings {
                let buffer = if b.kind == BindingKind::Uniform {
                    None
                } else {
                    let Some(&(_, buf)) = tensors.iter().find(|(n, _)| *n == b.name) else {
                        return Err(Error::Internal(format!(
                            "{op}: shader {} binds `{}`, which the launch does not pass",
                            pipeline.key, b.name
                        )));
                    };
                    Some(buf)
                };
                plan.push((b.index, buffer));
            }
            if let Some((name, _)) = tensors
                .iter()
                .find(|(n, _)| !r.bindings.iter().any(|b| b.name == *n))
            {
                return Err(Error::Internal(format!(
                    "{op}: the launch passes `{name}`, which shader {} does not bind",
                    pipeline.key
                )));
            }
            plans.push(plan);
        }
        let bind = |uniform: wgpu::BufferBinding<'_>| -> Vec<wgpu::BindGroup> {
            dispatches
                .iter()
                .zip(&plans)
                .map(|(&(pipeline, _), plan)| {
                    let entries: Vec<wgpu::BindGroupEntry> = plan
                        .iter()
                        .map(|&(binding, buffer)| wgpu::BindGroupEntry {
                            binding,
                            resource: match buffer {
                                Some(buf) => buf.as_entire_binding(),
                                None => wgpu::BindingResource::Buffer(uniform.clone()),
                            },
                        })
                        .collect();
                    dev.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(op),
                        layout: &pipeline.layout,
                        entries: &entries,
                    })
                })
                .collect()
        };
        let encode = |encoder: &mut wgpu::CommandEncoder, bind_groups: Vec<wgpu::BindGroup>| {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(op),
                timestamp_writes: None,
            });
            for ((&(pipeline, n), &(x, y)), group) in
                dispatches.iter().zip(&grids).zip(&bind_groups)
            {
                if n == 0 {
                    continue;
                }
                pass.set_pipeline(&pipeline.pipeline);
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(x, y, 1);
            }
        };
        self.record(op, bytemuck::bytes_of(params), bind, encode)
    }
}

/// A size as the u32 the shaders index with (see [`crate::ops::index32`]).
pub(crate) fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    crate::ops::index32(op, what, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wgpu::shaders::all_variants;

    uniform! {
        /// A uniform for the check below.
        struct Three { a: u32, b: f32, c: u32 } pad 1
    }

    #[test]
    fn uniform_macro_pads_to_16_bytes() {
        assert_eq!(std::mem::size_of::<Three>(), 16);
        assert_eq!(Three::FIELDS[1], ("b", 4, "f32"));
    }

    /// Each op's uniform struct is checked against its shader when its pipeline
    /// is built; here every variant against the struct its op declares, so a
    /// drift fails without a GPU.
    #[test]
    fn every_op_uniform_matches_its_shader() {
        for v in all_variants() {
            let r = reflect(&v.key, &v.source).unwrap();
            super::super::check_op_uniform(v.shader, &v.key, &r).unwrap();
        }
    }
}
