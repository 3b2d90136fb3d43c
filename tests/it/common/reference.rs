//! f64 references written the obvious way, one per op.

use tessera::ops::Activation;

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

/// The size of the terms [`ref_linear`] sums, per output: `Σ|x||w| + |b| + |r|`
/// (no activation: |gelu(z)| ≤ |z|), for [`super::assert_close_sum`].
#[allow(clippy::too_many_arguments)]
pub fn linear_magnitude(
    x: &[f64],
    w: &[f64],
    b: Option<&[f64]>,
    residual: Option<&[f64]>,
    rows: usize,
    k: usize,
    n: usize,
) -> Vec<f64> {
    use super::abs;
    let (b, r) = (b.map(abs), residual.map(abs));
    ref_linear(
        &abs(x),
        &abs(w),
        b.as_deref(),
        Activation::None,
        r.as_deref(),
        rows,
        k,
        n,
    )
}

/// RMS norm per row: `x/√(mean(x²) + eps)·w`.
pub fn ref_rms_norm(x: &[f64], w: &[f64], rows: usize, cols: usize, eps: f64) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let ms = row.iter().map(|v| v * v).sum::<f64>() / cols as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for c in 0..cols {
            out[r * cols + c] = row[c] * inv * w[c];
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

/// The size of the terms [`ref_patch_embed`] sums, per output:
/// `Σ|pixel||w| + |bias| + |pos|`, for [`super::assert_close_sum`].
#[allow(clippy::too_many_arguments)]
pub fn patch_embed_magnitude(
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
    use super::abs;
    ref_patch_embed(&abs(px), &abs(w), &abs(bias), &abs(pos), b, c, img, p, d)
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
