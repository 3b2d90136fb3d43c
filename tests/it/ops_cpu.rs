//! The generic op suite on the CPU backend. (Speed is measured by the criterion
//! benches in cli/benches and `tessera bench`, never by tests.)
op_suite!(Some(tessera::Cpu));
