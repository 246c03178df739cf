//! `--set key.path=value` overrides: the path is checked against the schema, the value is typed by it.

use serde_json::Value;

use super::error::ConfigError;
use super::schema::Config;
use super::suggest::closest;

/// Splits `key.path=value`.
pub fn split_assignment(argument: &str) -> Result<(Vec<String>, String), ConfigError> {
    let Some((path, value)) = argument.split_once('=') else {
        return Err(ConfigError::Override {
            argument: argument.to_string(),
            message: "expected key.path=value".to_string(),
            fix: "write it as e.g. --set generation.num_beams=3".to_string(),
        });
    };
    let segments: Vec<String> = path.trim().split('.').map(str::to_string).collect();
    if segments.iter().any(String::is_empty) {
        return Err(ConfigError::Override {
            argument: argument.to_string(),
            message: format!("`{path}` is not a key path"),
            fix: "write it as e.g. --set generation.num_beams=3".to_string(),
        });
    }
    Ok((segments, value.to_string()))
}

/// Checks that `segments` names a leaf of the schema (`schema` is the default config as a tree).
pub fn check_path(schema: &Value, segments: &[String], argument: &str) -> Result<(), ConfigError> {
    let mut node = schema;
    for (depth, segment) in segments.iter().enumerate() {
        let Value::Object(map) = node else {
            let parent = segments[..depth].join(".");
            return Err(ConfigError::Override {
                argument: argument.to_string(),
                message: format!("`{parent}` is a value, it has no key `{segment}`"),
                fix: format!("set it directly: --set {parent}=..."),
            });
        };
        match map.get(segment) {
            Some(child) => node = child,
            None => {
                let at = if depth == 0 {
                    "the top level".to_string()
                } else {
                    format!("`{}`", segments[..depth].join("."))
                };
                let fix = match closest(segment, map.keys().map(String::as_str)) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => format!(
                        "keys at {at}: {}",
                        map.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                };
                return Err(ConfigError::Override {
                    argument: argument.to_string(),
                    message: format!("unknown key `{segment}` at {at}"),
                    fix,
                });
            }
        }
    }
    if let Value::Object(map) = node {
        return Err(ConfigError::Override {
            argument: argument.to_string(),
            message: format!("`{}` is a section, not a value", segments.join(".")),
            fix: format!(
                "set one of its keys: {}",
                map.keys()
                    .map(|key| format!("{}.{key}", segments.join(".")))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Ok(())
}

/// Applies one override to `tree` and re-validates the whole config. Keys whose schema type is a string
/// take the text verbatim (so `--prompt "a picture of "` keeps its space); others read it as a YAML scalar
/// (`3` is a number, `true` a bool, `null` unsets) and fall back to the plain string.
pub fn apply(
    tree: &mut Value,
    schema: &Value,
    segments: &[String],
    raw_value: &str,
    argument: &str,
) -> Result<Config, ConfigError> {
    let verbatim = Value::String(raw_value.to_string());
    let schema_leaf = segments
        .iter()
        .try_fold(schema, |node, segment| node.get(segment));
    let candidates = if matches!(schema_leaf, Some(Value::String(_))) || raw_value.trim().is_empty()
    {
        vec![verbatim]
    } else {
        let typed: Value = serde_saphyr::from_str(raw_value).unwrap_or_else(|_| verbatim.clone());
        vec![typed, verbatim]
    };
    let mut first_error = None;
    for candidate in candidates {
        let mut attempt = tree.clone();
        set_leaf(&mut attempt, segments, candidate)?;
        match serde_json::from_value::<Config>(attempt.clone()) {
            Ok(config) => {
                *tree = attempt;
                return Ok(config);
            }
            Err(err) => {
                first_error.get_or_insert(err.to_string());
            }
        }
    }
    Err(ConfigError::Override {
        argument: argument.to_string(),
        message: super::suggest::plain_words(
            &first_error.unwrap_or_else(|| "invalid value".to_string()),
        ),
        fix: "see the configuration reference in README.md for this key's type".to_string(),
    })
}

fn set_leaf(tree: &mut Value, segments: &[String], value: Value) -> Result<(), ConfigError> {
    let mut node = tree;
    for segment in segments {
        node = match node {
            Value::Object(map) => map.entry(segment.clone()).or_insert(Value::Null),
            _ => {
                return Err(ConfigError::Internal(format!(
                    "config tree has no section for `{}`",
                    segments.join(".")
                )))
            }
        };
    }
    *node = value;
    Ok(())
}
