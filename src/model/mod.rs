//! The SigLIP vision model layer (see shared/MODEL.md): config, loader, forward pass, memory bank.
