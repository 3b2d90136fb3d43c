//! Criterion benchmarks of every op × backend × dtype at SigLIP-base and
//! SigLIP-so400m shapes (batch 1 and 32), plus the shipped forward pass
//! (`VisionModel::forward_into` of a random model of the real shape) and the
//! SigLIP 2 packed forward of 64 mixed-size images (`pack` + `forward_packed`).
//!
//! ```text
//! cargo bench --bench ops                      # everything that can run here
//! cargo bench --bench ops -- cpu/f32/linear    # a filter (criterion's regex)
//! TESSERA_BENCH_ALL=1 cargo bench --bench ops  # also so400m batch 32 on the CPU
//! ```
//!
//! The CPU always runs; wgpu and CUDA run when a device can be opened, else a
//! skip notice is printed. Times come from `Device::time_ms` through
//! `iter_custom` (CUDA events on CUDA, a drained queue plus the host clock
//! elsewhere). `tessera bench` prints the same cases as one table with peers and
//! ceilings; this file is for criterion's statistics and regression tracking.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tessera::{bf16, Cpu, Cuda, DType, DeviceKind, Element, Wgpu};
use tessera_cli::bench::{self, BenchKernels, BenchOptions, Bound, CaseSpec};

/// The cases of a backend: everything `tessera bench` runs there, except CPU
/// so400m batch 32 (minutes per op on 2 cores) unless `TESSERA_BENCH_ALL` is set.
fn cases_for(kind: DeviceKind, software: bool) -> Vec<CaseSpec> {
    let opts = BenchOptions {
        device: kind,
        all_shapes: std::env::var_os("TESSERA_BENCH_ALL").is_some(),
        // CPU and software adapters (lavapipe) run two encoder layers and skip
        // so400m batch 32; GPUs run the checkpoints' full depth.
        software,
        ..BenchOptions::default()
    };
    bench::select_cases(&opts).0
}

fn bench_backend<T: Element, D: BenchKernels<T>>(c: &mut Criterion, dev: &D, software: bool) {
    let kind = D::KIND;
    let dtype = T::DTYPE;
    let mut group = c.benchmark_group(format!("{kind}/{dtype}"));
    // Heavy cases: few samples, short windows; criterion still reports spread.
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for spec in cases_for(kind, software) {
        let id = BenchmarkId::new(spec.op_label(), spec.shape_label(dtype));
        let name = format!(
            "{kind}/{dtype} {} {}",
            spec.op_label(),
            spec.shape_label(dtype)
        );
        // Criterion reports Elements/s: here FLOP/s for compute-bound cases.
        match spec.bound() {
            Bound::Compute => group.throughput(Throughput::Elements(spec.flops() as u64)),
            Bound::Memory => group.throughput(Throughput::Bytes(spec.bytes(dtype) as u64)),
        };
        // Buffers are made on the first call, so a criterion filter that skips
        // the case costs nothing. A case that cannot be prepared or whose op fails
        // is reported on stderr and measured as an empty closure (near-zero time).
        let mut prepared: Option<Result<bench::Prepared, String>> = None;
        group.bench_function(id, |b| {
            let state = prepared.get_or_insert_with(|| {
                let mut p = bench::prepare::<T, D>(dev, &spec).map_err(|e| e.to_string())?;
                p.run()
                    .and_then(|()| dev.synchronize())
                    .map_err(|e| e.to_string())?;
                Ok(p)
            });
            match state {
                Ok(p) => b.iter_custom(|iters| {
                    let iters = usize::try_from(iters).unwrap_or(usize::MAX).max(1);
                    match dev.time_ms(iters, || p.run()) {
                        Ok(ms) => Duration::from_secs_f64(ms * iters as f64 / 1e3),
                        Err(e) => {
                            eprintln!("ERROR {name}: {e}");
                            Duration::ZERO
                        }
                    }
                }),
                Err(e) => {
                    eprintln!("SKIPPED {name}: {e} (the time below is meaningless)");
                    b.iter(|| ())
                }
            }
        });
    }
    group.finish();
}

fn bench_device<D: BenchKernels<f32> + BenchKernels<bf16>>(
    c: &mut Criterion,
    dev: &D,
    software: bool,
) {
    for dtype in [DType::F32, DType::BF16] {
        match dtype {
            DType::F32 => bench_backend::<f32, D>(c, dev, software),
            DType::BF16 => bench_backend::<bf16, D>(c, dev, software),
        }
    }
}

fn ops(c: &mut Criterion) {
    bench_device(c, &Cpu, true);
    match Wgpu::new() {
        Ok(dev) => {
            let software = dev.adapter_info().is_software;
            bench_device(c, &dev, software)
        }
        Err(e) => eprintln!("skip wgpu: {e}"),
    }
    match Cuda::new(0) {
        Ok(dev) => bench_device(c, &dev, false),
        Err(e) => eprintln!("skip cuda: {e}"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = ops
}
criterion_main!(benches);
