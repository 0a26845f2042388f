//! Errors of the S3Gen crate: each variant is one kind of failure a caller can match on (tts-engine's
//! `Error::kind` maps them to bad input, bad model files and internal failures).
use std::path::PathBuf;

/// Errors of the S3Gen crate.
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
    /// A request S3Gen does not take (`request`: its index in the batch, when one is at fault): an
    /// empty batch or token list, a token outside the vocabulary, a prompt or x-vector of the wrong
    /// size or with non-finite values.
    #[error("S3Gen request{}: {detail}", request.map(|i| format!(" {i}")).unwrap_or_default())]
    Input { request: Option<usize>, detail: String },
    /// A call that does not match how its objects were built (a scratch buffer of the wrong size, a
    /// missing buffer): a bug of the caller, not of its input.
    #[error("S3Gen misuse: {0}")]
    Misuse(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
