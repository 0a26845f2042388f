//! T3: the Llama-520M model of Chatterbox that turns text tokens (plus a voice) into speech tokens.
//!
//! - [`config`]: dimensions (real ones by default, `config.json` overrides);
//! - [`weights`]: `t3_cfg.safetensors` with the official names, memory-mapped, uploaded once;
//! - [`model`]: the conditioning encoder, the prefill layout and the Llama stack over a static KV cache;
//! - [`synthetic`]: random weights at the real dimensions, built in memory from a seed (noise, not speech).
pub mod config;
pub mod error;
pub mod generate;
pub mod model;
pub mod synthetic;
pub mod weights;

pub use config::T3Config;
pub use generate::{
    DEFAULT_EXAGGERATION, DEFAULT_MAX_NEW_TOKENS, FUSED_DECODE_MAX_ROWS, Finished, Generator, Request, RunProgress,
    SamplerSettings, Voice,
};
pub use model::{KvCache, RowLayout, T3, Workspace};

pub use error::{Error, Result};
