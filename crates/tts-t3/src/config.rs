//! T3 dimensions and special tokens. `Default` is the real English Chatterbox model
//! (t3_config.py and llama_configs.py of chatterbox-tts 0.1.7); a model directory's `config.json`
//! may override any key (the parity fixtures use tiny dimensions).
//!
//! `config.json` is one flat object shared by the model's components. A key belongs to S3Gen when it
//! starts with `flow_`, `spk_`, `encoder_`, `decoder_`, `hift_` or `f0_`, to the S3 tokenizer,
//! CAMPPlus or the voice encoder with `tokenizer_`, `campplus_`, `ve_` or `voice_encoder`; every
//! other key is T3's: a field of [`T3Config`] (derived with serde, `deny_unknown_fields`), or
//! `num_key_value_heads` / `max_position_embeddings`. An unknown key, a value of the wrong type or
//! out of range is an [`Error::Config`] naming the file and the key.
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tts_kernels::checkpoint::config_json::{self, ConfigJsonError};

use crate::{Error, Result};

/// The fields are `config.json`'s keys; a key left out keeps its [`Default`] value.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct T3Config {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    /// Llama-3 RoPE scaling: factor, low_freq_factor, high_freq_factor, original_max_position_embeddings
    /// (always the real model's; not a `config.json` key).
    #[serde(skip)]
    pub rope_scaling: (f32, f32, f32, f32),
    pub text_tokens_dict_size: usize,
    pub speech_tokens_dict_size: usize,
    pub start_text_token: u32,
    pub stop_text_token: u32,
    pub start_speech_token: u32,
    pub stop_speech_token: u32,
    pub max_text_tokens: usize,
    pub max_speech_tokens: usize,
    pub speech_cond_prompt_len: usize,
    pub speaker_embed_size: usize,
    pub perceiver_query_tokens: usize,
    pub perceiver_num_heads: usize,
}

impl Default for T3Config {
    fn default() -> Self {
        T3Config {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 30,
            num_attention_heads: 16,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: (8.0, 1.0, 4.0, 8192.0),
            text_tokens_dict_size: 704,
            speech_tokens_dict_size: 8194,
            start_text_token: 255,
            stop_text_token: 0,
            start_speech_token: 6561,
            stop_speech_token: 6562,
            max_text_tokens: 2048,
            max_speech_tokens: 4096,
            speech_cond_prompt_len: 150,
            speaker_embed_size: 256,
            perceiver_query_tokens: 32,
            perceiver_num_heads: 4,
        }
    }
}

/// Key prefixes of the other components' `config.json` keys (S3Gen, the S3 tokenizer, CAMPPlus, the
/// voice encoder): theirs to check.
const OTHER_COMPONENTS: &[&str] =
    &["flow_", "spk_", "encoder_", "decoder_", "hift_", "f0_", "tokenizer_", "campplus_", "ve_", "voice_encoder"];

/// The largest size, count or token id a config may set. Any product of three of them fits in a
/// `usize`, so that what the loaders derive from a config (element counts of weights, positions,
/// cache lengths) cannot overflow; the real model's largest is 8194 (speech vocabulary).
pub const MAX_DIMENSION: usize = 1 << 20;

fn is_other_component(key: &str) -> bool {
    OTHER_COMPONENTS.iter().any(|p| key.starts_with(p))
}

impl T3Config {
    /// The defaults overridden by `config.json` in `dir` when it exists.
    pub fn from_model_dir(dir: &Path) -> Result<T3Config> {
        let path = dir.join("config.json");
        match config_json::read(&path).map_err(config_error(&path))? {
            None => Ok(T3Config::default()),
            Some(v) => T3Config::from_json(&path, &v),
        }
    }

    /// The defaults overridden by the T3 keys of `v`, a `config.json` object (`file` names it in
    /// errors). The other components' keys are left to them.
    pub fn from_json(file: &Path, v: &Value) -> Result<T3Config> {
        let bad = |key: &str, detail: String| Error::Config { file: file.to_path_buf(), key: Some(key.to_string()), detail };
        let err = config_error(file);
        let mut own = config_json::own_keys(v, |k| !is_other_component(k)).map_err(&err)?;
        let kv_heads: Option<usize> = config_json::take_key(&mut own, "num_key_value_heads").map_err(&err)?;
        // RoPE needs no table: the key is checked and dropped
        let _max_positions: Option<u64> = config_json::take_key(&mut own, "max_position_embeddings").map_err(&err)?;
        let head_dim_given = own.contains_key("head_dim");
        let mut c: T3Config = config_json::from_keys(own).map_err(&err)?;
        if !head_dim_given && c.num_attention_heads > 0 {
            c.head_dim = c.hidden_size / c.num_attention_heads;
        }
        if let Some(kv) = kv_heads
            && kv != c.num_attention_heads
        {
            return Err(bad(
                "num_key_value_heads",
                format!("{kv} != num_attention_heads {} (grouped-query attention is not part of T3)", c.num_attention_heads),
            ));
        }
        c.check().map_err(|(key, detail)| bad(key, detail))?;
        Ok(c)
    }

    /// Checks the dimensions fit together (as [`Self::from_json`] does), for a config built in
    /// memory; the error names the key at fault and the file `(in memory)`.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|(key, detail)| Error::Config { file: "(in memory)".into(), key: Some(key.into()), detail })
    }

    /// Checks the dimensions fit together; an error names the key at fault.
    fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("head_dim", self.head_dim),
            ("text_tokens_dict_size", self.text_tokens_dict_size),
            ("speech_tokens_dict_size", self.speech_tokens_dict_size),
            ("max_text_tokens", self.max_text_tokens),
            ("max_speech_tokens", self.max_speech_tokens),
            ("speech_cond_prompt_len", self.speech_cond_prompt_len),
            ("speaker_embed_size", self.speaker_embed_size),
            ("perceiver_query_tokens", self.perceiver_query_tokens),
            ("perceiver_num_heads", self.perceiver_num_heads),
        ] {
            if v > MAX_DIMENSION {
                return Err((name, format!("{v} is larger than the {MAX_DIMENSION} supported")));
            }
        }
        for (name, v) in [("rms_norm_eps", self.rms_norm_eps), ("rope_theta", self.rope_theta)] {
            if !(v.is_finite() && v > 0.0) {
                return Err((name, format!("must be a positive finite number, got {v}")));
            }
        }
        if self.num_attention_heads == 0 || self.num_attention_heads * self.head_dim != self.hidden_size {
            return Err((
                "num_attention_heads",
                format!("{} heads x {} != hidden size {}", self.num_attention_heads, self.head_dim, self.hidden_size),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(("head_dim", format!("{} must be even (RoPE)", self.head_dim)));
        }
        if self.perceiver_num_heads == 0 || !self.hidden_size.is_multiple_of(self.perceiver_num_heads) {
            return Err(("perceiver_num_heads", format!("{} does not divide {}", self.perceiver_num_heads, self.hidden_size)));
        }
        for (name, tok, size) in [
            ("start_speech_token", self.start_speech_token, self.speech_tokens_dict_size),
            ("stop_speech_token", self.stop_speech_token, self.speech_tokens_dict_size),
            ("start_text_token", self.start_text_token, self.text_tokens_dict_size),
            ("stop_text_token", self.stop_text_token, self.text_tokens_dict_size),
        ] {
            if tok as usize >= size {
                return Err((name, format!("{tok} is outside a vocabulary of {size}")));
            }
        }
        for (name, v) in [
            ("num_hidden_layers", self.num_hidden_layers),
            ("intermediate_size", self.intermediate_size),
            ("perceiver_query_tokens", self.perceiver_query_tokens),
            ("speaker_embed_size", self.speaker_embed_size),
            ("max_text_tokens", self.max_text_tokens),
            ("max_speech_tokens", self.max_speech_tokens),
        ] {
            if v == 0 {
                return Err((name, "must not be 0".into()));
            }
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(("rms_norm_eps", format!("{} must be finite and > 0", self.rms_norm_eps)));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(("rope_theta", format!("{} must be finite and > 0", self.rope_theta)));
        }
        Ok(())
    }

    /// Conditioning length: speaker + perceiver queries + emotion.
    pub fn len_cond(&self) -> usize {
        self.perceiver_query_tokens + 2
    }

    /// Positions of a request's prefill: `[cond | text | BOS | BOS]` (the CFG rows are as long),
    /// for `text_tokens` text tokens with SOT and EOT.
    pub fn prefill_positions(&self, text_tokens: usize) -> usize {
        self.len_cond() + text_tokens + 2
    }

    /// KV-cache positions a request needs: its prefill, then one per generated token after the
    /// first (drawn from the prefill's logits), and one for the last token's step. The one rule
    /// every caller sizing a cache or a `Generator` uses, and the one `Generator::add` checks.
    pub fn kv_positions(&self, text_tokens: usize, max_new_tokens: usize) -> usize {
        self.prefill_positions(text_tokens) + max_new_tokens
    }

    /// Rows of `text_pos_emb` and `speech_pos_emb`.
    pub fn text_positions(&self) -> usize {
        self.max_text_tokens + 2
    }
    pub fn speech_positions(&self) -> usize {
        self.max_speech_tokens + 4
    }
}

/// A `config.json` problem as this crate's error, with the file named.
fn config_error(file: &Path) -> impl Fn(ConfigJsonError) -> Error + '_ {
    move |e| Error::Config { file: file.to_path_buf(), key: e.key, detail: e.detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_real_model() {
        let c = T3Config::default();
        assert_eq!(c.num_attention_heads * c.head_dim, c.hidden_size);
        assert_eq!(c.len_cond(), 34);
        assert_eq!(c.text_positions(), 2050);
        assert_eq!(c.speech_positions(), 4100);
        c.validate().unwrap();
    }

    fn parse(v: Value) -> Result<T3Config> {
        T3Config::from_json(Path::new("dir/config.json"), &v)
    }

    /// The key an error names (and that it is a config error of the file).
    fn key_of(e: Error) -> String {
        match e {
            Error::Config { file, key, .. } => {
                assert_eq!(file, Path::new("dir/config.json"));
                key.unwrap_or_default()
            }
            e => panic!("not a config error: {e}"),
        }
    }

    #[test]
    fn overrides() {
        assert_eq!(parse(serde_json::json!({})).unwrap(), T3Config::default());
        let c = parse(serde_json::json!({"hidden_size": 128, "num_attention_heads": 2, "decoder_channels": 48})).unwrap();
        assert_eq!((c.hidden_size, c.num_attention_heads, c.head_dim), (128, 2, 64));
        assert_eq!(c.rope_scaling, T3Config::default().rope_scaling);
        let c = parse(serde_json::json!({"rms_norm_eps": 1, "rope_theta": 10000.5, "stop_speech_token": 6000,
            "num_key_value_heads": 16, "max_position_embeddings": 131072}))
        .unwrap();
        assert_eq!((c.rms_norm_eps, c.rope_theta, c.stop_speech_token), (1.0, 10000.5, 6000));
        // every key of the default config round-trips
        let all = serde_json::to_value(T3Config::default()).unwrap();
        assert_eq!(all.as_object().unwrap().len(), 19);
        assert_eq!(parse(all).unwrap(), T3Config::default());
    }

    #[test]
    fn unknown_keys_wrong_types_and_bad_values_name_the_key() {
        assert_eq!(key_of(parse(serde_json::json!({"hidden_sise": 128})).unwrap_err()), "hidden_sise");
        let e = parse(serde_json::json!({"hidden_size": 128, "num_attention_heads": 2, "hidden_sise": 1})).unwrap_err();
        assert!(e.to_string().contains("dir/config.json: key \"hidden_sise\": unknown field"), "{e}");
        for (k, v) in [
            ("hidden_size", serde_json::json!("big")),
            ("hidden_size", serde_json::json!(-1)),
            ("hidden_size", serde_json::json!(1.5)),
            ("rope_theta", serde_json::json!([1])),
            ("stop_text_token", serde_json::json!(1u64 << 40)),
            ("num_key_value_heads", serde_json::json!("16")),
            ("max_position_embeddings", serde_json::json!(null)),
            ("rope_scaling", serde_json::json!([8, 1, 4, 8192])),
        ] {
            let mut obj = serde_json::Map::new();
            obj.insert("num_attention_heads".into(), serde_json::json!(16));
            obj.insert(k.into(), v.clone());
            assert_eq!(key_of(parse(Value::Object(obj)).unwrap_err()), k, "{k}: {v}");
        }
        for (json, key) in [
            (serde_json::json!({"num_key_value_heads": 4}), "num_key_value_heads"),
            (serde_json::json!({"stop_speech_token": 9000}), "stop_speech_token"),
            (serde_json::json!({"num_attention_heads": 0}), "num_attention_heads"),
            (serde_json::json!({"num_attention_heads": 3}), "num_attention_heads"),
            (serde_json::json!({"head_dim": 63, "hidden_size": 1008}), "head_dim"),
            (serde_json::json!({"perceiver_num_heads": 3}), "perceiver_num_heads"),
            (serde_json::json!({"num_hidden_layers": 0}), "num_hidden_layers"),
            (serde_json::json!({"max_speech_tokens": 0}), "max_speech_tokens"),
            (serde_json::json!({"rms_norm_eps": -1e-5}), "rms_norm_eps"),
        ] {
            assert_eq!(key_of(parse(json.clone()).unwrap_err()), key, "{json}");
        }
        assert_eq!(key_of(parse(serde_json::json!([1])).unwrap_err()), "");
    }

    #[test]
    fn config_files_in_model_directories() {
        let dir = std::env::temp_dir().join(format!("t3-config-{}-{}", std::process::id(), tts_kernels::testing::fresh_seed()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(T3Config::from_model_dir(&dir).unwrap(), T3Config::default(), "no config.json: the defaults");
        std::fs::write(dir.join("config.json"), "{\"hidden_size\": 128,").unwrap();
        let e = T3Config::from_model_dir(&dir).unwrap_err();
        assert!(matches!(&e, Error::Config { key: None, .. }) && e.to_string().contains("not valid JSON"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
