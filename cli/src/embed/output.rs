//! The output file of `tessera embed`, written as the batches finish: memory holds
//! the batches that finished ahead of an earlier one, not the collection (a million
//! SigLIP-so400m rows are 4.6 GB).
//!
//! - Rows go straight to `OUT.tmp-PID`, after room reserved for the header, in path
//!   order: a batch that finishes early waits in memory until the ones before it
//!   are written (with devices of equal speed a few batches; with a slow one beside
//!   a fast one, about twice the speed ratio). Skipped images leave no row.
//! - The header is written last, into the reserved room: its largest form (every
//!   path kept, N the number of paths) is known before the first row, and the real
//!   one is padded to that size with spaces, as both formats allow (safetensors
//!   pads its JSON header with spaces to 8 bytes; `.npy` its Python literal to 64).
//! - Then the files are synced and renamed into place, the paths file first: an
//!   interrupted job leaves no half output. A job that fails removes its
//!   `.tmp-PID` file; one that is killed leaves it (the rows so far, no header).
//! - A safetensors header holds at most 100 MB (the safetensors readers refuse
//!   more). Where the paths would not fit, they go to `OUT.paths.txt` instead and
//!   the metadata's `paths_file` names it — decided before the first image, not
//!   after hours of work.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Metadata, TensorInfo};

/// The most bytes of a safetensors JSON header its readers accept
/// (`MAX_HEADER_SIZE` of the safetensors crate, also behind Python's reader).
pub(super) const SAFETENSORS_HEADER_LIMIT: usize = 100_000_000;

/// The output file's format, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Safetensors,
    Npy,
}

impl Format {
    pub(super) fn of(path: &Path) -> Result<Self, String> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Ok(Format::Safetensors),
            Some("npy") => Ok(Format::Npy),
            _ => Err(format!(
                "{}: the output must end in .safetensors or .npy",
                path.display()
            )),
        }
    }
}

/// Writes the rows of `[N, dim]` f32 embeddings as batches finish, in batch order.
pub(super) struct RowWriter {
    format: Format,
    path: PathBuf,
    tmp: PathBuf,
    /// `None` before it is created and once finished: nothing more is written.
    file: Option<BufWriter<File>>,
    /// Whether this writer created `tmp` (only then does it remove it).
    created: bool,
    /// Bytes before the first row: 8 + the JSON (safetensors) or the whole `.npy`
    /// header.
    reserved: usize,
    dim: usize,
    /// Every path of the job, in order (row indices point into it).
    names: Vec<String>,
    /// Path indices of the rows written, in order.
    kept: Vec<usize>,
    /// The next batch to write.
    next: usize,
    /// Finished batches waiting for an earlier one.
    pending: BTreeMap<usize, Vec<(usize, Vec<f32>)>>,
    /// Safetensors: the paths are in the header (else in `OUT.paths.txt`).
    paths_in_header: bool,
    model: String,
}

impl RowWriter {
    /// Open `path`'s temporary file for rows of `dim` values of the images
    /// `paths`, made by `model`.
    pub(super) fn create(
        path: &Path,
        paths: &[PathBuf],
        dim: usize,
        model: &str,
    ) -> Result<Self, String> {
        Self::with_limit(path, paths, dim, model, SAFETENSORS_HEADER_LIMIT)
    }

    /// [`Self::create`] with a given safetensors header limit (tests).
    pub(super) fn with_limit(
        path: &Path,
        paths: &[PathBuf],
        dim: usize,
        model: &str,
        limit: usize,
    ) -> Result<Self, String> {
        let format = Format::of(path)?;
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let mut w = RowWriter {
            format,
            path: path.to_path_buf(),
            tmp: tmp_name(path),
            file: None,
            created: false,
            reserved: 0,
            dim,
            names,
            kept: Vec::new(),
            next: 0,
            pending: BTreeMap::new(),
            paths_in_header: format == Format::Safetensors,
            model: model.to_string(),
        };
        // The largest header: every path kept.
        let all: Vec<usize> = (0..w.names.len()).collect();
        let mut largest = w.header(&all)?;
        if format == Format::Safetensors && largest.len() - 8 > limit {
            w.paths_in_header = false;
            largest = w.header(&all)?;
        }
        w.reserved = largest.len();
        let file = File::create(&w.tmp).map_err(|e| format!("{}: {e}", w.tmp.display()))?;
        w.created = true;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        // Room for the header, filled in by `finish`.
        file.write_all(&vec![0u8; w.reserved])
            .map_err(|e| w.io_error(e))?;
        w.file = Some(file);
        Ok(w)
    }

    /// Whether the paths go to `OUT.paths.txt` (always for `.npy`; for
    /// safetensors where they would overflow its header).
    pub(super) fn paths_file(&self) -> Option<PathBuf> {
        (!self.paths_in_header).then(|| paths_file(&self.path))
    }

    /// Batch `batch`'s rows (path index, values), in path order; an empty list
    /// for a batch whose every image was skipped. Each batch index must come once.
    pub(super) fn accept(
        &mut self,
        batch: usize,
        rows: Vec<(usize, Vec<f32>)>,
    ) -> Result<(), String> {
        if batch < self.next || self.pending.insert(batch, rows).is_some() {
            return Err(format!(
                "embed: batch {batch} answered twice (internal error)"
            ));
        }
        while let Some(rows) = self.pending.remove(&self.next) {
            for (index, row) in rows {
                if row.len() != self.dim || index >= self.names.len() {
                    return Err(format!(
                        "embed: row of {} values for image {index} (expected {}; internal error)",
                        row.len(),
                        self.dim
                    ));
                }
                let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
                let file = self.file.as_mut().ok_or("embed: output already closed")?;
                if let Err(e) = file.write_all(&bytes) {
                    return Err(self.io_error(e));
                }
                self.kept.push(index);
            }
            self.next += 1;
        }
        Ok(())
    }

    /// Rows written so far.
    pub(super) fn rows(&self) -> usize {
        self.kept.len()
    }

    /// Write the header (and the paths file), sync and rename into place, after
    /// exactly `batches` batches were accepted. Returns the paths of the rows.
    pub(super) fn finish(mut self, batches: usize) -> Result<Vec<PathBuf>, String> {
        if self.next != batches || !self.pending.is_empty() {
            return Err(format!(
                "embed: {} of {batches} batches written (internal error)",
                self.next
            ));
        }
        if self.kept.is_empty() {
            return Err("no image could be read".into());
        }
        let mut header = self.header(&self.kept)?;
        if header.len() > self.reserved {
            return Err("embed: header larger than its reserved room (internal error)".into());
        }
        let pad = self.reserved - header.len();
        match self.format {
            // The JSON padded with spaces; its length (8 bytes before it) counts them.
            Format::Safetensors => {
                header.extend(std::iter::repeat_n(b' ', pad));
                header[..8].copy_from_slice(&((self.reserved - 8) as u64).to_le_bytes());
            }
            // The literal padded before its closing newline; its length field too.
            Format::Npy => {
                header.pop();
                header.extend(std::iter::repeat_n(b' ', pad));
                header.push(b'\n');
                header[8..10].copy_from_slice(&((self.reserved - 10) as u16).to_le_bytes());
            }
        }
        let kept: Vec<PathBuf> = self
            .kept
            .iter()
            .map(|&i| PathBuf::from(&self.names[i]))
            .collect();
        // Both files complete and synced under their temporary names first, then
        // renamed, the paths first: a failure before the renames changes nothing.
        let list = match self.paths_file() {
            Some(list) => {
                let text: String = self
                    .kept
                    .iter()
                    .map(|&i| self.names[i].clone() + "\n")
                    .collect();
                Some((write_synced(&list, text.as_bytes())?, list))
            }
            None => None,
        };
        let file = self.file.take().ok_or("embed: output already closed")?;
        let done = (|| {
            let mut file = file.into_inner().map_err(|e| e.into_error())?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&header)?;
            file.sync_all()
        })();
        let renamed = done.map_err(|e| self.io_error(e)).and_then(|()| {
            if let Some((tmp, list)) = &list {
                std::fs::rename(tmp, list).map_err(|e| format!("{}: {e}", list.display()))?;
            }
            std::fs::rename(&self.tmp, &self.path)
                .map_err(|e| format!("{}: {e}", self.path.display()))
        });
        if let (Err(_), Some((tmp, _))) = (&renamed, &list) {
            let _ = std::fs::remove_file(tmp);
        }
        renamed.map(|()| kept)
    }

    /// The header for the rows of path indices `kept`: safetensors' 8-byte
    /// length and JSON (through the safetensors crate's own metadata type), or
    /// the `.npy` magic, version, length and literal padded to 64 bytes.
    fn header(&self, kept: &[usize]) -> Result<Vec<u8>, String> {
        let (n, dim) = (kept.len(), self.dim);
        match self.format {
            Format::Safetensors => {
                let mut meta = HashMap::from([
                    ("model".to_string(), self.model.clone()),
                    ("producer".to_string(), "tessera embed".to_string()),
                ]);
                if self.paths_in_header {
                    let names: Vec<&str> = kept.iter().map(|&i| self.names[i].as_str()).collect();
                    let json = serde_json::to_string(&names).map_err(|e| e.to_string())?;
                    meta.insert("paths".to_string(), json);
                } else {
                    let list = paths_file(&self.path);
                    let name = list.file_name().unwrap_or_default().to_string_lossy();
                    meta.insert("paths_file".to_string(), name.into_owned());
                }
                let info = TensorInfo {
                    dtype: safetensors::Dtype::F32,
                    shape: vec![n, dim],
                    data_offsets: (0, n * dim * 4),
                };
                let metadata = Metadata::new(Some(meta), vec![("embeddings".to_string(), info)])
                    .map_err(|e| format!("{}: {e}", self.path.display()))?;
                let json = serde_json::to_vec(&metadata).map_err(|e| e.to_string())?;
                let len = json.len().next_multiple_of(8);
                let mut out = (len as u64).to_le_bytes().to_vec();
                out.extend(json);
                out.resize(8 + len, b' ');
                Ok(out)
            }
            Format::Npy => {
                let lit =
                    format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {dim}), }}");
                // Magic (6) + version (2) + length (2) + literal + '\n', padded to 64.
                let total = (10 + lit.len() + 1).div_ceil(64) * 64;
                let mut out = b"\x93NUMPY\x01\x00".to_vec();
                out.extend(((total - 10) as u16).to_le_bytes());
                out.extend(lit.as_bytes());
                out.resize(total - 1, b' ');
                out.push(b'\n');
                Ok(out)
            }
        }
    }

    fn io_error(&self, e: std::io::Error) -> String {
        format!("{}: {e}", self.tmp.display())
    }
}

impl Drop for RowWriter {
    /// A job that stops before [`RowWriter::finish`] leaves no temporary file.
    fn drop(&mut self) {
        // After a finish the file was renamed away and this finds nothing.
        drop(self.file.take());
        if self.created {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// `OUT.paths.txt` beside `OUT.npy` / `OUT.safetensors`.
fn paths_file(path: &Path) -> PathBuf {
    path.with_extension("paths.txt")
}

/// `path.tmp-PID`, in the same folder (a rename stays on one file system).
fn tmp_name(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(tmp)
}

/// Write `bytes` to `path.tmp-PID` and sync it; returns that name (renamed over
/// `path` by the caller).
fn write_synced(path: &Path, bytes: &[u8]) -> Result<PathBuf, String> {
    let tmp = tmp_name(path);
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", tmp.display())
    })?;
    Ok(tmp)
}
#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::SafeTensors;

    /// A fresh folder under the system's temporary one.
    fn folder(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tessera-embed-out-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn paths(n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| PathBuf::from(format!("photos/\"q\"/image_{i:03}.jpg")))
            .collect()
    }

    fn row(i: usize, dim: usize) -> Vec<f32> {
        (0..dim).map(|j| (i * 100 + j) as f32 + 0.25).collect()
    }

    /// Five batches of two: answered out of order, batch 1 wholly skipped and
    /// image 6 skipped. Returns the path indices kept.
    fn feed(w: &mut RowWriter, dim: usize) -> Vec<usize> {
        let batch = |b: usize, skip: &[usize]| -> Vec<(usize, Vec<f32>)> {
            (2 * b..2 * b + 2)
                .filter(|i| !skip.contains(i))
                .map(|i| (i, row(i, dim)))
                .collect()
        };
        for b in [3, 0, 4, 1, 2] {
            w.accept(b, batch(b, &[2, 3, 6])).unwrap();
        }
        vec![0, 1, 4, 5, 7, 8, 9]
    }

    #[test]
    fn safetensors_rows_in_batch_order_with_skips() {
        let dir = folder("st");
        let out = dir.join("e.safetensors");
        let (dim, all) = (5, paths(10));
        let mut w = RowWriter::create(&out, &all, dim, "m").unwrap();
        let kept = feed(&mut w, dim);
        assert!(!out.exists(), "the output appears only when finished");
        let got = w.finish(5).unwrap();
        assert_eq!(
            got,
            kept.iter().map(|&i| all[i].clone()).collect::<Vec<_>>()
        );
        let bytes = std::fs::read(&out).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("embeddings").unwrap();
        assert_eq!(t.shape(), [kept.len(), dim]);
        let want: Vec<u8> = kept
            .iter()
            .flat_map(|&i| row(i, dim))
            .flat_map(f32::to_le_bytes)
            .collect();
        assert_eq!(t.data(), want.as_slice());
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        let names: Vec<String> = serde_json::from_str(&meta["paths"]).unwrap();
        let want_names: Vec<String> = got.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(names, want_names);
        assert_eq!(meta["model"], "m");
        assert!(!dir.join("e.paths.txt").exists());
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
    }

    #[test]
    fn npy_header_padded_to_64_and_paths_beside() {
        let dir = folder("npy");
        let out = dir.join("e.npy");
        let (dim, all) = (3, paths(10));
        let mut w = RowWriter::create(&out, &all, dim, "m").unwrap();
        let kept = feed(&mut w, dim);
        w.finish(5).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let lit = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
        assert!(lit.ends_with('\n'), "{lit:?}");
        assert_eq!(
            lit.trim_end(),
            format!(
                "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {dim}), }}",
                kept.len()
            )
        );
        let want: Vec<u8> = kept
            .iter()
            .flat_map(|&i| row(i, dim))
            .flat_map(f32::to_le_bytes)
            .collect();
        assert_eq!(&bytes[10 + hlen..], want.as_slice());
        let list = std::fs::read_to_string(dir.join("e.paths.txt")).unwrap();
        let want_list: String = kept
            .iter()
            .map(|&i| all[i].display().to_string() + "\n")
            .collect();
        assert_eq!(list, want_list);
    }

    /// Paths that would overflow the header go beside it, named in the metadata.
    #[test]
    fn paths_overflowing_the_header_go_to_a_file() {
        let dir = folder("big");
        let out = dir.join("e.safetensors");
        let (dim, all) = (4, paths(10));
        let mut w = RowWriter::with_limit(&out, &all, dim, "m", 200).unwrap();
        assert_eq!(w.paths_file(), Some(dir.join("e.paths.txt")));
        let kept = feed(&mut w, dim);
        w.finish(5).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        assert!(!meta.contains_key("paths"));
        assert_eq!(meta["paths_file"], "e.paths.txt");
        let list = std::fs::read_to_string(dir.join("e.paths.txt")).unwrap();
        assert_eq!(list.lines().count(), kept.len());
        // Under a limit they fit: in the header.
        let w = RowWriter::with_limit(&dir.join("f.safetensors"), &all, dim, "m", 10_000).unwrap();
        assert_eq!(w.paths_file(), None);
    }

    #[test]
    fn unfinished_or_inconsistent_jobs_leave_nothing() {
        let dir = folder("fail");
        let out = dir.join("e.safetensors");
        let all = paths(4);
        // Dropped before finishing (a failed job): the temporary file goes.
        let mut w = RowWriter::create(&out, &all, 2, "m").unwrap();
        w.accept(0, vec![(0, vec![1.0, 2.0])]).unwrap();
        drop(w);
        // A batch answered twice, a row of the wrong width, a batch missing.
        let mut w = RowWriter::create(&out, &all, 2, "m").unwrap();
        w.accept(1, vec![(2, vec![1.0, 2.0])]).unwrap();
        assert!(w.accept(1, vec![]).unwrap_err().contains("twice"));
        assert!(w
            .accept(0, vec![(0, vec![1.0])])
            .unwrap_err()
            .contains("expected 2"));
        let mut w = RowWriter::create(&out, &all, 2, "m").unwrap();
        w.accept(0, vec![(0, vec![1.0, 2.0])]).unwrap();
        assert!(w.finish(2).unwrap_err().contains("1 of 2 batches"));
        // Every image skipped.
        let mut w = RowWriter::create(&out, &all, 2, "m").unwrap();
        w.accept(0, vec![]).unwrap();
        assert!(w.finish(1).unwrap_err().contains("no image"));
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(left.is_empty(), "files left: {left:?}");
        // An output in a folder that does not exist fails at once, naming it.
        let err = RowWriter::create(&dir.join("no/such/e.npy"), &all, 2, "m")
            .err()
            .unwrap();
        assert!(err.contains("no/such"), "{err}");
    }
}
