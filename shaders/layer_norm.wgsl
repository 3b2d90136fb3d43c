// Layer norm over the last axis: y = (x - mean) / sqrt(var + eps) * w + b, biased
// variance, statistics in f32; with P.rms = 1, RMS norm: y = x / sqrt(mean(x²) + eps) * w
// (no mean, no bias; b is bound but not read).
//
// Layout: one workgroup of 256 invocations per row. Each invocation strides over
// the row's columns; the sums go through a tree reduction in workgroup memory.
// Two passes over the row (mean, then the sum of squared deviations) keep the
// variance accurate when |mean| is large compared with the spread.
// Stores: the row is written in 32-bit words. A word that straddles the row's
// first or last element is shared with the neighbouring row (another workgroup),
// so only this row's half is written there (an atomic half-word store for bf16).

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    rms: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<ELEM_R>;
@group(0) @binding(2) var<storage, read> w: array<ELEM_R>;
@group(0) @binding(3) var<storage, read> b: array<ELEM_R>;
@group(0) @binding(4) var<storage, read_write> dst: array<ELEM_W>;

const WG: u32 = 256u;
// workgroup_sum: reduce.wgsl (appended), for WG = 256 invocations.

fn normed(i: u32, base: u32, mean: f32, inv: f32) -> f32 {
    let c = i - base;
    var bias = 0.0;
    if (P.rms == 0u) {
        bias = ld_b(c);
    }
    return (ld_x(i) - mean) * inv * ld_w(c) + bias;
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = group_index(wid, nwg);
    if (row >= P.rows) {
        return;
    }
    let cols = P.cols;
    let base = row * cols;

    // The mean (0 for RMS norm; P.rms is uniform, so the barriers stay uniform).
    var mean = 0.0;
    if (P.rms == 0u) {
        var s = 0.0;
        for (var c = lid; c < cols; c += WG) {
            s += ld_x(base + c);
        }
        mean = workgroup_sum(lid, s) / f32(cols);
    }

    var q = 0.0;
    for (var c = lid; c < cols; c += WG) {
        let d = ld_x(base + c) - mean;
        q += d * d;
    }
    let inv = inverseSqrt(workgroup_sum(lid, q) / f32(cols) + P.eps);

    let end = base + cols;
    let first_word = base >> 1u;
    let last_word = (end - 1u) >> 1u;
    for (var wd = first_word + lid; wd <= last_word; wd += WG) {
        let i = 2u * wd;
        let lo = i >= base;
        let hi = i + 1u < end;
        if (lo && hi) {
            st2_dst(i, normed(i, base, mean, inv), normed(i + 1u, base, mean, inv));
        } else if (lo) {
            st_dst(i, normed(i, base, mean, inv));
        } else {
            st_dst(i + 1u, normed(i + 1u, base, mean, inv));
        }
    }
}
