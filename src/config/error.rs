//! Errors from reading and resolving the configuration: each names the file position or the flag,
//! and says how to fix it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {} (from --config) not found\n  fix: pass an existing file to --config, or leave --config out to use ./configs/config.yaml when present, else the built-in defaults", path.display())]
    NotFound { path: PathBuf },

    #[error("config file {} (from VLMRUN_CONFIG) not found\n  fix: point VLMRUN_CONFIG at an existing file, or unset it to use ./configs/config.yaml when present, else the built-in defaults", path.display())]
    EnvNotFound { path: PathBuf },

    #[error("config file {} is {kind}, not a file\n  fix: pass the YAML file itself (e.g. configs/config.yaml)", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },

    #[error("cannot read config file {}: {source}\n  fix: check that the file is readable and is UTF-8 text", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}:{position}: {message}{hint}", path.display())]
    Parse {
        path: PathBuf,
        /// `line:column`, or `?` when the parser could not tell.
        position: String,
        message: String,
        /// Empty, or a newline plus a `fix:` line.
        hint: String,
    },

    #[error("--set {argument}: {message}\n  fix: {fix}")]
    Override {
        argument: String,
        message: String,
        fix: String,
    },

    #[error("{flag} {value}: {message}")]
    Flag {
        flag: String,
        value: String,
        message: String,
    },

    #[error("internal error while resolving the configuration: {0}")]
    Internal(String),
}
