//! Hub ids download as transformers' `from_pretrained` does, against a local HTTP server on
//! 127.0.0.1 that serves the hub's file-resolution endpoint (`/{org}/{name}/resolve/{revision}/{file}`,
//! HEAD and GET, with the `ETag` and `X-Repo-Commit` headers the hub sends) from a temporary folder.
//! Covered: download into the Python-compatible cache layout, a cache hit with the server gone, a
//! pinned commit, offline misses (HF_HUB_OFFLINE and model.offline), a 404, a wrong revision, a
//! gated repository that needs HF_TOKEN, a repository with only `pytorch_model.bin`, and an
//! interrupted download resumed with a Range request (and from a server that ignores the range).
//! The server's ETag is the file's SHA-256, as the hub's is for LFS files.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use assert_cmd::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const REPO: &str = "test-org/tiny-blip";
const GATED: &str = "test-org/gated-blip";
/// A repository with PyTorch weights only (tests/fixtures/pth/caption.bin: tiny-blip in f16).
const PTH_REPO: &str = "test-org/pth-blip";
const TOKEN: &str = "hf_test_token";

/// A minimal hub: `root/{org}/{name}/{file}` at revision `main` (= COMMIT) or COMMIT itself.
struct LocalHub {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    /// `GET path`, the Range header, the status answered and the body bytes sent, per ranged GET.
    ranged: Arc<Mutex<Vec<Ranged>>>,
    thread: Option<JoinHandle<()>>,
    _root: tempfile::TempDir,
}

#[derive(Debug, Clone)]
struct Ranged {
    path: String,
    range: String,
    status: u16,
    sent: usize,
}

/// Whether the server answers a Range request with 206 (as the hub does) or ignores it (200).
#[derive(Clone, Copy, PartialEq)]
enum Ranges {
    Honour,
    Ignore,
}

impl LocalHub {
    fn start() -> LocalHub {
        LocalHub::start_with(Ranges::Honour)
    }

    fn start_with(ranges: Ranges) -> LocalHub {
        let root = tempfile::tempdir().unwrap();
        for repo in [REPO, GATED] {
            let dir = root.path().join(repo);
            std::fs::create_dir_all(&dir).unwrap();
            for file in ["config.json", "model.safetensors", "tokenizer.json"] {
                std::fs::copy(
                    Path::new(ROOT).join("models/tiny-blip").join(file),
                    dir.join(file),
                )
                .unwrap();
            }
        }
        let pth = root.path().join(PTH_REPO);
        std::fs::create_dir_all(&pth).unwrap();
        for file in ["config.json", "tokenizer.json"] {
            std::fs::copy(
                Path::new(ROOT).join("models/tiny-blip").join(file),
                pth.join(file),
            )
            .unwrap();
        }
        std::fs::copy(
            Path::new(ROOT).join("tests/fixtures/pth/caption.bin"),
            pth.join("pytorch_model.bin"),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let ranged = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = stop.clone();
            let requests = requests.clone();
            let ranged = ranged.clone();
            let root = root.path().to_path_buf();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = serve(stream, &root, &requests, &ranged, ranges);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        LocalHub {
            port,
            stop,
            requests,
            ranged,
            thread: Some(thread),
            _root: root,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn ranged(&self) -> Vec<Ranged> {
        self.ranged.lock().unwrap().clone()
    }

    /// Stops serving: the port is closed afterwards (connections are refused).
    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for LocalHub {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn serve(
    stream: TcpStream,
    root: &Path,
    log: &Mutex<Vec<String>>,
    ranged: &Mutex<Vec<Ranged>>,
    ranges: Ranges,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
            if name.eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    log.lock().unwrap().push(format!("{method} {path}"));
    let mut stream = stream;
    // /{org}/{name}/resolve/{revision}/{file}
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let respond =
        |stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]| {
            let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            stream.write_all(head.as_bytes())?;
            if method != "HEAD" {
                stream.write_all(body)?;
            }
            stream.flush()
        };
    let [org, name, "resolve", revision, file] = segments.as_slice() else {
        return respond(&mut stream, "404 Not Found", &[], b"not found");
    };
    let repo = format!("{org}/{name}");
    if repo == GATED && authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        return respond(
            &mut stream,
            "401 Unauthorized",
            &[("X-Error-Code", "GatedRepo".to_string())],
            b"{\"error\": \"Access to model test-org/gated-blip is restricted.\"}",
        );
    }
    if *revision != "main" && *revision != COMMIT {
        return respond(
            &mut stream,
            "404 Not Found",
            &[("X-Error-Code", "RevisionNotFound".to_string())],
            b"{\"error\": \"Invalid rev id\"}",
        );
    }
    let Ok(bytes) = std::fs::read(root.join(&repo).join(file)) else {
        // The hub names the commit only when the repository exists.
        let headers: Vec<(&str, String)> = if root.join(&repo).is_dir() {
            vec![
                ("X-Error-Code", "EntryNotFound".to_string()),
                ("X-Repo-Commit", COMMIT.to_string()),
            ]
        } else {
            vec![("X-Error-Code", "RepoNotFound".to_string())]
        };
        return respond(
            &mut stream,
            "404 Not Found",
            &headers,
            b"{\"error\": \"not found\"}",
        );
    };
    let mut headers = vec![
        ("ETag", format!("\"{}\"", sha256(&bytes))),
        ("X-Repo-Commit", COMMIT.to_string()),
        ("Content-Type", "application/octet-stream".to_string()),
    ];
    let start = range
        .as_deref()
        .filter(|_| method == "GET" && ranges == Ranges::Honour)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok());
    let (status, body): (&str, &[u8]) = match start {
        Some(start) if start < bytes.len() => {
            headers.push((
                "Content-Range",
                format!("bytes {start}-{}/{}", bytes.len() - 1, bytes.len()),
            ));
            ("206 Partial Content", &bytes[start..])
        }
        Some(_) => ("416 Range Not Satisfiable", b""),
        None => ("200 OK", &bytes),
    };
    if let Some(range) = range {
        ranged.lock().unwrap().push(Ranged {
            path: format!("{method} {path}"),
            range,
            status: status[..3].parse().unwrap(),
            sent: body.len(),
        });
    }
    respond(&mut stream, status, &headers, body)
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn vlmrun(endpoint: &str, cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::cargo_bin("vlmrun").unwrap();
    cmd.current_dir(ROOT)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_CACHE", cache)
        .env("HF_HOME", cache.join("hf-home"))
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("VLMRUN_CONFIG")
        .args(["--device", "cpu"])
        .args(args);
    cmd
}

fn run(cmd: &mut Command) -> Run {
    let output = cmd.timeout(Duration::from_secs(120)).output().unwrap();
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
    };
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    run
}

fn image() -> String {
    Path::new(ROOT)
        .join("tests/fixtures/images/chelsea.png")
        .display()
        .to_string()
}

fn repo_cache(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

/// The caption the repository's own copy of the model gives.
fn local_caption() -> String {
    let mut cmd = Command::cargo_bin("vlmrun").unwrap();
    cmd.current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--device", "cpu", "caption", "--model", "models/tiny-blip"])
        .arg(image());
    run(&mut cmd).stdout
}

#[test]
fn downloads_into_the_hf_cache_then_runs_with_the_server_gone() {
    let mut hub = LocalHub::start();
    let cache = tempfile::tempdir().unwrap();
    let image = image();
    let first = run(&mut vlmrun(
        &hub.endpoint(),
        cache.path(),
        &["caption", "--model", REPO, &image],
    ));
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(first.stdout, local_caption(), "same model, same caption");
    // Non-terminal stderr: one line per downloaded file.
    assert!(
        first
            .stderr
            .contains("downloading test-org/tiny-blip model.safetensors"),
        "{}",
        first.stderr
    );
    let requests = hub.requests();
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let path = format!("/{REPO}/resolve/main/{file}");
        assert!(
            requests.contains(&format!("GET {path}")),
            "{file}: {requests:?}"
        );
    }

    // The layout huggingface_hub writes: refs/main -> commit, snapshot links into blobs/.
    let repo = repo_cache(cache.path(), REPO);
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main"))
            .unwrap()
            .trim(),
        COMMIT
    );
    let snapshot = repo.join("snapshots").join(COMMIT);
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let link = snapshot.join(file);
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{file} is a link into blobs/"
        );
        let target = std::fs::canonicalize(&link).unwrap();
        assert!(target.starts_with(std::fs::canonicalize(repo.join("blobs")).unwrap()));
        assert_eq!(
            std::fs::read(&link).unwrap(),
            std::fs::read(Path::new(ROOT).join("models/tiny-blip").join(file)).unwrap()
        );
    }

    // Server gone: the cache alone serves the id, and nothing is downloaded again.
    let endpoint = hub.endpoint();
    hub.shut_down();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", hub.port)).is_err(),
        "the server is really gone"
    );
    let again = run(&mut vlmrun(
        &endpoint,
        cache.path(),
        &["caption", "--model", REPO, &image],
    ));
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(again.stdout, first.stdout);
    assert!(!again.stderr.contains("downloading"), "{}", again.stderr);
    // So does doctor, without network.
    let doctor = run(&mut vlmrun(
        &endpoint,
        cache.path(),
        &["--set", &format!("model.source={REPO}"), "doctor"],
    ));
    assert!(
        doctor.stdout.contains(&snapshot.display().to_string()),
        "{}",
        doctor.stdout
    );
}

#[test]
fn fetch_pins_a_commit_and_prints_the_snapshot() {
    let hub = LocalHub::start();
    let cache = tempfile::tempdir().unwrap();
    let fetched = run(&mut vlmrun(
        &hub.endpoint(),
        cache.path(),
        &["--quiet", "fetch", REPO, "--revision", COMMIT],
    ));
    assert_eq!(fetched.code, Some(0), "{}", fetched.stderr);
    let snapshot = repo_cache(cache.path(), REPO)
        .join("snapshots")
        .join(COMMIT);
    assert_eq!(fetched.stdout.trim(), snapshot.display().to_string());
    assert!(snapshot.join("model.safetensors").is_file());
    assert!(
        hub.requests()
            .iter()
            .any(|r| r == &format!("GET /{REPO}/resolve/{COMMIT}/config.json")),
        "{:?}",
        hub.requests()
    );
    // A commit pins without refs/: no branch was asked for.
    assert!(!repo_cache(cache.path(), REPO).join("refs/main").exists());
}

#[test]
fn offline_and_missing_is_a_clear_error_without_any_request() {
    let hub = LocalHub::start();
    let cache = tempfile::tempdir().unwrap();
    let image = image();
    let by_env = run(vlmrun(
        &hub.endpoint(),
        cache.path(),
        &["caption", "--model", REPO, &image],
    )
    .env("HF_HUB_OFFLINE", "1"));
    assert_eq!(by_env.code, Some(4), "{}", by_env.stderr);
    assert!(
        by_env.stderr.contains("is not in the Hugging Face cache"),
        "{}",
        by_env.stderr
    );
    assert!(
        by_env.stderr.contains("HF_HUB_OFFLINE is set"),
        "{}",
        by_env.stderr
    );
    assert!(
        by_env.stderr.contains("fix: unset HF_HUB_OFFLINE"),
        "{}",
        by_env.stderr
    );
    let by_config = run(&mut vlmrun(
        &hub.endpoint(),
        cache.path(),
        &[
            "--set",
            "model.offline=true",
            "caption",
            "--model",
            REPO,
            &image,
        ],
    ));
    assert_eq!(by_config.code, Some(4), "{}", by_config.stderr);
    assert!(
        by_config.stderr.contains("model.offline: true"),
        "{}",
        by_config.stderr
    );
    assert!(by_config.stdout.is_empty());
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());
    assert!(!repo_cache(cache.path(), REPO).join("blobs").exists());
}

#[test]
fn a_missing_repository_is_a_404_naming_it() {
    let hub = LocalHub::start();
    let cache = tempfile::tempdir().unwrap();
    let image = image();
    let missing = run(&mut vlmrun(
        &hub.endpoint(),
        cache.path(),
        &["caption", "--model", "test-org/no-such-model", &image],
    ));
    assert_eq!(missing.code, Some(4), "{}", missing.stderr);
    assert!(
        missing
            .stderr
            .contains("test-org/no-such-model has no config.json at revision main"),
        "{}",
        missing.stderr
    );
    assert!(
        missing.stderr.contains(&hub.endpoint()),
        "{}",
        missing.stderr
    );
    assert!(missing.stderr.contains("fix:"), "{}", missing.stderr);
    assert_eq!(
        missing.stderr.matches("error:").count(),
        1,
        "{}",
        missing.stderr
    );
}

#[test]
fn a_wrong_revision_names_the_revision() {
    let hub = LocalHub::start();
    let cache = tempfile::tempdir().unwrap();
    let image = image();
    let wrong = run(&mut vlmrun(
        &hub.endpoint(),
        cache.path(),
        &[
            "--set",
            "model.revision=v9.9",
            "caption",
            "--model",
            REPO,
            &image,
        ],
    ));
    assert_eq!(wrong.code, Some(4), "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("at revision v9.9"),
        "{}",
        wrong.stderr
    );
    assert!(wrong.stderr.contains("model.revision"), "{}", wrong.stderr);
    assert!(
        hub.requests()
            .iter()
            .any(|r| r.contains("/resolve/v9.9/config.json")),
        "{:?}",
        hub.requests()
    );
    assert!(!repo_cache(cache.path(), REPO)
        .join("snapshots")
        .join(COMMIT)
        .join("model.safetensors")
        .exists());
}

#[test]
fn a_gated_repository_needs_hf_token() {
    let hub = LocalHub::start();
    let cache = tempfile::tempdir().unwrap();
    let image = image();
    let refused = run(&mut vlmrun(
        &hub.endpoint(),
        cache.path(),
        &["caption", "--model", GATED, &image],
    ));
    assert_eq!(refused.code, Some(4), "{}", refused.stderr);
    assert!(refused.stderr.contains("HF_TOKEN"), "{}", refused.stderr);
    let allowed = run(vlmrun(
        &hub.endpoint(),
        cache.path(),
        &["caption", "--model", GATED, &image],
    )
    .env("HF_TOKEN", TOKEN));
    assert_eq!(allowed.code, Some(0), "{}", allowed.stderr);
    assert_eq!(allowed.stdout.lines().count(), 1);
}

#[test]
fn a_repository_with_only_pytorch_weights_downloads_and_captions() {
    let hub = LocalHub::start();
    let cache = tempfile::tempdir().unwrap();
    let image = image();
    let args = ["--precision", "f16", "caption", "--model", PTH_REPO, &image];
    let fetched = run(&mut vlmrun(&hub.endpoint(), cache.path(), &args));
    assert_eq!(fetched.code, Some(0), "{}", fetched.stderr);
    let mut local = Command::cargo_bin("vlmrun").unwrap();
    local
        .current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args([
            "--device",
            "cpu",
            "--precision",
            "f16",
            "caption",
            "--model",
            "models/tiny-blip",
        ])
        .arg(&image);
    assert_eq!(
        fetched.stdout,
        run(&mut local).stdout,
        "same weights, same caption"
    );
    let requests = hub.requests();
    for file in [
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
    ] {
        assert!(
            requests
                .iter()
                .any(|r| r.ends_with(&format!("/{PTH_REPO}/resolve/main/{file}"))),
            "{file} asked for: {requests:?}"
        );
    }
    let snapshot = repo_cache(cache.path(), PTH_REPO)
        .join("snapshots")
        .join(COMMIT);
    assert_eq!(
        std::fs::read(snapshot.join("pytorch_model.bin")).unwrap(),
        std::fs::read(Path::new(ROOT).join("tests/fixtures/pth/caption.bin")).unwrap()
    );
    assert!(!snapshot.join("model.safetensors").exists());
    // Cached: the next run asks nothing.
    let before = hub.requests().len();
    let again = run(&mut vlmrun(&hub.endpoint(), cache.path(), &args));
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(again.stdout, fetched.stdout);
    assert_eq!(hub.requests().len(), before, "{:?}", hub.requests());
}

/// Leaves `prefix` as the partial download of tiny-blip's model.safetensors, where an interrupted
/// run leaves it (`blobs/<sha256>.incomplete`); returns the file's bytes and its blob path.
fn plant_partial(cache: &Path, prefix: impl FnOnce(&[u8]) -> Vec<u8>) -> (Vec<u8>, PathBuf) {
    let bytes = std::fs::read(Path::new(ROOT).join("models/tiny-blip/model.safetensors")).unwrap();
    let blobs = repo_cache(cache, REPO).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let blob = blobs.join(sha256(&bytes));
    std::fs::write(blob.with_extension("incomplete"), prefix(&bytes)).unwrap();
    (bytes, blob)
}

/// The cache holds the model as a finished download does: the blob named by its SHA-256 with
/// exactly `bytes`, no partial file left, refs/main and the snapshot link pointing at it.
fn assert_cached(cache: &Path, bytes: &[u8], blob: &Path) {
    assert_eq!(std::fs::read(blob).unwrap(), bytes);
    assert_eq!(
        sha256(&std::fs::read(blob).unwrap()),
        blob.file_name().unwrap().to_str().unwrap()
    );
    assert!(!blob.with_extension("incomplete").exists());
    let repo = repo_cache(cache, REPO);
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main"))
            .unwrap()
            .trim(),
        COMMIT
    );
    let link = repo
        .join("snapshots")
        .join(COMMIT)
        .join("model.safetensors");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::canonicalize(&link).unwrap(),
        std::fs::canonicalize(blob).unwrap()
    );
    let leftovers: Vec<_> = std::fs::read_dir(repo.join("blobs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|name| name.ends_with(".incomplete"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let hub = LocalHub::start();
    let cache = tempfile::tempdir().unwrap();
    let half = 2_000_000;
    let (bytes, blob) = plant_partial(cache.path(), |b| b[..half].to_vec());
    let image = image();
    let run_ = run(&mut vlmrun(
        &hub.endpoint(),
        cache.path(),
        &["caption", "--model", REPO, &image],
    ));
    assert_eq!(run_.code, Some(0), "{}", run_.stderr);
    assert_eq!(run_.stdout, local_caption());
    let ranged = hub.ranged();
    assert_eq!(ranged.len(), 1, "{ranged:?}");
    assert_eq!(
        ranged[0].path,
        format!("GET /{REPO}/resolve/main/model.safetensors")
    );
    assert_eq!(ranged[0].range, format!("bytes={half}-"));
    assert_eq!(ranged[0].status, 206);
    assert_eq!(ranged[0].sent, bytes.len() - half, "only the rest was sent");
    // hf-hub did not download the file again.
    let full_gets = hub
        .requests()
        .iter()
        .filter(|r| *r == &format!("GET /{REPO}/resolve/main/model.safetensors"))
        .count();
    assert_eq!(full_gets, 1, "{:?}", hub.requests());
    assert!(
        run_.stderr
            .contains("resumed test-org/tiny-blip model.safetensors"),
        "{}",
        run_.stderr
    );
    assert_cached(cache.path(), &bytes, &blob);
}

#[test]
fn a_server_that_ignores_range_still_gives_the_right_file() {
    let hub = LocalHub::start_with(Ranges::Ignore);
    let cache = tempfile::tempdir().unwrap();
    // Wrong bytes on disk: appending to them would give a corrupt file.
    let (bytes, blob) = plant_partial(cache.path(), |b| vec![0xAB; b.len() / 2]);
    let run_ = run(&mut vlmrun(
        &hub.endpoint(),
        cache.path(),
        &["--quiet", "fetch", REPO],
    ));
    assert_eq!(run_.code, Some(0), "{}", run_.stderr);
    let ranged = hub.ranged();
    assert_eq!(ranged.len(), 1, "{ranged:?}");
    assert_eq!(ranged[0].status, 200);
    assert_eq!(ranged[0].sent, bytes.len());
    assert_cached(cache.path(), &bytes, &blob);
}

#[test]
fn a_partial_file_with_wrong_bytes_is_downloaded_again() {
    let hub = LocalHub::start();
    let cache = tempfile::tempdir().unwrap();
    let (bytes, blob) = plant_partial(cache.path(), |b| {
        let mut wrong = b[..b.len() / 2].to_vec();
        wrong[100] ^= 0xFF;
        wrong
    });
    let run_ = run(&mut vlmrun(&hub.endpoint(), cache.path(), &["fetch", REPO]));
    assert_eq!(run_.code, Some(0), "{}", run_.stderr);
    assert_eq!(hub.ranged()[0].status, 206);
    assert!(
        run_.stderr.contains("is not the hub's file"),
        "{}",
        run_.stderr
    );
    assert_cached(cache.path(), &bytes, &blob);
}
