// Multi-head attention, one fused pass: per batch b and head h,
// dst = softmax(q k^T * hd^-0.5) v, no mask, with the softmax computed online
// (running max and sum, flash-attention style) so any kv length works in one pass
// and the score matrix is never stored.
//
// Layout: one workgroup of 128 invocations per (b, h, block of 16 queries): 16
// query rows x 8 lanes. Lane l of a row owns head dims l, l+8, ..., l+120 (16
// slots, constant-bound loops so q and the output accumulator stay in
// registers). Keys and values stream through workgroup memory 8 rows at a time,
// loaded cooperatively (consecutive invocations read consecutive dims). Per tile:
// each lane forms partial dot products over its dims for the 8 keys, lane j of a
// row then sums the 8 partials of key j (workgroup memory), every lane reads the
// row's 8 scores, rescales its accumulator once by exp(old_max - new_max) and adds
// the tile's weighted values.
// q broadcast (the pooling head's single probe): q's batch stride is 0. q, k and
// v are addressed through row strides and column offsets, so they may be column
// blocks of one fused qkv (or kv) projection.
// Packed batches (varlen = 1): sequence b's keys are rows cu[b] .. cu[b+1] of k and
// v; with q_varlen = 1 its queries and outputs are the same rows of q and dst
// (self-attention), else nq rows at b * nq as for fixed lengths (the head's probe).
// nq and nk then bound the grid only. The lengths come from a storage buffer, so
// they are made workgroup-uniform with workgroupUniformLoad before the loops that
// hold barriers.
// Stores: the row's hd outputs are staged in workgroup memory and written as
// 32-bit words by the row's lanes; when hd is odd an edge word is shared with the
// neighbouring head (another workgroup) and gets a half-word store.

struct Params {
    batch: u32,
    heads: u32,
    hd: u32,
    nq: u32,
    nk: u32,
    ldq: u32,       // row strides (elements) of q, of k and v, of dst
    ldkv: u32,
    ldo: u32,
    q_col: u32,     // column of head 0 in q's, k's and v's rows (q, k and v may be
    k_col: u32,     // column blocks of one fused projection)
    v_col: u32,
    q_bstride: u32, // nq * ldq, or 0 when q is shared by the batch
    q_blocks: u32,  // ceil(nq / ROWS)
    scale: f32,
    varlen: u32,    // 1: k and v rows from cu (packed batch)
    q_varlen: u32,  // 1: q and dst rows from cu too
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> q: array<ELEM_R>;
@group(0) @binding(2) var<storage, read> k: array<ELEM_R>;
@group(0) @binding(3) var<storage, read> v: array<ELEM_R>;
@group(0) @binding(4) var<storage, read_write> dst: array<ELEM_W>;
@group(0) @binding(5) var<storage, read> cu: array<u32>;

const ROWS: u32 = 16u;     // queries per workgroup
const LANES: u32 = 8u;     // invocations per query
const SLOTS: u32 = 16u;    // head dims per lane: LANES * SLOTS = MAX_HD
const MAX_HD: u32 = 128u;
const BKV: u32 = 8u;       // keys per staged tile (= LANES: lane j sums key j)
const THREADS: u32 = 128u; // ROWS * LANES

// K tile at [0, BKV * MAX_HD), V tile after it; row j of a tile at j * hd.
// After the key loop the same memory stages the output, row r at r * MAX_HD.
var<workgroup> kv_tile: array<f32, 2048>;
var<workgroup> partial: array<f32, 1024>; // [row][key][lane]
var<workgroup> scores: array<f32, 128>;   // [row][key]
var<workgroup> seq: array<u32, 4>;        // q row0, q len, kv row0, kv len

const V_OFF: u32 = 1024u; // BKV * MAX_HD

@compute @workgroup_size(128)
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
    let row = lid / LANES;
    let lane = lid % LANES;
    // This sequence's rows: from cu for a packed batch (uniform once loaded).
    if (lid == 0u) {
        var s = vec4<u32>(b * P.nq, P.nq, b * P.nk, P.nk);
        if (P.varlen != 0u) {
            let s0 = cu[b];
            let n = cu[b + 1u] - s0;
            s.z = s0;
            s.w = n;
            if (P.q_varlen != 0u) {
                s.x = s0;
                s.y = n;
            }
        }
        seq[0] = s.x;
        seq[1] = s.y;
        seq[2] = s.z;
        seq[3] = s.w;
    }
    let q_row0 = workgroupUniformLoad(&seq[0]);
    let q_len = workgroupUniformLoad(&seq[1]);
    let kv_row0 = workgroupUniformLoad(&seq[2]);
    let kv_len = workgroupUniformLoad(&seq[3]);
    if (qblock * ROWS >= q_len) {
        return;
    }
    let qi = qblock * ROWS + row;
    let live = qi < q_len;
    // Rows past the last query still help stage tiles; they compute on query 0
    // and store nothing.
    let qrow = select(0u, qi, live);

    var qv: array<f32, SLOTS>;
    var acc: array<f32, SLOTS>;
    // A broadcast q (q_bstride 0) reads its one batch whatever the sequence.
    var q_base = b * P.q_bstride + qrow * P.ldq + P.q_col + h * hd;
    if (P.q_varlen != 0u) {
        q_base = (q_row0 + qrow) * P.ldq + P.q_col + h * hd;
    }
    for (var c = 0u; c < SLOTS; c++) {
        let d = lane + c * LANES;
        var x = 0.0;
        if (d < hd) {
            x = ld_q(q_base + d) * P.scale;
        }
        qv[c] = x;
        acc[c] = 0.0;
    }

    var m = -3.0e38; // running max (finite, so exp(m - new) is 0, not NaN)
    var l = 0.0;     // running sum of exp(score - m)
    let kv_base = kv_row0 * P.ldkv + h * hd;
    let srow = row * BKV;
    for (var j0 = 0u; j0 < kv_len; j0 += BKV) {
        let cnt = min(BKV, kv_len - j0);
        for (var e = lid; e < cnt * hd; e += THREADS) {
            let j = e / hd;
            let src = kv_base + (j0 + j) * P.ldkv + (e - j * hd);
            kv_tile[e] = ld_k(src + P.k_col);
            kv_tile[V_OFF + e] = ld_v(src + P.v_col);
        }
        workgroupBarrier();

        for (var j = 0u; j < cnt; j++) {
            var dot = 0.0;
            for (var c = 0u; c < SLOTS; c++) {
                let d = lane + c * LANES;
                if (d < hd) {
                    dot += qv[c] * kv_tile[j * hd + d];
                }
            }
            partial[(srow + j) * LANES + lane] = dot;
        }
        workgroupBarrier();
        if (lane < cnt) {
            var s = 0.0;
            for (var t = 0u; t < LANES; t++) {
                s += partial[(srow + lane) * LANES + t];
            }
            scores[srow + lane] = s;
        }
        workgroupBarrier();

        var tile_max = m;
        for (var j = 0u; j < cnt; j++) {
            tile_max = max(tile_max, scores[srow + j]);
        }
        let corr = exp(m - tile_max);
        l *= corr;
        for (var c = 0u; c < SLOTS; c++) {
            acc[c] *= corr;
        }
        for (var j = 0u; j < cnt; j++) {
            let p = exp(scores[srow + j] - tile_max);
            l += p;
            for (var c = 0u; c < SLOTS; c++) {
                let d = lane + c * LANES;
                if (d < hd) {
                    acc[c] += p * kv_tile[V_OFF + j * hd + d];
                }
            }
        }
        m = tile_max;
        // The next tile overwrites kv_tile, partial and scores.
        workgroupBarrier();
    }

    let inv = 1.0 / l;
    for (var c = 0u; c < SLOTS; c++) {
        let d = lane + c * LANES;
        if (d < hd) {
            kv_tile[row * MAX_HD + d] = acc[c] * inv;
        }
    }
    workgroupBarrier();
    if (!live) {
        return;
    }
    let o = (q_row0 + qi) * P.ldo + h * hd;
    let end = o + hd;
    let first_word = o >> 1u;
    let last_word = (end - 1u) >> 1u;
    let stage = row * MAX_HD;
    for (var wd = first_word + lane; wd <= last_word; wd += LANES) {
        let i = 2u * wd;
        let lo = i >= o;
        let hi = i + 1u < end;
        if (lo && hi) {
            st2_dst(i, kv_tile[stage + i - o], kv_tile[stage + i + 1u - o]);
        } else if (lo) {
            st_dst(i, kv_tile[stage + i - o]);
        } else {
            st_dst(i + 1u, kv_tile[stage + i + 1u - o]);
        }
    }
}
