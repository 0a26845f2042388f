//! `response_format: "flac"`: the audio as a FLAC file (16-bit, mono, lossless over the 16-bit
//! samples `wav` carries), encoded by the `flacenc` crate with its default settings.
use flacenc::component::BitRepr;
use flacenc::error::Verify;

use crate::output::{SampleFormat, encode_samples};
use crate::{Error, Result};

/// `samples` (mono, at `sample_rate`) as the bytes of a FLAC file: each sample rounded to 16 bits
/// exactly as a 16-bit WAV holds it.
pub fn encode_flac(samples: &[f32], sample_rate: u32) -> Result<Vec<u8>> {
    let mut s16 = Vec::with_capacity(samples.len() * 2);
    encode_samples(samples, SampleFormat::S16, &mut s16);
    let ints: Vec<i32> = s16.chunks_exact(2).map(|b| i32::from(i16::from_le_bytes([b[0], b[1]]))).collect();
    let config = flacenc::config::Encoder::default()
        .into_verified()
        .map_err(|e| Error::Internal(format!("the FLAC encoder's settings: {e:?}")))?;
    let source = flacenc::source::MemSource::from_samples(&ints, 1, 16, sample_rate as usize);
    let stream = flacenc::encode_with_fixed_block_size(&config, source, config.block_size)
        .map_err(|e| Error::Internal(format!("FLAC encoding: {e:?}")))?;
    let mut sink = flacenc::bitsink::ByteSink::new();
    stream.write(&mut sink).map_err(|e| Error::Internal(format!("FLAC encoding: {e:?}")))?;
    let mut bytes = sink.as_slice().to_vec();
    // STREAMINFO's minimum and maximum block sizes (bytes 8..12, after "fLaC" and the block's
    // header): a fixed-block-size stream states its block size in both, as libFLAC does (flacenc
    // states the sizes of the blocks it wrote, under 16 for audio that short, which the format
    // forbids and decoders refuse)
    let block = u16::try_from(config.block_size).map_err(|_| Error::Internal("a FLAC block size over 65535".into()))?;
    if bytes.len() >= 12 && &bytes[..4] == b"fLaC" {
        bytes[8..10].copy_from_slice(&block.to_be_bytes());
        bytes[10..12].copy_from_slice(&block.to_be_bytes());
    } else {
        return Err(Error::Internal("the FLAC encoder wrote no stream header".into()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    /// The FLAC decodes (through tts-voice's decoder, symphonia) to exactly the 16-bit samples a
    /// WAV of the same audio holds.
    #[test]
    fn flac_round_trips_to_the_16_bit_samples() {
        let (mut rng, seed) = Rng::fresh();
        for n in [0usize, 1, 4095, 4096 + rng.below(30_000)] {
            let x: Vec<f32> = (0..n).map(|i| (0.5 * (i as f64 * 0.05).sin() + rng.uniform(-0.3, 0.3)) as f32).collect();
            let flac = encode_flac(&x, 24000).unwrap();
            assert_eq!(&flac[..4], b"fLaC");
            if n == 0 {
                continue;
            }
            let audio = tts_voice::audio::decode(&flac, "test.flac").unwrap_or_else(|e| panic!("seed {seed} n {n}: {e}"));
            assert_eq!(audio.sample_rate, 24000);
            let mut s16 = Vec::new();
            encode_samples(&x, SampleFormat::S16, &mut s16);
            let want: Vec<f32> = s16.chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).collect();
            assert_eq!(audio.samples.len(), want.len(), "seed {seed} n {n}");
            let worst = audio.samples.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-6, "seed {seed} n {n}: decoded samples differ by {worst}");
        }
    }
}
