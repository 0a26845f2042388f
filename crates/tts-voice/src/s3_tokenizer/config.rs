//! S3Tokenizer v2 dimensions: the real ones by default, overridden by the `tokenizer_*` keys of
//! `config.json` (the tiny random models of the test fixtures; key names as in
//! tools/reference/README.md). The other components' keys are left to them.
use std::path::Path;

use crate::config;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Result;

/// The prefix of the tokenizer's `config.json` keys (every field of [`TokenizerConfig`] has it).
pub const KEY_PREFIX: &str = "tokenizer_";

/// Size of one attention head: `AudioEncoderV2` hard-codes a 64-dim RoPE table
/// (`precompute_freqs_cis(64, 2048)`), so `n_state = 64 · n_head`.
pub const HEAD_DIM: usize = 64;

/// The largest width or count a config may set (products of three fit in a `usize`).
pub const MAX_DIMENSION: usize = 1 << 20;

/// Dimensions of `AudioEncoderV2` (`s3tokenizer/model_v2.py`). The fields are `config.json`'s
/// keys; a key left out keeps its [`Default`] value (the real model: 1280 / 20 / 6).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizerConfig {
    /// Encoder width (channels of both convolutions and of every block), `64 · tokenizer_n_head`.
    pub tokenizer_n_state: usize,
    /// Attention heads of every block (64 dims each).
    pub tokenizer_n_head: usize,
    /// ResidualAttentionBlocks.
    pub tokenizer_n_layer: usize,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig { tokenizer_n_state: 1280, tokenizer_n_head: 20, tokenizer_n_layer: 6 }
    }
}

impl TokenizerConfig {
    /// The defaults overridden by the `tokenizer_*` keys of `v`, a `config.json` object (`file`
    /// names it in errors); an unknown `tokenizer_*` key is an error, other keys are ignored.
    pub fn from_json(file: &Path, v: &Value) -> Result<TokenizerConfig> {
        config::from_json(file, v)
    }

    /// Checks a config built in memory (as [`Self::from_json`] does); the error names the key at
    /// fault and the file `(in memory)`.
    pub fn validate(&self) -> Result<()> {
        config::validate(self)
    }

    /// Channels per head ([`HEAD_DIM`] once checked).
    pub fn head_dim(&self) -> usize {
        self.tokenizer_n_state / self.tokenizer_n_head.max(1)
    }
}

impl config::Section for TokenizerConfig {
    fn owns(key: &str) -> bool {
        key.starts_with(KEY_PREFIX)
    }

    /// Checks the dimensions fit together; an error names the key at fault.
    fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        for (name, v) in [
            ("tokenizer_n_state", self.tokenizer_n_state),
            ("tokenizer_n_head", self.tokenizer_n_head),
            ("tokenizer_n_layer", self.tokenizer_n_layer),
        ] {
            if v > MAX_DIMENSION {
                return Err((name, format!("{v} is larger than the {MAX_DIMENSION} supported")));
            }
        }
        if self.tokenizer_n_head == 0 {
            return Err(("tokenizer_n_head", "must not be 0".into()));
        }
        if self.tokenizer_n_state != HEAD_DIM * self.tokenizer_n_head {
            return Err((
                "tokenizer_n_state",
                format!(
                    "{} is not {HEAD_DIM} × tokenizer_n_head ({}): the encoder's RoPE is {HEAD_DIM}-dim per head",
                    self.tokenizer_n_state, self.tokenizer_n_head
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn parse(v: Value) -> Result<TokenizerConfig> {
        TokenizerConfig::from_json(Path::new("m/config.json"), &v)
    }

    fn key_of(e: Error) -> String {
        match e {
            Error::Config { file, key, .. } => {
                assert_eq!(file, Path::new("m/config.json"));
                key.unwrap_or_default()
            }
            e => panic!("not a config error: {e}"),
        }
    }

    #[test]
    fn defaults_are_the_real_model_and_keys_override_them() {
        assert_eq!(parse(serde_json::json!({})).unwrap(), TokenizerConfig::default());
        let c = parse(
            serde_json::json!({"tokenizer_n_state": 128, "tokenizer_n_head": 2, "decoder_channels": 32, "ve_hidden_size": 3}),
        )
        .unwrap();
        assert_eq!((c.tokenizer_n_state, c.tokenizer_n_head, c.tokenizer_n_layer), (128, 2, 6));
        assert_eq!(c.head_dim(), 64);
        let all = serde_json::to_value(TokenizerConfig::default()).unwrap();
        assert_eq!(all.as_object().unwrap().len(), 3);
        assert!(all.as_object().unwrap().keys().all(|k| k.starts_with(KEY_PREFIX)));
        assert_eq!(parse(all).unwrap(), TokenizerConfig::default());
        TokenizerConfig::default().validate().unwrap();
    }

    #[test]
    fn unknown_keys_wrong_types_and_bad_values_name_the_key() {
        let e = parse(serde_json::json!({"tokenizer_n_stat": 128})).unwrap_err();
        assert!(e.to_string().contains("m/config.json: key \"tokenizer_n_stat\": unknown field"), "{e}");
        for (v, key) in [
            (serde_json::json!({"tokenizer_n_head": "2"}), "tokenizer_n_head"),
            (serde_json::json!({"tokenizer_n_layer": -1}), "tokenizer_n_layer"),
            (serde_json::json!({"tokenizer_n_head": 0}), "tokenizer_n_head"),
            (serde_json::json!({"tokenizer_n_head": 2}), "tokenizer_n_state"),
            (serde_json::json!({"tokenizer_n_state": 96, "tokenizer_n_head": 1}), "tokenizer_n_state"),
            (serde_json::json!({"tokenizer_n_layer": MAX_DIMENSION + 1}), "tokenizer_n_layer"),
        ] {
            assert_eq!(key_of(parse(v.clone()).unwrap_err()), key, "{v}");
        }
        assert!(matches!(parse(serde_json::json!([1])), Err(Error::Config { key: None, .. })));
        let bad = TokenizerConfig { tokenizer_n_head: 3, ..TokenizerConfig::default() };
        assert!(matches!(bad.validate(), Err(Error::Config { key: Some(k), .. }) if k == "tokenizer_n_state"));
    }
}
