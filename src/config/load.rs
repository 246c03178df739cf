//! Reading `configs/config.yaml`: YAML syntax and schema errors come back as `file:line:column` with a fix.

use std::path::Path;

use super::error::ConfigError;
use super::schema::Config;
use super::suggest::unknown_field_hint;

/// The parsed file: the typed config plus the raw tree, which says which keys the file itself set.
pub struct LoadedFile {
    pub config: Config,
    pub raw: serde_json::Value,
}

/// Reads and validates a config file. A missing file is an error: a silent fallback to defaults is
/// exactly the kind of surprise this tool exists to remove.
pub fn load_file(path: &Path) -> Result<LoadedFile, ConfigError> {
    // A FIFO would block the read forever; a directory would read as an OS error.
    if let Some(kind) = crate::paths::not_a_file(path) {
        return Err(ConfigError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::NotFound {
                path: path.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse_str(&text, path)
}

/// Parses config text; `path` is only used in messages.
pub fn parse_str(text: &str, path: &Path) -> Result<LoadedFile, ConfigError> {
    if text.trim().is_empty() {
        return Ok(LoadedFile {
            config: Config::default(),
            raw: serde_json::Value::Object(Default::default()),
        });
    }
    let config: Config = serde_saphyr::from_str(text).map_err(|err| parse_error(&err, path))?;
    let raw: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|err| parse_error(&err, path))?;
    Ok(LoadedFile { config, raw })
}

fn parse_error(err: &serde_saphyr::Error, path: &Path) -> ConfigError {
    let position = err
        .location()
        .map(|location| format!("{}:{}", location.line(), location.column()))
        .unwrap_or_else(|| "?".to_string());
    // The plain message, without the rendered source snippet (we add our own position).
    let full = err.to_string();
    let message = super::suggest::plain_words(&first_meaningful_line(&full));
    let hint = unknown_field_hint(&full).unwrap_or_else(|| {
        if message.contains("unknown variant") || message.starts_with("invalid device") {
            "\n  fix: use one of the values listed above".to_string()
        } else if message.contains("given twice") {
            "\n  fix: keep one of the two (the later one would silently win elsewhere)".to_string()
        } else if message.starts_with("invalid") || message.starts_with("not a ") {
            "\n  fix: see the configuration reference in README.md for each key's type".to_string()
        } else {
            "\n  fix: check the YAML syntax at that position (indentation, brackets, quotes)"
                .to_string()
        }
    });
    ConfigError::Parse {
        path: path.to_path_buf(),
        position,
        message,
        hint,
    }
}

/// The parser's first message line, without its own `line N column M:` prefix (we print `file:N:M:`).
fn first_meaningful_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("invalid YAML")
        .trim_start_matches("error: ");
    match line.strip_prefix("line ") {
        Some(rest) => match rest.split_once(": ") {
            Some((position, message)) if position.contains("column") => message.to_string(),
            _ => line.to_string(),
        },
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_option_names_and_rust_types_do_not_reach_the_user() {
        let path = Path::new("c.yaml");
        let message = |text: &str| match parse_str(text, path) {
            Err(err) => err.to_string(),
            Ok(_) => panic!("{text:?} parsed"),
        };
        let duplicate = message("seed: 1\nseed: 2\n");
        assert!(
            duplicate.starts_with("c.yaml:2:1: key seed is given twice"),
            "{duplicate}"
        );
        assert!(!duplicate.contains("DuplicateKeyPolicy"), "{duplicate}");
        assert_eq!(duplicate.matches("fix:").count(), 1, "{duplicate}");
        let negative = message("generation:\n  num_beams: -1\n");
        assert!(
            negative.contains("not a whole number, 0 or more"),
            "{negative}"
        );
        assert!(!negative.contains("u64"), "{negative}");
    }
}
