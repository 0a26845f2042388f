//! `S3GenConfig::from_json` on the configs the review behind the `config_json` fuzz target
//! (fuzz/, docs/fuzzing.md) found wrong: each was accepted before the fix, and the loaders'
//! products of its sizes could overflow.
use serde_json::json;
use tts_s3gen::S3GenConfig;
use tts_s3gen::config::MAX_DIMENSION;

#[test]
fn sizes_are_capped() {
    for key in ["decoder_num_heads", "decoder_attention_head_dim", "encoder_num_blocks", "flow_vocab_size"] {
        let v = json!({ key: 1u64 << 40 });
        let e = S3GenConfig::from_json(&v).expect_err(&format!("{v} should be refused"));
        assert!(e.contains(&format!("{key} 1099511627776 is larger than the {MAX_DIMENSION} supported")), "{e}");
    }
    let c = S3GenConfig::from_json(&json!({"decoder_num_heads": MAX_DIMENSION})).unwrap();
    assert_eq!(c.decoder_num_heads, MAX_DIMENSION);
}
