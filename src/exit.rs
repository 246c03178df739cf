//! Process exit codes (documented in README.md, section "Exit codes").

/// What a command's outcome means to a shell script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked.
    Success = 0,
    /// An unexpected internal error.
    Failure = 1,
    /// Bad configuration or flags, or the requested device cannot be used.
    Usage = 2,
    /// The run completed, but some inputs failed (they are listed; the rest are done).
    CompletedWithFailures = 3,
    /// Model files missing, unreadable or not matching the configuration.
    Model = 4,
    /// Input data unusable: no readable image, malformed dataset.
    Input = 5,
    /// Outputs cannot be written.
    Output = 6,
    /// Training stopped: the loss or its gradients became non-finite (the last good checkpoint is
    /// kept and named).
    Diverged = 7,
    /// The output directory is in use by another live run (its lock is held); nothing was touched.
    Busy = 8,
    /// Interrupted (Ctrl-C, SIGTERM or SIGHUP); completed results were kept.
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}
