//! The output file of `tessera embed`, written as the batches finish: memory holds
//! the batches that finished ahead of an earlier one, not the collection (a million
//! SigLIP-so400m rows are 4.6 GB).
//!
//! - Rows go straight to `OUT.partial`, after room reserved for the header, in path
//!   order: a batch that finishes early waits in memory until the ones before it
//!   are written (with devices of equal speed a few batches; with a slow one beside
//!   a fast one, about twice the speed ratio). Skipped images leave no row.
//! - Each batch written is then recorded in `OUT.partial.journal` (its index and
//!   its images' path indices) once its rows are synced to the disk (every 2 s,
//!   and when the job stops), after a first line naming the job (its settings,
//!   the model's files — digests of its config files, its hub commit or its
//!   weights' sizes and times —, the number and a digest of the paths, the header
//!   room, the pixel rules' revision, `tessera::preprocess::PIXELS_REVISION`). A
//!   job that stops (killed, or failed after some rows) leaves the two files;
//!   `--resume` checks that the journal names the same job (the weights only
//!   when batches are left to embed), cuts the partial file to the rows the
//!   journal holds (a batch written but not journaled is done again) and goes on
//!   from the next batch. A run without `--resume` refuses to replace a partial
//!   file that holds rows. The partial file is locked while a job writes it: two
//!   jobs on one output fail at once instead of mixing their rows.
//! - The header is written last, into the reserved room: its largest form (every
//!   path kept, N the number of paths) is known before the first row, and the real
//!   one is padded to that size with spaces, as both formats allow (safetensors
//!   pads its JSON header with spaces to 8 bytes; `.npy` its Python literal to 64).
//! - Then the files are synced and renamed into place, the paths file first, and
//!   the journal removed: an interrupted job leaves no half output. A job that
//!   fails before its first row removes its partial file and journal.
//! - A safetensors header holds at most 100 MB (the safetensors readers refuse
//!   more). Where the paths would not fit, they go to `OUT.paths.txt` instead and
//!   the metadata's `paths_file` names it — decided before the first image, not
//!   after hours of work.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use safetensors::tensor::{Metadata, TensorInfo};
use tessera::preprocess::PIXELS_REVISION;

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
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        for (ext, format) in [(".safetensors", Format::Safetensors), (".npy", Format::Npy)] {
            match name.strip_suffix(ext) {
                Some("") => {
                    return Err(format!(
                        "{}: the output needs a name before {ext}",
                        path.display()
                    ))
                }
                Some(_) => return Ok(format),
                None => {}
            }
        }
        Err(format!(
            "{}: the output must end in .safetensors or .npy",
            path.display()
        ))
    }
}

/// The element type the rows are stored as (`--out-dtype`); the values are
/// computed in f32 and rounded to nearest-even once, when written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutDtype {
    /// 4 bytes a value.
    #[default]
    F32,
    /// IEEE half precision: 2 bytes, 11 significant bits (numpy `float16`).
    F16,
    /// bfloat16: 2 bytes, 8 significant bits, f32's range (safetensors only).
    Bf16,
}

impl OutDtype {
    fn size(self) -> usize {
        match self {
            OutDtype::F32 => 4,
            OutDtype::F16 | OutDtype::Bf16 => 2,
        }
    }

    fn safetensors(self) -> safetensors::Dtype {
        match self {
            OutDtype::F32 => safetensors::Dtype::F32,
            OutDtype::F16 => safetensors::Dtype::F16,
            OutDtype::Bf16 => safetensors::Dtype::BF16,
        }
    }

    /// The `.npy` type string; numpy has no bfloat16.
    fn npy(self) -> Option<&'static str> {
        match self {
            OutDtype::F32 => Some("<f4"),
            OutDtype::F16 => Some("<f2"),
            OutDtype::Bf16 => None,
        }
    }

    /// A row's little-endian bytes.
    fn encode(self, row: &[f32]) -> Vec<u8> {
        match self {
            OutDtype::F32 => row.iter().flat_map(|x| x.to_le_bytes()).collect(),
            OutDtype::F16 => row
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect(),
            OutDtype::Bf16 => row
                .iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                .collect(),
        }
    }
}

/// What a row is: `dim` values stored as `dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Columns {
    pub dim: usize,
    pub dtype: OutDtype,
}

impl Columns {
    /// `dim` f32 values.
    #[cfg(test)]
    pub(super) fn f32(dim: usize) -> Self {
        Columns {
            dim,
            dtype: OutDtype::F32,
        }
    }

    fn row_bytes(self) -> usize {
        self.dim * self.dtype.size()
    }
}

/// Writes the rows of `[N, dim]` embeddings as batches finish, in batch order.
pub(super) struct RowWriter {
    format: Format,
    path: PathBuf,
    /// `OUT.partial` (the rows) and `OUT.partial.journal` (the batches written).
    tmp: PathBuf,
    journal_path: PathBuf,
    /// `None` before it is created and once finished: nothing more is written.
    /// The file is locked while it is open.
    file: Option<BufWriter<File>>,
    journal: Option<File>,
    /// Whether this writer locked the partial file (only then may it remove
    /// it), and whether to leave it and the journal when dropped unfinished
    /// anyway: they hold rows to resume from, or an earlier run's.
    owned: bool,
    keep: bool,
    /// The rows and batches that came from an earlier run (`--resume`).
    resumed: Resumed,
    /// Bytes before the first row: 8 + the JSON (safetensors) or the whole `.npy`
    /// header.
    reserved: usize,
    cols: Columns,
    /// Every path of the job, in order (row indices point into it).
    names: Vec<String>,
    /// Path indices of the rows written, in order.
    kept: Vec<usize>,
    /// The next batch to write.
    next: usize,
    /// Finished batches waiting for an earlier one.
    pending: BTreeMap<usize, Vec<(usize, Vec<f32>)>>,
    /// Journal lines of batches written but not yet synced, the rows the
    /// journal records, and when it was last brought up to date.
    unjournaled: String,
    journaled: usize,
    checkpoint_at: Instant,
    /// Safetensors: the paths are in the header (else in `OUT.paths.txt`).
    paths_in_header: bool,
    model: String,
    /// [`JobNames::files`], also in the safetensors metadata (`model_files`).
    files: String,
    /// `--resume`: the earlier run's [`JobNames::weights`].
    earlier_weights: Option<String>,
    /// Rows of this run holding NaN or ±inf, and the first one's path index.
    nonfinite_rows: usize,
    first_nonfinite: Option<usize>,
    /// Finite values the output dtype made ±inf (f16 past 65 504).
    overflowed: usize,
}

/// What names a job in its journal's first line.
#[derive(Debug, Clone, Copy)]
pub(super) struct JobNames<'a> {
    /// The model as the user named it (also the output's metadata `model`).
    pub model: &'a str,
    /// The options that make the rows; a resumed job must have the same.
    pub settings: &'a str,
    /// The model's configuration files (their digests, and the hub commit they are
    /// of); a resumed job must have the same.
    pub files: &'a str,
    /// The weight files, where their names do not fix their contents (a local
    /// folder: sizes and times). Compared on `--resume` by the caller, only when
    /// batches are left: rows already made need no weights.
    pub weights: Option<&'a str>,
}

impl RowWriter {
    /// Open `path`'s partial file for rows of `cols` of the images `paths`, made
    /// by the job `id` names. With `resume`, go on from the partial file an
    /// earlier run of the same job left (same paths, settings and model files; the
    /// weights are for the caller to compare, [`Self::earlier_weights`]).
    pub(super) fn create(
        path: &Path,
        paths: &[PathBuf],
        cols: Columns,
        id: &JobNames,
        resume: bool,
    ) -> Result<Self, String> {
        let limit = SAFETENSORS_HEADER_LIMIT;
        Self::with_limit(path, paths, cols, id, resume, limit)
    }

    /// [`Self::create`] with a given safetensors header limit (tests).
    pub(super) fn with_limit(
        path: &Path,
        paths: &[PathBuf],
        cols: Columns,
        id: &JobNames,
        resume: bool,
        limit: usize,
    ) -> Result<Self, String> {
        let format = Format::of(path)?;
        if format == Format::Npy && cols.dtype.npy().is_none() {
            return Err(format!(
                "{}: numpy has no bfloat16: write .safetensors, or --out-dtype f16 or f32",
                path.display()
            ));
        }
        let dim = cols.dim;
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let tmp = suffixed(path, ".partial");
        let mut w = RowWriter {
            format,
            path: path.to_path_buf(),
            journal_path: suffixed(&tmp, ".journal"),
            tmp,
            file: None,
            journal: None,
            owned: false,
            keep: false,
            resumed: Resumed::default(),
            reserved: 0,
            cols,
            names,
            kept: Vec::new(),
            next: 0,
            pending: BTreeMap::new(),
            unjournaled: String::new(),
            journaled: 0,
            checkpoint_at: Instant::now(),
            paths_in_header: format == Format::Safetensors,
            model: id.model.to_string(),
            files: id.files.to_string(),
            earlier_weights: None,
            nonfinite_rows: 0,
            first_nonfinite: None,
            overflowed: 0,
        };
        // The largest header: every path kept.
        let all: Vec<usize> = (0..w.names.len()).collect();
        let mut largest = w.header(&all)?;
        if format == Format::Safetensors && largest.len() - 8 > limit {
            w.paths_in_header = false;
            largest = w.header(&all)?;
        }
        w.reserved = largest.len();
        let mut job = serde_json::json!({
            "format": format!("{format:?}"),
            "dim": dim,
            "paths": w.names.len(),
            "paths_digest": format!("{:016x}", digest(&w.names)),
            "header_room": w.reserved,
            "settings": id.settings,
            "files": id.files,
            "pixels": PIXELS_REVISION,
        });
        if let Some(weights) = id.weights {
            job["weights"] = weights.into();
        }
        // Named only when not f32: journals of f32 jobs read as before.
        if cols.dtype != OutDtype::F32 {
            job["dtype"] = format!("{:?}", cols.dtype).into();
        }
        let identity = format!("{JOURNAL_MAGIC} {job}");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&w.tmp)
            .map_err(|e| w.io_error(e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "{}: another tessera embed is writing this output ({} is locked)",
                    w.path.display(),
                    w.tmp.display()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(w.io_error(e)),
        }
        // The partial file is ours now (locked), and stays open in `w.file` until
        // it is removed or renamed: no other job can lock it in between.
        w.owned = true;
        let tmp_shown = w.tmp.display().to_string();
        let io = |e: std::io::Error| format!("{tmp_shown}: {e}");
        let file = w
            .file
            .insert(BufWriter::with_capacity(1 << 20, file))
            .get_mut();
        // What an earlier run left:
        let earlier = match std::fs::read(&w.journal_path) {
            Ok(text) => Some(Journal::parse(&text, &w.journal_path, w.names.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Err(format!("{}: {e}", w.journal_path.display()))),
        };
        let len = file.metadata().map_err(io)?.len();
        let held = match &earlier {
            Some(Ok(j)) if len > 0 => j.kept.len(),
            _ => 0,
        };
        if resume {
            let j = match earlier {
                Some(Ok(j)) if len > 0 => j,
                Some(Err(e)) => {
                    w.keep = true;
                    return Err(format!(
                        "{e}\n(--resume: delete {} and the journal to start over)",
                        w.tmp.display()
                    ));
                }
                _ => {
                    w.keep = len > 0;
                    if len == 0 && w.path.exists() {
                        return Err(format!(
                            "--resume: {} is already written and no run of it is unfinished \
                             (no {}): nothing to go on from; delete it, or choose another \
                             --output, to embed again",
                            w.path.display(),
                            w.tmp.display()
                        ));
                    }
                    return Err(format!(
                        "--resume: no earlier run of this job to go on from ({} has no \
                         journal or no rows)",
                        w.tmp.display()
                    ));
                }
            };
            w.keep = true;
            let earlier = match j.pixels_revision() {
                Some(None) => Some("none recorded: an older tessera".to_string()),
                Some(Some(r)) if r != PIXELS_REVISION => Some(format!("revision {r}")),
                _ => None,
            };
            if let Some(earlier) = earlier {
                return Err(format!(
                    "--resume: {} was written by a tessera that reads images differently \
                     (pixel rules: {earlier}; this one's: revision {PIXELS_REVISION}, see \
                     tessera::preprocess::PIXELS_REVISION); its rows and this job's would \
                     not agree: delete it and {} to start over",
                    w.tmp.display(),
                    w.journal_path.display()
                ));
            }
            let then = j.job();
            let then_files = then
                .as_ref()
                .map(|t| t.get("files").and_then(|f| f.as_str()));
            if let Some(then_files) = then_files.filter(|f| *f != Some(id.files)) {
                // A hub model whose cached main moved: its earlier commit, if still
                // in the cache, is one --revision away.
                let pin = then_files
                    .and_then(|f| f.split(", ").find_map(|p| p.strip_prefix("commit ")))
                    .map(|c| format!(" (for a hub model: --revision {c} names the earlier commit)"))
                    .unwrap_or_default();
                let then_files = then_files.unwrap_or("none recorded: an older tessera");
                return Err(format!(
                    "--resume: the model's files are not those {} was started with (then: \
                     {then_files}; now: {}): its rows and this job's would not agree{pin}. \
                     Delete it and {} to start over",
                    w.tmp.display(),
                    id.files,
                    w.journal_path.display()
                ));
            }
            // The weights are compared by the caller, and only when rows are left.
            let without_weights = |mut v: serde_json::Value| {
                if let Some(o) = v.as_object_mut() {
                    o.remove("weights");
                }
                v
            };
            w.earlier_weights = then
                .as_ref()
                .and_then(|t| t.get("weights")?.as_str().map(str::to_string));
            let (then, job) = (then.map(without_weights), without_weights(job));
            if then.as_ref() != Some(&job) {
                // The two identities in full only where no difference can be named.
                let (why, full) = match then.as_ref().map(|t| job_differences(t, &job)) {
                    Some(Some(why)) => (why, String::new()),
                    other => {
                        let why = match other {
                            Some(_) => "other inputs or options",
                            None => "its journal names no job",
                        };
                        let full = format!("\n  its job:  {}\n  this job: {identity}", j.identity);
                        (why.to_string(), full)
                    }
                };
                return Err(format!(
                    "--resume: {} was written by another job ({why}){full}\ndelete it and {} \
                     to start over",
                    w.tmp.display(),
                    w.journal_path.display()
                ));
            }
            let rows_end = (w.reserved + j.kept.len() * cols.row_bytes()) as u64;
            if len < rows_end {
                return Err(format!(
                    "--resume: {} has {len} bytes, fewer than the {} rows its journal \
                     records ({rows_end} bytes); delete it and {} to start over",
                    w.tmp.display(),
                    j.kept.len(),
                    w.journal_path.display()
                ));
            }
            // Rows past the journal's (a batch not recorded) are made again; a torn
            // last journal line goes.
            file.set_len(rows_end).map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
            let journal = OpenOptions::new()
                .write(true)
                .open(&w.journal_path)
                .and_then(|mut f| {
                    f.set_len(j.valid_bytes as u64)?;
                    f.seek(SeekFrom::End(0))?;
                    Ok(f)
                })
                .map_err(|e| format!("{}: {e}", w.journal_path.display()))?;
            w.next = j.batches;
            w.resumed = Resumed {
                batches: j.batches,
                rows: j.kept.len(),
            };
            w.journaled = j.kept.len();
            w.kept = j.kept;
            w.journal = Some(journal);
        } else {
            if held > 0 {
                w.keep = true; // not ours to remove
                return Err(format!(
                    "{} holds {held} rows of an earlier run of this output that stopped: \
                     --resume goes on from it (same inputs and options); delete it and {} \
                     to start over",
                    w.tmp.display(),
                    w.journal_path.display()
                ));
            }
            // A new job: room for the header (filled in by `finish`), then rows.
            let fresh = (|| {
                file.set_len(0)?;
                file.write_all(&vec![0u8; w.reserved])
            })();
            fresh.map_err(io)?;
            let journal = File::create(&w.journal_path)
                .and_then(|mut f| f.write_all(format!("{identity}\n").as_bytes()).map(|()| f))
                .map_err(|e| format!("{}: {e}", w.journal_path.display()))?;
            w.journal = Some(journal);
        }
        Ok(w)
    }

    /// The batches and rows an earlier run wrote (`--resume`; zero otherwise).
    pub(super) fn resumed(&self) -> Resumed {
        self.resumed
    }

    /// The weights the resumed job's earlier run named ([`JobNames::weights`]).
    pub(super) fn earlier_weights(&self) -> Option<&str> {
        self.earlier_weights.as_deref()
    }

    /// `OUT.partial`, where the rows are until the job finishes.
    pub(super) fn partial(&self) -> &Path {
        &self.tmp
    }

    /// The path indices in the earlier run's batches that have no row (their
    /// files were skipped then).
    pub(super) fn resumed_skips(&self, batch_size: usize) -> Vec<usize> {
        let end = (self.resumed.batches.saturating_mul(batch_size)).min(self.names.len());
        let kept: std::collections::HashSet<usize> =
            self.kept[..self.resumed.rows].iter().copied().collect();
        (0..end).filter(|i| !kept.contains(i)).collect()
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
            let mut line = self.next.to_string();
            for (index, row) in rows {
                if row.len() != self.cols.dim || index >= self.names.len() {
                    return Err(format!(
                        "embed: row of {} values for image {index} (expected {}; internal error)",
                        row.len(),
                        self.cols.dim
                    ));
                }
                if row.iter().any(|v| !v.is_finite()) {
                    self.nonfinite_rows += 1;
                    self.first_nonfinite.get_or_insert(index);
                }
                if self.cols.dtype == OutDtype::F16 {
                    self.overflowed += row
                        .iter()
                        .filter(|&&v| v.is_finite() && !half::f16::from_f32(v).is_finite())
                        .count();
                }
                let bytes = self.cols.dtype.encode(&row);
                let file = self.file.as_mut().ok_or("embed: output already closed")?;
                if let Err(e) = file.write_all(&bytes) {
                    return Err(self.io_error(e));
                }
                self.kept.push(index);
                line.push_str(&format!(" {index}"));
            }
            line.push('\n');
            self.unjournaled.push_str(&line);
            self.next += 1;
        }
        self.checkpoint_if_due()
    }

    /// [`checkpoint`](Self::checkpoint), if the last one was [`CHECKPOINT`] ago.
    pub(super) fn checkpoint_if_due(&mut self) -> Result<(), String> {
        if self.checkpoint_at.elapsed() >= CHECKPOINT {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Sync the rows written to the disk, then record their batches in the
    /// journal: the journal never names a row that a power cut could lose.
    pub(super) fn checkpoint(&mut self) -> Result<(), String> {
        self.checkpoint_at = Instant::now();
        if self.unjournaled.is_empty() {
            return Ok(());
        }
        let file = self.file.as_mut().ok_or("embed: output already closed")?;
        if let Err(e) = file.flush().and_then(|()| file.get_ref().sync_data()) {
            return Err(self.io_error(e));
        }
        let journal = (self.journal.as_mut()).ok_or("embed: output already closed")?;
        if let Err(e) = journal.write_all(self.unjournaled.as_bytes()) {
            return Err(format!("{}: {e}", self.journal_path.display()));
        }
        self.unjournaled.clear();
        self.journaled = self.kept.len();
        if self.journaled > 0 {
            self.keep = true; // rows to resume from, should the job stop
        }
        Ok(())
    }

    /// What the values written in this run should make a user look twice at:
    /// rows holding NaN or ±inf (broken weights, or inputs), values `--out-dtype
    /// f16` could not hold. Empty when there is nothing to say.
    pub(super) fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(first) = self.first_nonfinite {
            // A resumed job's earlier rows are not read back: the count is this run's.
            let (whose, earlier) = match self.resumed.rows {
                0 => ("", String::new()),
                n => (
                    " of this run",
                    format!("; the {n} rows of the earlier run were not checked again"),
                ),
            };
            out.push(format!(
                "{} row(s){whose} hold NaN or ±inf values, the first for {} (the model's \
                 weights or the image's pixels are not finite?{earlier})",
                self.nonfinite_rows, self.names[first]
            ));
        }
        if self.overflowed > 0 {
            out.push(format!(
                "{} value(s) are past f16's range (±65 504) and were stored as ±inf: use \
                 --out-dtype bf16 or f32",
                self.overflowed
            ));
        }
        out
    }

    /// Rows written so far.
    pub(super) fn rows(&self) -> usize {
        self.kept.len()
    }

    /// A job that stops: the rows written are synced and recorded, and stay for
    /// `--resume`. Returns how many rows there are to resume from.
    pub(super) fn stop(&mut self) -> usize {
        let _ = self.checkpoint();
        self.journaled
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
        // Every batch recorded first: should the renames below fail, the partial
        // file is kept and `--resume` finishes the job without embedding anything.
        self.checkpoint()?;
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
            file.sync_all()?;
            Ok(file)
        })();
        // Renamed while still open (and locked): no other job takes it in between.
        let renamed = done.map_err(|e| self.io_error(e)).and_then(|file| {
            if let Some((tmp, list)) = &list {
                std::fs::rename(tmp, list).map_err(|e| format!("{}: {e}", list.display()))?;
            }
            std::fs::rename(&self.tmp, &self.path)
                .map_err(|e| format!("{}: {e}", self.path.display()))?;
            drop(file);
            Ok(())
        });
        if let (Err(_), Some((tmp, _))) = (&renamed, &list) {
            let _ = std::fs::remove_file(tmp);
        }
        if renamed.is_ok() {
            // Done: the journal has nothing left to resume.
            drop(self.journal.take());
            let _ = std::fs::remove_file(&self.journal_path);
            self.owned = false;
        }
        // Every batch is journaled (above) and the rows stay: --resume finishes.
        renamed.map(|()| kept).map_err(|e| {
            format!(
                "{e}\nevery row is kept in {}: rerun with --resume to write the output \
                 (nothing is embedded again)",
                self.tmp.display()
            )
        })
    }

    /// The header for the rows of path indices `kept`: safetensors' 8-byte
    /// length and JSON (through the safetensors crate's own metadata type), or
    /// the `.npy` magic, version, length and literal padded to 64 bytes.
    fn header(&self, kept: &[usize]) -> Result<Vec<u8>, String> {
        let (n, dim) = (kept.len(), self.cols.dim);
        match self.format {
            Format::Safetensors => {
                let mut meta = HashMap::from([
                    ("model".to_string(), self.model.clone()),
                    ("model_files".to_string(), self.files.clone()),
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
                    dtype: self.cols.dtype.safetensors(),
                    shape: vec![n, dim],
                    data_offsets: (0, n * self.cols.row_bytes()),
                };
                let metadata = Metadata::new(Some(meta), vec![("embeddings".to_string(), info)])
                    .map_err(|e| format!("{}: {e}", self.path.display()))?;
                // Through serde_json's map (sorted keys): the same rows make the same
                // bytes (the crate's type serialises a HashMap in its random order).
                let json = serde_json::to_value(&metadata)
                    .and_then(|v| serde_json::to_vec(&v))
                    .map_err(|e| e.to_string())?;
                let len = json.len().next_multiple_of(8);
                let mut out = (len as u64).to_le_bytes().to_vec();
                out.extend(json);
                out.resize(8 + len, b' ');
                Ok(out)
            }
            Format::Npy => {
                let descr = self
                    .cols
                    .dtype
                    .npy()
                    .ok_or("embed: bf16 in .npy (internal error)")?;
                let lit = format!(
                    "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({n}, {dim}), }}"
                );
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
    /// A job that stops before [`RowWriter::finish`] with no row written leaves
    /// no partial file or journal; one with rows leaves both, to resume from.
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = self.checkpoint();
        }
        // Removed while still open (and locked): no other job takes it in between.
        if self.owned && !self.keep {
            let _ = std::fs::remove_file(&self.tmp);
            let _ = std::fs::remove_file(&self.journal_path);
        }
        drop(self.file.take());
        drop(self.journal.take());
    }
}

/// The batches and rows an earlier run of the job wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Resumed {
    pub batches: usize,
    pub rows: usize,
}

/// How often the rows written are synced and recorded in the journal: after a
/// power cut, at most the batches of this last stretch are embedded again.
pub(super) const CHECKPOINT: Duration = Duration::from_secs(2);

/// The first word of a journal's first line (its format's version with it).
const JOURNAL_MAGIC: &str = "tessera-embed-journal-1";

/// An earlier run's journal: the job it names, and its batches.
struct Journal {
    /// The first line: the magic and the job's identity.
    identity: String,
    /// Batches recorded (0..batches, in order) and their rows' path indices.
    batches: usize,
    kept: Vec<usize>,
    /// Bytes of whole lines (a last line cut short by a kill is not counted).
    valid_bytes: usize,
}

impl Journal {
    /// The job the first line names, when it is one of ours.
    fn job(&self) -> Option<serde_json::Value> {
        let job = self.identity.strip_prefix(JOURNAL_MAGIC)?.trim_start();
        serde_json::from_str(job).ok()
    }

    /// The pixel rules revision the job was journaled under (`Some(None)` for
    /// journals of a tessera that did not record it); `None` when the first line
    /// is no job of ours.
    fn pixels_revision(&self) -> Option<Option<u32>> {
        let job = self.job()?;
        match job.get("pixels") {
            None => Some(None),
            Some(r) => r.as_u64().and_then(|r| u32::try_from(r).ok()).map(Some),
        }
    }

    fn parse(text: &[u8], path: &Path, n_paths: usize) -> Result<Journal, String> {
        let bad = |line: usize, why: &str| {
            format!(
                "{}: line {line}: {why} (not a tessera embed journal?)",
                path.display()
            )
        };
        // Whole lines only: the last one without its newline was cut short.
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let text = std::str::from_utf8(&text[..whole]).map_err(|_| bad(1, "not UTF-8"))?;
        let mut lines = text.lines();
        let identity = lines.next().unwrap_or_default().to_string();
        if !identity.starts_with(JOURNAL_MAGIC) {
            return Err(bad(1, "no journal header"));
        }
        let mut j = Journal {
            identity,
            batches: 0,
            kept: Vec::new(),
            valid_bytes: whole,
        };
        for (n, line) in lines.enumerate() {
            let mut words = line.split(' ').map(str::parse::<usize>);
            if words.next().and_then(Result::ok) != Some(j.batches) {
                return Err(bad(n + 2, &format!("expected batch {}", j.batches)));
            }
            for w in words {
                match w {
                    Ok(i) if i < n_paths && j.kept.last().is_none_or(|&l| l < i) => j.kept.push(i),
                    _ => return Err(bad(n + 2, "not an increasing list of path indices")),
                }
            }
            j.batches += 1;
        }
        Ok(j)
    }
}

/// FNV-1a (64 bits) of the paths, each ended by a 0 byte: a stable digest that
/// tells a resumed job's paths from another list.
fn digest(names: &[String]) -> u64 {
    fnv1a(names.iter().flat_map(|n| n.bytes().chain([0])))
}

/// FNV-1a (64 bits) of `bytes`: tells changed contents apart (not a checksum
/// against tampering).
pub(super) fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `path` with `suffix` added to its file name (`e.npy` → `e.npy.partial`).
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `OUT.paths.txt` beside `OUT.npy` / `OUT.safetensors`.
pub(super) fn paths_file(path: &Path) -> PathBuf {
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

/// Write `bytes` over `path` whole or not at all: into `path.tmp-PID`, synced,
/// then renamed over it (`tessera run --output`).
pub fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = write_synced(path, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

/// A setting of the journal as an option reads: `max_patches Some(4096)` as
/// `max_patches 4096`, `max_patches None` as `max_patches unset`.
fn shown(setting: &str) -> String {
    if let Some(name) = setting.strip_suffix(" None") {
        return format!("{name} unset");
    }
    match setting.split_once(" Some(") {
        Some((name, v)) => format!("{name} {}", v.strip_suffix(')').unwrap_or(v)),
        None => setting.to_string(),
    }
}

/// What differs between two jobs' identities (the journal's first line): the
/// settings that differ, by name and value, the input paths, the output format;
/// `None` when none of them differs.
fn job_differences(then: &serde_json::Value, now: &serde_json::Value) -> Option<String> {
    let get = |v: &serde_json::Value, k: &str| v.get(k).cloned().unwrap_or_default();
    let mut out = Vec::new();
    let (a, b) = (get(then, "settings"), get(now, "settings"));
    if a != b {
        let (a, b) = (a.as_str().unwrap_or(""), b.as_str().unwrap_or(""));
        let (pa, pb): (Vec<&str>, Vec<&str>) = (a.split(", ").collect(), b.split(", ").collect());
        let gone: Vec<String> = pa
            .iter()
            .filter(|p| !pb.contains(p))
            .map(|p| shown(p))
            .collect();
        let new: Vec<String> = pb
            .iter()
            .filter(|p| !pa.contains(p))
            .map(|p| shown(p))
            .collect();
        out.push(match (gone.is_empty(), new.is_empty()) {
            (true, _) => format!("this job adds {}", new.join(", ")),
            (_, true) => format!("this job drops {}", gone.join(", ")),
            _ => format!(
                "its {} against this job's {}",
                gone.join(", "),
                new.join(", ")
            ),
        });
    }
    if get(then, "paths") != get(now, "paths")
        || get(then, "paths_digest") != get(now, "paths_digest")
    {
        out.push(format!(
            "other input paths ({} then, {} now)",
            get(then, "paths"),
            get(now, "paths")
        ));
    }
    for (key, what) in [
        ("format", "output format"),
        ("dim", "embedding width"),
        ("dtype", "--out-dtype"),
    ] {
        if get(then, key) != get(now, key) {
            out.push(format!("another {what}"));
        }
    }
    (!out.is_empty()).then(|| out.join("; "))
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

    /// A resumed job's refusal names the setting that differs, by its values.
    #[test]
    fn job_differences_name_the_setting() {
        let job = |settings: &str, paths: usize, dtype: Option<&str>| {
            let mut v = serde_json::json!({
                "format": "Safetensors", "dim": 8, "paths": paths,
                "paths_digest": format!("{paths:x}"), "settings": settings,
            });
            if let Some(d) = dtype {
                v["dtype"] = d.into();
            }
            v
        };
        let a = "model m, dtype F32, pooling Head, normalize true, batch 32, max_patches None";
        let b = "model m, dtype F32, pooling Head, normalize true, batch 16, max_patches None";
        assert_eq!(
            super::job_differences(&job(a, 3, None), &job(b, 3, None)).as_deref(),
            Some("its batch 32 against this job's batch 16")
        );
        assert_eq!(
            super::job_differences(&job(a, 3, None), &job(&format!("{a}, upright"), 3, None))
                .as_deref(),
            Some("this job adds upright")
        );
        let c = "model m, dtype F32, pooling Head, normalize true, batch 32, max_patches Some(64)";
        assert_eq!(
            super::job_differences(&job(a, 3, None), &job(c, 3, None)).as_deref(),
            Some("its max_patches unset against this job's max_patches 64")
        );
        assert_eq!(
            super::job_differences(&job(a, 3, None), &job(a, 4, Some("F16"))).as_deref(),
            Some("other input paths (3 then, 4 now); another --out-dtype")
        );
    }

    const JOB: JobNames = JobNames {
        model: "m",
        settings: "s",
        files: "config 1, commit a",
        weights: Some("model.safetensors 10 1"),
    };

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
        let mut w = RowWriter::create(&out, &all, Columns::f32(dim), &JOB, false).unwrap();
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
        assert_eq!(meta["model_files"], JOB.files);
        assert!(!dir.join("e.paths.txt").exists());
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
    }

    /// f16 and bf16 rows: the values rounded to nearest-even once (checked on
    /// values whose halves are exact and on ones that round), in both formats
    /// where they exist; bf16 in .npy is refused before any file is made; a
    /// resumed job must keep its element type.
    #[test]
    fn half_precision_rows() {
        let dir = folder("half");
        let all = paths(10);
        // 1/3 and friends round; 0.25 + integers below 2^11 are exact in f16.
        let value = |i: usize, j: usize| (i * 100 + j) as f32 / 3.0;
        let rows = |w: &mut RowWriter| {
            for b in 0..5 {
                let r = (2 * b..2 * b + 2)
                    .map(|i| (i, (0..4).map(|j| value(i, j)).collect()))
                    .collect();
                w.accept(b, r).unwrap();
            }
        };
        let want = |f: fn(f32) -> [u8; 2]| -> Vec<u8> {
            (0..10)
                .flat_map(|i| (0..4).map(move |j| value(i, j)))
                .flat_map(f)
                .collect()
        };
        let f16 = want(|x| half::f16::from_f32(x).to_le_bytes());
        let bf16 = want(|x| half::bf16::from_f32(x).to_le_bytes());
        for (dtype, st_dtype, bytes) in [
            (OutDtype::F16, safetensors::Dtype::F16, &f16),
            (OutDtype::Bf16, safetensors::Dtype::BF16, &bf16),
        ] {
            let out = dir.join(format!("{dtype:?}.safetensors"));
            let cols = Columns { dim: 4, dtype };
            let mut w = RowWriter::create(&out, &all, cols, &JOB, false).unwrap();
            rows(&mut w);
            w.finish(5).unwrap();
            let file = std::fs::read(&out).unwrap();
            let st = SafeTensors::deserialize(&file).unwrap();
            let t = st.tensor("embeddings").unwrap();
            assert_eq!((t.dtype(), t.shape()), (st_dtype, &[10, 4][..]));
            assert_eq!(t.data(), bytes.as_slice(), "{dtype:?}");
        }
        let out = dir.join("h.npy");
        let cols = Columns {
            dim: 4,
            dtype: OutDtype::F16,
        };
        let mut w = RowWriter::create(&out, &all, cols, &JOB, false).unwrap();
        rows(&mut w);
        w.finish(5).unwrap();
        let file = std::fs::read(&out).unwrap();
        let hlen = u16::from_le_bytes([file[8], file[9]]) as usize;
        let lit = std::str::from_utf8(&file[10..10 + hlen]).unwrap();
        assert!(lit.starts_with("{'descr': '<f2'"), "{lit}");
        assert_eq!(&file[10 + hlen..], f16.as_slice());
        let bf = Columns {
            dim: 4,
            dtype: OutDtype::Bf16,
        };
        let err = RowWriter::create(&dir.join("b.npy"), &all, bf, &JOB, false)
            .err()
            .unwrap();
        assert!(err.contains("bfloat16"), "{err}");
        assert!(!dir.join("b.npy.partial").exists());
        // A stopped f16 job resumes only as f16.
        let out = dir.join("r.safetensors");
        let mut w = RowWriter::create(&out, &all, cols, &JOB, false).unwrap();
        w.accept(0, vec![(0, vec![1.0; 4]), (1, vec![2.0; 4])])
            .unwrap();
        assert_eq!(w.stop(), 2);
        drop(w);
        let err = RowWriter::create(&out, &all, Columns::f32(4), &JOB, true)
            .err()
            .unwrap();
        assert!(err.contains("another job"), "{err}");
        let w = RowWriter::create(&out, &all, cols, &JOB, true).unwrap();
        assert_eq!(w.resumed().rows, 2);
    }

    #[test]
    fn npy_header_padded_to_64_and_paths_beside() {
        let dir = folder("npy");
        let out = dir.join("e.npy");
        let (dim, all) = (3, paths(10));
        let mut w = RowWriter::create(&out, &all, Columns::f32(dim), &JOB, false).unwrap();
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
        let mut w = RowWriter::with_limit(&out, &all, Columns::f32(dim), &JOB, false, 200).unwrap();
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
        let w = RowWriter::with_limit(
            &dir.join("f.safetensors"),
            &all,
            Columns::f32(dim),
            &JOB,
            false,
            10_000,
        )
        .unwrap();
        assert_eq!(w.paths_file(), None);
    }

    #[test]
    fn unfinished_or_inconsistent_jobs_leave_nothing() {
        let dir = folder("fail");
        let out = dir.join("e.safetensors");
        let all = paths(4);
        let create =
            |out: &Path| RowWriter::create(out, &all, Columns::f32(2), &JOB, false).unwrap();
        // Dropped before finishing with no row written (a job failing at once).
        let mut w = create(&out);
        w.accept(0, vec![]).unwrap();
        drop(w);
        // A batch answered twice, a row of the wrong width: nothing written.
        let mut w = create(&out);
        w.accept(1, vec![(2, vec![1.0, 2.0])]).unwrap();
        assert!(w.accept(1, vec![]).unwrap_err().contains("twice"));
        assert!(w
            .accept(0, vec![(0, vec![1.0])])
            .unwrap_err()
            .contains("expected 2"));
        drop(w);
        // Every image skipped.
        let mut w = create(&out);
        w.accept(0, vec![]).unwrap();
        assert!(w.finish(1).unwrap_err().contains("no image"));
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(left.is_empty(), "files left: {left:?}");
        // A batch missing at the end: an error, and the rows stay to resume from.
        let mut w = create(&out);
        w.accept(0, vec![(0, vec![1.0, 2.0])]).unwrap();
        assert!(w.finish(2).unwrap_err().contains("1 of 2 batches"));
        let mut left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["e.safetensors.partial", "e.safetensors.partial.journal"]
        );
        // An output in a folder that does not exist fails at once, naming it.
        let err = RowWriter::create(
            &dir.join("no/such/e.npy"),
            &all,
            Columns::f32(2),
            &JOB,
            false,
        )
        .err()
        .unwrap();
        assert!(err.contains("no/such"), "{err}");
    }

    /// The tensor and paths of a finished safetensors output.
    fn read_out(out: &Path) -> (Vec<u8>, Vec<String>) {
        let bytes = std::fs::read(out).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let data = st.tensor("embeddings").unwrap().data().to_vec();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let names = serde_json::from_str(&meta.metadata().clone().unwrap()["paths"]).unwrap();
        (data, names)
    }

    /// A job stopped after two batches goes on with --resume and makes the file an
    /// uninterrupted job makes: rows past the journal and a torn journal line
    /// (a kill between the two writes) are dropped and done again.
    #[test]
    fn a_stopped_job_resumes_to_the_same_output() {
        let dir = folder("resume");
        let (dim, all) = (3, paths(10));
        let whole = dir.join("whole.safetensors");
        let mut w = RowWriter::create(&whole, &all, Columns::f32(dim), &JOB, false).unwrap();
        feed(&mut w, dim);
        w.finish(5).unwrap();

        let out = dir.join("e.safetensors");
        let (partial, journal) = (
            dir.join("e.safetensors.partial"),
            dir.join("e.safetensors.partial.journal"),
        );
        let mut w = RowWriter::create(&out, &all, Columns::f32(dim), &JOB, false).unwrap();
        // Batch 1 is wholly skipped, as in `feed`.
        w.accept(0, vec![(0, row(0, dim)), (1, row(1, dim))])
            .unwrap();
        w.accept(1, vec![]).unwrap();
        drop(w); // the job failed here
                 // A kill while batch 2 was being recorded: its rows written, its line torn.
        let mut f = OpenOptions::new().append(true).open(&partial).unwrap();
        f.write_all(&[7u8; 4 * 3 * 2]).unwrap();
        let mut f = OpenOptions::new().append(true).open(&journal).unwrap();
        f.write_all(b"2 4").unwrap();
        drop(f);

        // Without --resume the rows are not thrown away.
        let err = RowWriter::create(&out, &all, Columns::f32(dim), &JOB, false)
            .err()
            .unwrap();
        assert!(
            err.contains("holds 2 rows") && err.contains("--resume"),
            "{err}"
        );
        // Another job's settings or paths do not resume it.
        let other = JobNames {
            settings: "other",
            ..JOB
        };
        let err = RowWriter::create(&out, &all, Columns::f32(dim), &other, true)
            .err()
            .unwrap();
        // The difference named, without the two identities in full.
        assert!(
            err.contains("another job") && !err.contains("this job: {"),
            "{err}"
        );
        assert!(
            err.contains(&format!("its {} against this job's other", JOB.settings)),
            "{err}"
        );
        // Other model files (a config changed in place, a hub commit moved) do not
        // resume it; the weights are the caller's to compare.
        let moved = JobNames {
            files: "config 2, commit b",
            ..JOB
        };
        let err = RowWriter::create(&out, &all, Columns::f32(dim), &moved, true)
            .err()
            .unwrap();
        assert!(
            err.contains("model's files")
                && err.contains("then: config 1, commit a; now: config 2, commit b"),
            "{err}"
        );
        let err = RowWriter::create(&out, &paths(11), Columns::f32(dim), &JOB, true)
            .err()
            .unwrap();
        assert!(
            err.contains("another job") && err.contains("other input paths (10 then, 11 now)"),
            "{err}"
        );
        let reweighed = JobNames {
            weights: Some("model.safetensors 10 2"),
            ..JOB
        };
        let w = RowWriter::create(&out, &all, Columns::f32(dim), &reweighed, true).unwrap();
        assert_eq!(w.earlier_weights(), JOB.weights);
        drop(w);

        let mut w = RowWriter::create(&out, &all, Columns::f32(dim), &JOB, true).unwrap();
        assert_eq!(
            w.resumed(),
            Resumed {
                batches: 2,
                rows: 2
            }
        );
        assert_eq!(w.resumed_skips(2), [2, 3]);
        // While it runs, a second job on the same output fails at once.
        let err = RowWriter::create(&out, &all, Columns::f32(dim), &JOB, true)
            .err()
            .unwrap();
        assert!(err.contains("another tessera embed"), "{err}");
        let batch = |b: usize, skip: &[usize]| -> Vec<(usize, Vec<f32>)> {
            (2 * b..2 * b + 2)
                .filter(|i| !skip.contains(i))
                .map(|i| (i, row(i, dim)))
                .collect()
        };
        for b in [4, 2, 3] {
            w.accept(b, batch(b, &[6])).unwrap();
        }
        w.finish(5).unwrap();
        assert_eq!(read_out(&out), read_out(&whole));
        assert!(!partial.exists() && !journal.exists());
    }

    /// --resume with nothing to resume, and journals that are not ours.
    #[test]
    fn resume_errors_name_the_files() {
        let dir = folder("resume_err");
        let out = dir.join("e.npy");
        let all = paths(6);
        let err = RowWriter::create(&out, &all, Columns::f32(2), &JOB, true)
            .err()
            .unwrap();
        assert!(err.contains("no earlier run"), "{err}");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(left.is_empty(), "files left: {left:?}");
        // A finished job: the output is there, nothing partial.
        std::fs::write(&out, b"done").unwrap();
        let err = RowWriter::create(&out, &all, Columns::f32(2), &JOB, true)
            .err()
            .unwrap();
        assert!(err.contains("already written"), "{err}");
        assert_eq!(std::fs::read(&out).unwrap(), b"done");
        assert!(!dir.join("e.npy.partial").exists());
        std::fs::remove_file(&out).unwrap();
        let journal = dir.join("e.npy.partial.journal");
        for (text, want) in [
            ("not a journal\n", "line 1: no journal header"),
            (
                "tessera-embed-journal-1 {}\n1 0\n",
                "line 2: expected batch 0",
            ),
            (
                "tessera-embed-journal-1 {}\n0 1 0\n",
                "line 2: not an increasing",
            ),
            (
                "tessera-embed-journal-1 {}\n0 9\n",
                "line 2: not an increasing",
            ),
        ] {
            std::fs::write(dir.join("e.npy.partial"), [0u8; 200]).unwrap();
            std::fs::write(&journal, text).unwrap();
            let err = RowWriter::create(&out, &all, Columns::f32(2), &JOB, true)
                .err()
                .unwrap();
            assert!(
                err.contains("e.npy.partial.journal") && err.contains(want),
                "{err}"
            );
        }
        // A journal of this job whose partial file lost rows.
        let mut w =
            RowWriter::create(&dir.join("f.npy"), &all, Columns::f32(2), &JOB, false).unwrap();
        w.accept(0, vec![(0, vec![1.0, 2.0])]).unwrap();
        drop(w);
        let partial = dir.join("f.npy.partial");
        let len = std::fs::metadata(&partial).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&partial)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        let err = RowWriter::create(&dir.join("f.npy"), &all, Columns::f32(2), &JOB, true)
            .err()
            .unwrap();
        assert!(err.contains("fewer than the 1 rows"), "{err}");
    }

    /// A job journaled under other pixel rules (an older tessera's, whose journal
    /// has no revision, or another), or by a tessera that did not record the
    /// model's files, is not resumed: its rows and new ones would not agree. Under
    /// the same rules it is.
    #[test]
    fn a_job_of_other_pixel_rules_or_older_journal_is_not_resumed() {
        let dir = folder("resume_rules");
        let out = dir.join("g.npy");
        let all = paths(6);
        let journal = dir.join("g.npy.partial.journal");
        let later = PIXELS_REVISION + 1;
        let differently = "reads images differently";
        // (key of the journal's job, its value there (None: absent), refused as)
        type Case = (&'static str, Option<serde_json::Value>, Option<[String; 2]>);
        let cases: [Case; 5] = [
            (
                "pixels",
                None,
                Some([differently.into(), "none recorded".into()]),
            ),
            (
                "pixels",
                Some(1.into()),
                Some([differently.into(), "revision 1;".into()]),
            ),
            (
                "pixels",
                Some(later.into()),
                Some([differently.into(), format!("revision {later};")]),
            ),
            // A journal of the tessera before model files were recorded.
            (
                "files",
                None,
                Some([
                    "model's files".into(),
                    "none recorded: an older tessera".into(),
                ]),
            ),
            ("pixels", Some(PIXELS_REVISION.into()), None),
        ];
        for (key, value, refused_as) in cases {
            let mut w = RowWriter::create(&out, &all, Columns::f32(2), &JOB, false).unwrap();
            w.accept(0, vec![(0, vec![1.0, 2.0])]).unwrap();
            drop(w);
            let text = std::fs::read_to_string(&journal).unwrap();
            let (first, rest) = text.split_once('\n').unwrap();
            let json = first.strip_prefix(JOURNAL_MAGIC).unwrap();
            let mut job: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(job["pixels"], PIXELS_REVISION);
            assert_eq!(job["files"], JOB.files);
            let fields = job.as_object_mut().unwrap();
            match value {
                None => fields.remove(key),
                Some(v) => fields.insert(key.into(), v),
            };
            let edited = format!("{JOURNAL_MAGIC} {job}\n{rest}");
            std::fs::write(&journal, edited).unwrap();
            let resumed = RowWriter::create(&out, &all, Columns::f32(2), &JOB, true);
            match refused_as {
                None => {
                    let w = resumed.unwrap();
                    assert_eq!(w.resumed().rows, 1);
                }
                Some(words) => {
                    let err = resumed.err().unwrap();
                    assert!(words.iter().all(|w| err.contains(w)), "{key}: {err}");
                }
            }
            for f in ["g.npy.partial", "g.npy.partial.journal"] {
                let _ = std::fs::remove_file(dir.join(f));
            }
        }
    }
}
