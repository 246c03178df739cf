//! Continues an interrupted hub download. hf-hub writes a file to `blobs/<etag>.incomplete` and
//! renames it when complete, but restarts that file from zero on the next attempt; this module,
//! called before hf-hub for each file, finds such a partial blob and asks the server for the rest
//! (`Range: bytes=N-`). A 206 answer is appended; a server that ignores the range (200) has its full
//! answer written over the partial file. The result is checked (size, and the SHA-256 when the ETag
//! is one, as the hub's ETag of every LFS file is) and renamed to `blobs/<etag>`, so hf-hub then
//! finds the blob and only writes `refs/` and the `snapshots/` link, the layout staying exactly
//! what it writes. Without a partial file in the repository's `blobs/`, nothing is asked.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, LOCATION, RANGE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use super::HubError;

/// What resuming did for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// No partial download of this file in the cache (nothing was asked of the server).
    Nothing,
    /// The blob was completed: `from` bytes were already on disk; `ranged` says whether the server
    /// honoured the range (false: it sent the whole file again).
    Completed { from: u64, total: u64, ranged: bool },
}

/// Where one file of a hub repository is and how to ask for it.
pub struct Request<'a> {
    pub endpoint: &'a str,
    pub id: &'a str,
    pub revision: &'a str,
    pub file: &'a str,
    /// The hub cache directory (`HF_HUB_CACHE`...).
    pub cache: &'a Path,
}

impl Request<'_> {
    fn url(&self) -> String {
        // Branch names may hold `/` (refs/pr/1): one path segment, as hf-hub encodes it.
        let revision = self.revision.replace('/', "%2F");
        format!(
            "{}/{}/resolve/{revision}/{}",
            self.endpoint, self.id, self.file
        )
    }

    fn repo_folder(&self) -> PathBuf {
        self.cache
            .join(format!("models--{}", self.id.replace('/', "--")))
    }

    fn failed(&self, message: String) -> HubError {
        HubError::Download {
            id: self.id.to_string(),
            file: self.file.to_string(),
            endpoint: self.endpoint.to_string(),
            message,
        }
    }
}

/// True when the repository's `blobs/` holds any `.incomplete` file (no network needed to say).
pub fn has_partial(request: &Request) -> bool {
    std::fs::read_dir(request.repo_folder().join("blobs"))
        .map(|entries| {
            entries.flatten().any(|entry| {
                entry
                    .file_name()
                    .to_str()
                    .is_some_and(|name| name.ends_with(".incomplete"))
            })
        })
        .unwrap_or(false)
}

/// The token hf-hub would send: `HF_TOKEN`, else the `HF_TOKEN_PATH` file, else `$HF_HOME/token`
/// (none when `HF_HUB_DISABLE_IMPLICIT_TOKEN` is set).
fn token() -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if var("HF_HUB_DISABLE_IMPLICIT_TOKEN").is_some() {
        return None;
    }
    if let Some(token) = var("HF_TOKEN") {
        return Some(token.trim().to_string());
    }
    let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
        var("XDG_CACHE_HOME")
            .map(|xdg| PathBuf::from(xdg).join("huggingface"))
            .unwrap_or_else(|| {
                PathBuf::from(var("HOME").unwrap_or_else(|| ".".to_string()))
                    .join(".cache/huggingface")
            })
    });
    let file = var("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join("token"));
    std::fs::read_to_string(file)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn auth_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = token().and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
        headers.insert(AUTHORIZATION, value);
    }
    headers
}

/// The file's ETag (the LFS one when the hub links to storage) and size, as hf-hub reads them
/// from a HEAD of the resolve URL (relative redirects followed, absolute ones not).
struct Head {
    etag: String,
    size: Option<u64>,
}

fn head(request: &Request, headers: &HeaderMap) -> Result<Option<Head>, HubError> {
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("vlmrun/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|err| request.failed(err.to_string()))?;
    let mut url = request.url();
    for _ in 0..10 {
        let response = client
            .head(&url)
            .headers(headers.clone())
            .send()
            .map_err(|err| request.failed(err.to_string()))?;
        let status = response.status();
        if status.is_redirection() {
            if let Some(location) = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
            {
                if location.starts_with('/') {
                    url = format!("{}{location}", request.endpoint);
                    continue;
                }
            }
        } else if !status.is_success() {
            // Leave the error (404, 401...) to hf-hub, which names it.
            return Ok(None);
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let Some(raw) = header("x-linked-etag").or_else(|| header("etag")) else {
            return Ok(None);
        };
        let etag = raw
            .strip_prefix("W/")
            .unwrap_or(&raw)
            .trim_matches('"')
            .to_string();
        let size = header("x-linked-size")
            .or_else(|| header(CONTENT_LENGTH.as_str()))
            .and_then(|v| v.parse().ok());
        return Ok(Some(Head { etag, size }));
    }
    Ok(None)
}

/// If a partial download of `request.file` lies in the cache, completes it into its blob (see the
/// module doc). `progress` is told the bytes on disk as they grow (and the total, first).
pub fn resume(request: &Request, progress: &dyn Fn(u64, u64)) -> Result<Resumed, HubError> {
    if !has_partial(request) {
        return Ok(Resumed::Nothing);
    }
    let headers = auth_headers();
    let Some(Head { etag, size }) = head(request, &headers)? else {
        return Ok(Resumed::Nothing);
    };
    if etag.is_empty() || etag.contains(['/', '\\']) || etag.starts_with('.') {
        return Ok(Resumed::Nothing);
    }
    let blobs = request.repo_folder().join("blobs");
    let blob = blobs.join(&etag);
    let partial = blobs.join(format!("{etag}.incomplete"));
    if blob.exists() || !partial.is_file() {
        return Ok(Resumed::Nothing);
    }
    let io = |what: &str, err: std::io::Error| {
        request.failed(format!("{what} {}: {err}", partial.display()))
    };
    // The lock hf-hub takes for this blob, so that two processes never write one partial file.
    let locks = request
        .cache
        .join(".locks")
        .join(request.repo_folder().file_name().unwrap_or_default());
    std::fs::create_dir_all(&locks).map_err(|err| io("creating the lock beside", err))?;
    let lock = File::create(locks.join(format!("{etag}.lock")))
        .map_err(|err| io("creating the lock beside", err))?;
    lock.lock().map_err(|err| io("locking", err))?;

    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&partial)
        .map_err(|err| io("opening", err))?;
    let mut have = file.metadata().map_err(|err| io("reading", err))?.len();
    if size.is_some_and(|total| have > total) {
        have = 0;
    }
    let total = size.unwrap_or(0);
    let outcome = if size == Some(have) {
        Resumed::Completed {
            from: have,
            total,
            ranged: false,
        }
    } else {
        tracing::info!(
            "resuming {} {} at {have} of {total} bytes",
            request.id,
            request.file
        );
        let ranged = fetch_rest(request, &headers, &mut file, have, total, progress)?;
        Resumed::Completed {
            from: have,
            total,
            ranged,
        }
    };
    file.flush().map_err(|err| io("writing", err))?;
    drop(file);
    if let Err(problem) = check(&partial, size, &etag) {
        // Wrong bytes on disk (a partial file from another version, or a corrupt one): drop it so
        // that hf-hub downloads the file whole.
        tracing::warn!(
            "the resumed download of {} {} is not the hub's file ({problem}); downloading it again",
            request.id,
            request.file
        );
        std::fs::remove_file(&partial).map_err(|err| io("removing", err))?;
        return Ok(Resumed::Nothing);
    }
    std::fs::rename(&partial, &blob).map_err(|err| io("renaming", err))?;
    Ok(outcome)
}

/// Asks for the bytes from `have` on and writes them at their place in `file`; returns whether the
/// server honoured the range.
fn fetch_rest(
    request: &Request,
    headers: &HeaderMap,
    file: &mut File,
    have: u64,
    total: u64,
    progress: &dyn Fn(u64, u64),
) -> Result<bool, HubError> {
    let client = Client::builder()
        .user_agent(concat!("vlmrun/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(None)
        .build()
        .map_err(|err| request.failed(err.to_string()))?;
    let mut ask = client.get(request.url()).headers(headers.clone());
    if have > 0 {
        ask = ask.header(RANGE, format!("bytes={have}-"));
    }
    let mut response = ask.send().map_err(|err| request.failed(err.to_string()))?;
    let status = response.status();
    let ranged =
        status == StatusCode::PARTIAL_CONTENT && content_range_start(&response) == Some(have);
    if !ranged && status == StatusCode::RANGE_NOT_SATISFIABLE {
        // The partial file is not a prefix of this file after all: start it over.
        response = client
            .get(request.url())
            .headers(headers.clone())
            .send()
            .map_err(|err| request.failed(err.to_string()))?;
    }
    let status = response.status();
    if !ranged && !status.is_success() {
        return Err(request.failed(format!("the server answered {status}")));
    }
    let start = if ranged { have } else { 0 };
    let io = |err: std::io::Error| request.failed(format!("writing the partial file: {err}"));
    file.set_len(start).map_err(io)?;
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut written = start;
    progress(written, total);
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = response
            .read(&mut buffer)
            .map_err(|err| request.failed(format!("reading the download: {err}")))?;
        if read == 0 {
            break;
        }
        file.write_all(&buffer[..read]).map_err(io)?;
        written += read as u64;
        progress(written, total);
    }
    Ok(ranged)
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range_start(response: &Response) -> Option<u64> {
    let value = response
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    value
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The completed file has the size the hub announced and, when the ETag is a SHA-256 (every LFS
/// file's), that hash.
fn check(path: &Path, size: Option<u64>, etag: &str) -> Result<(), String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if let Some(size) = size {
        if len != size {
            return Err(format!("{len} bytes, the hub says {size}"));
        }
    }
    if etag.len() == 64 && etag.chars().all(|c| c.is_ascii_hexdigit()) {
        let found = sha256_file(path).map_err(|e| e.to_string())?;
        if !found.eq_ignore_ascii_case(etag) {
            return Err(format!("SHA-256 {found}, the hub says {etag}"));
        }
    }
    Ok(())
}

/// The lowercase hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_check_catches_a_wrong_prefix_and_a_wrong_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&path).unwrap(), abc);
        assert!(check(&path, Some(3), abc).is_ok());
        assert!(check(&path, Some(4), abc).unwrap_err().contains("3 bytes"));
        std::fs::write(&path, b"abd").unwrap();
        assert!(check(&path, Some(3), abc).unwrap_err().contains("SHA-256"));
        // A git (non-LFS) ETag is not a SHA-256 of the content: only the size is checked.
        assert!(check(&path, Some(3), &"0".repeat(40)).is_ok());
    }

    #[test]
    fn partial_files_are_found_without_network() {
        let cache = tempfile::tempdir().unwrap();
        let request = Request {
            endpoint: "http://127.0.0.1:9",
            id: "org/name",
            revision: "main",
            file: "model.safetensors",
            cache: cache.path(),
        };
        assert!(!has_partial(&request));
        // No partial file: no request (the endpoint above would refuse the connection).
        assert_eq!(resume(&request, &|_, _| {}).unwrap(), Resumed::Nothing);
        let blobs = cache.path().join("models--org--name/blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(blobs.join("abc"), b"done").unwrap();
        assert!(!has_partial(&request));
        std::fs::write(blobs.join("def.incomplete"), b"half").unwrap();
        assert!(has_partial(&request));
        assert_eq!(
            request.url(),
            "http://127.0.0.1:9/org/name/resolve/main/model.safetensors"
        );
    }
}
