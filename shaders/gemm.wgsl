// Tiled GEMM core shared by linear.wgsl and patch_embed.wgsl (appended to them):
// C[m, n] = epilogue(row, col, sum_k load_a(row, k) * load_b(col, k)), with C
// stored row-major in `dst`. The including shader provides `Params` (fields m, n,
// k, tiles_m, tiles_n), load_a, load_b, epilogue and the `dst` binding.
//
// Layout: one workgroup of 16 x 16 = 256 invocations computes a 64 x 64 tile of C;
// invocation (tx, ty) owns a 4 x 4 block: rows ty*4 .. ty*4+3, four consecutive
// columns tx*4 .. tx*4+3 (so its stores pair up into whole 32-bit words).
// K advances in steps of 16: the workgroup stages a 64 x 16 slice of A and of B
// in workgroup memory, transposed to [k][row] so the inner loop reads four
// consecutive rows / columns as one vec4. Loads are coalesced: 16 neighbouring
// invocations read 16 consecutive k of one row. Out-of-range rows, columns and
// k are staged as zeros, so no tile size has to divide any dimension.
//
// Portability: each invocation stores whole vec4s to workgroup memory (four
// invocations writing the components of one vector at once is a data race on
// Metal and D3D12: gpuweb#2112), and writes local vectors only at constant
// indices or through arrays (FXC cannot assign a vector component at a run-time
// index inside a loop it cannot unroll).

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;

var<workgroup> a_tile: array<array<vec4<f32>, 16>, 16>; // [k][row / 4]
var<workgroup> b_tile: array<array<vec4<f32>, 16>, 16>; // [k][col / 4]

// Write `count` (1..4) consecutive values starting at flat index `base`. Words
// wholly inside the run are stored whole; an edge word whose other half belongs
// to a neighbouring run gets a half-word store.
fn store_run(base: u32, count: u32, v: array<f32, 4>) {
    var j = 0u;
    loop {
        if (j >= count) {
            break;
        }
        let i = base + j;
        if ((i & 1u) == 0u && j + 1u < count) {
            st2_dst(i, v[j], v[j + 1u]);
            j += 2u;
        } else {
            st_dst(i, v[j]);
            j += 1u;
        }
    }
}

// A's element (row, k), zero outside the matrix (the staging's edge).
fn a_or_zero(row: u32, k: u32, k_ok: bool) -> f32 {
    if (k_ok && row < P.m) {
        return load_a(row, k);
    }
    return 0.0;
}

// B's element (col, k), zero outside the matrix.
fn b_or_zero(col: u32, k: u32, k_ok: bool) -> f32 {
    if (k_ok && col < P.n) {
        return load_b(col, k);
    }
    return 0.0;
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tile = group_index(wid, nwg);
    if (tile >= P.tiles_m * P.tiles_n) {
        return;
    }
    let m0 = (tile / P.tiles_n) * TILE_M;
    let n0 = (tile % P.tiles_n) * TILE_N;
    let tx = lid % 16u;
    let ty = lid / 16u;

    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < P.k; k0 += TILE_K) {
        // Staging: invocation (tx, ty) loads k = k0 + tx of rows (and columns)
        // 4·ty .. 4·ty+3 and stores them as one vec4.
        let kk = k0 + tx;
        let k_ok = kk < P.k;
        let r0 = 4u * ty;
        a_tile[tx][ty] = vec4<f32>(
            a_or_zero(m0 + r0, kk, k_ok),
            a_or_zero(m0 + r0 + 1u, kk, k_ok),
            a_or_zero(m0 + r0 + 2u, kk, k_ok),
            a_or_zero(m0 + r0 + 3u, kk, k_ok),
        );
        b_tile[tx][ty] = vec4<f32>(
            b_or_zero(n0 + r0, kk, k_ok),
            b_or_zero(n0 + r0 + 1u, kk, k_ok),
            b_or_zero(n0 + r0 + 2u, kk, k_ok),
            b_or_zero(n0 + r0 + 3u, kk, k_ok),
        );
        workgroupBarrier();
        for (var k = 0u; k < TILE_K; k++) {
            let av = a_tile[k][ty];
            let bv = b_tile[k][tx];
            acc[0] += av.x * bv;
            acc[1] += av.y * bv;
            acc[2] += av.z * bv;
            acc[3] += av.w * bv;
        }
        workgroupBarrier();
    }

    let c0 = n0 + tx * 4u;
    if (c0 >= P.n) {
        return;
    }
    let count = min(4u, P.n - c0);
    for (var r = 0u; r < 4u; r++) {
        let row = m0 + ty * 4u + r;
        if (row < P.m) {
            let a = acc[r];
            var v = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
            for (var j = 0u; j < count; j++) {
                v[j] = epilogue(row, c0 + j, a[j]);
            }
            store_run(row * P.n + c0, count, v);
        }
    }
}
