//! Where each configuration value came from, and the annotated YAML that shows it.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// The source of one resolved value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Set in the config file.
    File,
    /// A `--set` argument (kept verbatim).
    Set(String),
    /// A dedicated flag such as `--device`.
    Flag(&'static str),
    /// The default path is absent from the working directory: the copy built into the binary.
    BuiltIn,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File => f.write_str("config file"),
            Origin::Set(argument) => write!(f, "--set {argument}"),
            Origin::Flag(flag) => f.write_str(flag),
            Origin::BuiltIn => {
                f.write_str("default, built into the binary (unpacked on first use)")
            }
        }
    }
}

/// Marks every schema leaf that the file's raw tree sets.
pub fn record_file_origins(
    schema: &Value,
    raw: &Value,
    prefix: &mut Vec<String>,
    origins: &mut BTreeMap<String, Origin>,
) {
    let (Value::Object(schema_map), Value::Object(raw_map)) = (schema, raw) else {
        return;
    };
    for (key, schema_child) in schema_map {
        let Some(raw_child) = raw_map.get(key) else {
            continue;
        };
        prefix.push(key.clone());
        if schema_child.is_object() && raw_child.is_object() {
            record_file_origins(schema_child, raw_child, prefix, origins);
        } else {
            origins.insert(prefix.join("."), Origin::File);
        }
        prefix.pop();
    }
}

/// Collects dotted leaf paths.
pub fn collect_leaves(tree: &Value, prefix: &mut Vec<String>, out: &mut Vec<String>) {
    if let Value::Object(map) = tree {
        for (key, child) in map {
            prefix.push(key.clone());
            collect_leaves(child, prefix, out);
            prefix.pop();
        }
    } else {
        out.push(prefix.join("."));
    }
}

/// Renders the tree as YAML; each leaf gets `# <origin>` (`default` when nothing set it).
pub fn annotated_yaml(tree: &Value, origins: &BTreeMap<String, Origin>, file: &str) -> String {
    let mut out = format!(
        "# resolved configuration (config file: {file}; later sources win: file < --set < --device/--precision)\n"
    );
    render(tree, origins, &mut Vec::new(), 0, &mut out);
    out
}

fn render(
    tree: &Value,
    origins: &BTreeMap<String, Origin>,
    prefix: &mut Vec<String>,
    depth: usize,
    out: &mut String,
) {
    let Value::Object(map) = tree else {
        return;
    };
    let indent = "  ".repeat(depth);
    for (key, child) in map {
        prefix.push(key.clone());
        if child.is_object() {
            out.push_str(&format!("{indent}{key}:\n"));
            render(child, origins, prefix, depth + 1, out);
        } else {
            let origin = origins
                .get(&prefix.join("."))
                .map(ToString::to_string)
                .unwrap_or_else(|| "default".to_string());
            out.push_str(&format!("{indent}{key}: {}  # {origin}\n", scalar(child)));
        }
        prefix.pop();
    }
}

/// A YAML scalar: plain when unambiguous, else a double-quoted (JSON) string.
fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::String(text) => {
            let plain = !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._-:".contains(c))
                && !text.starts_with(|c: char| c.is_ascii_digit() || "-.:".contains(c))
                && !matches!(
                    text.to_ascii_lowercase().as_str(),
                    "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "~"
                );
            if plain {
                text.clone()
            } else {
                Value::String(text.clone()).to_string()
            }
        }
        other => other.to_string(),
    }
}
