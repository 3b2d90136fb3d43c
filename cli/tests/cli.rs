//! The `tessera` binary end to end: golden cases through `--pixels` and `--output`,
//! the bundled demo through `--image`, and error cases (non-zero exit, one line,
//! no panic).

// The library's comparison and fixture helpers, shared rather than copied.
#[path = "../../tests/it/common/compare.rs"]
mod compare;
#[path = "../../tests/it/common/fixtures.rs"]
mod fixtures;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use compare::rel_l2;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

/// The repository root: the tests run the binary from there, on tests/data and assets.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A scratch path under the test target's temp dir.
fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).expect("create test temp dir");
    dir.join(name)
}

/// [`tmp`]`(name)` as a new, empty folder (an earlier run's removed).
fn fresh_dir(name: &str) -> PathBuf {
    let dir = tmp(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tessera(args: &[&str]) -> Output {
    tessera_env(args, &[])
}

/// `tessera args` from the repository root with `env` set, the Hugging Face cache
/// variables cleared and the hub offline (`HF_HUB_OFFLINE=1`: no test reaches the
/// network unless its `env` says otherwise), killed after 120 s (a hang is a failure).
fn tessera_env(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(root())
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HOME")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("HF_TOKEN_PATH")
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_TOKEN")
        .env_remove("TRANSFORMERS_OFFLINE")
        .env("HF_HUB_OFFLINE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The mock hub is on loopback: no proxy of the machine's may stand between.
    for k in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"] {
        cmd.env_remove(k).env_remove(k.to_ascii_lowercase());
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run tessera");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait for tessera").is_some() {
            return child.wait_with_output().expect("tessera output");
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("tessera {args:?} hung (killed after 120 s)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (shape, values) of every tensor in a safetensors file (F32; SigLIP 2's I32
/// mask and I64 spatial shapes as f64 too).
fn read_all(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let data = match v.dtype() {
                Dtype::F32 => v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                    .collect(),
                Dtype::I32
                    if name == "pixel_attention_mask"
                        || name.ends_with(".pixel_attention_mask") =>
                {
                    v.data()
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                        .collect()
                }
                Dtype::I64 if name == "spatial_shapes" || name.ends_with(".spatial_shapes") => v
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                other => panic!("{name} in {}: dtype {other:?}", path.display()),
            };
            (name, (v.shape().to_vec(), data))
        })
        .collect()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run a golden case through the binary and compare the written file.
fn golden(case: &str, dtype: &str) {
    let dir = root().join("tests/data").join(case);
    let io = dir.join("io.safetensors");
    let out_path = tmp(&format!("{}_{dtype}.safetensors", case.replace('/', "_")));
    let _ = std::fs::remove_file(&out_path);
    let out = tessera(&[
        "run",
        "--model",
        dir.to_str().unwrap(),
        "--pixels",
        io.to_str().unwrap(),
        "--device",
        "cpu",
        "--dtype",
        dtype,
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert_ok(&out, case);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("load:") && stdout.contains("forward"),
        "{stdout}"
    );
    let got = read_all(&out_path);
    let want = read_all(&io);
    let mut names: Vec<_> = want.keys().cloned().collect();
    names.sort();
    let mut got_names: Vec<_> = got.keys().cloned().collect();
    got_names.sort();
    assert_eq!(got_names, names, "{case}: output tensors");
    let bar = if dtype == "f32" { 1e-5 } else { 2e-2 };
    for name in names {
        let (gs, gv) = &got[&name];
        let (ws, wv) = &want[&name];
        assert_eq!(gs, ws, "{case} {name}: shape");
        let err = rel_l2(gv, wv);
        eprintln!("cli {case} [{dtype}] {name}: rel L2 {err:.3e}");
        if ["pixel_values", "pixel_attention_mask", "spatial_shapes"].contains(&name.as_str()) {
            assert_eq!(gv, wv, "{case}: {name} must be written as given");
        } else {
            assert!(
                err <= bar,
                "{case} [{dtype}] {name}: rel L2 {err:e} > {bar:e}"
            );
        }
    }
}

/// SigLIP 2: padded pixel_values, mask and spatial shapes in, the padded layout
/// out (padding rows 0), through the packed forward.
#[test]
fn golden_siglip2() {
    golden("siglip2/siglip2_tiny", "f32");
    golden("siglip2/siglip2_tiny", "bf16");
    golden("siglip2/siglip2_tiny_bf16", "f32");
    golden("siglip2/siglip2_tiny_bf16", "bf16");
}

/// SigLIP 2 `--image`: preprocessing as Siglip2ImageProcessor, max_num_patches
/// from preprocessor_config.json, overridden by --max-patches.
#[test]
fn siglip2_images() {
    let dir = fresh_dir("siglip2_with_preprocessor");
    let case = root().join("tests/data/siglip2/siglip2_tiny");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(case.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("preprocessor_config.json"),
        r#"{"image_processor_type": "Siglip2ImageProcessor", "patch_size": 4, "max_num_patches": 24,
            "resample": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}"#,
    )
    .unwrap();
    let out_path = tmp("siglip2_images.safetensors");
    let names = ["waves_64x48.png", "grid_32x32.png", "gray_64x48.png"];
    let files: Vec<String> = names
        .iter()
        .map(|n| format!("tests/data/images/{n}"))
        .collect();
    let mut args = vec!["run", "--model", dir.to_str().unwrap(), "--image"];
    args.extend(files.iter().map(String::as_str));
    args.extend(["--device", "cpu", "--output", out_path.to_str().unwrap()]);
    let out = tessera(&args);
    assert_ok(&out, "siglip2 --image");
    let got = read_all(&out_path);
    let reference = read_all(&root().join("tests/data/siglip2/images/siglip2_pixels.safetensors"));
    let (px_shape, px) = &got["pixel_values"];
    assert_eq!(px_shape, &[3, 24, 48]);
    for (i, name) in names.iter().enumerate() {
        // PNGs decode identically: the patches equal Siglip2ImageProcessor's.
        let (_, want) = &reference[&format!("{name}.pixel_values")];
        assert_eq!(
            &px[i * 24 * 48..(i + 1) * 24 * 48],
            &want[..],
            "{name}: pixel_values"
        );
        let (_, mask) = &reference[&format!("{name}.pixel_attention_mask")];
        assert_eq!(
            &got["pixel_attention_mask"].1[i * 24..(i + 1) * 24],
            &mask[..],
            "{name}: mask"
        );
        let (_, hw) = &reference[&format!("{name}.spatial_shapes")];
        assert_eq!(
            &got["spatial_shapes"].1[2 * i..2 * i + 2],
            &hw[..],
            "{name}: spatial_shapes"
        );
    }
    assert_eq!(got["last_hidden_state"].0, vec![3, 24, 64]);
    // Padding rows are 0 (waves is 4×6 = 24: none; grid is 4×4: rows 16.. of image 1).
    let lhs = &got["last_hidden_state"].1;
    assert!(lhs[(24 + 16) * 64..2 * 24 * 64].iter().all(|&v| v == 0.0));
    assert!(lhs[24 * 64..(24 + 16) * 64].iter().any(|&v| v != 0.0));

    // --max-patches overrides the config: 64×48 at most 6 patches → 2×3.
    let out = tessera(&[
        "run",
        "--model",
        dir.to_str().unwrap(),
        "--image",
        "tests/data/images/waves_64x48.png",
        "--max-patches",
        "6",
        "--device",
        "cpu",
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert_ok(&out, "siglip2 --max-patches");
    let got = read_all(&out_path);
    assert_eq!(got["spatial_shapes"].1, vec![2.0, 3.0]);
    assert_eq!(got["last_hidden_state"].0, vec![1, 6, 64]);
    // An out-of-range --max-patches is refused as the option.
    let out = tessera(&[
        "run",
        "--model",
        dir.to_str().unwrap(),
        "--image",
        "tests/data/images/waves_64x48.png",
        "--max-patches",
        "0",
        "--device",
        "cpu",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1) && stderr.contains("--max-patches: 0 patches"),
        "{stderr}"
    );

    // A preprocessor whose patch is not the model's is refused, naming the key.
    std::fs::write(
        dir.join("preprocessor_config.json"),
        r#"{"patch_size": 16}"#,
    )
    .unwrap();
    assert_one_line_error(
        &[
            "run",
            "--model",
            dir.to_str().unwrap(),
            "--image",
            "tests/data/images/waves_64x48.png",
        ],
        "patch_size",
    );
    // --max-patches on a SigLIP model is refused.
    assert_one_line_error(
        &[
            "run",
            "--model",
            "tests/data/siglip_tiny",
            "--image",
            "tests/data/images/waves_64x48.png",
            "--max-patches",
            "4",
        ],
        "--max-patches",
    );
    // SigLIP pixel_values [B, C, I, I] given to a SigLIP 2 model name the tensor.
    assert_one_line_error(
        &[
            "run",
            "--model",
            "tests/data/siglip2/siglip2_tiny",
            "--pixels",
            "tests/data/siglip_tiny/io.safetensors",
        ],
        "pixel_values",
    );
}

#[test]
fn golden_siglip_tiny() {
    golden("siglip_tiny", "f32");
    golden("siglip_tiny", "bf16");
}

#[test]
fn golden_siglip_tiny_bf16_checkpoint() {
    golden("siglip_tiny_bf16", "f32");
    golden("siglip_tiny_bf16", "bf16");
}

#[test]
fn golden_siglip_tiny_nohead() {
    golden("siglip_tiny_nohead", "f32");
    golden("siglip_tiny_nohead", "bf16");
}

/// Checkpoints as users hold them: config.json with transformers' defaults left
/// out, an image side the patch does not divide, a whole SiglipModel file.
#[test]
fn golden_real_checkpoints() {
    golden("real/real_remainder", "f32");
    golden("real/real_remainder", "bf16");
    golden("real/real_fullmodel", "f32");
    golden("real/real_fullmodel", "bf16");
}

/// A hub id is found in the local Hugging Face cache, laid out as huggingface_hub
/// lays it out (refs/main → snapshots/REV/, files symlinked into blobs/), under
/// $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub; not cached, the
/// error says where tessera looked.
#[test]
#[cfg(unix)]
fn hub_ids_are_found_in_the_local_cache() {
    let base = tmp("hf");
    let _ = std::fs::remove_dir_all(&base);
    let hub = base.join("home/.cache/huggingface/hub");
    let repo = hub.join("models--test-org--siglip-tiny");
    let rev = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join(format!("snapshots/{rev}"))).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    let case = root().join("tests/data/siglip_tiny");
    for (i, file) in ["config.json", "model.safetensors"].iter().enumerate() {
        let blob = format!("blob{i}");
        std::fs::copy(case.join(file), repo.join("blobs").join(&blob)).unwrap();
        std::os::unix::fs::symlink(
            format!("../../blobs/{blob}"),
            repo.join(format!("snapshots/{rev}/{file}")),
        )
        .unwrap();
    }
    let io = case.join("io.safetensors");
    let run = |env: &[(&str, &Path)]| {
        tessera_env(
            &[
                "run",
                "--model",
                "test-org/siglip-tiny",
                "--pixels",
                io.to_str().unwrap(),
                "--device",
                "cpu",
            ],
            env,
        )
    };
    let home = base.join("home");
    let hf_home = base.join("home/.cache/huggingface");
    let xdg = base.join("home/.cache");
    for env in [
        vec![("HF_HUB_CACHE", hub.as_path())],
        vec![("HF_HOME", hf_home.as_path())],
        vec![("HOME", home.as_path())],
        vec![("XDG_CACHE_HOME", xdg.as_path())],
    ] {
        let out = run(&env);
        assert_ok(&out, &format!("hub id with {:?}", env[0].0));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("test-org/siglip-tiny"), "{stdout}");
    }
    let out = tessera_env(
        &[
            "run",
            "--model",
            "test-org/not-cached",
            "--pixels",
            io.to_str().unwrap(),
        ],
        &[("HF_HUB_CACHE", hub.as_path())],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("test-org/not-cached") && stderr.contains("models--test-org--not-cached"),
        "{stderr}"
    );
}

/// A stand-in for the Hugging Face hub on 127.0.0.1, answering as the hub does:
/// `GET /api/models/ORG/NAME/revision/REV` (the commit and the file list, for
/// `main`, the tag `v1` and the commit; 404 `RevisionNotFound` for others) and
/// `GET /ORG/NAME/resolve/COMMIT/FILE`: small files directly (206 or 200, their
/// git blob SHA-1 as ETag), large ones (over 4 KiB) by a redirect to a CDN path
/// (`X-Linked-Etag`: SHA-256, `X-Linked-Size`), both with `X-Repo-Commit`, both
/// honouring `Range`; 404 for anything else. A file's ETag can be overridden (to
/// test a corrupt or hostile hub), and a file's first download cut off halfway
/// (the connection closed early). Every request is logged with its range.
/// A preprocessor config whose mean is not SigLIP's default: a run that ignores
/// it gives other outputs.
const PREPROCESSOR: &[u8] = br#"{"image_processor_type": "SiglipImageProcessor", "size": {"height": 32, "width": 32}, "image_mean": [0.2, 0.3, 0.4], "image_std": [0.5, 0.5, 0.5]}"#;

struct MockHub {
    endpoint: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

/// A mock repository's files: (name, bytes), listed in that order.
type RepoFiles = Vec<(String, Vec<u8>)>;

const MOCK_REV: &str = "4c3e2d1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d";

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The ETag the hub gives a file: SHA-256 for large (LFS) files, else the git
/// blob SHA-1.
fn hub_etag(bytes: &[u8]) -> String {
    use sha1::Digest;
    if bytes.len() > 4096 {
        hex(&sha2::Sha256::digest(bytes))
    } else {
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {}\0", bytes.len()).as_bytes());
        h.update(bytes);
        hex(&h.finalize())
    }
}

impl MockHub {
    /// Serve `repos`: id → files; `etags` overrides the ETag of (id, file).
    fn start(
        repos: Vec<(&'static str, RepoFiles)>,
        etags: Vec<(&'static str, &'static str, String)>,
        cut_once: Vec<(&'static str, &'static str)>,
    ) -> Self {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind mock hub");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (repos, seen, etags) = (
            std::sync::Arc::new(repos),
            log.clone(),
            std::sync::Arc::new(etags),
        );
        let cut_once = std::sync::Arc::new(std::sync::Mutex::new(cut_once));
        let base = endpoint.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (repos, seen, etags, base) =
                    (repos.clone(), seen.clone(), etags.clone(), base.clone());
                let cut_once = cut_once.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    let _ = reader.read_line(&mut line);
                    let (mut range, mut header, mut range_text) =
                        (None, String::new(), String::new());
                    while reader
                        .read_line(&mut header)
                        .map(|n| n > 2)
                        .unwrap_or(false)
                    {
                        let h = header.trim().to_ascii_lowercase();
                        if let Some(r) = h.strip_prefix("range: bytes=") {
                            range_text = r.to_string();
                            let (a, b) = r.split_once('-').unwrap_or((r, ""));
                            range =
                                Some((a.parse::<usize>().unwrap_or(0), b.parse::<usize>().ok()));
                        }
                        header.clear();
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    seen.lock().unwrap().push((path.clone(), range_text));
                    let mut out = stream;
                    let reply = |out: &mut std::net::TcpStream,
                                 status: &str,
                                 headers: &str,
                                 body: &[u8]| {
                        let head = format!(
                            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
                            body.len()
                        );
                        let _ = out.write_all(head.as_bytes());
                        let _ = out.write_all(body);
                    };
                    let ranged = |out: &mut std::net::TcpStream, bytes: &[u8], extra: &str| {
                        let last = bytes.len().saturating_sub(1);
                        match range {
                            Some((a, b)) if a <= last => {
                                let b = b.unwrap_or(last).min(last);
                                let h = format!(
                                    "Content-Range: bytes {a}-{b}/{}\r\n{extra}",
                                    bytes.len()
                                );
                                reply(out, "206 Partial Content", &h, &bytes[a..=b]);
                            }
                            _ => reply(out, "200 OK", extra, bytes),
                        }
                    };
                    for (id, files) in repos.iter() {
                        let revision = path.strip_prefix(&format!("/api/models/{id}/revision/"));
                        // Another revision of a repository that exists: the hub's
                        // 404 with its error code.
                        if revision.is_some_and(|r| !["main", "v1", MOCK_REV].contains(&r)) {
                            return reply(
                                &mut out,
                                "404 Not Found",
                                "X-Error-Code: RevisionNotFound\r\n",
                                b"{\"error\":\"Invalid rev id\"}",
                            );
                        }
                        if revision.is_some() {
                            let siblings: Vec<String> = files
                                .iter()
                                .map(|(f, _)| format!("{{\"rfilename\":\"{f}\"}}"))
                                .collect();
                            let body = format!(
                                "{{\"id\":\"{id}\",\"sha\":\"{MOCK_REV}\",\"siblings\":[{}]}}",
                                siblings.join(",")
                            );
                            return reply(
                                &mut out,
                                "200 OK",
                                "Content-Type: application/json\r\n",
                                body.as_bytes(),
                            );
                        }
                        for (name, bytes) in files.iter() {
                            let etag = etags
                                .iter()
                                .find(|(i, f, _)| i == id && f == name)
                                .map_or_else(|| hub_etag(bytes), |(_, _, e)| e.clone());
                            if path == format!("/cdn/{id}/{name}") {
                                let mut cut = cut_once.lock().unwrap();
                                if let Some(i) = cut.iter().position(|c| *c == (*id, name.as_str()))
                                {
                                    // The whole length announced, half of it sent.
                                    cut.remove(i);
                                    let head = format!(
                                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                        bytes.len()
                                    );
                                    let _ = out.write_all(head.as_bytes());
                                    let _ = out.write_all(&bytes[..bytes.len() / 2]);
                                    return;
                                }
                                drop(cut);
                                return ranged(&mut out, bytes, "");
                            }
                            if path != format!("/{id}/resolve/{MOCK_REV}/{name}") {
                                continue;
                            }
                            if bytes.len() > 4096 {
                                let h = format!(
                                    "Location: {base}/cdn/{id}/{name}\r\nX-Linked-Etag: \"{etag}\"\r\n\
                                     X-Linked-Size: {}\r\nX-Repo-Commit: {MOCK_REV}\r\n",
                                    bytes.len()
                                );
                                return reply(&mut out, "302 Found", &h, b"");
                            }
                            let h = format!("ETag: \"{etag}\"\r\nX-Repo-Commit: {MOCK_REV}\r\n");
                            return ranged(&mut out, bytes, &h);
                        }
                    }
                    reply(
                        &mut out,
                        "404 Not Found",
                        "",
                        b"{\"error\":\"Repository not found\"}",
                    )
                });
            }
        });
        Self { endpoint, log }
    }

    /// The paths asked for since the last call.
    fn take_log(&self) -> Vec<String> {
        self.take_ranges().into_iter().map(|(p, _)| p).collect()
    }

    /// The paths asked for since the last call, with their `Range` (or "").
    fn take_ranges(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// A hub id that is not in the local cache is downloaded into it, laid out as
/// huggingface_hub lays it out (refs/main, snapshot links into blobs/): only the
/// files tessera reads, of a sharded checkpoint only the shards with vision
/// tensors; the outputs equal the folder's; the model is then found with the
/// network off. A shard lost from the cache is fetched again alone, a download
/// that stopped goes on from its `.incomplete` file, and a missing repository, one
/// without safetensors weights, a file whose bytes do not match its ETag and an
/// ETag that is no hash are one-line errors naming the id, with nothing left in
/// the cache or outside it.
#[test]
#[cfg(unix)]
fn hub_ids_are_downloaded_into_the_cache() {
    let case = root().join("tests/data/siglip_tiny");
    let read = |f: &str| std::fs::read(case.join(f)).unwrap();
    // The same weights as two vision shards and a text-tower shard.
    let weights = read("model.safetensors");
    let st = SafeTensors::deserialize(&weights).unwrap();
    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let half = tensors.len() / 2;
    let mut weight_map = Vec::new();
    let mut shards = Vec::new();
    for (i, part) in [&tensors[..half], &tensors[half..]].into_iter().enumerate() {
        let name = format!("model-0000{}-of-00003.safetensors", i + 1);
        for (t, _) in part {
            weight_map.push(format!("\"{t}\": \"{name}\""));
        }
        let views = part.iter().map(|(t, v)| (t.clone(), v.clone()));
        shards.push((name, safetensors::serialize(views, None).unwrap()));
    }
    let text = [0u8; 8];
    let text_view = TensorView::new(Dtype::F32, vec![2], &text).unwrap();
    let text_shard = "model-00003-of-00003.safetensors".to_string();
    weight_map.push(format!(
        "\"text_model.embeddings.weight\": \"{text_shard}\""
    ));
    shards.push((
        text_shard.clone(),
        safetensors::serialize([("text_model.embeddings.weight", text_view)], None).unwrap(),
    ));
    let index = format!("{{\"weight_map\": {{{}}}}}", weight_map.join(", "));
    let shard2 = shards[1].1.clone();
    let mut sharded = vec![
        ("config.json".to_string(), read("config.json")),
        (
            "model.safetensors.index.json".to_string(),
            index.into_bytes(),
        ),
    ];
    sharded.extend(shards);
    let tiny = vec![
        ("README.md".to_string(), b"# tiny".to_vec()),
        ("config.json".to_string(), read("config.json")),
        ("model.safetensors".to_string(), weights.clone()),
        ("pytorch_model.bin".to_string(), b"not read".to_vec()),
    ];
    let hub = MockHub::start(
        vec![
            ("test-org/siglip-tiny", tiny.clone()),
            ("test-org/siglip-sharded", sharded),
            (
                "test-org/bin-only",
                vec![
                    ("config.json".to_string(), read("config.json")),
                    ("pytorch_model.bin".to_string(), b"not read".to_vec()),
                ],
            ),
            ("test-org/corrupt", tiny.clone()),
            ("test-org/hostile", tiny.clone()),
            ("test-org/flaky", tiny.clone()),
            ("test-org/options-first", tiny.clone()),
            ("test-org/tagged", tiny.clone()),
            ("test-org/with-preprocessor", {
                let mut files = tiny.clone();
                files.push((
                    "preprocessor_config.json".to_string(),
                    PREPROCESSOR.to_vec(),
                ));
                files
            }),
        ],
        vec![
            ("test-org/corrupt", "model.safetensors", "ab".repeat(32)),
            (
                "test-org/hostile",
                "config.json",
                "../../../../escaped".to_string(),
            ),
        ],
        vec![("test-org/flaky", "model.safetensors")],
    );
    let cache = tmp("hub-download");
    let _ = std::fs::remove_dir_all(&cache);
    let io = case.join("io.safetensors");
    let endpoint = PathBuf::from(&hub.endpoint);
    let io_path = io.to_str().unwrap();
    // `tessera run --model MODEL INPUT… --device cpu --output OUT` against the mock hub.
    let run_with = |model: &str, input: &[&str], out: &Path, offline: &str| {
        let mut args = vec!["run", "--model", model];
        args.extend(input);
        args.extend(["--device", "cpu", "--output", out.to_str().unwrap()]);
        tessera_env(
            &args,
            &[
                ("HF_ENDPOINT", endpoint.as_path()),
                ("HF_HUB_CACHE", cache.as_path()),
                ("HF_HUB_OFFLINE", Path::new(offline)),
            ],
        )
    };
    let run = |model: &str, out: &Path, offline: &str| {
        run_with(model, &["--pixels", io_path], out, offline)
    };
    let reference = tmp("hub-reference.safetensors");
    assert_ok(
        &run(case.to_str().unwrap(), &reference, "1"),
        "the folder itself",
    );
    let expected = read_all(&reference);
    let out_file = tmp("hub-downloaded.safetensors");
    let resolve = |id: &str, f: &str| format!("/{id}/resolve/{MOCK_REV}/{f}");
    for (id, fetched, not_fetched) in [
        (
            "test-org/siglip-tiny",
            vec!["config.json", "model.safetensors"],
            vec!["README.md", "pytorch_model.bin"],
        ),
        (
            "test-org/siglip-sharded",
            vec![
                "config.json",
                "model.safetensors.index.json",
                "model-00001-of-00003.safetensors",
                "model-00002-of-00003.safetensors",
            ],
            vec!["model-00003-of-00003.safetensors"],
        ),
    ] {
        let out = run(id, &out_file, "0");
        assert_ok(&out, &format!("{id} downloaded"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("downloading"), "{stderr}");
        assert_eq!(
            read_all(&out_file),
            expected,
            "{id}: outputs differ from the folder's"
        );
        let log = hub.take_log();
        assert!(
            log.contains(&format!("/api/models/{id}/revision/main")),
            "{log:?}"
        );
        for f in fetched {
            assert!(
                log.contains(&resolve(id, f)),
                "{id}: {f} not fetched: {log:?}"
            );
        }
        for f in not_fetched {
            assert!(
                !log.iter().any(|l| l.ends_with(f)),
                "{id}: {f} fetched: {log:?}"
            );
        }
        // huggingface_hub's layout: refs/main names the commit, the snapshot's
        // files are relative links into blobs/ named by their ETags.
        let repo = cache.join(format!("models--{}", id.replace('/', "--")));
        assert_eq!(
            std::fs::read_to_string(repo.join("refs/main")).unwrap(),
            MOCK_REV
        );
        let config = repo.join(format!("snapshots/{MOCK_REV}/config.json"));
        let target = std::fs::read_link(&config).unwrap();
        assert_eq!(
            target,
            Path::new("../../blobs").join(hub_etag(&read("config.json")))
        );
        // Now in the cache: found with the hub offline, and nothing asked of it.
        let out = run(id, &out_file, "1");
        assert_ok(&out, &format!("{id} from the cache"));
        assert_eq!(read_all(&out_file), expected);
        assert!(
            hub.take_log().is_empty(),
            "{id}: the cached model asked the hub"
        );
    }
    // A shard lost from the cache (a download that stopped between shards):
    // offline, the run says which; online, that shard alone is fetched again.
    let id = "test-org/siglip-sharded";
    let repo = cache.join("models--test-org--siglip-sharded");
    let lost = repo.join(format!(
        "snapshots/{MOCK_REV}/model-00002-of-00003.safetensors"
    ));
    std::fs::remove_file(&lost).unwrap();
    std::fs::remove_file(repo.join("blobs").join(hub_etag(&shard2))).unwrap();
    let out = run(id, &out_file, "1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("model-00002-of-00003"),
        "{stderr}"
    );
    let out = run(id, &out_file, "0");
    assert_ok(&out, "a lost shard fetched again");
    assert_eq!(read_all(&out_file), expected);
    let log = hub.take_log();
    let files: Vec<&String> = log.iter().filter(|l| l.contains("/resolve/")).collect();
    assert!(
        files
            .iter()
            .all(|l| l.ends_with("model-00002-of-00003.safetensors"))
            && !files.is_empty(),
        "{log:?}"
    );
    // A download that stopped halfway goes on from its .incomplete file.
    let id = "test-org/siglip-tiny";
    let repo = cache.join("models--test-org--siglip-tiny");
    let etag = hub_etag(&weights);
    std::fs::remove_file(repo.join(format!("snapshots/{MOCK_REV}/model.safetensors"))).unwrap();
    std::fs::remove_file(repo.join("blobs").join(&etag)).unwrap();
    let half_way = weights.len() / 2;
    std::fs::write(
        repo.join(format!("blobs/{etag}.incomplete")),
        &weights[..half_way],
    )
    .unwrap();
    assert_ok(&run(id, &out_file, "0"), "a download resumed");
    assert_eq!(read_all(&out_file), expected);
    let ranges = hub.take_ranges();
    let cdn = format!("/cdn/{id}/model.safetensors");
    assert!(
        ranges.contains(&(cdn.clone(), format!("{half_way}-"))),
        "{ranges:?}"
    );
    assert!(!repo.join(format!("blobs/{etag}.incomplete")).exists());
    // A connection cut halfway through: the run goes on from there by itself.
    let out = run("test-org/flaky", &out_file, "0");
    assert_ok(&out, "a download cut short, resumed in the same run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("going on from there"));
    assert_eq!(read_all(&out_file), expected);
    let ranges = hub.take_ranges();
    let cdn = "/cdn/test-org/flaky/model.safetensors".to_string();
    let tries: Vec<&String> = ranges
        .iter()
        .filter(|(p, _)| *p == cdn)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(
        tries,
        [&String::new(), &format!("{}-", weights.len() / 2)],
        "{ranges:?}"
    );
    // Options are checked against the config before the weights come: a wrong one
    // costs the config's download, not the checkpoint's; the next run fetches the
    // weights of the config's own commit, and nothing it already has.
    let id = "test-org/options-first";
    let wrong = run_with(
        id,
        &["--pixels", io_path, "--max-patches", "16"],
        &tmp("hub-error.safetensors"),
        "0",
    );
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        wrong.status.code() == Some(1) && stderr.contains("--max-patches applies"),
        "{stderr}"
    );
    let log = hub.take_log();
    assert!(log.contains(&resolve(id, "config.json")), "{log:?}");
    assert!(
        !log.iter().any(|l| l.contains("model.safetensors")),
        "weights fetched for a run refused by its options: {log:?}"
    );
    assert_ok(&run(id, &out_file, "0"), "the weights after the config");
    assert_eq!(read_all(&out_file), expected);
    let log = hub.take_log();
    assert!(
        log.contains(&format!("/api/models/{id}/revision/{MOCK_REV}"))
            && log.contains(&resolve(id, "model.safetensors"))
            && !log.contains(&resolve(id, "config.json")),
        "{log:?}"
    );

    // The config cached alone (`hf download ID config.json`): the preprocessor
    // config the hub has is fetched with the weights, before the run reads it.
    let id = "test-org/with-preprocessor";
    let repo = cache.join("models--test-org--with-preprocessor");
    let snapshot = repo.join(format!("snapshots/{MOCK_REV}"));
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), MOCK_REV).unwrap();
    std::fs::write(snapshot.join("config.json"), read("config.json")).unwrap();
    // What the preprocessor config makes of an image, from a folder.
    let folder = tmp("hub-with-preprocessor");
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(case.join(f), folder.join(f)).unwrap();
    }
    std::fs::write(folder.join("preprocessor_config.json"), PREPROCESSOR).unwrap();
    let on_image = |model: &str, out: &Path| {
        run_with(
            model,
            &["--image", "tests/data/images/waves_64x48.png"],
            out,
            "0",
        )
    };
    let with_pre = tmp("hub-with-preprocessor.safetensors");
    assert_ok(&on_image(folder.to_str().unwrap(), &with_pre), "the folder");
    assert_ok(&on_image(id, &out_file), "a config cached alone");
    assert_eq!(read_all(&out_file), read_all(&with_pre));
    let log = hub.take_log();
    assert!(
        log.contains(&resolve(id, "preprocessor_config.json"))
            && log.contains(&resolve(id, "model.safetensors"))
            && !log.contains(&resolve(id, "config.json")),
        "{log:?}"
    );
    assert!(snapshot.join("preprocessor_config.json").is_file());

    // A revision: a tag is resolved by the hub once and recorded in refs/, as
    // huggingface_hub records it; then it, and its commit, are found offline;
    // `main`, never downloaded, is not. Unknown or unsupported revisions, and a
    // folder given one, are one-line errors.
    let id = "test-org/tagged";
    let at = |rev: &str, offline: &str| {
        run_with(
            id,
            &["--pixels", io_path, "--revision", rev],
            &out_file,
            offline,
        )
    };
    assert_ok(&at("v1", "0"), "--revision v1");
    assert_eq!(read_all(&out_file), expected);
    let log = hub.take_log();
    assert!(
        log.contains(&format!("/api/models/{id}/revision/v1"))
            && log.contains(&resolve(id, "model.safetensors")),
        "{log:?}"
    );
    let repo = cache.join("models--test-org--tagged");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/v1")).unwrap(),
        MOCK_REV
    );
    assert!(!repo.join("refs/main").exists());
    assert_ok(&at("v1", "1"), "--revision v1 from the cache");
    assert_ok(&at(MOCK_REV, "1"), "--revision COMMIT from the cache");
    assert!(hub.take_log().is_empty());
    let main = run(id, &out_file, "1");
    let stderr = String::from_utf8_lossy(&main.stderr);
    assert!(
        main.status.code() == Some(1) && stderr.contains("revision main"),
        "{stderr}"
    );
    for (rev, needle, asked) in [
        ("v2", "has no revision `v2`", true),
        ("refs/pr/1", "not supported", false),
        ("", "a branch, a tag or a commit", false),
    ] {
        let out = at(rev, "0");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(1) && stderr.contains(id) && stderr.contains(needle),
            "{rev}: {stderr}"
        );
        assert_eq!(!hub.take_log().is_empty(), asked, "{rev}");
    }
    let folder = run_with(
        case.to_str().unwrap(),
        &["--pixels", io_path, "--revision", "v1"],
        &out_file,
        "1",
    );
    let stderr = String::from_utf8_lossy(&folder.stderr);
    assert!(
        folder.status.code() == Some(1) && stderr.contains("is a folder here"),
        "{stderr}"
    );

    // Errors: one line naming the id; nothing of a failed file stays.
    for (id, needle) in [
        ("test-org/no-such-model", "not found on"),
        ("test-org/bin-only", "safetensors weights only"),
        ("test-org/corrupt", "do not hash"),
        ("test-org/hostile", "no hash"),
    ] {
        let out = run(id, &tmp("hub-error.safetensors"), "0");
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("{id}: {}", stderr.trim_end());
        assert_eq!(out.status.code(), Some(1), "{id}: {stderr}");
        assert!(
            stderr.contains(id) && stderr.contains(needle),
            "{id}: {stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("internal error"),
            "{stderr}"
        );
    }
    let corrupt = cache.join("models--test-org--corrupt/blobs");
    let left: Vec<_> = std::fs::read_dir(&corrupt)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("abab"))
        .collect();
    assert!(left.is_empty(), "a corrupt download stayed: {left:?}");
    assert!(!cache.join("escaped").exists() && !tmp("escaped").exists());
    hub.take_log();
    // Offline, a model not in the cache says so and where it looked.
    let out = run("test-org/not-cached", &tmp("hub-error.safetensors"), "1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("HF_HUB_OFFLINE") && stderr.contains("models--test-org--not-cached"),
        "{stderr}"
    );
    assert!(!stderr.contains("downloading"), "{stderr}");
    assert!(hub.take_log().is_empty());
}

/// preprocessor_config.json beside the model drives `--image`: here another mean
/// and std, checked against the reference pixels of the image already at size.
#[test]
fn preprocessor_config_drives_images() {
    let dir = fresh_dir("with_preprocessor");
    let case = root().join("tests/data/siglip_tiny");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(case.join(f), dir.join(f)).unwrap();
    }
    let (mean, std) = ([0.25f64, 0.5, 0.75], [0.2f64, 0.4, 0.1]);
    std::fs::write(
        dir.join("preprocessor_config.json"),
        format!(
            r#"{{"image_processor_type": "SiglipImageProcessor", "size": {{"height": 32, "width": 32}},
                "image_mean": {mean:?}, "image_std": {std:?}, "resample": 3}}"#
        ),
    )
    .unwrap();
    let out_path = tmp("with_preprocessor.safetensors");
    let out = tessera(&[
        "run",
        "--model",
        dir.to_str().unwrap(),
        "--image",
        "tests/data/images/grid_32x32.png",
        "--device",
        "cpu",
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert_ok(&out, "run with preprocessor_config.json");
    let got = &read_all(&out_path)["pixel_values"].1;
    let reference = read_all(&root().join("tests/data/images/pixel_values_32.safetensors"));
    let (_, siglip) = &reference["grid_32x32.png"];
    for (i, (g, r)) in got.iter().zip(siglip).enumerate() {
        let c = i / (32 * 32);
        let want = (r * 0.5 + 0.5 - mean[c]) / std[c];
        assert!((g - want).abs() < 1e-5, "pixel {i}: {g} vs {want}");
    }
    // A size that is not the model's is refused, naming the file and both sizes.
    std::fs::write(
        dir.join("preprocessor_config.json"),
        r#"{"size": {"height": 224, "width": 224}}"#,
    )
    .unwrap();
    assert_one_line_error(
        &[
            "run",
            "--model",
            dir.to_str().unwrap(),
            "--image",
            "tests/data/images/grid_32x32.png",
        ],
        "preprocessor_config.json",
    );
}

#[test]
fn golden_mga_tiny_segments() {
    golden("mga_tiny", "f32");
    golden("mga_tiny", "bf16");
}

/// The bundled demo through `--image`: shapes of a memory model's single segment,
/// and pixel_values as SigLIP's processor makes them.
#[test]
fn image_on_bundled_demo_model() {
    let out_path = tmp("demo_image.safetensors");
    let out = tessera(&[
        "run",
        "--model",
        "assets/mga_tiny",
        "--image",
        "assets/waves_64x48.png",
        "--device",
        "cpu",
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert_ok(&out, "run --image");
    let got = read_all(&out_path);
    assert_eq!(got["pixel_values"].0, vec![1, 1, 3, 32, 32]);
    assert_eq!(got["last_hidden_state"].0, vec![1, 1, 16, 64]);
    assert_eq!(got["pooler_output"].0, vec![1, 1, 64]);
    assert_eq!(got["memory.layers.0"].0, vec![1, 4, 8, 64]);
    assert_eq!(got["memory.layers.1"].0, vec![1, 4, 8, 64]);
    assert!(got.values().all(|(_, v)| v.iter().all(|x| x.is_finite())));
    let reference = read_all(&root().join("tests/data/images/pixel_values_32.safetensors"));
    let (_, want) = &reference["waves_64x48.png"];
    let mean = got["pixel_values"]
        .1
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .sum::<f64>()
        / want.len() as f64;
    assert!(mean <= 0.02, "mean |Δ| {mean}");

    // Several images on a memory model are consecutive segments of batch 1.
    let out = tessera(&[
        "run",
        "--model",
        "assets/mga_tiny",
        "--image",
        "assets/waves_64x48.png",
        "tests/data/images/grid_32x32.png",
        "tests/data/images/waves_64x48.jpg",
        "--device",
        "cpu",
        "--dtype",
        "bf16",
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert_ok(&out, "run --image x3");
    let got = read_all(&out_path);
    assert_eq!(got["last_hidden_state"].0, vec![3, 1, 16, 64]);

    // On a model without memory they are one batch, no S axis.
    let out = tessera(&[
        "run",
        "--model",
        "tests/data/siglip_tiny",
        "--image",
        "assets/waves_64x48.png",
        "tests/data/images/grid_32x32.png",
        "--device",
        "cpu",
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert_ok(&out, "run --image batch");
    let got = read_all(&out_path);
    assert_eq!(got["pixel_values"].0, vec![2, 3, 32, 32]);
    assert_eq!(got["pooler_output"].0, vec![2, 64]);
}

#[test]
fn demo_subcommand_runs() {
    let out = tessera(&["demo", "--device", "cpu"]);
    assert_ok(&out, "demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("pooler_output"), "{stdout}");
}

/// Non-zero exit, exactly one line on stderr starting `error:`, no panic.
fn assert_one_line_error(args: &[&str], needle: &str) {
    let out = tessera(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(!stderr.contains("internal error"), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
    assert!(lines[0].starts_with("error: "), "{args:?}: {stderr}");
    assert!(
        lines[0].contains(needle),
        "{args:?}: `{needle}` not in {stderr}"
    );
}

#[test]
fn errors_are_one_line() {
    let io = "tests/data/siglip_tiny/io.safetensors";
    // Sizes that would exhaust memory or never end are refused up front.
    let out = tmp("never.safetensors");
    let out = out.to_str().unwrap();
    let model = "tests/data/siglip_tiny";
    let images = "tests/data/images";
    // An output that cannot be written fails before the model is loaded.
    let nowhere = tmp("no/such/folder/out.safetensors");
    assert_one_line_error(
        &[
            "run",
            "--model",
            model,
            "--pixels",
            io,
            "--device",
            "cpu",
            "--output",
            nowhere.to_str().unwrap(),
        ],
        "no such folder",
    );
    assert_one_line_error(
        &[
            "run", "--model", model, "--pixels", io, "--device", "cpu", "--output", images,
        ],
        "is a folder",
    );
    assert_one_line_error(
        &[
            "run", "--model", model, "--pixels", io, "--device", "cpu", "--output", "x.png",
        ],
        "--output x.png: the outputs are written as NAME.safetensors",
    );
    // An output that is one of the inputs would replace it.
    assert_one_line_error(
        &[
            "run", "--model", model, "--pixels", io, "--device", "cpu", "--output", io,
        ],
        "that is the input tests/data/siglip_tiny/io.safetensors; writing it would replace it",
    );
    assert_one_line_error(
        &[
            "embed",
            "--model",
            model,
            "-o",
            out,
            "--batch",
            "18446744073709551615",
            images,
        ],
        "--batch",
    );
    assert_one_line_error(
        &[
            "embed", "--model", model, "-o", out, "--batch", "4097", images,
        ],
        "--batch",
    );
    #[cfg(unix)]
    assert_one_line_error(
        &["embed", "--model", model, "-o", out, "@/dev/zero"],
        "/dev/zero",
    );
    assert_one_line_error(&["bench", "--batch", "100000000000000000"], "--batch");
    assert_one_line_error(
        &[
            "run",
            "--model",
            "tests/data/siglip2/siglip2_tiny",
            "--max-patches",
            "1048576",
            "--image",
            "tests/data/images/grid_32x32.png",
        ],
        "--max-patches: 1048576 patches",
    );
    assert_one_line_error(
        &["run", "--model", "no/such/dir", "--pixels", io],
        "no/such/dir",
    );
    assert_one_line_error(
        &[
            "run",
            "--model",
            "tests/data/siglip_tiny",
            "--pixels",
            "no_such.safetensors",
        ],
        "no_such.safetensors",
    );
    assert_one_line_error(
        &[
            "run",
            "--model",
            "tests/data/siglip_tiny",
            "--image",
            "no_such.png",
        ],
        "no_such.png",
    );

    // pixel_values of the wrong shape: [1, 3, 16, 16] for a 32×32 model.
    let bad = tmp("bad_pixels.safetensors");
    let data = vec![0u8; 3 * 16 * 16 * 4];
    let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![1, 3, 16, 16], &data).unwrap();
    std::fs::write(
        &bad,
        safetensors::serialize([("pixel_values", view)], None).unwrap(),
    )
    .unwrap();
    assert_one_line_error(
        &[
            "run",
            "--model",
            "tests/data/siglip_tiny",
            "--pixels",
            bad.to_str().unwrap(),
        ],
        "[1, 3, 16, 16]",
    );

    // A file without pixel_values.
    let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![1], &data[..4]).unwrap();
    let other = tmp("no_pixels.safetensors");
    std::fs::write(&other, safetensors::serialize([("x", view)], None).unwrap()).unwrap();
    assert_one_line_error(
        &[
            "run",
            "--model",
            "tests/data/siglip_tiny",
            "--pixels",
            other.to_str().unwrap(),
        ],
        "pixel_values",
    );

    // Embedding into one of the inputs, or into a folder; a pixels file that goes
    // on past its tensors.
    let same = tmp("same_as_input.safetensors");
    std::fs::copy(root().join("assets/waves_64x48.png"), &same).unwrap();
    let same = same.to_str().unwrap();
    assert_one_line_error(
        &[
            "embed", "--model", model, "-o", same, same, "--device", "cpu",
        ],
        "that is the input",
    );
    let folder = tmp("folder.safetensors");
    std::fs::create_dir_all(&folder).unwrap();
    assert_one_line_error(
        &[
            "embed",
            "--model",
            model,
            "-o",
            folder.to_str().unwrap(),
            same,
            "--device",
            "cpu",
        ],
        "is a folder",
    );
    let long = tmp("long_pixels.safetensors");
    let mut bytes = std::fs::read(root().join(io)).unwrap();
    bytes.extend([0u8; 3]);
    std::fs::write(&long, bytes).unwrap();
    assert_one_line_error(
        &[
            "run",
            "--model",
            model,
            "--pixels",
            long.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        "its tensors end at byte",
    );
    // A header claiming ten terabytes of a small file: truncated, not read.
    let bytes = std::fs::read(root().join(io)).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["pixel_values"]["data_offsets"][1] = serde_json::json!(10u64.pow(13));
    let header = serde_json::to_vec(&header).unwrap();
    let mut liar = (header.len() as u64).to_le_bytes().to_vec();
    liar.extend(&header);
    liar.extend(&bytes[8 + n..]);
    let lying = tmp("lying_pixels.safetensors");
    std::fs::write(&lying, liar).unwrap();
    assert_one_line_error(
        &[
            "run",
            "--model",
            model,
            "--pixels",
            lying.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        "file truncated?",
    );
}

/// Usage errors are clap's: non-zero exit, no panic.
#[test]
fn usage_errors_use_clap() {
    for args in [
        &["run", "--model", "assets/mga_tiny"][..],
        &[
            "run",
            "--model",
            "assets/mga_tiny",
            "--pixels",
            "a",
            "--image",
            "b",
        ],
        &["frobnicate"],
    ] {
        let out = tessera(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.starts_with("error:"), "{stderr}");
    }
}

/// Unknown device and dtype names are usage errors (clap's exit code 2) naming
/// the value and the accepted ones.
#[test]
fn unknown_device_and_dtype_are_usage_errors() {
    let io = "tests/data/siglip_tiny/io.safetensors";
    for (flag, value, accepted) in [
        ("--device", "tpu", "cuda:N"),
        ("--device", "cuda:x", "ordinal"),
        ("--dtype", "fp8", "bf16"),
        ("--dtype", "f64", "bf16"),
    ] {
        let out = tessera(&[
            "run",
            "--model",
            "tests/data/siglip_tiny",
            "--pixels",
            io,
            flag,
            value,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(
            stderr.starts_with("error:") && !stderr.contains("panicked"),
            "{stderr}"
        );
        assert!(
            stderr.contains(value) && stderr.contains(accepted),
            "{flag} {value}: {stderr}"
        );
    }
}

/// Output shapes follow the input: 5-D pixels keep the S axis even on a model
/// without memory; 4-D pixels on a memory model are one segment (S = 1).
#[test]
fn segment_axis_follows_the_input() {
    let out_path = tmp("segments.safetensors");
    let out = tessera(&[
        "run",
        "--model",
        "tests/data/siglip_tiny",
        "--pixels",
        "tests/data/mga_tiny/io.safetensors",
        "--device",
        "cpu",
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert_ok(&out, "5-D on siglip_tiny");
    let got = read_all(&out_path);
    assert_eq!(got["last_hidden_state"].0, vec![3, 2, 16, 64]);
    assert_eq!(got["pooler_output"].0, vec![3, 2, 64]);
    assert!(!got.contains_key("memory.layers.0"));

    let out = tessera(&[
        "run",
        "--model",
        "tests/data/mga_tiny",
        "--pixels",
        "tests/data/siglip_tiny/io.safetensors",
        "--device",
        "cpu",
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert_ok(&out, "4-D on mga_tiny");
    let got = read_all(&out_path);
    assert_eq!(got["pixel_values"].0, vec![1, 2, 3, 32, 32]);
    assert_eq!(got["last_hidden_state"].0, vec![1, 2, 16, 64]);
    assert_eq!(got["memory.layers.1"].0, vec![2, 4, 8, 64]);
}

// ---------------------------------------------------------------------------
// A corpus of broken files: one line, exit 1, no panic, no hang.

/// A model folder with siglip_tiny's files, `edit` applied.
fn broken_model(name: &str, edit: impl FnOnce(&Path)) -> String {
    let dir = tmp(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(root().join("tests/data/siglip_tiny").join(f), dir.join(f)).unwrap();
    }
    edit(&dir);
    dir.to_str().unwrap().to_string()
}

fn pixels_file(name: &str, shape: &[usize], values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, shape.to_vec(), &bytes).unwrap();
    let p = tmp(name);
    std::fs::write(
        &p,
        safetensors::serialize([("pixel_values", view)], None).unwrap(),
    )
    .unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn cli_broken_file_corpus() {
    let io = "tests/data/siglip_tiny/io.safetensors";
    let run = |model: &str, extra: &[&str], needle: &str| {
        let mut args = vec!["run", "--model", model, "--device", "cpu"];
        args.extend_from_slice(extra);
        assert_one_line_error(&args, needle);
    };

    // Checkpoints: truncated, empty, text, header length past the end.
    let m = broken_model("truncated", |d| {
        let b = std::fs::read(d.join("model.safetensors")).unwrap();
        std::fs::write(d.join("model.safetensors"), &b[..b.len() - 100]).unwrap();
    });
    run(&m, &["--pixels", io], "model.safetensors");
    let m = broken_model("empty_ckpt", |d| {
        std::fs::write(d.join("model.safetensors"), b"").unwrap();
    });
    run(&m, &["--pixels", io], "model.safetensors");
    let m = broken_model("text_ckpt", |d| {
        std::fs::write(d.join("model.safetensors"), "hello, I am not a checkpoint").unwrap();
    });
    run(&m, &["--pixels", io], "model.safetensors");
    let m = broken_model("header_len", |d| {
        let mut b = std::fs::read(d.join("model.safetensors")).unwrap();
        b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(d.join("model.safetensors"), &b).unwrap();
    });
    run(&m, &["--pixels", io], "model.safetensors");

    // Configs: a string where a number should be, empty, not JSON, eps 0.
    let edit_config = |name: &str, f: &dyn Fn(&str) -> String| {
        broken_model(name, |d| {
            let c = std::fs::read_to_string(d.join("config.json")).unwrap();
            std::fs::write(d.join("config.json"), f(&c)).unwrap();
        })
    };
    let m = edit_config("string_num", &|c| {
        let mut v: serde_json::Value = serde_json::from_str(c).unwrap();
        v["hidden_size"] = "sixty-four".into();
        v.to_string()
    });
    run(&m, &["--pixels", io], "hidden_size");
    let m = edit_config("empty_cfg", &|_| String::new());
    run(&m, &["--pixels", io], "config.json");
    let m = edit_config("eps0", &|c| {
        let mut v: serde_json::Value = serde_json::from_str(c).unwrap();
        v["layer_norm_eps"] = 0.into();
        v.to_string()
    });
    run(&m, &["--pixels", io], "layer_norm_eps");
    let m = edit_config("layers3", &|c| {
        let mut v: serde_json::Value = serde_json::from_str(c).unwrap();
        v["num_hidden_layers"] = 1.into();
        v.to_string()
    });
    run(&m, &["--pixels", io], "encoder.layers.1");

    // Images: a text file, an empty file, a truncated PNG, a missing file.
    let model = "tests/data/siglip_tiny";
    let text = tmp("cli_text.png");
    std::fs::write(&text, "not an image").unwrap();
    run(model, &["--image", text.to_str().unwrap()], "cli_text.png");
    let empty = tmp("cli_empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    run(
        model,
        &["--image", empty.to_str().unwrap()],
        "cli_empty.jpg",
    );
    let full = std::fs::read(root().join("tests/data/images/grid_32x32.png")).unwrap();
    let cut = tmp("cli_cut.png");
    std::fs::write(&cut, &full[..full.len() / 3]).unwrap();
    run(model, &["--image", cut.to_str().unwrap()], "cli_cut.png");
    run(
        model,
        &["--image", "no/such/image.png"],
        "no/such/image.png",
    );

    // Pixels: empty file, text, NaN, empty batch, wrong dtype, wrong shape.
    let empty = tmp("cli_empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    run(
        model,
        &["--pixels", empty.to_str().unwrap()],
        "cli_empty.safetensors",
    );
    let text = tmp("cli_text.safetensors");
    std::fs::write(&text, "{\"pixel_values\": 1}").unwrap();
    run(
        model,
        &["--pixels", text.to_str().unwrap()],
        "cli_text.safetensors",
    );
    let mut v = vec![0.25f32; 3 * 32 * 32];
    v[1000] = f32::NAN;
    let nan = pixels_file("cli_nan.safetensors", &[1, 3, 32, 32], &v);
    run(model, &["--pixels", &nan], "1000");
    run(model, &["--pixels", &nan], "pixel_values");
    let empty_batch = pixels_file("cli_b0.safetensors", &[0, 3, 32, 32], &[]);
    run(model, &["--pixels", &empty_batch], "[0, 3, 32, 32]");
    let gray = pixels_file("cli_c1.safetensors", &[1, 1, 32, 32], &vec![0.0; 1024]);
    run(model, &["--pixels", &gray], "[1, 1, 32, 32]");
    let i32_px = {
        let bytes = vec![0u8; 3 * 32 * 32 * 4];
        let view = TensorView::new(Dtype::I32, vec![1, 3, 32, 32], &bytes).unwrap();
        let p = tmp("cli_i32.safetensors");
        std::fs::write(
            &p,
            safetensors::serialize([("pixel_values", view)], None).unwrap(),
        )
        .unwrap();
        p.to_str().unwrap().to_string()
    };
    run(model, &["--pixels", &i32_px], "I32");
}

/// A pixel file whose offsets sum past u64::MAX (the safetensors crate's own
/// length check overflows on it): one line naming the file, no panic.
#[test]
fn overflowing_pixel_file_is_one_line() {
    let on_disk = tmp("overflow_pixels.safetensors");
    std::fs::write(&on_disk, fixtures::overflowing_safetensors()).unwrap();
    assert_one_line_error(
        &[
            "run",
            "--model",
            "tests/data/siglip_tiny",
            "--device",
            "cpu",
            "--pixels",
            on_disk.to_str().unwrap(),
        ],
        "overflow_pixels.safetensors",
    );
}

/// Without XDG_RUNTIME_DIR (containers, ssh, CI), probing for a wgpu adapter must
/// not print the Vulkan loader's complaints before a run that then uses the CPU.
#[test]
fn no_vulkan_loader_noise_without_xdg_runtime_dir() {
    let out = Command::new(BIN)
        .args([
            "run",
            "--model",
            "tests/data/siglip_tiny",
            "--pixels",
            "tests/data/siglip_tiny/io.safetensors",
        ])
        .current_dir(root())
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("run tessera");
    assert_ok(&out, "run --device auto without XDG_RUNTIME_DIR");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
}

// ---------------------------------------------------------------------------
// tessera embed

/// (shape, values, paths) of an embed output (safetensors).
fn read_embeddings(path: &Path) -> (Vec<usize>, Vec<f64>, Vec<String>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let paths: Vec<String> =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["paths"]).unwrap();
    let (shape, values) = read_all(path).remove("embeddings").unwrap();
    (shape, values, paths)
}

/// `pooler_output` rows of `tessera run --image FILES` (an independent path: one
/// batch through `run`), for comparison with embed's rows.
fn run_pooler(model: &str, images: &[&Path], name: &str) -> Vec<Vec<f64>> {
    let out = tmp(name);
    let mut args = vec![
        "run",
        "--model",
        model,
        "--device",
        "cpu",
        "--output",
        out.to_str().unwrap(),
        "--image",
    ];
    args.extend(images.iter().map(|p| p.to_str().unwrap()));
    assert_ok(&tessera(&args), "run --image");
    let (shape, v) = read_all(&out).remove("pooler_output").unwrap();
    let d = *shape.last().unwrap();
    v.chunks(d).map(<[f64]>::to_vec).collect()
}

fn embed_folder(name: &str) -> PathBuf {
    let dir = tmp(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let images = root().join("tests/data/images");
    for f in [
        "waves_64x48.png",
        "grid_32x32.png",
        "waves_64x48.jpg",
        "gray_64x48.png",
    ] {
        std::fs::copy(images.join(f), dir.join(f)).unwrap();
    }
    std::fs::copy(images.join("grid_32x32.png"), dir.join("sub/b.PNG")).unwrap();
    std::fs::write(
        dir.join("notes.txt"),
        "not an image, not picked up by the folder walk",
    )
    .unwrap();
    std::fs::write(dir.join("broken.jpg"), b"\xff\xd8 broken").unwrap();
    // A phone photo in HEIC: left out by the walk, and said so.
    std::fs::write(dir.join("sub/IMG_0001.HEIC"), HEIC_HEAD).unwrap();
    dir
}

/// The start of a HEIC file (an ISO-BMFF `ftyp` box, brand `heic`).
const HEIC_HEAD: &[u8] = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic";

/// A folder holding only images tessera does not decode is a one-line error that
/// names what was left out.
#[test]
fn embed_of_a_folder_of_heic_photos_says_why_nothing_was_found() {
    let dir = fresh_dir("embed_heic_only");
    for name in ["IMG_0001.HEIC", "IMG_0002.heic", "x.avif"] {
        std::fs::write(dir.join(name), HEIC_HEAD).unwrap();
    }
    let out = tmp("embed_heic_only.safetensors");
    assert_one_line_error(
        &[
            "embed",
            "--model",
            "tests/data/siglip_tiny",
            "-o",
            out.to_str().unwrap(),
            dir.to_str().unwrap(),
        ],
        "no images found in the inputs: left out 1 .avif, 2 .heic file(s)",
    );
}

/// `tessera embed` of the tiny model over `dir` into `out` on `device`, with
/// batches of `batch` and `more` arguments.
fn embed_tiny(dir: &Path, out: &Path, device: &str, batch: &str, more: &[&str]) -> Output {
    embed_with("tests/data/siglip_tiny", dir, out, device, batch, more)
}

/// `tessera embed --model MODEL DIR -o OUT --device DEVICE --batch BATCH MORE...`.
fn embed_with(
    model: &str,
    dir: &Path,
    out: &Path,
    device: &str,
    batch: &str,
    more: &[&str],
) -> Output {
    embed_with_env(model, dir, out, device, batch, more, &[])
}

/// [`embed_with`] with `env` set (as [`tessera_env`]).
fn embed_with_env(
    model: &str,
    dir: &Path,
    out: &Path,
    device: &str,
    batch: &str,
    more: &[&str],
    env: &[(&str, &Path)],
) -> Output {
    let mut args = vec![
        "embed",
        "--model",
        model,
        dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--device",
        device,
        "--batch",
        batch,
    ];
    args.extend(more);
    tessera_env(&args, env)
}

/// `--out-dtype f16` (.npy) and `bf16` (.safetensors): the f32 job's rows, each
/// value rounded once.
#[test]
fn embed_stores_half_precision_rows() {
    let dir = embed_folder("embed_half_in");
    let embed = |name: &str, more: &[&str]| {
        let out = tmp(name);
        let _ = std::fs::remove_file(&out);
        assert_ok(&embed_tiny(&dir, &out, "cpu", "2", more), name);
        out
    };
    let (shape, values, _) = read_embeddings(&embed("embed_half_f32.safetensors", &[]));
    let rounded = |f: fn(f32) -> f64| -> Vec<f64> { values.iter().map(|&v| f(v as f32)).collect() };
    let npy = embed("embed_half.npy", &["--out-dtype", "f16"]);
    let bytes = std::fs::read(&npy).unwrap();
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(
        header.contains("'<f2'") && header.contains(&format!("({}, {})", shape[0], shape[1])),
        "{header}"
    );
    let values_of = |bytes: &[u8], f: fn([u8; 2]) -> f64| -> Vec<f64> {
        bytes.chunks_exact(2).map(|c| f([c[0], c[1]])).collect()
    };
    let got = values_of(&bytes[10 + hlen..], |b| {
        half::f16::from_le_bytes(b).to_f64()
    });
    assert_eq!(got, rounded(|x| half::f16::from_f32(x).to_f64()));
    let st = embed("embed_half.safetensors", &["--out-dtype", "bf16"]);
    let bytes = std::fs::read(&st).unwrap();
    let t = SafeTensors::deserialize(&bytes).unwrap();
    let e = t.tensor("embeddings").unwrap();
    assert_eq!((e.dtype(), e.shape()), (Dtype::BF16, shape.as_slice()));
    let got = values_of(e.data(), |b| half::bf16::from_le_bytes(b).to_f64());
    assert_eq!(got, rounded(|x| half::bf16::from_f32(x).to_f64()));
    assert_one_line_error(
        &[
            "embed",
            "--model",
            "tests/data/siglip_tiny",
            dir.to_str().unwrap(),
            "-o",
            tmp("embed_half_bf16.npy").to_str().unwrap(),
            "--out-dtype",
            "bf16",
        ],
        "bfloat16",
    );
}

/// `--upright` (run and embed) turns images by their EXIF orientation: the rows
/// equal those of PNGs holding the pixels Pillow's `exif_transpose` makes of them;
/// without it, the rows of the pixels as stored; `run --pixels --upright` is a
/// usage error.
#[test]
fn upright_applies_the_exif_orientation() {
    let formats = root().join("tests/data/images/formats");
    let dir = fresh_dir("upright_in");
    let bytes = std::fs::read(formats.join("pil_upright.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let png_of = |key: &str, file: &Path| {
        let v = st.tensor(key).unwrap();
        let (h, w) = (v.shape()[0] as u32, v.shape()[1] as u32);
        image::RgbImage::from_raw(w, h, v.data().to_vec())
            .unwrap()
            .save(file)
            .unwrap();
    };
    let (turned, stored) = (tmp("upright_refs"), tmp("stored_refs"));
    for d in [&turned, &stored] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).unwrap();
    }
    let mut refs_up = Vec::new();
    for n in [3, 6, 8] {
        let name = format!("orient{n}.png");
        std::fs::copy(formats.join(&name), dir.join(&name)).unwrap();
        let up = turned.join(&name);
        png_of(&name, &up);
        refs_up.push(up);
    }
    let raw = stored.join("stored.png");
    png_of("stored", &raw);
    let model = "tests/data/siglip_tiny";
    let want_up = run_pooler(
        model,
        &refs_up.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        "upright_ref.safetensors",
    );
    let want_raw = run_pooler(model, &[raw.as_path()], "stored_ref.safetensors");
    for (upright, want) in [(true, &want_up), (false, &vec![want_raw[0].clone(); 3])] {
        let out = tmp("upright.safetensors");
        let _ = std::fs::remove_file(&out);
        let more: &[&str] = if upright { &["--upright"] } else { &[] };
        assert_ok(&embed_tiny(&dir, &out, "cpu", "2", more), "embed");
        let (shape, values, _) = read_embeddings(&out);
        assert_eq!(shape, vec![3, 64]);
        for (i, row) in values.chunks(64).enumerate() {
            let err = rel_l2(row, &want[i]);
            assert!(err <= 1e-5, "upright {upright}, row {i}: rel L2 {err:e}");
        }
    }
    // run --image --upright: the same rows as embed's.
    let got = run_image_with(model, &dir.join("orient6.png"), "--upright");
    assert!(rel_l2(&got, &want_up[1]) <= 1e-5);
}

/// `tessera run --model MODEL --device cpu FLAG --image IMAGE`: its
/// pooler_output; and `run --pixels ... FLAG` is a one-line error naming FLAG
/// (an option of images, not of pixel_values).
fn run_image_with(model: &str, image: &Path, flag: &str) -> Vec<f64> {
    let out = tmp(&format!("run_image{flag}.safetensors"));
    let res = tessera(&[
        "run",
        "--model",
        model,
        "--device",
        "cpu",
        flag,
        "--output",
        out.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
    ]);
    assert_ok(&res, &format!("run {flag}"));
    let io = root().join("tests/data/siglip_tiny/io.safetensors");
    assert_one_line_error(
        &[
            "run",
            "--model",
            model,
            "--pixels",
            io.to_str().unwrap(),
            flag,
        ],
        flag,
    );
    read_all(&out).remove("pooler_output").unwrap().1
}

/// `--jpeg-draft` (run and embed) decodes a JPEG as Pillow's `draft` does before
/// the resize: photo_420.jpg (163 × 122) for the tiny model's 32 px is decoded at
/// half size, and the rows equal those of a PNG holding the bytes Pillow's draft
/// decode made (scripts/make_jpeg_fixture.py); without the flag the rows are the
/// full decode's, which differ; `run --pixels --jpeg-draft` is a usage error.
#[test]
fn jpeg_draft_embeds_the_drafted_pixels() {
    let jpeg = root().join("tests/data/images/formats/jpeg");
    let dir = fresh_dir("draft_in");
    std::fs::copy(jpeg.join("photo_420.jpg"), dir.join("photo.jpg")).unwrap();
    let bytes = std::fs::read(jpeg.join("pil_jpeg_draft.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor("photo_420.jpg@81x61").unwrap();
    assert_eq!(v.shape(), [61, 82, 3]);
    let png = tmp("draft_ref.png");
    image::RgbImage::from_raw(82, 61, v.data().to_vec())
        .unwrap()
        .save(&png)
        .unwrap();
    let model = "tests/data/siglip_tiny";
    let want = run_pooler(model, &[png.as_path()], "draft_ref.safetensors");
    let full = run_pooler(model, &[&dir.join("photo.jpg")], "draft_full.safetensors");
    assert!(
        rel_l2(&full[0], &want[0]) > 1e-3,
        "the draft changed nothing"
    );
    for (flag, want) in [(true, &want), (false, &full)] {
        let out = tmp("draft.safetensors");
        let _ = std::fs::remove_file(&out);
        let more: &[&str] = if flag { &["--jpeg-draft"] } else { &[] };
        assert_ok(&embed_tiny(&dir, &out, "cpu", "1", more), "embed");
        let (_, values, _) = read_embeddings(&out);
        let err = rel_l2(&values, &want[0]);
        assert!(err <= 1e-5, "--jpeg-draft {flag}: rel L2 {err:e}");
    }
    let got = run_image_with(model, &dir.join("photo.jpg"), "--jpeg-draft");
    assert!(rel_l2(&got, &want[0]) <= 1e-5);
}

/// A folder (recursive, sorted) embeds in path order on two workers with batches
/// of 2; the broken file is reported and skipped; every row equals what `run`
/// makes of that image; --strict stops at the broken file and writes nothing.
#[test]
fn embed_folder_in_path_order_skipping_broken_files() {
    let dir = embed_folder("embed_in");
    let out = tmp("embed.safetensors");
    let _ = std::fs::remove_file(&out);
    let res = embed_tiny(&dir, &out, "cpu,cpu", "2", &[]);
    assert_ok(&res, "embed");
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(stderr.contains("broken.jpg"), "{stderr}");
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        stdout.contains("note: left out 1 .heic file(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("embedded 5 image(s)") && stdout.contains("1 skipped"),
        "{stdout}"
    );
    // Where the time went: decoding, or the devices.
    assert!(
        stdout.contains("decoding: ")
            && (stdout.contains("limited this job") || stdout.contains("kept pace")),
        "{stdout}"
    );
    let (shape, values, paths) = read_embeddings(&out);
    let names: Vec<&str> = paths
        .iter()
        .map(|p| p.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "gray_64x48.png",
            "grid_32x32.png",
            "b.PNG",
            "waves_64x48.jpg",
            "waves_64x48.png"
        ]
    );
    assert_eq!(shape, vec![5, 64]);
    let want = run_pooler(
        "tests/data/siglip_tiny",
        &paths.iter().map(Path::new).collect::<Vec<_>>(),
        "embed_ref.safetensors",
    );
    for (i, row) in values.chunks(64).enumerate() {
        let err = rel_l2(row, &want[i]);
        assert!(err <= 1e-5, "row {i} ({}): rel L2 {err:e}", paths[i]);
    }
    // Batches of one: the first batch (broken.jpg) has no image left; the rows
    // after it are written all the same, in the same order, and no temporary
    // file stays.
    let out1 = tmp("embed_b1.safetensors");
    let _ = std::fs::remove_file(&out1);
    let res = embed_tiny(&dir, &out1, "cpu,cpu", "1", &[]);
    assert_ok(&res, "embed --batch 1");
    let (shape1, values1, paths1) = read_embeddings(&out1);
    assert_eq!((shape1, &paths1), (vec![5, 64], &paths));
    assert!(rel_l2(&values1, &values) <= 1e-6, "batch 1 vs batch 2");
    let stray: Vec<_> = std::fs::read_dir(out1.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("embed_b1.safetensors.tmp")
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    // --strict: the broken file stops the job and no output appears.
    let strict_out = tmp("embed_strict.safetensors");
    let _ = std::fs::remove_file(&strict_out);
    assert_one_line_error(
        &[
            "embed",
            "--model",
            "tests/data/siglip_tiny",
            dir.to_str().unwrap(),
            "-o",
            strict_out.to_str().unwrap(),
            "--device",
            "cpu",
            "--strict",
        ],
        "broken.jpg",
    );
    assert!(!strict_out.exists());
}

/// A fresh folder of nine images and, last in path order, `9_broken.jpg`: a job
/// with `--strict` stops there after some rows (with batches of 1 and one device,
/// the producer is at most a few batches ahead of the rows written when it
/// reaches that file).
fn stopping_folder(name: &str) -> PathBuf {
    let dir = fresh_dir(name);
    let images = root().join("tests/data/images");
    for i in 0..9 {
        let f = ["waves_64x48.png", "grid_32x32.png", "waves_64x48.jpg"][i % 3];
        std::fs::copy(images.join(f), dir.join(format!("{i}_{f}"))).unwrap();
    }
    std::fs::write(dir.join("9_broken.jpg"), b"\xff\xd8 broken").unwrap();
    dir
}

/// Inputs are taken as given: a folder named twice gives its images twice, a
/// list line that is not UTF-8 is passed over with its reason (not the whole
/// list refused), and a FIFO named on the command line is passed over (reading
/// it would wait for a writer).
#[cfg(unix)]
#[test]
fn embed_takes_inputs_as_given() {
    use std::os::unix::ffi::OsStrExt;
    let dir = fresh_dir("embed_given_in");
    let src = root().join("tests/data/images/waves_64x48.png");
    std::fs::copy(&src, dir.join("a.png")).unwrap();
    std::fs::copy(&src, dir.join("b.png")).unwrap();
    let list = tmp("given.txt");
    let mut text = b"embed_given_in/bad\xff.png\n".to_vec();
    text.extend(b"embed_given_in/a.png\n");
    std::fs::write(&list, text).unwrap();
    let fifo = tmp("given_fifo.png");
    let _ = std::fs::remove_file(&fifo);
    let made = Command::new("mkfifo").arg(&fifo).status();
    let fifo_arg = made
        .is_ok_and(|s| s.success())
        .then(|| fifo.to_str().unwrap().to_string());
    let out = tmp("given.safetensors");
    let _ = std::fs::remove_file(&out);
    let at_list = format!("@{}", list.display());
    let d = dir.to_str().unwrap();
    let mut args = vec![
        "embed",
        "--model",
        "tests/data/siglip_tiny",
        "--device",
        "cpu",
        "-o",
        out.to_str().unwrap(),
        d,
        d,
        &at_list,
    ];
    args.extend(fifo_arg.as_deref());
    let res = tessera(&args);
    assert_ok(&res, "embed");
    let stderr = String::from_utf8_lossy(&res.stderr);
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains("embedded 5 image(s)"), "{stdout}");
    let bad = std::path::Path::new(std::ffi::OsStr::from_bytes(b"bad\xff.png"));
    assert!(
        stderr.contains(&format!("{}: a name that is not UTF-8", bad.display())),
        "{stderr}"
    );
    if fifo_arg.is_some() {
        assert!(
            stderr.contains("given_fifo.png: not a regular file"),
            "{stderr}"
        );
    }
}

/// Ctrl-C (SIGINT) stops a job that is writing rows: it exits with 130 and says
/// how many rows it kept and to resume, and `--resume` then makes what one
/// uninterrupted run makes.
#[cfg(unix)]
#[test]
fn embed_stops_on_ctrl_c_and_resumes() {
    let dir = fresh_dir("embed_interrupt_in");
    let src = root().join("tests/data/images/waves_64x48.png");
    for i in 0..6000 {
        let to = dir.join(format!("{i:04}.png"));
        if std::fs::hard_link(&src, &to).is_err() {
            std::fs::copy(&src, &to).unwrap();
        }
    }
    let (whole, out) = (tmp("interrupt_whole.npy"), tmp("interrupt.npy"));
    let partial = tmp("interrupt.npy.partial");
    let journal = tmp("interrupt.npy.partial.journal");
    for f in [&whole, &out, &partial, &journal] {
        let _ = std::fs::remove_file(f);
    }
    assert_ok(&embed_tiny(&dir, &whole, "cpu", "1", &[]), "embed, one run");
    let mut child = Command::new(BIN)
        .args([
            "embed",
            "--model",
            "tests/data/siglip_tiny",
            "--device",
            "cpu",
        ])
        .args([
            "--batch",
            "1",
            "-o",
            out.to_str().unwrap(),
            dir.to_str().unwrap(),
        ])
        .current_dir(root())
        .env("HF_HUB_OFFLINE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tessera");
    // Signalled once rows are being written (the partial file grows).
    let start = Instant::now();
    let mut seen = None;
    loop {
        let len = std::fs::metadata(&partial).map_or(0, |m| m.len());
        match seen {
            Some(first) if len > first => break,
            None if len > 0 => seen = Some(len),
            _ => {}
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before it could be interrupted"
        );
        assert!(start.elapsed() < Duration::from_secs(60), "no rows written");
        std::thread::sleep(Duration::from_millis(2));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -INT");
    let stopped = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("error: interrupted; ") && stderr.contains("rerun with --resume"),
        "{stderr}"
    );
    assert!(!out.exists() && partial.exists() && journal.exists());
    let resumed = embed_tiny(&dir, &out, "cpu", "1", &["--resume"]);
    assert_ok(&resumed, "embed --resume after Ctrl-C");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&whole).unwrap());
    assert_eq!(
        std::fs::read_to_string(tmp("interrupt.paths.txt")).unwrap(),
        std::fs::read_to_string(tmp("interrupt_whole.paths.txt")).unwrap()
    );
}

/// A job stopped by a broken file (--strict) keeps its rows; --resume goes on from
/// them (here skipping the file) and makes what one uninterrupted run makes.
#[test]
fn embed_resumes_a_stopped_job() {
    let dir = stopping_folder("embed_resume_in");
    let job = |out: &Path, more: &[&str]| embed_tiny(&dir, out, "cpu", "1", more);
    let (whole, out) = (tmp("resume_whole.npy"), tmp("resume.npy"));
    let partial = tmp("resume.npy.partial");
    let journal = tmp("resume.npy.partial.journal");
    let _ = std::fs::remove_dir(tmp("resume.paths.txt"));
    for f in [&whole, &out, &partial, &journal] {
        let _ = std::fs::remove_file(f);
    }
    assert_ok(&job(&whole, &[]), "embed, one run");
    let stopped = job(&out, &["--strict"]);
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(
        !stopped.status.success() && stderr.contains("9_broken.jpg"),
        "{stderr}"
    );
    assert!(stderr.contains("--resume"), "{stderr}");
    assert!(!out.exists() && partial.exists() && journal.exists());
    // Without --resume the rows are not overwritten.
    let again = job(&out, &[]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && stderr.contains("--resume"),
        "{stderr}"
    );
    let resumed = job(&out, &["--resume"]);
    assert_ok(&resumed, "embed --resume");
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        stdout.contains("embedded 9 image(s)")
            && stdout.contains("1 skipped")
            && stdout.contains("came from the earlier run"),
        "{stdout}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&whole).unwrap());
    assert_eq!(
        std::fs::read_to_string(tmp("resume.paths.txt")).unwrap(),
        std::fs::read_to_string(tmp("resume_whole.paths.txt")).unwrap()
    );
    assert!(!partial.exists() && !journal.exists());

    // The output cannot be renamed into place (a folder is where its paths go; a
    // folder at the output itself is refused before any work): every row is
    // kept, and --resume writes the output with nothing left to embed — no device
    // opened (CUDA, which this job names, need not exist), no weights looked for
    // (here deleted, as from an emptied cache) and no model loaded.
    let model = tmp("embed_resume_model");
    let _ = std::fs::remove_dir_all(&model);
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(root().join("tests/data/siglip_tiny").join(f), model.join(f)).unwrap();
    }
    let job_on = |device: &str, more: &[&str]| {
        embed_with(model.to_str().unwrap(), &dir, &out, device, "1", more)
    };
    let list = tmp("resume.paths.txt");
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(&list).unwrap();
    std::fs::create_dir(&list).unwrap();
    let blocked = job_on("cpu", &[]);
    let stderr = String::from_utf8_lossy(&blocked.stderr);
    assert!(
        !blocked.status.success() && stderr.contains("rerun with --resume"),
        "{stderr}"
    );
    assert!(partial.exists() && journal.exists() && !out.exists());
    std::fs::remove_dir(&list).unwrap();
    std::fs::remove_file(model.join("model.safetensors")).unwrap();
    let finished = job_on("cuda", &["--resume"]);
    assert_ok(&finished, "embed --resume with every batch written");
    let stdout = String::from_utf8_lossy(&finished.stdout);
    assert!(
        stdout.contains("embedded 9 image(s)") && !stdout.contains("device:"),
        "{stdout}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&whole).unwrap());
    assert!(!partial.exists() && !journal.exists());
}

/// --resume checks the model's files against those the job started with: a config
/// changed in place and a hub id whose cached `main` moved to another commit are
/// refused (the error names the --revision that goes on); a local folder's weights
/// rewritten too, while batches are left.
#[test]
fn embed_resume_checks_the_model_files() {
    let dir = stopping_folder("embed_files_in");
    let out = tmp("files.npy");
    let job = |model: &Path, more: &[&str], env: &[(&str, &Path)]| {
        embed_with_env(model.to_str().unwrap(), &dir, &out, "cpu", "1", more, env)
    };
    let refused = |res: &Output, words: &[&str]| {
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(
            !res.status.success() && words.iter().all(|w| stderr.contains(w)),
            "{words:?}: {stderr}"
        );
    };
    let start = |model: &Path, env: &[(&str, &Path)]| {
        for suffix in ["", ".partial", ".partial.journal", ".paths.txt"] {
            let _ = std::fs::remove_file(tmp(&format!("files.npy{suffix}")));
        }
        refused(&job(model, &["--strict"], env), &["9_broken.jpg"]);
        assert!(tmp("files.npy.partial.journal").exists());
    };
    let case = root().join("tests/data/siglip_tiny");

    // A local folder.
    let model = tmp("embed_files_model");
    let _ = std::fs::remove_dir_all(&model);
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(case.join(f), model.join(f)).unwrap();
    }
    start(&model, &[]);
    let config = std::fs::read(model.join("config.json")).unwrap();
    std::fs::write(model.join("config.json"), [&config[..], b"\n"].concat()).unwrap();
    refused(
        &job(&model, &["--resume"], &[]),
        &["model's files", "config "],
    );
    std::fs::write(model.join("config.json"), &config).unwrap();
    // The same bytes written again: the weights' time tells them from others.
    let weights = model.join("model.safetensors");
    let time = std::fs::metadata(&weights).unwrap().modified().unwrap();
    let set_time = |t| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&weights)
            .unwrap();
        f.set_modified(t).unwrap();
    };
    set_time(time + std::time::Duration::from_secs(5));
    refused(
        &job(&model, &["--resume"], &[]),
        &["weights", "changed", "model.safetensors"],
    );
    set_time(time);
    assert_ok(&job(&model, &["--resume"], &[]), "resumed, same files");
    assert!(out.exists());

    // A hub id: the cache's refs/main names the snapshot.
    let hub = tmp("embed_files_hub");
    let _ = std::fs::remove_dir_all(&hub);
    let repo = hub.join("models--test-org--files");
    let (a, b) = ("a".repeat(40), "b".repeat(40));
    for rev in [&a, &b] {
        std::fs::create_dir_all(repo.join("snapshots").join(rev)).unwrap();
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(case.join(f), repo.join("snapshots").join(rev).join(f)).unwrap();
        }
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), &a).unwrap();
    let env = [("HF_HUB_CACHE", hub.as_path())];
    let id = Path::new("test-org/files");
    start(id, &env);
    std::fs::write(repo.join("refs/main"), &b).unwrap();
    refused(
        &job(id, &["--resume"], &env),
        &[
            &format!("commit {a}"),
            &format!("commit {b}"),
            &format!("--revision {a}"),
        ],
    );
    // The earlier commit named: the same job (the revision is not part of it).
    assert_ok(
        &job(id, &["--resume", "--revision", &a], &env),
        "resumed at the earlier commit",
    );
    assert!(out.exists());
}

/// An input that does not exist fails at once, naming it (no partial file is
/// left); a list's missing file is skipped like an unreadable one.
#[test]
fn embed_missing_inputs() {
    let dir = embed_folder("embed_missing_in");
    let out = tmp("missing.npy");
    let _ = std::fs::remove_file(&out);
    let typo = dir.join("no_such_folder");
    let waves = dir.join("waves_64x48.png");
    let res = embed_tiny(&typo, &out, "cpu", "2", &[waves.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        res.status.code() == Some(1) && stderr.contains("no_such_folder: no such file or folder"),
        "{stderr}"
    );
    assert!(!out.exists() && !tmp("missing.npy.partial").exists());
    // Resumed, a job's paths are those it started with (a file embedded then
    // deleted is skipped): here no earlier run is found.
    let res = embed_tiny(&typo, &out, "cpu", "2", &["--resume"]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        res.status.code() == Some(1) && stderr.contains("no earlier run"),
        "{stderr}"
    );
    let list = dir.join("list.txt");
    std::fs::write(&list, "waves_64x48.png\ngone.png\n").unwrap();
    let at = format!("@{}", list.display());
    let res = embed_tiny(Path::new(&at), &out, "cpu", "2", &[]);
    assert_ok(&res, "a list with a missing file");
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        stdout.contains("embedded 1 image(s)") && stdout.contains("1 skipped"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&res.stderr).contains("gone.png"));
}

/// @list files (comments, blank lines, paths relative to the list), the .npy
/// format with its paths file, --normalize, and mean pooling of a model without a
/// head.
#[test]
fn embed_list_npy_normalize_and_mean_pooling() {
    let dir = embed_folder("embed_list");
    let list = dir.join("list.txt");
    std::fs::write(&list, "# two images\nwaves_64x48.png\n\nsub/b.PNG\n").unwrap();
    let out = tmp("embed.npy");
    let at = format!("@{}", list.display());
    assert_ok(
        &tessera(&[
            "embed",
            "--model",
            "tests/data/siglip_tiny_nohead",
            &at,
            "-o",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--normalize",
        ]),
        "embed @list",
    );
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(
        header.contains("'shape': (2, 64)") && header.contains("'<f4'"),
        "{header}"
    );
    assert_eq!((10 + hlen) % 64, 0, "npy header alignment");
    let v: Vec<f32> = bytes[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(v.len(), 128);
    for row in v.chunks(64) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    let paths = std::fs::read_to_string(tmp("embed.paths.txt")).unwrap();
    assert!(
        paths.lines().count() == 2 && paths.contains("sub/b.PNG"),
        "{paths}"
    );
    // Mean pooling: the mean of last_hidden_state, normalised, as `run` computes it.
    let run_out = tmp("embed_mean_ref.safetensors");
    assert_ok(
        &tessera(&[
            "run",
            "--model",
            "tests/data/siglip_tiny_nohead",
            "--device",
            "cpu",
            "--output",
            run_out.to_str().unwrap(),
            "--image",
            dir.join("waves_64x48.png").to_str().unwrap(),
        ]),
        "run nohead",
    );
    let (_, last) = read_all(&run_out).remove("last_hidden_state").unwrap();
    let mut mean = vec![0f64; 64];
    for t in last.chunks(64) {
        mean.iter_mut().zip(t).for_each(|(m, x)| *m += x / 16.0);
    }
    let norm = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
    let want: Vec<f64> = mean.iter().map(|x| x / norm).collect();
    let got: Vec<f64> = v[..64].iter().map(|&x| x as f64).collect();
    assert!(rel_l2(&got, &want) <= 1e-5);
}

/// A memory model embeds its images as one stream of segments (the bank carried),
/// as `run --image a b` does; several devices are refused for it.
#[test]
fn embed_memory_model_is_one_stream() {
    let images = root().join("tests/data/images");
    let (a, b) = (
        images.join("grid_32x32.png"),
        images.join("waves_64x48.png"),
    );
    let out = tmp("embed_mga.safetensors");
    assert_ok(
        &tessera(&[
            "embed",
            "--model",
            "assets/mga_tiny",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--batch",
            "8",
        ]),
        "embed memory model",
    );
    let (shape, values, _) = read_embeddings(&out);
    assert_eq!(shape, vec![2, 64]);
    let want = run_pooler("assets/mga_tiny", &[&a, &b], "embed_mga_ref.safetensors");
    for (i, row) in values.chunks(64).enumerate() {
        assert!(rel_l2(row, &want[i]) <= 1e-5, "segment {i}");
    }
    assert_one_line_error(
        &[
            "embed",
            "--model",
            "assets/mga_tiny",
            a.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--device",
            "cpu,cpu",
        ],
        "one stream",
    );
}

/// Batches spread over a CPU and a wgpu worker (lavapipe where there is no GPU)
/// still land in path order and agree with the CPU alone; so do a wgpu worker's
/// alone, whose batch is staged (uploaded) before the one in flight is read:
/// batches of 2 over 5 images reuse a slot and end with a smaller batch, and
/// SigLIP 2's packed batches each have their own length.
#[test]
fn embed_over_cpu_and_wgpu() {
    let wgpu = std::env::var("TESSERA_REQUIRE_WGPU").is_ok_and(|v| !v.is_empty() && v != "0")
        || tessera::Wgpu::new().is_ok();
    if !wgpu {
        // Straight to stderr: libtest captures eprintln! of a passing test.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: no wgpu adapter");
        return;
    }
    let dir = embed_folder("embed_mixed");
    std::fs::remove_file(dir.join("broken.jpg")).unwrap();
    let siglip2: &[&str] = &["--max-patches", "40"];
    for (model, extra) in [
        ("tests/data/siglip_tiny", &[][..]),
        ("tests/data/siglip2/siglip2_tiny", siglip2),
    ] {
        let embed = |dev: &str, batch: &str| {
            let out = tmp(&format!(
                "embed_mixed_{}.safetensors",
                dev.replace(',', "_")
            ));
            let mut args = vec!["embed", "--model", model, dir.to_str().unwrap()];
            args.extend([
                "-o",
                out.to_str().unwrap(),
                "--device",
                dev,
                "--batch",
                batch,
            ]);
            args.extend(extra);
            assert_ok(&tessera(&args), &format!("{model} on {dev}, batch {batch}"));
            read_embeddings(&out)
        };
        let cpu = embed("cpu", "2");
        assert_eq!(cpu.2.len(), 5, "{:?}", cpu.2);
        for (dev, batch) in [("cpu,wgpu", "1"), ("wgpu", "2")] {
            let got = embed(dev, batch);
            assert_eq!(got.2, cpu.2, "{model} on {dev}: path order");
            let err = rel_l2(&got.1, &cpu.1);
            assert!(
                err <= 1e-5,
                "{model} on {dev}, batch {batch}: rel L2 {err:e}"
            );
        }
    }
}

/// SigLIP 2 embeddings: batches packed (images of different grids together),
/// equal to `run --image` on each image's pooler_output, and to the mean of its
/// real rows of last_hidden_state with --pooling mean.
#[test]
fn embed_siglip2_packs_batches() {
    let dir = embed_folder("embed_siglip2");
    let model = "tests/data/siglip2/siglip2_tiny";
    let out = tmp("embed_siglip2.safetensors");
    let mean_out = tmp("embed_siglip2_mean.safetensors");
    for (pooling, path) in [("auto", &out), ("mean", &mean_out)] {
        let _ = std::fs::remove_file(path);
        let res = tessera(&[
            "embed",
            "--model",
            model,
            dir.to_str().unwrap(),
            "-o",
            path.to_str().unwrap(),
            "--device",
            "cpu",
            "--batch",
            "3",
            "--max-patches",
            "40",
            "--pooling",
            pooling,
        ]);
        assert_ok(&res, "embed siglip2");
    }
    let (shape, values, paths) = read_embeddings(&out);
    let (_, means, mean_paths) = read_embeddings(&mean_out);
    assert_eq!(paths, mean_paths);
    assert_eq!(shape, vec![paths.len(), 64]);
    assert!(paths.len() >= 4, "{paths:?}");
    for (i, p) in paths.iter().enumerate() {
        // Each image alone through `run`, padded outputs.
        let single = tmp("embed_siglip2_ref.safetensors");
        assert_ok(
            &tessera(&[
                "run",
                "--model",
                model,
                "--device",
                "cpu",
                "--max-patches",
                "40",
                "--output",
                single.to_str().unwrap(),
                "--image",
                p,
            ]),
            "run --image",
        );
        let all = read_all(&single);
        let pooled = &all["pooler_output"].1;
        let err = rel_l2(&values[i * 64..(i + 1) * 64], pooled);
        assert!(err < 1e-5, "{p}: pooled embedding vs run: rel L2 {err:e}");
        let n = all["pixel_attention_mask"]
            .1
            .iter()
            .filter(|&&m| m == 1.0)
            .count();
        let lhs = &all["last_hidden_state"].1;
        let mut mean = vec![0f64; 64];
        for row in lhs[..n * 64].chunks(64) {
            for (m, x) in mean.iter_mut().zip(row) {
                *m += x / n as f64;
            }
        }
        let err = rel_l2(&means[i * 64..(i + 1) * 64], &mean);
        assert!(err < 1e-5, "{p}: mean embedding vs run: rel L2 {err:e}");
    }
}

/// The stdout of `tessera bench --device cpu --quick --reps 1` with `args`, which
/// must succeed.
fn quick_cpu_bench(args: &[&str]) -> String {
    let mut all = vec!["bench", "--device", "cpu", "--quick", "--reps", "1"];
    all.extend_from_slice(args);
    let out = tessera(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `tessera bench` runs the shipped ops and prints its table, the per-op cost row
/// included once, with a readable time below 0.1 ms.
#[test]
fn bench_prints_the_per_op_cost_once() {
    let stdout = quick_cpu_bench(&["--op", "elementwise"]);
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("add, per-op cost"))
        .collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    // The median ms cell: a positive number, not a rounded-away 0.000.
    let ms: f64 = rows[0]
        .split_whitespace()
        .find_map(|c| c.parse::<f64>().ok().filter(|_| c.contains('.')))
        .unwrap_or_else(|| panic!("no time in {:?}", rows[0]));
    assert!(ms > 0.0, "{}", rows[0]);
    assert!(stdout.contains("add (residual)"), "{stdout}");
}

/// `tessera bench --case` keeps the rows whose label contains one of its strings
/// (one kernel to profile), and a string that names no case is an error naming
/// `--case`, not an empty table.
#[test]
fn bench_case_keeps_the_named_rows() {
    let stdout = quick_cpu_bench(&["--op", "linear", "--case", "linear qkv,fc2"]);
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("linear "))
        .map(|l| l.split("  ").next().unwrap_or(""))
        .collect();
    assert_eq!(rows, ["linear qkv", "linear fc2+res"], "{stdout}");
    assert_one_line_error(
        &[
            "bench",
            "--device",
            "cpu",
            "--quick",
            "--case",
            "no such case",
        ],
        "--case",
    );
}

/// A folder walk ends on link loops (each folder once), passes over FIFOs and
/// names it cannot store, and says so; a list from a pipe is read relative to the
/// current folder, a BOM and `#` lines are not paths, a listed folder is walked;
/// the output's bytes are the same run after run; rows that are not finite are
/// counted in a warning.
#[cfg(unix)]
#[test]
fn embed_walks_links_special_files_and_lists() {
    let dir = fresh_dir("embed_walk");
    let images = root().join("tests/data/images");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::copy(images.join("waves_64x48.png"), dir.join("a.png")).unwrap();
    std::fs::copy(images.join("grid_32x32.png"), dir.join("sub/b.png")).unwrap();
    // Links back up: the walk used to loop (two links: without end).
    std::os::unix::fs::symlink(".", dir.join("l1")).unwrap();
    std::os::unix::fs::symlink(".", dir.join("l2")).unwrap();
    std::os::unix::fs::symlink("..", dir.join("sub/up")).unwrap();
    // A FIFO named like an image: reading it would wait for a writer forever.
    let fifo = dir.join("pipe.png");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // Names the output could not give back: not UTF-8, a line break.
    use std::os::unix::ffi::OsStrExt;
    let raw = dir.join(std::ffi::OsStr::from_bytes(b"bad\xffname.png"));
    std::fs::copy(images.join("grid_32x32.png"), raw).unwrap();
    std::fs::copy(images.join("grid_32x32.png"), dir.join("two\nlines.png")).unwrap();

    let run = |out: &str, inputs: &[&str]| {
        let out = tmp(out);
        let _ = std::fs::remove_file(&out);
        let mut args = vec![
            "embed",
            "--model",
            "tests/data/siglip_tiny",
            "--device",
            "cpu",
        ];
        args.extend(["-o", out.to_str().unwrap()]);
        args.extend(inputs);
        let o = tessera(&args);
        assert_ok(&o, "embed");
        (out, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let d = dir.to_str().unwrap();
    let (out, stderr) = run("embed_walk.safetensors", &[d]);
    let (_, _, paths) = read_embeddings(&out);
    assert_eq!(paths, [format!("{d}/a.png"), format!("{d}/sub/b.png")]);
    for why in [
        "pipe.png: not a regular file",
        "cannot be stored",
        "lines.png",
    ] {
        assert!(stderr.contains(why), "{why}: {stderr}");
    }
    // The same job again: the same bytes (the metadata's keys in one order).
    let first = std::fs::read(&out).unwrap();
    let (again, _) = run("embed_walk.safetensors", &[d]);
    assert_eq!(std::fs::read(again).unwrap(), first);
    // --strict stops at what the walk passed over.
    let strict = tmp("embed_walk_strict.safetensors");
    let o = tessera(&[
        "embed",
        "--model",
        "tests/data/siglip_tiny",
        "--device",
        "cpu",
        "--strict",
        "-o",
        strict.to_str().unwrap(),
        d,
    ]);
    assert!(!o.status.success() && !strict.exists());

    // A list piped on stdin, run from `dir`: its paths are relative to `dir`.
    let list_out = tmp("embed_walk_stdin.safetensors");
    let mut child = Command::new(BIN)
        .args(["embed", "--model"])
        .arg(root().join("tests/data/siglip_tiny"))
        .args(["--device", "cpu", "-o"])
        .arg(&list_out)
        .arg("@/dev/stdin")
        .current_dir(&dir)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all("\u{feff}sub/b.png\n# a comment\n\nsub\n".as_bytes())
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_ok(&o, "embed @/dev/stdin");
    let (_, _, paths) = read_embeddings(&list_out);
    // (sub/up is `dir`, not walked before in this job: its a.png once; its links
    // and sub itself end there.)
    assert_eq!(paths, ["sub/b.png", "sub/b.png", "sub/up/a.png"]);

    // Non-finite weights: every row NaN, said in a warning (the rows are written).
    let model = fresh_dir("embed_walk_nan_model");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(root().join("tests/data/siglip_tiny").join(f), model.join(f)).unwrap();
    }
    let weights = model.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let (n, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let info = meta
        .tensors()
        .into_iter()
        .find(|(name, _)| name.ends_with("post_layernorm.weight"))
        .unwrap()
        .1;
    let at = 8 + n + info.data_offsets.0;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&weights, bytes).unwrap();
    let nan_out = tmp("embed_walk_nan.safetensors");
    let o = tessera(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "-o",
        nan_out.to_str().unwrap(),
        &format!("{d}/a.png"),
    ]);
    assert_ok(&o, "embed with a NaN weight");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("warning: 1 row(s) hold NaN"), "{stderr}");
}

/// A mistyped `TESSERA_CPU_ISA` is an error naming it, for every command,
/// before anything runs; `portable` and `auto` are taken.
#[test]
fn cpu_isa_typo_is_an_error() {
    let model = "tests/data/siglip_tiny";
    let io = "tests/data/siglip_tiny/io.safetensors";
    let args = ["run", "--model", model, "--pixels", io, "--device", "cpu"];
    let out = tessera_env(&args, &[("TESSERA_CPU_ISA", Path::new("portble"))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("TESSERA_CPU_ISA=\"portble\": expected auto or portable"),
        "{stderr}"
    );
    for ok in ["portable", "auto"] {
        let out = tessera_env(&args, &[("TESSERA_CPU_ISA", Path::new(ok))]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "TESSERA_CPU_ISA={ok}: {stderr}");
    }
}
