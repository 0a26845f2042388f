//! S3Tokenizer v2 (spec §5.4): 16 kHz speech to discrete speech tokens at 25 per second, codes in
//! `[0, 6560]`, as chatterbox's `S3Tokenizer.forward([wav], max_len)` computes them (chatterbox-tts
//! 0.1.7 over s3tokenizer 0.3.0) for one utterance:
//!
//! 1. [`mel`]: Whisper-style 128-band log-mel, `floor(len / 160)` frames; with `max_len`, only the
//!    first `4·max_len` frames are kept;
//! 2. [`encoder`]: `AudioEncoderV2` (two stride-2 convolutions, then [`block`]s of RoPE attention
//!    with an FSMN memory and a GELU MLP), `⌈⌈frames/2⌉/2⌉` rows of `n_state`;
//! 3. [`fsq`]: `tanh(project_down(h))·0.999` rounded to base-3 digits, one code per row.
//!
//! A mel of more than 3000 frames (30 s) goes through the package's windowed path ([`windows`]).
//! Weights come from `s3gen.safetensors` under `tokenizer.` (`encoder.*`,
//! `quantizer._codebook.project_down.*`); the mel filterbank and the window are computed here.
pub mod block;
pub mod config;
pub mod device_encoder;
pub mod encoder;
pub mod fsq;
mod linear;
pub mod mel;
pub mod synthetic;
pub mod windows;

use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::{BackendKind, Device};

pub use config::TokenizerConfig;
pub use encoder::tokens_for_frames;
pub use fsq::{CODEBOOK_SIZE, DigitAgreement, FSQ_DIMS, codes, digit_agreement};
pub use mel::{LogMel, MIN_SAMPLES};

use crate::{Error, Result};

/// The checkpoint prefix of the tokenizer's tensors in `s3gen.safetensors`.
pub const PREFIX: &str = "tokenizer.";

/// The S3 speech tokenizer, weights loaded.
pub struct S3Tokenizer {
    config: TokenizerConfig,
    front: mel::MelFrontEnd,
    encoder: EncoderOn,
    fsq: fsq::Fsq,
}

/// Where the encoder runs: on the host in f32 ([`encoder::Encoder`]) or on a kernel backend
/// ([`device_encoder::DeviceEncoder`]).
enum EncoderOn {
    Host(encoder::Encoder),
    Device(Box<device_encoder::DeviceEncoder>),
}

impl S3Tokenizer {
    /// Loads the tokenizer's weights (`tokenizer.*`) from `ckpt` for `config` (checked first). A
    /// missing or misshapen tensor is an error naming it and the checkpoint.
    pub fn load(ckpt: &Checkpoint, config: &TokenizerConfig) -> Result<S3Tokenizer> {
        S3Tokenizer::load_on(ckpt, config, &Device::cpu())
    }

    /// [`Self::load`] with the encoder on `dev`: on the Cpu backend the host encoder (f32, the
    /// parity path), on Cuda or Emu the [`device_encoder`] (bf16 activations: within bf16 tolerance
    /// of the f32 encoder, and so a token can differ where a value lies that close to an FSQ
    /// rounding boundary). The log-mel and the FSQ projection stay on the host.
    pub fn load_on(ckpt: &Checkpoint, config: &TokenizerConfig, dev: &Device) -> Result<S3Tokenizer> {
        config.validate()?;
        let prefix = format!("{PREFIX}encoder.");
        let encoder = match dev.kind() {
            BackendKind::Cpu => EncoderOn::Host(encoder::Encoder::load(ckpt, &prefix, config)?),
            BackendKind::Cuda | BackendKind::Emu => {
                EncoderOn::Device(Box::new(device_encoder::DeviceEncoder::load(ckpt, &prefix, config, dev)?))
            }
        };
        let fsq = fsq::Fsq::load(ckpt, &format!("{PREFIX}quantizer._codebook."), config.tokenizer_n_state)?;
        Ok(S3Tokenizer { config: config.clone(), front: mel::MelFrontEnd::new(), encoder, fsq })
    }

    pub fn config(&self) -> &TokenizerConfig {
        &self.config
    }

    /// The speech tokens of one 16 kHz utterance: `⌈⌈⌊len/160⌋/2⌉/2⌉` codes in `[0, 6560]`, or
    /// those of its first `4·max_len` mel frames (at most `max_len` tokens) when `max_len` is given.
    ///
    /// Audio that is empty, shorter than one token ([`MIN_SAMPLES`]) or holds a non-finite sample
    /// is an [`Error::Audio`]; `max_len = Some(0)` an [`Error::Input`].
    pub fn tokenize(&self, wav_16k: &[f32], max_len: Option<usize>) -> Result<Vec<u32>> {
        let mut mel = self.log_mel(wav_16k)?;
        if let Some(n) = max_len {
            if n == 0 {
                return Err(Error::Input { field: "max_len", detail: "0 tokens asked for (give None for no limit)".into() });
            }
            mel = mel.truncated(n.saturating_mul(mel::FRAMES_PER_TOKEN));
        }
        self.tokenize_mel(&mel)
    }

    /// The tokens of a log-mel ([`Self::log_mel`]): one pass up to 3000 frames, 30 s windows
    /// merged above ([`windows`]).
    pub fn tokenize_mel(&self, mel: &LogMel) -> Result<Vec<u32>> {
        if mel.frames <= windows::MAX_FRAMES {
            return Ok(codes(&self.fsq_pre_round(&self.encode(mel)?)));
        }
        let segments = windows::windows(mel.frames)
            .into_iter()
            .map(|(s, e)| Ok(codes(&self.fsq_pre_round(&self.encode(&mel.frame_range(s, e))?))))
            .collect::<Result<Vec<_>>>()?;
        Ok(windows::merge(&segments))
    }

    /// Stage 1: the log-mel of a 16 kHz waveform, `[128][⌊len/160⌋]` (see [`mel`]).
    pub fn log_mel(&self, wav_16k: &[f32]) -> Result<LogMel> {
        self.front.log_mel(wav_16k)
    }

    /// Stage 2: the encoder output of a log-mel taken in one pass, `[T_tok, n_state]` row-major
    /// ([`tokens_for_frames`] rows). A mel without frames is an [`Error::Input`].
    pub fn encode(&self, mel: &LogMel) -> Result<Vec<f32>> {
        match &self.encoder {
            EncoderOn::Host(e) => e.forward(mel),
            EncoderOn::Device(e) => e.forward(mel),
        }
    }

    /// The kind of backend the encoder runs on.
    pub fn encoder_backend(&self) -> BackendKind {
        match &self.encoder {
            EncoderOn::Host(_) => BackendKind::Cpu,
            EncoderOn::Device(e) => e.device().kind(),
        }
    }

    /// Stage 3: `tanh(project_down(h))·0.999`, `[T_tok, 8]`, the values [`codes`] rounds.
    pub fn fsq_pre_round(&self, hidden: &[f32]) -> Vec<f32> {
        self.fsq.pre_round(hidden)
    }
}
