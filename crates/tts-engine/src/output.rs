//! Writing audio: WAV (16-bit PCM by default, as players expect, or 32-bit float) or raw PCM, to a
//! file (through a temporary file renamed into place: a failure leaves nothing half-written) or to
//! a stream as it is produced (`tts speak -o -`).
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Container {
    /// RIFF/WAVE, mono.
    #[default]
    Wav,
    /// Raw little-endian samples, no header.
    Pcm,
}

/// How each sample is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SampleFormat {
    /// Signed 16-bit integers: `round(clamp(x, −1, 1) · 32767)`.
    #[default]
    S16,
    /// IEEE 32-bit floats, as produced.
    F32,
}

impl SampleFormat {
    pub fn bytes(self) -> usize {
        match self {
            SampleFormat::S16 => 2,
            SampleFormat::F32 => 4,
        }
    }
}

/// A container and a sample format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AudioFormat {
    pub container: Container,
    pub sample: SampleFormat,
}

/// Appends `samples` to `out` in `format` (little-endian).
pub fn encode_samples(samples: &[f32], format: SampleFormat, out: &mut Vec<u8>) {
    out.reserve(samples.len() * format.bytes());
    match format {
        SampleFormat::S16 => {
            for &s in samples {
                // NaN becomes 0; the engine's samples are within [−0.99, 0.99]
                let v = if s.is_nan() { 0.0 } else { (s.clamp(-1.0, 1.0) * 32767.0).round() };
                out.extend_from_slice(&(v as i16).to_le_bytes());
            }
        }
        SampleFormat::F32 => {
            for &s in samples {
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
    }
}

/// The 44-byte header of a mono WAV of `data_bytes` bytes of samples (`None`: unknown, streamed:
/// the sizes are 0xFFFFFFFF, which players and `sox` read as "until the end").
pub fn wav_header(sample_rate: u32, format: SampleFormat, data_bytes: Option<u64>) -> [u8; 44] {
    let (tag, bits): (u16, u16) = match format {
        SampleFormat::S16 => (1, 16),
        SampleFormat::F32 => (3, 32),
    };
    let block = bits / 8;
    let data = data_bytes.map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX));
    let riff = data_bytes.map_or(u32::MAX, |n| u32::try_from(n + 36).unwrap_or(u32::MAX));
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&riff.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&tag.to_le_bytes());
    h[22..24].copy_from_slice(&1u16.to_le_bytes());
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&(sample_rate * block as u32).to_le_bytes());
    h[32..34].copy_from_slice(&block.to_le_bytes());
    h[34..36].copy_from_slice(&bits.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    h
}

/// The bytes of a whole file of `samples` in `format`; a WAV carries `comment` (if any) in a
/// `LIST`/`INFO` chunk (`ICMT`) after the samples, where players and `soxi` show it and readers that
/// do not know it skip it.
pub fn encode(samples: &[f32], sample_rate: u32, format: AudioFormat, comment: Option<&str>) -> Result<Vec<u8>> {
    let data = (samples.len() * format.sample.bytes()) as u64;
    let info = match (format.container, comment) {
        (Container::Wav, Some(c)) => info_chunk(c),
        _ => Vec::new(),
    };
    let mut out = Vec::with_capacity(44 + data as usize + info.len());
    if format.container == Container::Wav {
        if data + 36 + info.len() as u64 > u32::MAX as u64 {
            return Err(Error::TooLong { what: "a WAV file's bytes".into(), len: data as usize, max: u32::MAX as usize - 36 });
        }
        out.extend_from_slice(&wav_header(sample_rate, format.sample, Some(data)));
        // the RIFF size covers the comment too
        out[4..8].copy_from_slice(&((data + 36 + info.len() as u64) as u32).to_le_bytes());
    }
    encode_samples(samples, format.sample, &mut out);
    out.extend_from_slice(&info);
    Ok(out)
}

/// A `LIST` chunk of type `INFO` holding one `ICMT` (comment) sub-chunk, padded to even sizes.
fn info_chunk(comment: &str) -> Vec<u8> {
    let mut text = comment.as_bytes().to_vec();
    text.push(0);
    let text_len = text.len() as u32;
    if text.len() % 2 == 1 {
        text.push(0);
    }
    let mut chunk = Vec::with_capacity(text.len() + 20);
    chunk.extend_from_slice(b"LIST");
    chunk.extend_from_slice(&(4 + 8 + text.len() as u32).to_le_bytes());
    chunk.extend_from_slice(b"INFO");
    chunk.extend_from_slice(b"ICMT");
    chunk.extend_from_slice(&text_len.to_le_bytes());
    chunk.extend_from_slice(&text);
    chunk
}

/// Writes `bytes` to `path` through `path.partial` renamed into place; on failure nothing is left.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |e: std::io::Error| Error::Output { path: path.to_path_buf(), detail: e.to_string() };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

/// Writes `samples` to a file in `format` (a WAV with `comment`, if any), atomically.
pub fn write_audio(path: &Path, samples: &[f32], sample_rate: u32, format: AudioFormat, comment: Option<&str>) -> Result<()> {
    write_atomically(path, &encode(samples, sample_rate, format, comment)?)
}

/// Audio written to a stream as it is produced: a WAV header of unknown length first (for
/// `Container::Wav`), then the samples of each [`StreamWriter::write`] at once, flushed.
pub struct StreamWriter<W: Write> {
    out: W,
    format: AudioFormat,
    sample_rate: u32,
    started: bool,
    buf: Vec<u8>,
    /// Samples written so far.
    pub samples: u64,
}

impl<W: Write> StreamWriter<W> {
    pub fn new(out: W, sample_rate: u32, format: AudioFormat) -> StreamWriter<W> {
        StreamWriter { out, format, sample_rate, started: false, buf: Vec::new(), samples: 0 }
    }

    /// Writes and flushes `samples`; `what` names the output in errors. `Ok(false)` when the
    /// reader has gone (a closed pipe: `tts speak ... -o - | head -c 100`): the caller stops.
    pub fn write(&mut self, samples: &[f32], what: &Path) -> Result<bool> {
        self.buf.clear();
        if !self.started && self.format.container == Container::Wav {
            self.buf.extend_from_slice(&wav_header(self.sample_rate, self.format.sample, None));
        }
        self.started = true;
        encode_samples(samples, self.format.sample, &mut self.buf);
        match self.out.write_all(&self.buf).and_then(|_| self.out.flush()) {
            Ok(()) => {
                self.samples += samples.len() as u64;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(Error::Output { path: what.to_path_buf(), detail: e.to_string() }),
        }
    }

    /// The header alone if nothing was written (an empty stream is still a WAV), then the writer.
    pub fn finish(mut self, what: &Path) -> Result<W> {
        if !self.started {
            let _ = self.write(&[], what)?;
        }
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_samples(seed: u64, n: usize) -> Vec<f32> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 * 2.2 - 1.1 // a little past ±1: clamped
            })
            .collect()
    }

    #[test]
    fn wav_files_read_back_through_hound() {
        let seed = tts_kernels::testing::fresh_seed();
        let samples = random_samples(seed, 1001);
        for sample in [SampleFormat::S16, SampleFormat::F32] {
            let bytes = encode(&samples, 24_000, AudioFormat { container: Container::Wav, sample }, Some("a comment")).unwrap();
            let mut r = hound::WavReader::new(std::io::Cursor::new(&bytes)).unwrap();
            let spec = r.spec();
            assert_eq!((spec.channels, spec.sample_rate), (1, 24_000));
            let back: Vec<f32> = match sample {
                SampleFormat::S16 => r.samples::<i16>().map(|v| v.unwrap() as f32 / 32767.0).collect(),
                SampleFormat::F32 => r.samples::<f32>().map(|v| v.unwrap()).collect(),
            };
            assert_eq!(back.len(), samples.len());
            for (i, (a, b)) in samples.iter().zip(&back).enumerate() {
                let want = a.clamp(-1.0, 1.0);
                let tol = if sample == SampleFormat::S16 { 0.5 / 32767.0 + 1e-7 } else { 0.0 };
                let want = if sample == SampleFormat::F32 { *a } else { want };
                assert!((want - b).abs() <= tol, "seed {seed} {sample:?} sample {i}: {a} → {b}");
            }
        }
    }

    #[test]
    fn raw_pcm_is_the_samples_alone_and_streams_equal_files() {
        let seed = tts_kernels::testing::fresh_seed();
        let samples = random_samples(seed, 777);
        for container in [Container::Wav, Container::Pcm] {
            for sample in [SampleFormat::S16, SampleFormat::F32] {
                let format = AudioFormat { container, sample };
                let file = encode(&samples, 24_000, format, None).unwrap();
                let header = if container == Container::Wav { 44 } else { 0 };
                assert_eq!(file.len(), header + samples.len() * sample.bytes());
                // streamed in uneven pieces: the same samples after a header of unknown length
                let mut w = StreamWriter::new(Vec::new(), 24_000, format);
                for piece in samples.chunks(100 + (seed % 50) as usize) {
                    assert!(w.write(piece, Path::new("-")).unwrap());
                }
                let streamed = w.finish(Path::new("-")).unwrap();
                assert_eq!(streamed[header..], file[header..], "{format:?}");
                if container == Container::Wav {
                    assert_eq!(&streamed[40..44], &u32::MAX.to_le_bytes());
                    assert_eq!(
                        streamed[..40],
                        file[..40]
                            .iter()
                            .enumerate()
                            .map(|(i, &b)| if (4..8).contains(&i) { 0xFF } else { b })
                            .collect::<Vec<_>>()[..]
                    );
                }
            }
        }
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("tts-output-{}-{}", std::process::id(), tts_kernels::testing::fresh_seed()));
        std::fs::create_dir_all(&dir).unwrap();
        // a directory where the file should be: the rename fails, the partial file is removed
        let target = dir.join("taken.wav");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"x").unwrap();
        let e = write_audio(&target, &[0.1, 0.2], 24_000, AudioFormat::default(), None).unwrap_err();
        assert!(matches!(e, Error::Output { .. }), "{e}");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("taken.wav")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
