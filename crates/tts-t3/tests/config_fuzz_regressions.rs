//! `T3Config::from_json` on the configs the review behind the `config_json` fuzz target
//! (fuzz/, docs/fuzzing.md) found wrong: each was accepted, or panicked, before the fix.
use serde_json::json;
use tts_t3::T3Config;
use tts_t3::config::MAX_DIMENSION;

fn err(v: serde_json::Value) -> String {
    T3Config::from_json(&v).expect_err(&format!("{v} should be refused"))
}

#[test]
fn heads_times_head_dim_cannot_overflow() {
    // 2**32 * 2**32 overflowed (a panic with overflow checks; 0 == hidden_size 0 without them).
    let e = err(json!({"num_attention_heads": 1u64 << 32, "head_dim": 1u64 << 32, "hidden_size": 0}));
    assert!(e.contains(&format!("num_attention_heads 4294967296 is larger than the {MAX_DIMENSION} supported")), "{e}");
}

#[test]
fn derived_positions_cannot_overflow() {
    // max_text_tokens + 2 (text_positions) overflowed.
    for key in ["max_text_tokens", "max_speech_tokens", "perceiver_query_tokens"] {
        let e = err(json!({ key: u64::MAX }));
        assert!(e.contains(&format!("{key} 18446744073709551615 is larger than the {MAX_DIMENSION}")), "{e}");
    }
    // The largest accepted value still derives its sizes.
    let c = T3Config::from_json(&json!({"max_text_tokens": MAX_DIMENSION, "max_speech_tokens": MAX_DIMENSION})).unwrap();
    assert_eq!((c.text_positions(), c.speech_positions()), (MAX_DIMENSION + 2, MAX_DIMENSION + 4));
}

#[test]
fn token_ids_are_not_truncated() {
    // 2**32 + 255 was cast to u32: start_text_token 255, accepted.
    let e = err(json!({"start_text_token": (1u64 << 32) + 255}));
    assert!(e.contains("start_text_token must be a token id, got 4294967551"), "{e}");
    assert_eq!(T3Config::from_json(&json!({"start_text_token": 255})).unwrap().start_text_token, 255);
}

#[test]
fn norm_epsilon_and_rope_theta_are_positive_and_finite() {
    // 1e300 as f32 is infinite; 0 and negative values gave NaN or infinite activations.
    for (key, v) in [("rms_norm_eps", 1e300), ("rms_norm_eps", 0.0), ("rope_theta", -1.0), ("rope_theta", 1e39)] {
        let e = err(json!({ key: v }));
        assert!(e.contains(&format!("{key} must be a positive finite number")), "{key} {v}: {e}");
    }
}
