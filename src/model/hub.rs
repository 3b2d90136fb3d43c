//! Downloading a model from the Hugging Face hub into the local cache (cargo feature
//! `hub`; the `tessera` command has it on). [`ModelFiles::locate`] never touches
//! the network; [`ModelFiles::locate_or_download`] downloads what `locate` could
//! not find: the files of the repository's `main` revision that tessera reads —
//! `config.json`, `preprocessor_config.json` when there is one, and
//! `model.safetensors`, or the index and only the shards that hold vision-tower
//! tensors — into the same cache `huggingface_hub` uses, so either tool finds what
//! the other fetched.
//!
//! Environment, as `huggingface_hub` reads it: `HF_ENDPOINT` (default
//! `https://huggingface.co`), `HF_TOKEN` (else the token file at `HF_TOKEN_PATH`,
//! `$HF_HOME/token` or `~/.cache/huggingface/token`), `HF_HUB_OFFLINE=1` (download
//! nothing), and the cache folders of [`hub_cache_dir`].

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

use super::files::{hub_cache_dir, hub_id, ModelFiles, CONFIG, INDEX, PREPROCESSOR, SINGLE};
use super::loader::{is_vision_name, MAX_INDEX_BYTES};
use crate::error::{Error, Result};

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

impl ModelFiles {
    /// [`ModelFiles::locate`], and where that fails for a hub id `org/name` (no
    /// such folder here, or not whole in the cache), download the model's files
    /// from the hub into the local cache first (see the [module](crate::model::hub) docs for
    /// the environment it reads). With `HF_HUB_OFFLINE=1` this is `locate`.
    /// `progress`: say on stderr that the model is being downloaded, with a bar
    /// per file where stderr is a terminal.
    ///
    /// Errors name the hub id and the endpoint: no such repository, a gated or
    /// private one without a token, a repository with no safetensors weights,
    /// the network.
    pub fn locate_or_download(spec: impl AsRef<Path>, progress: bool) -> Result<Self> {
        let spec = spec.as_ref();
        let local = match Self::locate(spec) {
            Ok(files) => return Ok(files),
            Err(e) => e,
        };
        let Some(id) = hub_id(spec).filter(|_| !spec.exists()) else {
            return Err(local);
        };
        if offline() {
            return Err(hub_error(
                &id,
                format!("HF_HUB_OFFLINE is set, so it was not downloaded ({local})"),
            ));
        }
        let cache = hub_cache_dir().ok_or_else(|| {
            hub_error(
                &id,
                "no Hugging Face cache folder to download into (set HF_HUB_CACHE or HF_HOME)"
                    .into(),
            )
        })?;
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let endpoint = endpoint.trim_end_matches('/').to_string();
        if progress {
            eprintln!(
                "tessera: {id} is not in the local Hugging Face cache: downloading it from \
                 {endpoint} into {}",
                cache.display()
            );
        }
        download(&id, &cache, &endpoint, progress)
    }
}

/// Whether `HF_HUB_OFFLINE` is set to a true value (`1`, `true`, `yes`, `on`), as
/// huggingface_hub reads it: then nothing is downloaded.
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// The token: `HF_TOKEN`, else the file at `HF_TOKEN_PATH`, `$HF_HOME/token` or
/// `~/.cache/huggingface/token`.
fn token() -> Option<String> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(t) = var("HF_TOKEN") {
        return t
            .into_string()
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
    }
    let file = var("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .or_else(|| var("HF_HOME").map(|h| PathBuf::from(h).join("token")))
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/token")))?;
    let text = std::fs::read_to_string(file).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

fn hub_error(id: &str, msg: String) -> Error {
    Error::Hub {
        id: id.to_string(),
        msg,
    }
}

/// What a failed request means, in words.
fn request_error(id: &str, endpoint: &str, what: &str, e: ApiError) -> Error {
    let msg = match &e {
        ApiError::RequestError(re) => match re.as_ref() {
            ureq::Error::Status(404, _) => format!(
                "{what}: not found on {endpoint} (no such model, or no such file in it; \
                 not a folder here either)"
            ),
            ureq::Error::Status(code @ (401 | 403), _) => format!(
                "{what}: {endpoint} refused access ({code}): a gated or private model needs \
                 a token (HF_TOKEN, or `huggingface-cli login`) with access to it"
            ),
            ureq::Error::Status(code, _) => format!("{what}: {endpoint} answered {code}"),
            ureq::Error::Transport(t) => format!(
                "{what}: could not reach {endpoint}: {t} (set HF_HUB_OFFLINE=1 to use only \
                 the local cache, HF_ENDPOINT for a mirror)"
            ),
        },
        other => format!("{what}: {other}"),
    };
    hub_error(id, msg)
}

/// Which files of a repository tessera reads, from its file list; the shards of
/// an index are added once the index is here.
#[derive(Debug, PartialEq, Eq)]
struct Wanted {
    files: Vec<&'static str>,
    sharded: bool,
}

fn wanted(id: &str, siblings: &[String]) -> Result<Wanted> {
    let has = |f: &str| siblings.iter().any(|s| s == f);
    if !has(CONFIG) {
        return Err(hub_error(
            id,
            format!("the repository has no {CONFIG}: not a transformers model"),
        ));
    }
    let mut files = vec![CONFIG];
    if has(PREPROCESSOR) {
        files.push(PREPROCESSOR);
    }
    let sharded = if has(SINGLE) {
        files.push(SINGLE);
        false
    } else if has(INDEX) {
        files.push(INDEX);
        true
    } else {
        let other: Vec<&str> = siblings
            .iter()
            .map(String::as_str)
            .filter(|s| s.ends_with(".bin") || s.ends_with(".safetensors") || s.ends_with(".pt"))
            .collect();
        return Err(hub_error(
            id,
            format!(
                "the repository has neither {SINGLE} nor {INDEX}; tessera reads safetensors \
                 weights only (its weight files: {})",
                if other.is_empty() {
                    "none".to_string()
                } else {
                    other.join(", ")
                }
            ),
        ));
    };
    Ok(Wanted { files, sharded })
}

/// The shards of an index that hold vision-tower tensors, sorted, each a plain
/// file name (as the loader requires).
fn vision_shards(id: &str, index: &Path) -> Result<Vec<String>> {
    let bad = |msg: String| hub_error(id, format!("{}: {msg}", index.display()));
    let len = std::fs::metadata(index)
        .map_err(|e| Error::io(index, e))?
        .len();
    if len > MAX_INDEX_BYTES {
        return Err(bad(format!("{len} bytes is too large for an index")));
    }
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let root: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = root
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("has no `weight_map` object".into()))?;
    let mut shards: Vec<String> = Vec::new();
    for (name, shard) in map.iter().filter(|(n, _)| is_vision_name(n)) {
        let shard = shard
            .as_str()
            .filter(|s| {
                !s.is_empty()
                    && !s.contains(['/', '\\'])
                    && *s != "."
                    && *s != ".."
                    && s.ends_with(".safetensors")
            })
            .ok_or_else(|| {
                bad(format!(
                    "`{name}` is mapped to {shard}, not a shard file name"
                ))
            })?;
        if !shards.iter().any(|s| s == shard) {
            shards.push(shard.to_string());
        }
    }
    shards.sort_unstable();
    Ok(shards)
}

/// One file into the cache (none downloaded when `snapshot`, the folder of the
/// revision the hub named, has it already);
/// hf-hub's own panics (a redirect with no location) become errors.
fn fetch_file(
    id: &str,
    endpoint: &str,
    repo: &ApiRepo,
    snapshot: &Path,
    file: &str,
) -> Result<PathBuf> {
    let here = snapshot.join(file);
    if here.is_file() {
        return Ok(here);
    }
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| repo.download(file)))
        .map_err(|p| {
            let why = crate::error::panic_text(p.as_ref()).unwrap_or_default();
            hub_error(id, format!("{file}: the download failed: {why}"))
        })?;
    got.map_err(|e| request_error(id, endpoint, file, e))
}

fn download(id: &str, cache: &Path, endpoint: &str, progress: bool) -> Result<ModelFiles> {
    let api = ApiBuilder::from_cache(Cache::new(cache.to_path_buf()))
        .with_endpoint(endpoint.to_string())
        .with_token(token())
        .with_progress(progress)
        .with_retries(3)
        .build()
        .map_err(|e| hub_error(id, format!("cannot start a hub client: {e}")))?;
    let repo = api.repo(Repo::new(id.to_string(), RepoType::Model));
    let info = repo
        .info()
        .map_err(|e| request_error(id, endpoint, "the repository's file list", e))?;
    let siblings: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let want = wanted(id, &siblings)?;
    if info.sha.is_empty() || !info.sha.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(hub_error(
            id,
            format!(
                "{endpoint} gave a revision `{}` that is no commit id",
                info.sha
            ),
        ));
    }
    let snapshot = cache
        .join(format!("models--{}", id.replace('/', "--")))
        .join("snapshots")
        .join(&info.sha);
    let mut got = Vec::new();
    for file in &want.files {
        got.push(fetch_file(id, endpoint, &repo, &snapshot, file)?);
    }
    if want.sharded {
        let index = got.last().cloned().unwrap_or_default();
        for shard in vision_shards(id, &index)? {
            got.push(fetch_file(id, endpoint, &repo, &snapshot, &shard)?);
        }
    }
    // Every file lands in the snapshot of the commit the hub named for it; a push
    // between two files would split them over two snapshots.
    let dir = got[0].parent().map(Path::to_path_buf).unwrap_or_default();
    if got.iter().any(|p| p.parent() != Some(dir.as_path())) {
        return Err(hub_error(
            id,
            "the repository changed during the download (its files came from two \
             revisions); run again"
                .into(),
        ));
    }
    ModelFiles::in_dir(&dir, Some(id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_files_tessera_reads_are_chosen_from_the_list() {
        let single = wanted(
            "a/b",
            &names(&[
                "README.md",
                CONFIG,
                PREPROCESSOR,
                SINGLE,
                "pytorch_model.bin",
            ]),
        )
        .unwrap();
        assert_eq!(single.files, vec![CONFIG, PREPROCESSOR, SINGLE]);
        assert!(!single.sharded);
        let sharded = wanted(
            "a/b",
            &names(&[CONFIG, INDEX, "model-00001-of-00002.safetensors"]),
        )
        .unwrap();
        assert_eq!(sharded.files, vec![CONFIG, INDEX]);
        assert!(sharded.sharded);
        let e = wanted("a/b", &names(&[CONFIG, "pytorch_model.bin"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a/b") && e.contains("pytorch_model.bin"), "{e}");
        let e = wanted("a/b", &names(&[SINGLE])).unwrap_err().to_string();
        assert!(e.contains("no config.json"), "{e}");
    }

    #[test]
    fn only_vision_shards_are_fetched_and_names_are_plain() {
        let dir = std::env::temp_dir().join(format!("tessera-hub-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let index = dir.join(INDEX);
        std::fs::write(
            &index,
            r#"{"weight_map": {
                "text_model.embeddings.token_embedding.weight": "model-00001-of-00003.safetensors",
                "vision_model.post_layernorm.weight": "model-00003-of-00003.safetensors",
                "vision_model.embeddings.patch_embedding.weight": "model-00002-of-00003.safetensors",
                "vision_model.head.probe": "model-00003-of-00003.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(
            vision_shards("a/b", &index).unwrap(),
            vec![
                "model-00002-of-00003.safetensors",
                "model-00003-of-00003.safetensors"
            ]
        );
        std::fs::write(
            &index,
            r#"{"weight_map": {"vision_model.post_layernorm.weight": "../evil.safetensors"}}"#,
        )
        .unwrap();
        let e = vision_shards("a/b", &index).unwrap_err().to_string();
        assert!(e.contains("not a shard file name"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
