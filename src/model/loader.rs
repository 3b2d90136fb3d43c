//! Reading the checkpoint: `model.safetensors`, or the shards of
//! `model.safetensors.index.json`, memory-mapped; headers checked before the
//! safetensors crate sees them; tensors found with or without the
//! `vision_model.` prefix and converted on the host to the element type the
//! caller asked for. Which tensors a model needs is `weights.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::files::WeightFiles;

use crate::cpu::map_file;
use crate::element::Element;
use crate::error::{Error, Result};

/// The prefix Google's checkpoints and transformers 4.x put before every name.
const PREFIX: &str = "vision_model.";

/// Top-level parts of the vision tower, for checkpoints whose names carry no prefix.
const VISION_PARTS: [&str; 4] = ["embeddings.", "encoder.", "post_layernorm.", "head."];

/// `Err(message)` unless `dtype` is one tessera converts from.
fn check_dtype(dtype: Dtype) -> std::result::Result<(), String> {
    match dtype {
        Dtype::F32 | Dtype::BF16 | Dtype::F16 => Ok(()),
        other => Err(format!(
            "has dtype {other:?}; supported are F32, BF16 and F16"
        )),
    }
}

/// A checkpoint's safetensors files, memory-mapped: one file, or the shards a
/// `model.safetensors.index.json` names (each mapped once, and only those that
/// hold a tensor of the vision tower).
pub(crate) struct Checkpoint {
    /// The file missing tensors are reported against (the file or the index).
    file: PathBuf,
    shards: Vec<(PathBuf, Mmap)>,
    /// For a sharded checkpoint: the vision tower's tensor names and their shard.
    index: Option<HashMap<String, usize>>,
}

/// The largest index file tessera parses.
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// Whether a checkpoint name belongs to the vision tower (prefixed or not).
fn is_vision_name(name: &str) -> bool {
    name.starts_with(PREFIX) || VISION_PARTS.iter().any(|p| name.starts_with(p))
}

/// The vision-tower tensors a sharded checkpoint's index lists, each with its
/// shard, sorted by tensor name: the index read (at most [`MAX_INDEX_BYTES`]), its
/// `weight_map` checked, every shard a plain file name (a file beside the index,
/// never a path elsewhere). Whether the shards exist is the caller's question.
/// Errors name the index and the tensor.
pub(crate) fn vision_weight_map(index_file: &Path) -> Result<Vec<(String, String)>> {
    let err = |tensor: &str, msg: String| Error::Checkpoint {
        file: index_file.to_path_buf(),
        tensor: tensor.to_string(),
        msg,
    };
    let meta = std::fs::metadata(index_file).map_err(|e| Error::io(index_file, e))?;
    if meta.len() > MAX_INDEX_BYTES {
        return Err(err(
            "(index)",
            format!(
                "{} bytes is too large for an index (at most {MAX_INDEX_BYTES})",
                meta.len()
            ),
        ));
    }
    let text = std::fs::read_to_string(index_file).map_err(|e| Error::io(index_file, e))?;
    let root: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err("(index)", format!("not valid JSON: {e}")))?;
    let Some(map) = root.get("weight_map").and_then(|m| m.as_object()) else {
        return Err(err("(index)", "has no `weight_map` object".into()));
    };
    let mut names: Vec<&String> = map.keys().filter(|n| is_vision_name(n)).collect();
    names.sort_unstable();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let Some(shard) = map[name].as_str() else {
            return Err(err(
                name,
                format!("weight_map entry {} is not a file name", map[name]),
            ));
        };
        let plain = !shard.is_empty()
            && Path::new(shard)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain || shard.contains('/') || shard.contains('\\') {
            return Err(err(
                name,
                format!("is mapped to `{shard}`, which is not a file name beside the index"),
            ));
        }
        out.push((name.clone(), shard.to_string()));
    }
    Ok(out)
}

impl Checkpoint {
    pub(crate) fn open(weights: &WeightFiles) -> Result<Self> {
        match weights {
            WeightFiles::Single(file) => Ok(Self {
                file: file.clone(),
                shards: vec![(file.clone(), map_file(file)?)],
                index: None,
            }),
            WeightFiles::Sharded(index) => Self::open_sharded(index),
        }
    }

    fn open_sharded(index_file: &Path) -> Result<Self> {
        let dir = index_file.parent().unwrap_or(Path::new("."));
        let mut shard_of: HashMap<String, usize> = HashMap::new();
        let mut files: Vec<String> = Vec::new();
        let mut shards: Vec<(PathBuf, Mmap)> = Vec::new();
        for (name, shard) in vision_weight_map(index_file)? {
            let i = match files.iter().position(|f| *f == shard) {
                Some(i) => i,
                None => {
                    let path = dir.join(&shard);
                    if !path.is_file() {
                        return Err(Error::Checkpoint {
                            file: index_file.to_path_buf(),
                            tensor: name,
                            msg: format!(
                                "is mapped to shard `{}`, which does not exist",
                                path.display()
                            ),
                        });
                    }
                    files.push(shard);
                    shards.push((path.clone(), map_file(&path)?));
                    files.len() - 1
                }
            };
            shard_of.insert(name, i);
        }
        Ok(Self {
            file: index_file.to_path_buf(),
            shards,
            index: Some(shard_of),
        })
    }

    pub(crate) fn tensors(&self) -> Result<Tensors<'_>> {
        let mut shards = Vec::with_capacity(self.shards.len());
        for (file, map) in &self.shards {
            // The safetensors crate checks the header, but not everything (an
            // offset sum can overflow before its final length check, and its
            // errors do not always name the tensor): check it here first.
            validate_header(file, map)?;
            let st = SafeTensors::deserialize(map).map_err(|e| Error::Checkpoint {
                file: file.clone(),
                tensor: "(header)".into(),
                msg: format!("not a valid safetensors file: {e}"),
            })?;
            shards.push((file.as_path(), st));
        }
        let names = match &self.index {
            Some(index) => {
                for (name, &i) in index {
                    let (file, st) = &shards[i];
                    if st.tensor(name).is_err() {
                        return Err(Error::Checkpoint {
                            file: self.file.clone(),
                            tensor: name.clone(),
                            msg: format!(
                                "is mapped to shard {}, which does not hold it",
                                file.display()
                            ),
                        });
                    }
                }
                index.clone()
            }
            None => shards
                .first()
                .map(|(_, st)| st.names().into_iter().map(|n| (n.to_string(), 0)).collect())
                .unwrap_or_default(),
        };
        Ok(Tensors {
            shards,
            names,
            file: &self.file,
        })
    }
}

/// The largest header tessera parses (the safetensors crate's own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Check a safetensors file's layout without trusting any of it: the header length
/// fits the file, the header is a JSON object of `{dtype, shape, data_offsets}`
/// entries, every element count and byte size is computed without overflow, every
/// tensor's bytes lie inside the data section and match its dtype and shape, and
/// the tensors neither overlap nor leave gaps. Nothing large is allocated.
pub fn validate_header(file: &Path, buf: &[u8]) -> Result<()> {
    let err = |tensor: &str, msg: String| Error::Checkpoint {
        file: file.to_path_buf(),
        tensor: tensor.to_string(),
        msg,
    };
    let len = buf.len() as u64;
    let Some(&[b0, b1, b2, b3, b4, b5, b6, b7]) = buf.get(..8) else {
        return Err(err(
            "(header)",
            format!("not a safetensors file: {len} bytes, shorter than the 8-byte header length"),
        ));
    };
    let n = u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
    if n > MAX_HEADER_BYTES {
        return Err(err(
            "(header)",
            format!("header length {n} is larger than the {MAX_HEADER_BYTES}-byte limit (corrupt or not a safetensors file)"),
        ));
    }
    if n > len - 8 {
        return Err(err(
            "(header)",
            format!("header length {n} does not fit in the {len}-byte file (truncated?)"),
        ));
    }
    // n ≤ len - 8 ≤ usize::MAX, so these conversions are exact.
    let header = buf.get(8..8 + n as usize).unwrap_or_default();
    let text = std::str::from_utf8(header)
        .map_err(|e| err("(header)", format!("header is not UTF-8: {e}")))?;
    let root: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| err("(header)", format!("header is not valid JSON: {e}")))?;
    let serde_json::Value::Object(entries) = root else {
        return Err(err("(header)", "header is not a JSON object".into()));
    };
    let data_len = len - 8 - n;
    let mut spans: Vec<(u64, u64, &str)> = Vec::with_capacity(entries.len());
    for (name, info) in &entries {
        if name == "__metadata__" {
            continue;
        }
        let Some(obj) = info.as_object() else {
            return Err(err(name, format!("header entry is not an object: {info}")));
        };
        let dtype: Dtype = match obj.get("dtype") {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|_| err(name, format!("unknown dtype {v}")))?,
            None => return Err(err(name, "header entry has no `dtype`".into())),
        };
        let shape: Vec<u64> = match obj.get("shape") {
            Some(serde_json::Value::Array(dims)) => {
                let mut shape = Vec::with_capacity(dims.len().min(64));
                for d in dims {
                    let Some(d) = d.as_u64().filter(|&d| usize::try_from(d).is_ok()) else {
                        return Err(err(name, format!("shape entry {d} is not a size")));
                    };
                    shape.push(d);
                }
                shape
            }
            _ => return Err(err(name, "header entry has no `shape` list".into())),
        };
        let offsets = match obj.get("data_offsets") {
            Some(serde_json::Value::Array(o)) if o.len() == 2 => {
                match (o[0].as_u64(), o[1].as_u64()) {
                    (Some(s), Some(e)) => (s, e),
                    _ => {
                        return Err(err(
                            name,
                            format!("data_offsets {o:?} are not two byte offsets"),
                        ))
                    }
                }
            }
            _ => return Err(err(name, "header entry has no `data_offsets` pair".into())),
        };
        let (start, end) = offsets;
        if end < start {
            return Err(err(
                name,
                format!("data_offsets [{start}, {end}] end before they start"),
            ));
        }
        if end > data_len {
            return Err(err(
                name,
                format!(
                    "data_offsets [{start}, {end}] run past the end of the data section ({data_len} bytes; file truncated?)"
                ),
            ));
        }
        let bytes = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|numel| numel.checked_mul(dtype.bitsize() as u64))
            .filter(|bits| bits % 8 == 0)
            .map(|bits| bits / 8);
        let Some(bytes) = bytes else {
            return Err(err(
                name,
                format!("shape {shape:?} of dtype {dtype:?} has an element count that overflows or is not a whole number of bytes"),
            ));
        };
        if end - start != bytes {
            return Err(err(
                name,
                format!(
                    "shape {shape:?} of dtype {dtype:?} needs {bytes} bytes, but data_offsets [{start}, {end}] hold {}",
                    end - start
                ),
            ));
        }
        spans.push((start, end, name));
    }
    spans.sort_unstable();
    let mut pos = 0u64;
    let mut prev = "(start of data)";
    for &(start, end, name) in &spans {
        if start < pos {
            return Err(err(
                name,
                format!(
                    "data_offsets [{start}, {end}] overlap tensor `{prev}` (which ends at {pos})"
                ),
            ));
        }
        if start > pos {
            return Err(err(
                name,
                format!("data_offsets [{start}, {end}] leave a gap after `{prev}` (which ends at {pos})"),
            ));
        }
        pos = end;
        prev = name;
    }
    if pos != data_len {
        return Err(err(
            "(header)",
            format!("the tensors cover {pos} bytes of data, but the file holds {data_len} after the header"),
        ));
    }
    Ok(())
}

/// The tensors of one checkpoint, looked up by their unprefixed names.
pub(crate) struct Tensors<'a> {
    shards: Vec<(&'a Path, SafeTensors<'a>)>,
    /// Every tensor name (of the vision tower, for a sharded checkpoint) → shard.
    names: HashMap<String, usize>,
    /// The file or index missing tensors are reported against.
    file: &'a Path,
}

impl<'a> Tensors<'a> {
    /// An error about `tensor`, naming the file that holds it (or should).
    pub(crate) fn err(&self, tensor: &str, msg: String) -> Error {
        let file = self
            .names
            .get(tensor)
            .and_then(|&i| self.shards.get(i))
            .map_or(self.file, |(f, _)| *f);
        Error::Checkpoint {
            file: file.to_path_buf(),
            tensor: tensor.to_string(),
            msg,
        }
    }

    /// Find `name` with or without the prefix: (full name, view).
    pub(crate) fn find(&self, name: &str) -> Option<(String, TensorView<'a>)> {
        let prefixed = format!("{PREFIX}{name}");
        for full in [prefixed.as_str(), name] {
            if let Some(&i) = self.names.get(full) {
                if let Some(Ok(v)) = self.shards.get(i).map(|(_, st)| st.tensor(full)) {
                    return Some((full.to_string(), v));
                }
            }
        }
        None
    }

    /// The names of the vision tower's tensors, unprefixed, sorted, each with its
    /// full name (other towers' tensors are left out).
    pub(crate) fn vision_names(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = self
            .names
            .keys()
            .filter_map(|full| match full.strip_prefix(PREFIX) {
                Some(rest) => Some((rest, full.as_str())),
                None if VISION_PARTS.iter().any(|p| full.starts_with(p)) => {
                    Some((full.as_str(), full.as_str()))
                }
                None => None,
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Check the dtype of a found tensor.
    pub(crate) fn check_dtype(&self, full: &str, view: &TensorView<'_>) -> Result<()> {
        check_dtype(view.dtype()).map_err(|m| self.err(full, m))
    }

    /// Read `name` (with or without the prefix) as `T` on the host, checking its
    /// dtype and that its shape is `shape`.
    pub(crate) fn host<T: Element>(&self, name: &str, shape: &[usize]) -> Result<Vec<T>> {
        let (full, view) = self.find(name).ok_or_else(|| {
            self.err(
                name,
                format!("missing (looked for `{PREFIX}{name}` and `{name}`)"),
            )
        })?;
        if view.shape() != shape {
            return Err(self.err(
                &full,
                format!("has shape {:?}, expected {shape:?}", view.shape()),
            ));
        }
        check_dtype(view.dtype()).map_err(|m| self.err(&full, m))?;
        let bytes = view.data();
        let expected = crate::buffer::checked_numel(shape)
            .ok_or_else(|| self.err(&full, format!("shape {shape:?} overflows")))?;
        let mut out: Vec<T> = Vec::new();
        out.try_reserve_exact(expected)
            .map_err(|_| Error::OutOfMemory {
                device: "host".into(),
                bytes: (expected as u64).saturating_mul(T::DTYPE.size() as u64),
                tensor: full.clone(),
            })?;
        match view.dtype() {
            Dtype::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| T::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
            ),
            Dtype::BF16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| T::from_f32(bf16::from_le_bytes([c[0], c[1]]).to_f32())),
            ),
            Dtype::F16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| T::from_f32(f16::from_le_bytes([c[0], c[1]]).to_f32())),
            ),
            other => {
                return Err(self.err(
                    &full,
                    format!("has dtype {other:?}; supported are F32, BF16 and F16"),
                ))
            }
        }
        if out.len() != expected {
            return Err(self.err(
                &full,
                format!("holds {} elements, its shape needs {expected}", out.len()),
            ));
        }
        Ok(out)
    }
}
