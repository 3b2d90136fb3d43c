//! Benchmarks shared by `tessera bench` and the criterion benches (`benches/ops.rs`).
//!
//! [`run`] times every op family at SigLIP-base and SigLIP-so400m shapes on one
//! device and dtype, next to peers measured in the same run (see [`peers`]), and
//! returns a [`BenchTable`] whose `Display` is one aligned table:
//!
//! - time: the median over several repetitions of [`Device::time_ms`] (device
//!   timers where the backend has them), after warm-up;
//! - throughput: TFLOP/s for GEMM-like ops (a multiply-add counts 2), GB/s for
//!   memory-bound ops (the bytes the op must read plus write, each once);
//! - % of ceiling: against the peer GEMM at a large square shape (compute) or a
//!   large device copy (memory), both measured in the same run, before and
//!   after the cases (the better of the two kept);
//! - vs peer: `peer ms / tessera ms` at the same shape (above 1× tessera is
//!   faster): the vendor GEMM for linear and patch embedding, a copy of the same
//!   bytes for memory-bound ops.
//!
//! ```no_run
//! use tessera_cli::bench::{run, BenchOptions};
//! let table = run(&BenchOptions { quick: true, ..BenchOptions::default() })?;
//! println!("{table}");
//! # Ok::<(), tessera::Error>(())
//! ```

pub mod cases;
pub mod peers;
mod table;

pub use cases::{
    family_cases, launch_case, prepare, square_linear, BenchKernels, Bound, CaseKind, CaseSpec,
    ModelShape, OpKind, Prepared, MODELS, SIGLIP_BASE,
};
pub use peers::{BenchDevice, PeerSet};
pub use table::{BenchRow, BenchTable, Ceiling, PeerCell};

use half::bf16;
use tessera::{Cpu, Cuda, Wgpu};
use tessera::{DType, Element};
use tessera::{Device, DeviceKind};
use tessera::{Error, Result};

/// The largest `--batch` a bench accepts (so400m's fc1 output alone is 51 GB in
/// f32 at 4096 images).
const MAX_BENCH_BATCH: usize = 4096;

/// What to benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    pub device: DeviceKind,
    /// CUDA ordinal (ignored elsewhere).
    pub ordinal: usize,
    pub dtype: DType,
    /// Op families to run; empty means all.
    pub ops: Vec<OpKind>,
    /// Batch 1, SigLIP-base only, fewer repetitions, one forward layer.
    pub quick: bool,
    /// Encoder layers of the `forward` row (default: 2 on the CPU, the
    /// checkpoint's depth on GPUs; 1 in quick mode).
    pub layers: Option<usize>,
    /// Also run SigLIP-so400m at batch 32 on the CPU (minutes per op on 2 cores).
    pub all_shapes: bool,
    /// Repetitions per case (default 7, quick 3); the median is reported.
    pub reps: Option<usize>,
    /// Print one line per case to stderr while running.
    pub progress: bool,
    /// Size the run for a slow device (set for the CPU and for software wgpu
    /// adapters such as lavapipe): CPU layer count, no so400m batch 32 unless
    /// `all_shapes`, 1024³ instead of 4096³ for the square GEMM.
    pub software: bool,
    /// Batch sizes instead of the default (1 and 32; 1 in quick mode).
    pub batches: Vec<usize>,
    /// Model shapes by name (`base`, `so400m`) instead of the default (both;
    /// base in quick mode).
    pub models: Vec<String>,
    /// Keep only the cases whose row label (op and shape, as the table prints
    /// them, e.g. `linear qkv so400m B32 M23328 K1152 N3456`) contains one of
    /// these strings; empty keeps all. For profiling one kernel.
    pub cases: Vec<String>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            device: DeviceKind::Cpu,
            ordinal: 0,
            dtype: DType::F32,
            ops: Vec::new(),
            quick: false,
            layers: None,
            all_shapes: false,
            reps: None,
            progress: false,
            software: false,
            batches: Vec::new(),
            models: Vec::new(),
            cases: Vec::new(),
        }
    }
}

/// `tessera bench` command-line arguments (flatten into the CLI's subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Backend: cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    pub ordinal: usize,
    /// Element type: f32 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Op families (comma-separated): patch, linear, layer_norm, elementwise,
    /// attention, memory_gated_attention, forward. Default: all.
    #[arg(long, value_delimiter = ',')]
    pub op: Vec<String>,
    /// Batch 1, SigLIP-base only, fewer repetitions.
    #[arg(long)]
    pub quick: bool,
    /// Encoder layers in the forward row.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Include SigLIP-so400m batch 32 on the CPU (slow).
    #[arg(long)]
    pub all_shapes: bool,
    /// Repetitions per case (median reported).
    #[arg(long)]
    pub reps: Option<usize>,
    /// Batch sizes (comma-separated) instead of 1 and 32.
    #[arg(long, value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Model shapes (comma-separated): base, so400m. Default: both.
    #[arg(long, value_delimiter = ',')]
    pub model: Vec<String>,
    /// Only the cases whose row label (op and shape, e.g. `linear qkv so400m B32`)
    /// contains one of these strings (comma-separated): one kernel to profile.
    #[arg(long, value_delimiter = ',')]
    pub case: Vec<String>,
}

impl BenchArgs {
    /// Parse into [`BenchOptions`] (progress lines on).
    pub fn options(&self) -> Result<BenchOptions> {
        let bad = |tensor: &str, msg: String| Error::Input {
            tensor: tensor.into(),
            msg,
        };
        let device: DeviceKind = self.device.parse()?;
        let dtype = self.dtype.parse().map_err(|m| bad("--dtype", m))?;
        let ops = self
            .op
            .iter()
            .map(|s| s.parse::<OpKind>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|m| bad("--op", m))?;
        if self.reps == Some(0) || self.layers == Some(0) || self.batch.contains(&0) {
            return Err(bad("--reps/--layers/--batch", "must be at least 1".into()));
        }
        if let Some(b) = self.batch.iter().find(|&&b| b > MAX_BENCH_BATCH) {
            return Err(bad(
                "--batch",
                format!(
                    "{b} is more than {MAX_BENCH_BATCH} images (a bench batch is made in memory)"
                ),
            ));
        }
        if let Some(m) = self
            .model
            .iter()
            .find(|m| !MODELS.iter().any(|s| s.name == *m))
        {
            let known: Vec<&str> = MODELS.iter().map(|s| s.name).collect();
            return Err(bad(
                "--model",
                format!("unknown shape `{m}` (known: {known:?})"),
            ));
        }
        let opts = BenchOptions {
            device,
            ordinal: self.ordinal,
            dtype,
            ops,
            quick: self.quick,
            layers: self.layers,
            all_shapes: self.all_shapes,
            reps: self.reps,
            progress: true,
            software: false,
            batches: self.batch.clone(),
            models: self.model.clone(),
            cases: self.case.clone(),
        };
        if !opts.cases.is_empty() && select_cases(&opts).0.is_empty() {
            return Err(bad(
                "--case",
                format!(
                    "{:?} matches no case of this selection (a case is named by its row \
                     label, op and shape: `linear qkv so400m B32 M23328 K1152 N3456`)",
                    opts.cases
                ),
            ));
        }
        Ok(opts)
    }
}

/// Warm-up and repetition policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Untimed calls before the first sample (the last one also estimates the cost).
    pub warmup: usize,
    /// Samples; the median is reported.
    pub reps: usize,
    /// Each sample runs enough calls to last about this long.
    pub target_ms: f64,
    /// Upper bound on the wall time of all samples of one case (reps shrink to 3).
    pub budget_ms: f64,
}

impl Timing {
    /// The policy for a device kind.
    pub fn for_run(quick: bool, reps: Option<usize>) -> Self {
        let (warmup, default_reps, target_ms, budget_ms) = if quick {
            (1, 3, 20.0, 5_000.0)
        } else {
            (2, 7, 100.0, 30_000.0)
        };
        Self {
            warmup,
            reps: reps.unwrap_or(default_reps).max(1),
            target_ms,
            budget_ms,
        }
    }
    /// Calls per sample given one call's estimated ms.
    pub fn iters_for(&self, est_ms: f64) -> usize {
        if est_ms.is_finite() && est_ms > 0.0 {
            (self.target_ms / est_ms).ceil().clamp(1.0, 10_000.0) as usize
        } else {
            1
        }
    }
    /// Samples given one sample's estimated ms.
    pub fn reps_for(&self, sample_ms: f64) -> usize {
        if sample_ms * self.reps as f64 > self.budget_ms {
            self.reps.min(3)
        } else {
            self.reps
        }
    }
}

/// Median of a non-empty slice (NaN-free); 0 for an empty one.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Median ms per call of `prepared` on `dev`, timed with [`Device::time_ms`].
pub fn time_case<D: Device>(dev: &D, prepared: &mut Prepared, t: &Timing) -> Result<f64> {
    let mut est = f64::INFINITY;
    for _ in 0..t.warmup.max(1) {
        est = dev.time_ms(1, || prepared.run())?;
    }
    let iters = t.iters_for(est);
    let mut v = Vec::with_capacity(t.reps);
    for _ in 0..t.reps_for(est * iters as f64) {
        v.push(dev.time_ms(iters, || prepared.run())?);
    }
    Ok(median(&mut v))
}

/// The cases `opts` selects for a device kind, plus notes on what was left out.
pub fn select_cases(opts: &BenchOptions) -> (Vec<CaseSpec>, Vec<String>) {
    let mut notes = Vec::new();
    let on_cpu = opts.device == DeviceKind::Cpu || opts.software;
    let models: Vec<ModelShape> = if !opts.models.is_empty() {
        MODELS
            .into_iter()
            .filter(|m| opts.models.iter().any(|n| n == m.name))
            .collect()
    } else if opts.quick {
        vec![SIGLIP_BASE]
    } else {
        MODELS.to_vec()
    };
    let batches: &[usize] = if !opts.batches.is_empty() {
        &opts.batches
    } else if opts.quick {
        &[1]
    } else {
        &[1, 32]
    };
    let families: Vec<OpKind> = if opts.ops.is_empty() {
        OpKind::ALL.to_vec()
    } else {
        OpKind::ALL
            .into_iter()
            .filter(|k| opts.ops.contains(k))
            .collect()
    };
    // so400m batch 32 takes minutes per op on a CPU: left out of the default
    // selection there (not when shapes are named, or with --all-shapes).
    let explicit = !opts.batches.is_empty() || !opts.models.is_empty();
    let skip_big = on_cpu && !opts.all_shapes && !explicit;
    let mut out = Vec::new();
    for &family in &families {
        // SigLIP 2 packed: batches of images of 64..1024 patches (64 images, 16
        // in quick mode, unless batches are named).
        let packed_batches: &[usize] = match (opts.batches.is_empty(), opts.quick) {
            (false, _) => &opts.batches,
            (true, true) => &[16],
            (true, false) => &[64],
        };
        let batches = if family == OpKind::Packed {
            packed_batches
        } else {
            batches
        };
        for model in &models {
            for &batch in batches {
                if skip_big && model.name == "so400m" && batch == 32 {
                    continue;
                }
                let layers = opts.layers.unwrap_or(match (opts.quick, on_cpu) {
                    (true, _) => 1,
                    (false, true) => 2,
                    (false, false) => model.layers,
                });
                out.extend(family_cases(family, *model, batch, layers));
            }
        }
        if family == OpKind::Elementwise {
            out.push(launch_case());
        }
        if family == OpKind::Linear && !opts.quick {
            out.push(square_linear(if on_cpu { 1024 } else { 4096 }));
        }
    }
    if skip_big && !opts.quick {
        notes.push("so400m batch 32 skipped on the CPU (pass --all-shapes to include it)".into());
    }
    if !opts.cases.is_empty() {
        out.retain(|c| {
            let label = c.row_label(opts.dtype);
            opts.cases.iter().any(|want| label.contains(want.as_str()))
        });
    }
    (out, notes)
}

/// Run the benchmarks `opts` asks for.
pub fn run(opts: &BenchOptions) -> Result<BenchTable> {
    match opts.device {
        DeviceKind::Cpu => run_dtype(&Cpu, opts),
        DeviceKind::Cuda => run_dtype(&Cuda::new(opts.ordinal)?, opts),
        DeviceKind::Wgpu => {
            let dev = Wgpu::new()?;
            let opts = BenchOptions {
                software: opts.software || dev.adapter_info().is_software,
                ..opts.clone()
            };
            run_dtype(&dev, &opts)
        }
    }
}

fn run_dtype<D>(dev: &D, opts: &BenchOptions) -> Result<BenchTable>
where
    D: BenchDevice + BenchKernels<f32> + BenchKernels<bf16>,
{
    match opts.dtype {
        DType::F32 => run_on::<f32, D>(dev, opts),
        DType::BF16 => run_on::<bf16, D>(dev, opts),
    }
}

/// Sizes of the ceiling measurements.
const COPY_CEILING_BYTES: usize = 256 << 20;
const CPU_COPY_CEILING_BYTES: usize = 64 << 20;

/// Run every selected case on `dev` in dtype `T`.
pub fn run_on<T: Element, D: BenchDevice + BenchKernels<T>>(
    dev: &D,
    opts: &BenchOptions,
) -> Result<BenchTable> {
    let dtype = T::DTYPE;
    let t = Timing::for_run(opts.quick, opts.reps);
    let (cases, mut notes) = select_cases(opts);
    let mut peers = dev.peers();
    let slow = D::KIND == DeviceKind::Cpu || opts.software;
    let log = |msg: String| {
        if opts.progress {
            eprintln!("[bench] {msg}");
        }
    };

    // Ceilings: measured before and after the cases, the better of the two kept,
    // so that a transient slowdown (a shared machine, clocks ramping up) at one
    // end does not lower the bar.
    let need_compute = cases.iter().any(|c| c.bound() == Bound::Compute);
    let need_memory = cases.iter().any(|c| c.bound() == Bound::Memory);
    let gemm_size = if slow { 1024 } else { 4096 };
    let copy_bytes = if slow {
        CPU_COPY_CEILING_BYTES
    } else {
        COPY_CEILING_BYTES
    };
    let measure_ceilings = |peers: &mut Box<dyn PeerSet>| {
        let compute = if need_compute {
            let n = gemm_size;
            log(format!("ceiling: {} {n}³", peers.gemm_name(dtype)));
            let flops = 2.0 * (n as f64).powi(3);
            Ceiling::new(
                format!("{} {n}³", peers.gemm_name(dtype)),
                peers.gemm_ms(dtype, n, n, n, &t).map(|ms| flops / ms / 1e9),
                "TFLOP/s",
            )
        } else {
            Ceiling::skipped()
        };
        let memory = if need_memory {
            let mib = copy_bytes >> 20;
            log(format!("ceiling: {} {mib} MiB", peers.copy_name()));
            Ceiling::new(
                format!("{} of {mib} MiB (read + write)", peers.copy_name()),
                peers
                    .copy_ms(copy_bytes, &t)
                    .map(|ms| 2.0 * copy_bytes as f64 / ms / 1e6),
                "GB/s",
            )
        } else {
            Ceiling::skipped()
        };
        (compute, memory)
    };
    let (compute, memory) = measure_ceilings(&mut peers);

    let mut rows = Vec::with_capacity(cases.len());
    for spec in &cases {
        let label = spec.row_label(dtype);
        log(label.clone());
        // Whole forward passes: also the kernel launches of one call (a GPU's
        // launch overhead is what CUDA graphs would remove).
        let forward = matches!(
            spec.kind,
            CaseKind::Forward { .. }
                | CaseKind::MemoryForward { .. }
                | CaseKind::PackedForward { .. }
        );
        let mut launches = None;
        let measured = prepare::<T, D>(dev, spec).and_then(|mut p| {
            let ms = time_case(dev, &mut p, &t)?;
            if let (true, Some(before)) = (forward, dev.launch_count()) {
                p.run()?;
                dev.synchronize()?;
                launches = dev.launch_count().map(|after| after - before);
            }
            Ok(ms)
        });
        if let Some(n) = launches {
            notes.push(format!("{label}: {n} kernel launches per call"));
        }
        let peer = match measured {
            Err(_) => PeerCell::None,
            // SigLIP 2 packed: the peer is the same images padded to the largest.
            Ok(_) if matches!(spec.kind, CaseKind::PackedForward { .. }) => PeerCell::from_result(
                "the same images padded to the largest".into(),
                cases::packed_case::<T, D>(dev, spec, true)
                    .and_then(|mut p| time_case(dev, &mut p, &t))
                    .map_err(|e| e.to_string()),
            ),
            Ok(_) => match (spec.bound(), spec.peer_gemm()) {
                (Bound::Memory, _) => {
                    let bytes = (spec.bytes(dtype) / 2.0).round() as usize;
                    PeerCell::from_result(peers.copy_name(), peers.copy_ms(bytes, &t))
                }
                (Bound::Compute, Some((m, n, k))) => {
                    PeerCell::from_result(peers.gemm_name(dtype), peers.gemm_ms(dtype, m, n, k, &t))
                }
                (Bound::Compute, None) => PeerCell::External(match spec.kind {
                    CaseKind::Attention { .. } => "PyTorch SDPA (scripts/sdpa_bench.py)",
                    CaseKind::Forward { .. } => "PyTorch eager (scripts/sdpa_bench.py)",
                    _ => "none in this run",
                }),
            },
        };
        rows.push(BenchRow::new(spec, dtype, D::KIND, measured, peer));
    }
    let (compute_end, memory_end) = measure_ceilings(&mut peers);
    let compute = compute.best(compute_end);
    let memory = memory.best(memory_end);
    if dtype == DType::BF16 && D::KIND == DeviceKind::Cpu {
        notes.push("the gemm crate has no bf16 GEMM: bf16 rows compare with its f32 GEMM".into());
    }
    let mut table = BenchTable {
        device: dev.describe(),
        dtype,
        compute,
        memory,
        rows,
        notes,
    };
    table.fill_ceilings();
    Ok(table)
}
