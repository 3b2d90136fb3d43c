//! With no Vulkan driver visible, `Wgpu::new()` must return an `Err`, not panic.
//! The check runs in a child process of this test binary whose Vulkan loader is
//! pointed at a driver manifest that does not exist.

use std::process::Command;

const CHILD: &str = "TESSERA_NO_ADAPTER_CHILD";

#[test]
fn no_adapter_is_an_error_not_a_panic() {
    if std::env::var_os(CHILD).is_some() {
        let err = tessera::Wgpu::new().expect_err("no driver is visible, yet an adapter was found");
        let msg = err.to_string();
        assert!(
            msg.starts_with("wgpu") || msg.contains("not compiled in"),
            "unexpected error: {msg}"
        );
        println!("child saw: {msg}");
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args([
            "--exact",
            "wgpu_no_adapter::no_adapter_is_an_error_not_a_panic",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("VK_ICD_FILENAMES", "/nonexistent/tessera_icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/tessera_icd.json")
        .env("WGPU_BACKEND", "vulkan")
        .output()
        .expect("run child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(
        text.contains("child saw:"),
        "child did not run the check:\n{text}"
    );
    assert!(!text.contains("panicked"), "child panicked:\n{text}");
}
