//! Why a bench run, a comparison or a plot failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench settings: {0}")]
    Settings(String),

    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),

    #[error("model: {0}")]
    Model(String),

    #[error("{what} failed on the device: {source}")]
    Compute {
        what: &'static str,
        #[source]
        source: candle_core::Error,
    },

    #[error("generation failed: {0}")]
    Generate(#[from] crate::generate::GenerateError),

    #[error("batch {batch_size}, beams {num_beams}: a caption has {found} generated tokens, the forced length asks for {expected} (min_length = max_length was not honoured)")]
    ForcedTokens {
        batch_size: usize,
        num_beams: usize,
        expected: usize,
        found: usize,
    },

    #[error("cannot read bench document {}: {source}", path.display())]
    ReadDocument {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is not a bench document ({message})\n  fix: pass a file written by `vlmrun bench --out` or benches/reference/pytorch_blip.py", path.display())]
    BadDocument { path: PathBuf, message: String },

    #[error("cannot compare: the baseline was measured on {baseline:?}, this run on {current:?}\n  fix: baselines are per machine: take one on this machine with `vlmrun bench --out FILE` (same flags), then compare later runs with `--compare FILE`")]
    DeviceMismatch { baseline: String, current: String },

    #[error("cannot compare: the baseline differs in {what} (baseline {baseline}, this run {current})\n  fix: rerun with the baseline's settings, or take a new baseline")]
    SettingsMismatch {
        what: &'static str,
        baseline: String,
        current: String,
    },

    #[error("cannot compare: no (batch size, beams) of this run is in the baseline (baseline has {baseline}, this run {current})\n  fix: rerun with the baseline's --batch-sizes and --beams")]
    NoCommonRecords { baseline: String, current: String },

    #[error("bad --threshold {given:?}: {message}\n  fix: a percentage such as 5% (or 5)")]
    Threshold { given: String, message: String },

    #[error("cannot draw the plot {}: {message}", path.display())]
    Plot { path: PathBuf, message: String },

    #[error("internal error: {0}")]
    Internal(String),
}

impl BenchError {
    /// Wraps a candle error with the phase it happened in.
    pub fn compute(what: &'static str) -> impl FnOnce(candle_core::Error) -> BenchError {
        move |source| BenchError::Compute { what, source }
    }
}

impl From<crate::engine::EngineError> for BenchError {
    fn from(err: crate::engine::EngineError) -> Self {
        use crate::engine::EngineError;
        match err {
            EngineError::Hub(err) => BenchError::Hub(err),
            EngineError::Load(err) => BenchError::Model(format!("{err:#}")),
            EngineError::Tokenizer(err) => BenchError::Model(err.to_string()),
            EngineError::Prompt(_) | EngineError::Setting { .. } => {
                BenchError::Settings(err.to_string())
            }
            EngineError::Synchronize(source) => BenchError::Compute {
                what: "synchronising after the model load",
                source,
            },
        }
    }
}
