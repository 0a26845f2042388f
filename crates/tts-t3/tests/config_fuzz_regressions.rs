//! `T3Config::from_json` on the configs the review behind the `config_json` fuzz target
//! (fuzz/, docs/fuzzing.md) found wrong: each was accepted, or panicked, before the fix. Each
//! refusal is a typed `Error::Config` naming the key at fault.
use std::path::Path;

use serde_json::json;
use tts_t3::config::MAX_DIMENSION;
use tts_t3::{Error, T3Config};

const FILE: &str = "fuzz/config.json";

/// The key and the detail of the refusal of `v`.
fn err(v: serde_json::Value) -> (String, String) {
    match T3Config::from_json(Path::new(FILE), &v) {
        Err(Error::Config { file, key: Some(key), detail }) if file == Path::new(FILE) => (key, detail),
        other => panic!("{v}: expected a config error naming a key and the file, got {other:?}"),
    }
}

#[test]
fn heads_times_head_dim_cannot_overflow() {
    // 2**32 * 2**32 overflowed (a panic with overflow checks; 0 == hidden_size 0 without them).
    let (key, detail) = err(json!({"num_attention_heads": 1u64 << 32, "head_dim": 1u64 << 32, "hidden_size": 0}));
    assert!(key == "num_attention_heads" || key == "head_dim", "{key}: {detail}");
    assert!(detail.contains(&format!("is larger than the {MAX_DIMENSION} supported")), "{detail}");
}

#[test]
fn derived_positions_cannot_overflow() {
    // max_text_tokens + 2 (text_positions) overflowed.
    for k in ["max_text_tokens", "max_speech_tokens", "perceiver_query_tokens"] {
        let (key, detail) = err(json!({ k: u64::MAX }));
        assert_eq!(key, k, "{detail}");
        assert!(detail.contains(&format!("18446744073709551615 is larger than the {MAX_DIMENSION}")), "{detail}");
    }
    // The largest accepted value still derives its sizes.
    let c = T3Config::from_json(Path::new(FILE), &json!({"max_text_tokens": MAX_DIMENSION, "max_speech_tokens": MAX_DIMENSION}))
        .unwrap();
    assert_eq!((c.text_positions(), c.speech_positions()), (MAX_DIMENSION + 2, MAX_DIMENSION + 4));
}

#[test]
fn token_ids_are_not_truncated() {
    // 2**32 + 255 was cast to u32: start_text_token 255, accepted.
    let (key, detail) = err(json!({"start_text_token": (1u64 << 32) + 255}));
    assert_eq!(key, "start_text_token", "{detail}");
    assert_eq!(T3Config::from_json(Path::new(FILE), &json!({"start_text_token": 255})).unwrap().start_text_token, 255);
}

#[test]
fn norm_epsilon_and_rope_theta_are_positive_and_finite() {
    // 1e300 as f32 is infinite; 0 and negative values gave NaN or infinite activations.
    for (k, v) in [("rms_norm_eps", 1e300), ("rms_norm_eps", 0.0), ("rope_theta", -1.0), ("rope_theta", 1e39)] {
        let (key, detail) = err(json!({ k: v }));
        assert_eq!(key, k, "{v}: {detail}");
        assert!(detail.contains("must be a positive finite number"), "{k} {v}: {detail}");
    }
}
