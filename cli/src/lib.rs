//! The parts of the `tessera` command that its benchmarks share: `tessera bench`'s
//! cases, peers and table ([`bench`](mod@bench)). The inference library is the `tessera` crate.

pub mod bench;
pub mod devices;
pub mod embed;

use std::path::Path;

use tessera::model::{ConfigFiles, ModelFiles};
use tessera::preprocess::Siglip2Processor;

/// The model named by `--model`: a folder, or a hub id `org/name` found in the local
/// Hugging Face cache or, with the `hub` feature (on by default), downloaded into it
/// first, said on stderr (`HF_HUB_OFFLINE=1` downloads nothing).
pub fn model_files(spec: &Path) -> tessera::Result<ModelFiles> {
    config_files(spec, None).and_then(|c| weights(&c))
}

/// The config files of the model named by `--model`, found or downloaded as by
/// [`model_files`] but without the weights: commands check their options and inputs
/// against the config before the weights' download.
/// `revision`: a branch, tag or commit of a hub id (`--revision`; `None`: `main`).
pub fn config_files(spec: &Path, revision: Option<&str>) -> tessera::Result<ConfigFiles> {
    #[cfg(feature = "hub")]
    return ConfigFiles::locate_or_download_at(spec, revision, true);
    #[cfg(not(feature = "hub"))]
    ConfigFiles::locate_at(spec, revision)
}

/// The model's files for config files from [`config_files`]: the weights beside
/// them, downloaded (those of the config's own hub commit) where they are missing.
pub fn weights(config: &ConfigFiles) -> tessera::Result<ModelFiles> {
    #[cfg(feature = "hub")]
    return config.weights_or_download(true);
    #[cfg(not(feature = "hub"))]
    config.weights()
}

/// The SigLIP 2 processor of a model for `--max-patches` (`None`: the
/// model's own `max_num_patches`), its refusal of the option worded as the
/// option, not as the library's parameter.
pub fn naflex_processor(
    preprocessor: Option<&Path>,
    patch_size: usize,
    max_patches: Option<usize>,
) -> Result<Siglip2Processor, String> {
    Siglip2Processor::for_model(preprocessor, patch_size, max_patches).map_err(|e| match e {
        tessera::Error::Input { tensor, msg } if tensor == "max_patches" => {
            format!("--max-patches: {msg}")
        }
        e => e.to_string(),
    })
}

/// An error naming both when `output` exists and is one of `inputs` (writing the
/// output would destroy that input: `--output photo.safetensors` given the
/// file it reads). Only the inputs with the output's file name are resolved, so
/// a job of a million paths costs a comparison of names each.
pub fn output_is_not_an_input<'a>(
    option: &str,
    output: &Path,
    inputs: impl IntoIterator<Item = &'a Path>,
) -> Result<(), String> {
    let (Some(name), Ok(target)) = (output.file_name(), std::fs::canonicalize(output)) else {
        return Ok(()); // nothing there to overwrite
    };
    for input in inputs {
        if input.file_name() == Some(name)
            && std::fs::canonicalize(input).is_ok_and(|p| p == target)
        {
            return Err(format!(
                "{option} {}: that is the input {}; writing it would replace it",
                output.display(),
                input.display()
            ));
        }
    }
    Ok(())
}

/// The text of a caught panic's payload (the cuBLAS peer's guard) (`panic!` gives a `String` or a `&str`).
#[cfg(feature = "cuda")]
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
}
