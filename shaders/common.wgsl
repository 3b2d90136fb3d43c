// Shared helpers, appended to every shader after its own text (WGSL allows
// module-scope declarations in any order, so a shader's line numbers stay its own).

// f32 -> bf16 bit pattern (low 16 bits), round to nearest, ties to even, done on
// the integer bits: WGSL has no bf16 type. Every NaN becomes 0x7fff (tessera's
// bf16 NaN on all backends); values that round past the largest finite bf16
// become infinity.
fn bf16_bits(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return 0x7fffu;
    }
    return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}

// Workgroups of a dispatch are numbered linearly across x and y: the host splits
// grids wider than the 65535-per-dimension limit into rows of x.
fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}
