//! Downloading a model from the Hugging Face hub into the local cache (cargo feature
//! `hub`; the `tessera` command has it on). [`ModelFiles::locate`] never touches
//! the network; [`ModelFiles::locate_or_download`] downloads what `locate` could
//! not find: the files of the repository's `main` revision (or of a branch, tag
//! or commit, [`ConfigFiles::locate_or_download_at`]) that tessera reads
//! (the weights of the commit whose config is cached, when only they are missing) —
//! `config.json`, `preprocessor_config.json` when there is one, and
//! `model.safetensors`, or the index and only the shards that hold vision-tower
//! tensors — into the same cache `huggingface_hub` uses (`blobs/ETAG`,
//! `snapshots/COMMIT/FILE` linked to it, `refs/main`, `refs/BRANCH` or
//! `refs/TAG`), so either tool finds what the other fetched.
//!
//! Every file is checked before it enters the cache: its size, and its hash
//! against the hub's ETag (SHA-256 for large files, the git blob SHA-1 for small
//! ones); a download cut short is resumed (three times within a run, and by the
//! next run) from its `.incomplete` file (as
//! huggingface_hub names it, so either tool resumes the other's); two jobs
//! downloading one file take turns (huggingface_hub's lock file for it, under
//! `.locks/`). Names the server sends
//! (commit, ETag) are used as file names only when they are plain hex.
//!
//! Environment, as `huggingface_hub` reads it: `HF_ENDPOINT` (default
//! `https://huggingface.co`), `HF_TOKEN` (else the token file at `HF_TOKEN_PATH`,
//! else `token` in the Hugging Face home, see [`hf_home`]), `HF_HUB_OFFLINE=1` or
//! `TRANSFORMERS_OFFLINE=1` (download nothing), the cache folders of
//! [`hub_cache_dir`], and `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` with
//! `NO_PROXY`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha1::Digest as _;

use super::files::{
    hf_home, hub_cache_dir, hub_id, is_commit, ConfigFiles, ModelFiles, WeightFiles, CONFIG, INDEX,
    PREPROCESSOR, SINGLE,
};
use super::loader::vision_weight_map;
use crate::error::{Error, Result};

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

impl ModelFiles {
    /// [`ModelFiles::locate`], and where that fails for a hub id `org/name` (no
    /// such folder here, or not whole in the cache), download the model's files
    /// from the hub into the local cache first (see the
    /// [module](crate::model::hub) docs for the environment it reads). With
    /// `HF_HUB_OFFLINE=1` this is `locate`. `progress`: say on stderr what is
    /// downloaded, with its progress where stderr is a terminal.
    ///
    /// This is [`ConfigFiles::locate_or_download`] then
    /// [`ConfigFiles::weights_or_download`]; a program that checks its options
    /// against the config calls the two itself, so that a wrong option costs no
    /// download of the weights.
    ///
    /// Errors name the hub id and the endpoint: no such repository (or a gated
    /// or private one without a token), a repository with no safetensors
    /// weights, the network, a file whose bytes do not match the hub's hash.
    pub fn locate_or_download(spec: impl AsRef<Path>, progress: bool) -> Result<Self> {
        ConfigFiles::locate_or_download(spec, progress)?.weights_or_download(progress)
    }
}

impl ConfigFiles {
    /// [`ConfigFiles::locate`], and where that fails for a hub id `org/name` (no
    /// such folder here, no `config.json` in the cache), download the config files
    /// of the repository's `main` revision into the local cache first
    /// (`config.json`, `preprocessor_config.json` when there is one; a
    /// repository without safetensors weights is refused here already). With
    /// `HF_HUB_OFFLINE=1` this is `locate`. Errors as
    /// [`ModelFiles::locate_or_download`]'s.
    pub fn locate_or_download(spec: impl AsRef<Path>, progress: bool) -> Result<Self> {
        Self::locate_or_download_at(spec, None, progress)
    }

    /// [`ConfigFiles::locate_or_download`] at a revision of a hub id (a branch, a
    /// tag or a commit id; `None` is `main`), as [`ConfigFiles::locate_at`] finds
    /// it in the cache. A branch or tag is looked up on the hub only where the cache
    /// has no `refs/REVISION` for it (a branch moved on the hub is not followed: as
    /// for `main`, delete the ref to download it afresh); after a download the cache
    /// has the ref, as huggingface_hub writes it.
    pub fn locate_or_download_at(
        spec: impl AsRef<Path>,
        revision: Option<&str>,
        progress: bool,
    ) -> Result<Self> {
        let spec = spec.as_ref();
        let hub = hub_id(spec).filter(|_| !spec.exists());
        let local = match Self::locate_at(spec, revision) {
            Ok(files) if hub.is_none() || offline() || files.weights().is_ok() => return Ok(files),
            // The config cached without its weights (a config-only download, or
            // `hf download ID config.json`): its preprocessor config may be missing
            // too, and the weights will be downloaded anyway, so the config files of
            // that commit are completed first (those here are kept).
            Ok(files) => {
                let Some((commit, repo)) = files.snapshot() else {
                    return Ok(files);
                };
                let id = files.hub_id.clone().unwrap_or_default();
                // (Not offline: the arm above took that case.)
                let hub = Hub::at_endpoint(&id, progress);
                let snapshot = hub.download(repo, commit, false)?;
                return Self::in_dir(&snapshot, files.hub_id.clone());
            }
            // A revision tessera does not take is no download either.
            Err(e @ Error::Hub { .. }) => return Err(e),
            Err(e) => e,
        };
        let Some(id) = hub else {
            return Err(local);
        };
        let cache = hub_cache_dir().ok_or_else(|| {
            hub_error(
                &id,
                "no Hugging Face cache folder to download into (set HF_HUB_CACHE or HF_HOME)"
                    .into(),
            )
        })?;
        let hub = Hub::connect(&id, progress, local)?;
        if progress {
            eprintln!(
                "tessera: {id} is not in the local Hugging Face cache: downloading it from \
                 {} into {}",
                hub.endpoint,
                cache.display()
            );
        }
        let repo = cache.join(format!("models--{}", id.replace('/', "--")));
        let snapshot = hub.download(&repo, revision.unwrap_or("main"), false)?;
        Self::in_dir(&snapshot, Some(id))
    }

    /// The commit and the model's cache folder of a hub snapshot folder
    /// (CACHE/models--ORG--NAME/snapshots/COMMIT), when this is one.
    fn snapshot(&self) -> Option<(&str, &Path)> {
        self.hub_id.as_ref()?;
        let commit = self
            .dir
            .file_name()
            .and_then(|c| c.to_str())
            .filter(|c| plain_hex(c))?;
        let repo = self
            .dir
            .parent()
            .filter(|p| p.ends_with("snapshots"))
            .and_then(Path::parent)?;
        Some((commit, repo))
    }

    /// [`ConfigFiles::weights`], and where the weights of a hub snapshot are not
    /// whole in the cache (none, or shards of a sharded checkpoint missing),
    /// download them first: those of the snapshot's own commit, so that the
    /// config already read and the weights agree. With `HF_HUB_OFFLINE=1` this is
    /// `weights`. Errors as [`ModelFiles::locate_or_download`]'s.
    pub fn weights_or_download(&self, progress: bool) -> Result<ModelFiles> {
        let local = match self.weights() {
            Ok(files) if self.hub_id.is_none() => return Ok(files),
            // A sharded checkpoint whose download stopped has its index but not
            // every shard: that is for the download below to finish.
            Ok(files) => match missing_shards(&files) {
                missing if missing.is_empty() => return Ok(files),
                missing => hub_error(
                    self.hub_id.as_deref().unwrap_or_default(),
                    format!(
                        "the cached checkpoint lacks its shards {}",
                        missing.join(", ")
                    ),
                ),
            },
            Err(e) => e,
        };
        let Some(id) = &self.hub_id else {
            return Err(local);
        };
        let Some((commit, repo)) = self.snapshot() else {
            return Err(local);
        };
        let hub = Hub::connect(id, progress, local)?;
        if progress {
            eprintln!(
                "tessera: downloading the weights of {id} (commit {commit}) from {}",
                hub.endpoint
            );
        }
        let snapshot = hub.download(repo, commit, true)?;
        ConfigFiles::in_dir(&snapshot, Some(id.clone()))?.weights()
    }
}

/// The vision shards a sharded checkpoint's index names that are not beside it
/// (none for a single file, or when the index cannot be read: the loader says why).
fn missing_shards(files: &ModelFiles) -> Vec<String> {
    match &files.weights {
        WeightFiles::Sharded(index) => vision_shards("", index)
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !files.dir.join(s).is_file())
            .collect(),
        WeightFiles::Single(_) => Vec::new(),
    }
}

/// Whether `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is set to a true value
/// (`1`, `true`, `yes`, `on`), as huggingface_hub reads them: then nothing is
/// downloaded.
pub fn offline() -> bool {
    ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"].iter().any(|k| {
        std::env::var(k).is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
    })
}

/// The token: `HF_TOKEN`, else the file at `HF_TOKEN_PATH`, else `token` in the
/// Hugging Face home.
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
        .or_else(|| hf_home().map(|h| h.join("token")))?;
    let text = std::fs::read_to_string(file).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

fn hub_error(id: &str, msg: String) -> Error {
    Error::Hub {
        id: id.to_string(),
        msg,
    }
}

/// A name the server gave (a commit, an ETag) that becomes a file name: plain
/// hex only, so it cannot climb out of the cache.
fn plain_hex(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The proxy for `endpoint` from the environment (`HTTPS_PROXY`, `HTTP_PROXY`,
/// `ALL_PROXY`, upper or lower case), unless `NO_PROXY` names its host.
fn proxy_for(endpoint: &str) -> Option<String> {
    let var = |k: &str| {
        std::env::var(k)
            .or_else(|_| std::env::var(k.to_ascii_lowercase()))
            .ok()
            .filter(|v| !v.trim().is_empty())
    };
    let host = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(endpoint)
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if let Some(no) = var("NO_PROXY") {
        let skip = no.split(',').map(str::trim).any(|n| {
            let n = n.trim_start_matches('.').to_ascii_lowercase();
            n == "*" || (!n.is_empty() && (host == n || host.ends_with(&format!(".{n}"))))
        });
        if skip {
            return None;
        }
    }
    let scheme = if endpoint.starts_with("https:") {
        "HTTPS_PROXY"
    } else {
        "HTTP_PROXY"
    };
    var(scheme).or_else(|| var("ALL_PROXY"))
}

/// A hub file's metadata, from the headers of its `resolve` URL.
struct Meta {
    /// The blob's name in the cache: the ETag (or X-Linked-Etag), plain hex.
    etag: String,
    /// Its size, where the hub says (X-Linked-Size, else Content-Length).
    size: Option<u64>,
}

/// One model's download: the client, the id and the endpoint.
struct Hub {
    id: String,
    endpoint: String,
    token: Option<String>,
    /// Follows redirects (to the hub's CDN), without the token across hosts.
    agent: ureq::Agent,
    /// Stops at the first answer: the hub's own headers (ETag, commit).
    direct: ureq::Agent,
    proxy: Option<String>,
    progress: bool,
}

impl Hub {
    /// The hub for `id` at `HF_ENDPOINT`, unless `HF_HUB_OFFLINE` is set: then
    /// the error says so, after `local` (why the cache was not enough).
    fn connect(id: &str, progress: bool, local: Error) -> Result<Self> {
        if offline() {
            return Err(hub_error(
                id,
                format!("HF_HUB_OFFLINE is set, so it was not downloaded ({local})"),
            ));
        }
        Ok(Self::at_endpoint(id, progress))
    }

    /// The hub for `id` at `HF_ENDPOINT` (else huggingface.co).
    fn at_endpoint(id: &str, progress: bool) -> Self {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        Self::new(id, endpoint.trim_end_matches('/'), progress)
    }

    fn new(id: &str, endpoint: &str, progress: bool) -> Self {
        let proxy = proxy_for(endpoint);
        let builder = || {
            let b = ureq::AgentBuilder::new()
                .user_agent(concat!("tessera/", env!("CARGO_PKG_VERSION")))
                .timeout_connect(std::time::Duration::from_secs(30))
                .timeout_read(std::time::Duration::from_secs(120));
            match proxy.as_deref().and_then(|p| ureq::Proxy::new(p).ok()) {
                Some(p) => b.proxy(p),
                None => b,
            }
        };
        Self {
            id: id.to_string(),
            endpoint: endpoint.to_string(),
            token: token(),
            agent: builder().redirects(8).build(),
            direct: builder().redirects(0).build(),
            proxy,
            progress,
        }
    }

    fn err(&self, msg: String) -> Error {
        hub_error(&self.id, msg)
    }

    fn get(&self, agent: &ureq::Agent, url: &str) -> ureq::Request {
        let req = agent.get(url).set("Accept-Encoding", "identity");
        match &self.token {
            Some(t) => req.set("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    /// What a failed request means, in words.
    fn request_error(&self, what: &str, e: ureq::Error) -> Error {
        let endpoint = &self.endpoint;
        self.err(match e {
            ureq::Error::Status(404, _) => format!(
                "{what}: not found on {endpoint} (no such model, or no such file in it; \
                 not a folder here either)"
            ),
            ureq::Error::Status(code @ (401 | 403), _) => format!(
                "{what}: {endpoint} refused it ({code}): no such model, or a gated or private \
                 one, which needs a token (HF_TOKEN, or `huggingface-cli login`) with access"
            ),
            ureq::Error::Status(code, _) => format!("{what}: {endpoint} answered {code}"),
            ureq::Error::Transport(t) => format!(
                "{what}: could not reach {endpoint}{}: {t} (HF_HUB_OFFLINE=1 uses only the \
                 local cache; HF_ENDPOINT names a mirror)",
                match &self.proxy {
                    Some(p) => format!(" through the proxy {p}"),
                    None => String::new(),
                }
            ),
        })
    }

    /// The repository's commit at `revision` (a branch, a tag or a commit) and its
    /// files; `cached`: `revision` is the commit of a snapshot in the cache.
    fn info(&self, revision: &str, cached: bool) -> Result<(String, Vec<String>)> {
        #[derive(serde::Deserialize)]
        struct Sibling {
            rfilename: String,
        }
        #[derive(serde::Deserialize)]
        struct Info {
            sha: String,
            siblings: Vec<Sibling>,
        }
        let what = "the repository's file list";
        let url = format!(
            "{}/api/models/{}/revision/{revision}",
            self.endpoint, self.id
        );
        let answer = self.get(&self.agent, &url).call().map_err(|e| match e {
            // The hub tells a revision it lacks from a repository it lacks (or
            // hides) by its error code, as huggingface_hub reads it.
            ureq::Error::Status(404, a)
                if a.header("X-Error-Code") == Some("RevisionNotFound")
                    || (cached && a.header("X-Error-Code").is_none()) =>
            {
                self.err(if cached {
                    // A commit named by the cache that the hub no longer has.
                    format!(
                        "{what}: {} has no commit {revision}, the one this model's cached \
                         snapshot is of (its history rewritten?): delete the snapshot \
                         folder snapshots/{revision} and the refs naming it to download \
                         afresh",
                        self.endpoint
                    )
                } else {
                    format!(
                        "{what}: {} has no revision `{revision}` of it (a branch, a tag or \
                         a commit id)",
                        self.endpoint
                    )
                })
            }
            e => self.request_error(what, e),
        })?;
        let info: Info = answer
            .into_string()
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            .map_err(|e| self.err(format!("{what}: {url} gave no model info: {e}")))?;
        if !plain_hex(&info.sha) {
            return Err(self.err(format!(
                "{what}: {} gave a revision `{}` that is no commit id",
                self.endpoint, info.sha
            )));
        }
        Ok((
            info.sha,
            info.siblings.into_iter().map(|s| s.rfilename).collect(),
        ))
    }

    fn url(&self, commit: &str, file: &str) -> String {
        format!("{}/{}/resolve/{commit}/{file}", self.endpoint, self.id)
    }

    /// The hub's own headers for `file` at `commit` (the answer before any
    /// redirect to a CDN, as huggingface_hub reads them).
    fn meta(&self, commit: &str, file: &str) -> Result<Meta> {
        let mut url = self.url(commit, file);
        for _ in 0..8 {
            let answer = match self
                .get(&self.direct, &url)
                .set("Range", "bytes=0-0")
                .call()
            {
                Ok(a) => a,
                Err(ureq::Error::Status(code, a)) if (300..400).contains(&code) => a,
                Err(e) => return Err(self.request_error(file, e)),
            };
            let header = |k: &str| answer.header(k).map(str::to_string);
            // A redirect within the hub (a renamed repository) is followed here;
            // one to another host carries the file, and this answer the metadata.
            if let Some(to) = header("Location").filter(|l| l.starts_with('/')) {
                if header("X-Repo-Commit").is_none() {
                    url = format!("{}{to}", self.endpoint);
                    continue;
                }
            }
            let got_commit = header("X-Repo-Commit").unwrap_or_default();
            if got_commit != commit {
                return Err(self.err(format!(
                    "{file}: {} answered for commit `{got_commit}`, not {commit}: run again",
                    self.endpoint
                )));
            }
            let etag = header("X-Linked-Etag")
                .or_else(|| header("ETag"))
                .unwrap_or_default();
            let etag = etag.trim().trim_start_matches("W/").trim_matches('"');
            if !plain_hex(etag) {
                return Err(self.err(format!(
                    "{file}: {} gave an ETag `{etag}` that is no hash",
                    self.endpoint
                )));
            }
            let size = header("X-Linked-Size")
                .or_else(|| {
                    header("Content-Range").and_then(|r| r.rsplit('/').next().map(str::to_string))
                })
                .and_then(|v| v.trim().parse().ok());
            return Ok(Meta {
                etag: etag.to_ascii_lowercase(),
                size,
            });
        }
        Err(self.err(format!("{file}: too many redirects at {}", self.endpoint)))
    }

    /// Download the model's files at `revision` (a branch, a tag or a commit) into
    /// `repo` (the model's folder in the cache), and return its snapshot folder:
    /// the config files; with `weights`, then the weights (the shards of an
    /// index after the index); `refs/REVISION` when `revision` is no commit id.
    fn download(&self, repo: &Path, revision: &str, weights: bool) -> Result<PathBuf> {
        let cached = is_commit(revision) && repo.join("snapshots").join(revision).is_dir();
        let (commit, siblings) = self.info(revision, cached)?;
        let want = wanted(&self.id, &siblings)?;
        let snapshot = repo.join("snapshots").join(&commit);
        for file in &want.files {
            if weights || matches!(*file, CONFIG | PREPROCESSOR) {
                self.fetch(repo, &commit, file)?;
            }
        }
        if weights && want.sharded {
            for shard in vision_shards(&self.id, &snapshot.join(INDEX))? {
                if !siblings.contains(&shard) {
                    return Err(self.err(format!(
                        "{INDEX} names the shard {shard}, which the repository does not have"
                    )));
                }
                self.fetch(repo, &commit, &shard)?;
            }
        }
        // A branch or tag: its commit in refs/REVISION (checked: no `/`, no dot
        // first), as huggingface_hub records it.
        if revision != commit {
            let refs = repo.join("refs");
            std::fs::create_dir_all(&refs)
                .and_then(|()| std::fs::write(refs.join(revision), &commit))
                .map_err(|e| Error::io(refs.join(revision), e))?;
        }
        Ok(snapshot)
    }

    /// One file into `repo`'s snapshot of `commit` (nothing fetched when it is
    /// there): its blob downloaded (or resumed) under a lock, checked, named by
    /// its ETag, and linked from the snapshot.
    fn fetch(&self, repo: &Path, commit: &str, file: &str) -> Result<()> {
        let link = repo.join("snapshots").join(commit).join(file);
        if link.is_file() {
            return Ok(());
        }
        let meta = self.meta(commit, file)?;
        let blobs = repo.join("blobs");
        let blob = blobs.join(&meta.etag);
        let io = |p: &Path, e: std::io::Error| Error::io(p, e);
        std::fs::create_dir_all(&blobs).map_err(|e| io(&blobs, e))?;
        // Where huggingface_hub keeps its lock for this blob (`.locks/REPO/ETAG.lock`,
        // flock on Unix as Python's filelock): the two tools take turns too.
        let locks = repo
            .parent()
            .unwrap_or(repo)
            .join(".locks")
            .join(repo.file_name().unwrap_or_default());
        std::fs::create_dir_all(&locks).map_err(|e| io(&locks, e))?;
        let lock_path = locks.join(format!("{}.lock", meta.etag));
        let lock = std::fs::File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
        if lock.try_lock().is_err() {
            if self.progress {
                eprintln!("tessera: {file}: waiting for another download of it to finish");
            }
            lock.lock().map_err(|e| io(&lock_path, e))?;
        }
        // A download cut short goes on from where it stopped, a few times.
        let mut tries = 0;
        while !blob.is_file() {
            match self.download_blob(commit, file, &meta, &blob)? {
                Stopped::No => {}
                Stopped::At(why) if tries < RETRIES => {
                    tries += 1;
                    if self.progress {
                        eprintln!(
                            "tessera: {file}: {why}; going on from there (retry {tries} of \
                             {RETRIES})"
                        );
                    }
                    std::thread::sleep(std::time::Duration::from_millis(500 << tries));
                }
                Stopped::At(why) => {
                    return Err(self.err(format!(
                        "{file}: {why}, {RETRIES} times; run again to go on from there"
                    )))
                }
            }
        }
        drop(lock);
        let dir = link.parent().unwrap_or(repo);
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        link_blob(&blob, &link, file.matches('/').count()).map_err(|e| io(&link, e))
    }

    /// `file`'s bytes into `blob`, through `blob.incomplete` (resumed where an
    /// earlier download stopped), checked against the size and the hash.
    fn download_blob(&self, commit: &str, file: &str, meta: &Meta, blob: &Path) -> Result<Stopped> {
        let part = blob.with_extension("incomplete");
        let io = |e: std::io::Error| Error::io(&part, e);
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&part)
            .map_err(io)?;
        let mut have = out.metadata().map_err(io)?.len();
        if meta.size.is_some_and(|s| have > s) {
            out.set_len(0).map_err(io)?;
            have = 0;
        }
        let mut req = self.get(&self.agent, &self.url(commit, file));
        if have > 0 {
            req = req.set("Range", &format!("bytes={have}-"));
        }
        let answer = match req.call() {
            Ok(a) => a,
            Err(ureq::Error::Transport(t)) => {
                return Ok(Stopped::At(format!("the connection failed ({t})")))
            }
            Err(e) => return Err(self.request_error(file, e)),
        };
        if answer.status() != 206 && have > 0 {
            // The whole file came: start over.
            out.set_len(0).map_err(io)?;
            have = 0;
        }
        let mut hash = Hash::for_etag(&meta.etag, meta.size);
        if have > 0 {
            out.seek(SeekFrom::Start(0)).map_err(io)?;
            let mut prefix = (&mut out).take(have);
            hash.read_all(&mut prefix).map_err(io)?;
        }
        let mut body = answer.into_reader();
        let mut buf = vec![0u8; 1 << 20];
        let mut done = have;
        let mut shown = 0u64;
        let tty = self.progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    out.sync_all().map_err(io)?;
                    if tty && shown > 0 {
                        eprintln!();
                    }
                    return Ok(Stopped::At(format!(
                        "the download stopped after {done} bytes ({e})"
                    )));
                }
            };
            out.write_all(&buf[..n]).map_err(io)?;
            hash.update(&buf[..n]);
            done += n as u64;
            if tty && done - shown >= 64 << 20 {
                shown = done;
                match meta.size {
                    Some(s) if s > 0 => eprint!("\r  {file}: {} %   ", done * 100 / s),
                    _ => eprint!("\r  {file}: {} MB   ", done >> 20),
                }
            }
        }
        out.sync_all().map_err(io)?;
        drop(out);
        if tty && shown > 0 {
            eprintln!();
        }
        let bad = |why: String| {
            let _ = std::fs::remove_file(&part);
            self.err(format!(
                "{file}: {why}: the download is discarded; run again"
            ))
        };
        match meta.size {
            Some(size) if done < size => {
                return Ok(Stopped::At(format!(
                    "the download stopped after {done} of {size} bytes"
                )))
            }
            Some(size) if done > size => {
                return Err(bad(format!("{done} bytes arrived, the hub said {size}")))
            }
            _ => {}
        }
        if !hash.matches(&meta.etag) {
            return Err(bad(format!(
                "its bytes do not hash to the hub's ETag {}",
                meta.etag
            )));
        }
        if self.progress {
            eprintln!("tessera: {file}: {done} bytes");
        }
        std::fs::rename(&part, blob).map_err(|e| Error::io(blob, e))?;
        Ok(Stopped::No)
    }
}

/// Times a download cut short is resumed within one run.
const RETRIES: u32 = 3;

/// Whether a download stopped short of its end (the bytes so far kept in the
/// `.incomplete` file), and why.
enum Stopped {
    No,
    At(String),
}

/// The hash an ETag names: SHA-256 (64 hex digits: large files, stored in git
/// LFS), the git blob SHA-1 (40: small files, `blob LEN\0` + the bytes), or
/// none that tessera can check (a mirror's own ETags).
enum Hash {
    Sha256(sha2::Sha256),
    GitSha1(sha1::Sha1),
    Unknown,
}

impl Hash {
    /// The hash of `etag`; a git blob's needs the `size` up front.
    fn for_etag(etag: &str, size: Option<u64>) -> Self {
        match (etag.len(), size) {
            (64, _) => Hash::Sha256(sha2::Sha256::new()),
            (40, Some(len)) => {
                let mut h = sha1::Sha1::new();
                h.update(format!("blob {len}\0").as_bytes());
                Hash::GitSha1(h)
            }
            _ => Hash::Unknown,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hash::Sha256(h) => h.update(bytes),
            Hash::GitSha1(h) => h.update(bytes),
            Hash::Unknown => {}
        }
    }

    fn read_all(&mut self, r: &mut impl Read) -> std::io::Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match r.read(&mut buf)? {
                0 => return Ok(()),
                n => self.update(&buf[..n]),
            }
        }
    }

    fn matches(self, etag: &str) -> bool {
        let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        match self {
            Hash::Sha256(h) => hex(&h.finalize()) == etag,
            Hash::GitSha1(h) => hex(&h.finalize()) == etag,
            Hash::Unknown => true,
        }
    }
}

/// The snapshot's `link` to `blob`: a relative symbolic link, as huggingface_hub
/// makes (`../../blobs/ETAG`, one more `..` per folder in the file's name);
/// elsewhere than Unix, a copy.
fn link_blob(blob: &Path, link: &Path, depth: usize) -> std::io::Result<()> {
    let _ = std::fs::remove_file(link);
    #[cfg(unix)]
    {
        let mut target = PathBuf::from("../..");
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(blob.file_name().unwrap_or_default());
        std::os::unix::fs::symlink(target, link)
    }
    #[cfg(not(unix))]
    {
        let _ = depth;
        std::fs::copy(blob, link).map(|_| ())
    }
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

/// The shards of an index that hold vision-tower tensors, sorted (the loader's
/// reading of the index), each a `.safetensors` file.
fn vision_shards(id: &str, index: &Path) -> Result<Vec<String>> {
    let mut shards: Vec<String> = vision_weight_map(index)?
        .into_iter()
        .map(|(_, shard)| shard)
        .collect();
    shards.sort_unstable();
    shards.dedup();
    match shards.iter().find(|s| !s.ends_with(".safetensors")) {
        Some(s) => Err(hub_error(
            id,
            format!(
                "{}: the shard `{s}` is no .safetensors file",
                index.display()
            ),
        )),
        None => Ok(shards),
    }
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
        assert!(e.contains("not a file name beside the index"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
