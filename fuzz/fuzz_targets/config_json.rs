//! The `config.json` readers of T3 and S3Gen on arbitrary bytes: parsed as JSON, then given to
//! `T3Config::from_json` and `S3GenConfig::from_json`. A config they accept must be usable: the
//! derived sizes the loaders compute from it must not overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tts_s3gen::S3GenConfig;
use tts_t3::T3Config;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let file = std::path::Path::new("config.json");
    if let Ok(c) = T3Config::from_json(file, &v) {
        std::hint::black_box((c.len_cond(), c.text_positions(), c.speech_positions()));
    }
    let _ = S3GenConfig::from_json(file, &v);
});
