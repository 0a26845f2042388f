//! Voice cloning: a reference recording becomes the conditionals T3 and S3Gen speak with, exactly as
//! `ChatterboxTTS.prepare_conditionals` of chatterbox-tts 0.1.7 computes them (spec §5):
//!
//! - [`audio`]: reference recordings (WAV, FLAC, MP3) decoded to mono f32 as `librosa.load` does;
//! - [`resample`]: librosa's soxr_hq (libsoxr, loaded at run time) and torchaudio's sinc resampler;
//! - [`dsp`]: windows, reflect padding, STFT power spectra and librosa's Slaney mel filterbank,
//!   shared by the feature extractors below;
//! - [`cond_mel`]: S3Gen's prompt log-mel (`prompt_feat`);
//! - [`voice_encoder`]: the VoiceEncoder, a recording → T3's `speaker_emb` (spec §5.3);
//! - [`s3_tokenizer`]: S3Tokenizer v2, 16 kHz speech to speech tokens (25 per second);
//! - [`campplus`]: CAMPPlus, S3Gen's speaker encoder (Kaldi fbank → x-vector, `[192]`);
//! - [`config`]: each model's part of `config.json`;
//! - [`prepare`]: all of it together, `prepare_conditionals` and voice conversion's two halves.
//!
//! Everything here runs on the host in f32 (f64 where the reference's float32 rounding is better
//! matched by a more exact computation: the DFTs).
pub mod audio;
pub mod campplus;
pub mod cond_mel;
pub mod config;
pub mod container;
mod device_linear;
pub mod dsp;
pub mod error;
pub mod prepare;
pub mod resample;
pub mod s3_tokenizer;
pub mod voice_encoder;

pub use error::{Error, Result};
