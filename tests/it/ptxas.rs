//! Assemble every hand-written kernel (kernels/*.ptx) with ptxas for sm_80 and
//! sm_90; fail on any error or register spill, and print registers per kernel.
//!
//! ptxas is found via `TESSERA_PTXAS`, else `<repo>/.cache/nvcc/nvidia/cuda_nvcc/bin/ptxas`
//! (`pip install --no-deps --target .cache/nvcc nvidia-cuda-nvcc-cu12`), else `PATH`.
//! Without ptxas the test prints SKIPPED and passes, unless TESSERA_REQUIRE_PTXAS=1.

/// `SKIPPED:` notice on the real stderr (libtest would capture `eprintln!`).
macro_rules! skip {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIPPED: {}", format!($($t)*));
    }};
}

use std::path::{Path, PathBuf};
use std::process::Command;

fn find_ptxas() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TESSERA_PTXAS") {
        if !p.is_empty() {
            return Some(PathBuf::from(p));
        }
    }
    let local =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/nvcc/nvidia/cuda_nvcc/bin/ptxas");
    if local.exists() {
        return Some(local);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("ptxas"))
        .find(|p| p.exists())
}

/// The architectures a module is assembled for: its `.target` when that is an
/// architecture-specific one (sm_90a: wgmma, TMA), else sm_80 and sm_90.
fn archs(ptx: &Path) -> Vec<&'static str> {
    let text = std::fs::read_to_string(ptx).unwrap_or_else(|e| panic!("{}: {e}", ptx.display()));
    if text.contains("\n.target sm_90a\n") {
        vec!["sm_90a"]
    } else {
        vec!["sm_80", "sm_90"]
    }
}

fn kernels() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable kernels dir").path())
        .filter(|p| p.extension().is_some_and(|x| x == "ptx"))
        .collect();
    v.sort();
    v
}

/// Per entry: (name, registers, spill store bytes, spill load bytes, stack bytes,
/// static shared bytes).
fn parse(info: &str) -> Vec<(String, u32, u64, u64, u64, u64)> {
    let mut out = Vec::new();
    let mut name = String::new();
    let (mut stack, mut st, mut ld) = (0, 0, 0);
    for line in info.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + "Compiling entry function '".len()..];
            name = rest.split('\'').next().unwrap_or("").to_string();
        } else if line.contains("bytes spill stores") {
            let nums: Vec<u64> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .filter_map(|s| s.parse().ok())
                .collect();
            // "N bytes stack frame, N bytes spill stores, N bytes spill loads"
            if nums.len() >= 3 {
                stack = nums[0];
                st = nums[1];
                ld = nums[2];
            }
        } else if let Some(i) = line.find("Used ") {
            let regs = line[i + 5..]
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            // "…, used 1 barriers, 38016 bytes smem, 444 bytes cmem[0]" (no smem: 0).
            let smem = line
                .split(',')
                .find_map(|f| f.trim().strip_suffix(" bytes smem")?.parse().ok())
                .unwrap_or(0);
            out.push((name.clone(), regs, st, ld, stack, smem));
        }
    }
    out
}

/// (entry, static shared bytes) of every row of the generated manifest's `ALL`
/// (src/cuda/manifest.rs: `(&MODULE, "entry", threads, params, static_smem),`).
fn manifest_static_smem() -> Vec<(String, u64)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cuda/manifest.rs");
    let text = std::fs::read_to_string(&path).unwrap();
    let all = text
        .split("pub(super) const ALL")
        .nth(1)
        .expect("manifest.rs has ALL");
    let rows: Vec<(String, u64)> = all
        .lines()
        .filter_map(|l| {
            let row = l.trim().strip_prefix("(&")?.strip_suffix("),")?;
            let fields: Vec<&str> = row.split(", ").collect();
            let [_, entry, _, _, smem] = fields[..] else {
                return None;
            };
            Some((entry.trim_matches('"').to_string(), smem.parse().ok()?))
        })
        .collect();
    assert!(rows.len() >= 20, "manifest rows: {rows:?}");
    rows
}

#[test]
fn kernels_assemble_without_spills() {
    let Some(ptxas) = find_ptxas() else {
        if crate::common::required("TESSERA_REQUIRE_PTXAS") {
            panic!("TESSERA_REQUIRE_PTXAS=1 but no ptxas found (TESSERA_PTXAS, .cache/nvcc, PATH)");
        }
        skip!(
            "ptxas not found; pip install --no-deps --target .cache/nvcc \
             nvidia-cuda-nvcc-cu12, or set TESSERA_PTXAS"
        );
        return;
    };
    let files = kernels();
    assert!(!files.is_empty(), "no kernels/*.ptx");
    let manifest = manifest_static_smem();
    let tmp = std::env::temp_dir().join(format!("tessera-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut failures = Vec::new();
    let mut entries = 0;
    for f in &files {
        for arch in archs(f) {
            let cubin = tmp.join(format!(
                "{}-{arch}.cubin",
                f.file_stem().unwrap().to_string_lossy()
            ));
            let out = Command::new(&ptxas)
                .arg(format!("-arch={arch}"))
                .arg("-v")
                .arg(f)
                .arg("-o")
                .arg(&cubin)
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", ptxas.display()));
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let name = f.file_name().unwrap().to_string_lossy();
            if !out.status.success() || text.contains("error") {
                failures.push(format!("{name} [{arch}]: ptxas failed:\n{text}"));
                continue;
            }
            for (entry, regs, st, ld, stack, smem) in parse(&text) {
                entries += 1;
                // The host sizes launches from the manifest's static bytes (the
                // 48 KiB opt-in rule): ptxas must count the same.
                match manifest.iter().find(|(e, _)| *e == entry) {
                    Some(&(_, want)) if want == smem => {}
                    Some(&(_, want)) => failures.push(format!(
                        "{name} [{arch}] {entry}: ptxas counts {smem} bytes of static shared \
                         memory, the manifest {want}"
                    )),
                    None => failures.push(format!("{name} [{arch}] {entry}: not in the manifest")),
                }
                println!(
                    "{arch} {name:>16} {entry:<24} {regs:>3} registers, \
                     {st} B spill stores, {ld} B spill loads, {stack} B stack"
                );
                if st > 0 || ld > 0 {
                    failures.push(format!(
                        "{name} [{arch}] {entry}: spills ({st} B stores, {ld} B loads)"
                    ));
                }
            }
            if text.contains("warning") {
                println!("{name} [{arch}] warnings:\n{text}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(entries > 0, "ptxas reported no entry functions");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// kernels/*.ptx are generated by tools/gen_ptx.py and committed: they must match
/// what the generator emits now (skipped when python3 is missing).
#[test]
fn kernels_match_generator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = match Command::new("python3")
        .arg(root.join("tools/gen_ptx.py"))
        .arg("--check")
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            if crate::common::required("TESSERA_REQUIRE_PTXAS")
                || crate::common::required("TESSERA_REQUIRE_EMU")
            {
                panic!("TESSERA_REQUIRE_PTXAS/EMU set but python3 is not available ({e})");
            }
            skip!("python3 not available ({e})");
            return;
        }
    };
    assert!(
        out.status.success(),
        "kernels/*.ptx are stale; run python3 tools/gen_ptx.py\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn find_nvdisasm() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TESSERA_NVDISASM") {
        if !p.is_empty() {
            return Some(PathBuf::from(p));
        }
    }
    // pip install --no-deps --target .cache/nvdisasm nvidia-cuda-nvdisasm
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/nvdisasm/nvidia");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            for sub in ["bin/nvdisasm", "cuda_nvdisasm/bin/nvdisasm"] {
                let p = e.path().join(sub);
                if p.exists() {
                    return Some(p);
                }
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("nvdisasm"))
        .find(|p| p.exists())
}

/// What the clustered GEMMs (`linear_bf16_sm90*_c2`) need besides their twins'.
const CLUSTER_SASS: &[&str] = &[
    "UTMALDG.2D.MULTICAST",
    "SYNCS.ARRIVE.TRANS64.RED",
    "UCGABAR_ARV",
    "UCGABAR_WAIT",
];

/// The SASS instructions each tensor-core kernel must contain: HMMA (mma.sync on
/// tensor cores; tf32 for the 3xTF32 f32 GEMM and attention), LDSM (ldmatrix feeding them),
/// LDGSTS (cp.async: the pipelined kernels' loads bypass registers); on Hopper HGMMA (wgmma) fed by UTMALDG (TMA)
/// and synchronised by SYNCS (mbarrier) instructions, the output written by
/// UTMASTG (TMA stores); the clustered ones (`_c2`) with the W tile multicast
/// (UTMALDG.2D.MULTICAST), stages released on the peer's mbarrier
/// (SYNCS.ARRIVE.TRANS64.RED) and cluster barriers (UCGABAR): [`CLUSTER_SASS`].
fn required_sass(entry: &str) -> &'static [&'static str] {
    // A clustered variant needs its unclustered twin's instructions (and
    // CLUSTER_SASS).
    let entry = entry.strip_suffix("_c2").unwrap_or(entry);
    if entry == "linear_bf16_sm90" {
        &[
            "HGMMA.64x256x16.F32.BF16",
            "UTMALDG.2D",
            "UTMASTG.2D",
            "SYNCS.PHASECHK",
        ]
    } else if entry == "linear_bf16_sm90_pp" {
        // Ping-pong: a warpgroup's 128 × 128 tile as two m64n128k16 row blocks.
        &[
            "HGMMA.64x128x16.F32.BF16",
            "UTMALDG.2D",
            "UTMASTG.2D",
            "SYNCS.PHASECHK",
        ]
    } else if entry == "linear_bf16_sm90_n192" {
        &[
            "HGMMA.64x192x16.F32.BF16",
            "UTMALDG.2D",
            "UTMASTG.2D",
            "SYNCS.PHASECHK",
        ]
    } else if entry == "linear_f32_sm90" {
        // 3xTF32 on wgmma: A from registers (LDSM from the TMA-loaded x tile),
        // W's parts from shared memory; the converters' 16-byte shared loads
        // and stores.
        &[
            "HGMMA.64x192x8.F32.TF32",
            "LDSM",
            "UTMALDG.2D",
            "UTMASTG.2D",
            "SYNCS.PHASECHK",
            "LDS.128",
            "STS.128",
        ]
    } else if entry.starts_with("attention_bf16_sm90_hd") {
        // S = Q·Kᵀ m64n128k16 (shared operands), P·V with P from registers;
        // the warpgroups' turns on the tensor cores (FlashAttention-3's
        // scheduler barriers: bar.sync on its own, bar.arrive on the other's).
        &[
            "HGMMA.64x128x16.F32.BF16",
            "UTMALDG.2D",
            "SYNCS.PHASECHK",
            "BAR.ARV",
        ]
    } else if entry.starts_with("attention_f32_sm90_hd") {
        // 3xTF32: S = Q·Kᵀ m64n64k8 with Q's parts from registers (LDSM from
        // the TMA-loaded Q tile), K's from shared memory; the converters'
        // 16-byte loads and stores of K's and Vᵀ's parts.
        &[
            "HGMMA.64x64x8.F32.TF32",
            "LDSM",
            "UTMALDG.2D",
            "SYNCS.PHASECHK",
            "LDS.128",
            "STS.128",
        ]
    } else if entry == "linear_f32_3xtf32" {
        // 3xTF32: three m16n8k8 tf32 mma per product; the warp-wide non-finite
        // check that picks the exact split.
        &["HMMA.1688.F32.TF32", "LDSM", "LDGSTS", "VOTE.ANY"]
    } else if entry.starts_with("attention_f32_hd") {
        // 3xTF32 on the FlashAttention-2 kernel; the block-wide non-finite check
        // of each K/V tile (a barrier with an OR reduction) that picks the exact
        // split.
        &["HMMA.1688.F32.TF32", "LDSM", "LDGSTS", "BAR.RED.OR"]
    } else if entry == "linear_bf16" || entry.starts_with("attention_bf16_hd") {
        &["HMMA.16816.F32.BF16", "LDSM", "LDGSTS"]
    } else if entry == "linear_bf16_any" || entry == "patch_embed_bf16" {
        &["HMMA.16816.F32.BF16", "LDSM"]
    } else {
        &[]
    }
}

/// `ex2` (MUFU.EX2) instructions between a wgmma wait that leaves one group in
/// flight (`WARPGROUP.DEPBAR.LE gsb0, 0x1`) and the next full wait: the softmax
/// that runs while the previous tile's P·V is on the tensor cores in
/// `attention_*_sm90_hd*`. ptxas hoists a `wgmma.wait_group` to the start of
/// its basic block; written after the softmax in the same block, the full wait
/// lands before it and this count is 0.
fn softmax_under_pv(body: &str) -> usize {
    let mut count = 0;
    let mut best = 0;
    let mut open = false;
    for line in body.lines() {
        if line.contains("WARPGROUP.DEPBAR.LE gsb0, 0x1") {
            open = true;
            count = 0;
        } else if line.contains("WARPGROUP.DEPBAR.LE gsb0, 0x0") {
            if open {
                best = best.max(count);
            }
            open = false;
        } else if open && line.contains("MUFU.EX2") {
            count += 1;
        }
    }
    best
}

/// The GEMM entries whose fused epilogue (bias, residual / position loads) must
/// keep its global loads in flight together, and the most serial round trips
/// [`epilogue_round_trips`] may count in them. Each used to wait one round trip
/// per element or pair (64 a tile in `linear_bf16_sm90`, 32 in
/// `patch_embed_bf16`): ptxas may not move a load above an earlier store to a
/// pointer it cannot tell apart, and sinks loads it may move. 8 an epilogue
/// copy: the Hopper GEMMs write theirs twice, with and without a residual
/// (behind one uniform branch), and the estimate reads both in layout order.
fn epilogue_round_trip_limit(entry: &str) -> Option<usize> {
    let copies = if entry.starts_with("linear_bf16_sm90") || entry == "linear_f32_sm90" {
        2
    } else if matches!(
        entry,
        "linear_bf16" | "linear_f32_3xtf32" | "patch_embed_bf16"
    ) {
        1
    } else {
        return None;
    };
    Some(8 * copies)
}

/// Serial global round trips in the epilogue (the code after the last tensor-core
/// instruction), read from the SASS in program order: loads (LDG) issue into an
/// outstanding set; the first instruction reading an outstanding register waits
/// for the set (scoreboards: counted as one round trip), which then empties. An
/// estimate (branches are read in layout order), enough to tell 4 from 64.
fn epilogue_round_trips(body: &str) -> usize {
    let ins: Vec<&str> = body
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("*/")?;
            let text = rest.split(';').next()?.trim();
            (!text.is_empty()).then_some(text)
        })
        .collect();
    let start = ins
        .iter()
        .rposition(|t| t.contains("MMA"))
        .map_or(0, |i| i + 1);
    let regs = |s: &str| -> Vec<String> {
        s.split(|c: char| !(c.is_ascii_alphanumeric()))
            .filter(|w| {
                w.len() > 1 && w.starts_with('R') && w[1..].bytes().all(|b| b.is_ascii_digit())
            })
            .map(str::to_string)
            .collect()
    };
    let mut outstanding: Vec<String> = Vec::new();
    let mut trips = 0;
    for t in &ins[start..] {
        let t = match t.strip_prefix('@') {
            Some(rest) => rest.split_once(' ').map_or("", |(_, r)| r.trim_start()),
            None => t,
        };
        let (op, args) = t.split_once(' ').unwrap_or((t, ""));
        let r = regs(args);
        let (dst, srcs) = if op.starts_with("LDG") || !op.starts_with("ST") {
            (r.first().cloned(), r.get(1..).unwrap_or(&[]).to_vec())
        } else {
            (None, r)
        };
        if srcs.iter().any(|s| outstanding.contains(s)) {
            trips += 1;
            outstanding.clear();
        }
        if op.starts_with("LDG") {
            outstanding.extend(dst);
        }
    }
    trips
}

/// Per-entry SASS text of a cubin's disassembly (`.text.<entry>` sections).
fn sass_by_entry(sass: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in sass.lines() {
        if let Some(i) = line.find(".text.") {
            let name = line[i + 6..]
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("")
                .to_string();
            if !name.is_empty() && out.last().is_none_or(|(n, _)| *n != name) {
                out.push((name, String::new()));
                continue;
            }
        }
        if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// SASS check, per entry: the tensor-core kernels really use tensor cores
/// (HMMA.16816.F32.BF16 fed by LDSM) and the pipelined ones cp.async (LDGSTS); no
/// kernel touches local memory (LDL/STL). Needs ptxas and nvdisasm; skipped (with
/// a notice) without either unless TESSERA_REQUIRE_PTXAS=1.
#[test]
fn sass_uses_tensor_cores_and_no_local_memory() {
    let (Some(ptxas), Some(nvdisasm)) = (find_ptxas(), find_nvdisasm()) else {
        if crate::common::required("TESSERA_REQUIRE_PTXAS") {
            panic!(
                "TESSERA_REQUIRE_PTXAS=1 but ptxas or nvdisasm is missing (pip install --no-deps \
                 --target .cache/nvdisasm nvidia-cuda-nvdisasm, or set TESSERA_NVDISASM)"
            );
        }
        skip!("ptxas or nvdisasm not found (TESSERA_NVDISASM, .cache/nvdisasm, PATH)");
        return;
    };
    let tmp = std::env::temp_dir().join(format!("tessera-sass-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut checked_epilogues = 0;
    for f in kernels() {
        for arch in archs(&f) {
            let stem = f.file_stem().unwrap().to_string_lossy().to_string();
            let cubin = tmp.join(format!("{stem}-{arch}.cubin"));
            let ok = Command::new(&ptxas)
                .arg(format!("-arch={arch}"))
                .arg(&f)
                .arg("-o")
                .arg(&cubin)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "ptxas failed on {}", f.display());
            let out = Command::new(&nvdisasm)
                .arg("-c")
                .arg(&cubin)
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", nvdisasm.display()));
            let sass = String::from_utf8_lossy(&out.stdout);
            let entries = sass_by_entry(&sass);
            assert!(
                !entries.is_empty(),
                "{stem} [{arch}]: no .text sections in the disassembly"
            );
            for (entry, body) in entries {
                let count = |op: &str| body.matches(op).count();
                let local = count("LDL") + count("STL");
                println!(
                    "{arch} {entry:>22}: {} HMMA, {} LDSM, {} LDGSTS, {} HGMMA, {} UTMALDG, \
                     {local} LDL/STL",
                    count("HMMA."),
                    count("LDSM"),
                    count("LDGSTS"),
                    count("HGMMA"),
                    count("UTMALDG"),
                );
                if local > 0 {
                    failures.push(format!("{entry} [{arch}]: local memory (LDL/STL) in SASS"));
                }
                if let Some(limit) = epilogue_round_trip_limit(&entry) {
                    let trips = epilogue_round_trips(&body);
                    println!("{arch} {entry:>22}: ~{trips} serial round trips in the epilogue");
                    if trips > limit {
                        failures.push(format!(
                            "{entry} [{arch}]: ~{trips} serial global round trips in the \
                             epilogue (at most {limit}): its loads no longer go out together"
                        ));
                    }
                    checked_epilogues += 1;
                }
                // Keys a tile × 2 rows / 4 lanes a row: the exponentials a
                // thread takes (plus alpha) between the wgmma waits.
                let softmax = if entry.starts_with("attention_bf16_sm90_hd") {
                    Some(64)
                } else if entry.starts_with("attention_f32_sm90_hd") {
                    Some(32)
                } else {
                    None
                };
                if let Some(least) = softmax {
                    let overlapped = softmax_under_pv(&body);
                    println!("{arch} {entry:>22}: {overlapped} MUFU.EX2 under the P·V in flight");
                    if overlapped < least {
                        failures.push(format!(
                            "{entry} [{arch}]: {overlapped} MUFU.EX2 between the wgmma waits \
                             (at least {least}): the softmax no longer runs under the previous P·V"
                        ));
                    }
                }
                if entry.starts_with("linear_bf16_sm90")
                    || ["linear_f32_sm90", "linear_bf16", "linear_f32_3xtf32"]
                        .contains(&entry.as_str())
                {
                    // GELU behind one uniform branch an epilogue: a branch a pair was
                    // if-converted, and a linear without GELU issued its
                    // instructions predicated off (11 % of the qkv kernel's stall
                    // samples on the H100, 2026-11-25).
                    let predicated = body
                        .lines()
                        .filter(|l| l.contains("MUFU.TANH") && l.contains("@"))
                        .count();
                    if predicated > 0 {
                        failures.push(format!(
                            "{entry} [{arch}]: {predicated} predicated MUFU.TANH: GELU is \
                             issued, predicated off, where the linear has none"
                        ));
                    }
                }
                if entry.starts_with("linear_bf16_sm90") {
                    // The staging buffers are written by stmatrix (one STSM.x4 an
                    // 8 pairs, where 8 STS and their addresses were), and the
                    // residual tile is asked of L2 before the mainloop (CCTL.E.PF2).
                    let sts = body
                        .lines()
                        .filter(|l| l.contains(" STS") && !l.contains("STSM"))
                        .count();
                    let (stsm, pf) = (count("STSM"), count("CCTL.E.PF2"));
                    println!("{arch} {entry:>22}: {stsm} STSM, {sts} STS, {pf} L2 prefetches");
                    if stsm == 0 || sts > 0 || pf == 0 {
                        failures.push(format!(
                            "{entry} [{arch}]: {stsm} STSM, {sts} STS, {pf} CCTL.E.PF2: the \
                             epilogue should stage by stmatrix alone and prefetch the residual"
                        ));
                    }
                }
                if entry.starts_with("linear_bf16_sm90") && entry.ends_with("_c2") {
                    // A release-at-cluster-scope arrive puts MEMBAR.ALL.GPU before
                    // every stage release of the mainloop; only the closing cluster
                    // barrier may have one.
                    let fences = count("MEMBAR.ALL.GPU");
                    println!("{arch} {entry:>22}: {fences} MEMBAR.ALL.GPU");
                    if fences > 1 {
                        failures.push(format!(
                            "{entry} [{arch}]: {fences} MEMBAR.ALL.GPU (at most 1, the closing \
                             cluster barrier's): a stage release fences the whole GPU"
                        ));
                    }
                }
                let cluster: &[&str] = if entry.ends_with("_c2") {
                    CLUSTER_SASS
                } else {
                    &[]
                };
                for op in required_sass(&entry).iter().chain(cluster) {
                    if count(op) == 0 {
                        failures.push(format!("{entry} [{arch}]: no {op} in SASS"));
                    }
                }
                checked += usize::from(!required_sass(&entry).is_empty());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    // linear_bf16, linear_f32_3xtf32, linear_bf16_any, patch_embed_bf16, 8 bf16
    // and 6 f32 attention head dims, twice; the 6 linear_bf16_sm90* (ping-pong
    // included), linear_f32_sm90, 4 attention_bf16_sm90_hd* and 2
    // attention_f32_sm90_hd* once (sm_90a only).
    assert_eq!(
        checked,
        2 * 18 + 7 + 4 + 2,
        "tensor-core entries found in the SASS"
    );
    assert_eq!(
        checked_epilogues,
        2 * 3 + 7,
        "epilogues checked for round trips"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The emulator's own self-test (tools/test_ptx_emu.py): every instruction the
/// kernels use against numpy, including the cp.async visibility rules and the
/// shared-memory race detector. Same requirements as the emulator check below.
#[test]
fn emulator_self_test() {
    run_python_check("tools/test_ptx_emu.py");
}

/// Run the kernels in the PTX-subset emulator (tools/ptx_emu.py) on the op suite's
/// shapes and compare with f64 references: the only functional check of the
/// CUDA kernels on a machine with no GPU (about 20 s). Needs python3 with
/// numpy (`pip install --target .cache/pylib numpy`, found there or on
/// PYTHONPATH); skipped without it unless TESSERA_REQUIRE_EMU=1 (CI sets it).
#[test]
fn emulator_matches_reference() {
    run_python_check("tools/emu_check.py");
}

/// Run a python script of tools/ with numpy on the path (.cache/pylib or
/// PYTHONPATH); skipped without numpy unless TESSERA_REQUIRE_EMU=1.
fn run_python_check(script: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(pythonpath) = crate::common::python::emulator_python(root) else {
        return;
    };
    let out = Command::new("python3")
        .arg(root.join(script))
        .env("PYTHONPATH", &pythonpath)
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{text}");
}
