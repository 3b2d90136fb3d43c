//! Random numbers for the tests: the library's generator (`tessera::random`),
//! seeded per test from the clock unless TESSERA_TEST_SEED is set; the seed is
//! printed so a failure replays.

use tessera::Element;

pub struct Rng(tessera::random::Rng);

impl Rng {
    pub fn new(test: &str) -> Self {
        let seed = std::env::var("TESSERA_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0x9E37_79B9_7F4A_7C15)
            });
        eprintln!("{test}: TESSERA_TEST_SEED={seed}");
        Rng(tessera::random::Rng::new(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [-scale, scale).
    pub fn uniform(&mut self, scale: f32) -> f32 {
        self.0.uniform(scale)
    }
    pub fn vec<T: Element>(&mut self, n: usize, scale: f32) -> Vec<T> {
        self.0.vec(n, scale)
    }
}
