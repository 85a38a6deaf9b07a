//! One error type for the engine; every message names the file, key or shape at fault.

use std::path::PathBuf;

/// Errors the engine reports to the CLI and the app.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The OS error is part of the message and not a `source`, so that error chains printed
    /// in full (`{:#}`) say it once.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error("weights: missing key `{key}`{hint}")]
    MissingKey { key: String, hint: String },
    #[error("weights: key `{key}` has shape {found:?}, expected {expected:?}")]
    WrongShape {
        key: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error(
        "weights: `{key}` holds {count} NaN or infinite values (of {total}): the file is damaged \
         or was saved from a diverged run"
    )]
    NonFinite {
        key: String,
        count: usize,
        total: usize,
    },
    #[error("weights: unexpected keys {keys:?} (the file holds more than this model has)")]
    UnexpectedKeys { keys: Vec<String> },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A label or prompt that names no class of the model.
    #[error("{0}")]
    UnknownClass(String),
    /// A model, file or data set of another kind than the one asked for (a student where a
    /// teacher is needed, a file that is not a VAE).
    #[error("{0}")]
    WrongKind(String),
    /// Models, files or data that do not fit each other (shapes, classes, the teacher a set
    /// was made by).
    #[error("{0}")]
    Mismatch(String),
    /// An option, argument or request outside what it may be.
    #[error("{0}")]
    InvalidSetting(String),
    /// Data that is not where it was looked for, or not complete.
    #[error("{0}")]
    DataNotFound(String),
    /// A run folder that belongs to another run, or is held by another job.
    #[error("{0}")]
    RunFolder(String),
    /// Encoding or decoding a format (PNG, safetensors, JSON) failed.
    #[error("{0}")]
    Format(String),
    /// What this device or kernel cannot compute.
    #[error("{0}")]
    Unsupported(String),
    /// Training diverged (non-finite values).
    #[error("{0}")]
    Diverged(String),
    /// A request that needs a loaded model, and none is.
    #[error("{0}")]
    NothingLoaded(String),
    #[error("device: {0}")]
    Device(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            error: source,
        }
    }

    pub(crate) fn bad_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        EngineError::BadFile {
            path: path.into(),
            message: message.into(),
        }
    }
}
