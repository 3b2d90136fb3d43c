//! Shared test harness: f64 references written the obvious way
//! ([`reference`]), a seeded random generator ([`rng`]), the relative-L2 check
//! ([`compare`]), and one generic op suite ([`suite`]) that every backend
//! instantiates with `op_suite!`. Inputs are drawn in f32, rounded to the element
//! type, and the reference is computed in f64 from the rounded values, so the bar
//! measures the kernel, not the input quantisation. Sums of terms (linear, patch
//! embedding) are measured against the size of their terms
//! ([`compare::assert_close_sum`]).
#![allow(dead_code)]

pub mod compare;
pub mod fixtures;
pub mod nonfinite;
pub mod operands;
pub mod python;
pub mod reference;
pub mod rng;
#[macro_use]
pub mod suite;

pub use compare::*;
pub use fixtures::*;
pub use nonfinite::*;
pub use operands::*;
pub use reference::*;
pub use rng::*;
pub use suite::*;

// ---------------------------------------------------------------------------
// Skipping GPU tests honestly.

/// `Some(device)` if it could be made; otherwise prints why and returns `None`, or
/// panics when `require_var` (e.g. `TESSERA_REQUIRE_WGPU`) is set ([`required`]).
pub fn device_or_skip<D>(
    what: &str,
    require_var: &str,
    make: impl FnOnce() -> tessera::Result<D>,
) -> Option<D> {
    match make() {
        Ok(d) => Some(d),
        Err(e) => {
            if required(require_var) {
                panic!("{require_var} is set but no {what} device could be opened: {e}");
            }
            skip_notice(&format!(
                "no {what} device ({e}); set {require_var}=1 to make this a failure"
            ));
            None
        }
    }
}

/// The repository root (tests read `tests/data` and `assets` from here).
pub fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch path `name` under the test target's temp dir, in folder `group`.
pub fn tmp_in(group: &str, name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(group);
    std::fs::create_dir_all(&dir).expect("create test temp dir");
    dir.join(name)
}

/// Whether `var` (e.g. `TESSERA_REQUIRE_WGPU`) asks for a failure instead of a
/// skip: set to anything but empty or `0` (`1`, `true`, `yes` all count).
pub fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The largest of `values`, NaN if any is NaN (`f64::max` would drop it): for
/// error measures that a NaN must fail.
pub fn max_or_nan(values: impl IntoIterator<Item = f64>) -> f64 {
    values
        .into_iter()
        .fold(0.0, |m, d| if d.is_nan() || d > m { d } else { m })
}

/// Print `SKIPPED: why` to the real stderr. libtest captures `eprintln!` of a
/// passing test, which would hide the skip from CI logs; a direct write is not captured.
pub fn skip_notice(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// A small random-weights config whose linears (16 rows, K 256 and 1024) take
/// the split-K GEMM on a GPU: graph tests capture its scratch buffer.
pub fn splitk_config() -> tessera::VisionConfig {
    tessera::VisionConfig::from_json_str(
        r#"{"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 2,
            "num_attention_heads": 4, "image_size": 64, "patch_size": 16}"#,
        "splitk.json",
    )
    .unwrap()
}
