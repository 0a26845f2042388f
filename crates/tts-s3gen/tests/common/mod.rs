//! Scaffolding shared by the S3Gen integration tests that synthesise batches (`batch.rs`,
//! `device_work.rs`): the fixture model and requests of fresh random data.
use std::path::PathBuf;

use tts_kernels::testing::random_f32;
use tts_s3gen::{FlowRequest, MEL_BINS};

/// The tiny random S3Gen of the `s3gen_wav_a` fixture.
pub fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/s3gen_wav_a")
}

/// The data of one request, owned (a [`FlowRequest`] borrows it).
pub struct Owned {
    pub prompt_tokens: Vec<u32>,
    pub prompt_feat: Vec<f32>,
    pub embedding: Vec<f32>,
    pub tokens: Vec<u32>,
    pub seed: u64,
}

impl Owned {
    /// The flow request of this data (noise drawn from its seed).
    pub fn flow(&self) -> FlowRequest<'_> {
        FlowRequest {
            prompt_tokens: &self.prompt_tokens,
            prompt_feat: &self.prompt_feat,
            embedding: &self.embedding,
            tokens: &self.tokens,
            noise: None,
            seed: self.seed,
        }
    }
}

/// One request per `(prompt tokens, speech tokens, extra prompt-mel frames)` of `shapes`, with fresh
/// random token ids below `vocab`, a prompt mel of `2·prompt tokens + extra` frames around −5, and an
/// x-vector of `spk` values, all drawn from `seed + 100·i` (request i).
pub fn requests(seed: u64, vocab: usize, spk: usize, shapes: &[(usize, usize, usize)]) -> Vec<Owned> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, &(tp, ts, extra))| {
            let s = seed.wrapping_add(i as u64 * 100);
            let toks =
                |s: u64, n: usize| random_f32(s, n, 1.0).iter().map(|v| ((v.abs() * 1e4) as usize % vocab) as u32).collect();
            Owned {
                prompt_tokens: toks(s, tp),
                prompt_feat: random_f32(s + 1, (2 * tp + extra) * MEL_BINS, 2.0).iter().map(|v| v - 5.0).collect(),
                embedding: random_f32(s + 2, spk, 1.0),
                tokens: toks(s + 3, ts),
                seed: s + 4,
            }
        })
        .collect()
}
