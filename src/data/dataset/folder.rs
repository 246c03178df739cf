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
    let mut files: Vec<String> = Vec::new();
    let mut unreadable: Vec<String> = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        if !entry.path().is_file() {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) if name.starts_with('.') => {}
            Ok(name) => files.push(name),
            Err(raw) => unreadable.push(raw.to_string_lossy().into_owned()),
        }
    }
    if !unreadable.is_empty() {
        // An id, a predictions line and the report all need text: such a file cannot be one item,
        // and dropping it silently would lose it.
        unreadable.sort();
        return Err(DatasetError::UnreadableNames {
            path: dir.to_path_buf(),
            count: unreadable.len(),
            names: unreadable
                .iter()
                .take(SKIPPED_SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let (mut names, mut skipped) = split_decodable(files);
    names.sort();
    skipped.sort();
    if !skipped.is_empty() {
        tracing::warn!("{}", skipped_message(dir, &skipped));
    }
    Ok(names
        .into_iter()
        .map(|name| Item {
            image: dir.join(&name),
            image_as_given: dir.join(&name).display().to_string(),
            id: name,
            references: Vec::new(),
        })
        .collect())
}

/// The names with a decoded extension, and the others.
fn split_decodable(names: Vec<String>) -> (Vec<String>, Vec<String>) {
    names.into_iter().partition(|name| {
        Path::new(name)
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| DECODED_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
    })
}

fn skipped_message(dir: &Path, skipped: &[String]) -> String {
    let shown = skipped
        .iter()
        .take(SKIPPED_SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let more = skipped.len().saturating_sub(SKIPPED_SHOWN);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(
        "{}: skipped {} file(s) this build does not decode: {shown}{more} (it reads .{}; convert other images to PNG)",
        dir.display(),
        skipped.len(),
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

        let (_, skipped) = split_decodable(vec!["e.bmp".into(), "f.gif".into(), "x.png".into()]);
        let message = skipped_message(dir.path(), &skipped);
        assert!(message.contains("skipped 2 file(s)"), "{message}");
        assert!(message.contains("e.bmp, f.gif"), "{message}");
        assert!(message.contains(".png .jpg .jpeg .webp"), "{message}");
    }
}
