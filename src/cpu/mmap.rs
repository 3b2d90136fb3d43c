//! Checkpoint files mapped into host memory (the one `unsafe` the model loader
//! needs, kept with the host backend's other `unsafe` code).

use std::path::Path;

use memmap2::Mmap;

use crate::error::{Error, Result};

/// Map `path` read-only into memory.
pub(crate) fn map_file(path: &Path) -> Result<Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the mapping is read-only and lives only while a checkpoint is being
    // loaded (`model::loader::Checkpoint` is dropped at the end of
    // `VisionModel::load`). Memory mapping is sound as long as no other process
    // truncates or rewrites the file during that time: tessera never writes a
    // file in place once it is in the cache (downloads go to a `.incomplete`
    // file, checked, then renamed into place), and a checkpoint changed by another program
    // while it is loaded is outside what we support, as in every safetensors
    // loader that maps files (a truncation would end the process with SIGBUS).
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}
