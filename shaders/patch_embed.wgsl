// Patch embedding, fused: patchify + GEMM + bias + position embedding.
// dst[b, t, d] = bias[d] + pos[t, d] + sum_k patch(b, t, k) * w[d, k], where
// token t = gy * grid + gx and k = c * P * P + py * P + px (Conv2d weight order).
// The GEMM's A operand is read straight from the pixels (no im2col buffer): row
// b * tokens + t, column k maps to pixel [b, c, gy * P + py, gx * P + px].
// Tiling: gemm.wgsl.

struct Params {
    m: u32,        // batch * tokens
    n: u32,        // hidden
    k: u32,        // channels * patch * patch
    tiles_m: u32,
    tiles_n: u32,
    channels: u32,
    image: u32,
    psize: u32,    // patch side (`patch` is reserved in WGSL)
    grid: u32,     // image / patch
    tokens: u32,   // grid * grid
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> px: array<ELEM_R>;
@group(0) @binding(2) var<storage, read> w: array<ELEM_R>;
@group(0) @binding(3) var<storage, read> bias: array<ELEM_R>;
@group(0) @binding(4) var<storage, read> pos: array<ELEM_R>;
@group(0) @binding(5) var<storage, read_write> dst: array<ELEM_W>;

fn load_a(row: u32, k: u32) -> f32 {
    let b = row / P.tokens;
    let t = row % P.tokens;
    let gy = t / P.grid;
    let gx = t % P.grid;
    let pp = P.psize * P.psize;
    let c = k / pp;
    let r = k % pp;
    let py = r / P.psize;
    let pxl = r % P.psize;
    let y = gy * P.psize + py;
    let xx = gx * P.psize + pxl;
    return ld_px(((b * P.channels + c) * P.image + y) * P.image + xx);
}

fn load_b(col: u32, k: u32) -> f32 {
    return ld_w(col * P.k + k);
}

fn epilogue(row: u32, col: u32, acc: f32) -> f32 {
    let t = row % P.tokens;
    return acc + ld_bias(col) + ld_pos(t * P.n + col);
}
