//! python3 with numpy for the PTX emulator's checks, found one way for the
//! integration tests (`tests/it/ptxas.rs`) and the library's launch-plan test
//! (`src/cuda/plan_check.rs`, which includes this file by path).

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

/// The PYTHONPATH under which python3 imports numpy (`.cache/pylib` of the
/// checkout first, then the caller's `PYTHONPATH`); `None` when it does not.
pub fn numpy_pythonpath(root: &Path) -> Option<OsString> {
    let mut path = std::env::var_os("PYTHONPATH").unwrap_or_default();
    let pylib = root.join(".cache/pylib");
    if pylib.is_dir() {
        let mut p = pylib.into_os_string();
        if !path.is_empty() {
            p.push(":");
            p.push(&path);
        }
        path = p;
    }
    let ok = Command::new("python3")
        .args(["-c", "import numpy"])
        .env("PYTHONPATH", &path)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(path)
}

/// The python-with-numpy path, or `None` after the skip notice; a missing numpy
/// fails the test under `TESSERA_REQUIRE_EMU=1`.
pub fn emulator_python(root: &Path) -> Option<OsString> {
    let found = numpy_pythonpath(root);
    if found.is_none() {
        let required =
            std::env::var("TESSERA_REQUIRE_EMU").is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(
            !required,
            "TESSERA_REQUIRE_EMU=1 but python3 with numpy is not available"
        );
        eprintln!(
            "SKIPPED: python3 with numpy not available (pip install --target .cache/pylib numpy)"
        );
    }
    found
}
