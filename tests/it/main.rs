//! tessera's integration tests, one binary (one link) for all of them: the op
//! suite stamped for every backend against f64 references, golden cases from
//! transformers, loader and input errors, concurrency, preprocessing, and the
//! PTX/WGSL kernel checks that need no GPU. The `tessera` command's own tests
//! are in cli/tests.
//!
//! GPU tests skip with a printed `SKIPPED:` notice where the hardware is missing;
//! `TESSERA_REQUIRE_WGPU=1`, `TESSERA_REQUIRE_CUDA=1` and `TESSERA_REQUIRE_PTXAS=1`
//! make a missing adapter, driver or ptxas a failure. `TESSERA_TEST_SEED` replays
//! a random test.

#[macro_use]
mod common;

mod concurrency;
mod cuda_no_driver;
mod devices;
mod fuzz_loader;
mod golden;
mod inputs;
mod loader_errors;
mod ops_cpu;
mod ops_cuda;
mod ops_wgpu;
mod packed;
mod preprocess;
mod proptest_ops;
mod ptxas;
mod wgpu_no_adapter;
