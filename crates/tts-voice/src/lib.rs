//! Voice cloning: a reference recording becomes the conditionals T3 and S3Gen speak with, exactly as
//! `ChatterboxTTS.prepare_conditionals` of chatterbox-tts 0.1.7 computes them (spec §5):
//!
//! - [`dsp`]: windows, reflect padding, STFT power spectra and librosa's Slaney mel filterbank,
//!   shared by the feature extractors below;
//! - [`audio`]: reference recordings (WAV, FLAC, MP3) decoded to mono f32 as `librosa.load` does;
//! - [`resample`]: librosa's soxr_hq (libsoxr, loaded at run time) and torchaudio's sinc resampler;
//! - [`cond_mel`]: S3Gen's prompt log-mel (`prompt_feat`);
//!
//! Everything here runs on the host in f32 (f64 where the reference's float32 rounding is better
//! matched by a more exact computation: the DFTs).
pub mod audio;
pub mod cond_mel;
pub mod dsp;
pub mod error;
pub mod resample;

pub use error::{Error, Result};
