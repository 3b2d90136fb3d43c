//! Attention on CUDA (kernels/attention.ptx for bf16, kernels/attention_f32.ptx,
//! kernels/attention_sm90.ptx and kernels/attention_sm90_f32.ptx), fused,
//! online softmax:
//! - bf16 with head dims a multiple of 8 (up to 128) and at least 16 query rows:
//!   on compute capability 9.0 at head dims 64, 72, 80 and 128,
//!   `attention_bf16_sm90_hd*` (wgmma fed by TMA; see [`AttentionPath`]),
//!   elsewhere `attention_bf16_hd{16..128}`, FlashAttention-2 style on tensor
//!   cores (mma.sync);
//! - f32 with head dims a multiple of 4 (up to 128) and at least 16 query rows:
//!   on tensor cores in 3xTF32 (f32-accurate; see [`F32Gemm`], whose `simt`
//!   setting turns it off): `attention_f32_hd{32..128}`, the FlashAttention-2
//!   kernel on mma.sync, also on Hopper, where it measured faster than the
//!   wgmma kernel (H100, 2026-11-25: so400m batch 32 1.29 against 1.61 ms);
//!   `attention_f32_sm90_hd*` (tf32 wgmma fed by TMA, converter warps splitting
//!   K and transposing V; head dims 64 and 72) only where
//!   `TESSERA_CUDA_ATTENTION=sm90-f32` asks for it;
//! - f32 and bf16 otherwise (head dims or row strides not a multiple of 4 (f32)
//!   or 8 (bf16), the pooling probe's single query, a GPU whose shared memory is
//!   too small for the tile): `attention_{f32,bf16}` on CUDA cores, exact.

use super::launch::{KernelSpec, Launcher, Matrix2d};
use super::manifest as m;
use super::{Cuda, F32Gemm};
use crate::element::{DType, Element};
use crate::error::{Error, Result};
use crate::ops::{index32, AttentionArgs, AttentionDims, Packing};

/// The bf16 tensor-core attention of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttentionPath {
    /// `attention_bf16_hd*`: mma.sync fed by cp.async (compute capability 8.0+).
    Fa2,
    /// `attention_bf16_sm90_hd*` at head dims 64, 72, 80 and 128 (wgmma fed by
    /// TMA, sm_90a: compute capability 9.0 only; persistent, one block an SM
    /// taking (query block, head, sequence) items in turn), the
    /// [`Fa2`](Self::Fa2) kernels at others and for f32.
    Sm90,
    /// [`Sm90`](Self::Sm90), and f32 at head dims 64 and 72 on
    /// `attention_f32_sm90_hd*` too (`TESSERA_CUDA_ATTENTION=sm90-f32`: slower
    /// than the mma.sync kernel on the H100, kept to be timed beside it).
    Sm90F32,
}

/// The most dynamic shared memory of the `attention_*_sm90_hd*` kernels.
const SM90_SMEM: u32 = {
    let (bf16, f32) = (
        m::attention_bf16_sm90_hd128::DYN_SMEM,
        m::attention_f32_sm90_hd72::DYN_SMEM,
    );
    if bf16 > f32 {
        bf16
    } else {
        f32
    }
};

impl AttentionPath {
    /// The path for compute capability `(major, minor)`, unless
    /// `TESSERA_CUDA_ATTENTION` (`fa2`, `sm90` or `sm90-f32`; `auto` or unset: by
    /// capability, `sm90` on Hopper) says otherwise. `sm90` or `sm90-f32` on a GPU
    /// without wgmma is an error, as is an unknown value.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn choose(capability: (i32, i32), max_smem: u32, env: Option<&str>) -> Result<Self> {
        let (major, minor) = capability;
        let hopper = capability == (9, 0) && max_smem >= SM90_SMEM;
        match env.map(str::trim) {
            None | Some("") | Some("auto") => Ok(if hopper { Self::Sm90 } else { Self::Fa2 }),
            Some("fa2") => Ok(Self::Fa2),
            Some("sm90") if hopper => Ok(Self::Sm90),
            Some("sm90-f32") if hopper => Ok(Self::Sm90F32),
            Some(v @ ("sm90" | "sm90-f32")) => Err(Error::Unsupported {
                op: "Cuda::new",
                msg: format!(
                    "TESSERA_CUDA_ATTENTION={v} needs compute capability 9.0 (wgmma, sm_90a) \
                     and {SM90_SMEM} bytes of shared memory per block; this GPU is \
                     {major}.{minor} with {max_smem}"
                ),
            }),
            Some(other) => Err(Error::Unsupported {
                op: "Cuda::new",
                msg: format!(
                    "TESSERA_CUDA_ATTENTION={other:?}: expected auto, fa2, sm90 or sm90-f32"
                ),
            }),
        }
    }
}

/// Whether the bf16 Hopper kernels' two consumer warpgroups take turns on the
/// tensor cores (FlashAttention-3's scheduler barriers; the kernels' `turns`
/// parameter): yes unless `TESSERA_CUDA_SM90_TURNS` is `0`, `off` or `false`
/// (to time the kernels without them); `1`, `on`, `true`, `auto` or unset: yes.
/// Anything else is an error.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn sm90_turns(env: Option<&str>) -> Result<bool> {
    match env.map(str::trim) {
        None | Some("" | "auto" | "1" | "on" | "true") => Ok(true),
        Some("0" | "off" | "false") => Ok(false),
        Some(other) => Err(Error::Unsupported {
            op: "Cuda::new",
            msg: format!("TESSERA_CUDA_SM90_TURNS={other:?}: expected on or off"),
        }),
    }
}

/// The Hopper kernel of element type `dtype` for exactly head dim `hd`: its spec
/// and dynamic shared memory (query rows per item: [`m::attention_bf16_sm90_hd64::ROWS`],
/// the same for all).
fn sm90_spec(dtype: DType, hd: usize) -> Option<(&'static KernelSpec<m::AttentionSm90>, u32)> {
    macro_rules! entry {
        ($m:ident) => {
            (&m::$m::SPEC, m::$m::DYN_SMEM)
        };
    }
    Some(match (dtype, hd) {
        (DType::BF16, 64) => entry!(attention_bf16_sm90_hd64),
        (DType::BF16, 72) => entry!(attention_bf16_sm90_hd72),
        (DType::BF16, 80) => entry!(attention_bf16_sm90_hd80),
        (DType::BF16, 128) => entry!(attention_bf16_sm90_hd128),
        (DType::F32, 64) => entry!(attention_f32_sm90_hd64),
        (DType::F32, 72) => entry!(attention_f32_sm90_hd72),
        _ => return None,
    })
}

/// The tensor map's view of a buffer of `bytes` bytes of `elem`-byte elements
/// in rows `ld` elements long: every whole row it holds (a map may cover more
/// than the op reads; the kernel bounds its rows itself).
fn map_shape(bytes: usize, ld: u32, elem: usize) -> Matrix2d {
    let rows = bytes / elem / (ld.max(1) as usize);
    Matrix2d {
        rows: rows.min(i32::MAX as usize) as u32,
        cols: ld,
    }
}

/// A tensor-core kernel: its spec, dynamic shared memory and query rows per block
/// (each entry's own manifest values).
type Fa2 = (&'static super::launch::KernelSpec<m::Attention>, u32, u32);

/// The tensor-core kernel of element type `dtype` for head dim `hd`: the one of
/// the least padded head dim (`HD` in its manifest) at or above it.
fn fa2_spec(dtype: DType, hd: usize) -> Option<Fa2> {
    macro_rules! entries {
        ($($m:ident),*) => {
            [$((&m::$m::SPEC, m::$m::DYN_SMEM, m::$m::ROWS, m::$m::HD)),*]
        };
    }
    let pick = |list: &[(&'static KernelSpec<m::Attention>, u32, u32, u32)]| {
        list.iter()
            .find(|e| hd <= e.3 as usize)
            .map(|&(spec, smem, rows, _)| (spec, smem, rows))
    };
    match dtype {
        DType::BF16 => pick(&entries!(
            attention_bf16_hd16,
            attention_bf16_hd32,
            attention_bf16_hd48,
            attention_bf16_hd64,
            attention_bf16_hd80,
            attention_bf16_hd96,
            attention_bf16_hd112,
            attention_bf16_hd128
        )),
        DType::F32 => pick(&entries!(
            attention_f32_hd32,
            attention_f32_hd64,
            attention_f32_hd72,
            attention_f32_hd80,
            attention_f32_hd96,
            attention_f32_hd128
        )),
    }
}

/// Query rows below which the tensor-core kernel's 128-row blocks are mostly idle.
const FA2_MIN_QUERIES: usize = 16;

pub(super) fn attention<T: Element>(dev: &Cuda, a: AttentionArgs<'_, T, Cuda>) -> Result<()> {
    let offsets = a.packed_offsets()?;
    let o = Operands {
        q: &a.q.buf,
        k: &a.k.buf,
        v: &a.v.buf,
        out: &mut a.out.buf,
    };
    launch(dev, T::DTYPE, o, a.dims, offsets)
}

/// Attention's buffers on a [`Launcher`] (q, k and v may be one buffer).
pub(super) struct Operands<'a, B> {
    pub q: &'a B,
    pub k: &'a B,
    pub v: &'a B,
    pub out: &'a mut B,
}

/// Attention of element type `dtype` over `a`, sized by `d` (checked by the op's
/// front), the packed batch's `offsets` where `d.packing` is packed: the kernel
/// chosen, its grid and its arguments, launched on `dev`.
pub(super) fn launch<L: Launcher>(
    dev: &L,
    dtype: DType,
    a: Operands<'_, L::Buf>,
    d: AttentionDims,
    offsets: Option<&[u32]>,
) -> Result<()> {
    const OP: &str = "attention";
    if d.head_dim > m::attention_f32::MAX_HD as usize {
        return Err(Error::Unsupported {
            op: OP,
            msg: format!("head dim {} > {}", d.head_dim, m::attention_f32::MAX_HD),
        });
    }
    if d.batch > 65_535 || d.heads > 65_535 {
        return Err(Error::Unsupported {
            op: OP,
            msg: format!("batch {} or heads {} > 65535", d.batch, d.heads),
        });
    }
    let nq = index32(OP, "q_len", d.q_len)?;
    let nk = index32(OP, "kv_len", d.kv_len)?;
    let lay = d.layout;
    index32(OP, "q", d.q_rows() * lay.ldq)?;
    index32(OP, "k", d.kv_rows() * lay.ldkv)?;
    index32(OP, "out", d.out_rows() * lay.ldo)?;
    // A packed batch's offsets, on the device for the kernel's `cu`.
    let cu = match offsets {
        Some(off) => Some(dev.upload_words(OP, off)?),
        None => None,
    };
    let q_bstride = if d.q_broadcast { 0 } else { nq };
    // Scores are kept in the log2 domain: scaled by hd^-0.5 · log2(e).
    let scale = d.scale() * std::f32::consts::LOG2_E;
    // Every row of every head starts on a 16-byte boundary (cp.async copies 16).
    let strides = [
        lay.ldq, lay.ldkv, lay.ldo, lay.q_col, lay.k_col, lay.v_col, d.head_dim,
    ];
    let per_16_bytes = 16 / dtype.size();
    let tensor_cores = (dtype == DType::BF16 || dev.f32_gemm() == F32Gemm::Tf32x3)
        && d.q_len >= FA2_MIN_QUERIES
        && strides.iter().all(|x| x % per_16_bytes == 0)
        && [a.q, a.k, a.v].iter().all(|b| dev.aligned16(b))
        && dev.aligned16(a.out);
    let args = m::AttentionArgs {
        q: a.q,
        k: a.k,
        v: a.v,
        out: a.out,
        cu: cu.as_deref(),
        nq,
        nk,
        heads: d.heads as u32,
        hd: d.head_dim as u32,
        ldq: index32(OP, "ldq", lay.ldq)?,
        ldkv: index32(OP, "ldkv", lay.ldkv)?,
        ldo: index32(OP, "ldo", lay.ldo)?,
        q_col: index32(OP, "q_col", lay.q_col)?,
        k_col: index32(OP, "k_col", lay.k_col)?,
        v_col: index32(OP, "v_col", lay.v_col)?,
        q_bstride,
        q_varlen: u32::from(d.packing == Packing::Packed),
        scale,
    };
    let heads_batch = (d.heads as u32, d.batch as u32);
    let wgmma = match dev.attention_path() {
        AttentionPath::Fa2 => false,
        AttentionPath::Sm90 => dtype == DType::BF16,
        AttentionPath::Sm90F32 => true,
    };
    if let Some((spec, smem)) = sm90_spec(dtype, d.head_dim).filter(|_| tensor_cores && wgmma) {
        // Persistent: one block an SM (the kernel's shared memory allows no more),
        // each taking work items (query block, head, sequence) ctaid.x, + grid, ...
        let rows = m::attention_bf16_sm90_hd64::ROWS;
        let qblocks = nq.div_ceil(rows);
        let items = qblocks
            .checked_mul(heads_batch.0)
            .and_then(|x| x.checked_mul(heads_batch.1))
            .ok_or_else(|| Error::Input {
                tensor: "q".into(),
                msg: format!(
                    "{qblocks} query blocks × {} heads × {} sequences overflow the kernel's 32-bit work-item count",
                    heads_batch.0, heads_batch.1
                ),
            })?;
        let (q, k, v) = (args.q, args.k, args.v);
        let z = dtype.size();
        let shape = |b: &L::Buf, ld| map_shape(dev.byte_len(b), ld, z);
        let (qs, kvs, vs) = (shape(q, args.ldq), shape(k, args.ldkv), shape(v, args.ldkv));
        let a = m::AttentionSm90Args {
            q,
            k,
            v,
            tmap_q: qs,
            tmap_k: kvs,
            tmap_v: vs,
            tmap_q_tail: qs,
            tmap_k_tail: kvs,
            tmap_v_tail: vs,
            out: args.out,
            cu: args.cu,
            nq,
            nk,
            heads: args.heads,
            hd: args.hd,
            ldq: args.ldq,
            ldkv: args.ldkv,
            ldo: args.ldo,
            q_col: args.q_col,
            k_col: args.k_col,
            v_col: args.v_col,
            q_bstride,
            q_varlen: args.q_varlen,
            scale,
            qblocks,
            items,
            turns: u32::from(dev.sm90_turns()),
        };
        let grid = items.min(dev.sm_count()).max(1);
        return dev.launch(OP, spec, (grid, 1, 1), smem, a);
    }
    // The kernel's shared memory must fit the device (else the exact SIMT path).
    let fits = |&(spec, smem, _): &Fa2| spec.static_smem + smem <= dev.max_smem();
    match fa2_spec(dtype, d.head_dim).filter(|e| tensor_cores && fits(e)) {
        Some((spec, smem, rows)) => dev.launch(
            OP,
            spec,
            (nq.div_ceil(rows), heads_batch.0, heads_batch.1),
            smem,
            args,
        ),
        None => {
            let spec = match dtype {
                DType::F32 => &m::attention_f32::SPEC,
                DType::BF16 => &m::attention_bf16::SPEC,
            };
            let rows = m::attention_f32::ROWS;
            dev.launch(
                OP,
                spec,
                (nq.div_ceil(rows), heads_batch.0, heads_batch.1),
                0,
                args,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fa2_spec, m, sm90_spec, sm90_turns, AttentionPath, SM90_SMEM};
    use crate::element::DType;

    /// Each head dim goes to the tensor-core entry of the least padded head dim at
    /// or above it (none past 128); so400m's 72 runs unpadded in f32.
    #[test]
    fn fa2_entry_by_head_dim() {
        let entry = |dt, hd| fa2_spec(dt, hd).map(|(s, _, _)| s.entry);
        assert_eq!(entry(DType::BF16, 72), Some("attention_bf16_hd80"));
        assert_eq!(entry(DType::F32, 72), Some("attention_f32_hd72"));
        assert_eq!(entry(DType::F32, 8), Some("attention_f32_hd32"));
        assert_eq!(entry(DType::F32, 100), Some("attention_f32_hd128"));
        assert_eq!(entry(DType::BF16, 136), None);
        assert_eq!(entry(DType::F32, 132), None);
        for dt in [DType::BF16, DType::F32] {
            let mut last = 0;
            for hd in 1..=128 {
                let name = entry(dt, hd).unwrap();
                let padded: usize = name.rsplit("_hd").next().unwrap().parse().unwrap();
                assert!(padded >= hd && padded >= last, "{name} for hd {hd}");
                // An entry serves the head dims above the previous entry's, up to its own.
                if padded != last {
                    assert_eq!(hd, last + 1, "{name}");
                }
                last = padded;
            }
        }
        // The f32 tiles fit an A100's 163 KiB of shared memory a block.
        for hd in [32, 64, 72, 80, 96, 128] {
            let (spec, smem, _) = fa2_spec(DType::F32, hd).unwrap();
            assert!(spec.static_smem + smem <= 166_912, "{}", spec.entry);
        }
    }

    const H100: u32 = 232_448;

    #[test]
    fn attention_path_by_capability_and_override() {
        let choose = |cap, smem, env| AttentionPath::choose(cap, smem, env);
        assert_eq!(choose((9, 0), H100, None).unwrap(), AttentionPath::Sm90);
        assert_eq!(choose((8, 0), 166_912, None).unwrap(), AttentionPath::Fa2);
        assert_eq!(choose((9, 1), H100, None).unwrap(), AttentionPath::Fa2);
        assert_eq!(choose((9, 0), 100_000, None).unwrap(), AttentionPath::Fa2);
        assert_eq!(
            choose((9, 0), H100, Some("fa2")).unwrap(),
            AttentionPath::Fa2
        );
        assert_eq!(
            choose((9, 0), H100, Some(" sm90 ")).unwrap(),
            AttentionPath::Sm90
        );
        assert_eq!(
            choose((9, 0), H100, Some("sm90-f32")).unwrap(),
            AttentionPath::Sm90F32
        );
        for v in ["sm90", "sm90-f32"] {
            let e = choose((8, 0), 166_912, Some(v)).unwrap_err().to_string();
            assert!(
                e.contains(&format!("TESSERA_CUDA_ATTENTION={v} ")) && e.contains("8.0"),
                "{e}"
            );
        }
        let e = choose((9, 0), H100, Some("flash")).unwrap_err().to_string();
        assert!(e.contains("\"flash\""), "{e}");
    }

    #[test]
    fn sm90_turns_by_environment() {
        for on in [
            None,
            Some(""),
            Some("auto"),
            Some(" on "),
            Some("1"),
            Some("true"),
        ] {
            assert!(sm90_turns(on).unwrap(), "{on:?}");
        }
        for off in ["0", "off", " false"] {
            assert!(!sm90_turns(Some(off)).unwrap(), "{off:?}");
        }
        let e = sm90_turns(Some("pingpong")).unwrap_err().to_string();
        assert!(
            e.contains("TESSERA_CUDA_SM90_TURNS") && e.contains("pingpong"),
            "{e}"
        );
    }

    /// The Hopper kernels exist for exactly the head dims the generator writes
    /// (bf16: 64, 72, 80, 128; f32: SigLIP's 64 and 72), each of its own type,
    /// with the same query rows an item; the capability check covers the largest
    /// one's shared memory.
    #[test]
    fn sm90_entries_and_shared_memory() {
        for (dt, want, name) in [
            (
                DType::BF16,
                &[64, 72, 80, 128][..],
                "attention_bf16_sm90_hd",
            ),
            (DType::F32, &[64, 72][..], "attention_f32_sm90_hd"),
        ] {
            let dims: Vec<usize> = (4..=128)
                .step_by(4)
                .filter(|&hd| sm90_spec(dt, hd).is_some())
                .collect();
            assert_eq!(dims, want, "{dt:?}");
            for hd in dims {
                let (spec, smem) = sm90_spec(dt, hd).unwrap();
                assert_eq!(spec.entry, format!("{name}{hd}"));
                assert!(smem + spec.static_smem <= SM90_SMEM, "{}", spec.entry);
            }
        }
        assert_eq!(
            m::attention_f32_sm90_hd72::ROWS,
            m::attention_bf16_sm90_hd64::ROWS
        );
        assert_eq!(SM90_SMEM, m::attention_bf16_sm90_hd128::DYN_SMEM);
    }
}
