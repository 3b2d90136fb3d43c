//! The launch-plan check: every op's CUDA launch code (the `launch*` functions
//! of this module's op files, the ones [`Cuda`](super::Cuda) runs) executed on
//! a [`Launcher`] that launches nothing but writes each launch down — entry,
//! grid, dynamic shared memory, every argument as the kernel takes it, each
//! tensor map as [`tensor_map_args`] encodes it — for several devices (a
//! Hopper, an Ampere, the f32 SIMT setting, a Hopper of three SMs so the
//! persistent kernels loop). tools/emu_check.py (group `plans`) then runs those
//! launches in the PTX emulator on random inputs and checks the outputs against
//! float64 references computed from the op's sizes alone, so a wrong argument
//! in the Rust launch code (k and v swapped, the log2 e factor dropped, a grid
//! one tile short) fails without a GPU. Needs python3 with numpy, as the
//! emulator check does; skipped without it unless `TESSERA_REQUIRE_EMU=1`.

use std::cell::RefCell;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use super::attention::{self, AttentionPath};
use super::launch::{check_launch, tensor_map_args, Arg, KernelSpec, Launcher, Signature};
use super::linear::{self, Sm90Override};
use super::{elementwise, layer_norm, memory, patch_embed, F32Gemm, GemmPath};
use crate::element::DType;
use crate::error::Result;
use crate::ops::{
    Activation, AttentionDims, AttentionLayout, LayerNormDims, LinearDims, MemoryDims, NormKind,
    Packing, PatchEmbedDims, Segments,
};

/// A stand-in device buffer: its name in the plan, its size, and whether it
/// reports a 16-byte aligned address (the emulator's buffers always are; a
/// case may make one look misaligned to take the fallback kernels).
#[derive(Debug)]
struct Named {
    name: String,
    bytes: usize,
    aligned: bool,
}

/// A device as the launch code sees it.
#[derive(Debug, Clone, Copy)]
struct Facts {
    sm_count: u32,
    max_smem: u32,
    gemm: GemmPath,
    f32_gemm: F32Gemm,
    attention: AttentionPath,
    /// Clusters of two CTAs that fit at once (the driver's answer).
    clusters: u32,
    /// `TESSERA_CUDA_SM90_TURNS` (on unless `off`).
    turns: bool,
    /// `TESSERA_CUDA_SM90_TILE_N` / `_CLUSTER`.
    sm90: Sm90Override,
}

/// No environment setting.
const AUTO: Sm90Override = Sm90Override {
    tile_n: None,
    cluster: None,
};

/// An H100 SXM.
const H100: Facts = Facts {
    sm_count: 132,
    max_smem: 232_448,
    gemm: GemmPath::Sm90,
    f32_gemm: F32Gemm::Tf32x3,
    attention: AttentionPath::Sm90,
    clusters: 66,
    turns: true,
    sm90: AUTO,
};

/// An H100 with `TESSERA_CUDA_ATTENTION=sm90-f32`: f32 attention on wgmma too.
const H100_F32_WGMMA: Facts = Facts {
    attention: AttentionPath::Sm90F32,
    ..H100
};

/// An H100 with `TESSERA_CUDA_SM90_TURNS=off`.
const H100_NO_TURNS: Facts = Facts {
    turns: false,
    ..H100
};

/// An H100 with `TESSERA_CUDA_SM90_TILE_N` and `_CLUSTER` set.
const fn h100_forced(tile_n: u32, cluster: u32) -> Facts {
    Facts {
        sm90: Sm90Override {
            tile_n: Some(tile_n),
            cluster: Some(cluster),
        },
        ..H100
    }
}

/// A Hopper of three SMs and no room for clusters: the persistent kernels'
/// blocks take several tiles or items each.
const HOPPER3: Facts = Facts {
    sm_count: 3,
    clusters: 0,
    ..H100
};

/// An A100: the sm_80 kernels.
const A100: Facts = Facts {
    sm_count: 108,
    max_smem: 166_912,
    gemm: GemmPath::Sm80,
    f32_gemm: F32Gemm::Tf32x3,
    attention: AttentionPath::Fa2,
    clusters: 0,
    turns: true,
    sm90: AUTO,
};

/// An A100 with `TESSERA_CUDA_F32_GEMM=simt`.
const A100_SIMT: Facts = Facts {
    f32_gemm: F32Gemm::Simt,
    ..A100
};

/// The recording launcher.
struct Recorder {
    facts: Facts,
    launches: RefCell<Vec<Value>>,
    words: RefCell<Vec<(String, Vec<u32>)>>,
    /// The most bytes asked of each scratch buffer.
    scratch: RefCell<Vec<usize>>,
}

impl Recorder {
    fn new(facts: Facts) -> Self {
        Self {
            facts,
            launches: RefCell::default(),
            words: RefCell::default(),
            scratch: RefCell::default(),
        }
    }
}

impl Launcher for Recorder {
    type Buf = Named;
    type Words = Box<Named>;

    fn sm_count(&self) -> u32 {
        self.facts.sm_count
    }

    fn max_smem(&self) -> u32 {
        self.facts.max_smem
    }

    fn gemm_path(&self) -> GemmPath {
        self.facts.gemm
    }

    fn f32_gemm(&self) -> F32Gemm {
        self.facts.f32_gemm
    }

    fn attention_path(&self) -> AttentionPath {
        self.facts.attention
    }

    fn sm90_turns(&self) -> bool {
        self.facts.turns
    }

    fn sm90_override(&self) -> Sm90Override {
        self.facts.sm90
    }

    fn aligned16(&self, buf: &Named) -> bool {
        buf.aligned
    }

    fn byte_len(&self, buf: &Named) -> usize {
        buf.bytes
    }

    fn upload_words(&self, _op: &str, words: &[u32]) -> Result<Box<Named>> {
        let mut all = self.words.borrow_mut();
        let name = format!("words{}", all.len());
        all.push((name.clone(), words.to_vec()));
        Ok(Box::new(Named {
            name,
            bytes: words.len() * 4,
            aligned: true,
        }))
    }

    fn with_scratch<R, const N: usize>(
        &self,
        bytes: [usize; N],
        f: impl FnOnce([&mut Named; N]) -> Result<R>,
    ) -> Result<R> {
        let mut s = self.scratch.borrow_mut();
        if s.len() < N {
            s.resize(N, 0);
        }
        for (most, &b) in s.iter_mut().zip(&bytes) {
            *most = (*most).max(b);
        }
        drop(s);
        let mut bufs = std::array::from_fn(|i| Named {
            name: format!("scratch{i}"),
            bytes: bytes[i],
            aligned: true,
        });
        f(bufs.each_mut())
    }

    fn max_active_clusters<S: Signature>(&self, _: &KernelSpec<S>, _: u32) -> Result<u32> {
        Ok(self.facts.clusters)
    }

    fn launch<S: Signature>(
        &self,
        op: &'static str,
        spec: &KernelSpec<S>,
        grid: (u32, u32, u32),
        dyn_smem: u32,
        args: S::Args<'_, Named>,
    ) -> Result<()> {
        let what = format!("{op} ({})", spec.entry);
        let Some(checked) = check_launch(op, spec, grid, dyn_smem, self.facts.max_smem, args)?
        else {
            return Ok(());
        };
        let mut out = Vec::new();
        for (i, a) in checked.args.iter().enumerate() {
            out.push(match a {
                Arg::In(b) => json!({ "buf": b.name }),
                Arg::Out(b) => json!({ "buf": b.name }),
                Arg::Null => Value::Null,
                Arg::U32(v) => json!({ "u32": v }),
                Arg::F32(v) => json!({ "f32": v.to_bits() }),
                Arg::TensorMap { .. } => {
                    let Some(&(_, of, shape, boxes)) = checked.maps.iter().find(|m| m.0 == i)
                    else {
                        panic!("{what}: tensor map {i} not checked");
                    };
                    let buf = match &checked.args[of] {
                        Arg::In(b) => &**b,
                        Arg::Out(b) => &**b,
                        _ => panic!("{what}: tensor map of a scalar"),
                    };
                    // The address the driver would get: 16-byte aligned or not.
                    let ptr = if buf.aligned { 0x1000 } else { 0x1008 };
                    let t = tensor_map_args(op, &what, spec.params[i].0, ptr, shape, boxes)?;
                    json!({ "tmap": {
                        "of": buf.name,
                        "elem_bytes": t.dtype.size(),
                        "dims": t.dims,
                        "stride": t.row_stride,
                        "box": t.boxes,
                        "swizzle": if t.swizzle128 { 128 } else { 0 },
                    }})
                }
            });
        }
        self.launches.borrow_mut().push(json!({
            "entry": spec.entry,
            "grid": [grid.0, grid.1, grid.2],
            "dyn_smem": dyn_smem,
            "args": out,
        }));
        Ok(())
    }
}

/// The buffers of one case: name, element type, elements, role (`in`, `out`
/// or `inout`), reported alignment.
#[derive(Default)]
struct Buffers(Vec<(&'static str, DType, usize, &'static str, bool)>);

impl Buffers {
    fn add(&mut self, name: &'static str, dtype: DType, len: usize, role: &'static str) -> Named {
        self.add_aligned(name, dtype, len, role, true)
    }

    fn add_aligned(
        &mut self,
        name: &'static str,
        dtype: DType,
        len: usize,
        role: &'static str,
        aligned: bool,
    ) -> Named {
        self.0.push((name, dtype, len, role, aligned));
        Named {
            name: name.into(),
            bytes: len * dtype.size(),
            aligned,
        }
    }

    fn json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for &(name, dtype, len, role, _) in &self.0 {
            m.insert(
                name.into(),
                json!({ "dtype": dtype.name(), "len": len, "role": role }),
            );
        }
        Value::Object(m)
    }
}

/// One case of the plan: the op's description (what the reference is computed
/// from), its buffers, and what the recorder wrote down. `expect`: the entries
/// the launch code must choose, in order (so a case keeps testing the path it
/// was written for).
fn case(
    name: &str,
    rec: Recorder,
    op: &str,
    dtype: DType,
    dims: Value,
    bufs: &Buffers,
    expect: &[&str],
) -> Value {
    let launches = rec.launches.into_inner();
    let entries: Vec<&str> = launches
        .iter()
        .map(|l| l["entry"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(entries, expect, "{name}: the kernels the launch code chose");
    let words: serde_json::Map<String, Value> = rec
        .words
        .into_inner()
        .into_iter()
        .map(|(n, w)| (n, json!(w)))
        .collect();
    json!({
        "name": name,
        "op": op,
        "dtype": dtype.name(),
        "dims": dims,
        "buffers": bufs.json(),
        "words": words,
        "scratch": rec.scratch.into_inner(),
        "launches": launches,
    })
}

/// Where q, k and v come from in an attention case.
#[derive(Clone, Copy)]
enum Qkv {
    /// One `[rows, 3·H·hd]` projection (self-attention).
    Fused,
    /// q `[rows, H·hd]` and one `[rows, 2·H·hd]` key-value projection.
    QKv,
    /// q, k and v in buffers of their own, `[rows, H·hd]` each.
    Separate,
}

#[allow(clippy::too_many_arguments)]
fn attention_case(
    name: &str,
    facts: Facts,
    dtype: DType,
    qkv: Qkv,
    (batch, heads, head_dim): (usize, usize, usize),
    (q_len, kv_len): (usize, usize),
    packing: Option<(Packing, &[usize])>,
    q_broadcast: bool,
    expect: &[&str],
) -> Value {
    let w = heads * head_dim;
    let segments = packing.map(|(_, lens)| Segments::from_lengths(lens).unwrap());
    let (packing, packed_rows) = match (packing, &segments) {
        (Some((p, _)), Some(s)) => (p, s.total()),
        _ => (Packing::Fixed, 0),
    };
    let (q_len, kv_len) = match &segments {
        Some(s) if packing == Packing::Packed => (s.max_len(), s.max_len()),
        Some(s) => (q_len, s.max_len()),
        None => (q_len, kv_len),
    };
    let layout = match qkv {
        Qkv::Fused => AttentionLayout {
            q_col: 0,
            k_col: w,
            v_col: 2 * w,
            ldq: 3 * w,
            ldkv: 3 * w,
            ldo: w,
        },
        Qkv::QKv => AttentionLayout {
            q_col: 0,
            k_col: 0,
            v_col: w,
            ldq: w,
            ldkv: 2 * w,
            ldo: w,
        },
        Qkv::Separate => AttentionLayout {
            q_col: 0,
            k_col: 0,
            v_col: 0,
            ldq: w,
            ldkv: w,
            ldo: w,
        },
    };
    let d = AttentionDims {
        batch,
        heads,
        head_dim,
        q_len,
        kv_len,
        q_broadcast,
        layout,
        packing,
        packed_rows,
    };
    let rec = Recorder::new(facts);
    let mut bufs = Buffers::default();
    let offsets = segments.as_ref().map(|s| s.offsets());
    match qkv {
        Qkv::Fused => {
            let x = bufs.add("qkv", dtype, d.kv_rows() * 3 * w, "in");
            let mut out = bufs.add("out", dtype, d.out_rows() * w, "out");
            let o = attention::Operands {
                q: &x,
                k: &x,
                v: &x,
                out: &mut out,
            };
            attention::launch(&rec, dtype, o, d, offsets).unwrap();
        }
        Qkv::QKv => {
            let q = bufs.add("q", dtype, d.q_rows() * w, "in");
            let kv = bufs.add("kv", dtype, d.kv_rows() * 2 * w, "in");
            let mut out = bufs.add("out", dtype, d.out_rows() * w, "out");
            let o = attention::Operands {
                q: &q,
                k: &kv,
                v: &kv,
                out: &mut out,
            };
            attention::launch(&rec, dtype, o, d, offsets).unwrap();
        }
        Qkv::Separate => {
            let q = bufs.add("q", dtype, d.q_rows() * w, "in");
            let k = bufs.add("k", dtype, d.kv_rows() * w, "in");
            let v = bufs.add("v", dtype, d.kv_rows() * w, "in");
            let mut out = bufs.add("out", dtype, d.out_rows() * w, "out");
            let o = attention::Operands {
                q: &q,
                k: &k,
                v: &v,
                out: &mut out,
            };
            attention::launch(&rec, dtype, o, d, offsets).unwrap();
        }
    }
    let (q, k, v) = match qkv {
        Qkv::Fused => ("qkv", "qkv", "qkv"),
        Qkv::QKv => ("q", "kv", "kv"),
        Qkv::Separate => ("q", "k", "v"),
    };
    let dims = json!({
        "batch": batch, "heads": heads, "head_dim": head_dim, "q_len": q_len,
        "kv_len": kv_len, "q_broadcast": q_broadcast,
        "packing": format!("{packing:?}"), "offsets": offsets,
        "q": q, "k": k, "v": v, "out": "out",
        "q_col": layout.q_col, "k_col": layout.k_col, "v_col": layout.v_col,
        "ldq": layout.ldq, "ldkv": layout.ldkv, "ldo": layout.ldo,
    });
    case(name, rec, "attention", dtype, dims, &bufs, expect)
}

#[allow(clippy::too_many_arguments)]
fn linear_case(
    name: &str,
    facts: Facts,
    dtype: DType,
    (rows, k, n): (usize, usize, usize),
    gelu: bool,
    bias: bool,
    residual: bool,
    expect: &[&str],
) -> Value {
    let rec = Recorder::new(facts);
    let mut bufs = Buffers::default();
    let x = bufs.add("x", dtype, rows * k, "in");
    let w = bufs.add("weight", dtype, n * k, "in");
    let b = bias.then(|| bufs.add("bias", dtype, n, "in"));
    let r = residual.then(|| bufs.add("residual", dtype, rows * n, "in"));
    let mut out = bufs.add("out", dtype, rows * n, "out");
    let d = LinearDims {
        rows,
        in_features: k,
        out_features: n,
        activation: if gelu {
            Activation::GeluTanh
        } else {
            Activation::None
        },
    };
    let o = linear::Operands {
        x: &x,
        weight: &w,
        bias: b.as_ref(),
        residual: r.as_ref(),
        out: &mut out,
    };
    linear::launch(&rec, dtype, o, d).unwrap();
    let dims = json!({ "rows": rows, "k": k, "n": n, "gelu": gelu });
    case(name, rec, "linear", dtype, dims, &bufs, expect)
}

fn layer_norm_case(
    name: &str,
    dtype: DType,
    (rows, cols): (usize, usize),
    kind: NormKind,
    aligned_out: bool,
    expect: &[&str],
) -> Value {
    let rec = Recorder::new(A100);
    let mut bufs = Buffers::default();
    let x = bufs.add("x", dtype, rows * cols, "in");
    let w = bufs.add("weight", dtype, cols, "in");
    let b = (kind == NormKind::LayerNorm).then(|| bufs.add("bias", dtype, cols, "in"));
    let mut out = bufs.add_aligned("out", dtype, rows * cols, "out", aligned_out);
    let eps = 1e-3;
    let d = LayerNormDims {
        rows,
        cols,
        eps,
        kind,
    };
    let o = layer_norm::Operands {
        x: &x,
        weight: &w,
        bias: b.as_ref(),
        out: &mut out,
    };
    layer_norm::launch(&rec, dtype, o, d).unwrap();
    let dims = json!({ "rows": rows, "cols": cols, "eps": eps, "rms": kind == NormKind::RmsNorm });
    case(name, rec, "layer_norm", dtype, dims, &bufs, expect)
}

fn patch_embed_case(
    name: &str,
    facts: Facts,
    dtype: DType,
    d: PatchEmbedDims,
    expect: &[&str],
) -> Value {
    let rec = Recorder::new(facts);
    let mut bufs = Buffers::default();
    let (b, c, i, p, h) = (d.batch, d.channels, d.image, d.patch, d.hidden);
    let px = bufs.add("pixels", dtype, b * c * i * i, "in");
    let w = bufs.add("weight", dtype, h * c * p * p, "in");
    let bias = bufs.add("bias", dtype, h, "in");
    let pos = bufs.add("position", dtype, d.tokens() * h, "in");
    let mut out = bufs.add("out", dtype, b * d.tokens() * h, "out");
    let o = patch_embed::Operands {
        pixels: &px,
        weight: &w,
        bias: &bias,
        position: &pos,
        out: &mut out,
    };
    patch_embed::launch(&rec, dtype, o, d).unwrap();
    let dims = json!({ "batch": b, "channels": c, "image": i, "patch": p, "hidden": h });
    case(name, rec, "patch_embed", dtype, dims, &bufs, expect)
}

fn memory_cases(dtype: DType, d: MemoryDims, expect_read: &[&str]) -> [Value; 2] {
    let (b, n, e, m, h) = (d.batch, d.tokens, d.experts, d.slots, d.hidden);
    let dims = json!({ "batch": b, "tokens": n, "experts": e, "slots": m, "hidden": h });
    let rec = Recorder::new(A100);
    let mut bufs = Buffers::default();
    let hb = bufs.add("h", dtype, b * n * h, "in");
    let bank = bufs.add("bank", dtype, b * e * m * h, "in");
    let rw = bufs.add("router_weight", dtype, e * h, "in");
    let rb = bufs.add("router_bias", dtype, e, "in");
    let mut joint = bufs.add("joint", dtype, b * (m + n) * h, "out");
    let mut gate = bufs.add("gate", DType::F32, b * e, "out");
    let o = memory::ReadOperands {
        h: &hb,
        bank: &bank,
        router_weight: &rw,
        router_bias: &rb,
        joint: &mut joint,
        gate: &mut gate,
    };
    memory::launch_read(&rec, dtype, o, d).unwrap();
    let name = format!("memory_read {dtype} {d:?}");
    let read = case(
        &name,
        rec,
        "memory_read",
        dtype,
        dims.clone(),
        &bufs,
        expect_read,
    );

    let rec = Recorder::new(A100);
    let mut bufs = Buffers::default();
    let mut bank = bufs.add("bank", dtype, b * e * m * h, "inout");
    let gate = bufs.add("gate", DType::F32, b * e, "in");
    let ob = bufs.add("o", dtype, b * (m + n) * h, "in");
    let res = bufs.add("residual", dtype, b * n * h, "in");
    let mut out = bufs.add("out", dtype, b * n * h, "out");
    let o = memory::WriteOperands {
        bank: &mut bank,
        gate: &gate,
        o: &ob,
        residual: &res,
        out: &mut out,
    };
    memory::launch_write(&rec, dtype, o, d).unwrap();
    let name = format!("memory_write {dtype} {d:?}");
    let entry = format!("memory_write_{dtype}");
    let write = case(&name, rec, "memory_write", dtype, dims, &bufs, &[&entry]);
    [read, write]
}

fn elementwise_cases() -> Vec<Value> {
    let mut out = Vec::new();
    for (dtype, len) in [(DType::F32, 1000), (DType::BF16, 3)] {
        let rec = Recorder::new(A100);
        let mut bufs = Buffers::default();
        let a = bufs.add("a", dtype, len, "in");
        let b = bufs.add("b", dtype, len, "in");
        let mut o = bufs.add("out", dtype, len, "out");
        elementwise::launch_add(&rec, dtype, &a, &b, &mut o, len).unwrap();
        let entry = format!("add_{dtype}");
        let name = format!("add {dtype} {len}");
        out.push(case(
            &name,
            rec,
            "add",
            dtype,
            json!({ "len": len }),
            &bufs,
            &[&entry],
        ));
    }
    for (from, to, len) in [
        (DType::F32, DType::BF16, 300),
        (DType::BF16, DType::F32, 17),
    ] {
        let rec = Recorder::new(A100);
        let mut bufs = Buffers::default();
        let x = bufs.add("x", from, len, "in");
        let mut o = bufs.add("out", to, len, "out");
        elementwise::launch_cast(&rec, from, to, &x, &mut o, len).unwrap();
        let entry = format!("cast_{from}_{to}");
        let name = format!("cast {from} to {to} {len}");
        let dims = json!({ "len": len, "to": to.name() });
        out.push(case(&name, rec, "cast", from, dims, &bufs, &[&entry]));
    }
    out
}

/// Every case of the plan.
fn plan() -> Vec<Value> {
    use DType::{BF16, F32};
    let mut cases = elementwise_cases();
    // Attention: the Hopper kernels (bf16 and f32, fixed and packed; persistent
    // over 3 SMs), FlashAttention-2 (padded head dims; f32 in 3xTF32), the
    // SIMT kernels (the pooling probe's one shared query over a packed batch).
    let packed: &[usize] = &[20, 90, 33];
    cases.extend([
        attention_case(
            "attention bf16 sm90 fused",
            H100,
            BF16,
            Qkv::Fused,
            (2, 2, 64),
            (70, 70),
            None,
            false,
            &["attention_bf16_sm90_hd64"],
        ),
        attention_case(
            "attention bf16 sm90 packed, 3 SMs",
            HOPPER3,
            BF16,
            Qkv::Fused,
            (3, 2, 72),
            (0, 0),
            Some((Packing::Packed, packed)),
            false,
            &["attention_bf16_sm90_hd72"],
        ),
        attention_case(
            "attention bf16 sm90 hd 72, q k v apart, 3 SMs",
            HOPPER3,
            BF16,
            Qkv::Separate,
            (2, 2, 72),
            (30, 45),
            None,
            false,
            &["attention_bf16_sm90_hd72"],
        ),
        attention_case(
            "attention f32 sm90 q/kv, 3 SMs",
            Facts {
                attention: AttentionPath::Sm90F32,
                ..HOPPER3
            },
            F32,
            Qkv::QKv,
            (2, 1, 64),
            (20, 45),
            None,
            false,
            &["attention_f32_sm90_hd64"],
        ),
        attention_case(
            "attention f32 sm90 hd 72 packed",
            H100_F32_WGMMA,
            F32,
            Qkv::Fused,
            (3, 1, 72),
            (0, 0),
            Some((Packing::Packed, packed)),
            false,
            &["attention_f32_sm90_hd72"],
        ),
        // By default a Hopper runs f32 attention on the mma.sync kernel.
        attention_case(
            "attention f32 on an H100 by default",
            H100,
            F32,
            Qkv::Fused,
            (2, 2, 72),
            (40, 40),
            None,
            false,
            &["attention_f32_hd72"],
        ),
        attention_case(
            "attention bf16 sm90 hd 80 without turns",
            H100_NO_TURNS,
            BF16,
            Qkv::QKv,
            (1, 3, 80),
            (50, 140),
            None,
            false,
            &["attention_bf16_sm90_hd80"],
        ),
        attention_case(
            "attention bf16 sm90 hd 128 packed keys, 3 SMs",
            HOPPER3,
            BF16,
            Qkv::QKv,
            (3, 1, 128),
            (17, 0),
            Some((Packing::PackedKeys, packed)),
            false,
            &["attention_bf16_sm90_hd128"],
        ),
        attention_case(
            "attention bf16 fa2 fused hd 40",
            A100,
            BF16,
            Qkv::Fused,
            (2, 2, 40),
            (37, 37),
            None,
            false,
            &["attention_bf16_hd48"],
        ),
        attention_case(
            "attention bf16 fa2 packed",
            A100,
            BF16,
            Qkv::Fused,
            (3, 1, 64),
            (0, 0),
            Some((Packing::Packed, packed)),
            false,
            &["attention_bf16_hd64"],
        ),
        attention_case(
            "attention f32 fa2 hd 32, q k v apart",
            A100,
            F32,
            Qkv::Separate,
            (2, 2, 32),
            (20, 50),
            None,
            false,
            &["attention_f32_hd32"],
        ),
        attention_case(
            "attention f32 simt probe over packed keys",
            A100_SIMT,
            F32,
            Qkv::QKv,
            (3, 2, 16),
            (1, 0),
            Some((Packing::PackedKeys, packed)),
            true,
            &["attention_f32"],
        ),
        attention_case(
            "attention bf16 one query on hopper",
            H100,
            BF16,
            Qkv::QKv,
            (2, 2, 72),
            (1, 40),
            None,
            true,
            &["attention_bf16"],
        ),
    ]);
    // Linear: the wgmma GEMMs (clustered on an H100, persistent over 3 SMs),
    // split-K where the grid is tiny, the sm_80 GEMMs, and the edge-safe ones.
    let epi = |g, b, r| (g, b, r);
    for (name, facts, dtype, shape, (gelu, bias, res), expect) in [
        (
            // Pairs only over K ≥ 2048 by default (linear::sm90_variant); forced here.
            "linear bf16 sm90 forced 192 in pairs",
            h100_forced(192, 2),
            BF16,
            (300, 200, 520),
            epi(true, true, false),
            &["linear_bf16_sm90_n192_c2"][..],
        ),
        (
            "linear bf16 sm90 forced 256 in pairs",
            h100_forced(256, 2),
            BF16,
            (300, 200, 520),
            epi(false, false, true),
            &["linear_bf16_sm90_c2"],
        ),
        (
            "linear bf16 sm90 forced 192 alone",
            h100_forced(192, 1),
            BF16,
            (130, 64, 400),
            epi(true, true, true),
            &["linear_bf16_sm90_n192"],
        ),
        (
            "linear bf16 sm90 3 SMs",
            HOPPER3,
            BF16,
            (520, 200, 256),
            epi(false, true, true),
            &["linear_bf16_sm90"],
        ),
        (
            // The ping-pong kernels only where asked for (not yet timed on a GPU):
            // 15 tiles on 3 SMs, 3 and 2 a warpgroup.
            "linear bf16 sm90 ping-pong, 3 SMs",
            Facts {
                sm90: Sm90Override {
                    tile_n: Some(128),
                    cluster: None,
                },
                ..HOPPER3
            },
            BF16,
            (300, 200, 520),
            epi(true, true, true),
            &["linear_bf16_sm90_pp"],
        ),
        (
            "linear bf16 sm90 ping-pong in pairs",
            h100_forced(128, 2),
            BF16,
            (300, 200, 520),
            epi(false, false, true),
            &["linear_bf16_sm90_pp_c2"],
        ),
        (
            "linear bf16 split-K on hopper",
            H100,
            BF16,
            (5, 320, 40),
            epi(false, true, true),
            &["linear_bf16_splitk", "linear_splitk_reduce_bf16"],
        ),
        (
            "linear f32 sm90",
            HOPPER3,
            F32,
            (129, 100, 392),
            epi(true, false, true),
            &["linear_f32_sm90"],
        ),
        (
            "linear bf16 sm80",
            A100,
            BF16,
            (130, 72, 136),
            epi(false, true, false),
            &["linear_bf16"],
        ),
        (
            "linear f32 3xtf32",
            A100,
            F32,
            (130, 76, 132),
            epi(true, true, true),
            &["linear_f32_3xtf32"],
        ),
        (
            "linear f32 3xtf32 split-K",
            A100,
            F32,
            (5, 520, 8),
            epi(false, true, false),
            &["linear_f32_3xtf32_splitk", "linear_splitk_reduce_f32"],
        ),
        (
            "linear bf16 any",
            A100,
            BF16,
            (33, 17, 5),
            epi(true, true, true),
            &["linear_bf16_any"],
        ),
        (
            "linear f32 simt",
            A100_SIMT,
            F32,
            (17, 64, 65),
            epi(false, false, false),
            &["linear_f32"],
        ),
    ] {
        cases.push(linear_case(
            name, facts, dtype, shape, gelu, bias, res, expect,
        ));
    }
    cases.extend([
        layer_norm_case(
            "layer_norm f32 rows",
            F32,
            (7, 1000),
            NormKind::LayerNorm,
            true,
            &["layer_norm_rows_f32"],
        ),
        layer_norm_case(
            "rms_norm bf16 rows",
            BF16,
            (9, 40),
            NormKind::RmsNorm,
            true,
            &["layer_norm_rows_bf16"],
        ),
        layer_norm_case(
            "layer_norm bf16 misaligned out",
            BF16,
            (3, 64),
            NormKind::LayerNorm,
            false,
            &["layer_norm_bf16"],
        ),
        layer_norm_case(
            "layer_norm f32 odd width",
            F32,
            (5, 17),
            NormKind::LayerNorm,
            true,
            &["layer_norm_f32"],
        ),
    ]);
    // (name, device, dtype, (B, C, I, P, D), the kernels chosen). Where the
    // linear layers multiply on tensor cores and D is a multiple of 16 bytes:
    // patchify, then the GEMM with the position embedding as a residual
    // repeating every N rows (sm_80: no split-K). Patch 14: K = 588 padded to
    // 592 in bf16, the weight too (a second patchify); f32 needs no padding.
    // hopper3: 400 rows of 100 tokens over 3 SMs, so the position rows wrap
    // inside the tiles and blocks loop. Otherwise the fused kernel.
    let pe_cases: [(&str, Facts, DType, _, &[&str]); 9] = [
        ("f32", A100, F32, (2, 3, 30, 8, 17), &["patch_embed_f32"]),
        (
            "bf16 odd width",
            A100,
            BF16,
            (1, 2, 45, 14, 20),
            &["patch_embed_bf16"],
        ),
        (
            "f32 simt",
            A100_SIMT,
            F32,
            (2, 3, 30, 14, 20),
            &["patch_embed_f32"],
        ),
        (
            "f32 hopper odd width",
            H100,
            F32,
            (2, 3, 30, 8, 17),
            &["patch_embed_f32"],
        ),
        (
            "bf16 sm80 patch 14",
            A100,
            BF16,
            (3, 3, 45, 14, 24),
            &["patchify_bf16", "patchify_bf16", "linear_bf16"],
        ),
        (
            "f32 sm80",
            A100,
            F32,
            (2, 3, 30, 14, 20),
            &["patchify_f32", "linear_f32_3xtf32"],
        ),
        (
            "bf16 hopper patch 14",
            H100,
            BF16,
            (2, 3, 45, 14, 24),
            &["patchify_bf16", "patchify_bf16", "linear_bf16_sm90_n192"],
        ),
        (
            "bf16 hopper3",
            HOPPER3,
            BF16,
            (4, 3, 80, 8, 136),
            &["patchify_bf16", "linear_bf16_sm90_n192"],
        ),
        (
            "f32 hopper",
            H100,
            F32,
            (2, 3, 30, 14, 20),
            &["patchify_f32", "linear_f32_sm90"],
        ),
    ];
    for (name, facts, dtype, (batch, channels, image, patch, hidden), expect) in pe_cases {
        let d = PatchEmbedDims {
            batch,
            channels,
            image,
            patch,
            hidden,
        };
        cases.push(patch_embed_case(
            &format!("patch_embed {name}"),
            facts,
            dtype,
            d,
            expect,
        ));
    }
    let md = |batch, tokens, experts, slots, hidden| MemoryDims {
        batch,
        tokens,
        experts,
        slots,
        hidden,
    };
    cases.extend(memory_cases(
        F32,
        md(2, 75, 4, 3, 40),
        &[
            "memory_read_gate_part_f32",
            "memory_read_gate_finish_f32",
            "memory_read_mix_f32",
        ],
    ));
    cases.extend(memory_cases(
        BF16,
        md(2, 5, 4, 8, 17),
        &["memory_read_gate_bf16", "memory_read_mix_bf16"],
    ));
    cases
}

#[path = "../../tests/it/common/python.rs"]
mod python;

/// The launch code's plans, run in the emulator against float64 references.
#[test]
fn launch_plans_compute_the_ops() {
    let cases = plan();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(pythonpath) = python::emulator_python(root) else {
        return;
    };
    let file = std::env::temp_dir().join(format!(
        "tessera-launch-plans-{}-{:?}.json",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&file, serde_json::to_vec_pretty(&cases).unwrap()).unwrap();
    let out = Command::new("python3")
        .arg(root.join("tools/emu_check.py"))
        .arg("plans")
        .arg(&file)
        .env("PYTHONPATH", &pythonpath)
        .output()
        .expect("python3 runs");
    let _ = std::fs::remove_file(&file);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "emu_check.py plans failed:\n{text}");
    eprintln!("{text}");
    let checked = text.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(
        checked >= cases.len(),
        "{checked} checks passed for {} cases:\n{text}",
        cases.len()
    );
}
