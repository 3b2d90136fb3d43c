// Memory-gated attention, read step (MODEL.md steps 1-3), two entry points run
// back to back in one pass:
// - `gate`: g[b] = softmax_E(router_w . mean_N(h[b]) + router_b), stored in f32.
//   One workgroup of 256 invocations per batch item. The hidden axis is walked in
//   chunks of 256: each invocation averages one column of h over the tokens,
//   then for each expert the workgroup reduces router_w[e] . mean over the chunk
//   (tree reduction in workgroup memory) and invocation 0 accumulates the logit
//   in `gate` itself, so E needs no fixed bound. Invocation 0 finishes with the
//   softmax over E.
// - `read`: joint[b] = [sum_e g[b,e] bank[b,e]; h[b]] ([M + N, D], memory rows
//   first). One invocation per 32-bit word of `joint` (elements 2w, 2w + 1), 256
//   per workgroup, so a bf16 word has exactly one writer.

struct Params {
    batch: u32,
    tokens: u32,
    experts: u32,
    slots: u32,
    hidden: u32,
    joint_len: u32, // batch * (slots + tokens) * hidden
    inv_tokens: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> h: array<ELEM_R>;
@group(0) @binding(2) var<storage, read> bank: array<ELEM_R>;
@group(0) @binding(3) var<storage, read> rw: array<ELEM_R>;
@group(0) @binding(4) var<storage, read> rb: array<ELEM_R>;
@group(0) @binding(5) var<storage, read_write> joint: array<ELEM_W>;
@group(0) @binding(6) var<storage, read_write> gate: array<f32>;

const WG: u32 = 256u;
// workgroup_sum: reduce.wgsl (appended), for WG = 256 invocations.

@compute @workgroup_size(256)
fn gate_main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = group_index(wid, nwg);
    if (b >= P.batch) {
        return;
    }
    let E = P.experts;
    let D = P.hidden;
    let g0 = b * E;
    if (lid == 0u) {
        for (var e = 0u; e < E; e++) {
            gate[g0 + e] = ld_rb(e);
        }
    }
    for (var d0 = 0u; d0 < D; d0 += WG) {
        let d = d0 + lid;
        var mean = 0.0;
        if (d < D) {
            for (var t = 0u; t < P.tokens; t++) {
                mean += ld_h((b * P.tokens + t) * D + d);
            }
            mean *= P.inv_tokens;
        }
        for (var e = 0u; e < E; e++) {
            var p = 0.0;
            if (d < D) {
                p = ld_rw(e * D + d) * mean;
            }
            let total = workgroup_sum(lid, p);
            if (lid == 0u) {
                gate[g0 + e] += total;
            }
        }
    }
    if (lid == 0u) {
        var mx = gate[g0];
        for (var e = 1u; e < E; e++) {
            mx = max(mx, gate[g0 + e]);
        }
        var z = 0.0;
        for (var e = 0u; e < E; e++) {
            let x = exp(gate[g0 + e] - mx);
            gate[g0 + e] = x;
            z += x;
        }
        let inv = 1.0 / z;
        for (var e = 0u; e < E; e++) {
            gate[g0 + e] *= inv;
        }
    }
}

fn joint_value(i: u32) -> f32 {
    let D = P.hidden;
    let rows = P.slots + P.tokens;
    let b = i / (rows * D);
    let r = i % (rows * D);
    let s = r / D;
    let d = r % D;
    if (s < P.slots) {
        var acc = 0.0;
        for (var e = 0u; e < P.experts; e++) {
            let be = b * P.experts + e;
            acc += gate[be] * ld_bank((be * P.slots + s) * D + d);
        }
        return acc;
    }
    return ld_h((b * P.tokens + (s - P.slots)) * D + d);
}

@compute @workgroup_size(256)
fn read_main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = 2u * (group_index(wid, nwg) * WG + lid);
    if (i + 1u < P.joint_len) {
        st2_joint(i, joint_value(i), joint_value(i + 1u));
    } else if (i < P.joint_len) {
        st_joint(i, joint_value(i));
    }
}
