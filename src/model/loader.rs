//! Reading `model.safetensors`: memory-mapped, every tensor's dtype and shape
//! checked against what the config implies, converted on the host to the element
//! type the caller asked for, then uploaded.

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::buffer::DeviceBuffer;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::Kernels;

/// The prefix Google's checkpoints and transformers 4.x put before every name.
const PREFIX: &str = "vision_model.";

/// Map `path` read-only into memory.
fn map_file(path: &Path) -> Result<Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the mapping is read-only and lives only while the checkpoint is being
    // loaded (`Checkpoint` is dropped at the end of `VisionModel::load`). Memory
    // mapping is sound as long as no other process truncates or rewrites the file
    // during that time; tessera never writes checkpoints, and a checkpoint being
    // modified while it is loaded is outside what we support (as in every
    // safetensors loader that maps files).
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// A memory-mapped safetensors file.
pub(crate) struct Checkpoint {
    file: PathBuf,
    map: Mmap,
}

impl Checkpoint {
    pub(crate) fn open(file: &Path) -> Result<Self> {
        Ok(Self {
            file: file.to_path_buf(),
            map: map_file(file)?,
        })
    }

    pub(crate) fn tensors(&self) -> Result<Tensors<'_>> {
        let st = SafeTensors::deserialize(&self.map).map_err(|e| Error::Checkpoint {
            file: self.file.clone(),
            tensor: "(header)".into(),
            msg: format!("not a valid safetensors file: {e}"),
        })?;
        Ok(Tensors {
            st,
            file: &self.file,
        })
    }
}

/// The tensors of one checkpoint, looked up by their unprefixed names.
pub(crate) struct Tensors<'a> {
    st: SafeTensors<'a>,
    file: &'a Path,
}

impl<'a> Tensors<'a> {
    fn err(&self, tensor: &str, msg: String) -> Error {
        Error::Checkpoint {
            file: self.file.to_path_buf(),
            tensor: tensor.to_string(),
            msg,
        }
    }

    /// Read `name` (with or without the prefix) as `T` on the host, checking its
    /// dtype and that its shape is `shape`.
    pub(crate) fn host<T: Element>(&self, name: &str, shape: &[usize]) -> Result<Vec<T>> {
        let prefixed = format!("{PREFIX}{name}");
        let (full, view) = match self.st.tensor(&prefixed) {
            Ok(v) => (prefixed, v),
            Err(_) => match self.st.tensor(name) {
                Ok(v) => (name.to_string(), v),
                Err(_) => {
                    return Err(self.err(
                        name,
                        format!("missing (looked for `{prefixed}` and `{name}`)"),
                    ))
                }
            },
        };
        if view.shape() != shape {
            return Err(self.err(
                &full,
                format!("has shape {:?}, expected {shape:?}", view.shape()),
            ));
        }
        let bytes = view.data();
        let out: Vec<T> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| T::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| T::from_f32(bf16::from_le_bytes([c[0], c[1]]).to_f32()))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| T::from_f32(f16::from_le_bytes([c[0], c[1]]).to_f32()))
                .collect(),
            other => {
                return Err(self.err(
                    &full,
                    format!("has dtype {other:?}; supported are F32, BF16 and F16"),
                ))
            }
        };
        let expected: usize = shape.iter().product();
        if out.len() != expected {
            return Err(self.err(
                &full,
                format!("holds {} elements, its shape needs {expected}", out.len()),
            ));
        }
        Ok(out)
    }

    /// [`Tensors::host`], then upload to `device`.
    pub(crate) fn upload<T: Element, D: Kernels<T>>(
        &self,
        device: &D,
        name: &str,
        shape: &[usize],
    ) -> Result<DeviceBuffer<T, D>> {
        let host = self.host::<T>(name, shape)?;
        DeviceBuffer::from_slice(device, &host, shape)
    }
}
