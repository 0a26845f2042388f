//! T3 dimensions and special tokens. `Default` is the real English Chatterbox model
//! (t3_config.py and llama_configs.py of chatterbox-tts 0.1.7); a model directory's `config.json`
//! may override any key (the parity fixtures use tiny dimensions).
use std::path::Path;

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct T3Config {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    /// Llama-3 RoPE scaling: factor, low_freq_factor, high_freq_factor, original_max_position_embeddings.
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

/// The largest size, count or token id a config may set. Any product of three of them fits in a
/// `usize`, so that what the loaders derive from a config (element counts of weights, positions,
/// cache lengths) cannot overflow; the real model's largest is 8194 (speech vocabulary).
pub const MAX_DIMENSION: usize = 1 << 20;

/// Keys of config.json that belong to other components (S3Gen, VoiceEncoder, ...) and are ignored here.
fn is_other_component(key: &str) -> bool {
    ["flow_", "spk_", "encoder_", "decoder_", "hift_", "f0_", "tokenizer_", "campplus_", "ve_", "voice_encoder"]
        .iter()
        .any(|p| key.starts_with(p))
}

impl T3Config {
    /// The defaults overridden by `config.json` in `dir` when it exists.
    pub fn from_model_dir(dir: &Path) -> Result<T3Config> {
        let path = dir.join("config.json");
        if !path.exists() {
            return Ok(T3Config::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        T3Config::from_json(&v).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// The defaults overridden by the keys of a JSON object.
    pub fn from_json(v: &serde_json::Value) -> std::result::Result<T3Config, String> {
        let obj = v.as_object().ok_or("config.json is not a JSON object")?;
        let mut c = T3Config::default();
        let mut head_dim_given = false;
        let mut kv_heads = None;
        for (k, val) in obj {
            let uint = || val.as_u64().map(|x| x as usize).ok_or(format!("{k} must be a non-negative integer, got {val}"));
            let float = || val.as_f64().map(|x| x as f32).ok_or(format!("{k} must be a number, got {val}"));
            let token = || val.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or(format!("{k} must be a token id, got {val}"));
            match k.as_str() {
                "hidden_size" => c.hidden_size = uint()?,
                "intermediate_size" => c.intermediate_size = uint()?,
                "num_hidden_layers" => c.num_hidden_layers = uint()?,
                "num_attention_heads" => c.num_attention_heads = uint()?,
                "num_key_value_heads" => kv_heads = Some(uint()?),
                "head_dim" => {
                    c.head_dim = uint()?;
                    head_dim_given = true;
                }
                "rms_norm_eps" => c.rms_norm_eps = float()?,
                "rope_theta" => c.rope_theta = float()?,
                "max_position_embeddings" => {}
                "text_tokens_dict_size" => c.text_tokens_dict_size = uint()?,
                "speech_tokens_dict_size" => c.speech_tokens_dict_size = uint()?,
                "start_text_token" => c.start_text_token = token()?,
                "stop_text_token" => c.stop_text_token = token()?,
                "start_speech_token" => c.start_speech_token = token()?,
                "stop_speech_token" => c.stop_speech_token = token()?,
                "max_text_tokens" => c.max_text_tokens = uint()?,
                "max_speech_tokens" => c.max_speech_tokens = uint()?,
                "speech_cond_prompt_len" => c.speech_cond_prompt_len = uint()?,
                "speaker_embed_size" => c.speaker_embed_size = uint()?,
                "perceiver_query_tokens" => c.perceiver_query_tokens = uint()?,
                "perceiver_num_heads" => c.perceiver_num_heads = uint()?,
                other if is_other_component(other) => {}
                other => return Err(format!("unknown T3 config key {other:?}")),
            }
        }
        if !head_dim_given && c.num_attention_heads > 0 {
            c.head_dim = c.hidden_size / c.num_attention_heads;
        }
        if let Some(kv) = kv_heads
            && kv != c.num_attention_heads
        {
            return Err(format!(
                "num_key_value_heads {kv} != num_attention_heads {} (grouped-query attention is not part of T3)",
                c.num_attention_heads
            ));
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> std::result::Result<(), String> {
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
                return Err(format!("{name} {v} is larger than the {MAX_DIMENSION} supported"));
            }
        }
        for (name, v) in [("rms_norm_eps", self.rms_norm_eps), ("rope_theta", self.rope_theta)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a positive finite number, got {v}"));
            }
        }
        if self.num_attention_heads == 0 || self.num_attention_heads * self.head_dim != self.hidden_size {
            return Err(format!("{} heads x {} != hidden size {}", self.num_attention_heads, self.head_dim, self.hidden_size));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("head_dim {} must be even (RoPE)", self.head_dim));
        }
        if self.perceiver_num_heads == 0 || !self.hidden_size.is_multiple_of(self.perceiver_num_heads) {
            return Err(format!("perceiver heads {} do not divide {}", self.perceiver_num_heads, self.hidden_size));
        }
        for (name, tok, size) in [
            ("start_speech_token", self.start_speech_token, self.speech_tokens_dict_size),
            ("stop_speech_token", self.stop_speech_token, self.speech_tokens_dict_size),
            ("start_text_token", self.start_text_token, self.text_tokens_dict_size),
            ("stop_text_token", self.stop_text_token, self.text_tokens_dict_size),
        ] {
            if tok as usize >= size {
                return Err(format!("{name} {tok} is outside a vocabulary of {size}"));
            }
        }
        if [self.num_hidden_layers, self.intermediate_size, self.perceiver_query_tokens, self.speaker_embed_size].contains(&0) {
            return Err("a zero dimension".into());
        }
        Ok(())
    }

    /// Conditioning length: speaker + perceiver queries + emotion.
    pub fn len_cond(&self) -> usize {
        self.perceiver_query_tokens + 2
    }

    /// Rows of `text_pos_emb` and `speech_pos_emb`.
    pub fn text_positions(&self) -> usize {
        self.max_text_tokens + 2
    }
    pub fn speech_positions(&self) -> usize {
        self.max_speech_tokens + 4
    }
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

    #[test]
    fn overrides_and_errors() {
        let c = T3Config::from_json(&serde_json::json!({"hidden_size": 128, "num_attention_heads": 2, "decoder_channels": 48}))
            .unwrap();
        assert_eq!(c.head_dim, 64);
        assert!(T3Config::from_json(&serde_json::json!({"hidden_sise": 128})).unwrap_err().contains("hidden_sise"));
        assert!(T3Config::from_json(&serde_json::json!({"hidden_size": "big"})).is_err());
        assert!(T3Config::from_json(&serde_json::json!({"num_key_value_heads": 4})).unwrap_err().contains("grouped"));
        assert!(T3Config::from_json(&serde_json::json!({"stop_speech_token": 9000})).is_err());
    }
}
