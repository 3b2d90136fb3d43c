// out = a + b, elementwise.
//
// Layout: 256 invocations per workgroup, one invocation per 32-bit word of the
// output: it writes elements 2w and 2w + 1. A bf16 word thus has exactly one
// writer, and an f32 invocation simply writes two elements.

struct Params {
    len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> a: array<ELEM_R>;
@group(0) @binding(2) var<storage, read> b: array<ELEM_R>;
@group(0) @binding(3) var<storage, read_write> dst: array<ELEM_W>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = 2u * (group_index(wid, nwg) * 256u + lid);
    if (i + 1u < P.len) {
        st2_dst(i, ld_a(i) + ld_b(i), ld_a(i + 1u) + ld_b(i + 1u));
    } else if (i < P.len) {
        st_dst(i, ld_a(i) + ld_b(i));
    }
}
