//! One error type for the engine; every message names the file, key or shape at fault.

use std::path::PathBuf;

/// Errors the engine reports to the CLI and the app.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
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
    #[error("weights: unexpected keys {keys:?} (the file holds more than this model has)")]
    UnexpectedKeys { keys: Vec<String> },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Input(String),
    #[error("device: {0}")]
    Device(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn bad_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        EngineError::BadFile {
            path: path.into(),
            message: message.into(),
        }
    }
}
