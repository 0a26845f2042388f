//! Errors of the engine API and their kinds.
//!
//! [`Error`] has one variant per failure a caller may handle differently (the HTTP server of issue
//! 16 maps them to status codes), and wraps the model crates' and tts-kernels' errors whole
//! (`#[from]`). [`Error::kind`] sorts every one of them, inner errors included, into four
//! [`ErrorKind`]s; it is the one place that mapping lives.
use std::path::PathBuf;

/// What kind of failure an [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request or the options: a text, a voice, a generation setting, a backend name, a model
    /// id that does not exist, command-line arguments (HTTP 400/404/422; the CLI exits with 1).
    BadInput,
    /// The model files or the setup that gets them: a missing model directory or file, an unreadable
    /// or corrupt one, a tensor missing or of the wrong shape or dtype, a bad `config.json` key, no
    /// network (or `HF_HUB_OFFLINE`) without the files cached, a failed download (the operator's
    /// problem: HTTP 500/503; the CLI exits with 2).
    BadModel,
    /// Past a limit: a text or a generation longer than the model takes, out of memory, a full queue
    /// (HTTP 413/429/507; the CLI exits with 1, as for bad input).
    ResourceLimit,
    /// A failure of the backend (driver, NVRTC, cuBLAS, a kernel launch) or a broken invariant of the
    /// engine itself (HTTP 500; the CLI exits with 3).
    Internal,
}

/// Errors of the engine API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A generation setting or option out of range: the field (or command-line flag), its value and
    /// what is accepted.
    #[error("{field} = {value}: must be {expected}")]
    Setting { field: &'static str, value: String, expected: String },
    /// A text that cannot be spoken (`index` in the batch).
    #[error("text {index}: {problem}")]
    Text { index: usize, problem: String },
    /// An input that is not a request's text but holds it: stdin, a text file (`what`), unreadable
    /// or not UTF-8, or what it holds cannot be spoken.
    #[error("{what}: {problem}")]
    Input { what: String, problem: String },
    /// Command-line arguments that do not go together.
    #[error("{0}")]
    Usage(&'static str),
    /// A voice file (`conds.pt`) that could not be read: the file and the problem.
    #[error("voice file {}: {msg}", path.display())]
    Voice { path: PathBuf, msg: String },
    /// A voice whose sizes do not fit the model (`what`: which part of it).
    #[error("the voice's {what} has {got} values, the model takes {expected}")]
    VoiceMismatch { what: &'static str, got: usize, expected: usize },
    /// No voice was given and the model directory has none.
    #[error("no voice: none was given and the model directory has no conds.pt")]
    NoVoice,
    /// A voice was to be computed from a recording, but the engine has no cloning models (a
    /// synthetic engine; a model directory's are loaded on first use).
    #[error("this engine cannot clone voices from recordings (a synthetic engine has no VoiceEncoder, S3Tokenizer or CAMPPlus)")]
    NoCloning,

    /// The model directory does not exist or is not a directory.
    #[error("model directory {}: {problem}", path.display())]
    ModelDir { path: PathBuf, problem: &'static str },
    /// A model file besides the checkpoints and `config.json` (whose errors come from the model
    /// crates): `tokenizer.json`, the built-in voice `conds.pt`, a bench case's `inputs.safetensors`,
    /// unreadable or corrupt.
    #[error("model file {}: {detail}", path.display())]
    ModelFile { path: PathBuf, detail: String },
    /// The model has no tokenizer (no `tokenizer.json` in its directory), so it cannot speak text.
    #[error("the model directory has no tokenizer.json: it cannot speak text")]
    NoTokenizer,

    /// More than the model takes: `len` of `what` against `max`.
    #[error("{what}: {len} is more than the {max} allowed")]
    TooLong { what: String, len: usize, max: usize },
    /// Memory the engine knows it cannot get before asking for it (`what` needs `need_bytes`,
    /// `available_bytes` are free). Allocations that fail are `tts_kernels::Error::OutOfMemory`.
    #[error("out of memory: {what} needs {need_bytes} bytes, {available_bytes} are available")]
    OutOfMemory { what: String, need_bytes: u64, available_bytes: u64 },
    /// The request queue is full. Nothing in the engine raises it yet: the HTTP server (issue 16) will.
    #[error("the request queue is full ({capacity} requests)")]
    QueueFull { capacity: usize },

    /// T3 stopped a request before its first speech token the flow knows (the model's doing, not
    /// the input's).
    #[error("text {index}, segment {segment}: T3 produced no speech tokens")]
    NoSpeechTokens { index: usize, segment: usize },
    /// An output file that could not be written (where the caller asked it to be: the caller's to
    /// fix, a bad input).
    #[error("writing {}: {detail}", path.display())]
    Output { path: PathBuf, detail: String },
    /// A bench that measured nothing (every request stopped during the warm-up steps).
    #[error("batch {batch}: every request stopped during the {warmup} warm-up steps: nothing was timed")]
    NothingTimed { batch: usize, warmup: usize },

    /// A broken invariant of the engine itself (its bug, not the caller's).
    #[error("internal error: {0}")]
    Internal(String),

    /// Joining a long text's segments: a pause out of range (the engine's bug) or no memory for the
    /// whole waveform.
    #[error("joining the segments' audio: {0}")]
    Join(#[from] crate::join::JoinError),
    #[error(transparent)]
    Kernels(#[from] tts_kernels::Error),
    #[error(transparent)]
    T3(#[from] tts_t3::Error),
    #[error(transparent)]
    S3Gen(#[from] tts_s3gen::Error),
    /// Finding the model: a bad model reference or HF setting, a repository or file that does not
    /// exist, no network (or `HF_HUB_OFFLINE`) without the files in the cache, no access, a failed
    /// download or cache.
    #[error(transparent)]
    Hub(#[from] tts_hub::Error),
    /// Voice cloning: a recording that cannot be used (not audio, corrupt, silent, too short, ...),
    /// a cloning model file at fault, or no libsoxr to resample with.
    #[error(transparent)]
    Cloning(#[from] tts_voice::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The kind of this error, looking into the model crates' and tts-kernels' errors. A tts-kernels
    /// shape, dtype or invalid-argument error is `Internal`: the engine checks its inputs before
    /// calling an op, so an op refusing its arguments is the engine's bug. Checkpoint errors are
    /// `BadModel`; a backend that is unknown or not available here is `BadInput` (the option named it).
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind::*;
        let kernels = |e: &tts_kernels::Error| {
            use tts_kernels::Error as K;
            match e {
                K::CheckpointIo { .. } | K::Checkpoint { .. } | K::Tensor { .. } => BadModel,
                K::UnknownBackend(_) | K::CudaUnavailable(_) | K::EmuUnavailable | K::CpuIsa(_) => BadInput,
                K::OutOfMemory { .. } => ResourceLimit,
                K::Shape { .. }
                | K::DType { .. }
                | K::Invalid { .. }
                | K::DeviceMismatch { .. }
                | K::Driver { .. }
                | K::Cublas { .. }
                | K::Compile { .. }
                | K::Cache { .. }
                | K::UnknownKernel(_)
                | K::Launch { .. }
                | K::SharedMemory { .. }
                | K::Overrun { .. } => Internal,
            }
        };
        match self {
            Error::Setting { .. }
            | Error::Text { .. }
            | Error::Input { .. }
            | Error::Usage(_)
            | Error::Voice { .. }
            | Error::VoiceMismatch { .. }
            | Error::NoVoice
            | Error::NoCloning
            | Error::Output { .. } => BadInput,
            Error::ModelDir { .. } | Error::ModelFile { .. } | Error::NoTokenizer => BadModel,
            Error::TooLong { .. } | Error::OutOfMemory { .. } | Error::QueueFull { .. } => ResourceLimit,
            Error::NoSpeechTokens { .. } | Error::NothingTimed { .. } | Error::Internal(_) => Internal,
            Error::Join(crate::join::JoinError::OutOfMemory { .. }) => ResourceLimit,
            Error::Join(_) => Internal,
            Error::Kernels(e) => kernels(e),
            Error::T3(e) => match e {
                tts_t3::Error::Kernels(e) => kernels(e),
                tts_t3::Error::Config { .. } => BadModel,
                tts_t3::Error::Input { .. } => BadInput,
                tts_t3::Error::TooLong { .. } | tts_t3::Error::BatchFull { .. } => ResourceLimit,
                tts_t3::Error::Misuse(_) => Internal,
            },
            Error::S3Gen(e) => match e {
                tts_s3gen::Error::Kernels(e) => kernels(e),
                tts_s3gen::Error::Config { .. } => BadModel,
                tts_s3gen::Error::Input { .. } => BadInput,
                tts_s3gen::Error::Misuse(_) => Internal,
            },
            Error::Hub(e) => {
                use tts_hub::Error as H;
                match e {
                    H::BadModelRef { .. } | H::BadSetting { .. } | H::RepoNotFound { .. } | H::RevisionNotFound { .. } => {
                        BadInput
                    }
                    H::BadFileName { .. } => Internal,
                    H::DirNotFound { .. }
                    | H::DirMissingFiles { .. }
                    | H::FilesNotFound { .. }
                    | H::Offline { .. }
                    | H::Unauthorized { .. }
                    | H::Network { .. }
                    | H::Integrity { .. }
                    | H::Cache { .. } => BadModel,
                }
            }
            Error::Cloning(e) => match e {
                tts_voice::Error::Kernels(e) => kernels(e),
                tts_voice::Error::Config { .. } => BadModel,
                tts_voice::Error::Audio { .. } | tts_voice::Error::Input { .. } => BadInput,
                tts_voice::Error::Soxr { .. } => Internal,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorKind::*;
    use super::*;

    fn io() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")
    }

    /// Every tts-kernels variant and its kind (the `match` in `kind` is exhaustive, so a new variant
    /// must be sorted there; add it here too).
    fn kernels_errors() -> Vec<(tts_kernels::Error, ErrorKind)> {
        use tts_kernels::{DType, Error as K};
        let s = || "x".to_string();
        vec![
            (K::Shape { op: "linear", detail: s() }, Internal),
            (K::DType { op: "linear", what: "x", got: DType::F32, expected: s() }, Internal),
            (K::Invalid { op: "linear", detail: s() }, Internal),
            (K::DeviceMismatch { op: "linear" }, Internal),
            (K::UnknownBackend(s()), BadInput),
            (K::CudaUnavailable(s()), BadInput),
            (K::Driver { during: s(), detail: s() }, Internal),
            (K::Cublas { during: s(), detail: s() }, Internal),
            (K::Compile { file: s(), arch: s(), log: s() }, Internal),
            (K::Cache { path: s(), source: io() }, Internal),
            (K::EmuUnavailable, BadInput),
            (K::UnknownKernel(s()), Internal),
            (K::Launch { kernel: s(), detail: s() }, Internal),
            (K::SharedMemory { kernel: s(), static_bytes: 1, dynamic_bytes: 2, limit: 3, reason: s() }, Internal),
            (K::OutOfMemory { what: s(), bytes: 1 }, ResourceLimit),
            (K::CheckpointIo { path: s(), source: io() }, BadModel),
            (K::Checkpoint { path: s(), detail: s() }, BadModel),
            (K::Tensor { path: s(), name: s(), expected: vec![1], detail: s() }, BadModel),
            (K::Overrun { kernel: s(), len: 1, side: "after" }, Internal),
        ]
    }

    #[test]
    fn kernels_errors_have_their_kind_alone_and_inside_the_model_crates() {
        let n = kernels_errors().len();
        assert_eq!(n, 19);
        for i in 0..n {
            let (e, want) = kernels_errors().remove(i);
            let text = e.to_string();
            assert_eq!(Error::from(e).kind(), want, "{text}");
            let (e, _) = kernels_errors().remove(i);
            assert_eq!(Error::from(tts_t3::Error::from(e)).kind(), want, "T3: {text}");
            let (e, _) = kernels_errors().remove(i);
            assert_eq!(Error::from(tts_s3gen::Error::from(e)).kind(), want, "S3Gen: {text}");
        }
    }

    #[test]
    fn t3_errors() {
        use tts_t3::Error as T;
        for (e, want) in [
            (T::Config { file: "c.json".into(), key: Some("hidden_size".into()), detail: "x".into() }, BadModel),
            (T::Input { field: "temperature", value: "NaN".into(), expected: "finite".into() }, BadInput),
            (T::TooLong { what: "text tokens", len: 3, max: 2 }, ResourceLimit),
            (T::BatchFull { slots: 4 }, ResourceLimit),
            (T::Misuse("x".into()), Internal),
        ] {
            let text = e.to_string();
            assert_eq!(Error::from(e).kind(), want, "{text}");
        }
    }

    #[test]
    fn s3gen_errors() {
        use tts_s3gen::Error as S;
        for (e, want) in [
            (S::Config { file: "c.json".into(), key: None, detail: "x".into() }, BadModel),
            (S::Input { request: Some(1), detail: "x".into() }, BadInput),
            (S::Misuse("x".into()), Internal),
        ] {
            let text = e.to_string();
            assert_eq!(Error::from(e).kind(), want, "{text}");
        }
    }

    #[test]
    fn engine_errors() {
        for (e, want) in [
            (Error::Setting { field: "temperature", value: "NaN".into(), expected: "finite".into() }, BadInput),
            (Error::Text { index: 0, problem: "empty".into() }, BadInput),
            (Error::Usage("--synthetic-seed needs --synthetic"), BadInput),
            (Error::Input { what: "stdin".into(), problem: "not UTF-8".into() }, BadInput),
            (Error::Voice { path: "v.pt".into(), msg: "x".into() }, BadInput),
            (Error::VoiceMismatch { what: "x-vector", got: 1, expected: 2 }, BadInput),
            (Error::NoVoice, BadInput),
            (Error::ModelDir { path: "m".into(), problem: "does not exist" }, BadModel),
            (Error::ModelFile { path: "m/tokenizer.json".into(), detail: "x".into() }, BadModel),
            (Error::NoTokenizer, BadModel),
            (Error::TooLong { what: "text 0: text tokens".into(), len: 3, max: 2 }, ResourceLimit),
            (Error::OutOfMemory { what: "x".into(), need_bytes: 2, available_bytes: 1 }, ResourceLimit),
            (Error::QueueFull { capacity: 8 }, ResourceLimit),
            (Error::NoSpeechTokens { index: 0, segment: 0 }, Internal),
            (Error::Output { path: "o.wav".into(), detail: "x".into() }, BadInput),
            (Error::NothingTimed { batch: 1, warmup: 2 }, Internal),
            (Error::Internal("x".into()), Internal),
            (Error::Join(crate::join::JoinError::OutOfMemory { samples: 1 << 40 }), ResourceLimit),
            (Error::Join(crate::join::JoinError::SampleRate), Internal),
        ] {
            let text = e.to_string();
            assert_eq!(e.kind(), want, "{text}");
        }
    }

    #[test]
    fn messages_name_what_is_wrong() {
        let e = Error::from(tts_t3::Error::Config {
            file: "m/config.json".into(),
            key: Some("hidden_sise".into()),
            detail: "unknown field".into(),
        });
        assert_eq!(e.to_string(), "m/config.json: key \"hidden_sise\": unknown field");
        let e = Error::Setting { field: "temperature", value: f32::NAN.to_string(), expected: "finite and > 0".into() };
        assert_eq!(e.to_string(), "temperature = NaN: must be finite and > 0");
    }
}
