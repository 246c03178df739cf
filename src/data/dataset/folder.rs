//! A folder of images: every file whose extension the build decodes, sorted by name; the id is the
//! file name. Files it skips are named in one warning, so a folder of `.bmp` or `.gif` files is never
//! a silent "no images".

use std::path::Path;

use super::{DatasetError, Item};

/// File extensions a folder dataset picks up: the formats the decoder reads (`preprocess::decode`:
/// PNG, JPEG, WebP). Compared case-insensitively.
pub const DECODED_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// How many skipped names the warning lists.
const SKIPPED_SHOWN: usize = 5;

pub(super) fn read(dir: &Path) -> Result<Vec<Item>, DatasetError> {
    if let Some(kind) = crate::paths::not_a_dir(dir) {
        return Err(DatasetError::NotThatKind {
            what: "folder",
            path: dir.to_path_buf(),
            kind,
            expected: "folder",
        });
    }
    if !dir.is_dir() {
        return Err(DatasetError::NotFound {
            what: "folder",
            path: dir.to_path_buf(),
        });
    }
    let entries = std::fs::read_dir(dir).map_err(|source| DatasetError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    // (id, file name): the id is the name, or for a name that is not UTF-8 the name with each
    // undecodable byte written as `\xNN`. Such an item is kept, so it ends in errors.jsonl
    // (`super::unusable`) instead of vanishing.
    let mut files: Vec<(String, std::ffi::OsString)> = Vec::new();
    let mut not_utf8: Vec<String> = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        if !entry.path().is_file() {
            continue;
        }
        let name = entry.file_name();
        match name.to_str() {
            Some(text) if text.starts_with('.') => {}
            Some(text) => files.push((text.to_string(), name.clone())),
            None => {
                let id = escaped_name(&name);
                if !id.starts_with('.') {
                    not_utf8.push(id.clone());
                    files.push((id, name));
                }
            }
        }
    }
    let (mut names, mut skipped) = split_decodable(files);
    names.sort();
    skipped.sort();
    if !skipped.is_empty() {
        tracing::warn!("{}", skipped_message(dir, &skipped));
    }
    if !not_utf8.is_empty() {
        not_utf8.sort();
        tracing::warn!(
            "{}: {} file name(s) are not valid UTF-8 ({}; undecodable bytes shown as \\xNN): each is reported instead of used (baseline: an errors.jsonl line; train: counted unreadable; fidelity: left out, listed); rename them to UTF-8 names to use them",
            dir.display(),
            not_utf8.len(),
            shown(&not_utf8)
        );
    }
    Ok(names
        .into_iter()
        .map(|(id, name)| Item {
            image: dir.join(&name),
            image_as_given: dir.join(&id).display().to_string(),
            id,
            references: Vec::new(),
        })
        .collect())
}

/// A file name as text: its UTF-8 runs as they are, every other byte as `\xNN` (Unix; elsewhere
/// the lossy form).
fn escaped_name(name: &std::ffi::OsStr) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut out = String::new();
        for chunk in name.as_bytes().utf8_chunks() {
            out.push_str(chunk.valid());
            for byte in chunk.invalid() {
                out.push_str(&format!("\\x{byte:02X}"));
            }
        }
        out
    }
    #[cfg(not(unix))]
    {
        name.to_string_lossy().into_owned()
    }
}

/// The first [`SKIPPED_SHOWN`] names, and how many more.
fn shown(names: &[String]) -> String {
    let list = names
        .iter()
        .take(SKIPPED_SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    match names.len().saturating_sub(SKIPPED_SHOWN) {
        0 => list,
        more => format!("{list} and {more} more"),
    }
}

/// The files with a decoded extension (by id), and the ids of the others.
fn split_decodable<T>(files: Vec<(String, T)>) -> (Vec<(String, T)>, Vec<String>) {
    let (names, skipped): (Vec<_>, Vec<_>) = files.into_iter().partition(|(id, _)| {
        Path::new(id)
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| DECODED_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
    });
    (names, skipped.into_iter().map(|(id, _)| id).collect())
}

fn skipped_message(dir: &Path, skipped: &[String]) -> String {
    format!(
        "{}: skipped {} file(s) this build does not decode: {} (it reads .{}; convert other images to PNG)",
        dir.display(),
        skipped.len(),
        shown(skipped),
        DECODED_EXTENSIONS.join(" .")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_decoded_extensions_are_listed_and_the_rest_are_named() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.PNG",
            "a.jpg",
            "c.webp",
            "d.jpeg",
            "e.bmp",
            "f.gif",
            "g.tiff",
            "notes.txt",
            ".hidden.png",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let items = read(dir.path()).unwrap();
        let ids: Vec<&str> = items.iter().map(|item| item.id.as_str()).collect();
        assert_eq!(ids, ["a.jpg", "b.PNG", "c.webp", "d.jpeg"]);

        let (_, skipped) = split_decodable(vec![
            ("e.bmp".to_string(), ()),
            ("f.gif".to_string(), ()),
            ("x.png".to_string(), ()),
        ]);
        let message = skipped_message(dir.path(), &skipped);
        assert!(message.contains("skipped 2 file(s)"), "{message}");
        assert!(message.contains("e.bmp, f.gif"), "{message}");
        assert!(message.contains(".png .jpg .jpeg .webp"), "{message}");
    }

    #[cfg(unix)]
    #[test]
    fn a_name_that_is_not_utf8_is_an_item_with_an_escaped_id_that_is_unusable() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok.png"), b"x").unwrap();
        let bad = std::ffi::OsStr::from_bytes(b"caf\xe9.png");
        std::fs::write(dir.path().join(bad), b"x").unwrap();
        let items = read(dir.path()).unwrap();
        let ids: Vec<&str> = items.iter().map(|item| item.id.as_str()).collect();
        assert_eq!(ids, ["caf\\xE9.png", "ok.png"]);
        assert_eq!(items[0].image, dir.path().join(bad));
        let reason = super::super::unusable(&items[0]).unwrap();
        assert!(reason.contains("caf\\xE9.png"), "{reason}");
        assert!(reason.contains("not valid UTF-8"), "{reason}");
        assert!(super::super::unusable(&items[1]).is_none());
    }
}
