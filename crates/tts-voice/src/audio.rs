//! Reference recordings: WAV, FLAC and MP3 decoded to mono f32 samples at their own rate, as
//! `librosa.load(path, sr=None)` of librosa 0.11 gives them (resample afterwards with
//! [`crate::resample`]: `librosa.load(path, sr=24000)` is `load` then `Resampler::Soxr`).
//!
//! librosa reads through soundfile (libsndfile), which converts integer PCM to float32 by a
//! power-of-two scale: `(u8 − 128) / 128`, `i16 / 32768`, `i24 / 2²³`, `i32 / 2³¹` (the i32 rounded to
//! f32 first); float64 is rounded to float32. Then `librosa.to_mono` takes the float32 mean over the
//! channels. This module does the same on the samples symphonia decodes (pure Rust; one API for
//! all three containers, and unlike hound it reads 64-bit float WAV). MP3 decoders differ slightly
//! (symphonia's here, mpg123 in libsndfile): samples agree to the decoders' precision, not bit for
//! bit; encoder delay and padding are removed (gapless) as mpg123 does.
//!
//! Refused, as [`Error::Audio`] naming the file: anything that is not WAV/FLAC/MP3 audio,
//! truncated or corrupt data, no samples, a sample rate outside [`MIN_RATE`]..=[`MAX_RATE`], more
//! than [`MAX_CHANNELS`] channels, NaN or infinite samples, a silent recording (peak below
//! [`SILENCE_PEAK`]), more than [`MAX_SECONDS`] of audio (checked while decoding) and files over
//! [`MAX_FILE_BYTES`]. The container's tags and comments never reach the decoder
//! ([`crate::container`]).
use std::io::{Cursor, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use symphonia::core::audio::{AudioBufferRef, Signal};
use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::sample::{i24, u24};
use symphonia::default::formats::{FlacReader, MpaReader, WavReader};

use crate::container::Kind;

use crate::{Error, Result};

/// Decoded audio: mono samples (nominally in [-1, 1]) and their rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub samples: Vec<f32>,
    /// Hz.
    pub sample_rate: u32,
}

/// The lowest sample rate accepted, Hz (telephone audio is 8 kHz; below 1 kHz nothing is speech).
pub const MIN_RATE: u32 = 1_000;
/// The highest sample rate accepted, Hz (the highest rate studio formats use).
pub const MAX_RATE: u32 = 384_000;
/// The most channels accepted (symphonia's channel masks stop at 26; 32 in WAV's fmt chunk).
pub const MAX_CHANNELS: usize = 26;
/// The longest recording accepted, seconds (a reference is 6–10 s; this bounds memory).
pub const MAX_SECONDS: u64 = 600;
/// The most samples per channel accepted: 10 minutes at 96 kHz (230 MB of mono f32), so that a
/// high-rate file cannot take [`MAX_SECONDS`] times 384 kHz of memory.
pub const MAX_SAMPLES: u64 = 600 * 96_000;
/// A recording whose every sample is below this in magnitude (−80 dBFS) is silent: every feature
/// of the reference would be its floor value.
pub const SILENCE_PEAK: f32 = 1e-4;

/// Reads and decodes the audio file at `path`.
pub fn load(path: &Path) -> Result<Audio> {
    let what = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| Error::audio(&what, format!("cannot open: {e}")))?;
    let len = file.metadata().map_err(|e| Error::audio(&what, format!("cannot read: {e}")))?.len();
    if len == 0 {
        return Err(Error::audio(&what, "the file is empty"));
    }
    if len > MAX_FILE_BYTES {
        return Err(Error::audio(&what, format!("{len} bytes: more than the {MAX_FILE_BYTES} a recording may have")));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| Error::audio(&what, format!("cannot read: {e}")))?;
    decode(&bytes, &what)
}

/// The largest recording file read (10 minutes of 48 kHz stereo 64-bit float WAV is 460 MB).
pub const MAX_FILE_BYTES: u64 = 512 << 20;

/// Decodes an audio file held in memory; `what` names it in errors (a file name, whose extension is
/// a hint of the format, or a description).
pub fn decode(bytes: &[u8], what: &str) -> Result<Audio> {
    if bytes.is_empty() {
        return Err(Error::audio(what, "the file is empty"));
    }
    check_wav_header(bytes, true, what)?;
    // tags, pictures and comments never reach the decoder (crate::container)
    let bytes = crate::container::strip_metadata(bytes, what)?.into_owned();
    let kind = Kind::of(&bytes).ok_or_else(|| {
        Error::audio(what, "not a supported audio file (WAV, FLAC or MP3): no WAV, FLAC or MP3 header at its start")
    })?;
    decode_source(Box::new(Cursor::new(bytes)), kind, what)
}

/// For a RIFF/WAVE file, the fmt chunk's channel count and sample rate, checked before the decoder
/// sees them (symphonia's channel-mask arithmetic overflows on counts above 32). `b` is the whole
/// file when `complete`, else its beginning (a fmt chunk beyond it is left to the decoder).
fn check_wav_header(b: &[u8], complete: bool, what: &str) -> Result<()> {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Ok(());
    }
    let mut at = 12usize;
    while at + 8 <= b.len() {
        let size = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
        if &b[at..at + 4] == b"fmt " {
            if size < 16 {
                return Err(Error::audio(what, format!("WAV fmt chunk of {size} bytes is malformed (needs at least 16)")));
            }
            if at + 8 + 16 > b.len() {
                if !complete {
                    return Ok(());
                }
                return Err(Error::audio(what, "truncated WAV header (the fmt chunk is cut off)"));
            }
            let f = &b[at + 8..];
            let channels = u16::from_le_bytes([f[2], f[3]]) as usize;
            let rate = u32::from_le_bytes(f[4..8].try_into().unwrap());
            check_channels(channels, what)?;
            return check_rate(rate, what);
        }
        at = at.saturating_add(8).saturating_add(size).saturating_add(size & 1);
    }
    Ok(())
}

fn check_rate(rate: u32, what: &str) -> Result<()> {
    if !(MIN_RATE..=MAX_RATE).contains(&rate) {
        return Err(Error::audio(what, format!("sample rate {rate} Hz is outside {MIN_RATE}..={MAX_RATE} Hz")));
    }
    Ok(())
}

fn check_channels(channels: usize, what: &str) -> Result<()> {
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(Error::audio(what, format!("{channels} channels (1 to {MAX_CHANNELS} are accepted)")));
    }
    Ok(())
}

fn decode_source(src: Box<dyn MediaSource>, kind: Kind, what: &str) -> Result<Audio> {
    // symphonia is not guaranteed panic-free on hostile input: a panic becomes an error here, never
    // an unwind across this crate's API
    match catch_unwind(AssertUnwindSafe(|| decode_stream(src, kind, what))) {
        Ok(r) => r,
        Err(_) => Err(Error::audio(what, "the decoder failed on malformed data")),
    }
}

const HEADER: &str = "reading the header";

/// The decoder's error, worded for a user.
fn sym_error(what: &str, stage: &str, e: SymError) -> Error {
    let detail = match e {
        SymError::Unsupported(m) => format!("not a supported audio file (WAV, FLAC or MP3): {m}"),
        SymError::DecodeError(m) => format!("corrupt audio data while {stage}: {m}"),
        SymError::IoError(ref io) if io.kind() == std::io::ErrorKind::UnexpectedEof && stage == HEADER => {
            "not a supported audio file, or a truncated one (the header ends early)".to_string()
        }
        SymError::IoError(ref io) if io.kind() == std::io::ErrorKind::UnexpectedEof => format!("truncated file while {stage}"),
        other => format!("{stage}: {other}"),
    };
    Error::audio(what, detail)
}

fn decode_stream(src: Box<dyn MediaSource>, kind: Kind, what: &str) -> Result<Audio> {
    let mss = MediaSourceStream::new(src, Default::default());
    let fmt_opts = FormatOptions { enable_gapless: true, ..Default::default() };
    // the container's own reader, chosen by the header at the start (crate::container): symphonia's
    // probe would scan past a header it does not take for one of another format further on, whose
    // metadata it then reads (and allocates as it claims)
    let mut format: Box<dyn FormatReader> = match kind {
        Kind::Wav => Box::new(WavReader::try_new(mss, &fmt_opts).map_err(|e| sym_error(what, HEADER, e))?),
        Kind::Flac => Box::new(FlacReader::try_new(mss, &fmt_opts).map_err(|e| sym_error(what, HEADER, e))?),
        Kind::Mp3 => Box::new(MpaReader::try_new(mss, &fmt_opts).map_err(|e| sym_error(what, HEADER, e))?),
    };
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| Error::audio(what, "the file holds no audio track"))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let rate = params.sample_rate.ok_or_else(|| Error::audio(what, "the header gives no sample rate"))?;
    check_rate(rate, what)?;
    if let Some(ch) = params.channels {
        check_channels(ch.count(), what)?;
    }
    let max_frames = (MAX_SECONDS * rate as u64).min(MAX_SAMPLES);
    let too_long = |n: u64| format!("{n} samples at {rate} Hz: longer than {MAX_SECONDS} s or {MAX_SAMPLES} samples");
    if let Some(n) = params.n_frames.filter(|&n| n > max_frames) {
        return Err(Error::audio(what, too_long(n)));
    }
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions { verify: true })
        .map_err(|e| sym_error(what, "opening the decoder", e))?;

    let mut mono: Vec<f32> = Vec::new();
    let mut channels = 0usize;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => return Err(Error::audio(what, "the stream changes its parameters midway")),
            Err(e) => return Err(sym_error(what, "reading packets", e)),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let buf = decoder.decode(&packet).map_err(|e| sym_error(what, "decoding", e))?;
        let spec = *buf.spec();
        if spec.rate != rate {
            return Err(Error::audio(what, format!("the sample rate changes from {rate} to {} Hz", spec.rate)));
        }
        let ch = spec.channels.count();
        check_channels(ch, what)?;
        if channels != 0 && ch != channels {
            return Err(Error::audio(what, format!("the channel count changes from {channels} to {ch}")));
        }
        channels = ch;
        if (mono.len() + buf.frames()) as u64 > max_frames {
            return Err(Error::audio(what, too_long((mono.len() + buf.frames()) as u64)));
        }
        mix_down(&buf, &mut mono);
    }
    if let Some(false) = decoder.finalize().verify_ok {
        return Err(Error::audio(what, "corrupt audio data: the checksum of the decoded samples does not match"));
    }
    // PCM and FLAC headers state the exact length (MP3's is an estimate)
    let exact = params.codec != symphonia::core::codecs::CODEC_TYPE_MP3;
    if let Some(n) = params.n_frames.filter(|&n| exact && (mono.len() as u64) < n) {
        return Err(Error::audio(what, format!("truncated: the header announces {n} samples, the file holds {}", mono.len())));
    }
    check_samples(&mono, what)?;
    Ok(Audio { samples: mono, sample_rate: rate })
}

/// Checks decoded mono samples: some, all finite, not silent.
pub fn check_samples(x: &[f32], what: &str) -> Result<()> {
    if x.is_empty() {
        return Err(Error::audio(what, "no samples (zero-length audio)"));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::audio(what, format!("sample {i} is {} (NaN or infinite samples)", x[i])));
    }
    let peak = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if peak < SILENCE_PEAK {
        return Err(Error::audio(what, format!("silent: the peak amplitude is {peak:e}, below {SILENCE_PEAK:e} (-80 dBFS)")));
    }
    Ok(())
}

/// soundfile's float32 value of one decoded sample.
trait ToF32: Copy {
    fn to_f32(self) -> f32;
}
impl ToF32 for u8 {
    fn to_f32(self) -> f32 {
        (self as i32 - 128) as f32 / 128.0
    }
}
impl ToF32 for i8 {
    fn to_f32(self) -> f32 {
        self as f32 / 128.0
    }
}
impl ToF32 for u16 {
    fn to_f32(self) -> f32 {
        (self as i32 - 32768) as f32 / 32768.0
    }
}
impl ToF32 for i16 {
    fn to_f32(self) -> f32 {
        self as f32 / 32768.0
    }
}
impl ToF32 for u24 {
    fn to_f32(self) -> f32 {
        (self.inner() as i32 - (1 << 23)) as f32 / 8_388_608.0
    }
}
impl ToF32 for i24 {
    fn to_f32(self) -> f32 {
        self.inner() as f32 / 8_388_608.0
    }
}
impl ToF32 for u32 {
    fn to_f32(self) -> f32 {
        (self as i64 - (1 << 31)) as f32 / 2_147_483_648.0
    }
}
impl ToF32 for i32 {
    fn to_f32(self) -> f32 {
        self as f32 / 2_147_483_648.0
    }
}
impl ToF32 for f32 {
    fn to_f32(self) -> f32 {
        self
    }
}
impl ToF32 for f64 {
    fn to_f32(self) -> f32 {
        self as f32
    }
}

/// Appends the float32 mean over the channels of `buf` to `out` (`np.mean(y, axis=0)` of float32:
/// the channels summed in order, divided by their count).
fn mix_down(buf: &AudioBufferRef<'_>, out: &mut Vec<f32>) {
    fn mix<S: ToF32 + symphonia::core::sample::Sample>(b: &symphonia::core::audio::AudioBuffer<S>, out: &mut Vec<f32>) {
        let ch = b.spec().channels.count();
        let start = out.len();
        out.extend(b.chan(0).iter().map(|&s| s.to_f32()));
        for c in 1..ch {
            for (o, &s) in out[start..].iter_mut().zip(b.chan(c)) {
                *o += s.to_f32();
            }
        }
        if ch > 1 {
            for o in &mut out[start..] {
                *o /= ch as f32;
            }
        }
    }
    match buf {
        AudioBufferRef::U8(b) => mix(b, out),
        AudioBufferRef::U16(b) => mix(b, out),
        AudioBufferRef::U24(b) => mix(b, out),
        AudioBufferRef::U32(b) => mix(b, out),
        AudioBufferRef::S8(b) => mix(b, out),
        AudioBufferRef::S16(b) => mix(b, out),
        AudioBufferRef::S24(b) => mix(b, out),
        AudioBufferRef::S32(b) => mix(b, out),
        AudioBufferRef::F32(b) => mix(b, out),
        AudioBufferRef::F64(b) => mix(b, out),
    }
}
