//! Kernel modules and launches: each PTX module (`kernels/*.ptx`, embedded) is
//! JIT-loaded on first use and cached per handle; a launch passes one argument
//! slot per `.param` of the entry, checked against the entry's declaration.

use std::collections::HashMap;
use std::ffi::{c_void, CString};

use cudarc::driver::{
    result as cu, sys, CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, SyncOnDrop,
};

use super::device::{cuda_err, guarded, Cuda};
use crate::element::Element;
use crate::error::{Error, Result};

#[derive(Default)]
pub(super) struct Modules {
    pub(super) modules: HashMap<&'static str, RawModule>,
    /// Entry name -> (function, number of parameters its `.entry` declares).
    functions: HashMap<String, (RawFunction, usize)>,
}

/// A `CUmodule` owned by one [`Inner`]; unloaded when it drops.
pub(super) struct RawModule(pub(super) sys::CUmodule);
/// A `CUfunction` of one of the [`RawModule`]s of the same [`Inner`].
#[derive(Clone, Copy)]
struct RawFunction(sys::CUfunction);

// SAFETY: CUDA driver module and function handles are plain handles that the driver
// allows any host thread to use once the owning context is current; we only use them
// after `bind_to_thread`, and they live no longer than the `Inner` that owns the context.
unsafe impl Send for RawModule {}
// SAFETY: as above; the handles are never mutated through a shared reference.
unsafe impl Sync for RawModule {}
// SAFETY: as for `RawModule`.
unsafe impl Send for RawFunction {}
// SAFETY: as for `RawModule`.
unsafe impl Sync for RawFunction {}

impl Cuda {
    /// The function `entry` of module `family` and its parameter count, loading the
    /// module on first use.
    fn function(&self, family: &'static str, entry: &str) -> Result<(RawFunction, usize)> {
        let mut mods = self.inner.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = mods.functions.get(entry) {
            return Ok(*f);
        }
        let op = format!("loading kernel {entry} ({family}.ptx)");
        let src = ptx_source(family).ok_or_else(|| Error::Cuda {
            op: op.clone(),
            msg: "no such PTX module".into(),
        })?;
        let params = entry_param_count(src, entry).ok_or_else(|| Error::Cuda {
            op: op.clone(),
            msg: format!("no entry `{entry}` in {family}.ptx"),
        })?;
        self.inner
            .ctx
            .bind_to_thread()
            .map_err(|e| cuda_err(op.clone(), e))?;
        if !mods.modules.contains_key(family) {
            let c = CString::new(src).map_err(|_| Error::Cuda {
                op: op.clone(),
                msg: "PTX contains a NUL byte".into(),
            })?;
            // SAFETY: `c` is a NUL-terminated PTX image that outlives the call; the
            // context was made current just above.
            let m = unsafe { cu::module::load_data(c.as_ptr() as *const c_void) }
                .map_err(|e| cuda_err(op.clone(), e))?;
            mods.modules.insert(family, RawModule(m));
        }
        let module = mods.modules[family].0;
        let name = CString::new(entry).map_err(|_| Error::Cuda {
            op: op.clone(),
            msg: "bad entry name".into(),
        })?;
        // SAFETY: `module` is a live module of this context (unloaded only in Drop).
        let f = unsafe { cu::module::get_function(module, name) }.map_err(|e| cuda_err(op, e))?;
        mods.functions
            .insert(entry.to_string(), (RawFunction(f), params));
        Ok((RawFunction(f), params))
    }

    /// Launch `entry` of `family` on this handle's stream.
    pub(super) fn launch(
        &self,
        op: &'static str,
        family: &'static str,
        entry: &str,
        cfg: LaunchConfig,
        args: &mut [Arg<'_>],
    ) -> Result<()> {
        guarded(op, || {
            let (func, n_params) = self.function(family, entry)?;
            if n_params != args.len() {
                // The driver reads one pointer per declared parameter from `params`:
                // never launch with a mismatched list.
                return Err(Error::Cuda {
                    op: format!("{op} ({entry})"),
                    msg: format!(
                        "kernel declares {n_params} parameters, launch passes {}",
                        args.len()
                    ),
                });
            }
            let stream = &self.inner.stream;
            let mut guards: Vec<SyncOnDrop<'_>> = Vec::with_capacity(args.len());
            // Every parameter sits in its own 8-byte slot; the driver copies as many
            // bytes as the kernel's parameter has (4 for .u32/.f32, 8 for .u64), and
            // the slots are little-endian, so a 4-byte value sits at the slot's start.
            let mut slots: Vec<u64> = Vec::with_capacity(args.len());
            for a in args.iter_mut() {
                match a {
                    Arg::In(s) => {
                        let (p, g) = s.device_ptr(stream);
                        guards.push(g);
                        slots.push(p);
                    }
                    Arg::Out(s) => {
                        let (p, g) = s.device_ptr_mut(stream);
                        guards.push(g);
                        slots.push(p);
                    }
                    Arg::Null => slots.push(0),
                    Arg::U32(v) => slots.push(u64::from(*v)),
                    Arg::F32(v) => slots.push(u64::from(v.to_bits())),
                }
            }
            let mut params: Vec<*mut c_void> = slots
                .iter_mut()
                .map(|s| s as *mut u64 as *mut c_void)
                .collect();
            let what = format!("{op} ({entry})");
            self.inner
                .ctx
                .bind_to_thread()
                .map_err(|e| cuda_err(what.clone(), e))?;
            // SAFETY: `func` belongs to this context; `params` has exactly one slot per
            // kernel parameter (the count was checked against the `.entry` declaration
            // above), in the order of the kernel's signature (the callers below mirror
            // the `.entry` declarations in kernels/*.ptx), each slot at
            // least as large as its parameter; the device pointers come from live
            // allocations that the kernels index only within the sizes the front
            // functions checked; `guards` keeps the buffers' event bookkeeping alive
            // until the launch is queued.
            unsafe {
                cu::launch_kernel(
                    func.0,
                    cfg.grid_dim,
                    cfg.block_dim,
                    cfg.shared_mem_bytes,
                    stream.cu_stream(),
                    &mut params,
                )
            }
            .map_err(|e| cuda_err(what, e))?;
            drop(guards);
            Ok(())
        })
    }
}

/// One kernel parameter.
pub(super) enum Arg<'a> {
    In(&'a CudaSlice<u8>),
    Out(&'a mut CudaSlice<u8>),
    /// A null pointer (an absent optional input).
    Null,
    U32(u32),
    F32(f32),
}

fn ptx_source(family: &str) -> Option<&'static str> {
    Some(match family {
        "add" => include_str!("../../kernels/add.ptx"),
        "cast" => include_str!("../../kernels/cast.ptx"),
        "layer_norm" => include_str!("../../kernels/layer_norm.ptx"),
        "linear" => include_str!("../../kernels/linear.ptx"),
        "patch_embed" => include_str!("../../kernels/patch_embed.ptx"),
        "attention" => include_str!("../../kernels/attention.ptx"),
        "memory" => include_str!("../../kernels/memory.ptx"),
        _ => return None,
    })
}

/// Number of `.param`s of `.entry name(...)` in a PTX module's text.
fn entry_param_count(ptx: &str, name: &str) -> Option<usize> {
    let head = format!(".entry {name}(");
    let start = ptx.find(&head)? + head.len();
    let end = start + ptx[start..].find(')')?;
    Some(ptx[start..end].matches(".param").count())
}

pub(super) fn grid_stride_blocks(n: usize) -> u32 {
    n.div_ceil(256).clamp(1, 65_535) as u32
}

pub(super) fn entry<T: Element>(op: &str) -> String {
    format!("{op}_{}", T::DTYPE.name())
}

pub(super) fn cfg(
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    shared_mem_bytes: u32,
) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: block,
        shared_mem_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_found_with_its_parameters() {
        let expect: &[(&str, &str, usize)] = &[
            ("add", "add_f32", 4),
            ("add", "add_bf16", 4),
            ("cast", "cast_f32_bf16", 3),
            ("cast", "cast_bf16_f32", 3),
            ("layer_norm", "layer_norm_f32", 7),
            ("layer_norm", "layer_norm_bf16", 7),
            ("linear", "linear_f32", 9),
            ("linear", "linear_bf16", 9),
            ("patch_embed", "patch_embed_f32", 12),
            ("patch_embed", "patch_embed_bf16", 12),
            ("attention", "attention_f32", 10),
            ("attention", "attention_bf16", 10),
            ("memory", "memory_read_gate_f32", 7),
            ("memory", "memory_read_gate_bf16", 7),
            ("memory", "memory_read_mix_f32", 9),
            ("memory", "memory_read_mix_bf16", 9),
            ("memory", "memory_write_f32", 10),
            ("memory", "memory_write_bf16", 10),
        ];
        for &(family, entry, n) in expect {
            let src = ptx_source(family).expect(family);
            assert_eq!(entry_param_count(src, entry), Some(n), "{entry}");
        }
        assert_eq!(entry_param_count(ptx_source("add").unwrap(), "nope"), None);
    }
}
