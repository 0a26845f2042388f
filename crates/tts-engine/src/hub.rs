//! Models by name: what `--model` names (a directory, or a Hugging Face repo id at a revision)
//! resolved to a directory of the model's files through the standard Hugging Face cache (tts-hub:
//! the cache layout, the environment, the downloads and their checks).
pub use tts_hub::{DownloadProgress, HubOptions, ModelRef, NoProgress, Resolved};

use crate::Result;

/// The model `--model` names by default.
pub const DEFAULT_MODEL: &str = tts_hub::DEFAULT_REPO;

/// The official files the engine needs from a repository: T3, S3Gen (with the S3Tokenizer and
/// CAMPPlus), the VoiceEncoder, the text tokenizer and the built-in voice.
pub const REQUIRED_FILES: &[&str] = &["t3_cfg.safetensors", "s3gen.safetensors", "ve.safetensors", "tokenizer.json", "conds.pt"];

/// Files used when the repository has them: non-default dimensions (the official repo has none).
pub const OPTIONAL_FILES: &[&str] = &["config.json"];

/// The directory of `model` (a directory, or a repo id at `revision`, [`DEFAULT_MODEL`] when
/// `None`), downloading what the cache lacks with `progress`, by the environment's settings
/// ([`HubOptions::from_env`]). A local directory must hold T3 and S3Gen; the engine reads the rest
/// when present.
pub fn resolve(model: Option<&str>, revision: Option<&str>, progress: &mut dyn DownloadProgress) -> Result<Resolved> {
    let model = ModelRef::parse(model.unwrap_or(DEFAULT_MODEL), revision)?;
    let opts = HubOptions::from_env()?;
    resolve_with(&model, &opts, progress)
}

/// [`resolve`] with explicit settings.
pub fn resolve_with(model: &ModelRef, opts: &HubOptions, progress: &mut dyn DownloadProgress) -> Result<Resolved> {
    let required: &[&str] = match model {
        // a directory of one's own may leave out what it does not use (the engine says what is
        // missing when it is needed)
        ModelRef::Dir(_) => &["t3_cfg.safetensors", "s3gen.safetensors"],
        ModelRef::Hub { .. } => REQUIRED_FILES,
    };
    Ok(tts_hub::resolve(model, required, OPTIONAL_FILES, opts, progress)?)
}
