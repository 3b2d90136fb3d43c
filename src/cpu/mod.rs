//! The CPU backend: the embedded default on machines with no GPU. Products go
//! through `matrixmultiply` (f32 SGEMM), rows are spread over rayon's pool, and
//! bf16 is read as bf16, computed in f32 and rounded once on store.

use std::borrow::Cow;

use rayon::prelude::*;

use crate::device::{sealed, Device, DeviceKind};
use crate::element::{DType, Element};
use crate::error::{Error, Result};

mod attention;
mod elementwise;
mod gemm;
#[cfg(feature = "libjpeg")]
pub(crate) mod jpeg;
mod layer_norm;
mod linear;
mod memory;
mod mmap;
mod panel;
mod patch_embed;
pub(crate) mod resample;

pub(crate) use mmap::map_file;

/// The host. Buffers on `Cpu` are ordinary `Vec`s; every `Cpu` value is the same device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cpu;

impl sealed::Sealed for Cpu {}

impl Device for Cpu {
    type Storage<T: Element> = Vec<T>;
    const KIND: DeviceKind = DeviceKind::Cpu;

    fn describe(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }
    fn same_device(&self, _other: &Self) -> bool {
        true
    }
    fn storage_from_slice<T: Element>(&self, data: &[T]) -> Result<Vec<T>> {
        let mut v = Vec::new();
        v.try_reserve_exact(data.len())
            .map_err(|_| oom(std::mem::size_of_val(data)))?;
        v.extend_from_slice(data);
        Ok(v)
    }
    fn storage_from_vec<T: Element>(&self, data: Vec<T>) -> Result<Vec<T>> {
        Ok(data)
    }
    fn storage_alloc<T: Element>(&self, len: usize) -> Result<Vec<T>> {
        let mut v = Vec::new();
        v.try_reserve_exact(len)
            .map_err(|_| oom(len.saturating_mul(std::mem::size_of::<T>())))?;
        v.resize(len, T::default());
        Ok(v)
    }
    fn storage_full<T: Element>(&self, len: usize, value: T) -> Result<Vec<T>> {
        let mut v = Vec::new();
        v.try_reserve_exact(len)
            .map_err(|_| oom(len.saturating_mul(std::mem::size_of::<T>())))?;
        v.resize(len, value);
        Ok(v)
    }
    fn storage_write<T: Element>(&self, storage: &mut Vec<T>, data: &[T]) -> Result<()> {
        take_mut(storage, data.len(), "copy_from_host", "buffer")?.copy_from_slice(data);
        Ok(())
    }
    fn storage_to_vec<T: Element>(&self, storage: &Vec<T>, len: usize) -> Result<Vec<T>> {
        Ok(take(storage, len, "to_vec", "buffer")?.to_vec())
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

fn oom(bytes: usize) -> Error {
    Error::OutOfMemory {
        device: "cpu".into(),
        bytes: bytes as u64,
        tensor: "buffer".into(),
    }
}

/// An invariant of the backend broke (a storage shorter than its checked shape).
pub(crate) fn internal(msg: &str) -> Error {
    Error::Internal(format!("cpu: {msg}"))
}

/// The first `len` elements of a storage, or an error naming the tensor.
fn take<'a, T>(s: &'a [T], len: usize, op: &'static str, name: &str) -> Result<&'a [T]> {
    s.get(..len).ok_or_else(|| short(op, name, s.len(), len))
}

fn take_mut<'a, T>(
    s: &'a mut [T],
    len: usize,
    op: &'static str,
    name: &str,
) -> Result<&'a mut [T]> {
    let have = s.len();
    s.get_mut(..len).ok_or_else(|| short(op, name, have, len))
}

fn short(op: &'static str, name: &str, have: usize, want: usize) -> Error {
    Error::Internal(format!(
        "{op}: storage of `{name}` holds {have} elements, needs {want}"
    ))
}

/// Product of sizes, or an error on overflow.
fn numel(op: &'static str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::Unsupported {
            op,
            msg: format!("sizes {dims:?} overflow"),
        })
}

/// The slice as f32, when `T` is f32 (no copy).
fn as_f32<T: Element>(x: &[T]) -> Option<&[f32]> {
    if T::DTYPE == DType::F32 {
        bytemuck::try_cast_slice(x).ok()
    } else {
        None
    }
}

/// The slice as bf16, when `T` is bf16 (no copy).
fn as_bf16<T: Element>(x: &[T]) -> Option<&[half::bf16]> {
    if T::DTYPE == DType::BF16 {
        bytemuck::try_cast_slice(x).ok()
    } else {
        None
    }
}

fn as_f32_mut<T: Element>(x: &mut [T]) -> Option<&mut [f32]> {
    if T::DTYPE == DType::F32 {
        bytemuck::try_cast_slice_mut(x).ok()
    } else {
        None
    }
}

/// The instruction sets the CPU backend uses beyond the baseline, detected once.
/// `TESSERA_CPU_ISA=portable` turns them all off (to compare, or to rule them out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Isa {
    /// AVX2: image resampling (`resample`).
    avx2: bool,
    /// AVX-512 F, BW, VL with AVX2 and FMA: hot loops compiled for them.
    avx512: bool,
    /// And AVX-512 BF16: the bf16 panel GEMM (`panel`).
    avx512_bf16: bool,
}

/// The environment variable that turns the CPU backend's instruction-set
/// paths off.
const ISA_VAR: &str = "TESSERA_CPU_ISA";

/// Whether `TESSERA_CPU_ISA`'s value `env` asks for the portable code only:
/// unset, empty or `auto` detect the CPU; `portable` turns the detected
/// instruction sets off; anything else is an error naming the value.
fn portable_only(env: Option<&str>) -> Result<bool> {
    match env.map(str::trim) {
        None | Some("" | "auto") => Ok(false),
        Some("portable") => Ok(true),
        Some(other) => Err(Error::Unsupported {
            op: "Cpu",
            msg: format!("{ISA_VAR}={other:?}: expected auto or portable"),
        }),
    }
}

impl Cpu {
    /// Checks the CPU backend's environment: `TESSERA_CPU_ISA` must be unset,
    /// `auto` or `portable`. The ops cannot report a bad value (they take the
    /// detected instruction sets then), so a program that wants a typo to fail
    /// calls this at start; the `tessera` binary does.
    pub fn check_env() -> Result<()> {
        let value = std::env::var_os(ISA_VAR);
        let value = value.as_ref().map(|v| v.to_string_lossy());
        portable_only(value.as_deref()).map(|_| ())
    }
}

fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let value = std::env::var_os(ISA_VAR);
        let value = value.as_ref().map(|v| v.to_string_lossy());
        if portable_only(value.as_deref()).unwrap_or(false) {
            return Isa {
                avx2: false,
                avx512: false,
                avx512_bf16: false,
            };
        }
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx512 = has!("avx512f")
                && has!("avx512bw")
                && has!("avx512vl")
                && has!("avx2")
                && has!("fma");
            Isa {
                avx2: has!("avx2"),
                avx512,
                avx512_bf16: avx512 && has!("avx512bf16"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Isa {
            avx2: false,
            avx512: false,
            avx512_bf16: false,
        }
    })
}

/// Elements per rayon task for streaming (memory-bound) loops.
const STREAM_CHUNK: usize = 1 << 15;

/// `x` as f32: borrowed for f32, widened (in parallel) otherwise.
fn widen<T: Element>(x: &[T]) -> Cow<'_, [f32]> {
    if let Some(f) = as_f32(x) {
        return Cow::Borrowed(f);
    }
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(STREAM_CHUNK)
        .zip(x.par_chunks(STREAM_CHUNK))
        .for_each(|(o, x)| widen_into(x, o));
    Cow::Owned(out)
}

#[inline]
fn widen_into<T: Element>(src: &[T], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

/// Round f32 results into `dst` (the one rounding of every kernel).
#[inline]
fn store<T: Element>(src: &[f32], dst: &mut [T]) {
    if let Some(d) = as_f32_mut(dst) {
        d.copy_from_slice(&src[..d.len()]);
    } else {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = T::from_f32(*s);
        }
    }
}

/// e^x in plain f32 arithmetic, so loops over it vectorise (libm's expf does not):
/// x = n·ln2 + r with |r| ≤ ln2/2, degree-6 Taylor for e^r (relative error ≈ 2e-7),
/// 2^n built in the exponent bits. NaN stays NaN; the range clamps to normal floats.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5·2^23 rounds to the nearest integer (ties to even) and leaves n in
    // the low mantissa bits: bits(ROUND + n) = ROUND_BITS + n for |n| < 2^22.
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: u32 = 0x4B40_0000;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // n ∈ [-126, 127] after the clamp, so the biased exponent n + 127 is 1..=254;
    // integer arithmetic on the bits (no float → int conversion) keeps it vectorisable.
    let scale = f32::from_bits(t.to_bits().wrapping_sub(ROUND_BITS - 127) << 23);
    p * scale
}

crate::ops::kernels_from_op_files!(Cpu);

#[cfg(test)]
mod tests {
    #[test]
    fn exp_f32_matches_std() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = super::exp_f32(x) as f64;
            let want = (x as f64).exp();
            let rel = ((got - want) / want).abs();
            // NaN is the worst (f64::max would drop it).
            if rel.is_nan() || rel > worst {
                worst = rel;
            }
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst:e}");
        assert!(super::exp_f32(f32::NAN).is_nan());
        assert!(super::exp_f32(f32::NEG_INFINITY) < 1e-37);
        assert_eq!(super::exp_f32(0.0), 1.0);
    }

    #[test]
    fn isa_setting_refuses_what_it_does_not_know() {
        for (value, portable) in [(None, false), (Some(""), false), (Some(" auto"), false)] {
            assert_eq!(
                super::portable_only(value).ok(),
                Some(portable),
                "{value:?}"
            );
        }
        assert_eq!(super::portable_only(Some("portable")).ok(), Some(true));
        for typo in ["portble", "Portable", "avx2", "off"] {
            let e = super::portable_only(Some(typo)).unwrap_err().to_string();
            assert!(e.contains(&format!("TESSERA_CPU_ISA={typo:?}")), "{e}");
            assert!(e.contains("expected auto or portable"), "{e}");
        }
    }
}
