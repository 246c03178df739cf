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

    /// The message names the path and, for a full disk, the free space (`paths::write_failure`).
    #[error("{}", output_message(what, path, source))]
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

    /// A lower layer's typed error (a dataset reader's, a model loader's), kept as the value it
    /// is, with its chain, and the exit class of the job boundary that received it. It travels
    /// boxed because this file sits below `data/` and `models/` in the tree and cannot name their
    /// types. Build it with [`Error::input`], [`Error::model`] or [`Error::usage`].
    #[error("{source}")]
    Layer {
        class: Exit,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn output_message(what: &str, path: &std::path::Path, source: &std::io::Error) -> String {
    let free = crate::paths::is_disk_full(source)
        .then(|| crate::paths::free_bytes(path))
        .flatten();
    crate::paths::write_failure(what, path, source, free)
}

/// The text `main` prints after `error: `: the error's message, then each cause in its chain that the
/// message does not already contain (appended to the first line), and one fix line (the first): the
/// messages here carry their cause and their fix, so printing the whole chain repeated both.
pub fn render(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        let first = text.lines().next().unwrap_or("").trim();
        if !first.is_empty() && !message.contains(first) {
            let end = message.find('\n').unwrap_or(message.len());
            message.insert_str(end, &format!(": {first}"));
        }
        cause = inner.source();
    }
    let mut fixes = 0;
    message
        .lines()
        .filter(|line| {
            let is_fix = line.trim_start().starts_with("fix:");
            fixes += usize::from(is_fix);
            !is_fix || fixes == 1
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    /// `source` (a dataset or input error) as an input error (exit 5).
    pub fn input(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Layer {
            class: Exit::Input,
            source: Box::new(source),
        }
    }

    /// `source` (a model file or weights error) as a model error (exit 4).
    pub fn model(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Layer {
            class: Exit::Model,
            source: Box::new(source),
        }
    }

    /// `source` (a setting the run cannot use) as a usage error (exit 2).
    pub fn usage(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Layer {
            class: Exit::Usage,
            source: Box::new(source),
        }
    }

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
            Error::Layer { class, .. } => *class,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read config file c.yaml: {source}\n  fix: pass a readable file")]
    struct Outer {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("reading the shard")]
    struct Bare {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_printed_once_with_one_fix_line() {
        let outer = Outer {
            source: std::io::Error::other("Is a directory (os error 21)"),
        };
        let text = render(&outer);
        assert_eq!(text.matches("Is a directory").count(), 1, "{text}");
        assert_eq!(text.matches("fix:").count(), 1, "{text}");

        // A cause the message leaves out is added to its first line, never lost.
        let bare = Bare {
            source: std::io::Error::other("permission denied"),
        };
        assert_eq!(render(&bare), "reading the shard: permission denied");

        let output = Error::Output {
            what: "results",
            path: "out/predictions.jsonl".into(),
            source: std::io::Error::other(
                "cannot access out/predictions.jsonl: boom\n  fix: check that output.dir is writable",
            ),
        };
        let text = render(&output);
        assert_eq!(text.matches("boom").count(), 1, "{text}");
        assert_eq!(text.matches("fix:").count(), 1, "{text}");
    }

    #[test]
    fn a_layer_error_keeps_its_type_its_chain_and_its_exit_class() {
        let err = Error::input(Outer {
            source: std::io::Error::other("denied"),
        });
        assert_eq!(err.exit(), Exit::Input);
        let Error::Layer { source, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(source.downcast_ref::<Outer>().is_some());
        let io = std::error::Error::source(&err)
            .and_then(std::error::Error::source)
            .map(ToString::to_string);
        assert_eq!(io.as_deref(), Some("denied"));
        // Printed as the typed message was before, the fix once.
        assert_eq!(
            render(&err),
            "cannot read config file c.yaml: denied\n  fix: pass a readable file"
        );
        assert_eq!(Error::model(std::io::Error::other("x")).exit(), Exit::Model);
        assert_eq!(Error::usage(std::io::Error::other("x")).exit(), Exit::Usage);
    }
}
