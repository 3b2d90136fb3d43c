//! The parts of the `tessera` command that its benchmarks share: `tessera bench`'s
//! cases, peers and table ([`bench`]). The inference library is the `tessera` crate.

pub mod bench;
pub mod devices;
pub mod embed;

/// The text of a caught panic's payload (the cuBLAS peer's guard) (`panic!` gives a `String` or a `&str`).
#[cfg(feature = "cuda")]
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
}
