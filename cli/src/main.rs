//! `tessera`: run a SigLIP vision model (optionally with memory-gated attention)
//! on pixel_values or image files, on the CPU, a CUDA GPU or a wgpu adapter.
//!
//! ```text
//! tessera run --model DIR (--pixels FILE.safetensors | --image FILE...)
//!             [--device auto|cpu|wgpu|cuda] [--dtype f32|bf16] [--output FILE.safetensors]
//! tessera demo [--device ...] [--dtype ...] [--output ...]
//! ```
//!
//! Every error is one line `error: ...` on stderr and exit code 1 (usage errors
//! are clap's, with clap's exit code). Adding a subcommand is one variant of
//! [`Command`] and one arm in [`dispatch`].

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

/// `println!` that ignores a closed stdout (`tessera run ... | head`): the report
/// on stdout is for reading; a reader that stops early is not an error.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}
use safetensors::{Dtype, SafeTensors};
use tessera::model::{
    Architecture, ConfigFiles, ImagePatches, ModelFiles, VisionConfig, VisionModel,
};
use tessera::preprocess::ImageProcessor;
use tessera::{bf16, Cpu, Cuda, DType, DeviceBuffer, Element, Kernels, Wgpu};
use tessera_cli::devices::{DeviceChoice, Opened};

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "SigLIP vision inference on CPU, CUDA and wgpu"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model on pixel_values (safetensors) or image files.
    Run(RunArgs),
    /// Run the bundled tiny memory model (assets/mga_tiny) on the bundled image
    /// (assets/waves_64x48.png).
    Demo(ExecArgs),
    /// Embed image files, folders and @lists into one file of embeddings.
    Embed(tessera_cli::embed::EmbedArgs),
    /// Benchmark every op at SigLIP shapes beside vendor peers (see BENCHMARKS.md).
    Bench(tessera_cli::bench::BenchArgs),
    // A new subcommand is one variant here (its arguments and code in their own
    // module) and one arm in `dispatch` below.
}

/// Route a parsed command to its implementation.
fn dispatch(command: Command) -> CliResult<()> {
    // Every command decodes and resizes on the CPU: a mistyped
    // TESSERA_CPU_ISA fails here rather than being ignored.
    Cpu::check_env()?;
    match command {
        Command::Run(args) => run_command(&args),
        Command::Demo(exec) => demo_command(&exec),
        Command::Embed(args) => embed_command(&args),
        Command::Bench(args) => bench_command(&args),
    }
}

/// `tessera embed`: progress and skipped files on stderr, a summary on stdout.
fn embed_command(args: &tessera_cli::embed::EmbedArgs) -> CliResult<()> {
    let s = tessera_cli::embed::run(args).map_err(CliError)?;
    for d in &s.devices {
        say!("device: {d}");
    }
    // The rate of this run: rows resumed from an earlier one took no time here.
    let new_rows = s.embedded.saturating_sub(s.resumed);
    say!(
        "embedded {} image(s) of {} values in {:.2} s{}{}",
        s.embedded,
        s.dim,
        s.seconds,
        if new_rows > 0 {
            let rate = |seconds: f64| new_rows as f64 / seconds.max(1e-9);
            let setup = s.seconds - s.serving_seconds;
            // Start-up (loading the model) shown where it is a fair share of the
            // job: the rate after it is what a longer job approaches.
            if s.serving_seconds > 0.0 && setup > 0.1 * s.seconds {
                format!(
                    " ({:.1} images/s; {:.1} images/s once a device was ready, after {:.2} s)",
                    rate(s.seconds),
                    rate(s.serving_seconds),
                    setup
                )
            } else {
                format!(" ({:.1} images/s)", rate(s.seconds))
            }
        } else {
            String::new()
        },
        if s.skipped.is_empty() {
            String::new()
        } else {
            format!(", {} skipped", s.skipped.len())
        }
    );
    if let Some(note) = tessera_cli::embed::left_out_note(&s.left_out) {
        say!("note: {note}");
    }
    for warning in &s.warnings {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "warning: {warning}");
    }
    if s.resumed > 0 {
        say!(
            "{} of those rows came from the earlier run (--resume)",
            s.resumed
        );
    }
    let b = &s.balance;
    if new_rows == 0 {
        say!("wrote {}", args.output.display());
        return Ok(());
    }
    say!(
        "decoding: {:.1} ms per image on {} threads; it waited for the devices {:.0} % of \
         its time, the devices waited for it {:.0} % of theirs: {}",
        b.decode_seconds_per_image * 1e3,
        b.decode_threads,
        b.decoding_waited * 100.0,
        b.devices_waited * 100.0,
        b.limit()
    );
    say!("wrote {}", args.output.display());
    Ok(())
}

/// `tessera bench`: one aligned table on stdout, progress on stderr.
fn bench_command(args: &tessera_cli::bench::BenchArgs) -> CliResult<()> {
    let table = tessera_cli::bench::run(&args.options()?)?;
    say!("{table}");
    Ok(())
}

#[derive(Args)]
struct RunArgs {
    /// Model folder (config.json and model.safetensors, or a sharded
    /// model.safetensors.index.json), or a hub id `org/name` in the local Hugging
    /// Face cache ($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub),
    /// downloaded into it when it is not there (HF_HUB_OFFLINE=1: never).
    #[arg(long, value_name = "DIR|ORG/NAME")]
    model: PathBuf,
    /// With a hub id: its branch, tag or commit (as transformers' `revision=`;
    /// default main), from the cache, else downloaded.
    #[arg(long, value_name = "REV")]
    revision: Option<String>,
    #[command(flatten)]
    input: InputArgs,
    /// SigLIP 2 with --image: the most patches per image (default: the model's
    /// preprocessor_config.json `max_num_patches`, else 256).
    #[arg(long, value_name = "N")]
    max_patches: Option<usize>,
    /// With --image: turn each image upright by its orientation (EXIF, else XMP)
    /// first, as transformers' load_image does (ImageOps.exif_transpose). Default:
    /// the pixels as an image processor given Image.open(f) sees them (as stored;
    /// TIFFs upright, as Pillow opens them).
    #[arg(long)]
    upright: bool,
    /// With --image: decode JPEGs at 1/2, 1/4 or 1/8 of their size where that
    /// still covers the model's input (Pillow's Image.draft): 2-3x less time for
    /// a 12 MP photo, the pixels those of a Pillow pipeline that drafts, not
    /// transformers' (which decodes in full).
    #[arg(long)]
    jpeg_draft: bool,
    #[command(flatten)]
    exec: ExecArgs,
}

/// How `--image` files are read (the flags `run` shares with `embed`).
#[derive(Clone, Copy)]
struct Reading {
    upright: bool,
    jpeg_draft: bool,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct InputArgs {
    /// safetensors file with `pixel_values` [B, C, H, W], or [S, B, C, H, W] for S
    /// segments run in order with the memory carried. SigLIP 2: `pixel_values`
    /// [B, Pmax, C·P·P], `spatial_shapes` [B, 2] and `pixel_attention_mask`
    /// [B, Pmax] (I32 or I64, as transformers writes them; the mask may be left
    /// out).
    #[arg(long, value_name = "FILE")]
    pixels: Option<PathBuf>,
    /// Image files (PNG, JPEG, WebP, GIF, BMP, TIFF), preprocessed as the model's preprocessor_config.json
    /// says (SigLIP's defaults without one). For a memory model they are
    /// consecutive segments of one stream (batch 1); otherwise one batch (SigLIP 2:
    /// each at its own aspect ratio, packed).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    image: Vec<PathBuf>,
}

/// Where and how to run, and where to write the outputs.
#[derive(Args)]
struct ExecArgs {
    /// auto (CUDA, else a hardware wgpu adapter, else the CPU), cpu, wgpu, cuda
    /// or cuda:N.
    #[arg(long, default_value = "auto", value_name = "auto|cpu|wgpu|cuda[:N]")]
    device: DeviceChoice,
    /// Element type of weights, activations and memory.
    #[arg(long, default_value = "f32", value_name = "f32|bf16")]
    dtype: DType,
    /// Write pixel_values, last_hidden_state, pooler_output and memory.layers.{l}
    /// (F32; SigLIP 2 also pixel_attention_mask I32 and spatial_shapes I64, the
    /// padded layout with padding rows 0) to this safetensors file.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

// ---------------------------------------------------------------------------
// Errors: one line, exit code 1.

struct CliError(String);

type CliResult<T> = Result<T, CliError>;

impl From<tessera::Error> for CliError {
    fn from(e: tessera::Error) -> Self {
        CliError(e.to_string())
    }
}

fn fail<T>(msg: impl Into<String>) -> CliResult<T> {
    Err(CliError(msg.into()))
}

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Mesa's Vulkan drivers load libwayland, which prints "error: XDG_RUNTIME_DIR is
/// invalid or not set" for every device probe when that variable is missing
/// (containers, ssh sessions, CI) — even when the run then uses the CPU. Give the
/// process a private runtime dir in that case, before any thread starts; the
/// caller removes it at exit.
fn quiet_vulkan_loader() -> Option<PathBuf> {
    let valid = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .is_some_and(|p| p.is_dir());
    if valid {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("tessera-runtime-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_ok() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        // Single-threaded here: nothing else reads the environment yet.
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
        return Some(dir);
    }
    None
}

fn main() -> ExitCode {
    // A panic would be a bug in tessera; still report it in one line.
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "error: internal error (a bug in tessera): {}",
            one_line(&info.to_string())
        );
    }));
    let cli = Cli::parse();
    let runtime_dir = quiet_vulkan_loader();
    let result = std::panic::catch_unwind(|| dispatch(cli.command));
    if let Some(dir) = runtime_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(CliError(msg))) => {
            eprintln!("error: {}", one_line(&msg));
            // An embed job stopped by Ctrl-C (or SIGTERM) exits as a shell
            // reports SIGINT.
            ExitCode::from(if tessera_cli::embed::interrupted() {
                130
            } else {
                1
            })
        }
        Err(_) => ExitCode::from(1),
    }
}

// ---------------------------------------------------------------------------
// Inputs.

/// pixel_values on the host, f32, as `segments` batches of `seg_shape`.
struct Input {
    data: Vec<f32>,
    segments: usize,
    seg_shape: [usize; 4],
    /// Whether outputs carry a leading S axis.
    segment_axis: bool,
    /// Where the input came from, for the summary.
    source: String,
}

/// SigLIP 2 images on the host and the padded length of the output layout.
struct PackedInput {
    images: Vec<ImagePatches>,
    /// Pmax: patches per image in the padded outputs.
    max_patches: usize,
    source: String,
}

/// What a run gets: fixed-size pixel batches (SigLIP) or packed images (SigLIP 2).
enum Job {
    Fixed(Input),
    Packed(PackedInput),
}

impl Job {
    fn source(&self) -> &str {
        match self {
            Job::Fixed(i) => &i.source,
            Job::Packed(i) => &i.source,
        }
    }
}

/// Integer values of an I32, I64, U8 or BOOL tensor (transformers writes the
/// mask as I32 and spatial_shapes as I64; other exporters differ).
fn read_ints(bytes: &[u8], dtype: Dtype) -> Option<Vec<i64>> {
    Some(match dtype {
        Dtype::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        Dtype::I32 => bytes
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::U8 | Dtype::BOOL => bytes.iter().map(|&b| i64::from(b)).collect(),
        _ => return None,
    })
}

/// A SigLIP 2 `--pixels` file: `pixel_values` [B, Pmax, C·P·P], `spatial_shapes`
/// [B, 2] and (optionally) `pixel_attention_mask` [B, Pmax].
fn read_packed_pixels(file: &Path, config: &VisionConfig) -> CliResult<PackedInput> {
    let bytes = read_safetensors_file(file)?;
    let st = open_safetensors(file, &bytes)?;
    let get = |name: &str| {
        st.tensor(name).map_err(|_| {
            CliError(format!(
                "{}: no tensor `{name}` (a SigLIP 2 model takes pixel_values, spatial_shapes and \
                 pixel_attention_mask; found: {})",
                file.display(),
                st.names().join(", ")
            ))
        })
    };
    let px = get("pixel_values")?;
    let cpp = config.patch_values();
    let (b, pmax) = match px.shape() {
        &[b, pmax, c] if c == cpp && b > 0 && pmax > 0 => (b, pmax),
        other => {
            return fail(format!(
                "{}: tensor `pixel_values` has shape {other:?}, expected [B, Pmax, {cpp}] \
                 (C·P·P) for this SigLIP 2 model",
                file.display()
            ))
        }
    };
    let data = read_f32_le(px.data(), px.dtype()).ok_or_else(|| {
        CliError(format!(
            "{}: tensor `pixel_values` has dtype {:?}; supported are F32, BF16 and F16",
            file.display(),
            px.dtype()
        ))
    })?;
    let ints = |name: &str, shape: [usize; 2]| -> CliResult<Vec<i64>> {
        let v = get(name)?;
        if v.shape() != shape {
            return fail(format!(
                "{}: tensor `{name}` has shape {:?}, expected {shape:?}",
                file.display(),
                v.shape()
            ));
        }
        read_ints(v.data(), v.dtype()).ok_or_else(|| {
            CliError(format!(
                "{}: tensor `{name}` has dtype {:?}; supported are I64, I32, U8 and BOOL",
                file.display(),
                v.dtype()
            ))
        })
    };
    let shapes = ints("spatial_shapes", [b, 2])?;
    let mask = if st.names().contains(&"pixel_attention_mask") {
        ints("pixel_attention_mask", [b, pmax])?
    } else {
        // The mask transformers would write for these shapes.
        let mut m = vec![0i64; b * pmax];
        for i in 0..b {
            let n = shapes[2 * i]
                .saturating_mul(shapes[2 * i + 1])
                .clamp(0, pmax as i64);
            m[i * pmax..i * pmax + n as usize].fill(1);
        }
        m
    };
    let images = ImagePatches::from_padded(&data, [b, pmax, cpp], &mask, &shapes)
        .map_err(|e| CliError(format!("{}: {e}", file.display())))?;
    for (i, img) in images.iter().enumerate() {
        tessera::preprocess::check_finite(
            &format!("pixel_values (image {i})"),
            &img.values,
            &[img.len(), cpp],
        )
        .map_err(|e| CliError(format!("{}: {e}", file.display())))?;
    }
    let real: usize = images.iter().map(ImagePatches::len).sum();
    Ok(PackedInput {
        source: format!(
            "{} (`pixel_values` [{b}, {pmax}, {cpp}], {real} real patches)",
            file.display()
        ),
        images,
        max_patches: pmax,
    })
}

/// `--image` files for a SigLIP 2 model, preprocessed as Siglip2ImageProcessor.
fn read_packed_images(
    files: &[PathBuf],
    config: &VisionConfig,
    model: &ConfigFiles,
    max_patches: Option<usize>,
    reading: Reading,
) -> CliResult<PackedInput> {
    if config.num_channels != 3 {
        return fail(format!(
            "--image makes RGB pixel_values, but the model expects {} channels",
            config.num_channels
        ));
    }
    let mut processor = tessera_cli::naflex_processor(
        model.preprocessor.as_deref(),
        config.patch_size,
        max_patches,
    )
    .map_err(CliError)?;
    processor.image.upright = reading.upright;
    processor.image.jpeg_draft = reading.jpeg_draft;
    let images = files
        .iter()
        .map(|f| processor.load_image(f))
        .collect::<tessera::Result<Vec<_>>>()?;
    let grids: Vec<String> = images
        .iter()
        .map(|i| format!("{}×{}", i.height, i.width))
        .collect();
    Ok(PackedInput {
        source: format!(
            "{} image(s) at their own aspect ratio, at most {} patches each: grids {}",
            images.len(),
            processor.max_num_patches,
            grids.join(", ")
        ),
        max_patches: processor.max_num_patches,
        images,
    })
}

/// A `--pixels` file read as far as its header says its tensors reach and no
/// further: `/dev/zero`, or a file whose header describes a few bytes of a huge
/// file, is refused after the header instead of read whole; a pipe
/// (`--pixels <(…)`) reads as a file does.
fn read_safetensors_file(file: &Path) -> CliResult<Vec<u8>> {
    use std::io::Read;
    let io = |e: std::io::Error| CliError(format!("{}: {e}", file.display()));
    let f = std::fs::File::open(file).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if meta.is_dir() {
        return fail(format!("{}: is a folder", file.display()));
    }
    let mut r = std::io::BufReader::new(f);
    let mut bytes = Vec::new();
    let mut read = |bytes: &mut Vec<u8>, n: u64| {
        bytes
            .try_reserve(usize::try_from(n).unwrap_or(usize::MAX))
            .map_err(|_| {
                CliError(format!(
                    "{}: {n} bytes do not fit in memory",
                    file.display()
                ))
            })?;
        (&mut r).take(n).read_to_end(bytes).map_err(io)
    };
    // The header length and the header (the checks below say what is wrong with a
    // short or oversized one).
    read(&mut bytes, 8)?;
    let n = match bytes.get(..8) {
        Some(b) => u64::from_le_bytes(b.try_into().unwrap_or_default()),
        None => 0,
    };
    if bytes.len() == 8 && n <= tessera::model::MAX_SAFETENSORS_HEADER {
        read(&mut bytes, n)?;
    }
    // Where the data section ends, by the header's offsets (their checks follow).
    let end = serde_json::from_slice::<serde_json::Value>(bytes.get(8..).unwrap_or_default())
        .ok()
        .and_then(|v| {
            v.as_object()?
                .iter()
                .filter(|(k, _)| *k != "__metadata__")
                .map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
                .try_fold(0u64, |a, e| Some(a.max(e?)))
        });
    if let Some(end) = end {
        let header_end = bytes.len() as u64;
        let tensors_end = header_end.saturating_add(end);
        if meta.is_file() {
            if meta.len() > tensors_end {
                return fail(format!(
                    "{}: its tensors end at byte {tensors_end}, but the file has {} bytes",
                    file.display(),
                    meta.len()
                ));
            }
            // What the file holds: a shorter one is refused as truncated below.
            read(&mut bytes, meta.len().saturating_sub(header_end))?;
        } else {
            // One byte more than the tensors need: a pipe that goes on is refused.
            read(&mut bytes, end.saturating_add(1))?;
            if bytes.len() as u64 > tensors_end {
                return fail(format!(
                    "{}: more bytes follow its tensors, which end at byte {tensors_end}",
                    file.display()
                ));
            }
        }
    }
    Ok(bytes)
}

/// The safetensors view of `bytes` read from `file`, checked first: the
/// safetensors crate's own checks can overflow on hostile offsets (a panic in
/// debug builds); tessera's header check names the file and tensor instead.
fn open_safetensors<'b>(file: &Path, bytes: &'b [u8]) -> CliResult<SafeTensors<'b>> {
    tessera::model::check_safetensors(file, bytes)?;
    SafeTensors::deserialize(bytes).map_err(|e| {
        CliError(format!(
            "{}: not a valid safetensors file: {e}",
            file.display()
        ))
    })
}

fn read_f32_le(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

fn read_pixels(file: &Path, config: &VisionConfig) -> CliResult<Input> {
    let bytes = read_safetensors_file(file)?;
    let st = open_safetensors(file, &bytes)?;
    let view = st.tensor("pixel_values").map_err(|_| {
        CliError(format!(
            "{}: no tensor `pixel_values` (found: {})",
            file.display(),
            st.names().join(", ")
        ))
    })?;
    let data = read_f32_le(view.data(), view.dtype()).ok_or_else(|| {
        CliError(format!(
            "{}: tensor `pixel_values` has dtype {:?}; supported are F32, BF16 and F16",
            file.display(),
            view.dtype()
        ))
    })?;
    let shape = view.shape().to_vec();
    let (c, i) = (config.num_channels, config.image_size);
    let bad_shape = || {
        CliError(format!(
            "{}: tensor `pixel_values` has shape {shape:?}, expected [B, {c}, {i}, {i}] or [S, B, {c}, {i}, {i}] for this model",
            file.display()
        ))
    };
    let (segments, seg_shape, segment_axis) = match shape[..] {
        [b, cc, h, w] if [cc, h, w] == [c, i, i] => (1, [b, c, i, i], config.has_memory()),
        [s, b, cc, h, w] if [cc, h, w] == [c, i, i] => (s, [b, c, i, i], true),
        _ => return Err(bad_shape()),
    };
    if segments == 0 || seg_shape[0] == 0 {
        return Err(bad_shape());
    }
    if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
        return fail(format!(
            "{}: tensor `pixel_values` holds a non-finite value ({}) at flat index {pos}",
            file.display(),
            data[pos]
        ));
    }
    Ok(Input {
        data,
        segments,
        seg_shape,
        segment_axis,
        source: format!("{} (`pixel_values` {shape:?})", file.display()),
    })
}

fn read_images(
    files: &[PathBuf],
    config: &VisionConfig,
    model: &ConfigFiles,
    reading: Reading,
) -> CliResult<Input> {
    if config.num_channels != 3 {
        return fail(format!(
            "--image makes RGB pixel_values, but the model expects {} channels",
            config.num_channels
        ));
    }
    let processor = ImageProcessor {
        upright: reading.upright,
        jpeg_draft: reading.jpeg_draft,
        ..ImageProcessor::for_model(model.preprocessor.as_deref(), config.image_size)?
    };
    let data = processor.load_images(files)?;
    let (n, i) = (files.len(), config.image_size);
    let (segments, seg_shape, segment_axis, how) = if config.has_memory() {
        (n, [1, 3, i, i], true, "consecutive segments of one stream")
    } else {
        (1, [n, 3, i, i], false, "one batch")
    };
    Ok(Input {
        data,
        segments,
        seg_shape,
        segment_axis,
        source: format!("{n} image(s) as {how}, preprocessed to {i}×{i}"),
    })
}

// ---------------------------------------------------------------------------
// Commands.

fn run_command(args: &RunArgs) -> CliResult<()> {
    // Check the cheap arguments before reading anything.
    let dtype = args.exec.dtype;
    if args.upright && args.input.image.is_empty() {
        return fail("--upright applies to --image (pixel_values are used as given)");
    }
    if args.jpeg_draft && args.input.image.is_empty() {
        return fail("--jpeg-draft applies to --image (pixel_values are used as given)");
    }
    let reading = Reading {
        upright: args.upright,
        jpeg_draft: args.jpeg_draft,
    };
    // Before any work: an output that cannot be written, or would replace an input,
    // fails now.
    if let Some(out) = &args.exec.output {
        check_output_path(out)?;
        let inputs = args.input.pixels.iter().chain(&args.input.image);
        tessera_cli::output_is_not_an_input("--output", out, inputs.map(PathBuf::as_path))
            .map_err(CliError)?;
    }
    // The config first: the options and the inputs are checked before the weights
    // are looked for (or downloaded, for a hub id not in the cache).
    let files = tessera_cli::config_files(&args.model, args.revision.as_deref())?;
    let config = VisionConfig::from_file(&files.config)?;
    let packed = config.architecture == Architecture::Siglip2;
    if args.max_patches.is_some() && !packed {
        return fail(
            "--max-patches applies to --image on a SigLIP 2 model (this SigLIP model takes \
             square images of its image_size)",
        );
    }
    if args.max_patches.is_some() && args.input.image.is_empty() {
        return fail(
            "--max-patches applies to --image (a --pixels file's patches are used as given)",
        );
    }
    let input = match (&args.input.pixels, &args.input.image[..], packed) {
        (Some(file), [], false) => Job::Fixed(read_pixels(file, &config)?),
        (None, images, false) if !images.is_empty() => {
            Job::Fixed(read_images(images, &config, &files, reading)?)
        }
        (Some(file), [], true) => Job::Packed(read_packed_pixels(file, &config)?),
        (None, images, true) if !images.is_empty() => Job::Packed(read_packed_images(
            images,
            &config,
            &files,
            args.max_patches,
            reading,
        )?),
        _ => return fail("give either --pixels FILE or --image FILE..."),
    };
    execute(&files, &config, &input, dtype, &args.exec)
}

fn demo_command(exec: &ExecArgs) -> CliResult<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets");
    let model = root.join("mga_tiny");
    let image = root.join("waves_64x48.png");
    for p in [&model, &image] {
        if !p.exists() {
            return fail(format!(
                "{}: bundled demo asset not found (the demo runs from a tessera source checkout)",
                p.display()
            ));
        }
    }
    say!(
        "demo: tessera run --model {} --image {}",
        model.display(),
        image.display()
    );
    let args = RunArgs {
        model,
        revision: None,
        input: InputArgs {
            pixels: None,
            image: vec![image],
        },
        max_patches: None,
        upright: false,
        jpeg_draft: false,
        exec: ExecArgs {
            device: exec.device,
            dtype: exec.dtype,
            output: exec.output.clone(),
        },
    };
    run_command(&args)
}

/// Everything a run needs besides the device and element type.
struct RunContext<'a> {
    model: &'a ModelFiles,
    config: &'a VisionConfig,
    input: &'a Job,
    output: Option<&'a Path>,
    device_note: String,
}

fn execute(
    model: &ConfigFiles,
    config: &VisionConfig,
    input: &Job,
    dtype: DType,
    exec: &ExecArgs,
) -> CliResult<()> {
    let (selected, device_note) = exec.device.open().map_err(CliError)?;
    // The weights last: a device that cannot be opened costs no download.
    let model = tessera_cli::weights(model)?;
    let ctx = RunContext {
        model: &model,
        config,
        input,
        output: exec.output.as_deref(),
        device_note,
    };
    match (selected, dtype) {
        (Opened::Cpu, DType::F32) => run::<f32, Cpu>(Cpu, &ctx),
        (Opened::Cpu, DType::BF16) => run::<bf16, Cpu>(Cpu, &ctx),
        (Opened::Cuda(d), DType::F32) => run::<f32, Cuda>(d, &ctx),
        (Opened::Cuda(d), DType::BF16) => run::<bf16, Cuda>(d, &ctx),
        (Opened::Wgpu(d), DType::F32) => run::<f32, Wgpu>(d, &ctx),
        (Opened::Wgpu(d), DType::BF16) => run::<bf16, Wgpu>(d, &ctx),
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn to_f32<T: Element>(v: &[T]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// The run itself, written once for every device and element type.
fn run<T: Element, D: Kernels<T>>(device: D, ctx: &RunContext<'_>) -> CliResult<()> {
    let (config, input) = (ctx.config, ctx.input);
    say!("device: {} [{}]", device.describe(), ctx.device_note);
    match T::DTYPE {
        DType::F32 => say!("dtype: f32"),
        DType::BF16 => {
            say!("dtype: bf16 (weights stored as F32 or F16 are rounded to bf16 on load)")
        }
    }
    let memory_note = if config.has_memory() {
        format!(
            ", memory E={} M={} on layers {:?}",
            config.memory_experts, config.memory_slots, config.memory_layers
        )
    } else {
        String::new()
    };
    let geometry = match config.architecture {
        Architecture::Siglip => format!("image {}", config.image_size),
        Architecture::Siglip2 => {
            let g = config.position_grid();
            format!("SigLIP 2, variable resolution, position grid {g}×{g}")
        }
    };
    say!(
        "model: {} ({} layers, hidden {}, {} heads, {geometry}, patch {}{}{})",
        ctx.model
            .hub_id
            .clone()
            .unwrap_or_else(|| ctx.model.dir.display().to_string()),
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.patch_size,
        if config.vision_use_head {
            ", pooling head"
        } else {
            ""
        },
        memory_note
    );
    if let Some(taken) = config.defaults_taken() {
        say!("config: absent keys take transformers' defaults: {taken}");
    }
    say!("input: {}", input.source());

    let t = Instant::now();
    let model = VisionModel::<T, D>::load_files(ctx.model, &device)?;
    device.synchronize()?;
    say!("load: {:.3} ms", ms(t));
    let (tensors, lead) = match input {
        Job::Fixed(input) => run_fixed(&model, input)?,
        Job::Packed(input) => run_packed(&model, input)?,
    };
    report_outputs(&tensors, lead)?;
    if let Some(path) = ctx.output {
        write_output(path, &tensors, &device.describe())?;
        say!("wrote {}", path.display());
    }
    Ok(())
}

/// Output tensors for the file: name, shape, values.
type Outputs = Vec<(String, Vec<usize>, Values)>;

/// The values of an output tensor, in the dtype written.
enum Values {
    F32(Vec<f32>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

/// `[B, C, I, I]` segments through `forward`, the memory carried: the output
/// tensors and the number of leading batch axes.
fn run_fixed<T: Element, D: Kernels<T>>(
    model: &VisionModel<T, D>,
    input: &Input,
) -> CliResult<(Outputs, usize)> {
    let config = model.config();
    let device = model.device();
    let batch = input.seg_shape[0];
    let seg_len: usize = input.seg_shape.iter().product();
    let (n, d) = (config.num_patches(), config.hidden_size);
    let mut memory = model.new_memory(batch)?;
    let mut last = Vec::new();
    let mut pooled = Vec::new();

    let many = input.segments > 8;
    let bar = if many && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(input.segments as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} segments, {elapsed} (eta {eta})",
        ) {
            bar.set_style(style);
        }
        Some(bar)
    } else {
        None
    };
    let (mut upload_total, mut forward_total) = (0.0f64, 0.0f64);
    let (mut forward_min, mut forward_max) = (f64::INFINITY, 0.0f64);
    for s in 0..input.segments {
        let t = Instant::now();
        let host: Vec<T> = input.data[s * seg_len..(s + 1) * seg_len]
            .iter()
            .map(|&v| T::from_f32(v))
            .collect();
        let pixels = DeviceBuffer::<T, D>::from_slice(device, &host, &input.seg_shape)?;
        device.synchronize()?;
        let upload = ms(t);

        let t = Instant::now();
        let out = model.forward(&pixels, Some(&mut memory))?;
        device.synchronize()?;
        let forward = ms(t);

        last.extend(to_f32(&out.last_hidden_state.to_vec()?));
        if let Some(p) = &out.pooler_output {
            pooled.extend(to_f32(&p.to_vec()?));
        }
        upload_total += upload;
        forward_total += forward;
        forward_min = forward_min.min(forward);
        forward_max = forward_max.max(forward);
        if !many {
            say!(
                "segment {}/{}: upload {upload:.3} ms, forward {forward:.3} ms",
                s + 1,
                input.segments
            );
        }
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if many {
        say!(
            "{} segments: upload {upload_total:.3} ms total; forward {forward_total:.3} ms total, {:.3} ms mean, {forward_min:.3}..{forward_max:.3} ms",
            input.segments,
            forward_total / input.segments as f64
        );
    }

    // Outputs, all f32, with a leading S axis for segment input.
    let lead: Vec<usize> = if input.segment_axis {
        vec![input.segments, batch]
    } else {
        vec![batch]
    };
    let with_lead = |rest: &[usize]| [&lead[..], rest].concat();
    let mut tensors: Outputs = vec![
        (
            "pixel_values".into(),
            with_lead(&input.seg_shape[1..]),
            Values::F32(input.data.clone()),
        ),
        (
            "last_hidden_state".into(),
            with_lead(&[n, d]),
            Values::F32(last),
        ),
    ];
    if config.vision_use_head {
        tensors.push(("pooler_output".into(), with_lead(&[d]), Values::F32(pooled)));
    }
    for (l, state) in memory.layers() {
        tensors.push((
            format!("memory.layers.{l}"),
            state.shape().to_vec(),
            Values::F32(to_f32(&state.to_vec()?)),
        ));
    }
    Ok((tensors, lead.len()))
}

/// SigLIP 2 images packed into one sequence through `forward_packed`: the
/// outputs in transformers' padded layout.
fn run_packed<T: Element, D: Kernels<T>>(
    model: &VisionModel<T, D>,
    input: &PackedInput,
) -> CliResult<(Outputs, usize)> {
    let config = model.config();
    let device = model.device();
    let (b, pmax, d) = (input.images.len(), input.max_patches, config.hidden_size);
    let cpp = config.patch_values();

    let t = Instant::now();
    let batch = model.pack(&input.images)?;
    device.synchronize()?;
    let upload = ms(t);
    let t = Instant::now();
    let out = model.forward_packed(&batch)?;
    device.synchronize()?;
    let forward = ms(t);
    let real = batch.tokens();
    say!(
        "packed {b} image(s), {real} patches (padded layout: {}): upload {upload:.3} ms, forward {forward:.3} ms",
        b * pmax
    );

    // The padded layout of the inputs (as transformers writes them).
    let len = b
        .checked_mul(pmax)
        .and_then(|n| n.checked_mul(cpp))
        .ok_or_else(|| CliError(format!("padded pixel_values [{b}, {pmax}, {cpp}] overflow")))?;
    let mut pixels = Vec::new();
    pixels.try_reserve_exact(len).map_err(|_| {
        CliError(format!(
            "padded pixel_values [{b}, {pmax}, {cpp}] do not fit in host memory; \
             lower --max-patches"
        ))
    })?;
    pixels.resize(len, 0f32);
    let mut mask = vec![0i32; b * pmax];
    let mut shapes = Vec::with_capacity(2 * b);
    for (i, img) in input.images.iter().enumerate() {
        pixels[i * pmax * cpp..i * pmax * cpp + img.values.len()].copy_from_slice(&img.values);
        mask[i * pmax..i * pmax + img.len()].fill(1);
        shapes.extend([img.height as i64, img.width as i64]);
    }
    let mut tensors: Outputs = vec![
        (
            "pixel_values".into(),
            vec![b, pmax, cpp],
            Values::F32(pixels),
        ),
        (
            "pixel_attention_mask".into(),
            vec![b, pmax],
            Values::I32(mask),
        ),
        ("spatial_shapes".into(), vec![b, 2], Values::I64(shapes)),
        (
            "last_hidden_state".into(),
            vec![b, pmax, d],
            Values::F32(to_f32(&out.last_hidden_state_padded(pmax)?)),
        ),
    ];
    if let Some(p) = &out.pooler_output {
        tensors.push((
            "pooler_output".into(),
            vec![b, d],
            Values::F32(to_f32(&p.to_vec()?)),
        ));
    }
    Ok((tensors, 1))
}

/// The outputs' shapes and the first values of the pooled (or last hidden) state.
fn report_outputs(tensors: &Outputs, lead: usize) -> CliResult<()> {
    let shapes: Vec<String> = tensors
        .iter()
        .filter(|(name, _, _)| {
            name == "last_hidden_state" || name == "pooler_output" || name.starts_with("memory.")
        })
        .map(|(name, shape, _)| format!("{name} {shape:?}"))
        .collect();
    say!("outputs: {}", shapes.join(", "));
    let find = |n: &str| tensors.iter().find(|t| t.0 == n);
    let Some((name, _, Values::F32(values))) =
        find("pooler_output").or_else(|| find("last_hidden_state"))
    else {
        return fail("internal error: no output tensor");
    };
    let show = values.len().min(8);
    let first: Vec<String> = values[..show].iter().map(|v| format!("{v:.5}")).collect();
    let zeros = lead + usize::from(name == "last_hidden_state");
    let index = vec!["0"; zeros].join(", ");
    say!("{name}[{index}, :{show}] = [{}]", first.join(", "));
    // Broken weights or pixels show as NaN or ±inf: said, as embed says it.
    for (name, _, values) in tensors {
        let Values::F32(values) = values else {
            continue;
        };
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 && name != "pixel_values" {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr().lock(),
                "warning: {name} holds {bad} NaN or ±inf value(s) of {} (the model's \
                 weights or the pixels are not finite?)",
                values.len()
            );
        }
    }
    Ok(())
}

/// A serialised safetensors file's header rewritten with its keys sorted, in
/// place (the same keys and values: the same length), so that the same outputs
/// make the same bytes; the crate writes the metadata in a HashMap's random order.
fn sort_header(file: &mut [u8]) -> Result<(), String> {
    let len = file
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or("a short safetensors file")?;
    let header = file
        .get_mut(8..8 + len)
        .ok_or("a short safetensors header")?;
    let value: serde_json::Value = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let sorted = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    if sorted.len() > len {
        return Err("the sorted header is longer (internal error)".into());
    }
    header[..sorted.len()].copy_from_slice(&sorted);
    header[sorted.len()..].fill(b' ');
    Ok(())
}

/// `--output` names a `.safetensors` file (not a folder) in a folder that exists.
fn check_output_path(path: &Path) -> CliResult<()> {
    if path.is_dir() {
        return fail(format!("--output {}: is a folder", path.display()));
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.strip_suffix(".safetensors").is_none_or(str::is_empty) {
        return fail(format!(
            "--output {}: the outputs are written as NAME.safetensors",
            path.display()
        ));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return fail(format!(
            "--output {}: no such folder {}",
            path.display(),
            parent.display()
        ));
    }
    Ok(())
}

/// The output file, written whole beside `path` and then renamed onto it: a
/// write that fails (a full disk) leaves no half file, and an earlier output at
/// `path` stays as it was.
fn write_output(path: &Path, tensors: &Outputs, device: &str) -> CliResult<()> {
    let bytes: Vec<(Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|(_, _, v)| match v {
            Values::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Values::I32(v) => (Dtype::I32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Values::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        })
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, _), (dtype, data)) in tensors.iter().zip(&bytes) {
        let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
            .map_err(|e| CliError(format!("{}: tensor `{name}`: {e}", path.display())))?;
        views.push((name.clone(), view));
    }
    let metadata = HashMap::from([
        ("producer".to_string(), "tessera".to_string()),
        ("device".to_string(), device.to_string()),
    ]);
    let mut file = safetensors::serialize(views, Some(metadata))
        .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    sort_header(&mut file).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    tessera_cli::embed::write_replacing(path, &file).map_err(CliError)
}
