//! Property tests of every op on every backend present: random shapes and values
//! against the f64 references of tests/common, at the bars of `crate::common::bar`
//! (relative L2: f32 1e-5, bf16 2e-2; cast exact). CPU always; wgpu and CUDA when
//! a device opens (TESSERA_REQUIRE_WGPU=1 / TESSERA_REQUIRE_CUDA=1 make a missing
//! one a failure). Cases per op: `TESSERA_PROPTEST_CASES` (default 32 on the CPU,
//! 16 on GPUs, so lavapipe stays quick). A failure prints the shrunk input.

use crate::common::{bar, rel_l2, rel_l2_to, to_f64};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tessera::ops::{self, Activation};
use tessera::{bf16, DeviceBuffer, Element, Kernels};

type Check = Result<(), TestCaseError>;

/// Values in [-scale, scale] from a seed, rounded to `T`.
fn values<T: Element>(seed: u64, n: usize, scale: f32) -> Vec<T> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            T::from_f32((2.0 * u - 1.0) * scale)
        })
        .collect()
}

fn up<T: Element, D: Kernels<T>>(dev: &D, data: &[T], shape: &[usize]) -> DeviceBuffer<T, D> {
    DeviceBuffer::from_slice(dev, data, shape).unwrap()
}

fn close<T: Element>(what: &str, out: &[T], reference: &[f64]) -> Check {
    within_bar(what, out, reference, reference, "")
}

/// `close` for sums of terms (linear, patch embedding), measured against the
/// size of the terms as `crate::common::assert_close_sum` explains: at small K,
/// `x·w + b + r` may cancel.
fn close_sum<T: Element>(what: &str, out: &[T], reference: &[f64], magnitude: &[f64]) -> Check {
    within_bar(
        what,
        out,
        reference,
        magnitude,
        " (against the size of the summed terms)",
    )
}

/// `out` within the bar of `reference`, the error measured against `scale`.
fn within_bar<T: Element>(
    what: &str,
    out: &[T],
    reference: &[f64],
    scale: &[f64],
    against: &str,
) -> Check {
    let err = rel_l2_to(&to_f64(out), reference, scale);
    prop_assert!(
        err <= bar::<T>(),
        "{what} [{}]: relative L2 error {err:e}{against} exceeds {:e}",
        T::DTYPE,
        bar::<T>()
    );
    Ok(())
}

fn runner(gpu: bool) -> TestRunner {
    let cases = std::env::var("TESSERA_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if gpu { 16 } else { 32 });
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 32,
        ..Config::default()
    })
}

fn run<S: Strategy>(gpu: bool, s: S, f: impl Fn(S::Value) -> Check) {
    if let Err(e) = runner(gpu).run(&s, f) {
        panic!("{e}");
    }
}

fn linear<T: Element, D: Kernels<T>>(dev: &D, gpu: bool) {
    let s = (1usize..40, 1usize..80, 1usize..80, 0u8..8, any::<u64>());
    run(gpu, s, |(rows, k, n, flags, seed)| {
        let (gelu, with_bias, with_res) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
        let x: Vec<T> = values(seed, rows * k, 1.0);
        let w: Vec<T> = values(seed ^ 1, n * k, 0.5);
        let b: Vec<T> = values(seed ^ 2, n, 0.5);
        let r: Vec<T> = values(seed ^ 3, rows * n, 1.0);
        let act = if gelu {
            Activation::GeluTanh
        } else {
            Activation::None
        };
        let (bb, rb) = (up(dev, &b, &[n]), up(dev, &r, &[rows, n]));
        let mut out = crate::common::poisoned::<T, D>(dev, &[rows, n]);
        ops::linear_into(
            &up(dev, &x, &[rows, k]),
            &up(dev, &w, &[n, k]),
            with_bias.then_some(&bb),
            act,
            with_res.then_some(&rb),
            &mut out,
        )
        .unwrap();
        let (bf, rf) = (to_f64(&b), to_f64(&r));
        let reference = crate::common::ref_linear(
            &to_f64(&x),
            &to_f64(&w),
            with_bias.then_some(&bf[..]),
            act,
            with_res.then_some(&rf[..]),
            rows,
            k,
            n,
        );
        let magnitude = crate::common::linear_magnitude(
            &to_f64(&x),
            &to_f64(&w),
            with_bias.then_some(&bf[..]),
            with_res.then_some(&rf[..]),
            rows,
            k,
            n,
        );
        close_sum(
            &format!("linear {rows}x{k}x{n} flags {flags}"),
            &out.to_vec().unwrap(),
            &reference,
            &magnitude,
        )
    });
}

/// Layer norm (with a bias) or RMS norm (without) at random shapes.
fn norm<T: Element, D: Kernels<T>>(dev: &D, gpu: bool, with_bias: bool) {
    run(
        gpu,
        (1usize..40, 1usize..300, any::<u64>()),
        |(rows, cols, seed)| {
            let x: Vec<T> = values(seed, rows * cols, 2.0);
            let w: Vec<T> = values(seed ^ 1, cols, 1.0);
            let b: Vec<T> = values(seed ^ 2, cols, 1.0);
            let bias = with_bias.then_some(&b[..]);
            let (got, reference) = crate::common::run_norm(dev, &x, &w, bias, (rows, cols), 1e-6);
            let name = if with_bias { "layer_norm" } else { "rms_norm" };
            close(&format!("{name} {rows}x{cols}"), &got, &reference)
        },
    );
}

fn layer_norm<T: Element, D: Kernels<T>>(dev: &D, gpu: bool) {
    norm::<T, D>(dev, gpu, true);
}

fn rms_norm<T: Element, D: Kernels<T>>(dev: &D, gpu: bool) {
    norm::<T, D>(dev, gpu, false);
}

fn patch_embed<T: Element, D: Kernels<T>>(dev: &D, gpu: bool) {
    let s = (
        1usize..3,
        1usize..4,
        1usize..5,
        1usize..7,
        1usize..40,
        any::<u64>(),
    );
    run(gpu, s, |(b, c, g, p, d, seed)| {
        let img = g * p;
        let px: Vec<T> = values(seed, b * c * img * img, 1.0);
        let w: Vec<T> = values(seed ^ 1, d * c * p * p, 0.5);
        let bias: Vec<T> = values(seed ^ 2, d, 0.5);
        let pos: Vec<T> = values(seed ^ 3, g * g * d, 0.5);
        let out = ops::patch_embed(
            &up(dev, &px, &[b, c, img, img]),
            &up(dev, &w, &[d, c, p, p]),
            &up(dev, &bias, &[d]),
            &up(dev, &pos, &[g * g, d]),
            p,
        )
        .unwrap();
        prop_assert_eq!(out.shape(), &[b, g * g, d][..]);
        let reference = crate::common::ref_patch_embed(
            &to_f64(&px),
            &to_f64(&w),
            &to_f64(&bias),
            &to_f64(&pos),
            b,
            c,
            img,
            p,
            d,
        );
        let magnitude = crate::common::patch_embed_magnitude(
            &to_f64(&px),
            &to_f64(&w),
            &to_f64(&bias),
            &to_f64(&pos),
            b,
            c,
            img,
            p,
            d,
        );
        close_sum(
            &format!("patch_embed b={b} c={c} g={g} p={p} d={d}"),
            &out.to_vec().unwrap(),
            &reference,
            &magnitude,
        )
    });
}

fn attention<T: Element, D: Kernels<T>>(dev: &D, gpu: bool) {
    let s = (
        1usize..3,
        1usize..4,
        1usize..97,
        1usize..20,
        1usize..48,
        any::<bool>(),
        any::<u64>(),
    );
    run(gpu, s, |(b, h, hd, nq, nk, bc, seed)| {
        let w = h * hd;
        let bq = if bc { 1 } else { b };
        let q: Vec<T> = values(seed, bq * nq * w, 1.0);
        let k: Vec<T> = values(seed ^ 1, b * nk * w, 1.0);
        let v: Vec<T> = values(seed ^ 2, b * nk * w, 1.0);
        let out = ops::attention(
            &up(dev, &q, &[bq, nq, w]),
            &up(dev, &k, &[b, nk, w]),
            &up(dev, &v, &[b, nk, w]),
            h,
        )
        .unwrap();
        prop_assert_eq!(out.shape(), &[b, nq, w][..]);
        let reference = crate::common::ref_attention(
            &to_f64(&q),
            &to_f64(&k),
            &to_f64(&v),
            b,
            h,
            hd,
            nq,
            nk,
            bc,
        );
        close(
            &format!("attention b={b} h={h} hd={hd} nq={nq} nk={nk} broadcast={bc}"),
            &out.to_vec().unwrap(),
            &reference,
        )
    });
}

fn memory<T: Element, D: Kernels<T>>(dev: &D, gpu: bool) {
    let s = (
        1usize..3,
        1usize..10,
        1usize..5,
        0usize..10,
        1usize..40,
        any::<u64>(),
    );
    run(gpu, s, |(b, n, e, m, d, seed)| {
        let what = format!("memory b={b} n={n} e={e} m={m} d={d}");
        let h: Vec<T> = values(seed, b * n * d, 1.0);
        let bank: Vec<T> = values(seed ^ 1, b * e * m * d, 1.0);
        let rw: Vec<T> = values(seed ^ 2, e * d, 1.0);
        let rb: Vec<T> = values(seed ^ 3, e, 0.5);
        let (joint, gate) = ops::memory_read(
            &up(dev, &h, &[b, n, d]),
            &up(dev, &bank, &[b, e, m, d]),
            &up(dev, &rw, &[e, d]),
            &up(dev, &rb, &[e]),
        )
        .unwrap();
        let (rj, rg) = crate::common::ref_memory_read(
            &to_f64(&h),
            &to_f64(&bank),
            &to_f64(&rw),
            &to_f64(&rb),
            b,
            n,
            e,
            m,
            d,
        );
        let gate_host = gate.to_vec().unwrap();
        let gate_err = rel_l2(&to_f64(&gate_host), &rg);
        prop_assert!(
            gate_err <= 1e-5,
            "{} gate: relative L2 error {:e}",
            what,
            gate_err
        );
        close(&format!("{what} joint"), &joint.to_vec().unwrap(), &rj)?;

        let o: Vec<T> = values(seed ^ 4, b * (m + n) * d, 1.0);
        let res: Vec<T> = values(seed ^ 5, b * n * d, 1.0);
        let mut bank_w = up(dev, &bank, &[b, e, m, d]);
        let out = ops::memory_write(
            &mut bank_w,
            &gate,
            &up(dev, &o, &[b, m + n, d]),
            &up(dev, &res, &[b, n, d]),
        )
        .unwrap();
        let gate_f64: Vec<f64> = gate_host.iter().map(|&g| g as f64).collect();
        let (rbank, rout) = crate::common::ref_memory_write(
            &to_f64(&bank),
            &gate_f64,
            &to_f64(&o),
            &to_f64(&res),
            b,
            n,
            e,
            m,
            d,
        );
        close(&format!("{what} out"), &out.to_vec().unwrap(), &rout)?;
        if m > 0 {
            close(&format!("{what} bank"), &bank_w.to_vec().unwrap(), &rbank)?;
        }
        Ok(())
    });
}

fn add<T: Element, D: Kernels<T>>(dev: &D, gpu: bool) {
    run(gpu, (1usize..5000, any::<u64>()), |(n, seed)| {
        let a: Vec<T> = values(seed, n, 3.0);
        let b: Vec<T> = values(seed ^ 1, n, 3.0);
        let out = ops::add(&up(dev, &a, &[n]), &up(dev, &b, &[n])).unwrap();
        let reference: Vec<f64> = to_f64(&a)
            .iter()
            .zip(to_f64(&b))
            .map(|(x, y)| x + y)
            .collect();
        close(&format!("add n={n}"), &out.to_vec().unwrap(), &reference)
    });
}

/// f32 → bf16 rounds to nearest-even exactly; bf16 → f32 is exact. Values span
/// many binades (including subnormals and ±0).
fn cast<D: Kernels<f32> + Kernels<bf16>>(dev: &D, gpu: bool) {
    let s = (1usize..3000, any::<u64>(), -130i32..128);
    run(gpu, s, |(n, seed, exp)| {
        let mut x: Vec<f32> = values(seed, n, 1.0);
        for (i, v) in x.iter_mut().enumerate() {
            *v *= 2f32.powi((exp + (i as i32 % 7) - 3).clamp(-140, 127));
        }
        let y = ops::cast::<f32, bf16, D>(&up(dev, &x, &[n])).unwrap();
        let got = y.to_vec().unwrap();
        for i in 0..n {
            prop_assert_eq!(
                got[i].to_bits(),
                crate::common::bf16_bits_reference(x[i]),
                "f32→bf16 at {}: {}",
                i,
                x[i]
            );
        }
        let back = ops::cast::<bf16, f32, D>(&y).unwrap().to_vec().unwrap();
        for i in 0..n {
            prop_assert_eq!(
                back[i].to_bits(),
                got[i].to_f32().to_bits(),
                "bf16→f32 at {}",
                i
            );
        }
        Ok(())
    });
}

macro_rules! backend {
    ($m:ident, $gpu:expr, $make:expr) => {
        mod $m {
            use super::*;

            macro_rules! op {
                ($name:ident, $f:ident) => {
                    #[test]
                    fn $name() {
                        let Some(dev) = $make else { return };
                        $f::<f32, _>(&dev, $gpu);
                        $f::<bf16, _>(&dev, $gpu);
                    }
                };
            }
            op!(linear_props, linear);
            op!(layer_norm_props, layer_norm);
            op!(rms_norm_props, rms_norm);
            op!(patch_embed_props, patch_embed);
            op!(attention_props, attention);
            op!(memory_props, memory);
            op!(add_props, add);

            #[test]
            fn cast_props() {
                let Some(dev) = $make else { return };
                cast(&dev, $gpu);
            }
        }
    };
}

backend!(cpu, false, Some(tessera::Cpu));
backend!(
    wgpu,
    true,
    crate::common::device_or_skip("wgpu", "TESSERA_REQUIRE_WGPU", tessera::Wgpu::new)
);
backend!(
    cuda,
    true,
    crate::common::device_or_skip("CUDA", "TESSERA_REQUIRE_CUDA", || tessera::Cuda::new(0))
);
