//! Shared test harness: f64 references written the obvious way, a seeded random
//! generator, the relative-L2 check, and one generic op suite that every backend
//! instantiates with `op_suite!`. Inputs are drawn in f32, rounded to the element
//! type, and the reference is computed in f64 from the rounded values, so the bar
//! measures the kernel, not the input quantisation.
#![allow(dead_code)]

use tessera::ops::{self, Activation};
use tessera::{DeviceBuffer, Element, Kernels};

// ---------------------------------------------------------------------------
// Skipping GPU tests honestly.

/// `Some(device)` if it could be made; otherwise prints why and returns `None`, or
/// panics when `require_var` (e.g. `TESSERA_REQUIRE_WGPU`) is set to 1.
pub fn device_or_skip<D>(
    what: &str,
    require_var: &str,
    make: impl FnOnce() -> tessera::Result<D>,
) -> Option<D> {
    match make() {
        Ok(d) => Some(d),
        Err(e) => {
            if std::env::var(require_var)
                .map(|v| v == "1")
                .unwrap_or(false)
            {
                panic!("{require_var}=1 but no {what} device: {e}");
            }
            skip_notice(&format!(
                "no {what} device ({e}); set {require_var}=1 to make this a failure"
            ));
            None
        }
    }
}

/// The repository root (tests read `tests/data` and `assets` from here).
pub fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch path `name` under the test target's temp dir, in folder `group`.
pub fn tmp_in(group: &str, name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(group);
    std::fs::create_dir_all(&dir).expect("create test temp dir");
    dir.join(name)
}

/// Print `SKIPPED: why` to the real stderr. libtest captures `eprintln!` of a
/// passing test, which would hide the skip from CI logs; a direct write is not captured.
pub fn skip_notice(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// A safetensors file whose 8 tensors' offsets sum past u64::MAX: the safetensors
/// crate's own length check overflows on it (a panic in debug builds), so tessera
/// must refuse it first.
pub fn overflowing_safetensors() -> Vec<u8> {
    let size = (1u64 << 61) - 1;
    let mut header = serde_json::Map::new();
    for i in 0..8u64 {
        header.insert(
            format!("t{i}"),
            serde_json::json!({"dtype": "U8", "shape": [size], "data_offsets": [i * size, (i + 1) * size]}),
        );
    }
    let text = serde_json::to_string(&header).expect("json");
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

// ---------------------------------------------------------------------------
// Random numbers: xorshift64*, seeded per test from the clock unless
// TESSERA_TEST_SEED is set; the seed is printed so a failure can be replayed.

pub struct Rng(u64);

impl Rng {
    pub fn new(test: &str) -> Self {
        let seed = std::env::var("TESSERA_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0x9E37_79B9_7F4A_7C15)
            });
        eprintln!("{test}: TESSERA_TEST_SEED={seed}");
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-scale, scale).
    pub fn uniform(&mut self, scale: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * u - 1.0) * scale
    }
    pub fn vec<T: Element>(&mut self, n: usize, scale: f32) -> Vec<T> {
        (0..n).map(|_| T::from_f32(self.uniform(scale))).collect()
    }
}

pub fn to_f64<T: Element>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f32() as f64).collect()
}

/// Relative L2 error ‖out − ref‖/‖ref‖; NaN or Inf anywhere gives +∞.
pub fn rel_l2(out: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len(), "length mismatch");
    if out.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let num: f64 = out
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    let den: f64 = reference.iter().map(|b| b * b).sum();
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// The bar for element type T: f32 1e-5, bf16 2e-2.
pub fn bar<T: Element>() -> f64 {
    match T::DTYPE {
        tessera::DType::F32 => 1e-5,
        tessera::DType::BF16 => 2e-2,
    }
}

pub fn assert_close<T: Element>(what: &str, out: &[T], reference: &[f64]) {
    let err = rel_l2(&to_f64(out), reference);
    let bar = bar::<T>();
    assert!(
        err <= bar,
        "{what} [{}]: relative L2 error {err:e} exceeds {bar:e}",
        T::DTYPE
    );
}

fn poisoned<T: Element, D: Kernels<T>>(dev: &D, shape: &[usize]) -> DeviceBuffer<T, D> {
    DeviceBuffer::full(dev, shape, T::from_f32(f32::NAN)).unwrap()
}

fn up<T: Element, D: Kernels<T>>(dev: &D, data: &[T], shape: &[usize]) -> DeviceBuffer<T, D> {
    DeviceBuffer::from_slice(dev, data, shape).unwrap()
}

// ---------------------------------------------------------------------------
// f64 references.

pub fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

/// `residual + act(x Wᵀ + b)`, x [rows, k], w [n, k].
#[allow(clippy::too_many_arguments)]
pub fn ref_linear(
    x: &[f64],
    w: &[f64],
    b: Option<&[f64]>,
    act: Activation,
    residual: Option<&[f64]>,
    rows: usize,
    k: usize,
    n: usize,
) -> Vec<f64> {
    let mut out = vec![0.0; rows * n];
    for r in 0..rows {
        for j in 0..n {
            let mut acc = b.map_or(0.0, |b| b[j]);
            for i in 0..k {
                acc += x[r * k + i] * w[j * k + i];
            }
            if act == Activation::GeluTanh {
                acc = gelu_tanh(acc);
            }
            out[r * n + j] = acc + residual.map_or(0.0, |res| res[r * n + j]);
        }
    }
    out
}

pub fn ref_layer_norm(
    x: &[f64],
    w: &[f64],
    b: &[f64],
    rows: usize,
    cols: usize,
    eps: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let mean = row.iter().sum::<f64>() / cols as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / cols as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for c in 0..cols {
            out[r * cols + c] = (row[c] - mean) * inv * w[c] + b[c];
        }
    }
    out
}

/// pixels [B, C, I, I], w [D, C·P·P] → [B, N, D].
#[allow(clippy::too_many_arguments)]
pub fn ref_patch_embed(
    px: &[f64],
    w: &[f64],
    bias: &[f64],
    pos: &[f64],
    b: usize,
    c: usize,
    img: usize,
    p: usize,
    d: usize,
) -> Vec<f64> {
    let g = img / p;
    let n = g * g;
    let k = c * p * p;
    let mut out = vec![0.0; b * n * d];
    for bi in 0..b {
        for gy in 0..g {
            for gx in 0..g {
                let tok = gy * g + gx;
                for o in 0..d {
                    let mut acc = bias[o] + pos[tok * d + o];
                    for ci in 0..c {
                        for py in 0..p {
                            for pxi in 0..p {
                                let pix =
                                    px[((bi * c + ci) * img + gy * p + py) * img + gx * p + pxi];
                                acc += pix * w[o * k + ci * p * p + py * p + pxi];
                            }
                        }
                    }
                    out[(bi * n + tok) * d + o] = acc;
                }
            }
        }
    }
    out
}

/// q [Bq, Nq, H·hd] (Bq = 1 broadcasts), k/v [B, Nk, H·hd] → [B, Nq, H·hd].
#[allow(clippy::too_many_arguments)]
pub fn ref_attention(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    b: usize,
    h: usize,
    hd: usize,
    nq: usize,
    nk: usize,
    q_broadcast: bool,
) -> Vec<f64> {
    let w = h * hd;
    let scale = (hd as f64).powf(-0.5);
    let mut out = vec![0.0; b * nq * w];
    for bi in 0..b {
        let qb = if q_broadcast { 0 } else { bi };
        for hi in 0..h {
            for i in 0..nq {
                let qrow = &q[(qb * nq + i) * w + hi * hd..][..hd];
                let scores: Vec<f64> = (0..nk)
                    .map(|j| {
                        let krow = &k[(bi * nk + j) * w + hi * hd..][..hd];
                        qrow.iter().zip(krow).map(|(a, c)| a * c).sum::<f64>() * scale
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for dd in 0..hd {
                    let mut acc = 0.0;
                    for j in 0..nk {
                        acc += e[j] * v[(bi * nk + j) * w + hi * hd + dd];
                    }
                    out[(bi * nq + i) * w + hi * hd + dd] = acc / z;
                }
            }
        }
    }
    out
}

/// Returns (joint [B, M+N, D], gate [B, E]).
#[allow(clippy::too_many_arguments)]
pub fn ref_memory_read(
    h: &[f64],
    bank: &[f64],
    rw: &[f64],
    rb: &[f64],
    b: usize,
    n: usize,
    e: usize,
    m: usize,
    d: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut joint = vec![0.0; b * (m + n) * d];
    let mut gate = vec![0.0; b * e];
    for bi in 0..b {
        let mut mean = vec![0.0; d];
        for t in 0..n {
            for c in 0..d {
                mean[c] += h[(bi * n + t) * d + c] / n as f64;
            }
        }
        let logits: Vec<f64> = (0..e)
            .map(|ei| rb[ei] + (0..d).map(|c| rw[ei * d + c] * mean[c]).sum::<f64>())
            .collect();
        let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let ex: Vec<f64> = logits.iter().map(|l| (l - mx).exp()).collect();
        let z: f64 = ex.iter().sum();
        for ei in 0..e {
            gate[bi * e + ei] = ex[ei] / z;
        }
        for s in 0..m {
            for c in 0..d {
                let mut acc = 0.0;
                for ei in 0..e {
                    acc += gate[bi * e + ei] * bank[((bi * e + ei) * m + s) * d + c];
                }
                joint[(bi * (m + n) + s) * d + c] = acc;
            }
        }
        for t in 0..n {
            for c in 0..d {
                joint[(bi * (m + n) + m + t) * d + c] = h[(bi * n + t) * d + c];
            }
        }
    }
    (joint, gate)
}

/// Returns (new bank [B, E, M, D], out = residual + o[:, M:] [B, N, D]).
#[allow(clippy::too_many_arguments)]
pub fn ref_memory_write(
    bank: &[f64],
    gate: &[f64],
    o: &[f64],
    residual: &[f64],
    b: usize,
    n: usize,
    e: usize,
    m: usize,
    d: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut nb = bank.to_vec();
    let mut out = vec![0.0; b * n * d];
    for bi in 0..b {
        for ei in 0..e {
            let g = gate[bi * e + ei];
            for s in 0..m {
                for c in 0..d {
                    let idx = ((bi * e + ei) * m + s) * d + c;
                    nb[idx] = (1.0 - g) * bank[idx] + g * o[(bi * (m + n) + s) * d + c];
                }
            }
        }
        for t in 0..n {
            for c in 0..d {
                out[(bi * n + t) * d + c] =
                    residual[(bi * n + t) * d + c] + o[(bi * (m + n) + m + t) * d + c];
            }
        }
    }
    (nb, out)
}

// ---------------------------------------------------------------------------
// The generic op suite. Each check runs several shapes no tile divides, with
// fresh random inputs and the output poisoned with NaN before the launch.

pub fn check_linear<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    let shapes = [
        (1, 1, 1),
        (3, 17, 5),
        (17, 64, 65),
        (65, 129, 33),
        (129, 72, 130),
        (2, 300, 7),
    ];
    for &(rows, k, n) in &shapes {
        for (act, with_bias, with_res) in [
            (Activation::None, true, false),
            (Activation::GeluTanh, true, false),
            (Activation::None, true, true),
            (Activation::None, false, false),
        ] {
            let x: Vec<T> = rng.vec(rows * k, 1.0);
            let w: Vec<T> = rng.vec(n * k, 1.0 / (k as f32).sqrt());
            let b: Vec<T> = rng.vec(n, 0.5);
            let r: Vec<T> = rng.vec(rows * n, 1.0);
            let (xb, wb, bb, rb) = (
                up(dev, &x, &[rows, k]),
                up(dev, &w, &[n, k]),
                up(dev, &b, &[n]),
                up(dev, &r, &[rows, n]),
            );
            let mut out = poisoned::<T, D>(dev, &[rows, n]);
            ops::linear_into(
                &xb,
                &wb,
                with_bias.then_some(&bb),
                act,
                with_res.then_some(&rb),
                &mut out,
            )
            .unwrap();
            let (bf, rf) = (to_f64(&b), to_f64(&r));
            let reference = ref_linear(
                &to_f64(&x),
                &to_f64(&w),
                with_bias.then_some(&bf[..]),
                act,
                with_res.then_some(&rf[..]),
                rows,
                k,
                n,
            );
            assert_close(
                &format!(
                    "linear rows={rows} k={k} n={n} {act:?} bias={with_bias} residual={with_res}"
                ),
                &out.to_vec().unwrap(),
                &reference,
            );
        }
    }
    // Leading batch axes are flattened into rows.
    let x: Vec<T> = rng.vec(2 * 3 * 9, 1.0);
    let w: Vec<T> = rng.vec(4 * 9, 0.3);
    let out = ops::linear(
        &up(dev, &x, &[2, 3, 9]),
        &up(dev, &w, &[4, 9]),
        None,
        Activation::None,
        None,
    )
    .unwrap();
    assert_eq!(out.shape(), &[2, 3, 4]);
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

pub fn check_layer_norm<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    for &(rows, cols) in &[(1, 1), (3, 17), (65, 64), (7, 1152), (2, 4304), (129, 3)] {
        let x: Vec<T> = (0..rows * cols)
            .map(|_| T::from_f32(rng.uniform(2.0) + 3.0))
            .collect();
        let w: Vec<T> = rng.vec(cols, 1.5);
        let b: Vec<T> = rng.vec(cols, 0.5);
        let mut out = poisoned::<T, D>(dev, &[rows, cols]);
        ops::layer_norm_into(
            &up(dev, &x, &[rows, cols]),
            &up(dev, &w, &[cols]),
            &up(dev, &b, &[cols]),
            1e-6,
            &mut out,
        )
        .unwrap();
        let reference = ref_layer_norm(&to_f64(&x), &to_f64(&w), &to_f64(&b), rows, cols, 1e-6);
        assert_close(
            &format!("layer_norm rows={rows} cols={cols}"),
            &out.to_vec().unwrap(),
            &reference,
        );
    }
}

pub fn check_patch_embed<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    for &(b, c, img, p, d) in &[
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
    ] {
        let k = c * p * p;
        let n = (img / p) * (img / p);
        let px: Vec<T> = rng.vec(b * c * img * img, 1.0);
        let w: Vec<T> = rng.vec(d * k, 1.0 / (k as f32).sqrt());
        let bias: Vec<T> = rng.vec(d, 0.5);
        let pos: Vec<T> = rng.vec(n * d, 0.5);
        let mut out = poisoned::<T, D>(dev, &[b, n, d]);
        ops::patch_embed_into(
            &up(dev, &px, &[b, c, img, img]),
            &up(dev, &w, &[d, c, p, p]),
            &up(dev, &bias, &[d]),
            &up(dev, &pos, &[n, d]),
            p,
            &mut out,
        )
        .unwrap();
        let reference = ref_patch_embed(
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
        assert_close(
            &format!("patch_embed b={b} c={c} i={img} p={p} d={d}"),
            &out.to_vec().unwrap(),
            &reference,
        );
    }
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
    ];
    for &(b, h, hd, nq, nk, bc) in &cases {
        let w = h * hd;
        let bq = if bc { 1 } else { b };
        let q: Vec<T> = rng.vec(bq * nq * w, 1.0);
        let k: Vec<T> = rng.vec(b * nk * w, 1.0);
        let v: Vec<T> = rng.vec(b * nk * w, 1.0);
        let mut out = poisoned::<T, D>(dev, &[b, nq, w]);
        ops::attention_into(
            &up(dev, &q, &[bq, nq, w]),
            &up(dev, &k, &[b, nk, w]),
            &up(dev, &v, &[b, nk, w]),
            h,
            &mut out,
        )
        .unwrap();
        let reference = ref_attention(&to_f64(&q), &to_f64(&k), &to_f64(&v), b, h, hd, nq, nk, bc);
        assert_close(
            &format!("attention b={b} h={h} hd={hd} nq={nq} nk={nk} broadcast={bc}"),
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
    ] {
        let h: Vec<T> = rng.vec(b * n * d, 1.0);
        let bank: Vec<T> = rng.vec(b * e * m * d, 1.0);
        let rw: Vec<T> = rng.vec(e * d, 1.0);
        let rb: Vec<T> = rng.vec(e, 0.5);
        let hb = up(dev, &h, &[b, n, d]);
        let bankb = up(dev, &bank, &[b, e, m, d]);
        let mut joint = poisoned::<T, D>(dev, &[b, m + n, d]);
        let mut gate = DeviceBuffer::<f32, D>::full(dev, &[b, e], f32::NAN).unwrap();
        ops::memory_read_into(
            &hb,
            &bankb,
            &up(dev, &rw, &[e, d]),
            &up(dev, &rb, &[e]),
            &mut joint,
            &mut gate,
        )
        .unwrap();
        let (rj, rg) = ref_memory_read(
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
        let what = format!("memory b={b} n={n} e={e} m={m} d={d}");
        let gate_host = gate.to_vec().unwrap();
        let gate_err = rel_l2(&to_f64(&gate_host), &rg);
        // The gate is f32 on every backend; bf16 inputs only change its inputs, which the
        // reference already used, so the f32 bar applies up to accumulation order.
        assert!(
            gate_err <= 1e-5,
            "{what} gate: relative L2 error {gate_err:e}"
        );
        assert_close(&format!("{what} joint"), &joint.to_vec().unwrap(), &rj);

        // Write step, from fresh o and residual, with the gate just computed.
        let o: Vec<T> = rng.vec(b * (m + n) * d, 1.0);
        let res: Vec<T> = rng.vec(b * n * d, 1.0);
        let mut bank_w = up(dev, &bank, &[b, e, m, d]);
        let mut out = poisoned::<T, D>(dev, &[b, n, d]);
        ops::memory_write_into(
            &mut bank_w,
            &gate,
            &up(dev, &o, &[b, m + n, d]),
            &up(dev, &res, &[b, n, d]),
            &mut out,
        )
        .unwrap();
        let gate_f64: Vec<f64> = gate_host.iter().map(|&g| g as f64).collect();
        let (rbank, rout) = ref_memory_write(
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
        assert_close(&format!("{what} out"), &out.to_vec().unwrap(), &rout);
        if m > 0 {
            assert_close(&format!("{what} bank"), &bank_w.to_vec().unwrap(), &rbank);
        }
    }
}

pub fn check_add<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    for &n in &[1usize, 17, 1023, 4097] {
        let a: Vec<T> = rng.vec(n, 3.0);
        let b: Vec<T> = rng.vec(n, 3.0);
        let mut out = poisoned::<T, D>(dev, &[n]);
        ops::add_into(&up(dev, &a, &[n]), &up(dev, &b, &[n]), &mut out).unwrap();
        let reference: Vec<f64> = to_f64(&a)
            .iter()
            .zip(to_f64(&b))
            .map(|(x, y)| x + y)
            .collect();
        assert_close(&format!("add n={n}"), &out.to_vec().unwrap(), &reference);
    }
}

/// f32 → bf16 must round to nearest-even exactly, bf16 → f32 must be exact.
pub fn check_cast<D: Kernels<f32> + Kernels<tessera::bf16>>(dev: &D, rng: &mut Rng) {
    use tessera::bf16;
    for &n in &[1usize, 2, 17, 1023, 4097] {
        let mut x: Vec<f32> = rng.vec(n, 100.0);
        // Exact ties and specials: ties must go to even.
        let specials = [
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            -0.0,
            f32::INFINITY,
            65504.0,
            1e-40,
        ];
        for (i, s) in specials.iter().enumerate() {
            if i < n {
                x[i] = *s;
            }
        }
        let xb = up(dev, &x, &[n]);
        let mut y = poisoned::<bf16, D>(dev, &[n]);
        ops::cast_into(&xb, &mut y).unwrap();
        let got = y.to_vec().unwrap();
        for i in 0..n {
            assert_eq!(
                got[i].to_bits(),
                bf16::from_f32(x[i]).to_bits(),
                "cast f32→bf16 n={n} at {i}: {}",
                x[i]
            );
        }
        let mut back = poisoned::<f32, D>(dev, &[n]);
        ops::cast_into(&y, &mut back).unwrap();
        let back = back.to_vec().unwrap();
        for i in 0..n {
            assert_eq!(
                back[i].to_bits(),
                got[i].to_f32().to_bits(),
                "cast bf16→f32 n={n} at {i}"
            );
        }
    }
}

/// Instantiate the whole suite for one device. `$make` returns `Option<Device>`
/// (None = skipped with a printed notice).
#[macro_export]
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
        each_dtype!(patch_embed_matches_reference, check_patch_embed);
        each_dtype!(attention_matches_reference, check_attention);
        each_dtype!(memory_read_write_match_reference, check_memory);
        each_dtype!(add_matches_reference, check_add);

        #[test]
        fn cast_rounds_to_nearest_even() {
            let Some(dev) = $make else { return };
            let mut rng = Rng::new("cast");
            check_cast(&dev, &mut rng);
        }
    };
}
