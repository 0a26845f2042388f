//! Public API of the Chatterbox TTS engine.
//!
//! - [`synthesize`]: the request API ([`synthesize::Request`] → [`synthesize::Audio`], batched, texts
//!   of any length), [`stream`]: the same as audio chunks while T3 decodes;
//! - [`speak`]: the engine ([`speak::Engine`]): loading, voices, tokenised texts → speech;
//! - [`hub`]: models by name (a directory or a Hugging Face repo id, through the HF cache);
//! - [`output`]: WAV and raw PCM, to files or streamed;
//! - [`voice`]: the built-in voice (`conds.pt`);
//! - [`text`]: the text front-end;
//! - [`segment`]: long text → segments of at most ~300 characters, each with the pause after it;
//! - [`join`]: the segments' audio → one waveform, with the pauses and click-free joins;
//! - [`synthetic`]: the synthetic engine (random weights at the real dimensions: noise, not speech);
//! - [`serve`]: `tts serve`, the OpenAI-compatible HTTP server (a bounded queue in front of one
//!   engine thread that batches requests; docs/serving.md);
//! - [`selfcheck`], [`bench`]: the kernel self-check and the speed commands;
//! - [`error`]: the typed errors and their kinds ([`Error::kind`]).
pub mod bench;
pub mod continuous;
pub mod error;
pub mod hub;
pub mod join;
pub mod output;
pub mod peak;
pub mod segment;
pub mod selfcheck;
#[cfg(feature = "serve")]
pub mod serve;
pub mod speak;
pub mod stream;
pub mod stretch;
pub mod synthesize;
pub mod synthetic;
#[cfg(test)]
mod test_rng;
pub mod text;
pub mod voice;

pub use tts_kernels::{BackendKind, Device, EmuOptions, Schedule};

pub use error::{Error, ErrorKind, Result};

/// Picks the device named by `backend` (`auto`, `cpu`, `cuda`, `cuda:N`, `emu`). With `auto`, the
/// reason Cuda was not used (if it was not) is returned as a note for the user (the device's
/// [`Device::describe`] says it too).
pub fn select_device(backend: &str) -> Result<(Device, Option<String>)> {
    let dev = Device::from_name(backend)?;
    let note = dev.fallback_reason().map(|why| format!("Cuda not used: {why}"));
    Ok((dev, note))
}

/// One line per CUDA library this process loaded (name, version, file, how it was found), for
/// `tts self-check` and the GPU check's report; empty when none was.
pub fn cuda_library_report() -> Vec<String> {
    tts_kernels::cuda::libs::loaded_libraries()
        .iter()
        .map(|l| {
            format!("{} {} from {} (found through {})", l.name, l.version.as_deref().unwrap_or("?"), l.path.display(), l.origin)
        })
        .collect()
}
