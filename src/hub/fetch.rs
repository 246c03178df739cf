//! Downloads a BLIP model's files into the Hugging Face cache through hf-hub (cargo feature `hub`, on
//! by default), one progress bar per file on a terminal (one line per file otherwise), so later runs
//! resolve the id offline. A partial download left by an interrupted run is continued first
//! ([`super::resume`]), so hf-hub finds the blob complete. `HF_ENDPOINT` and `HF_TOKEN` (or the token file under `HF_HOME`) are read
//! by hf-hub; the cache directory is [`cache_dir`]'s, so `HF_HUB_CACHE`/`HF_HOME` apply.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use hf_hub::progress::{DownloadEvent, ProgressEvent, ProgressHandler};

use super::{
    cache_dir, endpoint, HubError, CONFIG_FILE, PYTORCH_WEIGHTS_FILE, TOKENIZER_FILE, WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
};

/// Shows bytes downloaded per file on an indicatif bar; without a bar, one line per file that is
/// actually downloaded.
struct BarProgress {
    bar: indicatif::ProgressBar,
    per_file: Mutex<HashMap<String, (u64, u64)>>,
    /// `id file` for the line printed when a download starts (None: print nothing).
    announce: Option<String>,
}

impl ProgressHandler for BarProgress {
    fn on_progress(&self, event: &ProgressEvent) {
        let ProgressEvent::Download(event) = event else {
            return;
        };
        match event {
            DownloadEvent::Start { total_bytes, .. } => {
                self.bar.set_length(*total_bytes);
                if let Some(what) = &self.announce {
                    eprintln!(
                        "downloading {what} ({})",
                        indicatif::HumanBytes(*total_bytes)
                    );
                }
            }
            DownloadEvent::Progress { files } => {
                if let Ok(mut per_file) = self.per_file.lock() {
                    for file in files {
                        per_file.insert(
                            file.filename.clone(),
                            (file.bytes_completed, file.total_bytes),
                        );
                    }
                    let done: u64 = per_file.values().map(|(done, _)| done).sum();
                    self.bar.set_position(done);
                }
            }
            DownloadEvent::AggregateProgress {
                bytes_completed,
                total_bytes,
                ..
            } => {
                self.bar.set_length(*total_bytes);
                self.bar.set_position(*bytes_completed);
            }
            DownloadEvent::Complete => {}
        }
    }
}

/// How one hf-hub error reads to a user.
fn describe(err: hf_hub::HFError, id: &str, revision: &str, file: &str) -> HubError {
    let endpoint = endpoint();
    match err {
        hf_hub::HFError::EntryNotFound { .. }
        | hf_hub::HFError::RepoNotFound { .. }
        | hf_hub::HFError::RevisionNotFound { .. } => HubError::NotOnHub {
            id: id.to_string(),
            revision: revision.to_string(),
            file: file.to_string(),
            endpoint,
        },
        err @ (hf_hub::HFError::AuthRequired { .. } | hf_hub::HFError::Forbidden { .. }) => {
            HubError::Unauthorized {
                id: id.to_string(),
                file: file.to_string(),
                endpoint,
                message: err.to_string(),
            }
        }
        err => HubError::Download {
            id: id.to_string(),
            file: file.to_string(),
            endpoint,
            message: err.to_string(),
        },
    }
}

/// Downloads config.json, tokenizer.json and the weights (`model.safetensors`, else the index and its
/// shards, else `pytorch_model.bin`) of `id` at `revision`; returns the snapshot directory. Files already in the cache are not downloaded again
/// (hf-hub asks the hub whether they changed, unless `offline`).
pub fn fetch(
    id: &str,
    revision: &str,
    offline: bool,
    show_progress: bool,
) -> Result<PathBuf, HubError> {
    let failed = |file: &str, message: String| HubError::Download {
        id: id.to_string(),
        file: file.to_string(),
        endpoint: endpoint(),
        message,
    };
    let (owner, name) = id
        .split_once('/')
        .ok_or_else(|| failed("-", "a hub id looks like owner/name".to_string()))?;
    let (cache, _) = cache_dir();
    let endpoint = endpoint();
    let client = hf_hub::HFClient::builder()
        .cache_dir(cache.clone())
        .build_sync()
        .map_err(|err| failed("-", err.to_string()))?;
    let repo = client.model(owner, name);
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let download = |file: &str| -> Result<PathBuf, HubError> {
        let bar = if show_progress && terminal {
            let bar = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg:24} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            ) {
                bar.set_style(style);
            }
            bar.set_message(file.to_string());
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let request = super::resume::Request {
            endpoint: &endpoint,
            id,
            revision,
            file,
            cache: &cache,
        };
        let resumed = if offline {
            super::resume::Resumed::Nothing
        } else {
            super::resume::resume(&request, &|done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .inspect_err(|_| bar.finish_and_clear())?
        };
        if let (
            super::resume::Resumed::Completed {
                from,
                total,
                ranged,
            },
            true,
        ) = (&resumed, show_progress && !terminal)
        {
            let how = if *ranged {
                "the rest asked for with a Range request"
            } else {
                "the server sent it whole"
            };
            eprintln!(
                "resumed {id} {file}: {} of {} were on disk, {how}",
                indicatif::HumanBytes(*from),
                indicatif::HumanBytes(*total)
            );
        }
        let progress = BarProgress {
            bar: bar.clone(),
            per_file: Mutex::new(HashMap::new()),
            announce: (show_progress && !terminal).then(|| format!("{id} {file}")),
        };
        let result = repo
            .download_file()
            .filename(file)
            .revision(revision)
            .local_files_only(offline)
            .progress(progress)
            .send()
            .map_err(|err| describe(err, id, revision, file));
        bar.finish_and_clear();
        result
    };
    download(CONFIG_FILE)?;
    download(TOKENIZER_FILE)?;
    let weights = match download(WEIGHTS_FILE) {
        Ok(path) => path,
        Err(single_error @ HubError::NotOnHub { .. }) => {
            let index_path = match download(WEIGHTS_INDEX_FILE) {
                Ok(path) => path,
                Err(HubError::NotOnHub { .. }) => {
                    // No safetensors at all: the PyTorch file, as from_pretrained falls back to it.
                    return match download(PYTORCH_WEIGHTS_FILE) {
                        Ok(path) => Ok(snapshot_of(&path)),
                        Err(HubError::NotOnHub { .. }) => Err(single_error),
                        Err(other) => Err(other),
                    };
                }
                Err(other) => return Err(other),
            };
            let index_text = std::fs::read_to_string(&index_path)
                .map_err(|err| failed(WEIGHTS_INDEX_FILE, err.to_string()))?;
            let index: serde_json::Value = serde_json::from_str(&index_text)
                .map_err(|err| failed(WEIGHTS_INDEX_FILE, err.to_string()))?;
            let mut shards: Vec<String> = index["weight_map"]
                .as_object()
                .map(|map| {
                    map.values()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            for shard in &shards {
                download(shard)?;
            }
            index_path
        }
        Err(other) => return Err(other),
    };
    Ok(snapshot_of(&weights))
}

/// The snapshot directory a downloaded file lies in.
fn snapshot_of(file: &std::path::Path) -> PathBuf {
    file.parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}
