//! Without libcuda (machines with no NVIDIA driver), opening a CUDA device must
//! return `Error::CudaDriverNotFound`, never panic.

/// Whether a libcuda can be found the way the dynamic loader would: the
/// LD_LIBRARY_PATH directories, the ldconfig cache, the usual system directories.
#[cfg(feature = "cuda")]
fn libcuda_on_this_machine() -> bool {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|s| !s.is_empty())
        .map(Into::into)
        .collect();
    for d in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/lib64",
        "/lib/x86_64-linux-gnu",
        "/usr/local/cuda/lib64/stubs",
        "/usr/local/cuda/compat",
    ] {
        dirs.push(d.into());
    }
    let in_dirs = dirs.iter().any(|d| {
        ["libcuda.so", "libcuda.so.1"]
            .iter()
            .any(|n| d.join(n).exists())
    });
    let in_cache = std::process::Command::new("ldconfig")
        .arg("-p")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("libcuda.so"))
        .unwrap_or(false);
    in_dirs || in_cache
}

#[cfg(feature = "cuda")]
#[test]
fn new_without_driver_is_an_error_not_a_panic() {
    let result = std::panic::catch_unwind(|| tessera::Cuda::new(0)).expect("Cuda::new panicked");
    let count =
        std::panic::catch_unwind(tessera::Cuda::device_count).expect("device_count panicked");
    if libcuda_on_this_machine() {
        {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: libcuda is present on this machine; Cuda::new gave {result:?}"
            );
        }
        return;
    }
    let err = result.expect_err("Cuda::new succeeded without a driver");
    let msg = err.to_string();
    assert!(
        matches!(err, tessera::Error::CudaDriverNotFound(_)),
        "{msg}"
    );
    assert!(msg.starts_with("CUDA driver not found"), "{msg}");
    assert!(msg.contains("libcuda"), "{msg}");

    let err = count.expect_err("device_count succeeded without a driver");
    assert!(
        err.to_string().starts_with("CUDA driver not found"),
        "{err}"
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn new_without_feature_is_an_error() {
    let err = tessera::Cuda::new(0).unwrap_err();
    assert!(
        matches!(err, tessera::Error::NotCompiledIn("cuda")),
        "{err}"
    );
}
