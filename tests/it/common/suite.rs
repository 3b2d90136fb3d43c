//! The generic op suite: each check runs several shapes no tile divides, with
//! fresh random inputs and the output poisoned with NaN before the launch, and
//! compares with the f64 reference. `op_suite!` stamps it for one device.

use tessera::ops::{self, Activation};
use tessera::{DeviceBuffer, Element, Kernels};

use super::compare::{assert_close, assert_close_sum, rel_l2, to_f64};
use super::reference::*;
use super::rng::Rng;

pub fn poisoned<T: Element, D: Kernels<T>>(dev: &D, shape: &[usize]) -> DeviceBuffer<T, D> {
    DeviceBuffer::full(dev, shape, T::from_f32(f32::NAN)).unwrap()
}

pub fn up<T: Element, D: Kernels<T>>(dev: &D, data: &[T], shape: &[usize]) -> DeviceBuffer<T, D> {
    DeviceBuffer::from_slice(dev, data, shape).unwrap()
}

/// One linear case: `act(x·Wᵀ + b) + r` on `dev` into a poisoned output, and the
/// f64 reference of the same inputs. (Shared by the suite and the NaN/±∞ checks.)
#[allow(clippy::too_many_arguments)]
pub fn run_linear<T: Element, D: Kernels<T>>(
    dev: &D,
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    act: Activation,
    r: Option<&[T]>,
    (rows, k, n): (usize, usize, usize),
) -> (Vec<T>, Vec<f64>) {
    let bb = b.map(|b| up(dev, b, &[n]));
    let rb = r.map(|r| up(dev, r, &[rows, n]));
    let mut out = poisoned::<T, D>(dev, &[rows, n]);
    ops::linear_into(
        &up(dev, x, &[rows, k]),
        &up(dev, w, &[n, k]),
        bb.as_ref(),
        act,
        rb.as_ref(),
        &mut out,
    )
    .unwrap();
    let (bf, rf) = (b.map(to_f64), r.map(to_f64));
    let reference = ref_linear(
        &to_f64(x),
        &to_f64(w),
        bf.as_deref(),
        act,
        rf.as_deref(),
        rows,
        k,
        n,
    );
    (out.to_vec().unwrap(), reference)
}

/// Layer norm of `x` `[rows, cols]` with `bias`, or RMS norm without one, at
/// `eps`, into a poisoned output; and its reference.
pub fn run_norm<T: Element, D: Kernels<T>>(
    dev: &D,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    (rows, cols): (usize, usize),
    eps: f32,
) -> (Vec<T>, Vec<f64>) {
    let (xb, wb) = (up(dev, x, &[rows, cols]), up(dev, w, &[cols]));
    let mut out = poisoned::<T, D>(dev, &[rows, cols]);
    let (xf, wf) = (to_f64(x), to_f64(w));
    let reference = match bias {
        Some(b) => {
            ops::layer_norm_into(&xb, &wb, &up(dev, b, &[cols]), eps, &mut out).unwrap();
            ref_layer_norm(&xf, &wf, &to_f64(b), rows, cols, eps as f64)
        }
        None => {
            ops::rms_norm_into(&xb, &wb, eps, &mut out).unwrap();
            ref_rms_norm(&xf, &wf, rows, cols, eps as f64)
        }
    };
    (out.to_vec().unwrap(), reference)
}

/// `a + b` elementwise into a poisoned output, and its reference.
pub fn run_add<T: Element, D: Kernels<T>>(dev: &D, a: &[T], b: &[T]) -> (Vec<T>, Vec<f64>) {
    let n = a.len();
    let mut out = poisoned::<T, D>(dev, &[n]);
    ops::add_into(&up(dev, a, &[n]), &up(dev, b, &[n]), &mut out).unwrap();
    let reference = to_f64(a)
        .iter()
        .zip(to_f64(b))
        .map(|(x, y)| x + y)
        .collect();
    (out.to_vec().unwrap(), reference)
}

/// One patch embedding of `px` `[B, C, I, I]` with patch P and width D, and its
/// reference.
pub fn run_patch_embed<T: Element, D: Kernels<T>>(
    dev: &D,
    [px, w, bias, pos]: [&[T]; 4],
    (b, c, img, p, d): (usize, usize, usize, usize, usize),
) -> (Vec<T>, Vec<f64>) {
    let n = (img / p) * (img / p);
    let mut out = poisoned::<T, D>(dev, &[b, n, d]);
    ops::patch_embed_into(
        &up(dev, px, &[b, c, img, img]),
        &up(dev, w, &[d, c, p, p]),
        &up(dev, bias, &[d]),
        &up(dev, pos, &[n, d]),
        p,
        &mut out,
    )
    .unwrap();
    let reference = ref_patch_embed(
        &to_f64(px),
        &to_f64(w),
        &to_f64(bias),
        &to_f64(pos),
        b,
        c,
        img,
        p,
        d,
    );
    (out.to_vec().unwrap(), reference)
}

/// Self-attention of `q` `[Bq, Nq, H·hd]` (Bq = 1 when broadcast) over `k`, `v`
/// `[B, Nk, H·hd]`, and its reference.
pub fn run_attention<T: Element, D: Kernels<T>>(
    dev: &D,
    [q, k, v]: [&[T]; 3],
    (b, h, hd, nq, nk, bc): (usize, usize, usize, usize, usize, bool),
) -> (Vec<T>, Vec<f64>) {
    let w = h * hd;
    let bq = if bc { 1 } else { b };
    let mut out = poisoned::<T, D>(dev, &[b, nq, w]);
    ops::attention_into(
        &up(dev, q, &[bq, nq, w]),
        &up(dev, k, &[b, nk, w]),
        &up(dev, v, &[b, nk, w]),
        h,
        &mut out,
    )
    .unwrap();
    let reference = ref_attention(&to_f64(q), &to_f64(k), &to_f64(v), b, h, hd, nq, nk, bc);
    (out.to_vec().unwrap(), reference)
}

/// The inputs of one memory read and write: `h` `[B, N, D]`, `bank` `[B, E, M, D]`,
/// the router, and the write step's `o` `[B, M + N, D]` and residual `[B, N, D]`.
pub struct MemoryCase<T> {
    pub h: Vec<T>,
    pub bank: Vec<T>,
    pub router_w: Vec<T>,
    pub router_b: Vec<T>,
    pub o: Vec<T>,
    pub res: Vec<T>,
    /// (B, N, E, M, D).
    pub dims: (usize, usize, usize, usize, usize),
}

impl<T: Element> MemoryCase<T> {
    pub fn random(rng: &mut Rng, (b, n, e, m, d): (usize, usize, usize, usize, usize)) -> Self {
        Self {
            h: rng.vec(b * n * d, 1.0),
            bank: rng.vec(b * e * m * d, 1.0),
            // Scaled as a trained router is (logits of order 1): at D = 12 284 with
            // unit weights the logits reach ±100 and the f32 gate's error is the
            // softmax's conditioning, not the kernel's (1.4e-5 seen on the CPU).
            router_w: rng.vec(e * d, 1.0 / (d as f32).sqrt()),
            router_b: rng.vec(e, 0.5),
            o: rng.vec(b * (m + n) * d, 1.0),
            res: rng.vec(b * n * d, 1.0),
            dims: (b, n, e, m, d),
        }
    }
}

/// (got, reference) of each memory output: the read's joint and gate, then the
/// write (from the gate the device computed) to `out` and the bank.
pub struct MemoryResults<T> {
    pub joint: (Vec<T>, Vec<f64>),
    pub gate: (Vec<f32>, Vec<f64>),
    pub out: (Vec<T>, Vec<f64>),
    pub bank: (Vec<T>, Vec<f64>),
}

pub fn run_memory<T: Element, D: Kernels<T>>(dev: &D, c: &MemoryCase<T>) -> MemoryResults<T> {
    let (b, n, e, m, d) = c.dims;
    let mut joint = poisoned::<T, D>(dev, &[b, m + n, d]);
    let mut gate = DeviceBuffer::<f32, D>::full(dev, &[b, e], f32::NAN).unwrap();
    ops::memory_read_into(
        &up(dev, &c.h, &[b, n, d]),
        &up(dev, &c.bank, &[b, e, m, d]),
        &up(dev, &c.router_w, &[e, d]),
        &up(dev, &c.router_b, &[e]),
        &mut joint,
        &mut gate,
    )
    .unwrap();
    let (rj, rg) = ref_memory_read(
        &to_f64(&c.h),
        &to_f64(&c.bank),
        &to_f64(&c.router_w),
        &to_f64(&c.router_b),
        b,
        n,
        e,
        m,
        d,
    );
    let gate_host = gate.to_vec().unwrap();
    let mut bank_w = up(dev, &c.bank, &[b, e, m, d]);
    let mut out = poisoned::<T, D>(dev, &[b, n, d]);
    ops::memory_write_into(
        &mut bank_w,
        &gate,
        &up(dev, &c.o, &[b, m + n, d]),
        &up(dev, &c.res, &[b, n, d]),
        &mut out,
    )
    .unwrap();
    let gate_f64: Vec<f64> = gate_host.iter().map(|&g| g as f64).collect();
    let (rbank, rout) = ref_memory_write(
        &to_f64(&c.bank),
        &gate_f64,
        &to_f64(&c.o),
        &to_f64(&c.res),
        b,
        n,
        e,
        m,
        d,
    );
    MemoryResults {
        joint: (joint.to_vec().unwrap(), rj),
        gate: (gate_host, rg),
        out: (out.to_vec().unwrap(), rout),
        bank: (bank_w.to_vec().unwrap(), rbank),
    }
}

/// One linear of `(rows, k, n)` on fresh random inputs (into a poisoned
/// output) against the f64 reference.
pub fn check_linear_case<T: Element, D: Kernels<T>>(
    dev: &D,
    rng: &mut Rng,
    (rows, k, n): (usize, usize, usize),
    act: Activation,
    with_bias: bool,
    with_res: bool,
) {
    let x: Vec<T> = rng.vec(rows * k, 1.0);
    let w: Vec<T> = rng.vec(n * k, 1.0 / (k as f32).sqrt());
    let b: Vec<T> = rng.vec(n, 0.5);
    let r: Vec<T> = rng.vec(rows * n, 1.0);
    let (got, reference) = run_linear(
        dev,
        &x,
        &w,
        with_bias.then_some(&b[..]),
        act,
        with_res.then_some(&r[..]),
        (rows, k, n),
    );
    let (bf, rf) = (to_f64(&b), to_f64(&r));
    let magnitude = linear_magnitude(
        &to_f64(&x),
        &to_f64(&w),
        with_bias.then_some(&bf[..]),
        with_res.then_some(&rf[..]),
        rows,
        k,
        n,
    );
    assert_close_sum(
        &format!("linear rows={rows} k={k} n={n} {act:?} bias={with_bias} residual={with_res}"),
        &got,
        &reference,
        &magnitude,
    );
}

pub fn check_linear<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    let shapes = [
        (1, 1, 1),
        (3, 17, 5),
        (17, 64, 65),
        (65, 129, 33),
        (129, 72, 130),
        (2, 300, 7),
        // K and N multiples of 8: CUDA's pipelined bf16 GEMMs. On a 132-SM Hopper
        // 300 x 200 x 520 and 257 x 200 x 264 run the wgmma GEMM (several tiles and
        // k-tiles; 192-wide tiles as chosen here, 256-wide or the 128-wide
        // ping-pong kernel under TESSERA_CUDA_SM90_TILE_N=256 / 128, which
        // scripts/gpu-check runs too; ops_cuda.rs adds a shape of several tiles
        // a block),
        // 130 x 520 x 136 the sm_80 GEMM split along K (4 slices).
        (130, 72, 136),
        (257, 200, 264),
        (300, 200, 520),
        (130, 520, 136),
    ];
    for &(rows, k, n) in &shapes {
        for (act, with_bias, with_res) in [
            (Activation::None, true, false),
            (Activation::GeluTanh, true, false),
            (Activation::None, true, true),
            (Activation::None, false, false),
        ] {
            check_linear_case(dev, rng, (rows, k, n), act, with_bias, with_res);
        }
    }
    // Leading batch axes are flattened into rows (into a poisoned output; the
    // allocating form gives the same values and shape).
    let x: Vec<T> = rng.vec(2 * 3 * 9, 1.0);
    let w: Vec<T> = rng.vec(4 * 9, 0.3);
    let (xb, wb) = (up(dev, &x, &[2, 3, 9]), up(dev, &w, &[4, 9]));
    let mut out = poisoned::<T, D>(dev, &[2, 3, 4]);
    ops::linear_into(&xb, &wb, None, Activation::None, None, &mut out).unwrap();
    let allocated = ops::linear(&xb, &wb, None, Activation::None, None).unwrap();
    assert_eq!(allocated.shape(), &[2, 3, 4]);
    assert_close(
        "linear rank-3 (allocating)",
        &allocated.to_vec().unwrap(),
        &to_f64(&out.to_vec().unwrap()),
    );
    let reference = ref_linear(
        &to_f64(&x),
        &to_f64(&w),
        None,
        Activation::None,
        None,
        6,
        9,
        4,
    );
    assert_close("linear rank-3", &out.to_vec().unwrap(), &reference);
}

/// (rows, cols) of the norm checks. On CUDA, (65, 64), (7, 1152) (bf16), (9, 40),
/// (10, 2048) (bf16) and (3, 1024) run the warp-a-row kernel (16-byte vectors;
/// 1024 / 2048 its largest rows), the others the block-a-row one.
const NORM_SHAPES: [(usize, usize); 9] = [
    (1, 1),
    (3, 17),
    (65, 64),
    (7, 1152),
    (2, 4304),
    (129, 3),
    (9, 40),
    (10, 2048),
    (3, 1024),
];

pub fn check_layer_norm<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    for &(rows, cols) in &NORM_SHAPES {
        let x: Vec<T> = (0..rows * cols)
            .map(|_| T::from_f32(rng.uniform(2.0) + 3.0))
            .collect();
        let w: Vec<T> = rng.vec(cols, 1.5);
        let b: Vec<T> = rng.vec(cols, 0.5);
        let (got, reference) = run_norm(dev, &x, &w, Some(&b), (rows, cols), 1e-6);
        assert_close(
            &format!("layer_norm rows={rows} cols={cols}"),
            &got,
            &reference,
        );
    }
}

/// RMS norm (the `NormKind` variant of the same op): rows of mean far from 0
/// and of mixed sign, no tile size dividing the columns.
pub fn check_rms_norm<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    for &(rows, cols) in &NORM_SHAPES {
        let x: Vec<T> = (0..rows * cols)
            .map(|i| T::from_f32(rng.uniform(2.0) + if i % 2 == 0 { 3.0 } else { -1.0 }))
            .collect();
        let w: Vec<T> = rng.vec(cols, 1.5);
        let (got, reference) = run_norm(dev, &x, &w, None, (rows, cols), 1e-6);
        assert_close(
            &format!("rms_norm rows={rows} cols={cols}"),
            &got,
            &reference,
        );
    }
}

/// Both norms where eps and the variance's arithmetic matter, against the f64
/// reference:
/// - eps 1e-2 on rows of mean square ≈ 3e-3 (eps dominates: dropping it, or
///   adding it outside the square root, is off by 2× and more);
/// - constant rows (variance 0): layer norm gives the bias exactly, RMS norm of
///   a zero row gives 0 exactly, never NaN (0/√0 without eps);
/// - layer-norm rows of mean 12 288 and spread ≈ 1 (f32; bf16 can only hold a
///   spread of ≈ 300 there): a one-pass variance E[x²] − mean² in f32 cancels
///   every digit. The mean of such a row is only exact in f32 where the width
///   is a power of two and every partial sum is exact (values on a grid the sums
///   keep): elsewhere an f32 mean is off by up to half an ulp of 12 288, 5e-4 of
///   the spread, which is the data's conditioning and not the kernel's error; so
///   these rows use 64 columns (CUDA's warp-a-row kernel), 2048 and 4096 (its
///   block-a-row one where the warp's row does not fit), with values on a grid the
///   f32 sums keep (1/4 at 64 columns: a spread of ±2).
pub fn check_norm_edge_rows<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    let bf16 = T::DTYPE == tessera::DType::BF16;
    let eps_cases = [(3, 17), (9, 40), (4, 45), (5, 64), (2, 1152)];
    for &(rows, cols) in &eps_cases {
        let x: Vec<T> = rng.vec(rows * cols, 0.1);
        let w: Vec<T> = rng.vec(cols, 1.5);
        let b: Vec<T> = rng.vec(cols, 0.5);
        for eps in [1e-2f32, 0.25] {
            for (name, bias) in [("layer_norm", Some(&b[..])), ("rms_norm", None)] {
                let (got, reference) = run_norm(dev, &x, &w, bias, (rows, cols), eps);
                assert_close(
                    &format!("{name} eps={eps} on small rows rows={rows} cols={cols}"),
                    &got,
                    &reference,
                );
            }
        }
    }

    // Constant rows, between random ones: zero rows at every width; rows of −2.5
    // and of 12 288 where the width makes their mean exact in f32.
    for &(cols, exact_mean) in &[(45, false), (40, false), (64, true), (2048, true)] {
        let consts: &[f32] = if exact_mean {
            &[0.0, -2.5, 12_288.0]
        } else {
            &[0.0]
        };
        let rows = 2 * consts.len() + 1;
        let mut x: Vec<T> = rng.vec(rows * cols, 2.0);
        for (i, &c) in consts.iter().enumerate() {
            x[(2 * i + 1) * cols..][..cols].fill(T::from_f32(c));
        }
        let w: Vec<T> = rng.vec(cols, 1.5);
        let b: Vec<T> = rng.vec(cols, 0.5);
        for eps in [1e-6f32, 1e-2] {
            let what = format!("cols={cols} eps={eps} with constant rows {consts:?}");
            let (got, reference) = run_norm(dev, &x, &w, Some(&b), (rows, cols), eps);
            assert_close(&format!("layer_norm {what}"), &got, &reference);
            for (i, &c) in consts.iter().enumerate() {
                let row = &got[(2 * i + 1) * cols..][..cols];
                for (j, (g, want)) in row.iter().zip(&b).enumerate() {
                    assert!(
                        g.to_f32() == want.to_f32(),
                        "layer_norm {what} [{}]: the row of {c} gives {} at {j}, not its bias {}",
                        T::DTYPE,
                        g.to_f32(),
                        want.to_f32()
                    );
                }
            }
            let (got, reference) = run_norm(dev, &x, &w, None, (rows, cols), eps);
            assert_close(&format!("rms_norm {what}"), &got, &reference);
            assert!(
                got[cols..2 * cols].iter().all(|v| v.to_f32() == 0.0),
                "rms_norm {what} [{}]: a zero row gives {:?}",
                T::DTYPE,
                &got[cols..2 * cols]
                    .iter()
                    .map(|v| v.to_f32())
                    .collect::<Vec<_>>()
            );
        }
    }

    // Rows far from 0 against their spread.
    let mean = 12_288.0f32;
    for &cols in &[64usize, 2048, 4096] {
        // The grid: bf16's spacing at 12 288; in f32 the spacing of the row's sum
        // (below 2^20, 2^25 and 2^26 at 64, 2048 and 4096 columns), at least 1/4.
        let step = match (bf16, cols) {
            (true, _) => 64.0,
            (false, 64) => 0.25,
            (false, 2048) => 2.0,
            _ => 4.0,
        };
        let rows = 5;
        let x: Vec<T> = (0..rows * cols)
            .map(|_| T::from_f32(mean + step * ((rng.next_u64() % 17) as f32 - 8.0)))
            .collect();
        let w: Vec<T> = rng.vec(cols, 1.5);
        let b: Vec<T> = rng.vec(cols, 0.5);
        for eps in [1e-6f32, 1e-2] {
            let what = format!(
                "rows of mean {mean} spread ±{} cols={cols} eps={eps}",
                8.0 * step
            );
            let (got, reference) = run_norm(dev, &x, &w, Some(&b), (rows, cols), eps);
            assert_close(&format!("layer_norm {what}"), &got, &reference);
            let (got, reference) = run_norm(dev, &x, &w, None, (rows, cols), eps);
            assert_close(&format!("rms_norm {what}"), &got, &reference);
        }
    }
}

pub fn check_patch_embed<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    for &shape in &[
        (1, 3, 8, 4, 5),
        (2, 3, 32, 8, 64),
        (1, 1, 6, 3, 17),
        (2, 3, 12, 2, 1),
        (3, 2, 15, 5, 33),
        // Sides the patch does not divide: the last I mod P pixels are dropped.
        (2, 3, 30, 8, 17),
        (1, 3, 13, 4, 9),
        (1, 2, 45, 14, 24),
        (2, 1, 7, 7, 3),
        // SigLIP's so400m patches (C·P·P = 588, not a multiple of 8: CUDA's
        // Hopper path pads the patches and the weight to 592).
        (2, 3, 45, 14, 40),
    ] {
        check_patch_embed_case(dev, rng, shape);
    }
}

/// One patch embedding `(B, C, I, P, D)` of random inputs against the reference.
pub fn check_patch_embed_case<T: Element, D: Kernels<T>>(
    dev: &D,
    rng: &mut Rng,
    (b, c, img, p, d): (usize, usize, usize, usize, usize),
) {
    let k = c * p * p;
    let n = (img / p) * (img / p);
    let px: Vec<T> = rng.vec(b * c * img * img, 1.0);
    let w: Vec<T> = rng.vec(d * k, 1.0 / (k as f32).sqrt());
    let bias: Vec<T> = rng.vec(d, 0.5);
    let pos: Vec<T> = rng.vec(n * d, 0.5);
    let (got, reference) = run_patch_embed(dev, [&px, &w, &bias, &pos], (b, c, img, p, d));
    let magnitude = patch_embed_magnitude(
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
    assert_close_sum(
        &format!("patch_embed b={b} c={c} i={img} p={p} d={d}"),
        &got,
        &reference,
        &magnitude,
    );
}

pub fn check_attention<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    // (batch, heads, head_dim, q_len, kv_len, q_broadcast)
    let cases = [
        (1, 1, 1, 1, 1, false),
        (2, 3, 17, 5, 33, false),
        (1, 2, 64, 65, 65, false),
        (2, 4, 72, 3, 129, false),
        (1, 1, 128, 17, 40, false),
        (3, 2, 16, 1, 17, true),
        (2, 12, 64, 7, 203, false),
        // Every head-dim class of CUDA's tensor-core kernels (bf16: hd padded to a
        // multiple of 16, 48, 96, 112 here; f32: to 32, 64, 72, 80, 96 or 128, hd a
        // multiple of 4; q_len ≥ 16, kv_len no tile divides).
        (1, 2, 40, 19, 70, false),
        (1, 1, 88, 33, 65, false),
        (2, 1, 104, 16, 100, false),
        (1, 2, 72, 40, 70, false),
        (1, 1, 76, 20, 33, false),
        (1, 2, 20, 18, 50, false),
        // Two query blocks of 128 and four key tiles of 64 (the Hopper kernels'
        // work items and stage rings) at so400m's head dim.
        (2, 2, 72, 150, 200, false),
        // hd 80: a Hopper bf16 kernel of its own (sm90_spec matches hd exactly),
        // across two query blocks and key tiles no tile divides.
        (1, 2, 80, 130, 97, false),
        (2, 1, 80, 5, 33, false),
        // One set of queries shared by the batch, with query rows enough for the
        // tensor-core kernels (16 and more; 150: two query blocks).
        (3, 2, 64, 20, 70, true),
        (2, 1, 80, 17, 45, true),
        (2, 2, 24, 150, 37, true),
    ];
    for &(b, h, hd, nq, nk, bc) in &cases {
        let w = h * hd;
        let bq = if bc { 1 } else { b };
        let q: Vec<T> = rng.vec(bq * nq * w, 1.0);
        let k: Vec<T> = rng.vec(b * nk * w, 1.0);
        let v: Vec<T> = rng.vec(b * nk * w, 1.0);
        let (got, reference) = run_attention(dev, [&q, &k, &v], (b, h, hd, nq, nk, bc));
        assert_close(
            &format!("attention b={b} h={h} hd={hd} nq={nq} nk={nk} broadcast={bc}"),
            &got,
            &reference,
        );
    }
}

/// Columns `col .. col + w` of each `ld`-wide row.
fn columns<T: Copy>(x: &[T], ld: usize, col: usize, w: usize) -> Vec<T> {
    x.chunks(ld)
        .flat_map(|row| row[col..col + w].to_vec())
        .collect()
}

/// q, k and v as column blocks of one fused projection: `attention_qkv` over
/// `[B, N, 3·W]` and `attention_q_kv` (a shared probe over `[B, Nk, 2·W]`), against
/// the reference on the split tensors.
pub fn check_attention_fused<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    // (batch, heads, head_dim, tokens): head dims a multiple of 8 (the tensor-core
    // path on CUDA; 64 and 80 Hopper kernels of their own in bf16) and not.
    for &(b, h, hd, n) in &[
        (2, 2, 64, 70),
        (1, 3, 24, 17),
        (2, 2, 17, 9),
        (2, 1, 80, 37),
    ] {
        let w = h * hd;
        let qkv: Vec<T> = rng.vec(b * n * 3 * w, 1.0);
        let mut out = poisoned::<T, D>(dev, &[b, n, w]);
        ops::attention_qkv_into(&up(dev, &qkv, &[b, n, 3 * w]), h, &mut out).unwrap();
        let x = to_f64(&qkv);
        let (q, k, v) = (
            columns(&x, 3 * w, 0, w),
            columns(&x, 3 * w, w, w),
            columns(&x, 3 * w, 2 * w, w),
        );
        let reference = ref_attention(&q, &k, &v, b, h, hd, n, n, false);
        assert_close(
            &format!("attention_qkv b={b} h={h} hd={hd} n={n}"),
            &out.to_vec().unwrap(),
            &reference,
        );
        // The pooling head's probe (one row), and 18 shared query rows.
        for nq in [1, 18] {
            let probe: Vec<T> = rng.vec(nq * w, 1.0);
            let kv: Vec<T> = rng.vec(b * n * 2 * w, 1.0);
            let mut got = poisoned::<T, D>(dev, &[b, nq, w]);
            ops::attention_q_kv_into(
                &up(dev, &probe, &[1, nq, w]),
                &up(dev, &kv, &[b, n, 2 * w]),
                h,
                &mut got,
            )
            .unwrap();
            let y = to_f64(&kv);
            let reference = ref_attention(
                &to_f64(&probe),
                &columns(&y, 2 * w, 0, w),
                &columns(&y, 2 * w, w, w),
                b,
                h,
                hd,
                nq,
                n,
                true,
            );
            assert_close(
                &format!("attention_q_kv b={b} h={h} hd={hd} nq={nq} (shared) nk={n}"),
                &got.to_vec().unwrap(),
                &reference,
            );
        }
    }
}

/// A packed batch of sequences of different lengths (1, lengths no tile divides,
/// one longer than CUDA's 128-row tile): self-attention over a fused `[T, 3·W]`
/// projection and the pooling head's probe (shared, and one per sequence) over a
/// packed `[T, 2·W]`, each against the reference run on every sequence alone. The
/// output is poisoned first, so an unwritten row fails; rows of one sequence
/// attending to another's keys fail too.
pub fn check_attention_packed<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    for &(h, hd, ref lens) in &[
        (2usize, 64usize, vec![5usize, 70, 1, 33, 150]),
        (3, 24, vec![17, 2]),
        (2, 17, vec![9, 40, 3]),
        (1, 80, vec![20, 3, 130]),
    ] {
        let w = h * hd;
        let seg = ops::Segments::from_lengths(lens).unwrap();
        let total = seg.total();
        let qkv: Vec<T> = rng.vec(total * 3 * w, 1.0);
        let mut out = poisoned::<T, D>(dev, &[total, w]);
        ops::attention_qkv_packed_into(&up(dev, &qkv, &[total, 3 * w]), &seg, h, &mut out).unwrap();
        let got = out.to_vec().unwrap();
        let x = to_f64(&qkv);
        let mut reference = Vec::with_capacity(total * w);
        for b in 0..seg.count() {
            let r = seg.range(b);
            let rows = &x[r.start * 3 * w..r.end * 3 * w];
            let (q, k, v) = (
                columns(rows, 3 * w, 0, w),
                columns(rows, 3 * w, w, w),
                columns(rows, 3 * w, 2 * w, w),
            );
            let n = r.len();
            reference.extend(ref_attention(&q, &k, &v, 1, h, hd, n, n, false));
        }
        assert_close(
            &format!("attention_qkv_packed h={h} hd={hd} lengths={lens:?}"),
            &got,
            &reference,
        );

        let kv: Vec<T> = rng.vec(total * 2 * w, 1.0);
        let y = to_f64(&kv);
        for (bq, nq) in [(1usize, 1usize), (seg.count(), 2), (1, 17)] {
            let q: Vec<T> = rng.vec(bq * nq * w, 1.0);
            let mut out = poisoned::<T, D>(dev, &[seg.count(), nq, w]);
            ops::attention_q_kv_packed_into(
                &up(dev, &q, &[bq, nq, w]),
                &up(dev, &kv, &[total, 2 * w]),
                &seg,
                h,
                &mut out,
            )
            .unwrap();
            let qf = to_f64(&q);
            let mut reference = Vec::new();
            for b in 0..seg.count() {
                let r = seg.range(b);
                let rows = &y[r.start * 2 * w..r.end * 2 * w];
                let qb = if bq == 1 { 0 } else { b };
                reference.extend(ref_attention(
                    &qf[qb * nq * w..(qb + 1) * nq * w],
                    &columns(rows, 2 * w, 0, w),
                    &columns(rows, 2 * w, w, w),
                    1,
                    h,
                    hd,
                    nq,
                    r.len(),
                    false,
                ));
            }
            assert_close(
                &format!("attention_q_kv_packed h={h} hd={hd} lengths={lens:?} q=[{bq}, {nq}]"),
                &out.to_vec().unwrap(),
                &reference,
            );
        }
    }
    // Wrong row counts are errors naming the tensor, not reads past the end.
    let seg = ops::Segments::from_lengths(&[3, 4]).unwrap();
    let qkv = up::<T, D>(dev, &rng.vec(6 * 12, 1.0), &[6, 12]);
    let mut out = poisoned::<T, D>(dev, &[6, 4]);
    let err = ops::attention_qkv_packed_into(&qkv, &seg, 2, &mut out).unwrap_err();
    assert!(err.to_string().contains("qkv"), "{err}");
    assert!(ops::Segments::from_lengths(&[2, 0]).is_err());
    assert!(ops::Segments::from_lengths(&[]).is_err());
}

/// Rows whose first keys all score −∞ (a whole first tile, in every kernel's
/// tiling) and later keys finite: the softmax must ignore them, as the f64
/// reference does, never produce NaN. Keys 0..70 carry −∞ in dimension 0 of
/// every head, and every query has +0.75 there.
pub fn check_attention_neg_inf<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    for &(b, h, hd, nq, nk) in &[(1, 2, 64, 20, 150), (2, 1, 72, 33, 97), (1, 3, 17, 5, 80)] {
        let w = h * hd;
        let mut q: Vec<T> = rng.vec(b * nq * w, 1.0);
        let mut k: Vec<T> = rng.vec(b * nk * w, 1.0);
        let v: Vec<T> = rng.vec(b * nk * w, 1.0);
        for row in q.chunks_mut(w) {
            for head in row.chunks_mut(hd) {
                head[0] = T::from_f32(0.75);
            }
        }
        for bi in 0..b {
            for j in 0..70 {
                let row = &mut k[(bi * nk + j) * w..][..w];
                for head in row.chunks_mut(hd) {
                    head[0] = T::from_f32(f32::NEG_INFINITY);
                }
            }
        }
        let mut out = poisoned::<T, D>(dev, &[b, nq, w]);
        ops::attention_into(
            &up(dev, &q, &[b, nq, w]),
            &up(dev, &k, &[b, nk, w]),
            &up(dev, &v, &[b, nk, w]),
            h,
            &mut out,
        )
        .unwrap();
        let reference = ref_attention(
            &to_f64(&q),
            &to_f64(&k),
            &to_f64(&v),
            b,
            h,
            hd,
            nq,
            nk,
            false,
        );
        assert!(reference.iter().all(|x| x.is_finite()));
        assert_close(
            &format!("attention with −∞ scores b={b} h={h} hd={hd} nq={nq} nk={nk}"),
            &out.to_vec().unwrap(),
            &reference,
        );
    }
}

pub fn check_memory<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    // (batch, tokens, experts, slots, hidden)
    for &(b, n, e, m, d) in &[
        (1, 1, 1, 1, 1),
        (2, 5, 4, 8, 17),
        (1, 17, 3, 1, 64),
        (2, 3, 1, 0, 8),
        (3, 16, 4, 32, 72),
        // (D + E)·4 = 48 KiB of dynamic shared memory for CUDA's gate, which with
        // its static bytes passes the default limit: the launch must opt in.
        (1, 2, 4, 1, 12_284),
        // CUDA splits the gate over blocks of 32 tokens (none of these a multiple,
        // D above a block's 256 threads) ...
        (2, 75, 4, 3, 40),
        (1, 300, 3, 2, 260),
        // ... except where the partial logits do not fit in `joint`.
        (1, 70, 64, 0, 1),
    ] {
        let r = run_memory(dev, &MemoryCase::<T>::random(rng, (b, n, e, m, d)));
        let what = format!("memory b={b} n={n} e={e} m={m} d={d}");
        let gate_err = rel_l2(&to_f64(&r.gate.0), &r.gate.1);
        // The gate is f32 on every backend; bf16 inputs only change its inputs, which the
        // reference already used, so the f32 bar applies up to accumulation order.
        assert!(
            gate_err <= 1e-5,
            "{what} gate: relative L2 error {gate_err:e}"
        );
        assert_close(&format!("{what} joint"), &r.joint.0, &r.joint.1);
        // The write step (fresh o and residual) from the gate just computed.
        assert_close(&format!("{what} out"), &r.out.0, &r.out.1);
        if m > 0 {
            assert_close(&format!("{what} bank"), &r.bank.0, &r.bank.1);
        }
    }
}

/// The gate's softmax with router logits of ±100..1000 (finite): exp of any of
/// them overflows f32 (above 88.7) or underflows to 0 (below −103), so a gate that
/// does not subtract the largest logit first is ∞/∞ or 0/0 = NaN; the reference
/// subtracts it in f64. One router bias set puts the top logits near +900 (with
/// −700 and +152 beside them), the other puts every logit near −800. The inputs
/// are small integers and multiples of 1/16 (exact in bf16), the token counts
/// powers of two, so the mean over tokens, the router's dot and the logits are
/// exact in f32 in any summation order: the gate is then within the f32 bar on
/// every backend, while rounded logits of size 900 could not be (their ulp,
/// 6e-5, is a relative error of the gate). The top logits are 4 apart (±1 from
/// the dot), so the gate is not one-hot.
pub fn check_memory_large_logits<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    let int = |rng: &mut Rng, k: u64| (rng.next_u64() % (2 * k + 1)) as f32 - k as f32;
    let bias_sets: [(&str, [f32; 5]); 2] = [
        ("high", [900.0, 896.0, 152.0, -700.0, 904.0]),
        ("low", [-800.0, -804.0, -796.0, -1000.0, -808.0]),
    ];
    // (batch, tokens, experts, slots, hidden): 64 tokens are two of CUDA's gate
    // blocks.
    for &(b, n, e, m, d) in &[(2, 8, 4, 3, 17), (1, 64, 5, 2, 40), (3, 4, 3, 1, 9)] {
        for (set, biases) in &bias_sets {
            let mut c = MemoryCase::<T>::random(rng, (b, n, e, m, d));
            c.h = (0..b * n * d).map(|_| T::from_f32(int(rng, 3))).collect();
            c.router_w = (0..e * d)
                .map(|_| T::from_f32(int(rng, 4) / 16.0))
                .collect();
            c.router_b = biases[..e].iter().map(|&v| T::from_f32(v)).collect();
            assert!(c.router_b.iter().all(|v| biases.contains(&v.to_f32())));
            let r = run_memory(dev, &c);
            let what = format!("memory with {set} router logits b={b} n={n} e={e} m={m} d={d}");
            // The case is what it claims: a finite gate with two entries of
            // weight in some sequence.
            assert!(r.gate.1.iter().all(|g| g.is_finite()), "{what}: reference");
            assert!(
                r.gate
                    .1
                    .chunks(e)
                    .any(|g| g.iter().filter(|&&x| x > 1e-3).count() >= 2),
                "{what}: the reference gate is one-hot: {:?}",
                r.gate.1
            );
            let gate_err = rel_l2(&to_f64(&r.gate.0), &r.gate.1);
            assert!(
                gate_err <= 1e-5,
                "{what} gate: relative L2 error {gate_err:e} (got {:?}, want {:?})",
                r.gate.0,
                r.gate.1
            );
            assert_close(&format!("{what} joint"), &r.joint.0, &r.joint.1);
            assert_close(&format!("{what} out"), &r.out.0, &r.out.1);
            assert_close(&format!("{what} bank"), &r.bank.0, &r.bank.1);
        }
    }
}

pub fn check_add<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    for &n in &[1usize, 17, 1023, 4097] {
        let a: Vec<T> = rng.vec(n, 3.0);
        let b: Vec<T> = rng.vec(n, 3.0);
        let (got, reference) = run_add(dev, &a, &b);
        assert_close(&format!("add n={n}"), &got, &reference);
    }
}

/// Uploads queue behind the work called before them and keep their bytes.
/// An add that reads `a` is called, then `a` is overwritten; then buffers are
/// filled one after another. On CUDA every upload goes through two page-locked
/// staging buffers in turn, and `a` (36 MiB) takes both, a chunk each: a
/// staging buffer written again before its last copy had run, or a copy that
/// ran before the add, would show here. Every value is compared bit for bit
/// (`x + x` is exact).
pub fn check_uploads_in_order<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    let n = (36 << 20) / T::DTYPE.size();
    let old: Vec<T> = rng.vec(n, 3.0);
    let mut a = up(dev, &old, &[n]);
    let mut sum = poisoned::<T, D>(dev, &[n]);
    ops::add_into(&a, &a, &mut sum).unwrap();
    let new: Vec<T> = rng.vec(n, 3.0);
    a.copy_from_host(&new).unwrap();
    let small: Vec<Vec<T>> = (0..5).map(|i| rng.vec(1000 + 77 * i, 1.0)).collect();
    let mut bufs: Vec<_> = small.iter().map(|v| up(dev, v, &[v.len()])).collect();
    // The first buffer written again, in place, after the others.
    let again: Vec<T> = rng.vec(small[0].len(), 1.0);
    bufs[0].copy_from_host(&again).unwrap();
    let bits = |v: &[T]| v.iter().map(|x| x.to_f32().to_bits()).collect::<Vec<_>>();
    let doubled: Vec<T> = old.iter().map(|x| T::from_f32(x.to_f32() * 2.0)).collect();
    assert!(
        bits(&sum.to_vec().unwrap()) == bits(&doubled),
        "the add read `a` after its overwrite"
    );
    assert!(
        bits(&a.to_vec().unwrap()) == bits(&new),
        "`a` after copy_from_host"
    );
    for (i, (b, v)) in bufs.iter().zip(&small).enumerate() {
        let want = if i == 0 { &again } else { v };
        assert!(bits(&b.to_vec().unwrap()) == bits(want), "buffer {i}");
    }
}

/// The bf16 rule of every backend, written out on the bits (independently of the
/// `half` crate): round to nearest, ties to even; every NaN becomes 0x7FFF.
pub fn bf16_bits_reference(x: f32) -> u16 {
    let b = x.to_bits();
    if b & 0x7FFF_FFFF > 0x7F80_0000 {
        return 0x7FFF;
    }
    ((b as u64 + 0x7FFF + ((b as u64 >> 16) & 1)) >> 16) as u16
}

/// f32 bit patterns the bf16 rounding must get right: ties both ways, signed
/// zero, infinities, NaNs (quiet, negative, signalling payload), subnormals, and
/// the largest values just below and at the point that rounds to infinity.
pub const CAST_SPECIALS: [u32; 16] = [
    0x3F80_8000, // 1 + 2^-8: a tie, to even (down)
    0x3F81_8000, // 1 + 3·2^-8: a tie, to even (up)
    0x8000_0000, // -0
    0x7F80_0000, // +inf
    0xFF80_0000, // -inf
    0x7FC0_0000, // NaN
    0xFFC0_0000, // -NaN
    0x7F80_0001, // signalling NaN with a payload
    0x0000_0001, // smallest subnormal
    0x8001_1234, // a negative subnormal
    0x0040_8000, // a subnormal tie
    0x7F7F_7FFF, // just below the midpoint to infinity: the largest bf16
    0x7F7F_8000, // the midpoint: a tie to even, which is +inf
    0xFF7F_8001, // past it, negative: -inf
    0x477F_E000, // 65504 (f16's max) → 65536 on the tie
    0x3EAA_AAAB, // 1/3
];

/// f32 → bf16 must follow [`bf16_bits_reference`] bit for bit; bf16 → f32 is exact.
pub fn check_cast<D: Kernels<f32> + Kernels<tessera::bf16>>(dev: &D, rng: &mut Rng) {
    use tessera::bf16;
    for &n in &[1usize, 2, 17, 1023, 4097] {
        let mut x: Vec<f32> = rng.vec(n, 100.0);
        for (i, s) in CAST_SPECIALS.iter().enumerate() {
            if i < n {
                x[i] = f32::from_bits(*s);
            }
        }
        let xb = up(dev, &x, &[n]);
        let mut y = poisoned::<bf16, D>(dev, &[n]);
        ops::cast_into(&xb, &mut y).unwrap();
        let got = y.to_vec().unwrap();
        for i in 0..n {
            assert_eq!(
                got[i].to_bits(),
                bf16_bits_reference(x[i]),
                "cast f32→bf16 n={n} at {i}: {:#010x}",
                x[i].to_bits()
            );
        }
        let mut back = poisoned::<f32, D>(dev, &[n]);
        ops::cast_into(&y, &mut back).unwrap();
        let back = back.to_vec().unwrap();
        for i in 0..n {
            assert_eq!(
                back[i].to_bits(),
                (got[i].to_bits() as u32) << 16,
                "cast bf16→f32 n={n} at {i}"
            );
        }
    }
}

/// Instantiate the whole suite for one device. `$make` returns `Option<Device>`
/// (None = skipped with a printed notice).
macro_rules! op_suite {
    ($make:expr) => {
        use half::bf16;
        use $crate::common::*;

        macro_rules! each_dtype {
            ($name:ident, $check:ident) => {
                #[test]
                fn $name() {
                    let Some(dev) = $make else { return };
                    let mut rng = Rng::new(stringify!($name));
                    $check::<f32, _>(&dev, &mut rng);
                    $check::<bf16, _>(&dev, &mut rng);
                }
            };
        }
        each_dtype!(linear_matches_reference, check_linear);
        each_dtype!(layer_norm_matches_reference, check_layer_norm);
        each_dtype!(rms_norm_matches_reference, check_rms_norm);
        each_dtype!(patch_embed_matches_reference, check_patch_embed);
        each_dtype!(attention_matches_reference, check_attention);
        each_dtype!(attention_ignores_neg_inf_scores, check_attention_neg_inf);
        each_dtype!(attention_on_fused_projections, check_attention_fused);
        each_dtype!(attention_on_packed_batches, check_attention_packed);
        each_dtype!(memory_read_write_match_reference, check_memory);
        each_dtype!(add_matches_reference, check_add);
        each_dtype!(uploads_keep_stream_order, check_uploads_in_order);
        each_dtype!(linear_nan_inf_as_ieee, check_nonfinite_linear);
        each_dtype!(norms_nan_inf_as_ieee, check_nonfinite_norms);
        each_dtype!(attention_nan_inf_as_ieee, check_nonfinite_attention);
        each_dtype!(add_nan_inf_as_ieee, check_nonfinite_add);
        each_dtype!(patch_embed_nan_inf_as_ieee, check_nonfinite_patch_embed);
        each_dtype!(memory_nan_inf_as_ieee, check_nonfinite_memory);
        each_dtype!(
            attention_nan_inf_fused_and_packed,
            check_nonfinite_attention_fused
        );
        each_dtype!(norms_eps_and_edge_rows, check_norm_edge_rows);
        each_dtype!(memory_gate_large_logits, check_memory_large_logits);
        each_dtype!(wrong_operand_shapes_are_named, check_operand_shapes);
        each_dtype!(reshape_keeps_data, check_reshape);

        #[test]
        fn cast_rounds_to_nearest_even() {
            let Some(dev) = $make else { return };
            let mut rng = Rng::new("cast");
            check_cast(&dev, &mut rng);
        }
    };
}

/// The host's conversion (Element::from_f32, used by the loader, `DeviceBuffer`
/// casts on the CPU and the CLI) follows the same rule as the kernels.
pub fn check_host_bf16_rule() {
    use tessera::{bf16, Element};
    for bits in CAST_SPECIALS {
        let x = f32::from_bits(bits);
        assert_eq!(
            <bf16 as Element>::from_f32(x).to_bits(),
            bf16_bits_reference(x),
            "host f32→bf16 of {bits:#010x}"
        );
    }
}
