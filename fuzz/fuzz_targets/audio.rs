//! Reference audio from arbitrary bytes (tts-voice's `audio::decode`: WAV, FLAC, MP3 through
//! symphonia, and this crate's header checks). Any `Error::Audio` is fine; a panic (the library
//! turns the decoder's into errors, the fuzzer still sees them), a hang or an allocation out of
//! proportion to the input is a bug. Audio that decodes is mono, finite and not silent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tts_voice::audio::{MAX_RATE, MIN_RATE, SILENCE_PEAK, decode};

fuzz_target!(|data: &[u8]| {
    for name in ["voice.wav", "voice.flac", "voice.mp3", "voice"] {
        match decode(data, name) {
            Ok(a) => {
                assert!(!a.samples.is_empty() && a.samples.iter().all(|v| v.is_finite()));
                assert!(a.samples.iter().any(|v| v.abs() >= SILENCE_PEAK));
                assert!((MIN_RATE..=MAX_RATE).contains(&a.sample_rate));
            }
            Err(tts_voice::Error::Audio { what, .. }) => assert_eq!(what, name),
            Err(e) => panic!("{e:?} is not Error::Audio"),
        }
    }
});
