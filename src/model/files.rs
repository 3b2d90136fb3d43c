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
        Self::locate_at(spec, None)
    }

    /// [`ConfigFiles::locate`] at a revision of a hub id: `revision` is a branch, a
    /// tag or a commit id (40 hex digits), as transformers' `from_pretrained(...,
    /// revision=...)` takes it; `None` is `main`. The cache holds a branch's or
    /// tag's commit in `refs/REVISION` (written when it was downloaded) and each
    /// commit's files in `snapshots/COMMIT`. A folder takes no revision: naming
    /// one with a folder is an error.
    ///
    /// ```
    /// use tessera::model::ConfigFiles;
    /// let err = ConfigFiles::locate_at("assets/mga_tiny", Some("v1.0")).unwrap_err();
    /// assert!(err.to_string().contains("a folder"));
    /// ```
    pub fn locate_at(spec: impl AsRef<Path>, revision: Option<&str>) -> Result<Self> {
        let spec = spec.as_ref();
        if spec.is_dir() {
            if let Some(rev) = revision {
                return Err(not_found(
                    spec,
                    &format!(
                        "is a folder here, and a revision ({rev}) names a commit of a hub id \
                         `org/name`: give the folder without one"
                    ),
                ));
            }
            return Self::in_dir(spec, None);
        }
        let Some(id) = hub_id(spec) else {
            let what = if spec.is_file() {
                "is a file, not a model folder (one with config.json and model.safetensors \
                 in it)"
            } else {
                "model directory not found (expected config.json and model.safetensors in it)"
            };
            return Err(not_found(spec, what));
        };
        let rev = revision.unwrap_or("main");
        check_revision(&id, rev)?;
        let cache = hub_cache_dir().ok_or_else(|| {
            not_found(
                spec,
                "no such model folder, and no Hugging Face cache to look in (set HF_HUB_CACHE or HF_HOME)",
            )
        })?;
        let folder = cache.join(format!("models--{}", id.replace('/', "--")));
        let snapshot = cached_snapshot(&folder, rev);
        let Some(dir) = snapshot.as_ref().filter(|s| s.join(CONFIG).is_file()) else {
            let download = match revision {
                Some(rev) => format!("`huggingface-cli download {id} --revision {rev}`"),
                None => format!("`huggingface-cli download {id}`"),
            };
            let why = if folder.is_dir() {
                let place = match &snapshot {
                    Some(s) if s.is_dir() => format!("in {}", s.display()),
                    Some(s) => format!("(no {})", s.display()),
                    // (A commit id is 40 lowercase hex digits; others are refs.)
                    None => format!("(no refs/{rev} naming a commit)"),
                };
                format!(
                    "no such model folder; the Hugging Face cache has {} but no {CONFIG} of \
                     its revision {rev} {place} (download it with {download})",
                    folder.display()
                )
            } else {
                format!(
                    "no such model folder, and not in the Hugging Face cache (looked for {}; \
                     download it with {download})",
                    folder.display()
                )
            };
            return Err(not_found(spec, &why));
        };
        Self::in_dir(dir, Some(id))
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
        } else if single.exists() {
            return Err(not_found(&single, "is not a file (a folder, or a device)"));
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

/// A commit id as huggingface_hub tells one from a branch or tag name: 40
/// lowercase hex digits.
pub(crate) fn is_commit(revision: &str) -> bool {
    revision.len() == 40
        && revision
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A revision tessera takes: a branch, a tag or a commit id of letters, digits,
/// `-`, `_` and `.`, not starting with a dot (it names a file under `refs/` and a
/// URL path segment). `refs/pr/N` and other names with `/` are refused.
pub(crate) fn check_revision(id: &str, revision: &str) -> Result<()> {
    let ok = !revision.is_empty()
        && revision.len() <= 128
        && !revision.starts_with('.')
        && revision
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        return Ok(());
    }
    Err(Error::Hub {
        id: id.to_string(),
        msg: format!(
            "revision `{revision}`: a branch, a tag or a commit id of letters, digits, `-`, \
             `_` and `.` (names with `/`, such as refs/pr/N, are not supported)"
        ),
    })
}

/// The snapshot folder of `revision` in a model's cache folder (`models--ORG--NAME`):
/// `snapshots/REVISION` for a commit id, else `snapshots/COMMIT` for the commit
/// `refs/REVISION` names; `None` where no ref names a commit.
pub(crate) fn cached_snapshot(folder: &Path, revision: &str) -> Option<PathBuf> {
    let commit = if is_commit(revision) {
        revision.to_string()
    } else {
        let named = std::fs::read_to_string(folder.join("refs").join(revision)).ok()?;
        named.trim().to_string()
    };
    is_commit(&commit).then(|| folder.join("snapshots").join(commit))
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
    fn revisions_and_their_snapshots() {
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert!(is_commit(commit));
        for not in ["main", "v1.0", &commit.to_uppercase(), &commit[1..]] {
            assert!(!is_commit(not), "{not}");
        }
        for ok in ["main", "v1.0", "release_2-b", commit] {
            assert!(check_revision("o/n", ok).is_ok(), "{ok}");
        }
        for bad in ["", "refs/pr/1", "../main", ".hidden", "a b", "é"] {
            let err = check_revision("o/n", bad).unwrap_err().to_string();
            assert!(
                err.contains("o/n") && err.contains("revision"),
                "{bad}: {err}"
            );
        }
        let folder = std::env::temp_dir().join(format!("tessera-refs-{}", std::process::id()));
        std::fs::create_dir_all(folder.join("refs")).unwrap();
        std::fs::write(folder.join("refs/v1"), format!("{commit}\n")).unwrap();
        std::fs::write(folder.join("refs/bad"), "../../escape").unwrap();
        let snapshot = folder.join("snapshots").join(commit);
        assert_eq!(cached_snapshot(&folder, "v1"), Some(snapshot.clone()));
        assert_eq!(cached_snapshot(&folder, commit), Some(snapshot));
        assert_eq!(cached_snapshot(&folder, "bad"), None);
        assert_eq!(cached_snapshot(&folder, "main"), None);
        let _ = std::fs::remove_dir_all(&folder);
    }

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
