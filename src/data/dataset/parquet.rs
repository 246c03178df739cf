//! Parquet files as Hugging Face datasets publishes them (`data/test-00000-of-00001.parquet`): an
//! `image` column in the `datasets.Image` layout (a struct of `bytes` and `path`), caption columns
//! (`caption`, `captions`, `text` or `sentences_raw`: a string or a list of strings) and optionally an
//! id column (`image_id`, `img_id`, `id`, `cocoid`). `data.path` is one file or a folder of them
//! (every `*.parquet`, sorted by name).
//!
//! The rest of vlmrun reads images from files (decoding on worker threads, resume stamps, report
//! thumbnails), so each row's image bytes are written once into the data directory
//! (`$VLMRUN_DATA_DIR/VERSION/parquet/<file>-<size>-<mtime>/<row>.<ext>`, see `config::builtin`) and
//! rewritten only when missing or of another size. The id is the id column's value, else the row
//! number (counted over all files in order).

use std::path::{Path, PathBuf};

use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};

use super::{parquet_pages, DatasetError, Item};
use crate::config::builtin;

/// Columns read as references, in order of preference.
const CAPTION_COLUMNS: [&str; 4] = ["caption", "captions", "text", "sentences_raw"];
/// Columns read as the id, in order of preference.
const ID_COLUMNS: [&str; 4] = ["image_id", "img_id", "id", "cocoid"];

pub(super) fn read(path: &Path) -> Result<Vec<Item>, DatasetError> {
    let files = parquet_files(path)?;
    let mut items = Vec::new();
    for file in &files {
        read_file(file, &mut items)?;
    }
    Ok(items)
}

fn parquet_files(path: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        return Err(DatasetError::NotFound {
            what: "parquet file or folder",
            path: path.to_path_buf(),
        });
    }
    let entries = std::fs::read_dir(path).map_err(|source| DatasetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|ext| ext == "parquet"))
        .collect();
    files.sort();
    Ok(files)
}

fn read_file(path: &Path, items: &mut Vec<Item>) -> Result<(), DatasetError> {
    let bad = |message: String| DatasetError::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|source| DatasetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let meta = file.metadata().map_err(|source| DatasetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = SerializedFileReader::new(file)
        .map_err(|err| bad(format!("not a readable parquet file: {err}")))?;
    check_chunks(path, reader.metadata(), meta.len()).map_err(|message| {
        bad(format!(
            "not a readable parquet file: {message}\n  fix: the file is damaged; download or write it again"
        ))
    })?;
    let columns: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema()
        .get_fields()
        .iter()
        .map(|field| field.name().to_string())
        .collect();
    if !columns.iter().any(|c| c == "image") {
        return Err(bad(format!(
            "no \"image\" column (columns: {columns:?}); vlmrun reads the Hugging Face datasets layout: an \"image\" struct of bytes and path, and a caption column ({CAPTION_COLUMNS:?})"
        )));
    }
    let caption_column = CAPTION_COLUMNS
        .iter()
        .find(|name| columns.iter().any(|c| c == *name))
        .copied();
    let id_column = ID_COLUMNS
        .iter()
        .find(|name| columns.iter().any(|c| c == *name))
        .copied();
    let cache = extraction_dir(path, &meta);
    std::fs::create_dir_all(&cache).map_err(|source| DatasetError::Read {
        path: cache.clone(),
        source,
    })?;
    // The parquet library asserts (panics) on some damaged pages instead of returning an error
    // (a dictionary-encoded page without its dictionary, found by tests/properties.rs): such a
    // file is refused as this reader's error like any other damage, never a crash.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_rows(&reader, path, &cache, caption_column, id_column, items)
    }));
    decoded.unwrap_or_else(|payload| {
        let detail = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no detail".to_string());
        Err(bad(format!(
            "not a readable parquet file: its pages cannot be decoded ({detail})\n  fix: the file is damaged; download or write it again"
        )))
    })
}

/// Reads every row of `reader` into `items`, writing each image's bytes under `cache`.
fn read_rows(
    reader: &SerializedFileReader<std::fs::File>,
    path: &Path,
    cache: &Path,
    caption_column: Option<&str>,
    id_column: Option<&str>,
    items: &mut Vec<Item>,
) -> Result<(), DatasetError> {
    let bad = |message: String| DatasetError::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let rows = reader
        .get_row_iter(None)
        .map_err(|err| bad(format!("cannot read its rows: {err}")))?;
    for (index, row) in rows.enumerate() {
        let row = row.map_err(|err| bad(format!("row {index}: {err}")))?;
        let number = items.len();
        let at = |message: String| bad(format!("row {index}: {message}"));
        let (bytes, image_path) = image_of(&row).map_err(&at)?;
        let references = match caption_column.and_then(|name| column(&row, name)) {
            None | Some(Field::Null) => Vec::new(),
            Some(field) => captions(field).ok_or_else(|| {
                at(format!(
                    "column {:?} must be a string or a list of strings",
                    caption_column.unwrap_or_default()
                ))
            })?,
        };
        let id = match id_column.and_then(|name| column(&row, name)) {
            Some(Field::Str(id)) => id.clone(),
            Some(Field::Int(id)) => id.to_string(),
            Some(Field::Long(id)) => id.to_string(),
            Some(Field::UInt(id)) => id.to_string(),
            Some(Field::ULong(id)) => id.to_string(),
            _ => number.to_string(),
        };
        let extension = Path::new(&image_path)
            .extension()
            .and_then(|ext| ext.to_str())
            .filter(|ext| ext.len() <= 5 && ext.chars().all(|c| c.is_ascii_alphanumeric()))
            .unwrap_or("img")
            .to_ascii_lowercase();
        let file = cache.join(format!("{index:06}.{extension}"));
        match bytes {
            Some(bytes) => extract(&file, bytes)?,
            // No bytes: the image cannot be decoded; the run lists it as a failure.
            None => {
                let _ = std::fs::remove_file(&file);
            }
        }
        let as_given = if image_path.is_empty() {
            format!("{}#{index}", path.display())
        } else {
            image_path
        };
        items.push(Item {
            id,
            image: file,
            image_as_given: as_given,
            references,
        });
    }
    Ok(())
}

/// Every column chunk's byte range lies inside the file (the footer of a damaged file can claim a
/// negative offset or size, which the parquet library asserts against, a panic, when it reads the
/// rows, or a range past the end), and its pages' headers claim sizes its bytes can hold
/// (`parquet_pages`: the library allocates what a header claims before decoding).
fn check_chunks(path: &Path, metadata: &ParquetMetaData, file_len: u64) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    for (group, row_group) in metadata.row_groups().iter().enumerate() {
        if row_group.num_rows() < 0 {
            return Err(format!(
                "row group {group} claims {} rows",
                row_group.num_rows()
            ));
        }
        for (index, chunk) in row_group.columns().iter().enumerate() {
            let start = chunk
                .dictionary_page_offset()
                .unwrap_or_else(|| chunk.data_page_offset());
            let len = chunk.compressed_size();
            let end = u64::try_from(start)
                .ok()
                .zip(u64::try_from(len).ok())
                .and_then(|(start, len)| start.checked_add(len));
            if end.is_none_or(|end| end > file_len) || chunk.data_page_offset() < 0 {
                return Err(format!(
                    "row group {group}, column {index} claims bytes {start}..{start}+{len} of a {file_len}-byte file"
                ));
            }
            let chunk = parquet_pages::Chunk {
                start: start as u64,
                len: len as u64,
                codec: chunk.compression(),
            };
            parquet_pages::check_chunk(&file, &chunk)
                .map_err(|e| format!("row group {group}, column {index}: {e}"))?;
        }
    }
    Ok(())
}

fn column<'a>(row: &'a Row, name: &str) -> Option<&'a Field> {
    row.get_column_iter()
        .find(|(column, _)| column.as_str() == name)
        .map(|(_, field)| field)
}

/// The image's bytes (`None` when null) and its path (empty when absent).
fn image_of(row: &Row) -> Result<(Option<&[u8]>, String), String> {
    match column(row, "image") {
        Some(Field::Group(image)) => {
            let bytes = match column(image, "bytes") {
                Some(Field::Bytes(bytes)) => Some(bytes.data()),
                None | Some(Field::Null) => None,
                Some(_) => return Err("\"image.bytes\" must be binary".to_string()),
            };
            let path = match column(image, "path") {
                Some(Field::Str(path)) => path.clone(),
                _ => String::new(),
            };
            Ok((bytes, path))
        }
        Some(Field::Bytes(bytes)) => Ok((Some(bytes.data()), String::new())),
        _ => Err(
            "\"image\" must be a struct of bytes and path (datasets.Image) or binary".to_string(),
        ),
    }
}

fn captions(field: &Field) -> Option<Vec<String>> {
    match field {
        Field::Str(caption) => Some(vec![caption.clone()]),
        Field::ListInternal(list) => list
            .elements()
            .iter()
            .map(|element| match element {
                Field::Str(caption) => Some(caption.clone()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// The folder a parquet file's images go to: keyed by its name, size and modification time, so an
/// edited file gets a new folder.
fn extraction_dir(path: &Path, meta: &std::fs::Metadata) -> PathBuf {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    builtin::version_dir()
        .join("parquet")
        .join(format!("{stem}-{}-{mtime}", meta.len()))
}

/// Writes `bytes` to `file` unless it already holds that many bytes (written by an earlier load).
fn extract(file: &Path, bytes: &[u8]) -> Result<(), DatasetError> {
    if std::fs::metadata(file).is_ok_and(|meta| meta.len() == bytes.len() as u64) {
        return Ok(());
    }
    let temp = file.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&temp, bytes)
        .and_then(|()| std::fs::rename(&temp, file))
        .map_err(|source| {
            let _ = std::fs::remove_file(&temp);
            DatasetError::Read {
                path: file.to_path_buf(),
                source,
            }
        })
}
