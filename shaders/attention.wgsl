// Multi-head attention, one fused pass: per batch b and head h,
// dst = softmax(q k^T * hd^-0.5) v, no mask, with the softmax computed online
// (running max and sum, flash-attention style) so any kv length works in one pass
// and the score matrix is never stored.
//
// Layout: one workgroup of 64 invocations per (b, h, block of 64 queries); each
// invocation owns one query row: its scaled q and its output accumulator (up to
// 128 dims) live in invocation-private arrays. Keys and values stream through
// workgroup memory 16 rows at a time (the whole workgroup loads a tile
// cooperatively, consecutive invocations reading consecutive dims; every
// invocation then reads the same tile element, a broadcast). Per tile the scores
// are computed first, then the accumulator is rescaled once by
// exp(old_max - new_max) and the tile's weighted values are added.
// q broadcast (the pooling head's single probe): q's batch stride is 0.
// Stores: a head's slice is hd elements wide; when hd is odd, an edge word is
// shared with the neighbouring head (another workgroup) and gets a half-word store.

struct Params {
    batch: u32,
    heads: u32,
    hd: u32,
    nq: u32,
    nk: u32,
    width: u32,     // heads * hd
    q_bstride: u32, // nq * width, or 0 when q is shared by the batch
    q_blocks: u32,  // ceil(nq / 64)
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> q: array<ELEM_R>;
@group(0) @binding(2) var<storage, read> k: array<ELEM_R>;
@group(0) @binding(3) var<storage, read> v: array<ELEM_R>;
@group(0) @binding(4) var<storage, read_write> dst: array<ELEM_W>;

const BQ: u32 = 64u;     // queries (= invocations) per workgroup
const BKV: u32 = 16u;    // key/value rows per staged tile
const MAX_HD: u32 = 128u;

var<workgroup> k_tile: array<f32, 2048>; // BKV * MAX_HD, row j at j * hd
var<workgroup> v_tile: array<f32, 2048>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = group_index(wid, nwg);
    if (g >= P.batch * P.heads * P.q_blocks) {
        return;
    }
    let qblock = g % P.q_blocks;
    let bh = g / P.q_blocks;
    let h = bh % P.heads;
    let b = bh / P.heads;
    let hd = P.hd;
    let qi = qblock * BQ + lid;
    let live = qi < P.nq;
    // Inactive invocations still help stage tiles; they compute on row 0 and store nothing.
    let qrow = select(0u, qi, live);

    var qv: array<f32, MAX_HD>;
    var acc: array<f32, MAX_HD>;
    let q_base = b * P.q_bstride + qrow * P.width + h * hd;
    for (var d = 0u; d < hd; d++) {
        qv[d] = ld_q(q_base + d) * P.scale;
        acc[d] = 0.0;
    }

    var m = -3.0e38; // running max (finite, so exp(m - new) is 0, not NaN)
    var l = 0.0;     // running sum of exp(score - m)
    var s: array<f32, BKV>;
    let kv_base = b * P.nk * P.width + h * hd;
    for (var j0 = 0u; j0 < P.nk; j0 += BKV) {
        let cnt = min(BKV, P.nk - j0);
        for (var e = lid; e < cnt * hd; e += BQ) {
            let j = e / hd;
            let src = kv_base + (j0 + j) * P.width + (e - j * hd);
            k_tile[e] = ld_k(src);
            v_tile[e] = ld_v(src);
        }
        workgroupBarrier();

        var tile_max = m;
        for (var j = 0u; j < cnt; j++) {
            var dot = 0.0;
            let kr = j * hd;
            for (var d = 0u; d < hd; d++) {
                dot += qv[d] * k_tile[kr + d];
            }
            s[j] = dot;
            tile_max = max(tile_max, dot);
        }
        let corr = exp(m - tile_max);
        l *= corr;
        for (var d = 0u; d < hd; d++) {
            acc[d] *= corr;
        }
        for (var j = 0u; j < cnt; j++) {
            let p = exp(s[j] - tile_max);
            l += p;
            let vr = j * hd;
            for (var d = 0u; d < hd; d++) {
                acc[d] += p * v_tile[vr + d];
            }
        }
        m = tile_max;
        workgroupBarrier();
    }

    if (!live) {
        return;
    }
    let inv = 1.0 / l;
    let o = (b * P.nq + qi) * P.width + h * hd;
    var j = 0u;
    loop {
        if (j >= hd) {
            break;
        }
        let i = o + j;
        if ((i & 1u) == 0u && j + 1u < hd) {
            st2_dst(i, acc[j] * inv, acc[j + 1u] * inv);
            j += 2u;
        } else {
            st_dst(i, acc[j] * inv);
            j += 1u;
        }
    }
}
