//! A libsoxr that cannot be loaded is a typed error that says how to install it, never a silent
//! switch to another resampler. Its own test binary: the library is looked up once per process.
use tts_voice::Error;
use tts_voice::resample::{Resampler, resample};

#[test]
fn a_missing_libsoxr_is_an_error_naming_the_remedy() {
    // SAFETY: the only test of this binary; no other thread reads the environment.
    unsafe { std::env::set_var("TTS_SOXR_LIB", "/nonexistent/libsoxr.so.0") };
    let x: Vec<f32> = (0..2000).map(|i| (i as f32 * 0.05).sin()).collect();
    match resample(&x, 24000, 16000, Resampler::Soxr) {
        Err(Error::Soxr { detail }) => {
            println!("{detail}");
            assert!(detail.contains("/nonexistent/libsoxr.so.0") && detail.contains("scripts/soxr.sh"), "{detail}");
        }
        other => panic!("expected Error::Soxr, got {other:?}"),
    }
    // the torchaudio resampler does not need it
    assert_eq!(resample(&x, 24000, 16000, Resampler::Torchaudio).unwrap().len(), 1334);
}
