//! The generic op suite on the CPU backend.
mod common;

op_suite!(Some(tessera::Cpu));
