//! The three bug classes of DEVELOPERS.md are compile errors in tessera: each
//! `tests/compile_fail/*.rs` must fail to compile with the type error recorded in
//! its `.stderr`, and its correct twin in `tests/compile_pass/` must compile and run.
//! These need no GPU: the `Cuda` type exists whenever the `cuda` feature is on.

#[test]
#[cfg(feature = "cuda")]
fn device_and_dtype_mixups_do_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
    t.pass("tests/compile_pass/*.rs");
}
