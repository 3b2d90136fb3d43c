//! The CUDA backend: hand-written PTX (`kernels/*.ptx`) driven through cudarc's
//! driver API. One file per op beside the device (`device.rs`) and the module
//! and launch machinery (`launch.rs`). With the `cuda` feature off, `stub.rs`
//! provides a `Cuda` type of which no value can be made; the public API is
//! identical.

#[cfg(feature = "cuda")]
mod attention;
#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
mod elementwise;
#[cfg(feature = "cuda")]
mod graph;
#[cfg(feature = "cuda")]
mod launch;
#[cfg(feature = "cuda")]
mod layer_norm;
#[cfg(feature = "cuda")]
mod linear;
#[cfg(feature = "cuda")]
#[rustfmt::skip]
mod manifest;
#[cfg(feature = "cuda")]
mod memory;
#[cfg(feature = "cuda")]
mod patch_embed;
#[cfg(all(test, feature = "cuda"))]
mod plan_check;
#[cfg(feature = "cuda")]
mod upload;

#[cfg(feature = "cuda")]
pub use device::Cuda;

#[cfg(not(feature = "cuda"))]
mod stub;
#[cfg(not(feature = "cuda"))]
pub use stub::Cuda;

#[cfg(feature = "cuda")]
crate::ops::kernels_from_op_files!(Cuda);

use crate::error::{Error, Result};

/// The most dynamic shared memory of the `linear_bf16_sm90*` kernels (checked
/// against the generated manifest by a test).
const SM90_SMEM: u32 = 230_464;

/// The tensor-core GEMMs of a device: `linear_bf16` and `linear_f32_3xtf32`
/// (mma.sync, cp.async) on every GPU, `linear_bf16_sm90` and `linear_f32_sm90`
/// (wgmma, TMA) on compute capability 9.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmPath {
    /// `linear_bf16` / `linear_f32_3xtf32`: mma.sync fed by a cp.async pipeline
    /// (compute capability 8.0+).
    Sm80,
    /// `linear_bf16_sm90` / `linear_f32_sm90`: wgmma fed by TMA (compute
    /// capability 9.0: their PTX
    /// targets sm_90a, whose architecture-specific instructions no other
    /// capability runs).
    Sm90,
}

impl GemmPath {
    /// The path for compute capability `(major, minor)`, unless
    /// `TESSERA_CUDA_GEMM` (`sm80` or `sm90`; `auto` or unset: by capability) says
    /// otherwise. Asking for `sm90` on a GPU without wgmma is an error, as is an
    /// unknown value.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn choose(capability: (i32, i32), max_smem: u32, env: Option<&str>) -> Result<Self> {
        let (major, minor) = capability;
        // sm_90a code runs on 9.0 only; the kernel's shared memory must fit the
        // device's opt-in limit.
        let hopper = capability == (9, 0) && max_smem >= SM90_SMEM;
        match env.map(str::trim) {
            None | Some("") | Some("auto") => Ok(if hopper { Self::Sm90 } else { Self::Sm80 }),
            Some("sm80") => Ok(Self::Sm80),
            Some("sm90") if hopper => Ok(Self::Sm90),
            Some("sm90") => Err(Error::Unsupported {
                op: "Cuda::new",
                msg: format!(
                    "TESSERA_CUDA_GEMM=sm90 needs compute capability 9.0 (wgmma, sm_90a) and \
                     {SM90_SMEM} bytes of shared memory per block; this GPU is {major}.{minor} \
                     with {max_smem}"
                ),
            }),
            Some(other) => Err(Error::Unsupported {
                op: "Cuda::new",
                msg: format!("TESSERA_CUDA_GEMM={other:?}: expected auto, sm80 or sm90"),
            }),
        }
    }
}

/// How f32 matrix products multiply on CUDA: linear layers (with their fused
/// epilogues) and attention (Q·Kᵀ and P·V).
///
/// By default, at the model's shapes (linear: K and N multiples of 4; attention:
/// head dims and row strides multiples of 4, at least 16 queries; 16-byte aligned
/// buffers), on the tensor cores in 3xTF32, as PyTorch's memory-efficient
/// attention and CUTLASS's `OpMultiplyAddFastF32` do for f32: each value is split
/// into a tf32 `big` (its top 19 bits) and a tf32 `small` (the rest, rounded),
/// and a product is `big·big + big·small + small·big` summed in f32 by the
/// tensor core. Each product is then within about 2⁻¹⁹ of exact, where an f32
/// multiply is within 2⁻²⁴; over a dot product the error stays far below the
/// 1e-5 relative bar f32 is tested to (the emulator measures 1e-8 to 1e-7), and
/// ±inf and NaN inputs give what f32 arithmetic gives (one case aside, if the
/// tensor cores flush tf32 subnormals, which is not documented: ±inf times a
/// subnormal would then give NaN, not ±inf). The mma.sync attention kernel
/// checks each key/value tile for ±inf and NaN as it arrives and takes the
/// exact split for that tile only. On Hopper ([`GemmPath::Sm90`]) the linear
/// layers run the split on tf32 wgmma: the weight's parts in shared memory, x's
/// in registers, where a tf32-exact x value (small part 0) takes small =
/// big·2⁻⁴⁰ so that a ±inf weight still gives ±inf (2⁻⁴⁰ relative error,
/// against 0·inf = NaN); so can attention at head dims 64 and 72 (K's and
/// V's parts in shared memory, written by converter warps; Q's and P's in
/// registers), where `TESSERA_CUDA_ATTENTION=sm90-f32` asks for it: by default
/// f32 attention stays on the mma.sync kernel, which measured faster on the
/// H100.
/// `TESSERA_CUDA_F32_GEMM=simt` takes the SIMT kernels instead
/// (f32 fused multiply-adds on the CUDA cores: about half the speed for linear
/// layers, a quarter or less for attention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F32Gemm {
    /// `linear_f32_3xtf32` / `linear_f32_sm90` and `attention_f32_hd*` /
    /// `attention_f32_sm90_hd*`: tf32 mma.sync m16n8k8 (wgmma m64n192k8 for
    /// `linear_f32_sm90`, m64n64k8 and m64n{64,72}k8 for the Hopper attention),
    /// three per product.
    Tf32x3,
    /// `linear_f32` and `attention_f32`: f32 fused multiply-adds on the CUDA cores.
    Simt,
}

impl F32Gemm {
    /// `TESSERA_CUDA_F32_GEMM`: `tf32x3` (or `auto`, empty, unset) or `simt`;
    /// anything else is an error naming the variable.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn choose(env: Option<&str>) -> Result<Self> {
        match env.map(str::trim) {
            None | Some("" | "auto" | "tf32x3") => Ok(Self::Tf32x3),
            Some("simt") => Ok(Self::Simt),
            Some(other) => Err(Error::Unsupported {
                op: "Cuda::new",
                msg: format!("TESSERA_CUDA_F32_GEMM={other:?}: expected auto, tf32x3 or simt"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{F32Gemm, GemmPath};

    #[test]
    fn f32_gemm_override() {
        assert_eq!(F32Gemm::choose(None).unwrap(), F32Gemm::Tf32x3);
        assert_eq!(F32Gemm::choose(Some(" auto ")).unwrap(), F32Gemm::Tf32x3);
        assert_eq!(F32Gemm::choose(Some("tf32x3")).unwrap(), F32Gemm::Tf32x3);
        assert_eq!(F32Gemm::choose(Some("simt")).unwrap(), F32Gemm::Simt);
        let e = F32Gemm::choose(Some("tf32")).unwrap_err().to_string();
        assert!(
            e.contains("TESSERA_CUDA_F32_GEMM") && e.contains("\"tf32\""),
            "{e}"
        );
    }

    #[test]
    fn gemm_path_by_capability_and_override() {
        const H100: u32 = 232_448;
        assert_eq!(
            GemmPath::choose((9, 0), H100, None).unwrap(),
            GemmPath::Sm90
        );
        assert_eq!(
            GemmPath::choose((8, 0), 166_912, None).unwrap(),
            GemmPath::Sm80
        );
        assert_eq!(
            GemmPath::choose((10, 0), H100, Some("auto")).unwrap(),
            GemmPath::Sm80
        );
        assert_eq!(
            GemmPath::choose((9, 0), H100, Some("sm80")).unwrap(),
            GemmPath::Sm80
        );
        assert_eq!(
            GemmPath::choose((9, 0), H100, Some(" sm90 ")).unwrap(),
            GemmPath::Sm90
        );
        // A 9.x part other than 9.0 (sm_90a code does not run there), or one
        // without the shared memory the kernel needs, takes the sm_80 GEMM.
        assert_eq!(
            GemmPath::choose((9, 1), H100, None).unwrap(),
            GemmPath::Sm80
        );
        assert_eq!(
            GemmPath::choose((9, 0), 100_000, None).unwrap(),
            GemmPath::Sm80
        );
        let e = GemmPath::choose((8, 0), 166_912, Some("sm90"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("TESSERA_CUDA_GEMM") && e.contains("8.0"), "{e}");
        let e = GemmPath::choose((9, 0), H100, Some("hopper"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"hopper\""), "{e}");
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn sm90_shared_memory_matches_the_manifest() {
        use super::manifest::{linear_bf16_sm90 as w256, linear_bf16_sm90_n192 as w192};
        assert_eq!(
            super::SM90_SMEM,
            (w256::DYN_SMEM + w256::SPEC.static_smem).max(w192::DYN_SMEM + w192::SPEC.static_smem)
        );
    }
}
