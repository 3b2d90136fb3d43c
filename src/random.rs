//! One small deterministic random generator (xorshift64*), for random weights
//! ([`VisionModel::random`](crate::VisionModel::random)), benchmark inputs and
//! tests. Not for anything that needs unpredictability.

use crate::element::Element;

/// xorshift64* (Vigna): 64 bits of state, a full period over non-zero states.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value; 0 is fine).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[-scale, scale)` (24 random bits).
    pub fn uniform(&mut self, scale: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * u - 1.0) * scale
    }

    /// `n` values uniform in `[-scale, scale)`, rounded to `T`: a helper for
    /// tests and benchmarks, allocating as `vec![x; n]` does.
    ///
    /// # Panics
    ///
    /// As `Vec` does, when `n` values of `T` exceed `isize::MAX` bytes (a count
    /// the caller chose, never data: tessera's own random weights go through
    /// `VisionModel::random`, which reports an allocation it cannot make as an
    /// error).
    pub fn vec<T: Element>(&mut self, n: usize, scale: f32) -> Vec<T> {
        (0..n).map(|_| T::from_f32(self.uniform(scale))).collect()
    }
}
