// Memory-gated attention, write step (MODEL.md steps 4-5), one dispatch:
// - bank[b,e] = (1 - g[b,e]) bank[b,e] + g[b,e] o[b, :M], in place;
// - dst[b] = residual[b] + o[b, M:].
// Layout: one invocation per 32-bit word, 256 per workgroup. Words
// 0 .. bank_words - 1 are the bank's, the rest the output's. Each word has one
// invocation, which reads its own bank word before overwriting it, so the
// in-place update needs no synchronisation.

struct Params {
    batch: u32,
    tokens: u32,
    experts: u32,
    slots: u32,
    hidden: u32,
    bank_len: u32,   // batch * experts * slots * hidden
    out_len: u32,    // batch * tokens * hidden
    bank_words: u32, // ceil(bank_len / 2)
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> bank: array<ELEM_W>;
@group(0) @binding(2) var<storage, read> gate: array<f32>;
@group(0) @binding(3) var<storage, read> o: array<ELEM_R>;
@group(0) @binding(4) var<storage, read> res: array<ELEM_R>;
@group(0) @binding(5) var<storage, read_write> dst: array<ELEM_W>;

fn bank_value(i: u32) -> f32 {
    let md = P.slots * P.hidden;
    let be = i / md; // b * E + e
    let r = i % md;  // s * D + d
    let b = be / P.experts;
    let g = gate[be];
    let o_row = b * (P.slots + P.tokens) * P.hidden;
    return (1.0 - g) * ld_bank(i) + g * ld_o(o_row + r);
}

fn out_value(i: u32) -> f32 {
    let nd = P.tokens * P.hidden;
    let b = i / nd;
    let r = i % nd;
    let o_row = b * (P.slots + P.tokens) * P.hidden + P.slots * P.hidden;
    return ld_res(i) + ld_o(o_row + r);
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let wd = group_index(wid, nwg) * 256u + lid;
    if (wd < P.bank_words) {
        let i = 2u * wd;
        if (i + 1u < P.bank_len) {
            let lo = bank_value(i);
            let hi = bank_value(i + 1u);
            st2_bank(i, lo, hi);
        } else {
            st_bank(i, bank_value(i));
        }
        return;
    }
    let i = 2u * (wd - P.bank_words);
    if (i + 1u < P.out_len) {
        st2_dst(i, out_value(i), out_value(i + 1u));
    } else if (i < P.out_len) {
        st_dst(i, out_value(i));
    }
}
