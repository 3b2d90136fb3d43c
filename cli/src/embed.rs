//! `tessera embed`: image files → one file of embeddings, the job people run a
//! vision tower for.
//!
//! - Inputs: files, folders (recursive, sorted; images by extension: PNG, JPEG,
//!   WebP, GIF, BMP, TIFF) and `@list.txt` files (one path a line; blank lines and
//!   `#` comments skipped), in the order given.
//! - Decoding and preprocessing run in parallel (rayon), one task per file with
//!   no barrier per batch, a window of files ahead of the batch being assembled
//!   (`embed/decode.rs`); batches are queued two per device ahead. Each device
//!   has a worker thread with its own copy of the model; batches go to whichever
//!   device is free, rows land in path order.
//! - A file that cannot be read or decoded is reported by path and skipped
//!   (`--strict`: the job stops at it).
//! - The output (safetensors `embeddings` [N, D] with the paths in order in its
//!   metadata, or `.npy` plus a `.paths.txt`) is written row by row as batches
//!   finish, to `OUT.partial` renamed at the end (`embed/output.rs`): memory
//!   holds only batches that finished ahead of an earlier one, not the collection,
//!   and an interrupted job never leaves a half file. A journal of the batches
//!   written lets `--resume` go on from where a stopped job was.
//! - A model with memory-gated attention embeds its images as one stream of
//!   segments, in order, on one device (the bank carries from image to image).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tessera::model::{Architecture, ImagePatches, PackedBatch};
use tessera::model::{ConfigFiles, ModelFiles, VisionConfig, VisionModel, VisionOutput};
use tessera::preprocess::{ImageProcessor, Siglip2Processor};
use tessera::{bf16, Cpu, Cuda, DType, DeviceBuffer, Element, Kernels, Wgpu};

use crate::devices::{DeviceChoice, Opened};

mod decode;
mod output;

use output::RowWriter;
pub use output::{write_replacing, OutDtype};

/// How an image's embedding is taken from the model's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pooling {
    /// The pooling head's output where the model has one, else the mean.
    Auto,
    /// The pooling head's output (`pooler_output`).
    Head,
    /// The mean of `last_hidden_state` over the tokens.
    Mean,
}

/// `tessera embed` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct EmbedArgs {
    /// Model folder or hub id (as for `tessera run`).
    #[arg(long, value_name = "DIR|ORG/NAME")]
    pub model: PathBuf,
    /// With a hub id: its branch, tag or commit (as for `tessera run`).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Image files, folders (searched recursively, sorted) or @list.txt files.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,
    /// Output file: NAME.safetensors (tensor `embeddings` [N, D], the paths in the
    /// metadata) or NAME.npy (with NAME.paths.txt beside it).
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Devices, comma-separated (e.g. cuda:0,cuda:1 or cuda,cpu): batches are
    /// spread over them.
    #[arg(
        long,
        default_value = "auto",
        value_delimiter = ',',
        value_name = "DEVICE[,DEVICE...]"
    )]
    pub device: Vec<DeviceChoice>,
    /// Element type of weights and activations.
    #[arg(long, default_value = "f32", value_name = "f32|bf16")]
    pub dtype: DType,
    /// Which output is the embedding.
    #[arg(long, value_enum, default_value_t = Pooling::Auto)]
    pub pooling: Pooling,
    /// Scale each embedding to unit L2 norm.
    #[arg(long)]
    pub normalize: bool,
    /// Stop at the first file that cannot be read or decoded (default: skip it).
    #[arg(long)]
    pub strict: bool,
    /// SigLIP 2: the most patches per image (default: the model's
    /// preprocessor_config.json `max_num_patches`, else 256). Each batch is
    /// packed: its cost follows the images' real patches.
    #[arg(long, value_name = "N")]
    pub max_patches: Option<usize>,
    /// Turn each image upright by its orientation (EXIF, else XMP) first, as
    /// transformers' load_image does (ImageOps.exif_transpose). Default: the pixels
    /// as an image processor given Image.open(f) sees them (as stored; TIFFs
    /// upright, as Pillow opens them).
    #[arg(long)]
    pub upright: bool,
    /// Decode JPEGs at 1/2, 1/4 or 1/8 of their size where that still covers
    /// the model's input (Pillow's Image.draft before the image processor):
    /// 2-3x less host time for a 12 MP photo, whose decoding bounds a job on a
    /// GPU. The embeddings are then those of a Pillow pipeline that drafts, not
    /// transformers' (which decodes in full): close, not equal.
    #[arg(long)]
    pub jpeg_draft: bool,
    /// How the embeddings are stored: f32, or f16 / bf16 (half the bytes; the
    /// values rounded once from f32). bf16 only in .safetensors (numpy has none).
    #[arg(long, value_enum, default_value_t = OutDtype::F32)]
    pub out_dtype: OutDtype,
    /// Go on from OUT.partial, which an earlier run of this job (same inputs and
    /// options) left when it stopped: the batches it wrote are not embedded again.
    #[arg(long)]
    pub resume: bool,
}

/// What a finished job did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub embedded: usize,
    pub skipped: Vec<(PathBuf, String)>,
    pub dim: usize,
    pub seconds: f64,
    /// The seconds from the moment the first device was ready (its model loaded)
    /// to the end: `seconds` less the start-up (model loading, kernel modules).
    pub serving_seconds: f64,
    pub devices: Vec<String>,
    /// Where the time went: decoding or the devices.
    pub balance: Balance,
    /// Rows that came from an earlier run (`--resume`), included in `embedded`.
    pub resumed: usize,
    /// Images in formats tessera does not decode that the folder walks left out
    /// (see [`left_out_note`]).
    pub left_out: LeftOut,
    /// What the values written call for a second look at (non-finite rows, f16
    /// overflow), one line each.
    pub warnings: Vec<String>,
}

/// What limited a job: the host decoding images, or the devices embedding them.
#[derive(Debug, Clone, PartialEq)]
pub struct Balance {
    /// Thread time per decoded file (seconds), and the threads that decode.
    pub decode_seconds_per_image: f64,
    pub decode_threads: usize,
    /// The share of the decoding thread's time spent waiting for a device to take
    /// a batch (the devices were behind).
    pub decoding_waited: f64,
    /// The share of the device workers' time spent waiting for a decoded batch
    /// (decoding was behind). On a GPU this wait overlaps the batch in flight,
    /// so it counts the device idle a little more than it was.
    pub devices_waited: f64,
}

impl Balance {
    /// Which side held the job back: the one the other waited for, when that
    /// wait is a tenth of the time or more.
    pub fn limit(&self) -> &'static str {
        if self.devices_waited >= 0.1 && self.devices_waited > self.decoding_waited {
            "decoding limited this job"
        } else if self.decoding_waited >= 0.1 && self.decoding_waited > self.devices_waited {
            "the devices limited this job"
        } else {
            "decoding and the devices kept pace"
        }
    }
}

/// Image extensions a folder walk picks up.
const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"];

/// Extensions of image formats tessera does not decode (phone photos in HEIC,
/// AVIF, camera raw, ...): a folder walk leaves them out and counts them, and the
/// job says so once ([`left_out_note`]) instead of passing over them silently.
const UNDECODED_EXTENSIONS: [&str; 20] = [
    "heic", "heif", "hif", "avif", "jxl", "qoi", "exr", "hdr", "tga", "dds", "ico", "psd", "dng",
    "cr2", "cr3", "nef", "arw", "orf", "rw2", "raf",
];

/// Files a folder walk left out, by lowercase extension.
pub type LeftOut = std::collections::BTreeMap<String, usize>;

/// One line on the images a folder walk left out, or `None` if it left none.
pub fn left_out_note(left_out: &LeftOut) -> Option<String> {
    if left_out.is_empty() {
        return None;
    }
    let counts: Vec<String> = left_out
        .iter()
        .map(|(ext, n)| format!("{n} .{ext}"))
        .collect();
    let example = left_out.keys().next().map_or("heic", String::as_str);
    Some(format!(
        "left out {} file(s) found in folders, in formats tessera does not decode ({} \
         are): convert them first, e.g. `magick mogrify -format png *.{example}`",
        counts.join(", "),
        tessera::preprocess::SUPPORTED_FORMATS
    ))
}

/// What [`collect_paths`] found.
#[derive(Debug, Default)]
pub struct Collected {
    /// The images, in order.
    pub paths: Vec<PathBuf>,
    /// Images in formats tessera does not decode that the folder walks left out.
    pub left_out: LeftOut,
    /// What the folder walks and lists could not take: a subfolder that could not
    /// be read, a special file (a FIFO, a socket, a device); each with the reason.
    pub passed_over: Vec<(PathBuf, String)>,
}

/// The paths of `inputs`, in order: files as given, folders walked recursively
/// (sorted, image extensions only; within one walk each folder once: a link back
/// into a walked folder is not followed again; a folder named twice is walked
/// twice, as a file named twice makes two rows), `@list` files read line by line
/// (a folder listed is walked). An input that does not exist is an error, unless `resume`
/// (the job's paths are those it started with); a list's lines are taken as they
/// are (a missing file is skipped when it is read, as an unreadable one).
pub fn collect_paths(inputs: &[String], resume: bool) -> Result<Collected, String> {
    let mut c = Collected::default();
    // Each folder input is walked as given, with a set of its own (a folder named
    // twice gives its images twice, as a file named twice does).
    use std::collections::HashSet;
    for input in inputs {
        if let Some(list) = input.strip_prefix('@') {
            let list = Path::new(list);
            if list.as_os_str().is_empty() {
                return Err(format!("{input}: an @list needs a file name after the @"));
            }
            let (text, regular) = read_list(list)?;
            // A list file's relative paths are relative to its folder; a pipe's
            // (`@/dev/stdin`, `@<(find …)`) to the current folder, where the
            // command that wrote them ran.
            let base = match list.parent() {
                Some(parent) if regular => parent,
                _ => Path::new(""),
            };
            for line in list_entries(&text) {
                let p = line_path(line);
                let p = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    base.join(p)
                };
                match std::fs::metadata(&p) {
                    Ok(meta) if meta.is_dir() => walk(&p, &mut c, &mut HashSet::new())
                        .map_err(|e| format!("{}: {e}", p.display()))?,
                    // Reading a FIFO would wait for a writer forever.
                    Ok(meta) if !meta.is_file() => c
                        .passed_over
                        .push((p.clone(), format!("{}: not a regular file", p.display()))),
                    _ => c.paths.push(p),
                }
            }
        } else {
            let p = PathBuf::from(input);
            if p.is_dir() {
                walk(&p, &mut c, &mut HashSet::new())
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            } else {
                // A typo on the command line fails at once; a list's missing files
                // are skipped with the unreadable ones (and listed at the end), and
                // so are a resumed job's (a file embedded, then deleted: the job's
                // paths stay those it was started with).
                match std::fs::metadata(&p) {
                    Ok(meta) if meta.is_file() => c.paths.push(p),
                    // A FIFO would wait for a writer forever, and a device's bytes
                    // are no file to name a row by: passed over, as in a list.
                    Ok(_) => {
                        let why = format!("{}: not a regular file", p.display());
                        c.passed_over.push((p, why));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        if resume {
                            c.paths.push(p);
                        } else {
                            return Err(format!("{}: no such file or folder", p.display()));
                        }
                    }
                    Err(e) => return Err(format!("{}: {e}", p.display())),
                }
            }
        }
    }
    // Row i is named by path i in the output (JSON text, or a line of
    // OUT.paths.txt): a name that is not UTF-8, or holds a line break, could not
    // be read back as the file's.
    let (paths, unnamed): (Vec<PathBuf>, Vec<PathBuf>) = std::mem::take(&mut c.paths)
        .into_iter()
        .partition(|p| p.to_str().is_some_and(|s| !s.contains(['\n', '\r'])));
    c.paths = paths;
    for p in unnamed {
        let why = format!(
            "{}: a name that is not UTF-8 or holds a line break cannot be stored with its row \
             (rename the file)",
            p.display()
        );
        c.passed_over.push((p, why));
    }
    Ok(c)
}

/// The paths an `@list` names: one a line, the line as it is but for its end
/// (`\n` or `\r\n`) and a byte-order mark at the start of the text; blank lines
/// and lines starting with `#` (comments) are not paths (list a file named
/// `#x.png` as `./#x.png`). Lines are bytes: a name that is not UTF-8 is passed
/// over later, with the reason, as a folder walk's is.
fn list_entries(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(text);
    text.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.trim_ascii().is_empty() && !line.starts_with(b"#"))
}

/// A list line as a path: its bytes on Unix, where names are bytes; elsewhere
/// its text (a line that is not UTF-8 then names no file there is).
fn line_path(line: &[u8]) -> PathBuf {
    #[cfg(unix)]
    return PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(line));
    #[cfg(not(unix))]
    PathBuf::from(String::from_utf8_lossy(line).into_owned())
}

/// What a resumed job checks the model against (its journal records both): the
/// configuration files' digests, and the hub commit of a cached hub model, whose
/// snapshot folder holds that commit's files only; and, for a local folder, the
/// weight files' names, sizes and modification times (`None` for a hub model,
/// whose commit names them, or where no weights are found: loading them says why).
fn model_files(model: &ConfigFiles) -> Result<(String, Option<String>), String> {
    let digest = |path: &Path| {
        std::fs::read(path)
            .map(|bytes| format!("{:016x}", output::fnv1a(bytes)))
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut files = format!("config {}", digest(&model.config)?);
    if let Some(p) = &model.preprocessor {
        files += &format!(", preprocessor {}", digest(p)?);
    }
    if model.hub_id.is_some() {
        if let Some(commit) = model.dir.file_name() {
            files += &format!(", commit {}", commit.to_string_lossy());
        }
        return Ok((files, None));
    }
    // model.safetensors, or the index and its shards (model-00001-of-00002...).
    let Ok(listing) = std::fs::read_dir(&model.dir) else {
        return Ok((files, None));
    };
    let mut weights: Vec<String> = listing
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let weight = name.starts_with("model")
                && (name.ends_with(".safetensors") || name.ends_with(".safetensors.index.json"));
            // The file linked to, for links (a hub snapshot named as a folder).
            let meta = std::fs::metadata(entry.path()).ok().filter(|_| weight)?;
            let time = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            Some(format!("{name} {} {time}", meta.len()))
        })
        .collect();
    weights.sort();
    Ok((files, Some(weights.join("; ")).filter(|w| !w.is_empty())))
}

/// The largest `--batch`: 4096 images of so400m are ~7 GB of f32 pixels alone.
pub const MAX_BATCH: usize = 4096;

/// The largest `@list` file read (256 MiB: millions of paths).
const MAX_LIST_BYTES: u64 = 256 << 20;

/// An `@list` file's text (a file, or a pipe such as `@/dev/stdin` or
/// `@<(find …)`): at most [`MAX_LIST_BYTES`] bytes; and whether it is a regular
/// file (not a pipe).
fn read_list(list: &Path) -> Result<(Vec<u8>, bool), String> {
    use std::io::Read;
    let name = list.display();
    let file = std::fs::File::open(list).map_err(|e| format!("{name}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{name}: {e}"))?;
    if meta.is_dir() {
        return Err(format!("{name}: an @list is a file of paths, not a folder"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_LIST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() as u64 > MAX_LIST_BYTES {
        return Err(format!(
            "{name}: an @list of more than {MAX_LIST_BYTES} bytes"
        ));
    }
    Ok((bytes, meta.is_file()))
}

/// Walk `dir` (already known to be a folder) into `c`, sorted, each folder once
/// (`walked`: the folders' canonical paths, so that links back into a walked
/// folder end). A subfolder that cannot be read is passed over (and named); only
/// `dir` itself failing is an error.
fn walk(
    dir: &Path,
    c: &mut Collected,
    walked: &mut std::collections::HashSet<PathBuf>,
) -> std::io::Result<()> {
    if !walked.insert(std::fs::canonicalize(dir)?) {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for p in entries {
        // Links followed: the file or folder linked to.
        let meta = match std::fs::metadata(&p) {
            Ok(meta) => meta,
            // A dangling link, or one whose target cannot be reached: reported
            // with the file, if it is named like an image.
            Err(_) => {
                if image_extension(&p).is_some() {
                    c.paths.push(p);
                }
                continue;
            }
        };
        if meta.is_dir() {
            // (A link to a folder walked already returns at once.)
            if let Err(e) = walk(&p, c, walked) {
                c.passed_over
                    .push((p.clone(), format!("{}: folder not read: {e}", p.display())));
            }
            continue;
        }
        match image_extension(&p) {
            Some(true) if meta.is_file() => c.paths.push(p),
            // Reading a FIFO named x.png would wait for a writer forever.
            Some(true) => c
                .passed_over
                .push((p.clone(), format!("{}: not a regular file", p.display()))),
            Some(false) => {
                if let Some(ext) = p.extension().and_then(|e| e.to_str()) {
                    *c.left_out.entry(ext.to_ascii_lowercase()).or_default() += 1;
                }
            }
            None => {}
        }
    }
    Ok(())
}

/// `Some(true)` for a name a folder walk takes as an image, `Some(false)` for an
/// image format tessera does not decode (counted in [`LeftOut`]), else `None`.
fn image_extension(p: &Path) -> Option<bool> {
    let ext = p.extension()?.to_str()?.to_ascii_lowercase();
    if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
        Some(true)
    } else if UNDECODED_EXTENSIONS.contains(&ext.as_str()) {
        Some(false)
    } else {
        None
    }
}

/// One preprocessed image: SigLIP's pixel_values `[C, I, I]`, or SigLIP 2's
/// patches at the image's own aspect ratio.
enum Pixels {
    Fixed(Vec<f32>),
    Patches(ImagePatches),
}

/// The model's preprocessing.
enum Processor {
    Fixed(ImageProcessor),
    Naflex(Siglip2Processor),
}

impl Processor {
    fn load(&self, path: &Path) -> tessera::Result<Pixels> {
        Ok(match self {
            Processor::Fixed(p) => Pixels::Fixed(p.load_image(path)?),
            Processor::Naflex(p) => Pixels::Patches(p.load_image(path)?),
        })
    }
}

/// A batch of decoded images: (index of the path, its pixels).
type Batch = decode::Decoded<Pixels>;

/// Where the producer's batches go: the devices' queue, or (a batch whose every
/// file was skipped) straight to the writer as an empty answer.
///
/// It also counts the time the producer waits for a device to take a batch,
/// from the moment the first device began serving (before that, the wait is the
/// model's loading, not the devices falling behind).
struct Queues<'a> {
    batches: mpsc::SyncSender<Batch>,
    empty: mpsc::Sender<Answer>,
    serving: &'a OnceLock<Instant>,
    blocked: Duration,
}

impl decode::Sink<Pixels> for Queues<'_> {
    fn batch(&mut self, batch: Batch) -> bool {
        let asked = Instant::now();
        let sent = self.batches.send(batch).is_ok();
        if let Some(&serving) = self.serving.get() {
            self.blocked += Instant::now().saturating_duration_since(asked.max(serving));
        }
        sent
    }
    fn empty(&mut self, index: usize) -> bool {
        self.empty.send(Ok((index, Vec::new()))).is_ok()
    }
    fn skipped(&mut self, _path: &Path, why: &str) {
        let _ = writeln!(std::io::stderr(), "skipped: {why}");
    }
}

/// A worker's answer: the batch index and one embedding per image (path index,
/// values), or an error.
type Answer = Result<(usize, Vec<(usize, Vec<f32>)>), String>;

/// The batches waiting for a device, shared by the workers. When the last holder
/// drops it, the producer's sends fail and it stops.
type Queue = Arc<Mutex<mpsc::Receiver<Batch>>>;

/// The shared pieces every device worker needs.
struct Job {
    /// The model's files; `None` when nothing is left to embed (a resumed job
    /// whose every batch is written): then no weights are looked for or fetched.
    files: Option<ModelFiles>,
    config: VisionConfig,
    pooling: Pooling,
    normalize: bool,
    /// Set at the first failure: the producer decodes no more batches and the
    /// workers start no more forwards.
    stop: AtomicBool,
    /// The device workers' time from their model loaded to their end, and of
    /// it the time spent waiting for a decoded batch (nanoseconds, summed).
    worker_nanos: AtomicU64,
    idle_nanos: AtomicU64,
    /// When the first device worker had its model loaded.
    serving: OnceLock<Instant>,
}

/// Adds a worker's serving time and its time waiting for batches to the job's
/// totals when the worker ends, whichever way it ends.
struct WorkerClock<'a> {
    job: &'a Job,
    serving: Instant,
    idle: Duration,
}

impl Drop for WorkerClock<'_> {
    fn drop(&mut self) {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        (self.job.worker_nanos).fetch_add(nanos(self.serving.elapsed()), Ordering::Relaxed);
        (self.job.idle_nanos).fetch_add(nanos(self.idle), Ordering::Relaxed);
    }
}

impl Job {
    /// Embeddings of a forward's outputs: pooler rows [B, D], or the mean of each
    /// image's rows `tokens[b]` of last_hidden_state [rows, D].
    fn embeddings(
        &self,
        pooled: Option<Vec<f32>>,
        last: &[f32],
        tokens: &[std::ops::Range<usize>],
    ) -> Vec<Vec<f32>> {
        let d = self.config.hidden_size;
        let mut rows: Vec<Vec<f32>> = match (self.pooling, pooled) {
            (Pooling::Auto | Pooling::Head, Some(p)) => p.chunks(d).map(<[f32]>::to_vec).collect(),
            _ => tokens
                .iter()
                .map(|r| {
                    let mut m = vec![0f32; d];
                    for t in last[r.start * d..r.end * d].chunks(d) {
                        for (a, x) in m.iter_mut().zip(t) {
                            *a += x;
                        }
                    }
                    m.iter_mut().for_each(|a| *a /= r.len().max(1) as f32);
                    m
                })
                .collect(),
        };
        if self.normalize {
            // In f64: the squares of values past 1.8e19 overflow f32 (a row of
            // huge but finite values would become zeros).
            for r in &mut rows {
                let norm = r.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
                if norm > 0.0 {
                    r.iter_mut()
                        .for_each(|x| *x = (f64::from(*x) / norm) as f32);
                }
            }
        }
        rows
    }
}

/// One device's loop: take batches until the queue closes, send embeddings back.
fn worker<T: Element, D: Kernels<T>>(
    device: D,
    job: &Job,
    batches: &Queue,
    answers: &mpsc::Sender<Answer>,
) {
    let loaded = match &job.files {
        Some(files) => VisionModel::<T, D>::load_files(files, &device),
        None => Err(tessera::Error::Internal(
            "a device worker started for a job with nothing left".into(),
        )),
    };
    let model = match loaded {
        Ok(m) => m,
        Err(e) => {
            let _ = answers.send(Err(device_error(&device, &e)));
            return;
        }
    };
    // The first worker serving starts the decoder's count of waiting for devices.
    job.serving.get_or_init(Instant::now);
    let mut clock = WorkerClock {
        job,
        serving: Instant::now(),
        idle: Duration::ZERO,
    };
    let c = job.config.clone();
    let mut bank = None;
    let mut slots: Vec<Slot<T, D>> = Vec::new();
    // One batch in flight, and the next one staged before it is read: while the
    // device runs batch i, the host takes batch i+1, converts it (SigLIP 2: packs
    // it) and uploads it; only then are batch i's outputs downloaded, and batch
    // i+1's forward launched right after. Downloading first would queue the download
    // behind batch i+1's forward on the device's one stream, and leave the device
    // idle through the next batch's host work (on the CPU backend the forward runs
    // in `launch` itself, and the order changes nothing).
    let mut in_flight: Option<InFlight<T, D>> = None;
    // The converted pixels of a fixed-size batch, kept from one batch to the next
    // (its pages stay mapped).
    let mut host: Vec<T> = Vec::new();
    loop {
        let waiting = Instant::now();
        let next = batches.lock().unwrap_or_else(|p| p.into_inner()).recv();
        clock.idle += waiting.elapsed();
        let Ok(batch) = next else {
            // The queue closed: the last batch's embeddings, then stop.
            if let Some(prev) = in_flight.take() {
                let _ = answers.send(finish(job, prev, &device, &mut slots));
            }
            return;
        };
        if job.stop.load(Ordering::Relaxed) {
            return; // the job failed elsewhere: no more forwards
        }
        let staged = stage(&model, &c, batch, &mut slots, &mut host);
        // The batch before it is reported first, whether or not this one staged.
        if let Some(prev) = in_flight.take() {
            let answer = finish(job, prev, &device, &mut slots);
            let failed = answer.is_err();
            if answers.send(answer).is_err() || failed {
                return;
            }
        }
        match staged.and_then(|s| launch(&model, &c, s, &mut bank)) {
            Ok(f) => in_flight = Some(f),
            Err(e) => {
                let _ = answers.send(Err(device_error(&device, &e)));
                return;
            }
        }
    }
}

/// The pixel and output buffers of a fixed-size batch, kept from one batch to
/// the next of the same size: no allocation per batch, and on CUDA the forward
/// over the same buffers is replayed as a graph after its second call.
struct Slot<T: Element, D: Kernels<T>> {
    pixels: DeviceBuffer<T, D>,
    out: VisionOutput<T, D>,
}

/// Slots a worker keeps: the batch being staged and the one in flight, for
/// the full batch size and the last, smaller one.
const SLOTS: usize = 4;

/// A batch on the device whose forward is not launched yet (see [`stage`]).
struct Staged<T: Element, D: Kernels<T>> {
    /// The batch's index and its images' path indices.
    index: usize,
    images: Vec<usize>,
    input: Input<T, D>,
}

/// A staged batch's input: SigLIP's pixels in a slot (with its outputs), or a
/// SigLIP 2 packed batch.
enum Input<T: Element, D: Kernels<T>> {
    Fixed(Slot<T, D>),
    Packed(PackedBatch<T, D>),
}

/// A batch whose forward has been launched; its outputs are read by [`finish`].
struct InFlight<T: Element, D: Kernels<T>> {
    /// The batch's index and its images' path indices.
    index: usize,
    images: Vec<usize>,
    /// Each image's rows of `out.last_hidden_state` (`[B·N, D]` or the packed
    /// `[T, D]`).
    tokens: Vec<std::ops::Range<usize>>,
    out: VisionOutput<T, D>,
    /// The fixed-size batch's pixels: with `out`, a slot to give back.
    pixels: Option<DeviceBuffer<T, D>>,
}

/// Convert (and for SigLIP 2 pack) a batch on the host and upload it; nothing
/// is launched. `host` is the conversion's vector, reused between batches.
fn stage<T: Element, D: Kernels<T>>(
    model: &VisionModel<T, D>,
    c: &VisionConfig,
    batch: Batch,
    slots: &mut Vec<Slot<T, D>>,
    host: &mut Vec<T>,
) -> tessera::Result<Staged<T, D>> {
    let b = batch.images.len();
    let mut images = Vec::with_capacity(b);
    let mut packed = Vec::new();
    host.clear();
    for (i, px) in batch.images {
        images.push(i);
        match px {
            Pixels::Fixed(v) => host.extend(v.into_iter().map(T::from_f32)),
            Pixels::Patches(p) => packed.push(p),
        }
    }
    let input = if packed.is_empty() {
        let shape = c.pixel_shape(b);
        // A kept slot of this size is refilled in place; a new one is made from
        // the batch itself (one upload either way).
        Input::Fixed(match slots.iter().position(|s| s.pixels.shape() == shape) {
            Some(i) => {
                let mut slot = slots.swap_remove(i);
                slot.pixels.copy_from_host(host)?;
                slot
            }
            None => Slot {
                pixels: DeviceBuffer::<T, D>::from_slice(model.device(), host, &shape)?,
                out: model.new_output(b)?,
            },
        })
    } else {
        // SigLIP 2: the batch packed, no padding computed.
        Input::Packed(model.pack(&packed)?)
    };
    Ok(Staged {
        index: batch.index,
        images,
        input,
    })
}

/// Launch a staged batch's forward pass; the outputs stay on the device.
fn launch<T: Element, D: Kernels<T>>(
    model: &VisionModel<T, D>,
    c: &VisionConfig,
    staged: Staged<T, D>,
    bank: &mut Option<tessera::model::MemoryBank<T, D>>,
) -> tessera::Result<InFlight<T, D>> {
    let b = staged.images.len();
    let (out, pixels, tokens) = match staged.input {
        Input::Fixed(mut slot) => {
            // A memory model's images are one stream (batch 1, in order): one bank.
            if c.has_memory() && bank.is_none() {
                *bank = Some(model.new_memory(1)?);
            }
            model.forward_into(&slot.pixels, bank.as_mut(), &mut slot.out)?;
            let n = c.num_patches();
            let tokens = (0..b).map(|i| i * n..(i + 1) * n).collect();
            (slot.out, Some(slot.pixels), tokens)
        }
        Input::Packed(packed) => {
            let out = model.forward_packed(&packed)?;
            let tokens = (0..b).map(|i| out.segments.range(i)).collect();
            let out = VisionOutput {
                last_hidden_state: out.last_hidden_state,
                pooler_output: out.pooler_output,
            };
            (out, None, tokens)
        }
    };
    Ok(InFlight {
        index: staged.index,
        images: staged.images,
        tokens,
        out,
        pixels,
    })
}

/// Download a launched batch's outputs (waiting for its forward) and make its
/// embeddings; a fixed-size batch's buffers go back to `slots`.
fn finish<T: Element, D: Kernels<T>>(
    job: &Job,
    f: InFlight<T, D>,
    device: &D,
    slots: &mut Vec<Slot<T, D>>,
) -> Answer {
    let result = (|| -> tessera::Result<Vec<Vec<f32>>> {
        let pooled = match &f.out.pooler_output {
            Some(p) if job.pooling != Pooling::Mean => Some(to_f32(&p.to_vec()?)),
            _ => None,
        };
        let last = match pooled {
            Some(_) => Vec::new(),
            None => to_f32(&f.out.last_hidden_state.to_vec()?),
        };
        Ok(job.embeddings(pooled, &last, &f.tokens))
    })();
    if let Some(pixels) = f.pixels {
        if slots.len() < SLOTS {
            slots.push(Slot { pixels, out: f.out });
        }
    }
    result
        .map(|rows| (f.index, f.images.into_iter().zip(rows).collect()))
        .map_err(|e| device_error(device, &e))
}

/// A device's failure, named by the device (once: an out-of-memory error names
/// it already), with what to try where memory ran out.
fn device_error<D: tessera::Device>(device: &D, e: &tessera::Error) -> String {
    match e {
        tessera::Error::OutOfMemory { .. } => {
            format!("{e} (a smaller --batch, or --dtype bf16, needs less)")
        }
        e => format!("{}: {e}", device.describe()),
    }
}

fn to_f32<T: Element>(v: &[T]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// Start a worker thread for an opened device in the job's dtype.
fn spawn<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    device: Opened,
    dtype: DType,
    job: &'s Job,
    batches: Queue,
    answers: mpsc::Sender<Answer>,
) {
    scope.spawn(move || {
        let name = describe(&device);
        // A worker that panics answers with an error like any failure: its batch
        // would otherwise never come, and the job would wait for it to the end.
        let run = std::panic::AssertUnwindSafe(|| match (device, dtype) {
            (Opened::Cpu, DType::F32) => worker::<f32, Cpu>(Cpu, job, &batches, &answers),
            (Opened::Cpu, DType::BF16) => worker::<bf16, Cpu>(Cpu, job, &batches, &answers),
            (Opened::Cuda(d), DType::F32) => worker::<f32, Cuda>(d, job, &batches, &answers),
            (Opened::Cuda(d), DType::BF16) => worker::<bf16, Cuda>(d, job, &batches, &answers),
            (Opened::Wgpu(d), DType::F32) => worker::<f32, Wgpu>(d, job, &batches, &answers),
            (Opened::Wgpu(d), DType::BF16) => worker::<bf16, Wgpu>(d, job, &batches, &answers),
        });
        if std::panic::catch_unwind(run).is_err() {
            let _ = answers.send(Err(format!("{name}: the worker thread panicked")));
        }
    });
}

/// Run the job. Progress goes to stderr (a bar on a terminal); skipped files are
/// reported there as they happen.
pub fn run(args: &EmbedArgs) -> Result<Summary, String> {
    let start = Instant::now();
    if !(1..=MAX_BATCH).contains(&args.batch) {
        return Err(format!(
            "--batch {}: must be between 1 and {MAX_BATCH} (a batch is decoded and held in memory)",
            args.batch
        ));
    }
    let format = output::Format::of(&args.output)?;
    // The inputs before the model: a typo costs no download.
    let Collected {
        paths,
        left_out,
        passed_over,
    } = collect_paths(&args.inputs, args.resume)?;
    // The output before any work: a folder in its place, or an input it would
    // replace (`-o x.safetensors` where x.safetensors is an image given), fails now.
    if args.output.is_dir() {
        return Err(format!("-o {}: is a folder", args.output.display()));
    }
    for target in [&args.output, &output::paths_file(&args.output)] {
        crate::output_is_not_an_input("-o", target, paths.iter().map(PathBuf::as_path))?;
    }
    if let Some((_, why)) = passed_over.first().filter(|_| args.strict) {
        return Err(format!("{why} (--strict)"));
    }
    for (_, why) in &passed_over {
        let _ = writeln!(std::io::stderr(), "skipped: {why}");
    }
    if paths.is_empty() {
        return Err(match left_out_note(&left_out) {
            Some(note) => format!("no images found in the inputs: {note}"),
            None => "no images found in the inputs".into(),
        });
    }
    // The config first: options and inputs are checked before the weights are
    // looked for (or downloaded, for a hub id not in the cache).
    let model =
        crate::config_files(&args.model, args.revision.as_deref()).map_err(|e| e.to_string())?;
    let config = VisionConfig::from_file(&model.config).map_err(|e| e.to_string())?;
    if config.num_channels != 3 {
        return Err(format!(
            "the model takes {} channels; embed reads RGB images",
            config.num_channels
        ));
    }
    if args.pooling == Pooling::Head && !config.vision_use_head {
        return Err(
            "--pooling head: this model has no pooling head (vision_use_head false)".into(),
        );
    }
    let processor = match config.architecture {
        Architecture::Siglip => {
            if args.max_patches.is_some() {
                return Err(
                    "--max-patches applies to SigLIP 2 models (this one takes square \
                            images of its image_size)"
                        .into(),
                );
            }
            Processor::Fixed(ImageProcessor {
                upright: args.upright,
                jpeg_draft: args.jpeg_draft,
                ..ImageProcessor::for_model(model.preprocessor.as_deref(), config.image_size)
                    .map_err(|e| e.to_string())?
            })
        }
        Architecture::Siglip2 => {
            let mut p = crate::naflex_processor(
                model.preprocessor.as_deref(),
                config.patch_size,
                args.max_patches,
            )?;
            p.image.upright = args.upright;
            p.image.jpeg_draft = args.jpeg_draft;
            Processor::Naflex(p)
        }
    };
    let memory = config.has_memory();
    if memory && args.device.len() > 1 {
        return Err(format!(
            "this model has memory-gated attention: its images are one stream of segments, \
             embedded in order on one device (got {} devices)",
            args.device.len()
        ));
    }
    if memory && args.resume {
        let partial = format!("{}.partial", args.output.display());
        return Err(format!(
            "--resume: this model has memory-gated attention, and its memory bank is not \
             saved with the rows: the job must run from its first image (delete {partial} \
             and {partial}.journal if an earlier run left them, and run without --resume)"
        ));
    }
    let batch_size = if memory { 1 } else { args.batch };
    // The output's partial file first: an unwritable folder, another job on the same
    // output or an earlier run's rows fail before any work.
    let dim = config.hidden_size;
    // (The revision is not part of the job: the files it names are, below.)
    let model_name = args.model.display().to_string();
    // What makes the rows: a resumed job must have the same (devices may differ).
    // (`upright` and `jpeg_draft` only when set: journals of jobs without them
    // read as before.)
    let settings = format!(
        "model {model_name}, dtype {:?}, pooling {:?}, normalize {}, batch {batch_size}, \
         max_patches {:?}{}{}",
        args.dtype,
        args.pooling,
        args.normalize,
        args.max_patches,
        if args.upright { ", upright" } else { "" },
        if args.jpeg_draft { ", jpeg_draft" } else { "" }
    );
    let cols = output::Columns {
        dim,
        dtype: args.out_dtype,
    };
    let (files, weights) = model_files(&model)?;
    let names = output::JobNames {
        model: &model_name,
        settings: &settings,
        files: &files,
        weights: weights.as_deref(),
    };
    let mut writer = RowWriter::create(&args.output, &paths, cols, &names, args.resume)?;
    let resumed = writer.resumed();
    let first_batch = resumed.batches;
    let batches = paths.len().div_ceil(batch_size);
    if first_batch > batches {
        return Err(format!(
            "--resume: {} records {first_batch} batches, but this job has {batches}",
            writer.partial().display()
        ));
    }
    if args.resume {
        let _ = writeln!(
            std::io::stderr(),
            "resuming: {} rows of {} batches from {}",
            resumed.rows,
            resumed.batches,
            writer.partial().display()
        );
    }
    if let (output::Format::Safetensors, Some(list)) = (format, writer.paths_file()) {
        let _ = writeln!(
            std::io::stderr(),
            "note: {} paths overflow a safetensors header: they go to {} (named by the \
             metadata's paths_file)",
            paths.len(),
            list.display()
        );
    }
    // A job stopped after its last batch was recorded but before the rename has
    // nothing left to embed: no weights are looked for, no device is opened and no
    // model loaded.
    let left = first_batch < batches;
    // Rows left to make need the weights the earlier ones were made with.
    if let (true, Some(then), Some(now)) = (left, writer.earlier_weights(), names.weights) {
        if then != now {
            return Err(format!(
                "--resume: the weights in {} changed since {} was started (then: {then}; \
                 now: {now}): its rows and this job's would not agree. Delete it and its \
                 journal to start over",
                model.dir.display(),
                writer.partial().display()
            ));
        }
    }
    let mut opened = Vec::new();
    let mut described = Vec::new();
    for choice in args.device.iter().filter(|_| left) {
        let (dev, why) = choice.open()?;
        described.push(format!("{} [{why}]", describe(&dev)));
        opened.push(dev);
    }
    // The weights last: a device that cannot be opened costs no download.
    let files = if left {
        Some(crate::weights(&model).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let job = Job {
        files,
        config: config.clone(),
        pooling: args.pooling,
        normalize: args.normalize,
        stop: AtomicBool::new(false),
        worker_nanos: AtomicU64::new(0),
        idle_nanos: AtomicU64::new(0),
        serving: OnceLock::new(),
    };
    if left {
        catch_interrupts();
    }
    let bar = progress_bar(paths.len());
    let (batch_tx, batch_rx) = mpsc::sync_channel::<Batch>(2 * opened.len());
    let batch_rx: Queue = Arc::new(Mutex::new(batch_rx));
    let (answer_tx, answer_rx) = mpsc::channel::<Answer>();
    let mut produced = decode::Produced::default();
    let mut decoding_waited = 0.0;
    let mut failure: Option<String> = None;

    std::thread::scope(|s| {
        if !left {
            return;
        }
        for dev in opened {
            spawn(
                s,
                dev,
                args.dtype,
                &job,
                batch_rx.clone(),
                answer_tx.clone(),
            );
        }
        // The workers hold the queue now: when they are all gone, the producer's
        // sends fail and it stops.
        drop(batch_rx);
        let (paths, processor, job) = (&paths, &processor, &job);
        // Producer: decode in parallel, without a barrier per batch (embed/decode.rs),
        // and queue batches two per device ahead. A batch whose every image was
        // skipped is answered here, empty, so that the rows after it can be written.
        let mut queues = Queues {
            batches: batch_tx,
            empty: answer_tx,
            serving: &job.serving,
            blocked: Duration::ZERO,
        };
        let producer = s.spawn(move || {
            let produced = decode::produce(
                paths,
                decode::Plan {
                    batch_size,
                    first_batch,
                    window: decode::window(batch_size),
                },
                args.strict,
                &job.stop,
                |p| processor.load(p).map_err(|e| e.to_string()),
                &mut queues,
            );
            // The queues close here: the workers finish what is queued and stop.
            let Queues {
                serving, blocked, ..
            } = queues;
            let since = serving.get().map_or(Duration::ZERO, Instant::elapsed);
            produced.map(|p| (p, blocked, since))
        });
        // Rows are written as batches finish. The first failure stops the job: the
        // flag stops the producer before its next batch and the workers before
        // their next forward, and the receiver goes, so their answers fail too.
        loop {
            if INTERRUPTED.load(Ordering::SeqCst) {
                job.stop.store(true, Ordering::Relaxed);
                failure = Some("interrupted".into());
                break;
            }
            // Woken often: an interrupt is seen within a tenth of a second, and rows
            // written before a stall (a slow file) are synced and journaled on
            // time, not at the next batch.
            let answer = match answer_rx.recv_timeout(INTERRUPT_POLL) {
                Ok(answer) => answer,
                Err(mpsc::RecvTimeoutError::Timeout) => match writer.checkpoint_if_due() {
                    Ok(()) => continue,
                    Err(e) => Err(e),
                },
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let written = answer.and_then(|(index, batch_rows)| {
                let n = batch_rows.len() as u64;
                writer.accept(index, batch_rows).map(|()| n)
            });
            match written {
                Ok(n) => {
                    if let Some(bar) = &bar {
                        bar.inc(n);
                    }
                }
                Err(e) => {
                    job.stop.store(true, Ordering::Relaxed);
                    failure = Some(e);
                    break;
                }
            }
        }
        match producer.join() {
            Ok(Ok((p, blocked, since))) => {
                produced = p;
                decoding_waited = blocked.as_secs_f64() / since.as_secs_f64().max(1e-9);
            }
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert("the decoding thread panicked".into());
            }
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(e) = failure {
        return Err(match writer.stop() {
            0 => e,
            n => format!(
                "{e}\n{n} rows are kept in {}: rerun with --resume to go on from them",
                writer.partial().display()
            ),
        });
    }
    // What the folder walks passed over, then the earlier run's skipped files:
    // they come before this run's.
    let mut skipped = passed_over;
    skipped.extend(
        writer
            .resumed_skips(batch_size)
            .into_iter()
            .map(|i| (paths[i].clone(), "skipped by the earlier run".to_string())),
    );
    skipped.append(&mut produced.skipped);
    if writer.rows() == 0 {
        return Err(format!(
            "no image could be read ({} skipped)",
            skipped.len()
        ));
    }
    let warnings = writer.warnings();
    let kept = writer.finish(batches)?;
    let share = |part: f64, whole: f64| if whole > 0.0 { part / whole } else { 0.0 };
    let balance = Balance {
        decode_seconds_per_image: share(produced.load_seconds, produced.loaded as f64),
        decode_threads: rayon::current_num_threads(),
        decoding_waited,
        devices_waited: share(
            job.idle_nanos.load(Ordering::Relaxed) as f64,
            job.worker_nanos.load(Ordering::Relaxed) as f64,
        ),
    };
    Ok(Summary {
        embedded: kept.len(),
        skipped,
        dim,
        seconds: start.elapsed().as_secs_f64(),
        serving_seconds: job.serving.get().map_or(0.0, |t| t.elapsed().as_secs_f64()),
        devices: described,
        balance,
        resumed: resumed.rows,
        left_out,
        warnings,
    })
}

/// Set by the first Ctrl-C (SIGINT), SIGTERM or SIGHUP while a job embeds: it
/// stops taking batches, keeps the rows written (synced and journaled) and says
/// how to go on with `--resume`. A second one ends the process at once (what is
/// journaled still resumes).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How often the writing loop looks at [`INTERRUPTED`] when no batch arrives.
const INTERRUPT_POLL: Duration = Duration::from_millis(100);

/// Whether a job was stopped by a signal ([`run`] then fails with
/// "interrupted"; the command exits with 130, as a shell reports SIGINT).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Catch the signals that stop a job (once per process: a later call keeps the
/// handler set).
fn catch_interrupts() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
}

fn describe(d: &Opened) -> String {
    use tessera::Device;
    match d {
        Opened::Cpu => Cpu.describe(),
        Opened::Cuda(c) => c.describe(),
        Opened::Wgpu(w) => w.describe(),
    }
}

fn progress_bar(len: usize) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} images, {per_sec}, {elapsed} (eta {eta})",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::Balance;

    #[test]
    fn the_side_waited_for_is_the_limit() {
        let b = |decoding_waited, devices_waited| Balance {
            decode_seconds_per_image: 0.01,
            decode_threads: 4,
            decoding_waited,
            devices_waited,
        };
        assert_eq!(b(0.8, 0.0).limit(), "the devices limited this job");
        assert_eq!(b(0.0, 0.5).limit(), "decoding limited this job");
        assert_eq!(b(0.05, 0.09).limit(), "decoding and the devices kept pace");
        assert_eq!(b(0.2, 0.3).limit(), "decoding limited this job");
    }
}
