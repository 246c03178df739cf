//! `predictions.jsonl`: one line per captioned image, appended and flushed after every batch, so a crash
//! loses at most the batch in flight. Reopening it for a resumed run keeps every complete line, drops a
//! torn last line (a crash mid-write), and reports which ids are already done.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One prediction line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub id: String,
    pub image: String,
    pub caption: String,
    pub token_ids: Vec<u32>,
    /// Index of the batch (within its run) that produced it.
    pub batch: usize,
    /// Wall time of that batch's generation, milliseconds.
    pub latency_ms: f64,
    /// The image file as it was read ([`image_stamp`]: size and modification time): a resumed run
    /// captions the image again when it differs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_stamp: Option<String>,
    /// `generation.prompt` of the run that wrote it (the caption starts with it): `score` strips it
    /// as the run did. Absent in files from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

/// A cheap identity of an image file: `SIZE:MTIME_NS` (no byte is read, so a resumed run checks
/// every done image in one `stat` each). `None` when the file cannot be read.
pub fn image_stamp(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{}:{mtime}", meta.len()))
}

/// Replaces `path` with exactly `records`, one line each (written to a temporary file beside it,
/// synced, then renamed over it, so a crash leaves the old file or the new one).
pub fn rewrite<T: Serialize>(path: &Path, records: &[T]) -> Result<(), PredictionsError> {
    let io = |source| PredictionsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut buffer = Vec::new();
    for record in records {
        serde_json::to_writer(&mut buffer, record).map_err(|err| io(std::io::Error::other(err)))?;
        buffer.push(b'\n');
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.rewrite-{}", std::process::id()));
    let result = File::create(&temp)
        .and_then(|mut file| {
            file.write_all(&buffer)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(io)
}

/// One failed image (`errors.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub id: String,
    pub image: String,
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PredictionsError {
    #[error("{}:{line}: not a prediction line ({message})\n  fix: the file was edited or belongs to something else; rerun with --fresh, or use another output.dir", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("cannot access {}: {source}\n  fix: check that output.dir is writable", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a previous run left.
#[derive(Debug, Default)]
pub struct Resumed {
    pub predictions: Vec<Prediction>,
    /// Bytes of a torn last line that were dropped (0 when the file ended cleanly).
    pub dropped_torn_bytes: usize,
}

impl Resumed {
    pub fn done_ids(&self) -> HashSet<String> {
        self.predictions.iter().map(|p| p.id.clone()).collect()
    }
}

/// The complete lines of a JSONL file, read without changing it.
#[derive(Debug)]
pub struct JsonlRecords<T> {
    pub records: Vec<T>,
    /// Bytes of the complete lines (where a torn tail starts).
    pub complete_len: usize,
    /// Bytes after the last newline: a line still being written, or torn by a crash.
    pub torn_bytes: usize,
}

/// Reads every complete line of `path` as a `T` (a missing file has none). A line that does not parse is
/// an error naming it; a torn last line is counted, not parsed.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<JsonlRecords<T>, PredictionsError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(JsonlRecords {
                records: Vec::new(),
                complete_len: 0,
                torn_bytes: 0,
            })
        }
        Err(source) => {
            return Err(PredictionsError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let complete_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let (complete, tail) = bytes.split_at(complete_len);
    let lines: Vec<&[u8]> = complete.split(|&b| b == b'\n').collect();
    let line_count = lines.len().saturating_sub(1); // the split after the final '\n' is empty
    let mut records = Vec::with_capacity(line_count);
    for (index, line) in lines.iter().take(line_count).enumerate() {
        let parsed = std::str::from_utf8(line)
            .map_err(|err| err.to_string())
            .and_then(|text| serde_json::from_str::<T>(text).map_err(|err| err.to_string()));
        match parsed {
            Ok(record) => records.push(record),
            Err(message) => {
                return Err(PredictionsError::Corrupt {
                    path: path.to_path_buf(),
                    line: index + 1,
                    message,
                })
            }
        }
    }
    Ok(JsonlRecords {
        records,
        complete_len,
        torn_bytes: tail.len(),
    })
}

/// Reads an existing predictions file and truncates a torn tail so appends start on a line boundary.
pub fn recover(path: &Path) -> Result<Resumed, PredictionsError> {
    let (records, dropped_torn_bytes) = recover_records::<Prediction>(path)?;
    let mut resumed = Resumed {
        predictions: Vec::with_capacity(records.len()),
        dropped_torn_bytes,
    };
    let mut seen = HashSet::new();
    for prediction in records {
        if seen.insert(prediction.id.clone()) {
            resumed.predictions.push(prediction);
        }
    }
    Ok(resumed)
}

/// Every complete line of a JSONL results file as a `T`, the file truncated after the last one
/// (a torn tail from a crash is dropped, so appends start on a line boundary); with the torn bytes.
pub fn recover_records<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<(Vec<T>, usize), PredictionsError> {
    let read = read_jsonl::<T>(path)?;
    if read.torn_bytes > 0 {
        let io = |source| PredictionsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new().write(true).open(path).map_err(io)?;
        file.set_len(read.complete_len as u64).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    Ok((read.records, read.torn_bytes))
}

/// An append-only JSONL writer that flushes after every batch.
pub struct JsonlAppender {
    path: PathBuf,
    writer: BufWriter<File>,
}

impl JsonlAppender {
    pub fn open(path: &Path) -> Result<Self, PredictionsError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| PredictionsError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(JsonlAppender {
            path: path.to_path_buf(),
            writer: BufWriter::new(file),
        })
    }

    /// Writes the records as whole lines and flushes them to the OS (a killed process loses nothing written).
    pub fn append<T: Serialize>(&mut self, records: &[T]) -> Result<(), PredictionsError> {
        let io = |source| PredictionsError::Io {
            path: self.path.clone(),
            source,
        };
        let mut buffer = Vec::new();
        for record in records {
            serde_json::to_writer(&mut buffer, record)
                .map_err(|err| io(std::io::Error::other(err)))?;
            buffer.push(b'\n');
        }
        self.writer.write_all(&buffer).map_err(io)?;
        self.writer.flush().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction(id: &str) -> Prediction {
        Prediction {
            id: id.into(),
            image: format!("{id}.png"),
            caption: "a cat".into(),
            token_ids: vec![30522, 1037, 4937, 102],
            batch: 0,
            latency_ms: 1.5,
            image_stamp: Some("4:1".into()),
            prompt: Some("a picture of ".into()),
        }
    }

    #[test]
    fn rewrite_keeps_exactly_the_records_and_stamps_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("predictions.jsonl");
        let mut log = JsonlAppender::open(&path).unwrap();
        log.append(&[prediction("a"), prediction("b")]).unwrap();
        drop(log);
        rewrite(&path, &[prediction("b")]).unwrap();
        assert_eq!(recover(&path).unwrap().predictions, [prediction("b")]);

        let image = dir.path().join("x.png");
        assert_eq!(image_stamp(&image), None);
        std::fs::write(&image, b"1234").unwrap();
        let stamp = image_stamp(&image).unwrap();
        assert!(stamp.starts_with("4:"), "{stamp}");
        std::fs::write(&image, b"12345").unwrap();
        assert_ne!(image_stamp(&image).unwrap(), stamp);
    }

    #[test]
    fn torn_tail_is_dropped_and_appends_continue_on_a_line_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("predictions.jsonl");
        let mut log = JsonlAppender::open(&path).unwrap();
        log.append(&[prediction("a"), prediction("b")]).unwrap();
        drop(log);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"id":"c","image":"c.png","capt"#)
            .unwrap();
        drop(file);

        let resumed = recover(&path).unwrap();
        assert_eq!(
            resumed.done_ids(),
            HashSet::from(["a".to_string(), "b".to_string()])
        );
        assert!(resumed.dropped_torn_bytes > 0);
        let mut log = JsonlAppender::open(&path).unwrap();
        log.append(&[prediction("c")]).unwrap();
        let again = recover(&path).unwrap();
        assert_eq!(again.predictions.len(), 3);
        assert_eq!(again.dropped_torn_bytes, 0);
    }

    #[test]
    fn garbage_in_the_middle_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("predictions.jsonl");
        let good = serde_json::to_string(&prediction("a")).unwrap();
        std::fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
        let err = recover(&path).unwrap_err();
        assert!(err.to_string().contains(":2:"), "{err}");
    }

    #[test]
    fn missing_file_is_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let resumed = recover(&dir.path().join("none.jsonl")).unwrap();
        assert!(resumed.predictions.is_empty());
    }
}
