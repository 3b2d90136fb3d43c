// out[i] = OUT(x[i]): the element types of `x` and `dst` are substituted
// independently (f32/bf16 each way). Values move as bits (loads bitcast, stores
// bitcast or round the bits to nearest-even), so no float arithmetic can flush a
// subnormal or change a sign of zero.
//
// Layout: 256 invocations per workgroup, one invocation per 32-bit output word
// (elements 2w and 2w + 1), so a bf16 word has exactly one writer.

struct Params {
    len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<ELEM_R>;
@group(0) @binding(2) var<storage, read_write> dst: array<ELEM_W>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = 2u * (group_index(wid, nwg) * 256u + lid);
    if (i + 1u < P.len) {
        st2_dst(i, ld_x(i), ld_x(i + 1u));
    } else if (i < P.len) {
        st_dst(i, ld_x(i));
    }
}
