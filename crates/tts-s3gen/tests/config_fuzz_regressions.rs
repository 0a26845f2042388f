//! `S3GenConfig::from_json` on the configs the review behind the `config_json` fuzz target
//! (fuzz/, docs/fuzzing.md) found wrong: each was accepted before the fix, and the loaders'
//! products of its sizes could overflow. Each refusal is a typed `Error::Config` naming the key.
use std::path::Path;

use serde_json::json;
use tts_s3gen::config::MAX_DIMENSION;
use tts_s3gen::{Error, S3GenConfig};

#[test]
fn sizes_are_capped() {
    let file = Path::new("fuzz/config.json");
    for k in ["decoder_num_heads", "decoder_attention_head_dim", "encoder_num_blocks", "flow_vocab_size"] {
        let v = json!({ k: 1u64 << 40 });
        match S3GenConfig::from_json(file, &v) {
            Err(Error::Config { key: Some(key), detail, .. }) => {
                assert_eq!(key, k, "{detail}");
                assert!(detail.contains(&format!("1099511627776 is larger than the {MAX_DIMENSION} supported")), "{detail}");
            }
            other => panic!("{v}: expected a config error naming {k}, got {other:?}"),
        }
    }
    let c = S3GenConfig::from_json(file, &json!({"decoder_num_heads": MAX_DIMENSION})).unwrap();
    assert_eq!(c.decoder_num_heads, MAX_DIMENSION);
}
