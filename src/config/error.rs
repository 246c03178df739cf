//! Errors from reading and resolving the configuration: each names the file position or the flag,
//! and says how to fix it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {} not found\n  fix: pass --config PATH, or restore it from the repository (configs/config.yaml)", path.display())]
    NotFound { path: PathBuf },

    #[error("cannot read config file {}: {source}", path.display())]
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
