//! NaN and ±∞ inputs: every op, on every backend, gives what IEEE arithmetic in
//! the f64 reference gives — NaN where it has NaN, +∞ / −∞ where it has them
//! (element by element), and the finite elements within the usual bar. Each case
//! places a few non-finite values so that the output holds all four kinds (a NaN
//! row, a NaN column, infinite rows of mixed signs, untouched finite elements),
//! with the output poisoned with NaN first.

use tessera::ops::Activation;
use tessera::{Element, Kernels};

use super::compare::{bar, rel_l2, to_f64};
use super::rng::Rng;
use super::suite::{
    run_add, run_attention, run_linear, run_memory, run_norm, run_patch_embed, MemoryCase,
};

const NAN: f32 = f32::NAN;
const INF: f32 = f32::INFINITY;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nan,
    PosInf,
    NegInf,
    Finite,
}

fn kind(x: f64) -> Kind {
    if x.is_nan() {
        Kind::Nan
    } else if x == f64::INFINITY {
        Kind::PosInf
    } else if x == f64::NEG_INFINITY {
        Kind::NegInf
    } else {
        Kind::Finite
    }
}

/// `out` has the reference's NaN / +∞ / −∞ at the same places and its finite
/// elements within the bar (relative L2 over them). The reference must itself hold
/// each kind, so the case tests what it claims to.
pub fn assert_same_nonfinite<T: Element>(what: &str, out: &[T], reference: &[f64], kinds: &[&str]) {
    assert_eq!(out.len(), reference.len(), "{what}: length");
    let got = to_f64(out);
    for want in kinds {
        let k = match *want {
            "nan" => Kind::Nan,
            "+inf" => Kind::PosInf,
            "-inf" => Kind::NegInf,
            _ => Kind::Finite,
        };
        assert!(
            reference.iter().any(|&r| kind(r) == k),
            "{what}: the case should produce {want} somewhere"
        );
    }
    let mut finite = (Vec::new(), Vec::new());
    for (i, (&g, &r)) in got.iter().zip(reference).enumerate() {
        assert_eq!(
            kind(g),
            kind(r),
            "{what} [{}]: element {i} is {g}, the reference has {r}",
            T::DTYPE
        );
        if kind(r) == Kind::Finite {
            finite.0.push(g);
            finite.1.push(r);
        }
    }
    let err = rel_l2(&finite.0, &finite.1);
    assert!(
        err <= bar::<T>(),
        "{what} [{}]: finite elements off by relative L2 {err:e}",
        T::DTYPE
    );
}

fn set<T: Element>(v: &mut [T], i: usize, x: f32) {
    v[i] = T::from_f32(x);
}

/// Two shapes: one no GEMM tile divides (the SIMT / edge-safe kernels), and one
/// with K and N multiples of 8, which the tensor-core GEMMs take (the 3xTF32 f32
/// ones split each operand, and must keep ±∞ and NaN through the split).
pub fn check_nonfinite_linear<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    for shape in [(9, 37, 21), (9, 40, 24)] {
        nonfinite_linear(dev, rng, shape);
    }
}

fn nonfinite_linear<T: Element, D: Kernels<T>>(
    dev: &D,
    rng: &mut Rng,
    (rows, k, n): (usize, usize, usize),
) {
    for act in [Activation::None, Activation::GeluTanh] {
        let mut x: Vec<T> = rng.vec(rows * k, 1.0);
        let mut w: Vec<T> = rng.vec(n * k, 0.3);
        let mut b: Vec<T> = rng.vec(n, 0.5);
        let mut r: Vec<T> = rng.vec(rows * n, 1.0);
        set(&mut x, k + 3, NAN); // row 1: NaN
        set(&mut x, 2 * k, INF); // row 2: ±∞ by the sign of w[j][0]
        set(&mut x, 4 * k + 5, -INF); // row 4: ∓∞ by the sign of w[j][5]
        set(&mut w, 7 * k + 2, NAN); // column 7: NaN
        set(&mut b, 3, INF); // column 3: +∞ (NaN where a row brings −∞)
        set(&mut r, 5 * n + 6, -INF); // one element −∞
                                      // Column 9: +∞ weight at k 4. Row 3 meets it with x exactly 1 (a tf32
                                      // value: nothing left for 3xTF32's small part), row 5 with x exactly 0
                                      // (0·∞ = NaN).
        set(&mut w, 9 * k + 4, INF);
        set(&mut x, 3 * k + 4, 1.0);
        set(&mut x, 5 * k + 4, 0.0);
        let (got, reference) = run_linear(dev, &x, &w, Some(&b), act, Some(&r), (rows, k, n));
        assert_same_nonfinite(
            &format!("linear {act:?} {rows}x{k}x{n} with NaN/±∞ inputs"),
            &got,
            &reference,
            &["nan", "+inf", "-inf", "finite"],
        );
    }
}

pub fn check_nonfinite_norms<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    // 45 columns: CUDA's block-a-row kernel; 40: its warp-a-row one (16-byte vectors).
    for cols in [45, 40] {
        nonfinite_norms(dev, rng, cols);
    }
}

fn nonfinite_norms<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng, cols: usize) {
    let rows = 7;
    let mut x: Vec<T> = rng.vec(rows * cols, 2.0);
    let mut w: Vec<T> = rng.vec(cols, 1.0);
    let mut b: Vec<T> = rng.vec(cols, 1.0);
    set(&mut x, cols + 4, NAN); // row 1
    set(&mut x, 3 * cols + 10, INF); // row 3
    set(&mut x, 5 * cols, -INF); // row 5

    // Row 0 far above its mean (±2 elsewhere) at columns 2 and 6, so both signs of
    // ∞ appear whatever the random values: ∞ · (+) and −∞ · (+).
    set(&mut x, 2, 5.0);
    set(&mut x, 6, 5.0);
    set(&mut w, 2, INF); // column 2: ±∞ by the sign of the normalised value
    set(&mut w, 6, -INF);
    set(&mut b, 4, NAN); // column 4
    for (name, bias) in [("layer_norm", Some(&b[..])), ("rms_norm", None)] {
        let (got, reference) = run_norm(dev, &x, &w, bias, (rows, cols), 1e-6);
        assert_same_nonfinite(
            &format!("{name} with NaN/±∞ inputs"),
            &got,
            &reference,
            &["nan", "+inf", "-inf", "finite"],
        );
    }
}

pub fn check_nonfinite_attention<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    // hd 64 with 20 queries: CUDA's tensor-core kernels (3xTF32 for f32); hd 24:
    // the others.
    for &(h, hd, nq, nk) in &[(2usize, 64usize, 20usize, 70usize), (3, 24, 5, 37)] {
        let w = h * hd;
        let mut q: Vec<T> = rng.vec(nq * w, 1.0);
        let mut k: Vec<T> = rng.vec(nk * w, 1.0);
        let mut v: Vec<T> = rng.vec(nk * w, 1.0);
        // Query 3, head 0: NaN.
        set(&mut q, 3 * w + 1, NAN);
        // The last query, head 1: −∞ (a NaN row: its scores are ±∞ or NaN).
        set(&mut q, (nq - 1) * w + hd + 5, -INF);
        // Key 5, head 1: score ±∞ by the sign of each query's dim 0 there: +∞ makes
        // that query NaN (∞ − ∞ in the softmax), −∞ drops the key.
        set(&mut k, 5 * w + hd, INF);
        set(&mut v, 7 * w + 2, -INF); // head 0, dim 2: −∞ for every query
        set(&mut v, 9 * w + 3, INF); // head 0, dim 3: +∞ for every query but 3
        let (got, reference) = run_attention(dev, [&q, &k, &v], (1, h, hd, nq, nk, false));
        assert_same_nonfinite(
            &format!("attention h={h} hd={hd} nq={nq} nk={nk} with NaN/±∞ inputs"),
            &got,
            &reference,
            &["nan", "+inf", "-inf", "finite"],
        );
    }
}

pub fn check_nonfinite_add<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    let n = 1029;
    let mut a: Vec<T> = rng.vec(n, 3.0);
    let mut b: Vec<T> = rng.vec(n, 3.0);
    set(&mut a, 1, NAN);
    set(&mut b, 2, INF);
    set(&mut a, 3, -INF);
    set(&mut a, 4, INF);
    set(&mut b, 4, -INF); // ∞ − ∞
    set(&mut b, 1027, NAN);
    let (got, reference) = run_add(dev, &a, &b);
    assert_same_nonfinite(
        "add with NaN/±∞ inputs",
        &got,
        &reference,
        &["nan", "+inf", "-inf", "finite"],
    );
}

pub fn check_nonfinite_patch_embed<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    let (b, c, img, p, d) = (2, 3, 10, 4, 13);
    let g = img / p;
    let n = g * g;
    let mut px: Vec<T> = rng.vec(b * c * img * img, 1.0);
    let mut w: Vec<T> = rng.vec(d * c * p * p, 0.2);
    let bias: Vec<T> = rng.vec(d, 0.5);
    let mut pos: Vec<T> = rng.vec(n * d, 0.5);
    set(&mut px, 1, NAN); // image 0, patch 0
    set(&mut px, c * img * img + img * p + 1, INF); // image 1, patch (1, 0)
    set(&mut w, 5 * c * p * p, -INF); // channel 5: ∓∞ where a patch has pixel 0 ≠ 0
    set(&mut pos, 3 * d + 8, INF); // token 3, channel 8
    let (got, reference) = run_patch_embed(dev, [&px, &w, &bias, &pos], (b, c, img, p, d));
    assert_same_nonfinite(
        "patch_embed with NaN/±∞ inputs",
        &got,
        &reference,
        &["nan", "+inf", "-inf", "finite"],
    );
}

pub fn check_nonfinite_memory<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    // 70 tokens: CUDA's gate in three blocks per sequence, the NaN in the second.
    for n in [5, 70] {
        check_nonfinite_memory_at(dev, rng, n);
    }
}

fn check_nonfinite_memory_at<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng, n: usize) {
    let (b, e, m, d) = (3, 4, 8, 17);
    let mut c = MemoryCase::<T>::random(rng, (b, n, e, m, d));
    let tok = if n > 40 { 40 } else { 0 };
    set(&mut c.h, n * d + tok * d + 2, NAN); // sequence 1: its gate, and with it its memory
    set(&mut c.bank, 2 * e * m * d + 3 * d + 4, INF); // sequence 2, expert 0, slot 3
    set(&mut c.o, 2 * (m + n) * d + m * d + 1, -INF); // sequence 2, token 0 (after the slots)
    let r = run_memory(dev, &c);
    let what = format!("memory with NaN/±∞ inputs, {n} tokens");
    assert_same_nonfinite(
        &format!("{what}: gate"),
        &r.gate.0,
        &r.gate.1,
        &["nan", "finite"],
    );
    assert_same_nonfinite(
        &format!("{what}: joint"),
        &r.joint.0,
        &r.joint.1,
        &["nan", "+inf", "finite"],
    );
    // The write-back from the device's gate: NaN for sequence 1.
    assert_same_nonfinite(
        &format!("{what}: out"),
        &r.out.0,
        &r.out.1,
        &["-inf", "finite"],
    );
    assert_same_nonfinite(
        &format!("{what}: bank"),
        &r.bank.0,
        &r.bank.1,
        &["nan", "finite"],
    );
}
