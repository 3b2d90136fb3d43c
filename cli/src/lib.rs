//! The parts of the `tessera` command that its benchmarks share: `tessera bench`'s
//! cases, peers and table ([`bench`]). The inference library is the `tessera` crate.

pub mod bench;
pub mod devices;
pub mod embed;

use std::path::Path;

use tessera::model::ModelFiles;

/// The model named by `--model`: a folder, or a hub id `org/name` found in the local
/// Hugging Face cache or, with the `hub` feature (on by default), downloaded into it
/// first, said on stderr (`HF_HUB_OFFLINE=1` downloads nothing).
pub fn model_files(spec: &Path) -> tessera::Result<ModelFiles> {
    #[cfg(feature = "hub")]
    return ModelFiles::locate_or_download(spec, true);
    #[cfg(not(feature = "hub"))]
    ModelFiles::locate(spec)
}

/// The text of a caught panic's payload (the cuBLAS peer's guard) (`panic!` gives a `String` or a `&str`).
#[cfg(feature = "cuda")]
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
}
