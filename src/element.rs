//! Element types a buffer can hold. The trait is sealed: tessera's kernels exist
//! for exactly `f32` and `half::bf16`.

use half::bf16;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
}

/// Runtime tag of an element type, for messages, file headers and kernel names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// `f32`.
    F32,
    /// `half::bf16`.
    BF16,
}

impl DType {
    /// Lower-case name used in kernel entry points (`linear_bf16`) and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
        }
    }
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 => 2,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(DType::F32),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            other => Err(format!("unknown dtype `{other}` (expected f32 or bf16)")),
        }
    }
}

/// tessera's bf16 NaN, on every backend: 0x7FFF (what the tensor-core path's
/// `cvt.rn.bf16.f32` writes for any NaN; the sign of a NaN is not kept).
pub const BF16_NAN: bf16 = bf16::from_bits(0x7FFF);

/// A scalar tessera computes with. Every kernel reads `Self`, computes in f32 and
/// rounds its output once with [`Element::from_f32`] (round-to-nearest-even).
pub trait Element:
    sealed::Sealed
    + bytemuck::Pod
    + Copy
    + Default
    + PartialEq
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
    /// The runtime tag of this type.
    const DTYPE: DType;
    /// Widen to f32 (exact for both types).
    fn to_f32(self) -> f32;
    /// Narrow from f32, rounding to nearest, ties to even.
    fn from_f32(v: f32) -> Self;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        // Round to nearest, ties to even (half's conversion); every NaN becomes
        // 0x7FFF, the bits the GPUs' cvt.rn.bf16.f32 gives, on every backend.
        if v.is_nan() {
            BF16_NAN
        } else {
            bf16::from_f32(v)
        }
    }
}
