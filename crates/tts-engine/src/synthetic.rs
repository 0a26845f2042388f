//! The synthetic engine: T3 and S3Gen with random weights at the real dimensions
//! ([`tts_t3::synthetic`], [`tts_s3gen::synthetic`]), a synthetic built-in voice and a
//! character-level tokenizer, all built in memory from one seed. It runs exactly the code a real
//! model runs, for speed measurements and smoke tests where the real weights cannot be (a GPU
//! machine that cannot receive 3 GB); **what it speaks is noise, not speech**, and every command
//! using it says so ([`warning`]).
use tts_kernels::checkpoint::synthetic::{Init, key, uniform_pm1, values};
use tts_s3gen::S3GenConfig;
use tts_t3::T3Config;

use crate::voice::{Conditionals, MEL_BINS, S3GenConds, T3Conds};

/// The seed of `--synthetic` when `--synthetic-seed` is not given.
pub const DEFAULT_SEED: u64 = 1;

/// Prompt speech tokens of the synthetic voice's S3Gen half (the real built-in voice's 157; its
/// prompt mel has twice as many frames).
pub const VOICE_PROMPT_TOKENS: usize = 157;

/// The line every command prints (to stderr and in its output) when it runs the synthetic model.
pub fn warning(seed: u64) -> String {
    format!(
        "SYNTHETIC MODEL (--synthetic, seed {seed}): random weights at the real dimensions; the output is noise, \
         not speech (for speed measurements and smoke tests only)"
    )
}

/// `n` token ids uniform in `0..vocab` from the stream (seed, name).
fn tokens(seed: u64, name: &str, n: usize, vocab: usize) -> Vec<u32> {
    let k = key(seed, name);
    (0..n as u64).map(|i| (((uniform_pm1(k, i) + 1.0) * 0.5 * vocab as f32) as u32).min(vocab as u32 - 1)).collect()
}

/// A synthetic built-in voice for models of dimensions `t3` and `s3gen`, with the real voice's
/// sizes: a unit-norm non-negative speaker embedding (as the voice encoder's), `speech_cond_prompt_len`
/// T3 prompt tokens, [`VOICE_PROMPT_TOKENS`] S3Gen prompt tokens with a log-mel-like prompt (level −5,
/// spread 2) of twice as many frames, and an x-vector of unit-scale values.
pub fn voice(seed: u64, t3: &T3Config, s3gen: &S3GenConfig) -> Conditionals {
    let spk: Vec<f32> =
        values(seed, "voice.t3.speaker_emb", t3.speaker_embed_size, Init::spread(1.0)).iter().map(|v| v.abs()).collect();
    let norm = spk.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    let frames = 2 * VOICE_PROMPT_TOKENS;
    Conditionals {
        t3: T3Conds {
            speaker_emb: spk.iter().map(|v| v / norm).collect(),
            cond_prompt_speech_tokens: tokens(
                seed,
                "voice.t3.cond_prompt_speech_tokens",
                t3.speech_cond_prompt_len,
                s3gen.flow_vocab_size,
            ),
            emotion_adv: 0.5,
        },
        s3gen: S3GenConds {
            prompt_token: tokens(seed, "voice.gen.prompt_token", VOICE_PROMPT_TOKENS, s3gen.flow_vocab_size),
            prompt_token_len: VOICE_PROMPT_TOKENS,
            prompt_feat: values(seed, "voice.gen.prompt_feat", frames * MEL_BINS, Init::around(-5.0, 2.0)),
            prompt_feat_frames: frames,
            embedding: values(seed, "voice.gen.embedding", s3gen.spk_embed_dim, Init::spread(1.0)),
        },
    }
}

/// Speech tokens a real voice would take for `text`: ~15 characters per second of speech at 25
/// tokens per second, at least 1 s. The synthetic T3 never samples its stop token, so
/// `speak --synthetic` caps generation here (unless `--max-new-tokens` is given) to keep the
/// workload of a real utterance.
pub fn speech_tokens_for(text: &str) -> usize {
    (text.chars().count() * 25).div_ceil(15).max(25)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_voice_has_the_real_sizes_and_valid_values() {
        let seed = tts_kernels::testing::fresh_seed();
        let (t3, s3) = (T3Config::default(), S3GenConfig::default());
        let v = voice(seed, &t3, &s3);
        assert_eq!(v, voice(seed, &t3, &s3), "deterministic");
        assert_ne!(v, voice(seed.wrapping_add(1), &t3, &s3));
        let n: f32 = v.t3.speaker_emb.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5 && v.t3.speaker_emb.iter().all(|&x| x >= 0.0));
        assert_eq!(v.t3.cond_prompt_speech_tokens.len(), 150);
        assert_eq!((v.s3gen.prompt_token.len(), v.s3gen.prompt_feat_frames), (157, 314));
        assert_eq!(v.s3gen.prompt_feat.len(), 314 * MEL_BINS);
        assert_eq!(v.s3gen.embedding.len(), 192);
        let all: Vec<u32> = v.t3.cond_prompt_speech_tokens.iter().chain(&v.s3gen.prompt_token).copied().collect();
        assert!(all.iter().all(|&t| (t as usize) < s3.flow_vocab_size));
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert!(distinct.len() > 250, "tokens spread over the vocabulary");
        assert!(v.s3gen.prompt_feat.iter().all(|&x| (-11.6..=1.6).contains(&x)), "a log-mel's range");
    }

    #[test]
    fn speech_length_follows_the_text() {
        assert_eq!(speech_tokens_for(""), 25);
        assert_eq!(speech_tokens_for(&"a".repeat(150)), 250);
    }
}
