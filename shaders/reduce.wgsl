// Workgroup tree reduction, appended to the shaders that use it (layer_norm,
// memory_read). Their workgroups have exactly RED_WG = 256 invocations.

const RED_WG: u32 = 256u;
var<workgroup> red: array<f32, RED_WG>;

// Sum of `v` over the workgroup. Must be reached by every invocation.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = RED_WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    // Nobody may overwrite `red` for the next reduction before all have read it.
    workgroupBarrier();
    return total;
}
