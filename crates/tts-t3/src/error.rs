//! Errors of the T3 crate: each variant is one kind of failure a caller can match on (tts-engine's
//! `Error::kind` maps them to bad input, bad model files, resource limits and internal failures).
use std::path::PathBuf;

/// Errors of the T3 crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tts-kernels failure: a checkpoint that is missing, unreadable or holds a tensor of the wrong
    /// shape or dtype (the file and tensor named), or a backend failure (driver, compile, launch).
    #[error(transparent)]
    Kernels(#[from] tts_kernels::Error),
    /// `config.json` of a model directory: unreadable, not JSON, an unknown key, a value of the wrong
    /// type or out of range. `key` names the key when one is at fault.
    #[error("{}: {}{detail}", file.display(), key.as_ref().map(|k| format!("key {k:?}: ")).unwrap_or_default())]
    Config { file: PathBuf, key: Option<String>, detail: String },
    /// A request value T3 does not take: the field, its value and what is accepted.
    #[error("T3 request: {field} = {value}, expected {expected}")]
    Input { field: &'static str, value: String, expected: String },
    /// More than the model (or this batch, as it was built) takes: `len` of `what` against `max`.
    #[error("T3 request: {len} {what} is more than the {max} allowed")]
    TooLong { what: &'static str, len: usize, max: usize },
    /// Every slot of a [`crate::Generator`] is decoding a request.
    #[error("T3 batch full: all {slots} slots are decoding")]
    BatchFull { slots: usize },
    /// A call that does not match how its objects were built (a workspace or batch of the wrong
    /// size): a bug of the caller, not of its input.
    #[error("T3 misuse: {0}")]
    Misuse(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
