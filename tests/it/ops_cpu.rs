//! The generic op suite on the CPU backend. (Speed is measured by the criterion
//! benches in cli/benches and `tessera bench`, never by tests.)
op_suite!(Some(tessera::Cpu));

/// The host's f32 → bf16 conversion follows the kernels' rule (NaN → 0x7FFF).
#[test]
fn host_bf16_rule() {
    crate::common::check_host_bf16_rule();
}
