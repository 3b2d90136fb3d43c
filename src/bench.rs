//! Benchmarks shared by `tessera bench` and the criterion benches.
