//! NaN and ±∞ inputs: every op, on every backend, gives what IEEE arithmetic in
//! the f64 reference gives — NaN where it has NaN, +∞ / −∞ where it has them
//! (element by element), and the finite elements within the usual bar. Each case
//! places a few non-finite values so that the output holds all four kinds (a NaN
//! row, a NaN column, infinite rows of mixed signs, untouched finite elements),
//! with the output poisoned with NaN first.

use tessera::ops::Activation;
use tessera::{Element, Kernels};

use tessera::ops;

use super::compare::{bar, rel_l2, to_f64};
use super::reference::ref_attention;
use super::rng::Rng;
use super::suite::{
    poisoned, run_add, run_attention, run_linear, run_memory, run_norm, run_patch_embed, up,
    MemoryCase,
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
        spoil_attention(&mut q, &mut k, &mut v, w, hd);
        let (got, reference) = run_attention(dev, [&q, &k, &v], (1, h, hd, nq, nk, false));
        assert_same_nonfinite(
            &format!("attention h={h} hd={hd} nq={nq} nk={nk} with NaN/±∞ inputs"),
            &got,
            &reference,
            &["nan", "+inf", "-inf", "finite"],
        );
    }
}

/// The NaN/±∞ of the attention checks, in one sequence's q `[Nq, W]` and k, v
/// `[Nk, W]` (Nq ≥ 4, Nk ≥ 10, at least 2 heads of `hd`).
fn spoil_attention<T: Element>(q: &mut [T], k: &mut [T], v: &mut [T], w: usize, hd: usize) {
    let nq = q.len() / w;
    // Query 3, head 0: NaN.
    set(q, 3 * w + 1, NAN);
    // The last query, head 1: −∞ (a NaN row: its scores are ±∞ or NaN).
    set(q, (nq - 1) * w + hd + 5, -INF);
    // Key 5, head 1: score ±∞ by the sign of each query's dim 0 there: +∞ makes
    // that query NaN (∞ − ∞ in the softmax), −∞ drops the key.
    set(k, 5 * w + hd, INF);
    set(v, 7 * w + 2, -INF); // head 0, dim 2: −∞ for every query
    set(v, 9 * w + 3, INF); // head 0, dim 3: +∞ for every query but 3
}

/// The rows of `parts` (each `[rows, w]`) side by side: `[rows, parts·w]`, the
/// layout of a fused projection.
fn side_by_side<T: Copy>(parts: &[&[T]], w: usize) -> Vec<T> {
    let rows = parts[0].len() / w;
    let mut out = Vec::with_capacity(rows * w * parts.len());
    for r in 0..rows {
        for p in parts {
            out.extend_from_slice(&p[r * w..(r + 1) * w]);
        }
    }
    out
}

/// The NaN/±∞ of [`check_nonfinite_attention`] in the fused layouts the model
/// runs: q, k and v as column blocks of one `[B, N, 3·W]` projection
/// (`attention_qkv_into`), k and v of a `[B, Nk, 2·W]` one under separate and
/// shared queries (`attention_q_kv_into`), and both packed, where only the middle
/// sequence holds the non-finite values and its neighbours (before and after it
/// in the same rows) must come out finite and right: NaN or ±∞ must not leak
/// across sequences. Batch 0 holds them in the unpacked cases, batch 1 stays
/// finite. Against the f64 reference on the split tensors, each sequence alone.
pub fn check_nonfinite_attention_fused<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    // hd 64 (CUDA's tensor-core kernels) and 24 (the others).
    for &(h, hd, n, ref lens) in &[
        (2usize, 64usize, 40usize, vec![12usize, 40, 20]),
        (3, 24, 13, vec![3, 13, 6]),
    ] {
        let w = h * hd;
        let kinds = ["nan", "+inf", "-inf", "finite"];
        // Two sequences of n rows: batch 0 spoilt.
        let b = 2;
        let mut q: Vec<T> = rng.vec(b * n * w, 1.0);
        let mut k: Vec<T> = rng.vec(b * n * w, 1.0);
        let mut v: Vec<T> = rng.vec(b * n * w, 1.0);
        spoil_attention(&mut q[..n * w], &mut k[..n * w], &mut v[..n * w], w, hd);
        let (qf, kf, vf) = (to_f64(&q), to_f64(&k), to_f64(&v));
        let reference = ref_attention(&qf, &kf, &vf, b, h, hd, n, n, false);
        assert!(reference[n * w..].iter().all(|x| x.is_finite()));
        let qkv = side_by_side(&[&q, &k, &v], w);
        let mut out = poisoned::<T, D>(dev, &[b, n, w]);
        ops::attention_qkv_into(&up(dev, &qkv, &[b, n, 3 * w]), h, &mut out).unwrap();
        assert_same_nonfinite(
            &format!("attention_qkv h={h} hd={hd} n={n} with NaN/±∞ inputs"),
            &out.to_vec().unwrap(),
            &reference,
            &kinds,
        );

        // k and v fused; q separate, then shared by the batch (batch 0's).
        let kv = side_by_side(&[&k, &v], w);
        for shared in [false, true] {
            let bq = if shared { 1 } else { b };
            let mut out = poisoned::<T, D>(dev, &[b, n, w]);
            ops::attention_q_kv_into(
                &up(dev, &q[..bq * n * w], &[bq, n, w]),
                &up(dev, &kv, &[b, n, 2 * w]),
                h,
                &mut out,
            )
            .unwrap();
            let reference = ref_attention(&qf[..bq * n * w], &kf, &vf, b, h, hd, n, n, shared);
            assert_same_nonfinite(
                &format!("attention_q_kv h={h} hd={hd} n={n} shared q={shared} with NaN/±∞ inputs"),
                &out.to_vec().unwrap(),
                &reference,
                &kinds,
            );
        }

        // Packed: the middle sequence spoilt.
        let seg = ops::Segments::from_lengths(lens).unwrap();
        let total = seg.total();
        let mut q: Vec<T> = rng.vec(total * w, 1.0);
        let mut k: Vec<T> = rng.vec(total * w, 1.0);
        let mut v: Vec<T> = rng.vec(total * w, 1.0);
        let mid = seg.range(1);
        spoil_attention(
            &mut q[mid.start * w..mid.end * w],
            &mut k[mid.start * w..mid.end * w],
            &mut v[mid.start * w..mid.end * w],
            w,
            hd,
        );
        let (qf, kf, vf) = (to_f64(&q), to_f64(&k), to_f64(&v));
        let rows = |x: &[f64], s: usize| x[seg.range(s).start * w..seg.range(s).end * w].to_vec();
        let mut reference = Vec::new();
        for s in 0..seg.count() {
            let len = seg.range(s).len();
            reference.extend(ref_attention(
                &rows(&qf, s),
                &rows(&kf, s),
                &rows(&vf, s),
                1,
                h,
                hd,
                len,
                len,
                false,
            ));
        }
        let neighbours = |x: &[f64]| -> bool {
            x[..mid.start * w]
                .iter()
                .chain(&x[mid.end * w..])
                .all(|v| v.is_finite())
        };
        assert!(
            neighbours(&reference),
            "the neighbours' reference is finite"
        );
        let qkv = side_by_side(&[&q, &k, &v], w);
        let mut out = poisoned::<T, D>(dev, &[total, w]);
        ops::attention_qkv_packed_into(&up(dev, &qkv, &[total, 3 * w]), &seg, h, &mut out).unwrap();
        let got = out.to_vec().unwrap();
        let what = format!("attention_qkv_packed h={h} hd={hd} lengths={lens:?}");
        assert!(
            neighbours(&to_f64(&got)),
            "{what} [{}]: NaN/±∞ of sequence 1 leaked into its neighbours",
            T::DTYPE
        );
        assert_same_nonfinite(
            &format!("{what} with NaN/±∞ inputs"),
            &got,
            &reference,
            &kinds,
        );

        // The pooling head over the packed k and v: 5 queries per sequence, the
        // middle sequence's own spoilt (rows 3 and 4 as in `spoil_attention`).
        let nq = 5;
        let kv = side_by_side(&[&k, &v], w);
        let mut pq: Vec<T> = rng.vec(seg.count() * nq * w, 1.0);
        set(&mut pq, (nq + 3) * w + 1, NAN);
        set(&mut pq, (2 * nq - 1) * w + hd + 5, -INF);
        let pqf = to_f64(&pq);
        let mut reference = Vec::new();
        for s in 0..seg.count() {
            reference.extend(ref_attention(
                &pqf[s * nq * w..(s + 1) * nq * w],
                &rows(&kf, s),
                &rows(&vf, s),
                1,
                h,
                hd,
                nq,
                seg.range(s).len(),
                false,
            ));
        }
        let (before, after) = (&reference[..nq * w], &reference[2 * nq * w..]);
        assert!(before.iter().chain(after).all(|x| x.is_finite()));
        let mut out = poisoned::<T, D>(dev, &[seg.count(), nq, w]);
        ops::attention_q_kv_packed_into(
            &up(dev, &pq, &[seg.count(), nq, w]),
            &up(dev, &kv, &[total, 2 * w]),
            &seg,
            h,
            &mut out,
        )
        .unwrap();
        let got = out.to_vec().unwrap();
        let what = format!("attention_q_kv_packed h={h} hd={hd} lengths={lens:?}");
        assert!(
            to_f64(&got[..nq * w])
                .iter()
                .chain(&to_f64(&got[2 * nq * w..]))
                .all(|x| x.is_finite()),
            "{what} [{}]: NaN/±∞ of sequence 1 leaked into its neighbours",
            T::DTYPE
        );
        assert_same_nonfinite(
            &format!("{what} with NaN/±∞ inputs"),
            &got,
            &reference,
            &kinds,
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
    // D 13 and 16: on a Hopper GPU, the fused kernel and patchify + the GEMM.
    for d in [13, 16] {
        check_nonfinite_patch_embed_at(dev, rng, d);
    }
}

fn check_nonfinite_patch_embed_at<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng, d: usize) {
    let (b, c, img, p) = (2, 3, 10, 4);
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
        &format!("patch_embed d={d} with NaN/±∞ inputs"),
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
