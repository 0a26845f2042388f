//! Errors of the voice crate: each variant is one kind of failure a caller can match on (tts-engine's
//! `Error::kind` maps them to bad input, bad model files and internal failures).
use std::path::PathBuf;

/// Errors of the voice crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tts-kernels failure: a checkpoint that is missing, unreadable or holds a tensor of the wrong
    /// shape or dtype (the file and tensor named).
    #[error(transparent)]
    Kernels(#[from] tts_kernels::Error),
    /// `config.json` of a model directory: an unknown key of this crate's components, a value of the
    /// wrong type or out of range. `key` names the key when one is at fault.
    #[error("{}: {}{detail}", file.display(), key.as_ref().map(|k| format!("key {k:?}: ")).unwrap_or_default())]
    Config { file: PathBuf, key: Option<String>, detail: String },
    /// Reference audio that cannot be used: not audio, truncated or corrupt, empty, silent, too short,
    /// non-finite samples, an absurd sample rate or channel count. `what` names the file (or
    /// "audio" for samples given in memory).
    #[error("{what}: {detail}")]
    Audio { what: String, detail: String },
    /// libsoxr (librosa's resampler, loaded at run time) could not be found, loaded or run: the
    /// detail says where it was looked for and how to install it.
    #[error("libsoxr: {detail}")]
    Soxr { detail: String },
    /// An argument this crate does not take (a length, a rate, a shape), named by `field`.
    #[error("{field}: {detail}")]
    Input { field: &'static str, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Audio`] for `what` (a path shown as given, or "audio").
    pub fn audio(what: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::Audio { what: what.into(), detail: detail.into() }
    }
}
