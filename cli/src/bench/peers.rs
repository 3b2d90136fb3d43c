//! Peers measured in the same run as tessera: a vendor GEMM (the `gemm` crate on
//! the CPU, cuBLAS on CUDA) and a plain copy of the same bytes (a parallel
//! `memcpy` on the CPU, a device-to-device copy on CUDA).
//!
//! A peer that cannot be made is not an error: its cells read "n/a" with the reason.

use tessera::{Cpu, Cuda, DType, Device, Wgpu};

use super::Timing;

/// A peer's answer: median milliseconds per call, or why there is none.
pub type PeerResult = std::result::Result<f64, String>;

/// The peers of one device.
pub trait PeerSet {
    /// Name of the GEMM peer for `dtype` (e.g. `gemm f32`, `cuBLAS bf16`).
    fn gemm_name(&self, dtype: DType) -> String;
    /// Median ms of `out[m, n] = x[m, k] · w[n, k]ᵀ` in `dtype` (row-major, as
    /// `ops::linear` lays it out).
    fn gemm_ms(&mut self, dtype: DType, m: usize, n: usize, k: usize, t: &Timing) -> PeerResult;
    /// Name of the copy peer.
    fn copy_name(&self) -> String;
    /// Median ms of copying `bytes` bytes from one buffer to another on the device.
    fn copy_ms(&mut self, bytes: usize, t: &Timing) -> PeerResult;
}

/// Devices the bench knows peers for.
pub trait BenchDevice: Device {
    /// Make the peers of this device (never fails: a peer that cannot be made
    /// answers its reason).
    fn peers(&self) -> Box<dyn PeerSet>;
}

/// Median of `reps` samples of `sample(iters)` (each ms per call), after
/// choosing `iters` from one timed call so a sample lasts about `t.target_ms`.
pub(crate) fn median_timed(t: &Timing, mut sample: impl FnMut(usize) -> PeerResult) -> PeerResult {
    let mut est = f64::INFINITY;
    for _ in 0..t.warmup.max(1) {
        est = sample(1)?;
    }
    let iters = t.iters_for(est);
    let mut v = Vec::with_capacity(t.reps);
    for _ in 0..t.reps_for(est * iters as f64) {
        v.push(sample(iters)?);
    }
    Ok(super::median(&mut v))
}

// ---------------------------------------------------------------------------
// CPU.

impl BenchDevice for Cpu {
    fn peers(&self) -> Box<dyn PeerSet> {
        Box::new(CpuPeers)
    }
}

struct CpuPeers;

/// Copy `src` into `dst` in 1 MiB chunks spread over rayon's pool (the ceiling a
/// streaming CPU kernel can reach with the same threads).
fn par_copy(src: &[u8], dst: &mut [u8]) {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 20;
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

impl PeerSet for CpuPeers {
    fn gemm_name(&self, _dtype: DType) -> String {
        // The gemm crate has no bf16 kernel: bf16 rows compare with its f32 GEMM.
        "gemm f32".into()
    }

    fn gemm_ms(&mut self, _dtype: DType, m: usize, n: usize, k: usize, t: &Timing) -> PeerResult {
        cpu_gemm::gemm_ms(m, n, k, t)
    }

    fn copy_name(&self) -> String {
        "memcpy".into()
    }

    fn copy_ms(&mut self, bytes: usize, t: &Timing) -> PeerResult {
        let src: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
        let mut dst = vec![0u8; bytes];
        median_timed(t, |iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                par_copy(&src, &mut dst);
                std::hint::black_box(&mut dst);
            }
            Ok(start.elapsed().as_secs_f64() * 1e3 / iters as f64)
        })
    }
}

#[cfg(feature = "gemm-peer")]
mod cpu_gemm {
    use super::{median_timed, PeerResult};
    use crate::bench::cases::random_vec;
    use crate::bench::Timing;

    /// `out[m, n] = x[m, k] · w[n, k]ᵀ` through the `gemm` crate on rayon's pool.
    fn gemm_f32(
        out: &mut [f32],
        x: &[f32],
        w: &[f32],
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<(), String> {
        if out.len() != m * n || x.len() != m * k || w.len() != n * k {
            return Err("gemm peer: buffer lengths do not match the shape".into());
        }
        let (n_s, k_s) = (n as isize, k as isize);
        // SAFETY: the three slices were just checked to hold m·n, m·k and n·k
        // elements; with the strides below every index gemm forms lies inside them
        // (dst row-major [m, n]: rs n, cs 1; lhs row-major [m, k]: rs k, cs 1; rhs
        // = wᵀ, w row-major [n, k]: rs 1, cs k). `out` is borrowed mutably, so it
        // aliases neither input. read_dst = false, so `out`'s old contents are unused.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n_s,
                false,
                x.as_ptr(),
                1,
                k_s,
                w.as_ptr(),
                k_s,
                1,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
        Ok(())
    }

    pub(super) fn gemm_ms(m: usize, n: usize, k: usize, t: &Timing) -> PeerResult {
        let x = random_vec::<f32>(m * k, 1, 1.0);
        let w = random_vec::<f32>(n * k, 2, 1.0 / (k as f32).sqrt());
        let mut out = vec![0f32; m * n];
        median_timed(t, |iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                gemm_f32(&mut out, &x, &w, m, n, k)?;
                std::hint::black_box(&mut out);
            }
            Ok(start.elapsed().as_secs_f64() * 1e3 / iters as f64)
        })
    }
}

#[cfg(not(feature = "gemm-peer"))]
mod cpu_gemm {
    use super::PeerResult;
    use crate::bench::Timing;

    pub(super) fn gemm_ms(_m: usize, _n: usize, _k: usize, _t: &Timing) -> PeerResult {
        Err("peer not compiled in (cargo feature `gemm-peer`)".into())
    }
}

// ---------------------------------------------------------------------------
// wgpu.

impl BenchDevice for Wgpu {
    fn peers(&self) -> Box<dyn PeerSet> {
        Box::new(NoPeers("none for wgpu in this build".into()))
    }
}

/// A device with no peers: every cell says why.
struct NoPeers(String);

impl PeerSet for NoPeers {
    fn gemm_name(&self, _dtype: DType) -> String {
        "GEMM peer".into()
    }
    fn gemm_ms(&mut self, _: DType, _: usize, _: usize, _: usize, _: &Timing) -> PeerResult {
        Err(self.0.clone())
    }
    fn copy_name(&self) -> String {
        "copy peer".into()
    }
    fn copy_ms(&mut self, _: usize, _: &Timing) -> PeerResult {
        Err(self.0.clone())
    }
}

// ---------------------------------------------------------------------------
// CUDA.

impl BenchDevice for Cuda {
    #[cfg(feature = "cuda")]
    fn peers(&self) -> Box<dyn PeerSet> {
        match cuda_peer::CudaPeers::open(self.ordinal()) {
            Ok(p) => Box::new(p),
            Err(reason) => Box::new(NoPeers(reason)),
        }
    }
    #[cfg(not(feature = "cuda"))]
    fn peers(&self) -> Box<dyn PeerSet> {
        Box::new(NoPeers("the cuda feature is off".into()))
    }
}

#[cfg(feature = "cuda")]
mod cuda_peer {
    use super::{median_timed, PeerResult, PeerSet};
    use crate::bench::cases::random_vec;
    use crate::bench::Timing;
    use cudarc::cublas::sys::cublasOperation_t;
    use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
    use cudarc::driver::sys::CUevent_flags;
    use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
    use half::bf16;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::Arc;
    use tessera::{DType, Element};

    /// cudarc's handles on the same device as tessera's `Cuda` (cudarc retains the
    /// device's primary context, as tessera's backend does), with cuBLAS on a
    /// stream of its own.
    pub(super) struct CudaPeers {
        stream: Arc<CudaStream>,
        blas: std::result::Result<CudaBlas, String>,
    }

    /// Run cudarc code, turning a panic (a missing libcublas, say) into the reason.
    fn guarded<R>(
        what: &str,
        f: impl FnOnce() -> std::result::Result<R, String>,
    ) -> PeerResult2<R> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => r,
            Err(p) => {
                let msg = crate::panic_text(p.as_ref()).unwrap_or_else(|| "panic in cudarc".into());
                Err(format!("{what}: {msg}"))
            }
        }
    }
    type PeerResult2<R> = std::result::Result<R, String>;

    impl CudaPeers {
        pub(super) fn open(ordinal: usize) -> PeerResult2<Self> {
            let stream = guarded("cudarc context", || {
                let ctx = CudaContext::new(ordinal).map_err(|e| e.to_string())?;
                ctx.new_stream().map_err(|e| e.to_string())
            })?;
            let s = stream.clone();
            let blas = guarded("cuBLAS", move || {
                CudaBlas::new(s).map_err(|e| format!("cuBLAS handle: {e}"))
            });
            Ok(Self { stream, blas })
        }

        /// Mean ms per call of `iters` calls of `f`, between two CUDA events on the
        /// peer stream.
        fn event_ms(
            stream: &Arc<CudaStream>,
            iters: usize,
            mut f: impl FnMut() -> PeerResult2<()>,
        ) -> PeerResult {
            let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
            let start = stream.record_event(flags).map_err(|e| e.to_string())?;
            for _ in 0..iters {
                f()?;
            }
            let end = stream.record_event(flags).map_err(|e| e.to_string())?;
            let ms = start.elapsed_ms(&end).map_err(|e| e.to_string())?;
            Ok(f64::from(ms) / iters.max(1) as f64)
        }

        fn gemm_typed<E>(&self, m: usize, n: usize, k: usize, t: &Timing) -> PeerResult
        where
            E: Element + DeviceRepr + ValidAsZeroBits,
            CudaBlas: Gemm<E>,
        {
            let blas = self.blas.as_ref().map_err(|e| e.clone())?;
            let dim = |v: usize| i32::try_from(v).map_err(|_| format!("{v} exceeds cuBLAS's int"));
            let (mi, ni, ki) = (dim(m)?, dim(n)?, dim(k)?);
            let s = &self.stream;
            let up = |len: usize, seed: u64, scale: f32| {
                s.clone_htod(&random_vec::<E>(len, seed, scale))
                    .map_err(|e| e.to_string())
            };
            let x = up(m * k, 1, 1.0)?;
            let w = up(n * k, 2, 1.0 / (k as f32).sqrt())?;
            let mut out: CudaSlice<E> = s.alloc_zeros(m * n).map_err(|e| e.to_string())?;
            // Row-major out[m, n] = x[m, k]·w[n, k]ᵀ is column-major
            // outᵀ[n, m] = op(w)·xᵀ with w read transposed: PyTorch's linear call.
            let cfg = GemmConfig {
                transa: cublasOperation_t::CUBLAS_OP_T,
                transb: cublasOperation_t::CUBLAS_OP_N,
                m: ni,
                n: mi,
                k: ki,
                alpha: E::from_f32(1.0),
                lda: ki,
                ldb: ki,
                beta: E::from_f32(0.0),
                ldc: ni,
            };
            median_timed(t, |iters| {
                Self::event_ms(s, iters, || cublas_gemm(blas, cfg, &w, &x, &mut out))
            })
        }
    }

    /// One cuBLAS GEMM, `c = op(a)·op(b)` per `cfg`.
    fn cublas_gemm<E>(
        blas: &CudaBlas,
        cfg: GemmConfig<E>,
        a: &CudaSlice<E>,
        b: &CudaSlice<E>,
        c: &mut CudaSlice<E>,
    ) -> PeerResult2<()>
    where
        CudaBlas: Gemm<E>,
    {
        let need = |rows: i32, cols: i32| rows.max(0) as usize * cols.max(0) as usize;
        // op(a) is [m, k]: a is stored k×m (transposed) with lda = k; b is k×n
        // with ldb = k; c is m×n with ldc = m. Only this layout is ever built.
        let ok = cfg.transa == cublasOperation_t::CUBLAS_OP_T
            && cfg.transb == cublasOperation_t::CUBLAS_OP_N
            && cfg.lda == cfg.k
            && cfg.ldb == cfg.k
            && cfg.ldc == cfg.m
            && a.len() >= need(cfg.k, cfg.m)
            && b.len() >= need(cfg.k, cfg.n)
            && c.len() >= need(cfg.m, cfg.n);
        if !ok {
            return Err("cuBLAS peer: buffers do not match the GEMM shape".into());
        }
        // SAFETY: checked just above: a, b and c are device buffers of this
        // stream's context holding at least k·m, k·n and m·n elements, which is
        // all cuBLAS reads or writes with these leading dimensions; c is borrowed
        // mutably, so it aliases neither input.
        unsafe { blas.gemm(cfg, a, b, c) }.map_err(|e| format!("cuBLAS gemm: {e}"))
    }

    impl PeerSet for CudaPeers {
        fn gemm_name(&self, dtype: DType) -> String {
            match dtype {
                DType::F32 => "cuBLAS SGEMM".into(),
                DType::BF16 => "cuBLAS bf16".into(),
            }
        }

        fn gemm_ms(
            &mut self,
            dtype: DType,
            m: usize,
            n: usize,
            k: usize,
            t: &Timing,
        ) -> PeerResult {
            guarded("cuBLAS", || match dtype {
                DType::F32 => self.gemm_typed::<f32>(m, n, k, t),
                DType::BF16 => self.gemm_typed::<bf16>(m, n, k, t),
            })
        }

        fn copy_name(&self) -> String {
            "D2D copy".into()
        }

        fn copy_ms(&mut self, bytes: usize, t: &Timing) -> PeerResult {
            let s = &self.stream;
            guarded("D2D copy", || {
                let src: CudaSlice<u8> = s.alloc_zeros(bytes).map_err(|e| e.to_string())?;
                let mut dst: CudaSlice<u8> = s.alloc_zeros(bytes).map_err(|e| e.to_string())?;
                median_timed(t, |iters| {
                    Self::event_ms(s, iters, || {
                        s.memcpy_dtod(&src, &mut dst).map_err(|e| e.to_string())
                    })
                })
            })
        }
    }
}
