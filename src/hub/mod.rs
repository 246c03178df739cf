//! Where model files come from: a local directory, or a hub id resolved in the Hugging Face cache
//! (the Python-compatible layout `models--org--name/{refs/<rev>, snapshots/<sha>/<file>}`). The cache
//! lookup never touches the network and is always compiled; [`ensure_model`] downloads what the cache
//! lacks, as transformers' `from_pretrained` does, through `fetch` (cargo feature `hub`, on by default).

#[cfg(feature = "hub")]
pub mod fetch;
#[cfg(feature = "hub")]
pub mod resume;

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Files a BLIP model directory needs (weights: one of the three).
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";
/// PyTorch weights, used only when a repository or directory has no safetensors.
pub const PYTORCH_WEIGHTS_FILE: &str = "pytorch_model.bin";

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("model directory {} not found{reason}\n  fix: set model.source (or --model) to a directory holding config.json, model.safetensors (or pytorch_model.bin) and tokenizer.json, or to a hub id such as Salesforce/blip-image-captioning-base; leave it unset for the built-in demo model", path.display())]
    LocalNotFound {
        path: PathBuf,
        /// Empty, or why it was not taken for a hub id.
        reason: String,
    },

    #[error("model source {} is a file, not a model directory\n  fix: point model.source at the directory that holds it (config.json, weights, tokenizer.json), or at a .gguf file written by `vlmrun quantize`", path.display())]
    NotADirectory { path: PathBuf },

    #[error("model {id} (revision {revision}) is not in the Hugging Face cache {} and {why}\n  fix: {fix}", cache.display())]
    NotCached {
        id: String,
        revision: String,
        cache: PathBuf,
        /// Why it was not downloaded, e.g. "downloads are off (HF_HUB_OFFLINE=1)".
        why: String,
        fix: String,
    },

    #[error("{id} has no {file} at revision {revision} on {endpoint} (or the repository or the revision does not exist)\n  fix: check the hub id (org/name) and model.revision (--revision for fetch); a private or gated repository needs HF_TOKEN")]
    NotOnHub {
        id: String,
        revision: String,
        file: String,
        endpoint: String,
    },

    #[error("{endpoint} refused {id} ({file}): {message}\n  fix: set HF_TOKEN to a read token of an account with access (https://huggingface.co/settings/tokens), and accept the model's terms on its page if it is gated")]
    Unauthorized {
        id: String,
        file: String,
        endpoint: String,
        message: String,
    },

    #[error("downloading {file} of {id} from {endpoint} failed: {message}\n  fix: check the network (or set HF_ENDPOINT to a mirror); with the files already in the cache, HF_HUB_OFFLINE=1 runs without network")]
    Download {
        id: String,
        file: String,
        endpoint: String,
        message: String,
    },

    #[error("model directory {} is missing {missing}\n  fix: a BLIP model directory needs config.json, model.safetensors (or model.safetensors.index.json and its shards, or pytorch_model.bin) and tokenizer.json; see models/README.md", dir.display())]
    MissingFiles { dir: PathBuf, missing: String },
}

/// The Hugging Face hub cache directory and the variable that chose it. Precedence as huggingface_hub:
/// HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub.
pub fn cache_dir() -> (PathBuf, &'static str) {
    let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(dir) = var("HF_HUB_CACHE") {
        return (PathBuf::from(dir), "HF_HUB_CACHE");
    }
    if let Some(dir) = var("HUGGINGFACE_HUB_CACHE") {
        return (PathBuf::from(dir), "HUGGINGFACE_HUB_CACHE");
    }
    if let Some(home) = var("HF_HOME") {
        return (PathBuf::from(home).join("hub"), "HF_HOME");
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return (PathBuf::from(xdg).join("huggingface/hub"), "XDG_CACHE_HOME");
    }
    let home = var("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    (
        home.join(".cache/huggingface/hub"),
        "default (~/.cache/huggingface/hub)",
    )
}

/// The hub endpoint: `HF_ENDPOINT`, else https://huggingface.co (what hf-hub uses too).
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .map(|value| value.trim().trim_end_matches('/').to_string())
        .unwrap_or_else(|| "https://huggingface.co".to_string())
}

/// True when HF_HUB_OFFLINE asks for no network.
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|value| {
            matches!(
                value.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// How `model.source` was understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSource {
    Local { dir: PathBuf },
    Hub { id: String, revision: String },
}

/// A local directory when one exists at that path; otherwise `org/name` is a hub id, unless it
/// reads as a path (`./x`, `../x`, `/x`, `~/x`, `models/x`, more than one `/`, or `x/` where the
/// folder `x` exists here): a missing local directory is said to be one, never sent to the hub.
pub fn classify_source(source: &str, revision: &str) -> Result<ModelSource, HubError> {
    let path = Path::new(source);
    if path.is_dir() {
        return Ok(ModelSource::Local {
            dir: path.to_path_buf(),
        });
    }
    if path.is_file() {
        return Err(HubError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    if let Some(why) = path_like_reason(source) {
        return Err(HubError::LocalNotFound {
            path: path.to_path_buf(),
            reason: format!(" ({why}, so it was not looked up on the hub; hub ids read org/name)"),
        });
    }
    if looks_like_hub_id(source) {
        return Ok(ModelSource::Hub {
            id: source.to_string(),
            revision: revision.to_string(),
        });
    }
    Err(HubError::LocalNotFound {
        path: path.to_path_buf(),
        reason: " (and it is not a hub id of the form org/name)".to_string(),
    })
}

/// Why `source` reads as a local path rather than a hub id, if it does.
fn path_like_reason(source: &str) -> Option<String> {
    if source.starts_with('/') || source.starts_with('~') || source.starts_with('.') {
        return Some("it reads as a path".to_string());
    }
    if source.contains('\\') || source.ends_with('/') || source.matches('/').count() > 1 {
        return Some("it reads as a path".to_string());
    }
    let parent = Path::new(source)
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())?;
    if parent == Path::new("models") {
        return Some("it is under models/, the local model folder".to_string());
    }
    // `x/y` where the folder `x` exists here is a missing directory inside it.
    parent
        .is_dir()
        .then(|| format!("the folder {} exists here", parent.display()))
}

fn looks_like_hub_id(source: &str) -> bool {
    let mut parts = source.split('/');
    let (Some(org), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let valid = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    valid(org) && valid(name)
}

/// The snapshot directory of a cached hub model, if the revision is in the cache.
pub fn cached_snapshot(cache: &Path, id: &str, revision: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let commit = if revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()) {
        revision.to_string()
    } else {
        std::fs::read_to_string(repo.join("refs").join(revision))
            .ok()?
            .trim()
            .to_string()
    };
    let snapshot = repo.join("snapshots").join(commit);
    snapshot.is_dir().then_some(snapshot)
}

/// Resolves `model.source` to a directory with the model files, without any network access.
pub fn resolve_model_dir(source: &str, revision: &str) -> Result<PathBuf, HubError> {
    match classify_source(source, revision)? {
        ModelSource::Local { dir } => Ok(dir),
        ModelSource::Hub { id, revision } => {
            let (cache, _) = cache_dir();
            match cached_snapshot(&cache, &id, &revision) {
                Some(dir) => Ok(dir),
                None => Err(not_cached(id, revision, cache, Offline::from_env())),
            }
        }
    }
}

/// Whether a run may use the network, and what turned it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offline {
    /// Downloads allowed.
    No,
    /// `model.offline: true`.
    Config,
    /// `HF_HUB_OFFLINE=1`.
    Env,
}

impl Offline {
    /// From HF_HUB_OFFLINE alone.
    pub fn from_env() -> Offline {
        if offline_from_env() {
            Offline::Env
        } else {
            Offline::No
        }
    }

    /// From `model.offline` and HF_HUB_OFFLINE.
    pub fn from_config(model_offline: bool) -> Offline {
        if model_offline {
            Offline::Config
        } else {
            Offline::from_env()
        }
    }

    pub fn is_offline(self) -> bool {
        self != Offline::No
    }
}

fn not_cached(id: String, revision: String, cache: PathBuf, offline: Offline) -> HubError {
    let copy = format!(
        "or run `vlmrun fetch {id} --revision {revision}` (or `huggingface-cli download {id} --revision {revision}`) where there is network and copy the cache directory here (HF_HUB_CACHE names it), or point model.source at a local directory"
    );
    let (why, fix) = match offline {
        Offline::Env => (
            "downloads are off (HF_HUB_OFFLINE is set)".to_string(),
            format!("unset HF_HUB_OFFLINE to download it, {copy}"),
        ),
        Offline::Config => (
            "downloads are off (model.offline: true)".to_string(),
            format!("set model.offline=false to download it, {copy}"),
        ),
        Offline::No if cfg!(feature = "hub") => (
            "was not downloaded (this lookup never uses the network)".to_string(),
            format!("any command that runs the model downloads it; `vlmrun fetch {id} --revision {revision}` does only that"),
        ),
        Offline::No => (
            "this vlmrun was built without downloads (cargo feature `hub` off)".to_string(),
            format!("rebuild with the default features, {copy}"),
        ),
    };
    HubError::NotCached {
        id,
        revision,
        cache,
        why,
        fix,
    }
}

/// Makes `model.source` usable: a local directory is returned as is; a hub id whose files are all in
/// the cache is resolved there without network; otherwise the missing files are downloaded into the
/// cache (unless `offline`), as `from_pretrained` does. Returns the model directory.
pub fn ensure_model(
    source: &str,
    revision: &str,
    offline: Offline,
    show_progress: bool,
) -> Result<PathBuf, HubError> {
    let (id, revision) = match classify_source(source, revision)? {
        ModelSource::Local { dir } => return Ok(dir),
        ModelSource::Hub { id, revision } => (id, revision),
    };
    let (cache, _) = cache_dir();
    if let Some(dir) = cached_snapshot(&cache, &id, &revision) {
        if missing_files(&dir).is_empty() {
            return Ok(dir);
        }
    }
    if offline.is_offline() {
        return Err(not_cached(id, revision, cache, offline));
    }
    download(&id, &revision, show_progress, cache)
}

#[cfg(feature = "hub")]
fn download(
    id: &str,
    revision: &str,
    show_progress: bool,
    _cache: PathBuf,
) -> Result<PathBuf, HubError> {
    fetch::fetch(id, revision, false, show_progress)
}

#[cfg(not(feature = "hub"))]
fn download(
    id: &str,
    revision: &str,
    _show_progress: bool,
    cache: PathBuf,
) -> Result<PathBuf, HubError> {
    Err(not_cached(
        id.to_string(),
        revision.to_string(),
        cache,
        Offline::No,
    ))
}

/// Which required files a model directory lacks (empty when complete).
pub fn missing_files(dir: &Path) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if !dir.join(CONFIG_FILE).is_file() {
        missing.push(CONFIG_FILE);
    }
    if !dir.join(WEIGHTS_FILE).is_file()
        && !dir.join(WEIGHTS_INDEX_FILE).is_file()
        && !dir.join(PYTORCH_WEIGHTS_FILE).is_file()
    {
        missing.push(WEIGHTS_FILE);
    }
    if !dir.join(TOKENIZER_FILE).is_file() {
        missing.push(TOKENIZER_FILE);
    }
    missing
}

/// Resolves the directory and checks it holds every required file.
pub fn resolve_complete_model_dir(source: &str, revision: &str) -> Result<PathBuf, HubError> {
    let dir = resolve_model_dir(source, revision)?;
    let missing = missing_files(&dir);
    if missing.is_empty() {
        Ok(dir)
    } else {
        Err(HubError::MissingFiles {
            dir,
            missing: missing.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths_are_told_apart() {
        assert!(looks_like_hub_id("Salesforce/blip-image-captioning-base"));
        assert!(!looks_like_hub_id("./models/x"));
        assert!(!looks_like_hub_id("/abs/path"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(matches!(
            classify_source("no-such-dir-anywhere", "main"),
            Err(HubError::LocalNotFound { .. })
        ));
    }

    #[test]
    fn missing_paths_are_never_taken_for_hub_ids() {
        for source in [
            "./no-such/dir",
            "../no-such",
            "/no/such/dir",
            "~/no-such",
            "models/no-such-model",
            "a/b/c",
            "src/no-such",
        ] {
            match classify_source(source, "main") {
                Err(err @ HubError::LocalNotFound { .. }) => {
                    let text = err.to_string();
                    assert!(text.contains(source), "{text}");
                    assert!(text.contains("not looked up on the hub"), "{text}");
                    assert!(text.contains("fix:"), "{text}");
                }
                other => panic!("{source}: {other:?}"),
            }
        }
        assert_eq!(
            classify_source("Salesforce/blip-image-captioning-base", "v1").unwrap(),
            ModelSource::Hub {
                id: "Salesforce/blip-image-captioning-base".to_string(),
                revision: "v1".to_string()
            }
        );
        assert!(matches!(
            classify_source("Cargo.toml", "main"),
            Err(HubError::NotADirectory { .. })
        ));
    }

    #[test]
    fn finds_a_snapshot_through_refs() {
        let cache = tempfile::tempdir().unwrap();
        let repo = cache.path().join("models--org--name");
        let sha = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots").join(sha)).unwrap();
        std::fs::write(repo.join("refs/main"), format!("{sha}\n")).unwrap();
        let found = cached_snapshot(cache.path(), "org/name", "main").unwrap();
        assert!(found.ends_with(sha));
        assert!(cached_snapshot(cache.path(), "org/name", sha).is_some());
        assert!(cached_snapshot(cache.path(), "org/name", "dev").is_none());
        assert!(cached_snapshot(cache.path(), "org/other", "main").is_none());
    }
}
