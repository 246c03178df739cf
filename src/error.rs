//! The error every command returns: one variant per failing layer, each mapped to an exit code.

use crate::config::ConfigError;
use crate::device::DeviceError;
use crate::exit::Exit;
use crate::hub::HubError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error(transparent)]
    Device(#[from] DeviceError),

    #[error(transparent)]
    Hub(#[from] HubError),

    /// The built-in demo model or sample images could not be written to the data directory.
    #[error(transparent)]
    Unpack(#[from] crate::config::builtin::UnpackError),

    #[error("cannot write {what} to {}: {source}\n  fix: check that the directory exists and is writable, or change output.dir", path.display())]
    Output {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Usage(String),

    #[error("{0}")]
    Input(String),

    #[error("{0}")]
    Model(String),

    #[error("cannot write to standard output: {0}")]
    Stdout(#[source] std::io::Error),

    #[error("internal error: {0}")]
    Internal(String),

    #[error("training diverged: {0}")]
    Diverged(String),

    /// Another live run holds the output directory's lock (`report::lock`).
    #[error("{0}")]
    Busy(String),
}

impl Error {
    /// The exit code for this error.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Config(_) | Error::Device(_) | Error::Usage(_) => Exit::Usage,
            Error::Hub(_) | Error::Model(_) => Exit::Model,
            Error::Input(_) => Exit::Input,
            Error::Output { .. } | Error::Stdout(_) | Error::Unpack(_) => Exit::Output,
            Error::Internal(_) => Exit::Failure,
            Error::Diverged(_) => Exit::Diverged,
            Error::Busy(_) => Exit::Busy,
        }
    }
}
