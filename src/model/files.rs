//! Where a model's files are: a folder, or a hub id (`org/name`) found in the
//! local Hugging Face cache; and which files in it (config, single or sharded
//! weights, preprocessor config). See MODEL.md, "Files".

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The checkpoint's weight files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightFiles {
    /// One `model.safetensors`.
    Single(PathBuf),
    /// `model.safetensors.index.json`, whose `weight_map` names a shard per tensor.
    Sharded(PathBuf),
}

impl WeightFiles {
    /// The file named in messages: the safetensors file or the index.
    pub fn path(&self) -> &Path {
        match self {
            WeightFiles::Single(p) | WeightFiles::Sharded(p) => p,
        }
    }
}

/// The files of one model, found by [`ModelFiles::locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The folder holding them (a snapshot folder for a hub id).
    pub dir: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// The weights.
    pub weights: WeightFiles,
    /// `preprocessor_config.json`, when the model has one.
    pub preprocessor: Option<PathBuf>,
    /// The hub id the folder was found for, when `locate` was given one.
    pub hub_id: Option<String>,
}

pub(crate) const CONFIG: &str = "config.json";
pub(crate) const SINGLE: &str = "model.safetensors";
pub(crate) const INDEX: &str = "model.safetensors.index.json";
pub(crate) const PREPROCESSOR: &str = "preprocessor_config.json";

impl ModelFiles {
    /// Find a model: `spec` is a folder holding `config.json` and
    /// `model.safetensors` (or `model.safetensors.index.json` and its shards), or
    /// a hub id `org/name` that is no folder here, looked up in the local Hugging
    /// Face cache (see [`hub_cache_dir`]). Nothing is downloaded (with the `hub`
    /// feature, `ModelFiles::locate_or_download` does). Errors say where tessera
    /// looked.
    ///
    /// ```
    /// let files = tessera::model::ModelFiles::locate("assets/mga_tiny")?;
    /// assert!(files.config.ends_with("config.json"));
    /// # Ok::<(), tessera::Error>(())
    /// ```
    pub fn locate(spec: impl AsRef<Path>) -> Result<Self> {
        ConfigFiles::locate(spec)?.weights()
    }
}

/// A model's configuration files without its weights, found by
/// [`ConfigFiles::locate`] as [`ModelFiles::locate`] finds a model: what a program
/// checks its options and inputs against before it reads (or, with the `hub`
/// feature, downloads) gigabytes of weights; [`ConfigFiles::weights`] then finds
/// the weights beside them.
///
/// ```
/// let config = tessera::model::ConfigFiles::locate("assets/mga_tiny")?;
/// let model = config.weights()?;
/// assert_eq!(model.config, config.config);
/// # Ok::<(), tessera::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFiles {
    /// The folder holding them (a snapshot folder for a hub id).
    pub dir: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// `preprocessor_config.json`, when the model has one.
    pub preprocessor: Option<PathBuf>,
    /// The hub id the folder was found for, when `locate` was given one.
    pub hub_id: Option<String>,
}

impl ConfigFiles {
    /// Find a model's `config.json` (and `preprocessor_config.json`): `spec` is a
    /// folder, or a hub id `org/name` that is no folder here, looked up in the
    /// local Hugging Face cache (its `refs/main` snapshot). The weights need not be
    /// there. Nothing is downloaded (with the `hub` feature,
    /// `ConfigFiles::locate_or_download` does). Errors say where tessera looked.
    pub fn locate(spec: impl AsRef<Path>) -> Result<Self> {
        let spec = spec.as_ref();
        if spec.is_dir() {
            return Self::in_dir(spec, None);
        }
        let Some(id) = hub_id(spec) else {
            return Err(not_found(
                spec,
                "model directory not found (expected config.json and model.safetensors in it)",
            ));
        };
        let cache = hub_cache_dir().ok_or_else(|| {
            not_found(
                spec,
                "no such model folder, and no Hugging Face cache to look in (set HF_HUB_CACHE or HF_HOME)",
            )
        })?;
        let repo = hf_hub::Cache::new(cache.clone()).model(id.clone());
        let folder = cache.join(format!("models--{}", id.replace('/', "--")));
        let Some(config) = repo.get(CONFIG) else {
            let why = if folder.is_dir() {
                format!(
                    "no such model folder; the Hugging Face cache has {} but no {CONFIG} under \
                     its refs/main snapshot (download it with `huggingface-cli download {id}`)",
                    folder.display()
                )
            } else {
                format!(
                    "no such model folder, and not in the Hugging Face cache (looked for {}; \
                     download it with `huggingface-cli download {id}`)",
                    folder.display()
                )
            };
            return Err(not_found(spec, &why));
        };
        let dir = config
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| not_found(spec, "the cached config.json has no folder"))?;
        Self::in_dir(&dir, Some(id))
    }

    pub(crate) fn in_dir(dir: &Path, hub_id: Option<String>) -> Result<Self> {
        let config = dir.join(CONFIG);
        if !config.is_file() {
            return Err(not_found(
                &config,
                "missing (a model folder needs config.json)",
            ));
        }
        let preprocessor = Some(dir.join(PREPROCESSOR)).filter(|p| p.is_file());
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            preprocessor,
            hub_id,
        })
    }

    /// The model's files: these and the weights beside them (`model.safetensors`,
    /// or `model.safetensors.index.json` for a sharded checkpoint). Nothing is
    /// downloaded (with the `hub` feature, `ConfigFiles::weights_or_download` does).
    pub fn weights(&self) -> Result<ModelFiles> {
        let single = self.dir.join(SINGLE);
        let index = self.dir.join(INDEX);
        let weights = if single.is_file() {
            WeightFiles::Single(single)
        } else if index.is_file() {
            WeightFiles::Sharded(index)
        } else {
            return Err(not_found(
                &single,
                &format!("missing (and no {INDEX} for a sharded checkpoint)"),
            ));
        };
        Ok(ModelFiles {
            dir: self.dir.clone(),
            config: self.config.clone(),
            weights,
            preprocessor: self.preprocessor.clone(),
            hub_id: self.hub_id.clone(),
        })
    }
}

/// `org/name` when `spec` has that form (two non-empty parts of letters, digits,
/// `-`, `_` and `.`, not starting with a dot).
pub(crate) fn hub_id(spec: &Path) -> Option<String> {
    let s = spec.to_str()?;
    let (org, name) = s.split_once('/')?;
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (part_ok(org) && part_ok(name)).then(|| s.to_string())
}

/// The Hugging Face hub cache folder, as huggingface_hub chooses it:
/// `$HF_HUB_CACHE`, else `hub` in the Hugging Face home ([`hf_home`]).
pub fn hub_cache_dir() -> Option<PathBuf> {
    match std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => hf_home().map(|h| h.join("hub")),
    }
}

/// The Hugging Face home, as huggingface_hub chooses it: `$HF_HOME`, else
/// `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub fn hf_home() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = var("HF_HOME") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = var("XDG_CACHE_HOME") {
        return Some(PathBuf::from(p).join("huggingface"));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface"))
}

fn not_found(path: &Path, why: &str) -> Error {
    Error::io(
        path,
        std::io::Error::new(std::io::ErrorKind::NotFound, why.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_recognised() {
        assert_eq!(
            hub_id(Path::new("google/siglip-so400m-patch14-384")).as_deref(),
            Some("google/siglip-so400m-patch14-384")
        );
        for not in [
            "model", "a/b/c", "./x", "../x/y", "/abs/x", "a/", "/a", "a b/c",
        ] {
            assert_eq!(hub_id(Path::new(not)), None, "{not}");
        }
    }
}
